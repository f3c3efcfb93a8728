"""What a video run reports: per-frame track events, track endings with their reason, and the run's summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..liveness import Liveness

Status = Literal["pending", "known", "unknown", "checking", "spoof"]
"""``pending``: not decided yet; ``known``/``unknown``: decided; ``checking``: decided, but the face's continuity
was broken (a sudden change under the box, lost flow, an overlap) and its identity is being re-checked; no name
is shown until the check passes; ``spoof`` (with liveness judged): the track's pooled liveness is not live, and
it is never named."""

EndReason = Literal["identity changed", "scene change", "time gap", "lost", "left frame", "merged", "end of run"]
"""Why a track ended: its face no longer matched the track's own template; the whole scene changed at once (a
cut, a reconnect, a lighting switch); frames went missing for too long; detections stopped finding it; it left
the frame; it collapsed onto another track's face; the run ended."""


def box_list(box: np.ndarray) -> list[float]:
    """A box as a JSON-friendly list rounded to 0.1 px."""
    return [round(float(v), 1) for v in box]


def _round(score: float | None) -> float | None:
    return None if score is None else round(score, 4)


def _with_liveness(out: dict, liveness: Liveness | None) -> dict:
    """``out`` with the pooled liveness added when it was judged (runs without liveness keep their fields)."""
    if liveness is not None:
        out["liveness"] = liveness.to_dict()
    return out


@dataclass
class TrackEvent:
    """A track seen in a frame: its label (``name`` None unless ``status`` is known), score and box, and with
    liveness judged, the track's pooled liveness."""

    frame: int
    time: float
    track: int
    name: str | None
    score: float | None
    box: list[float]
    status: Status
    changed: bool = False
    liveness: Liveness | None = None

    def to_dict(self) -> dict:
        out = dict(frame=self.frame, time=round(self.time, 3), track=self.track, name=self.name,
                   score=_round(self.score), box=self.box, status=self.status)
        return _with_liveness(out, self.liveness)


@dataclass
class TrackEnd:
    """A track that ended in this frame, why, and the label it had (so any name shown can be audited)."""

    frame: int
    time: float
    track: int
    ended: EndReason
    name: str | None
    status: Status

    def to_dict(self) -> dict:
        return dict(frame=self.frame, time=round(self.time, 3), track=self.track, ended=self.ended,
                    name=self.name, status=self.status)


@dataclass
class CheckedFace:
    """A face of a track that passed the track's identity checks in this frame (the track's first face, or one
    that matched its template; fully in frame, not overlapping another face): its box and 5 landmarks in frame
    pixels."""

    track: int
    box: list[float]
    landmarks: np.ndarray


@dataclass
class FrameResult:
    """One processed frame: its index in the source, time, the BGR image, the tracks in it, those that ended, and
    the faces in it that passed their track's identity checks."""

    frame: int
    time: float
    image: np.ndarray
    events: list[TrackEvent]
    detected: bool
    ended: list[TrackEnd] = field(default_factory=list)
    scene_change: bool = False
    checked: list[CheckedFace] = field(default_factory=list)


@dataclass
class TrackSummary:
    """A track over the run: its last label, score and number of kept samples, the frames it spanned, why it
    ended, and with liveness judged its pooled liveness."""

    id: int
    name: str | None
    status: Status
    score: float | None
    first_frame: int
    last_frame: int
    samples: int
    ended: EndReason | None = None
    liveness: Liveness | None = None

    def to_dict(self) -> dict:
        out = dict(id=self.id, name=self.name, status=self.status, score=_round(self.score),
                   first_frame=self.first_frame, last_frame=self.last_frame, samples=self.samples, ended=self.ended)
        return _with_liveness(out, self.liveness)


@dataclass
class VideoSummary:
    """The run in numbers: frames processed, processing rate, frames dropped, and every track; ``busy``: seconds
    spent tracking (optical flow and continuity checks), detecting, and identifying (quality, embedding, search);
    ``scene_changes``: how often every track was ended at once; ``breaks``: tracks ended because their face no
    longer matched them; ``calibrated_front_end`` False: the card's thresholds were not calibrated through the
    detector that found the faces."""

    source: str
    frames: int
    fps: float
    dropped: int
    seconds: float
    source_fps: float
    detections: int
    embeddings: int
    busy: dict[str, float]
    ended: str
    threshold: float
    far: float | None
    fpir: float | None = None
    scene_changes: int = 0
    breaks: int = 0
    tracks: list[TrackSummary] = field(default_factory=list)
    calibrated_front_end: bool = True

    def to_dict(self) -> dict:
        return dict(source=self.source, frames=self.frames, fps=round(self.fps, 2), dropped=self.dropped,
                    seconds=round(self.seconds, 3), source_fps=round(self.source_fps, 3),
                    detections=self.detections, embeddings=self.embeddings,
                    busy={k: round(v, 3) for k, v in self.busy.items()}, ended=self.ended,
                    threshold=round(self.threshold, 6), far=self.far, fpir=self.fpir,
                    scene_changes=self.scene_changes, breaks=self.breaks, tracks=[t.to_dict() for t in self.tracks],
                    calibrated_front_end=self.calibrated_front_end)
