"""Scene changes: a cut, a reconnect, a camera switching to night mode, or a jump in time, after which no track
may go on."""

from __future__ import annotations

import cv2
import numpy as np

_SIZE = (64, 48)


class SceneWatch:
    """Compares each frame with the previous one on a 64x48 grey copy (about 0.1 ms a frame).

    A scene change is a frame whose normalised grey image correlates with the previous one below
    ``cut_correlation`` (the content changed at once, whatever the lighting), or whose mean brightness changed by
    more than a factor ``cut_brightness`` (a lighting switch), or that came more than ``max_gap`` seconds after
    the previous one (frames dropped, a stream that stalled or reconnected)."""

    def __init__(self, cut_correlation: float = 0.5, cut_brightness: float = 1.6, max_gap: float = 1.0):
        self.cut_correlation = cut_correlation
        self.cut_brightness = cut_brightness
        self.max_gap = max_gap
        self._prev: tuple[np.ndarray, float, float] | None = None

    def check(self, gray: np.ndarray, stamp: float) -> str | None:
        """``"scene change"`` or ``"time gap"`` when this frame cannot continue the previous one, else None."""
        small = cv2.resize(gray, _SIZE, interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
        mean = float(small.mean())
        centred = small - mean
        norm = float(np.linalg.norm(centred))
        unit = centred / norm if norm > 1e-3 else centred
        prev, self._prev = self._prev, (unit, mean, stamp)
        if prev is None:
            return None
        prev_unit, prev_mean, prev_stamp = prev
        if stamp - prev_stamp > self.max_gap:
            return "time gap"
        ratio = (max(mean, prev_mean) + 1.0) / (min(mean, prev_mean) + 1.0)
        flat = norm <= 1e-3 or not prev_unit.any()
        if ratio > self.cut_brightness or (not flat and float(unit @ prev_unit) < self.cut_correlation):
            return "scene change"
        return None
