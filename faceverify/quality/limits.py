"""The enrolment quality gate: limits on the measures of :class:`~faceverify.quality.measures.FaceQuality`, and
the one-line reason a face below them is refused for.

The limits were chosen on LFW DevTrain faces by ``tools/quality_limits.py``, never on DevTest, for the default
model and front end (edgeface-xs through yunet-onet, 2026-12-07): taking the measures in the gate's order, each
limit is where genuine-pair acceptance (at the card's FAR=1e-3 threshold) falls below 70% of its acceptance on
untouched faces, reading the faces as they are and copies shrunk, blurred or cut to a half (BENCHMARKS.md, "The
enrolment quality gate"). They refuse only what collapses: 0.8% of ordinary DevTrain faces. Yaw has no limit
(acceptance never collapses along it once the eye-mouth ratio's applies); nor did eye distance collapse for
edgeface-xs down to the smallest faces YuNet still finds, so the limit fitted for edgeface-xxs (6.5 px) is kept as
a floor (it refuses no ordinary DevTrain face). YuNet's score limit with its own points (``yunet``) is the one
fitted for edgeface-xxs. MTCNN's scores were not measured; its own detection threshold (0.9) is its only limit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from .measures import FaceQuality


def _detector_scores() -> dict[str, float]:
    return {"yunet": 0.76, "yunet-onet": 0.633, "mtcnn": 0.0}


@dataclass(frozen=True)
class QualityLimits:
    """The least (``min_``) or most (``max_``) each measure may be for a face to be enrolled;
    ``min_detector_score`` per detector kind (their scores are on different scales)."""

    min_eye_distance: float = 6.5
    max_second_face: float = 0.949
    min_sharpness: float = 4.24
    min_eye_mouth_ratio: float = 0.528
    min_detector_score: Mapping[str, float] = field(default_factory=_detector_scores)

    def refusal(self, q: FaceQuality) -> str | None:
        """Why a face of quality ``q`` is refused (the first limit it misses), or None when it passes."""
        if q.eye_distance < self.min_eye_distance:
            return f"face too small: eyes {q.eye_distance:.1f} px apart, at least {self.min_eye_distance:g} needed"
        if q.second_face > self.max_second_face:
            return (f"another face of similar size in the image ({q.second_face:.3f} times this one's size, at "
                    f"most {self.max_second_face:g}): crop the image to the person")
        if q.sharpness < self.min_sharpness:
            return f"face too blurred: sharpness {q.sharpness:.1f}, at least {self.min_sharpness:g} needed"
        if q.eye_mouth_ratio < self.min_eye_mouth_ratio:
            return (f"face turned away: eyes {q.eye_mouth_ratio:.3f} times as far apart as they are above the "
                    f"mouth, at least {self.min_eye_mouth_ratio:g}")
        least = self.min_detector_score.get(q.detector, 0.0)
        if q.detector_score < least:
            return f"unsure it is a face: {q.detector} score {q.detector_score:.3f}, at least {least:g} needed"
        return None


DEFAULT_LIMITS = QualityLimits()
"""The limits ``enroll`` applies unless forced."""
