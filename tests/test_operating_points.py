"""Operating points on the shipped model's real calibration: verification FARs and the open-set default that
keeps the chance of naming a stranger under the FPIR target as the gallery grows."""

from __future__ import annotations

import math

import pytest

from faceverify.embed import resolve_card
from faceverify.errors import FaceverifyError
from faceverify.decision import DEFAULT_FAR, DEFAULT_FPIR, far_at, identification_point, operating_point


@pytest.fixture(scope="module")
def card():
    return resolve_card()[0]


def test_small_gallery_is_never_looser_than_verification(card):
    verify = operating_point(card)
    for n in (0, 1, 5, int(DEFAULT_FPIR / DEFAULT_FAR)):
        point = identification_point(card, n)
        assert point.threshold == verify.threshold and point.far == DEFAULT_FAR
        assert point.fpir == pytest.approx(max(1, n) * DEFAULT_FAR)


def test_threshold_tightens_with_gallery_size_and_holds_fpir(card):
    sizes = [20, 100, 1_000, 10_000]
    points = [identification_point(card, n) for n in sizes]
    assert all(a.threshold < b.threshold for a, b in zip(points, points[1:]))
    for n, p in zip(sizes, points):
        assert p.far == pytest.approx(DEFAULT_FPIR / n)
        assert p.fpir == pytest.approx(DEFAULT_FPIR)
        # the interpolated threshold reads back as the FAR it was chosen for on the card's own curve
        assert math.log10(far_at(card, p.threshold)) == pytest.approx(math.log10(p.far), abs=0.02)
    # 100 embeddings at 1e-2 is FAR 1e-4: exactly the calibrated threshold, not an interpolation
    assert points[1].threshold == card.threshold_for(1e-4)


def test_beyond_the_calibration_the_bound_is_reported_honestly(card):
    lowest = min(f for _, f in card.calibration["far_curve"])
    point = identification_point(card, 10_000_000)
    assert point.far == pytest.approx(lowest)
    assert point.fpir == pytest.approx(min(1.0, 10_000_000 * lowest)) and point.fpir > DEFAULT_FPIR


def test_explicit_far_or_threshold_is_kept(card):
    p = identification_point(card, 50, far=1e-2)
    assert p.threshold == card.threshold_for(1e-2) and p.fpir == pytest.approx(0.5)
    p = identification_point(card, 50, threshold=0.95)
    assert p.threshold == 0.95 and p.far == pytest.approx(far_at(card, 0.95))
    p = identification_point(card, 50, fpir=1e-3)
    assert p.far == pytest.approx(2e-5) and p.fpir == pytest.approx(1e-3)
    with pytest.raises(FaceverifyError, match="FPIR"):
        identification_point(card, 50, fpir=1.5)
