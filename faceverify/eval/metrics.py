"""Verification and open-set identification metrics on similarity scores.

The exact ROC curve (numpy), its area (scipy's Mann-Whitney U), the threshold at a FAR, TAR at FAR, the EER, the
LFW k-fold rule and open-set identification (DIR/FPIR).

Conventions used throughout:

* Scores are similarities: higher means more alike. A pair is declared *same* iff ``score >= threshold``.
* Labels are booleans (``True`` = same person / genuine pair); 0/1 integers are accepted.
* FAR (false-accept rate) is the fraction of impostor (different-person) scores ``>= threshold``;
  TAR (true-accept rate) the fraction of genuine scores ``>= threshold``.
* All scores must be finite; empty inputs and inputs that lack either class (where a metric needs both) raise
  :class:`~faceverify.errors.FaceverifyError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FaceverifyError

__all__ = [
    "KFoldResult",
    "accuracy_at",
    "auc",
    "best_threshold",
    "eer",
    "far_key",
    "far_of_threshold",
    "kfold_accuracy",
    "open_set_identification",
    "roc",
    "tar_at_far",
    "threshold_at_far",
    "verification_report",
]

# Tolerance when turning ``far * n`` into a count of allowed false accepts, so that e.g. 0.1 * 30 (which is
# 3.0000000000000004 or 2.9999999999999996 in floating point) allows exactly 3.
_COUNT_EPS = 1e-9


# --------------------------------------------------------------------------------------------- validation


def _scores(scores: Any, name: str = "scores") -> np.ndarray:
    arr = np.asarray(scores)
    if arr.ndim != 1:
        raise FaceverifyError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise FaceverifyError(f"{name} is empty")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
            or arr.dtype == np.bool_):
        raise FaceverifyError(f"{name} must be numeric, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise FaceverifyError(f"{name} contains NaN or infinite values")
    return arr


def _labels(labels: Any, n: int) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise FaceverifyError(f"labels must be a 1-D array of length {n}, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if np.issubdtype(arr.dtype, np.number) and np.all((arr == 0) | (arr == 1)):
        return arr.astype(bool)
    raise FaceverifyError("labels must be booleans or 0/1")


def _pair_inputs(scores: Any, labels: Any, need_both: bool = True) -> tuple[np.ndarray, np.ndarray]:
    s = _scores(scores)
    y = _labels(labels, s.shape[0])
    if need_both:
        n_pos = int(y.sum())
        if n_pos == 0 or n_pos == y.size:
            raise FaceverifyError("need both same-person and different-person pairs")
    return s, y


def _rate(value: float, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise FaceverifyError(f"{name} must be a number, got {value!r}") from None
    if not 0.0 <= v <= 1.0:  # also rejects NaN
        raise FaceverifyError(f"{name} must be in [0, 1], got {value!r}")
    return v


def far_key(far: float) -> str:
    """The string a FAR is keyed by in reports and model cards: 0.01 -> "1e-2", 0.001 -> "1e-3", 0.005 -> "5e-3"."""
    mantissa, exponent = f"{float(far):.6e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


# ------------------------------------------------------------------------------------------- verification


def roc(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact ROC curve: ``(far, tar, thresholds)``, every point kept (as scikit-learn's ``roc_curve`` with
    ``drop_intermediate=False``; the tests check it against the definition).

    One operating point per distinct score (tied scores move together, giving a diagonal step), in decreasing
    threshold order, preceded by ``threshold = +inf`` with ``far = tar = 0``. Point ``i`` is the rate of
    scores ``>= thresholds[i]``; ``far`` and ``tar`` are non-decreasing and end at 1.
    """
    s, y = _pair_inputs(scores, labels)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # the last pair of each run of tied scores
    accepted_genuine = np.cumsum(y)[last]
    accepted_impostor = last + 1 - accepted_genuine
    tar = np.r_[0.0, accepted_genuine / y.sum()]
    far = np.r_[0.0, accepted_impostor / (y.size - y.sum())]
    return far, tar, np.r_[np.inf, s[last]].astype(np.float64)


def auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve: the chance that a genuine pair outscores an impostor pair, tied pairs counting
    1/2 (the Mann-Whitney U statistic over both counts, :func:`scipy.stats.mannwhitneyu`)."""
    from scipy.stats import mannwhitneyu

    s, y = _pair_inputs(scores, labels)
    genuine, impostor = s[y].astype(np.float64), s[~y].astype(np.float64)
    return float(mannwhitneyu(genuine, impostor, alternative="two-sided", method="asymptotic").statistic
                 / (genuine.size * impostor.size))


def eer(scores: Any, labels: Any) -> float:
    """Equal error rate: the FAR where FAR == FRR (= 1 - TAR), linearly interpolated along the ROC curve."""
    far, tar, _ = roc(scores, labels)
    d = far + tar - 1.0  # = FAR - FRR: non-decreasing from -1 to +1 along the curve
    i = int(np.argmax(d >= 0.0))  # first point at or past the crossing (exists: d[-1] == 1)
    if d[i] == 0.0:
        return float(far[i])
    alpha = -d[i - 1] / (d[i] - d[i - 1])
    return float(far[i - 1] + alpha * (far[i] - far[i - 1]))


def threshold_at_far(impostor_scores: Any, far: float) -> float:
    """Calibrate a threshold on impostor scores: the smallest ``t`` with ``mean(impostor >= t) <= far``.

    With ``n`` impostors, ``k = floor(far * n)`` false accepts are allowed. If ``k >= n`` every threshold
    qualifies and ``-inf`` is returned. Otherwise the answer is the smallest floating-point number (in the
    scores' own dtype, so float32 scores compare exactly) strictly greater than the (k+1)-th largest impostor
    score: ``numpy.nextafter(s_(k+1), +inf)``. Tied impostor scores cannot be split, so the achieved FAR can be
    below ``far``. When ``far * n < 1`` (too few impostors to measure ``far``), ``k = 0`` and the threshold
    lies just above the highest impostor score: the empirical FAR is 0, and the true FAR is unknown.
    """
    s = _scores(impostor_scores, "impostor_scores")
    target = _rate(far, "far")
    n = s.size
    k = int(math.floor(target * n + _COUNT_EPS))
    if k >= n:
        return -math.inf
    kth = np.partition(s, n - k - 1)[n - k - 1]  # the (k+1)-th largest
    return float(np.nextafter(kth, np.array(np.inf, dtype=s.dtype)))


def far_of_threshold(impostor_scores: Any, threshold: float) -> float:
    """Empirical FAR of ``threshold``: the fraction of impostor scores ``>= threshold``."""
    s = _scores(impostor_scores, "impostor_scores")
    return float(np.mean(s >= threshold))


def tar_at_far(scores: Any, labels: Any, far: float) -> float:
    """TAR at the operating point chosen by :func:`threshold_at_far` on the impostor scores.

    That threshold is the smallest (hence the highest-TAR) one whose empirical FAR is ``<= far``, so the result
    equals the largest TAR among ROC points with ``FAR <= far`` (no interpolation between points).
    """
    s, y = _pair_inputs(scores, labels)
    t = threshold_at_far(s[~y], far)
    return float(np.mean(s[y] >= t))


def accuracy_at(scores: Any, labels: Any, threshold: float) -> float:
    """Fraction of pairs classified correctly when *same* is declared iff ``score >= threshold``."""
    s, y = _pair_inputs(scores, labels, need_both=False)
    return float(np.mean((s >= threshold) == y))


def _best_threshold(s: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy; see :func:`best_threshold`."""
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    y_sorted = y[order]
    # first index of each run of equal scores (ascending)
    starts = np.r_[0, np.flatnonzero(s_sorted[1:] != s_sorted[:-1]) + 1]
    uniq = s_sorted[starts]
    m = uniq.size
    pos_below = np.r_[0, np.cumsum(y_sorted)][np.r_[starts, s_sorted.size]]   # genuine with score < cut
    neg_below = np.r_[0, np.cumsum(~y_sorted)][np.r_[starts, s_sorted.size]]  # impostors with score < cut
    n_pos = pos_below[-1]
    # candidate j (0..m) accepts exactly the scores >= uniq[j] (j == m: accepts nothing)
    correct = (n_pos - pos_below) + neg_below
    best = np.flatnonzero(correct == correct.max())
    j = int(best[(best.size - 1) // 2])
    acc = float(correct[j] / s.size)
    if j == 0:
        return float(uniq[0]), acc
    lo = uniq[j - 1]
    if j == m:
        return float(np.nextafter(lo, np.array(np.inf, dtype=s.dtype))), acc
    hi = uniq[j]
    mid = lo / 2 + hi / 2
    if not lo < mid <= hi:  # adjacent floats: the midpoint rounds onto lo
        mid = hi
    return float(mid), acc


def best_threshold(scores: Any, labels: Any) -> float:
    """The threshold with the highest accuracy on these pairs.

    Accuracy is constant between neighbouring distinct scores, so the threshold returned is the midpoint of the
    best gap (not a score itself), which generalises better to unseen pairs. If several gaps tie, the middle
    one (the lower of the two middles) is taken. Accepting everything returns the lowest score; rejecting
    everything returns the next float above the highest score.
    """
    s, y = _pair_inputs(scores, labels, need_both=False)
    return _best_threshold(s, y)[0]


@dataclass(frozen=True)
class KFoldResult:
    """Per-fold accuracies/thresholds of the LFW k-fold rule and their summary.

    ``std`` is the *population* standard deviation (``ddof=0``, i.e. ``numpy.std``) of the fold accuracies,
    which is what LFW results are customarily reported with (``mean ± std``). ``sem`` is the standard error
    defined in the LFW technical report, ``sample_std / sqrt(k)`` with ``ddof=1`` (0 when there is one fold).
    """

    folds: np.ndarray
    accuracies: np.ndarray
    thresholds: np.ndarray
    mean: float
    std: float
    sem: float


def kfold_accuracy(scores: Any, labels: Any, folds: Any) -> KFoldResult:
    """The LFW protocol: for each fold, pick :func:`best_threshold` on all *other* folds, and measure accuracy on
    the held-out fold.

    ``folds`` is either one fold id per pair (any integers; folds are taken in sorted id order) or an ``int``
    ``k``, meaning ``k`` contiguous folds of (nearly) equal size in the given order — as in LFW's pairs.txt.
    """
    s, y = _pair_inputs(scores, labels)
    if isinstance(folds, (int, np.integer)) and not isinstance(folds, bool):
        k = int(folds)
        if not 2 <= k <= s.size:
            raise FaceverifyError(f"number of folds must be between 2 and {s.size}, got {k}")
        fold_ids = np.repeat(np.arange(k), [len(c) for c in np.array_split(np.arange(s.size), k)])
    else:
        fold_ids = np.asarray(folds)
        if fold_ids.shape != s.shape:
            raise FaceverifyError(f"folds must give one fold per pair ({s.size}), got shape {fold_ids.shape}")
        if not np.issubdtype(fold_ids.dtype, np.integer):
            raise FaceverifyError("fold ids must be integers")
    ids = np.unique(fold_ids)
    if ids.size < 2:
        raise FaceverifyError("k-fold evaluation needs at least 2 folds")
    accs = np.empty(ids.size)
    thrs = np.empty(ids.size)
    for i, f in enumerate(ids):
        test = fold_ids == f
        thrs[i] = _best_threshold(s[~test], y[~test])[0]
        accs[i] = np.mean((s[test] >= thrs[i]) == y[test])
    sem = float(np.std(accs, ddof=1) / math.sqrt(ids.size)) if ids.size > 1 else 0.0
    return KFoldResult(ids, accs, thrs, float(accs.mean()), float(accs.std()), sem)


def verification_report(
    scores: Any,
    labels: Any,
    fars: Sequence[float] = (1e-2, 1e-3),
    folds: Any = None,
    threshold: float | None = None,
) -> dict[str, Any]:
    """All verification numbers in one JSON-ready dict.

    Keys: ``accuracy``, ``accuracy_std`` (population std over folds; ``None`` without folds), ``auc``, ``eer``,
    ``tar_at_far`` (``{"1e-2": tar, ...}``), ``threshold``, ``fold_thresholds`` (``None`` without folds),
    ``pairs``, ``same``, ``different``.

    With ``folds`` (see :func:`kfold_accuracy`) accuracy is the k-fold mean and ``threshold`` the mean of the
    per-fold thresholds. Without folds, accuracy is measured at ``threshold``, or — if that is ``None`` — at
    :func:`best_threshold` of these same pairs, which is optimistic. Giving both ``folds`` and ``threshold`` is an
    error.
    """
    s, y = _pair_inputs(scores, labels)
    if folds is not None and threshold is not None:
        raise FaceverifyError("give either folds or a fixed threshold, not both")
    report: dict[str, Any] = {}
    if folds is not None:
        kf = kfold_accuracy(s, y, folds)
        report["accuracy"] = kf.mean
        report["accuracy_std"] = kf.std
        report["threshold"] = float(kf.thresholds.mean())
        report["fold_thresholds"] = [float(t) for t in kf.thresholds]
    else:
        thr = _best_threshold(s, y)[0] if threshold is None else float(threshold)
        report["accuracy"] = float(np.mean((s >= thr) == y))
        report["accuracy_std"] = None
        report["threshold"] = thr
        report["fold_thresholds"] = None
    report["auc"] = auc(s, y)
    report["eer"] = eer(s, y)
    report["tar_at_far"] = {far_key(f): tar_at_far(s, y, f) for f in fars}
    report["pairs"] = int(s.size)
    report["same"] = int(y.sum())
    report["different"] = int(s.size - y.sum())
    return report


# ------------------------------------------------------------------------------- open-set identification


def open_set_identification(
    sim_matrix: Any,
    probe_labels: Sequence[Any] | np.ndarray,
    gallery_labels: Sequence[Any] | np.ndarray,
    fpirs: Iterable[float] = (0.01, 0.1),
    at_threshold: float | None = None,
) -> dict[str, Any]:
    """Open-set (watch-list) identification from a probe x gallery similarity matrix.

    ``gallery_labels`` may repeat (several templates per identity). A probe is *mated* if its label is in the
    gallery, *non-mated* (never enrolled) otherwise. For every probe the top score is its best gallery
    similarity; its rank-1 decision is correct iff that top score belongs to the probe's identity and no other
    identity reaches it (ties against the true identity count as errors).

    Returns a dict with:

    * ``rank1``: fraction of mated probes whose rank-1 decision is correct (``None`` if there are none);
    * ``mated`` / ``non_mated``: probe counts;
    * ``thresholds``: per FPIR key ("1e-2"), :func:`threshold_at_far` on the non-mated top scores, i.e. the
      smallest threshold at which the fraction of non-mated probes with top score ``>= t`` is ``<= fpir``;
    * ``fpir``: the achieved FPIR at that threshold;
    * ``dir_at_fpir``: per FPIR key, the fraction of mated probes whose rank-1 is correct and whose top score
      is ``>= threshold`` (detection and identification rate).

    ``thresholds``/``fpir``/``dir_at_fpir`` values are ``None`` when there are no non-mated probes
    (or, for DIR, no mated probes). With ``at_threshold``, ``at_threshold`` holds the ``threshold`` and the
    ``fpir`` and ``dir`` measured there.
    """
    sim = np.asarray(sim_matrix)
    if sim.ndim != 2 or sim.shape[0] == 0 or sim.shape[1] == 0:
        raise FaceverifyError(f"sim_matrix must be a non-empty 2-D array, got shape {sim.shape}")
    if not np.issubdtype(sim.dtype, np.floating):
        if not np.issubdtype(sim.dtype, np.number):
            raise FaceverifyError(f"sim_matrix must be numeric, got dtype {sim.dtype}")
        sim = sim.astype(np.float64)
    if not np.all(np.isfinite(sim)):
        raise FaceverifyError("sim_matrix contains NaN or infinite values")
    probes = np.asarray(probe_labels)
    gallery = np.asarray(gallery_labels)
    if probes.shape != (sim.shape[0],):
        raise FaceverifyError(f"probe_labels must have length {sim.shape[0]}, got shape {probes.shape}")
    if gallery.shape != (sim.shape[1],):
        raise FaceverifyError(f"gallery_labels must have length {sim.shape[1]}, got shape {gallery.shape}")
    fpir_list = [_rate(f, "fpir") for f in fpirs]

    # map labels to integer identity ids shared between probes and gallery
    ids, inverse = np.unique(np.concatenate([gallery.astype(object), probes.astype(object)]).astype(str),
                             return_inverse=True)
    gal_id = inverse[: gallery.size]
    probe_id = inverse[gallery.size:]
    mated = np.isin(probe_id, gal_id)

    top = sim.max(axis=1)
    true_best = np.empty(sim.shape[0])
    other_best = np.empty(sim.shape[0])
    step = max(1, 2**24 // sim.shape[1])  # bound the (rows, G) temporaries
    for r0 in range(0, sim.shape[0], step):
        block = sim[r0:r0 + step]
        same_identity = gal_id[None, :] == probe_id[r0:r0 + step, None]
        true_best[r0:r0 + step] = np.where(same_identity, block, -np.inf).max(axis=1)
        other_best[r0:r0 + step] = np.where(same_identity, -np.inf, block).max(axis=1)
    correct = mated & (true_best == top) & (other_best < top)

    n_mated = int(mated.sum())
    n_non = int((~mated).sum())
    result: dict[str, Any] = {
        "rank1": float(correct[mated].mean()) if n_mated else None,
        "mated": n_mated,
        "non_mated": n_non,
        "thresholds": {},
        "fpir": {},
        "dir_at_fpir": {},
    }
    non_top = top[~mated]
    for f in fpir_list:
        key = far_key(f)
        if n_non == 0:
            result["thresholds"][key] = None
            result["fpir"][key] = None
            result["dir_at_fpir"][key] = None
            continue
        t = threshold_at_far(non_top, f)
        result["thresholds"][key] = t
        result["fpir"][key] = float(np.mean(non_top >= t))
        result["dir_at_fpir"][key] = float(np.mean(correct[mated] & (top[mated] >= t))) if n_mated else None
    if at_threshold is not None:
        t = float(at_threshold)
        result["at_threshold"] = dict(
            threshold=t,
            fpir=float(np.mean(non_top >= t)) if n_non else None,
            dir=float(np.mean(correct[mated] & (top[mated] >= t))) if n_mated else None,
        )
    return result
