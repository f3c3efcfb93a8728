"""FAR bounds that hold for people the calibration never saw: an identity-level bootstrap of the impostor tail.

Impostor pairs are not independent: the same few look-alike people make most of the far tail, so resampling
pairs understates how much the tail changes with other people. Here *identities* are resampled with
replacement: a resample weights each impostor pair (a, b) by how often identities a and b were drawn, and its
FAR at threshold t is the weighted share of impostor pairs scoring >= t. The upper bound at t is the
``confidence`` quantile of that FAR over the resamples; the bounded threshold for a target FAR f is the lowest
threshold whose bound is <= f. An identity-disjoint split (calibrate on half the people, measure on the other
half) checks how far a point estimate moves between groups of people.

Only the tail matters for identification (FAR <= ``TAIL_FAR``): the pairs above that point are collected once,
with their identities, and every resample re-weights just those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import FaceverifyError
from .metrics import far_key

TAIL_FAR = 1e-2
RESAMPLES = 500
CONFIDENCE = 0.95
SEED = 0
GRID = 800
"""Thresholds evaluated between the tail's lowest and highest impostor score."""
TEMPLATE_SIZES = (2, 3, 5, 10)
"""Template sizes (images averaged) given their own bounded curve: a template's impostor scores run higher than
a single image's, and more so the more images it averages."""


@dataclass(frozen=True)
class Tail:
    """Impostor comparisons scoring at or above ``floor``: scores (descending) and the identities of both sides
    (numbered 0..K-1). ``left[k]`` and ``right[k]`` count identity k's items on each side (its images, or 1 for
    its template); ``ordered`` is False when both sides are the same images (each pair counted once)."""

    scores: np.ndarray
    a: np.ndarray
    b: np.ndarray
    left: np.ndarray
    right: np.ndarray
    ordered: bool
    floor: float


def _tail(scores: list[np.ndarray], a: list[np.ndarray], b: list[np.ndarray], left: np.ndarray, right: np.ndarray,
          ordered: bool, floor: float) -> Tail:
    s = np.concatenate(scores)
    order = np.argsort(-s, kind="stable")
    return Tail(s[order].astype(np.float64), np.concatenate(a)[order], np.concatenate(b)[order],
                left.astype(np.float64), right.astype(np.float64), ordered, float(floor))


def impostor_tail(vectors: np.ndarray, labels: np.ndarray, floor: float, block: int = 2048) -> Tail:
    """Every cross-identity pair of ``vectors`` with cosine >= ``floor``, with the identities of both sides."""
    _, ids, counts = np.unique(labels, return_inverse=True, return_counts=True)
    scores: list[np.ndarray] = []
    a: list[np.ndarray] = []
    b: list[np.ndarray] = []
    n = len(vectors)
    for start in range(0, n, block):
        stop = min(start + block, n)
        sims = vectors[start:stop] @ vectors[start:].T
        keep = (sims >= floor) & (ids[start:stop, None] != ids[None, start:])
        keep &= np.triu(np.ones(keep.shape, bool), k=1)
        r, c = np.nonzero(keep)
        scores.append(sims[r, c])
        a.append(ids[start + r])
        b.append(ids[start + c])
    return _tail(scores, a, b, counts, counts, False, floor)


def size_templates(vectors: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(identity numbers, templates): for each identity with at least ``size`` images, the renormalised mean of
    its first ``size`` (identities numbered as by ``numpy.unique``)."""
    _, ids = np.unique(labels, return_inverse=True)
    owners: list[int] = []
    templates: list[np.ndarray] = []
    for k in np.unique(ids):
        rows = np.flatnonzero(ids == k)
        if rows.size >= size:
            mean = vectors[rows[:size]].astype(np.float64).mean(axis=0)
            owners.append(int(k))
            templates.append(mean / np.linalg.norm(mean))
    return np.array(owners, np.int64), np.array(templates, np.float32)


def template_scores(vectors: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, Tail]:
    """Impostor scores of ``size``-image templates against every image of the other identities, and their tail
    above the ``TAIL_FAR`` point."""
    _, ids, counts = np.unique(labels, return_inverse=True, return_counts=True)
    owners, templates = size_templates(vectors, labels, size)
    sims = templates @ vectors.T
    impostor = sims[owners[:, None] != ids[None, :]]
    floor = float(np.quantile(impostor, 1 - TAIL_FAR))
    keep = (sims >= floor) & (owners[:, None] != ids[None, :])
    r, c = np.nonzero(keep)
    left = np.zeros(counts.size)
    left[owners] = 1
    return impostor, _tail([sims[r, c]], [owners[r]], [ids[c]], left, counts, True, floor)


def weighted_far(tail: Tail, weights: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """FAR at each threshold when identity k counts ``weights[k]`` times (weights 0/1 select a group of people)."""
    w = weights.astype(np.float64)
    pairs = (w @ tail.left) * (w @ tail.right) - (w**2 * tail.left * tail.right).sum()
    pairs /= 1 if tail.ordered else 2
    if pairs <= 0:
        raise FaceverifyError("a resample holds fewer than two identities")
    cum = np.concatenate([[0.0], np.cumsum(w[tail.a] * w[tail.b])])
    above = np.searchsorted(-tail.scores, -thresholds, side="right")  # how many tail scores are >= each threshold
    return cum[above] / pairs


def threshold_grid(tail: Tail, size: int = GRID) -> np.ndarray:
    """Thresholds from the tail's floor to just above its highest impostor score, ascending."""
    top = float(np.nextafter(tail.scores[0], np.inf)) if tail.scores.size else tail.floor
    return np.linspace(tail.floor, top, size)


def bootstrap_upper(
    tail: Tail, grid: np.ndarray, resamples: int = RESAMPLES, confidence: float = CONFIDENCE, seed: int = SEED
) -> np.ndarray:
    """The ``confidence`` upper bound of FAR at each grid threshold over identity resamples."""
    rng = np.random.default_rng(seed)
    k = tail.left.size
    fars = np.empty((resamples, grid.size))
    for r in range(resamples):
        fars[r] = weighted_far(tail, rng.multinomial(k, np.full(k, 1.0 / k)), grid)
    return np.quantile(fars, confidence, axis=0, method="higher")


def lowest_threshold(grid: np.ndarray, far: np.ndarray, target: float) -> float:
    """The lowest grid threshold whose (non-increasing) FAR is <= ``target``."""
    ok = np.flatnonzero(far <= target)
    return float(grid[ok[0]]) if ok.size else float(grid[-1])


def bounded_curve(
    tail: Tail, comparisons: int, curve_fars: Sequence[float], resamples: int, confidence: float, seed: int
) -> tuple[np.ndarray, np.ndarray, list[list[float]]]:
    """(grid, FAR upper bound on it, [bounded threshold, FAR] at each curve FAR the tail can speak for: at least
    ten impostor comparisons and no more than ``TAIL_FAR``)."""
    grid = threshold_grid(tail)
    upper = bootstrap_upper(tail, grid, resamples, confidence, seed)
    smallest = 10 / comparisons
    curve = [[round(lowest_threshold(grid, upper, f), 6), f] for f in curve_fars if smallest <= f <= TAIL_FAR]
    return grid, upper, curve


def bound_record(
    vectors: np.ndarray,
    labels: np.ndarray,
    impostor: np.ndarray,
    fars: Sequence[float],
    curve_fars: Sequence[float],
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
    template_sizes: Sequence[int] = TEMPLATE_SIZES,
) -> dict:
    """The card's record of honest bounds: for each calibration FAR, the bounded threshold and the point FAR it
    has; bounded FAR curves ([threshold, FAR bound]) for identification against single images
    (``far_bound_curve``) and against templates of each size in ``template_sizes`` (``template_curves``); and
    the identity-disjoint split check."""
    tail = impostor_tail(vectors, labels, float(np.quantile(impostor, 1 - TAIL_FAR)))
    grid, upper, curve = bounded_curve(tail, impostor.size, curve_fars, resamples, confidence, seed)
    point = weighted_far(tail, np.ones(tail.left.size), grid)
    thresholds = {}
    for f in fars:
        if f <= TAIL_FAR:
            t = lowest_threshold(grid, upper, f)
            thresholds[far_key(f)] = dict(threshold=round(t, 6), point_far=float(np.interp(t, grid, point)))
    templates = {}
    for size in template_sizes:
        scores, template_tail = template_scores(vectors, labels, size)
        templates[str(size)] = dict(
            templates=int(template_tail.left.sum()), comparisons=int(scores.size),
            far_bound_curve=bounded_curve(template_tail, scores.size, curve_fars, resamples, confidence, seed)[2],
        )
    return dict(
        method=f"identity bootstrap: {resamples} resamples of the {tail.left.size} identities with replacement "
               f"(each impostor comparison weighted by how often both its people were drawn); bound = the "
               f"{confidence:g} quantile of FAR over resamples; templates: the renormalised mean of an identity's "
               f"first k images against every image of the other identities",
        resamples=resamples,
        confidence=confidence,
        seed=seed,
        identities=int(tail.left.size),
        tail_pairs=int(tail.scores.size),
        thresholds=thresholds,
        far_bound_curve=curve,
        template_curves=templates,
        split_half=split_half(tail, grid, fars, seed),
    )


def split_half(tail: Tail, grid: np.ndarray, fars: Sequence[float], seed: int = SEED) -> dict:
    """Point thresholds chosen on a random half of the identities and the FAR they give on the other half."""
    rng = np.random.default_rng(seed)
    half = rng.permutation(tail.left.size) < tail.left.size // 2
    far_a = weighted_far(tail, half.astype(float), grid)
    far_b = weighted_far(tail, (~half).astype(float), grid)
    out = {}
    for f in (*fars, *(x for x in (1e-5, 2e-5) if x not in fars)):
        if f <= TAIL_FAR:
            t = lowest_threshold(grid, far_a, f)
            out[far_key(f)] = dict(threshold=round(t, 6), far_other_half=float(np.interp(t, grid, far_b)))
    return out

