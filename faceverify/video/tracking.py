"""Face tracks between detections: median-flow box propagation (pyramidal Lucas-Kanade with a forward-backward
check), a per-frame continuity check of the content under each box, an optimal (Hungarian) assignment of
detections to tracks, and an adaptive detection schedule."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from ..detect import Face

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


PATCH = 16
"""Side of the grey patch a track's appearance is compared by, frame to frame."""


def appearance(gray: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """The box's content as a zero-mean, unit-norm PATCH x PATCH grey vector (None when the box is off-frame or
    flat), so that a gain change does not change it."""
    h, w = gray.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if x2 - x1 < 4 or y2 - y1 < 4:
        return None
    patch = cv2.resize(gray[y1:y2, x1:x2], (PATCH, PATCH), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    patch -= patch.mean()
    norm = float(np.linalg.norm(patch))
    return patch / norm if norm > 1e-3 * PATCH else None


@dataclass
class Track:
    """One face followed over frames. ``box`` is (x1, y1, x2, y2) in frame pixels; ``misses`` counts the
    consecutive detections that did not find it; ``flow_ok`` is False when the last propagation failed;
    ``continuous`` is False once anything suggests the box may no longer hold the face it was started on (lost
    flow, a sudden change of the content under it, another track on the same face) until a detection re-checks
    it; ``patch`` is its appearance in the last frame."""

    id: int
    box: np.ndarray
    first_frame: int
    last_frame: int
    misses: int = 0
    flow_ok: bool = True
    continuous: bool = True
    patch: np.ndarray | None = None


@dataclass
class Association:
    """What one detection did to the tracks: faces matched to tracks (face index per track), tracks started (with
    their face index), and tracks that went unseen."""

    matched: list[tuple[Track, int]] = field(default_factory=list)
    started: list[tuple[Track, int]] = field(default_factory=list)
    missed: list[Track] = field(default_factory=list)


class Tracker:
    """Keeps the active tracks: moves them with optical flow on every frame, checks that the content under each
    box stays continuous, and re-anchors them on detections by an optimal (Hungarian) assignment.

    ``iou_threshold``: overlap at which a detection surely continues a track (a detection whose centre is within
    one box size of a track may too, two when its flow was lost); ``min_visible``: a track whose box is less
    inside the frame ends; ``grid``: points per side of the flow grid in each box; ``continuity``: least
    correlation of a box's grey patch with the previous frame's; ``overlap``: IoU above which two tracks are
    taken to sit on one face.
    """

    def __init__(self, iou_threshold: float = 0.3, min_visible: float = 0.4, grid: int = 8,
                 continuity: float = 0.8, overlap: float = 0.2):
        self.iou_threshold = iou_threshold
        self.min_visible = min_visible
        self.grid = grid
        self.continuity = continuity
        self.overlap = overlap
        self.tracks: list[Track] = []
        self._next_id = 1

    def propagate(self, prev_gray: np.ndarray, gray: np.ndarray, frame: int) -> tuple[list[Track], list[Track]]:
        """Move every track by the median flow of a point grid in its box and check its continuity; returns
        (tracks that left the frame, and are removed; tracks whose continuity broke in this frame)."""
        h, w = gray.shape[:2]
        left: list[Track] = []
        broken: list[Track] = []
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
                left.append(track)
                continue
            patch = appearance(gray, track.box)
            same = (patch is not None and track.patch is not None
                    and float(patch @ track.patch) >= self.continuity)
            if track.continuous and not (track.flow_ok and same):
                track.continuous = False
                broken.append(track)
            track.patch = patch
        self.tracks = [t for t in self.tracks if t not in left]
        for a, b in self._overlapping():
            for t in (a, b):
                if t.continuous:
                    t.continuous = False
                    broken.append(t)
        return left, broken

    def _overlapping(self) -> list[tuple[Track, Track]]:
        if len(self.tracks) < 2:
            return []
        overlap = iou_matrix(np.stack([t.box for t in self.tracks]), np.stack([t.box for t in self.tracks]))
        i, j = np.nonzero(np.triu(overlap, k=1) > self.overlap)
        return [(self.tracks[a], self.tracks[b]) for a, b in zip(i, j)]

    def associate(self, faces: list[Face], frame: int, gray: np.ndarray,
                  similarity: np.ndarray | None = None) -> Association:
        """Match detected faces to tracks by an optimal assignment over geometry (IoU, centre distance) and, where
        known, identity (``similarity``: faces x tracks cosine of each face's embedding with each track's
        template, NaN where unknown); unmatched faces start tracks. Matched tracks move onto their face and are
        marked continuous only by the caller, after it checked their identity."""
        result = Association()
        pairs = _assign(faces, self.tracks, self.iou_threshold, similarity)
        matched_tracks = {ti for _, ti in pairs}
        matched_faces = {fi for fi, _ in pairs}
        for fi, ti in pairs:
            track = self.tracks[ti]
            track.box = faces[fi].box.astype(np.float32)
            track.misses, track.flow_ok, track.last_frame = 0, True, frame
            track.patch = appearance(gray, track.box)
            result.matched.append((track, fi))
        for ti, track in enumerate(self.tracks):
            if ti not in matched_tracks:
                track.misses += 1
                result.missed.append(track)
        for fi in range(len(faces)):
            if fi not in matched_faces:
                result.started.append((self.start(faces[fi], frame, gray), fi))
        return result

    def start(self, face: Face, frame: int, gray: np.ndarray) -> Track:
        """A new track on ``face``."""
        box = face.box.astype(np.float32)
        track = Track(self._next_id, box, frame, frame, patch=appearance(gray, box))
        self._next_id += 1
        self.tracks.append(track)
        return track

    def end(self, tracks: list[Track]) -> None:
        """Forget ``tracks``."""
        gone = {t.id for t in tracks}
        self.tracks = [t for t in self.tracks if t.id not in gone]

    def _grid(self, box: np.ndarray) -> np.ndarray:
        x1, y1, x2, y2 = box
        mx, my = 0.15 * (x2 - x1), 0.15 * (y2 - y1)
        xs = np.linspace(x1 + mx, x2 - mx, self.grid)
        ys = np.linspace(y1 + my, y2 - my, self.grid)
        return np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2).astype(np.float32)


UNMATCHED = 1.0
"""Cost of leaving a face or a track unmatched: a pair is made only when it is cheaper than leaving both
alone, so a weak pair is never forced to make room for a strong one (the assignment is not made square)."""


def _assign(faces: list[Face], tracks: list[Track], iou_threshold: float,
            similarity: np.ndarray | None) -> list[tuple[int, int]]:
    """(face index, track index) pairs of the cheapest assignment, in which any face or track may stay
    unmatched at cost UNMATCHED. A pair is allowed when the boxes overlap by ``iou_threshold`` or the face's
    centre lies within one box size of the track's (two when its flow was lost); its cost is 1 - IoU plus the
    centre distance in box sizes, plus 1 - similarity where the face's identity and the track's template are
    both known, so that crossing faces go to the tracks they resemble."""
    if not faces or not tracks:
        return []
    fb = np.stack([f.box for f in faces]).astype(np.float64)
    tb = np.stack([t.box for t in tracks]).astype(np.float64)
    overlap = iou_matrix(fb, tb)
    fc = (fb[:, :2] + fb[:, 2:]) / 2
    tc = (tb[:, :2] + tb[:, 2:]) / 2
    size = np.maximum(np.maximum(tb[:, 2] - tb[:, 0], tb[:, 3] - tb[:, 1]), 1.0)
    dist = np.linalg.norm(fc[:, None, :] - tc[None, :, :], axis=2) / size[None, :]
    reach = np.array([1.0 if t.flow_ok else 2.0 for t in tracks])[None, :]
    allowed = (overlap >= iou_threshold) | (dist < reach)
    cost = (1.0 - overlap) + dist
    if similarity is not None:
        cost = cost + np.nan_to_num(1.0 - similarity, nan=0.0)
    n, m = cost.shape
    big = 2 * UNMATCHED * (n + m) + float(cost[allowed].sum() if allowed.any() else 0.0) + 1.0
    full = np.full((n + m, m + n), big)
    full[:n, :m] = np.where(allowed, cost, big)
    full[:n, m:] = np.where(np.eye(n, dtype=bool), UNMATCHED, big)  # face i left alone
    full[n:, :m] = np.where(np.eye(m, dtype=bool), UNMATCHED, big)  # track j left alone
    full[n:, m:] = 0.0
    rows, cols = linear_sum_assignment(full)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if r < n and c < m and allowed[r, c]]


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
        """Detect on the next frame asked (a track's continuity broke, the scene changed)."""
        self._countdown = 0

    def detected(self, stable: bool) -> None:
        """Record a detection; ``stable``: it matched every track, started none and nothing awaits a name."""
        self.interval = min(self.interval * 2, self.max_interval) if stable else self.min_interval
        self._countdown = self.interval
