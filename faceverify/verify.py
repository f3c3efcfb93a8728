"""Decisions: cosine similarity against a calibrated threshold, reported with the false-accept rate it stands for."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import FaceverifyError
from .modelcard import ModelCard

DEFAULT_FAR = 1e-3


@dataclass(frozen=True)
class OperatingPoint:
    """A similarity threshold and the false-accept rate it corresponds to (None when unknown)."""

    threshold: float
    far: float | None


def operating_point(card: ModelCard, far: float | None = None, threshold: float | None = None) -> OperatingPoint:
    """Resolve ``--far`` / ``--threshold`` against the card: an explicit threshold wins and its FAR is read off
    the card's calibration curve; otherwise the calibrated threshold for ``far`` (default 1e-3)."""
    if threshold is not None:
        if not -1.0 <= threshold <= 1.0:
            raise FaceverifyError(f"threshold {threshold} is outside [-1, 1]")
        return OperatingPoint(float(threshold), far_at(card, threshold))
    far = DEFAULT_FAR if far is None else far
    return OperatingPoint(card.threshold_for(far), far)


def far_at(card: ModelCard, threshold: float) -> float | None:
    """FAR of a threshold by interpolating the card's calibration curve (log-FAR between recorded points)."""
    curve = card.calibration.get("far_curve") if card.calibration else None
    if not curve:
        return None
    pts = sorted((float(t), float(f)) for t, f in curve)
    ts = np.array([t for t, _ in pts])
    fs = np.log10(np.clip([f for _, f in pts], 1e-12, 1.0))
    return float(10 ** np.interp(threshold, ts, fs))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two L2-normalised embeddings."""
    return float(np.clip(np.dot(a, b), -1.0, 1.0))


@dataclass(frozen=True)
class Verdict:
    same: bool
    similarity: float
    threshold: float
    far: float | None


def decide(a: np.ndarray, b: np.ndarray, point: OperatingPoint) -> Verdict:
    s = cosine(a, b)
    return Verdict(s >= point.threshold, s, point.threshold, point.far)
