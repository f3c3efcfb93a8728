"""Face tracks between detections: median-flow box propagation (pyramidal Lucas-Kanade with a forward-backward
check), IoU association of detections to tracks, and an adaptive detection schedule."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .detect import Face

_LK = dict(winSize=(15, 15), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` (N x 4) with every box in ``b`` (M x 4)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None, :, :]
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def visible_fraction(box: np.ndarray, width: int, height: int) -> float:
    """Share of the box's area that lies inside a width x height frame."""
    x1, y1, x2, y2 = box
    area = max(x2 - x1, 0) * max(y2 - y1, 0)
    if area <= 0:
        return 0.0
    inside = max(min(x2, width) - max(x1, 0), 0) * max(min(y2, height) - max(y1, 0), 0)
    return float(inside / area)


@dataclass
class Track:
    """One face followed over frames. ``box`` is (x1, y1, x2, y2) in frame pixels; ``misses`` counts the
    consecutive detections that did not find it; ``flow_ok`` is False when the last propagation failed."""

    id: int
    box: np.ndarray
    first_frame: int
    last_frame: int
    misses: int = 0
    flow_ok: bool = True


@dataclass
class Association:
    """What one detection did to the tracks: faces matched to tracks, tracks started and tracks ended."""

    matched: list[tuple[Track, Face]] = field(default_factory=list)
    started: list[Track] = field(default_factory=list)
    ended: list[Track] = field(default_factory=list)
    missed: int = 0


class Tracker:
    """Keeps the active tracks: moves them with optical flow on every frame and re-anchors them on detections.

    ``iou_threshold``: least overlap for a detection to continue a track; ``max_misses``: consecutive detections
    a track may go unseen before it ends; ``min_visible``: a track whose box is less inside the frame ends;
    ``grid``: points per side of the flow grid in each box.
    """

    def __init__(self, iou_threshold: float = 0.3, max_misses: int = 2, min_visible: float = 0.4, grid: int = 8):
        self.iou_threshold = iou_threshold
        self.max_misses = max_misses
        self.min_visible = min_visible
        self.grid = grid
        self.tracks: list[Track] = []
        self._next_id = 1

    def propagate(self, prev_gray: np.ndarray, gray: np.ndarray, frame: int) -> list[Track]:
        """Move every track by the median flow of a point grid in its box (computed on a window around the
        box); returns the tracks that ended (left the frame). A track whose points cannot be followed keeps its
        box with ``flow_ok`` False."""
        h, w = gray.shape[:2]
        ended: list[Track] = []
        for track in self.tracks:
            x1, y1, x2, y2 = track.box
            pad = 0.5 * max(x2 - x1, y2 - y1) + 16
            wx1, wy1 = int(max(x1 - pad, 0)), int(max(y1 - pad, 0))
            wx2, wy2 = int(min(x2 + pad, w)), int(min(y2 + pad, h))
            moved = None
            if wx2 - wx1 >= 16 and wy2 - wy1 >= 16:
                origin = np.array([wx1, wy1], np.float32)
                window = (slice(wy1, wy2), slice(wx1, wx2))
                moved = _median_flow(prev_gray[window], gray[window], self._grid(track.box) - origin)
            track.flow_ok = moved is not None
            if moved is not None:
                track.box = _move_box(track.box, *moved)
            track.last_frame = frame
            if visible_fraction(track.box, w, h) < self.min_visible:
                ended.append(track)
        self.tracks = [t for t in self.tracks if t not in ended]
        return ended

    def associate(self, faces: list[Face], frame: int) -> Association:
        """Match detected faces to tracks by IoU (greedy, best first), then the rest by centre distance;
        unmatched faces start tracks, tracks missed too often (or missed after their flow failed) end."""
        result = Association()
        unmatched_tracks = set(range(len(self.tracks)))
        unmatched_faces = set(range(len(faces)))
        pairs: list[tuple[int, int]] = []
        if self.tracks and faces:
            overlap = iou_matrix(np.stack([f.box for f in faces]), np.stack([t.box for t in self.tracks]))
            for fi, ti in zip(*np.unravel_index(np.argsort(-overlap, axis=None), overlap.shape)):
                if overlap[fi, ti] < self.iou_threshold:
                    break
                if fi in unmatched_faces and ti in unmatched_tracks:
                    pairs.append((fi, ti))
                    unmatched_faces.discard(fi)
                    unmatched_tracks.discard(ti)
        for fi, ti in pairs + _nearest_pairs(faces, self.tracks, unmatched_faces, unmatched_tracks):
            unmatched_faces.discard(fi)
            unmatched_tracks.discard(ti)
            track = self.tracks[ti]
            track.box = faces[fi].box.astype(np.float32)
            track.misses, track.flow_ok, track.last_frame = 0, True, frame
            result.matched.append((track, faces[fi]))
        for ti in sorted(unmatched_tracks):
            track = self.tracks[ti]
            track.misses += 1
            result.missed += 1
            if track.misses > self.max_misses or not track.flow_ok:
                result.ended.append(track)
        self.tracks = [t for t in self.tracks if t not in result.ended]
        for fi in sorted(unmatched_faces):
            track = Track(self._next_id, faces[fi].box.astype(np.float32), frame, frame)
            self._next_id += 1
            self.tracks.append(track)
            result.started.append(track)
            result.matched.append((track, faces[fi]))
        return result

    def _grid(self, box: np.ndarray) -> np.ndarray:
        x1, y1, x2, y2 = box
        mx, my = 0.15 * (x2 - x1), 0.15 * (y2 - y1)
        xs = np.linspace(x1 + mx, x2 - mx, self.grid)
        ys = np.linspace(y1 + my, y2 - my, self.grid)
        return np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2).astype(np.float32)


def _nearest_pairs(
    faces: list[Face], tracks: list[Track], face_ids: set[int], track_ids: set[int]
) -> list[tuple[int, int]]:
    """Second chance for what IoU left unmatched (a fast move, or frames dropped): greedy pairs whose centres
    are less than one box size apart (two for a track whose flow was lost)."""
    candidates = []
    for fi in face_ids:
        fc = (faces[fi].box[:2] + faces[fi].box[2:]) / 2
        for ti in track_ids:
            box = tracks[ti].box
            size = max(box[2] - box[0], box[3] - box[1], 1.0)
            d = float(np.linalg.norm(fc - (box[:2] + box[2:]) / 2)) / size
            if d < (1.0 if tracks[ti].flow_ok else 2.0):
                candidates.append((d, fi, ti))
    pairs, used_f, used_t = [], set(), set()
    for _, fi, ti in sorted(candidates):
        if fi not in used_f and ti not in used_t:
            pairs.append((fi, ti))
            used_f.add(fi)
            used_t.add(ti)
    return pairs


def _median_flow(prev: np.ndarray, cur: np.ndarray, points: np.ndarray) -> tuple[float, float, float] | None:
    """(dx, dy, scale) of the content under ``points`` from ``prev`` to ``cur``, from the points that track
    both ways with a small, below-median forward-backward error; None when too few do."""
    p0 = points.reshape(-1, 1, 2)
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev, cur, p0, None, **_LK)
    back, st2, _ = cv2.calcOpticalFlowPyrLK(cur, prev, p1, None, **_LK)
    fb = np.linalg.norm(p0 - back, axis=2).ravel()
    ok = (st1.ravel() == 1) & (st2.ravel() == 1)
    if ok.sum() < 6:
        return None
    good = ok & (fb <= max(float(np.median(fb[ok])), 0.5)) & (fb < 3.0)
    if good.sum() < 6:
        return None
    a, b = p0.reshape(-1, 2)[good], p1.reshape(-1, 2)[good]
    dx, dy = np.median(b - a, axis=0)
    i, j = np.triu_indices(len(a), k=1)
    da = np.linalg.norm(a[i] - a[j], axis=1)
    keep = da > 2.0
    if not keep.any():
        return float(dx), float(dy), 1.0
    scale = float(np.median(np.linalg.norm(b[i] - b[j], axis=1)[keep] / da[keep]))
    return float(dx), float(dy), float(np.clip(scale, 0.8, 1.25))


def _move_box(box: np.ndarray, dx: float, dy: float, scale: float) -> np.ndarray:
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2 + dx, (y1 + y2) / 2 + dy
    hw, hh = (x2 - x1) / 2 * scale, (y2 - y1) / 2 * scale
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh], np.float32)


class DetectionSchedule:
    """When to run the detector: every ``min_interval`` frames while the scene changes or a track still awaits
    its identity, stretching (doubling) to ``max_interval`` while every face is tracked, named and stable."""

    def __init__(self, min_interval: int = 5, max_interval: int = 15):
        if not 1 <= min_interval <= max_interval:
            raise ValueError("need 1 <= min_interval <= max_interval")
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.interval = min_interval
        self._countdown = 0

    def due(self) -> bool:
        """Call once per processed frame: True when this frame should be detected on."""
        self._countdown -= 1
        return self._countdown <= 0

    def request(self) -> None:
        """Detect on the next frame (a track's flow failed)."""
        self._countdown = 0

    def detected(self, stable: bool) -> None:
        """Record a detection; ``stable``: it matched every track, started none and nothing awaits a name."""
        self.interval = min(self.interval * 2, self.max_interval) if stable else self.min_interval
        self._countdown = self.interval
