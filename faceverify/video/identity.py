"""Who a track is: the embeddings it keeps (its best faces by quality), its own template, its pooled liveness, and
its label."""

from __future__ import annotations

import numpy as np

from ..decision import OperatingPoint
from ..liveness import Liveness, LivenessChecker
from .results import Status
from .settings import VideoSettings


class TrackIdentity:
    """The embeddings kept for one track, its template (their mean), and the label decided from it, with
    hysteresis. ``checking``: the track's continuity broke and its label is withheld until a fresh embedding of
    its face matches the template again. ``margin``: the hysteresis in similarity (the model's scale). With
    liveness judged, the class probabilities of the track's checked faces are pooled (their mean), and the track
    is named only while the pool is live."""

    def __init__(self, settings: VideoSettings, margin: float):
        self.settings = settings
        self.margin = margin
        self.samples: list[tuple[float, np.ndarray]] = []
        self.embedded = 0
        self.name: str | None = None
        self.status: Status = "pending"
        self.score: float | None = None
        self.checking = False
        self._candidate: str | None = None
        self._streak = 0
        self._live_sum: np.ndarray | None = None
        self.live_judged = 0

    @property
    def shown(self) -> tuple[Status, str | None]:
        """(status, name) as shown for this frame: no name while the track is being re-checked."""
        if self.checking and self.status != "pending":
            return "checking", None
        return self.status, self.name

    def similarity(self, vector: np.ndarray) -> float | None:
        """Cosine of ``vector`` with the track's template (None before its first sample)."""
        return float(self.mean() @ vector) if self.samples else None

    def wants(self, quality: float) -> bool:
        """Is a face of this quality worth embedding?"""
        s = self.settings
        if len(self.samples) < s.max_samples:
            return True
        return self.embedded < s.max_embeddings and quality > s.improve * min(q for q, _ in self.samples)

    def add(self, quality: float, vector: np.ndarray) -> None:
        self.embedded += 1
        self.samples.append((quality, vector))
        if len(self.samples) > self.settings.max_samples:
            self.samples.remove(min(self.samples, key=lambda qv: qv[0]))

    def judged(self, probabilities: np.ndarray) -> None:
        """Pool the liveness class probabilities of one more of the track's faces."""
        self._live_sum = probabilities.copy() if self._live_sum is None else self._live_sum + probabilities
        self.live_judged += 1

    def liveness(self, checker: LivenessChecker) -> Liveness:
        """The verdict on the pooled probabilities (not live while no face has been judged): live when the live
        probability reaches the checker's threshold, or without one ``live_probability``."""
        if self._live_sum is None:
            return Liveness(False, None, reason="no face of the track judged yet")
        threshold = checker.threshold if checker.threshold is not None else self.settings.live_probability
        return checker.verdict(self._live_sum / self.live_judged, threshold)

    def spoofed(self) -> bool:
        """Take the pooled verdict "not live": no name for the rest of the track (a presentation attack does not
        become a person by waiting for a lucky frame); True when the label changed."""
        changed = self.status != "spoof"
        self.name, self.status, self._candidate, self._streak = None, "spoof", None, 0
        return changed

    def mean(self) -> np.ndarray:
        """Quality-weighted mean of the kept embeddings at least half as good as the best, re-normalised."""
        floor = 0.5 * max(q for q, _ in self.samples)
        used = [(q, vec) for q, vec in self.samples if q >= floor]
        v = np.average([vec for _, vec in used], axis=0, weights=[max(q, 1e-6) for q, _ in used])
        return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)

    def ready(self) -> bool:
        """Enough evidence to decide: ``min_samples`` in and one of good quality, or the pool full."""
        s = self.settings
        n = len(self.samples)
        return n >= s.max_samples or (n >= s.min_samples and max(q for q, _ in self.samples) >= s.good_quality)

    def decide(self, name: str | None, score: float, point: OperatingPoint) -> bool:
        """Take the gallery's verdict on the current mean; True when the label changed."""
        self.score = score
        s = self.settings
        if not self.ready():
            return False
        if self.status != "pending":
            if name == self.name:
                self._streak = 0
                return False
            clear = score >= point.threshold + self.margin if name is not None else score < point.threshold - self.margin
            if not clear:
                self._streak = 0
                return False
        if name == self._candidate and self._streak > 0:
            self._streak += 1
        else:
            self._candidate, self._streak = name, 1
        if self._streak < s.confirm:
            return False
        self.name, self.status, self._streak = name, ("known" if name is not None else "unknown"), 0
        return True
