"""Decisions: cosine similarity against a calibrated threshold, reported with the false-accept rate it stands for."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import FaceverifyError, OperatingPointError
from .modelcard import ModelCard

DEFAULT_FAR = 1e-3
DEFAULT_FPIR = 1e-2
"""Identification's default: the chance that a person who is not enrolled is given a name stays under 1%."""
MATCHES = ("template", "best")
DEFAULT_MATCH = "template"
"""Identification compares a probe with one template per identity (``template``), or with every stored
embedding, the identity scoring its best one (``best``)."""


@dataclass(frozen=True)
class OperatingPoint:
    """A similarity threshold and the false-accept rate of one comparison it corresponds to (None when unknown).
    For identification, ``fpir`` bounds the chance that a probe of someone not enrolled is given a name."""

    threshold: float
    far: float | None
    fpir: float | None = None


def operating_point(card: ModelCard, far: float | None = None, threshold: float | None = None) -> OperatingPoint:
    """Resolve ``--far`` / ``--threshold`` against the card: an explicit threshold wins and its FAR is read off
    the card's calibration curve; otherwise the calibrated threshold for ``far`` (default 1e-3)."""
    if threshold is not None:
        if not -1.0 <= threshold <= 1.0:
            raise OperatingPointError(f"threshold {threshold} is outside [-1, 1]")
        return OperatingPoint(float(threshold), far_at(card, threshold))
    far = DEFAULT_FAR if far is None else far
    return OperatingPoint(card.threshold_for(far), far)


def identification_point(
    card: ModelCard,
    compared: int,
    far: float | None = None,
    threshold: float | None = None,
    fpir: float | None = None,
    looks: int = 1,
    template_size: int = 1,
) -> OperatingPoint:
    """The open-set operating point for a search over ``compared`` gallery entries (identity templates, or
    embeddings when every embedding is searched), made up to ``looks`` times for one person (a video track is
    judged on several samples). A stranger is named when any comparison clears the threshold, so by the union
    bound FPIR <= looks x compared x FAR. An explicit threshold or FAR is kept as given; otherwise the FAR is
    ``fpir`` (default 1e-2) / (looks x compared), never looser than verification's default, and no stricter than
    the card's calibration reaches (then the reported bound exceeds the target). When the card has bounds
    (``calibration.bounds``), the threshold is the one whose FAR *upper confidence bound* over unseen people
    meets that FAR, not the point estimate, and ``far`` is that bound. Templates averaging up to
    ``template_size`` images take the strictest threshold of the card's curves for single images and for every
    calibrated template size up to the first at least that large: a template's impostor scores run higher than
    a single image's."""
    if fpir is not None and not 0 < fpir < 1:
        raise OperatingPointError(f"FPIR {fpir:g} is outside (0, 1)")
    n = max(1, compared) * max(1, looks)
    if threshold is not None or far is not None:
        point = operating_point(card, far, threshold)
    else:
        target = min(DEFAULT_FAR, (DEFAULT_FPIR if fpir is None else fpir) / n)
        bounded = _bound_curves(card, template_size)
        if bounded:
            points = [_read_curve(c, target) for c in bounded]
            best = max(points, key=lambda p: p.threshold)
            fars = [min(p.far, _curve_far(c, best.threshold)) for c, p in zip(bounded, points)]  # type: ignore[type-var]
            point = OperatingPoint(best.threshold, max([best.far or 0.0, *fars]))
        else:
            point = _point_for_far(card, target)
    bound = None if point.far is None else min(1.0, n * point.far)
    return OperatingPoint(point.threshold, point.far, bound)


def _bound_curves(card: ModelCard, template_size: int) -> list[list[list[float]]]:
    """The card's bounded FAR curves that bound a template of ``template_size`` images: the single-image curve
    and each template size's up to the smallest calibrated one at least that large (all beyond the largest);
    the strictest of them decides. Empty when the card has no bounds."""
    bounds = (card.calibration or {}).get("bounds") or {}
    if not bounds.get("far_bound_curve"):
        return []
    curves = [bounds["far_bound_curve"]]
    templates = bounds.get("template_curves") or {}
    sizes = sorted(int(k) for k in templates) if template_size > 1 else []
    for size in sizes:
        curves.append(templates[str(size)]["far_bound_curve"])
        if size >= template_size:
            break
    return curves


def _point_for_far(card: ModelCard, far: float) -> OperatingPoint:
    """The card's threshold for ``far``: a calibrated one when the card has it, else read off the FAR curve
    (log-FAR interpolation), clamped to the curve's ends."""
    for key in card.thresholds:
        if math.isclose(float(key), far, rel_tol=1e-6):
            return OperatingPoint(card.threshold_for(far), far)
    curve = card.calibration.get("far_curve") if card.calibration else None
    if not curve:
        return OperatingPoint(card.threshold_for(far), far)  # raises: names the FARs the card has
    return _read_curve(curve, far)


def _read_curve(curve: list[list[float]], far: float) -> OperatingPoint:
    """The threshold for ``far`` on a ``[threshold, FAR]`` curve (log-FAR interpolation, clamped to its ends)."""
    pts = sorted((float(f), float(t)) for t, f in curve if f > 0)
    fs = np.log10([f for f, _ in pts])
    ts = np.array([t for _, t in pts])
    reached = float(np.clip(far, pts[0][0], pts[-1][0]))
    return OperatingPoint(float(np.interp(np.log10(reached), fs, ts)), reached)


def far_at(card: ModelCard, threshold: float) -> float | None:
    """FAR of a threshold by interpolating the card's calibration curve (log-FAR between recorded points)."""
    curve = card.calibration.get("far_curve") if card.calibration else None
    if not curve:
        return None
    return _curve_far(curve, threshold)


def _curve_far(curve: list[list[float]], threshold: float) -> float:
    """The FAR of ``threshold`` on a ``[threshold, FAR]`` curve (log-FAR interpolation, clamped to its ends)."""
    pts = sorted((float(t), float(f)) for t, f in curve)
    ts = np.array([t for t, _ in pts])
    fs = np.log10(np.clip([f for _, f in pts], 1e-12, 1.0))
    return float(10 ** np.interp(threshold, ts, fs))


def identity_templates(vectors: np.ndarray, names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """One template per identity: the mean of its L2-normalised embeddings, renormalised (names sorted)."""
    v = np.asarray(vectors, np.float32)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    labels, inverse = np.unique(np.asarray(names, dtype=object).astype(str), return_inverse=True)
    sums = np.zeros((len(labels), v.shape[1]), np.float64)
    np.add.at(sums, inverse, v)
    sums /= np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return [str(x) for x in labels], sums.astype(np.float32)


def check_match(match: str) -> str:
    """``match`` if it is one of :data:`MATCHES`, else a FaceverifyError naming them."""
    if match not in MATCHES:
        raise FaceverifyError(f"unknown match {match!r} (choose from {', '.join(MATCHES)})")
    return match


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two L2-normalised embeddings."""
    return float(np.clip(np.dot(a, b), -1.0, 1.0))


@dataclass(frozen=True)
class Verdict:
    """One comparison decided: same person when the similarity reaches the threshold (``far`` is its FAR)."""

    same: bool
    similarity: float
    threshold: float
    far: float | None


def decide(a: np.ndarray, b: np.ndarray, point: OperatingPoint) -> Verdict:
    """Compare two L2-normalised embeddings at ``point``."""
    s = cosine(a, b)
    return Verdict(s >= point.threshold, s, point.threshold, point.far)
