"""What a run looks like to a person: boxes and labels drawn on frames, a video writer, a window."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import FaceverifyError
from .results import TrackEvent
from .source import DEFAULT_FPS

_COLOURS = {"known": (60, 200, 60), "unknown": (40, 40, 230), "pending": (0, 200, 255), "checking": (200, 160, 0),
            "spoof": (200, 0, 200)}
_LABELS = {"unknown": "unknown", "pending": "...", "checking": "?", "spoof": "not live"}


def draw_events(image: np.ndarray, events: list[TrackEvent]) -> np.ndarray:
    """The frame with each track's box, label and score drawn on it (a copy)."""
    out = image.copy()
    for e in events:
        colour = _COLOURS[e.status]
        x1, y1, x2, y2 = (int(round(v)) for v in e.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 2)
        label = e.name if e.status == "known" else _LABELS[e.status]
        text = f"#{e.track} {label}" + ("" if e.score is None else f" {e.score:.2f}")
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else y2 + th + 4
        tx = max(0, min(x1, out.shape[1] - tw - 4))  # keep the label inside the frame
        cv2.rectangle(out, (tx, ty - th - base), (tx + tw + 4, ty + base), colour, cv2.FILLED)
        cv2.putText(out, text, (tx + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def open_video_writer(path: str | Path, fps: float, width: int, height: int) -> cv2.VideoWriter:
    """A writer for ``path``: MJPG in .avi, MPEG-4 part 2 (mp4v) otherwise; FaceverifyError if it cannot."""
    path = Path(path)
    fourcc = "MJPG" if path.suffix.lower() == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps or DEFAULT_FPS, (width, height))
    if not writer.isOpened():
        raise FaceverifyError(f"{path}: cannot write a video here (check the directory; use .mp4 or .avi)")
    return writer


class Display:
    """A window showing the annotated frames; 'q', Esc or closing it ends the run."""

    def __init__(self, title: str):
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise FaceverifyError(
                "--show needs a GUI, and this OpenCV has none (opencv-python-headless, or no display); "
                "use --output FILE to write the annotated video instead"
            ) from None

    def show(self, image: np.ndarray) -> bool:
        """Show a frame; False once the user asked to stop."""
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        return key not in (ord("q"), 27) and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        cv2.destroyWindow(self.title)
