"""Verification and identification metrics on hand-computed cases, checked against their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from faceverify.errors import FaceverifyError
from faceverify.eval.metrics import (
    KFoldResult,
    accuracy_at,
    auc,
    best_threshold,
    eer,
    far_key,
    far_of_threshold,
    kfold_accuracy,
    open_set_identification,
    roc,
    tar_at_far,
    threshold_at_far,
    verification_report,
)

# 8 pairs, listed by decreasing score: genuine at 0.9 0.8 0.6 0.4, impostors at 0.7 0.5 0.3 0.2.
S8 = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
Y8 = np.array([True, True, False, True, False, True, False, False])


# ----------------------------------------------------------------------------------------------- roc / auc


def test_roc_hand_computed():
    far, tar, thr = roc(S8, Y8)
    np.testing.assert_allclose(far, [0, 0, 0, .25, .25, .5, .5, .75, 1])
    np.testing.assert_allclose(tar, [0, .25, .5, .5, .75, .75, 1, 1, 1])
    assert thr[0] == np.inf
    np.testing.assert_allclose(thr[1:], S8)


def test_roc_ties_move_together():
    s = np.array([0.5, 0.5, 0.5, 0.1])
    y = np.array([True, False, True, False])
    far, tar, thr = roc(s, y)
    np.testing.assert_allclose(far, [0, .5, 1])
    np.testing.assert_allclose(tar, [0, 1, 1])
    np.testing.assert_allclose(thr, [np.inf, .5, .1])
    # one genuine and one impostor tied: counts 1/2 in the AUC
    assert auc([0.5, 0.5], [True, False]) == pytest.approx(0.5)
    assert auc(s, y) == pytest.approx(0.75)


def test_auc_hand_computed():
    # genuine-over-impostor pairs: 0.9 -> 4, 0.8 -> 4, 0.6 -> 3, 0.4 -> 2 of 16
    assert auc(S8, Y8) == pytest.approx(13 / 16)
    assert auc([3, 2, 1, 0], [1, 1, 0, 0]) == pytest.approx(1.0)
    assert auc([3, 2, 1, 0], [0, 0, 1, 1]) == pytest.approx(0.0)


def test_roc_auc_tar_match_their_definitions():
    """roc (numpy) and auc (scipy's Mann-Whitney U): check them, and tar_at_far / eer built on top, against the
    plain definitions on random scores with plenty of ties."""
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(2, 300))
        y = rng.random(n) < 0.5
        y[0], y[1] = True, False
        s = np.round(rng.normal(size=n) + y, decimals=int(rng.integers(0, 3)))
        genuine, impostor = s[y], s[~y]
        far, tar, thr = roc(s, y)
        assert thr[0] == np.inf and far[0] == tar[0] == 0
        np.testing.assert_array_equal(thr[1:], np.unique(s)[::-1])  # one point per distinct score
        np.testing.assert_allclose(far[1:], [np.mean(impostor >= t) for t in thr[1:]])
        np.testing.assert_allclose(tar[1:], [np.mean(genuine >= t) for t in thr[1:]])
        # AUC = P(genuine > impostor) + P(genuine == impostor) / 2 over all genuine/impostor pairs
        diff = genuine[:, None] - impostor[None, :]
        assert auc(s, y) == pytest.approx(np.mean(diff > 0) + np.mean(diff == 0) / 2)
        for target in (0.0, 0.01, 0.1, 0.3, 1.0):
            expected = tar[far <= target + 1e-12].max()
            assert tar_at_far(s, y, target) == pytest.approx(expected), (trial, target)
        # the EER lies on the ROC segment where FAR - FRR changes sign
        d = far + tar - 1.0
        i = int(np.argmax(d >= 0.0))
        assert far[max(i - 1, 0)] - 1e-12 <= eer(s, y) <= far[i] + 1e-12


# ---------------------------------------------------------------------------------------------------- eer


def test_eer_at_a_vertex():
    # at threshold 0.6: FAR = 1/4, TAR = 3/4 -> FRR = 1/4
    assert eer(S8, Y8) == pytest.approx(0.25)


def test_eer_interpolated():
    # decreasing order: G I G I I; ROC (0,0) (0,1/2) (1/3,1/2) (1/3,1) ... FAR - FRR crosses 0 on the vertical
    # segment from (1/3, 1/2) to (1/3, 1), at TAR = 2/3 -> EER = 1/3
    s = [5, 4, 3, 2, 1]
    y = [True, False, True, False, False]
    assert eer(s, y) == pytest.approx(1 / 3)
    # horizontal crossing: G I G -> (0,1/2) to (1,1/2): FAR = FRR = 1/2 midway
    assert eer([3, 2, 1], [True, False, True]) == pytest.approx(0.5)


def test_eer_extremes():
    assert eer([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 0.0
    assert eer([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 1.0


# --------------------------------------------------------------------------------------- tar / thresholds


def test_tar_at_far_hand_computed():
    # impostors 0.7 0.5 0.3 0.2
    assert tar_at_far(S8, Y8, 0.25) == pytest.approx(0.75)  # one false accept allowed: t just above 0.5
    assert tar_at_far(S8, Y8, 0.01) == pytest.approx(0.5)   # none allowed: t just above 0.7
    assert tar_at_far(S8, Y8, 0.5) == pytest.approx(1.0)    # two allowed: t just above 0.3
    assert tar_at_far(S8, Y8, 0.49) == pytest.approx(0.75)  # floor(0.49 * 4) = 1


def test_threshold_at_far_exact():
    imp = np.arange(1, 11) / 10.0  # 0.1 .. 1.0
    t = threshold_at_far(imp, 0.1)
    assert t == np.nextafter(0.9, 1.0)  # the smallest float that rejects 0.9
    assert far_of_threshold(imp, t) == pytest.approx(0.1)
    assert far_of_threshold(imp, np.nextafter(t, -1.0)) == pytest.approx(0.2)
    # 0.3 * 10 is 3.0000000000000004 in floating point: still 3 false accepts
    assert far_of_threshold(imp, threshold_at_far(imp, 0.3)) == pytest.approx(0.3)
    # 0.1 * 30 would floor to 2 without the tolerance
    imp30 = np.arange(30, dtype=float)
    assert far_of_threshold(imp30, threshold_at_far(imp30, 0.1)) == pytest.approx(0.1)
    # far * n < 1: no false accept allowed, threshold just above the top impostor
    t = threshold_at_far(imp, 0.05)
    assert t == np.nextafter(1.0, 2.0)
    assert far_of_threshold(imp, t) == 0.0
    assert threshold_at_far(imp, 0.0) == t
    # far = 1: everything qualifies
    assert threshold_at_far(imp, 1.0) == -math.inf


def test_threshold_at_far_ties_cannot_be_split():
    imp = np.array([0.5, 0.5, 0.5, 0.1])
    t = threshold_at_far(imp, 0.5)  # two false accepts allowed, but three scores tie at 0.5
    assert t == np.nextafter(0.5, 1.0)
    assert far_of_threshold(imp, t) == 0.0
    assert far_of_threshold(imp, threshold_at_far(imp, 0.75)) == 0.75


def test_threshold_at_far_is_minimal_random():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(1, 50))
        imp = np.round(rng.normal(size=n), int(rng.integers(0, 3)))
        far = float(rng.random())
        t = threshold_at_far(imp, far)
        assert far_of_threshold(imp, t) <= far
        if t != -math.inf:
            assert far_of_threshold(imp, np.nextafter(t, -np.inf)) > far


def test_threshold_at_far_float32_is_exact_in_float32():
    imp = np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32)
    t = threshold_at_far(imp, 0.25)
    assert np.float32(t) == np.nextafter(np.float32(0.3), np.float32(1))
    assert far_of_threshold(imp, np.float32(t)) == 0.25


def test_threshold_at_far_rejects_bad_input():
    with pytest.raises(FaceverifyError):
        threshold_at_far([], 0.1)
    with pytest.raises(FaceverifyError):
        threshold_at_far([0.1, 0.2], 1.5)
    with pytest.raises(FaceverifyError):
        threshold_at_far([0.1, 0.2], float("nan"))
    with pytest.raises(FaceverifyError):
        threshold_at_far([0.1, float("nan")], 0.1)


# ------------------------------------------------------------------------------------ accuracy / threshold


def test_accuracy_at_hand_computed():
    assert accuracy_at(S8, Y8, 0.55) == pytest.approx(6 / 8)
    assert accuracy_at(S8, Y8, 0.6) == pytest.approx(6 / 8)  # >= : 0.6 is accepted
    assert accuracy_at(S8, Y8, 0.61) == pytest.approx(5 / 8)
    assert accuracy_at(S8, Y8, 10) == pytest.approx(0.5)


def test_best_threshold_ties_take_middle_gap_midpoint():
    # gaps (0.7, 0.8), (0.5, 0.6), (0.3, 0.4) all give 6/8: the middle one, at its midpoint
    t = best_threshold(S8, Y8)
    assert t == pytest.approx(0.55)
    assert accuracy_at(S8, Y8, t) == pytest.approx(0.75)


def test_best_threshold_separable_and_edges():
    assert best_threshold([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == pytest.approx(0.5)
    # all genuine: accept everything -> lowest score
    assert best_threshold([0.3, 0.2], [1, 1]) == 0.2
    # all impostors: reject everything -> just above the highest score
    t = best_threshold([0.3, 0.2], [0, 0])
    assert t == np.nextafter(0.3, 1.0)
    # adjacent floats: the midpoint must still separate them
    a = 0.5
    b = np.nextafter(a, 1.0)
    t = best_threshold([b, a], [1, 0])
    assert a < t <= b and accuracy_at([b, a], [1, 0], t) == 1.0


def test_best_threshold_matches_brute_force():
    rng = np.random.default_rng(2)
    for _ in range(100):
        n = int(rng.integers(1, 40))
        y = rng.random(n) < 0.5
        s = np.round(rng.normal(size=n) + y, 1)
        t = best_threshold(s, y)
        cands = np.r_[np.unique(s), np.inf]
        best = max(accuracy_at(s, y, c) for c in cands)
        assert accuracy_at(s, y, t) == pytest.approx(best)
        assert t not in set(s.tolist()) or t == s.min()


# ---------------------------------------------------------------------------------------------- k-fold


def test_kfold_hand_computed():
    # fold 0: G .9 .8 .7 .3 | I .1 .2 .6 .65  -> alone, best gap (0.65, 0.7): t = 0.675 (7/8)
    # fold 1: G .85 .75 .65 | I .15 .25 .45   -> alone, separable at t = 0.55
    s = np.array([.9, .8, .7, .3, .1, .2, .6, .65, .85, .75, .65, .15, .25, .45])
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0], dtype=bool)
    folds = np.array([0] * 8 + [1] * 6)
    r = kfold_accuracy(s, y, folds)
    assert isinstance(r, KFoldResult)
    np.testing.assert_allclose(r.thresholds, [0.55, 0.675])
    # fold 0 at 0.55: misses G .3, accepts I .6 .65 -> 5/8; fold 1 at 0.675: misses G .65 -> 5/6
    np.testing.assert_allclose(r.accuracies, [5 / 8, 5 / 6])
    assert r.mean == pytest.approx((5 / 8 + 5 / 6) / 2)
    assert r.std == pytest.approx(abs(5 / 6 - 5 / 8) / 2)  # population std
    assert r.sem == pytest.approx(np.std([5 / 8, 5 / 6], ddof=1) / math.sqrt(2))
    # the int form means contiguous folds of (nearly) equal size: 7 and 7 here
    r2 = kfold_accuracy(s, y, 2)
    np.testing.assert_array_equal(r2.folds, [0, 1])


def test_kfold_separable_lfw_shape():
    # 10 folds x (300 same + 300 different), genuine in [0.6, 1], impostors in [-1, 0.4]: every fold perfect,
    # every threshold in the gap
    rng = np.random.default_rng(3)
    s, y, f = [], [], []
    for fold in range(10):
        s += list(rng.uniform(0.6, 1.0, 300)) + list(rng.uniform(-1.0, 0.4, 300))
        y += [True] * 300 + [False] * 300
        f += [fold] * 600
    r = kfold_accuracy(np.array(s), np.array(y), np.array(f))
    np.testing.assert_array_equal(r.accuracies, np.ones(10))
    assert r.mean == 1.0 and r.std == 0.0
    assert np.all((r.thresholds > 0.4) & (r.thresholds < 0.6))
    # the same data as 10 contiguous folds
    r2 = kfold_accuracy(np.array(s), np.array(y), 10)
    np.testing.assert_array_equal(r2.accuracies, r.accuracies)


def test_kfold_matches_reference_loop():
    rng = np.random.default_rng(4)
    n = 600
    y = np.tile(np.r_[np.ones(30, bool), np.zeros(30, bool)], 10)
    s = rng.normal(size=n) + 1.5 * y
    folds = np.repeat(np.arange(10), 60)
    r = kfold_accuracy(s, y, folds)
    for k in range(10):
        train = folds != k
        t = best_threshold(s[train], y[train])
        assert r.thresholds[k] == t
        assert r.accuracies[k] == pytest.approx(accuracy_at(s[~train], y[~train], t))
    assert r.std == pytest.approx(np.std(r.accuracies))


def test_kfold_rejects_bad_folds():
    with pytest.raises(FaceverifyError):
        kfold_accuracy(S8, Y8, np.zeros(8, int))  # one fold
    with pytest.raises(FaceverifyError):
        kfold_accuracy(S8, Y8, np.zeros(5, int))
    with pytest.raises(FaceverifyError):
        kfold_accuracy(S8, Y8, 1)


# ---------------------------------------------------------------------------------------------- report


def test_far_key():
    assert far_key(1e-2) == "1e-2"
    assert far_key(0.001) == "1e-3"
    assert far_key(5e-3) == "5e-3"
    assert far_key(0.1) == "1e-1"
    assert far_key(0.015) == "1.5e-2"


def test_verification_report_without_folds():
    r = verification_report(S8, Y8, fars=(0.25, 0.01))
    assert r["accuracy"] == pytest.approx(0.75)
    assert r["accuracy_std"] is None
    assert r["threshold"] == pytest.approx(0.55)
    assert r["fold_thresholds"] is None
    assert r["auc"] == pytest.approx(13 / 16)
    assert r["eer"] == pytest.approx(0.25)
    assert r["tar_at_far"] == {"2.5e-1": pytest.approx(0.75), "1e-2": pytest.approx(0.5)}
    assert r["pairs"] == 8 and r["same"] == 4 and r["different"] == 4
    fixed = verification_report(S8, Y8, threshold=0.61)
    assert fixed["threshold"] == 0.61 and fixed["accuracy"] == pytest.approx(5 / 8)
    assert set(fixed["tar_at_far"]) == {"1e-2", "1e-3"}


def test_verification_report_with_folds():
    rng = np.random.default_rng(5)
    y = np.tile(np.r_[np.ones(30, bool), np.zeros(30, bool)], 10)
    s = rng.normal(size=600) + 2 * y
    folds = np.repeat(np.arange(10), 60)
    r = verification_report(s, y, folds=folds)
    kf = kfold_accuracy(s, y, folds)
    assert r["accuracy"] == pytest.approx(kf.mean)
    assert r["accuracy_std"] == pytest.approx(kf.std)
    assert r["fold_thresholds"] == pytest.approx(list(kf.thresholds))
    assert r["threshold"] == pytest.approx(kf.thresholds.mean())
    assert r["pairs"] == 600
    import json

    json.dumps(r)  # JSON-ready
    with pytest.raises(FaceverifyError):
        verification_report(s, y, folds=folds, threshold=0.5)


def test_metrics_reject_bad_input():
    with pytest.raises(FaceverifyError):
        roc([0.1, 0.2], [True, True])  # one class only
    with pytest.raises(FaceverifyError):
        auc([0.1, 0.2], [1, 2])
    with pytest.raises(FaceverifyError):
        eer([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(FaceverifyError):
        accuracy_at([], [], 0.5)
    with pytest.raises(FaceverifyError):
        tar_at_far([[0.1, 0.2]], [[1, 0]], 0.1)


# ---------------------------------------------------------------------------------- open-set identification


def test_open_set_identification_hand_built():
    gallery = ["A", "B", "C"]
    probes = ["A", "B", "C", "X", "Y"]  # X and Y were never enrolled
    sim = np.array([
        [0.9, 0.2, 0.1],  # A: correct, top 0.9
        [0.3, 0.6, 0.7],  # B: wrong (C wins), top 0.7
        [0.1, 0.2, 0.5],  # C: correct, top 0.5
        [0.4, 0.3, 0.2],  # X: non-mated, top 0.4
        [0.1, 0.8, 0.3],  # Y: non-mated, top 0.8
    ])
    r = open_set_identification(sim, probes, gallery, fpirs=(0.01, 0.5, 1.0))
    assert r["mated"] == 3 and r["non_mated"] == 2
    assert r["rank1"] == pytest.approx(2 / 3)
    # FPIR 0.01: no non-mated probe may pass -> t just above 0.8: only A (0.9)
    assert r["thresholds"]["1e-2"] == np.nextafter(0.8, 1.0)
    assert r["fpir"]["1e-2"] == 0.0
    assert r["dir_at_fpir"]["1e-2"] == pytest.approx(1 / 3)
    # FPIR 0.5: one may pass (Y at 0.8) -> t just above 0.4: A (0.9) and C (0.5); B is wrong at rank 1
    assert r["thresholds"]["5e-1"] == np.nextafter(0.4, 1.0)
    assert r["fpir"]["5e-1"] == 0.5
    assert r["dir_at_fpir"]["5e-1"] == pytest.approx(2 / 3)
    # FPIR 1: no threshold -> DIR = rank-1 accuracy
    assert r["dir_at_fpir"]["1e0"] == pytest.approx(r["rank1"])
    # at a given threshold 0.6: Y (0.8) passes of X, Y; A (0.9) is right, B's 0.7 is wrong, C's 0.5 is below
    at = open_set_identification(sim, probes, gallery, at_threshold=0.6)["at_threshold"]
    assert at == dict(threshold=0.6, fpir=0.5, dir=pytest.approx(1 / 3))


def test_open_set_multiple_templates_and_ties():
    gallery = np.array([1, 1, 2])
    probes = np.array([1, 2, 2, 7])
    sim = np.array([
        [0.2, 0.8, 0.5],  # 1: best template of 1 wins
        [0.6, 0.1, 0.6],  # 2: tied with identity 1 -> counted as an error
        [0.1, 0.2, 0.3],  # 2: correct
        [0.5, 0.1, 0.1],  # 7: non-mated
    ])
    r = open_set_identification(sim, probes, gallery, fpirs=(0.1,))
    assert r["rank1"] == pytest.approx(2 / 3)
    # t just above 0.5: probe 1 (0.8) passes, probe 2b (0.3) does not
    assert r["dir_at_fpir"]["1e-1"] == pytest.approx(1 / 3)


def test_open_set_without_non_mated_or_mated():
    r = open_set_identification(np.eye(2), ["a", "b"], ["a", "b"])
    assert r["rank1"] == 1.0 and r["non_mated"] == 0
    assert r["dir_at_fpir"] == {"1e-2": None, "1e-1": None}
    r = open_set_identification(np.eye(2), ["x", "y"], ["a", "b"])
    assert r["rank1"] is None and r["mated"] == 0
    assert r["dir_at_fpir"]["1e-2"] is None and r["thresholds"]["1e-2"] is not None


def test_open_set_rejects_bad_shapes():
    with pytest.raises(FaceverifyError):
        open_set_identification(np.zeros((2, 3)), ["a", "b", "c"], ["a", "b", "c"])
    with pytest.raises(FaceverifyError):
        open_set_identification(np.zeros(3), ["a"], ["a", "b", "c"])


def test_pair_costs_bootstrap_interval_of_an_auc_difference() -> None:
    """An identical model's interval is [0, 0], and a model that ranks every genuine pair above every impostor
    gets an interval above zero that holds the true difference."""
    from tools.pair_costs import auc_difference_interval

    rng = np.random.default_rng(3)
    same = np.arange(400) < 200
    base = np.round(rng.normal(same.astype(float), 1.0), 1)  # rounded: many ties
    assert auc_difference_interval(same, base, base, 200) == (0.0, 0.0)
    perfect = same + rng.uniform(0, 0.5, 400)
    low, high = auc_difference_interval(same, base, perfect, 200)
    assert 0.0 < low <= 1.0 - auc(base, same) <= high


def test_paired_comparison_counts_the_pairs_each_model_alone_decides_right() -> None:
    """compare_models --against: the k-fold decisions pair by pair (their mean is the k-fold accuracy) and the
    exact McNemar test of the pairs where two models disagree."""
    from tools.compare_models import kfold_decisions, paired_against

    rng = np.random.default_rng(3)
    labels = np.repeat([True, False], 100)
    folds = np.arange(200) % 10
    good = np.where(labels, 0.7, 0.2) + rng.normal(0, 0.1, 200)
    accuracy, right = kfold_decisions(good, labels, folds)
    assert right.shape == (200,) and accuracy == pytest.approx(right.mean())
    worse = good.copy()
    flipped = np.flatnonzero(right)[:10]  # ten pairs it got right, pushed across to the wrong side
    worse[flipped] = np.where(labels[flipped], -1.0, 2.0)
    _, worse_right = kfold_decisions(worse, labels, folds)
    rows = [dict(model="a", kfold=accuracy), dict(model="b", kfold=worse_right.mean())]
    paired_against(rows, {("a", "kfold"): right, ("b", "kfold"): worse_right}, "a")
    b = rows[1]["paired"]["kfold"]
    assert rows[1]["paired"]["against"] == "a" and rows[0]["paired"]["kfold"] == dict(better=0, worse=0, p=1.0)
    assert b["worse"] >= 10 and b["worse"] - b["better"] == round(200 * (accuracy - worse_right.mean()))
    assert b["p"] < 0.01


def test_pair_costs_leaves_out_the_pairs_named_and_refuses_unknown_ones() -> None:
    from tools.pair_costs import excluded

    pairs = [("a_1.jpg", "a_2.jpg"), ("a_1.jpg", "b_1.jpg"), ("c_1.jpg", "c_2.jpg")]
    assert excluded(pairs, ["c_2.jpg/c_1.jpg"]).tolist() == [True, True, False]  # either order
    assert excluded(pairs, []).all()
    with pytest.raises(SystemExit, match="no such pair"):
        excluded(pairs, ["a_1.jpg/c_1.jpg"])
