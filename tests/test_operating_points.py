"""Operating points on the shipped model's real calibration: verification FARs and the open-set default that
keeps the chance of naming a stranger under the FPIR target as the gallery grows, read off the card's FAR upper
bounds (identity bootstrap) rather than its point estimates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from faceverify.modelcard import resolve_card
from faceverify.errors import FaceverifyError
from faceverify.decision import DEFAULT_FAR, DEFAULT_FPIR, far_at, identification_point, operating_point


@pytest.fixture(scope="module")
def card():
    return resolve_card()[0]


def bound_far_at(card, threshold: float) -> float:
    """The FAR bound of ``threshold`` on the card's bounded curve (log-FAR interpolation)."""
    pts = sorted((t, f) for t, f in card.calibration["bounds"]["far_bound_curve"])
    return float(10 ** np.interp(threshold, [t for t, _ in pts], np.log10([f for _, f in pts])))


def test_small_gallery_is_never_looser_than_verification(card):
    verify = operating_point(card)
    for n in (0, 1, 5, int(DEFAULT_FPIR / DEFAULT_FAR)):
        point = identification_point(card, n)
        assert point.threshold >= verify.threshold and point.far == pytest.approx(DEFAULT_FAR)
        assert point.fpir == pytest.approx(max(1, n) * DEFAULT_FAR)


def test_threshold_tightens_with_gallery_size_and_holds_fpir(card):
    sizes = [20, 100, 1_000, 10_000]
    points = [identification_point(card, n) for n in sizes]
    assert all(a.threshold < b.threshold for a, b in zip(points, points[1:]))
    for n, p in zip(sizes, points):
        assert p.far == pytest.approx(DEFAULT_FPIR / n)
        assert p.fpir == pytest.approx(DEFAULT_FPIR)
        # the threshold reads back as the FAR bound it was chosen for, and is stricter than the point estimate's
        assert math.log10(bound_far_at(card, p.threshold)) == pytest.approx(math.log10(p.far), abs=0.02)
        assert far_at(card, p.threshold) <= p.far * 1.001


def test_templates_of_more_images_get_stricter_thresholds(card):
    sizes = [1, *sorted(int(k) for k in card.calibration["bounds"]["template_curves"])]
    points = [identification_point(card, 100, template_size=m) for m in sizes]
    assert all(a.threshold <= b.threshold for a, b in zip(points, points[1:]))
    assert points[0].threshold < points[-1].threshold
    four, five = (identification_point(card, 100, template_size=m).threshold for m in (4, 5))
    assert four == five, "a size between calibrated ones takes the next larger size's curve"
    assert all(p.fpir == pytest.approx(DEFAULT_FPIR) for p in points)


def test_beyond_the_calibration_the_bound_is_reported_honestly(card):
    lowest = min(f for _, f in card.calibration["bounds"]["far_bound_curve"])
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
