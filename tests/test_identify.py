"""Honest identification on real LFW faces: identity-bootstrap FAR bounds, identity templates in the gallery and
the API, and the seeded open-set split of an identity-folder data set (`faceverify evaluate identify DIR`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from faceverify import cli
from faceverify.decision import identification_point, identity_templates
from faceverify.eval.bounds import (
    bootstrap_upper, impostor_tail, split_half, template_scores, threshold_grid, weighted_far,
)
from faceverify.eval.calibrate import all_pair_scores
from faceverify.eval.identify import split_identities
from faceverify.eval.metrics import far_of_threshold
from faceverify.gallery import Enrolment

PEOPLE = {"Colin_Powell": 4, "George_W_Bush": 4, "Tony_Blair": 3, "Donald_Rumsfeld": 3, "Gerhard_Schroeder": 2,
          "Ariel_Sharon": 2, "Hugo_Chavez": 1, "Jean_Chretien": 1}
"""A few LFW people (17 images): enough for every rule here, few enough to embed in seconds."""


@pytest.fixture(scope="module")
def faces(verifier, lfw_image) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """(paths, identity names, embeddings) of the centre face of each image of ``PEOPLE``."""
    paths = [lfw_image(name, i) for name, count in PEOPLE.items() for i in range(1, count + 1)]
    names = np.array([p.parent.name for p in paths])
    vectors = np.stack([r.faces[0].embedding for r in verifier.pipeline.process_paths(paths, "center")])
    return paths, names, vectors


def test_bootstrap_far_matches_brute_force_and_bounds_it(faces) -> None:
    _, names, vectors = faces
    _, impostor = all_pair_scores(vectors, names)
    tail = impostor_tail(vectors, names, floor=-1.0)
    assert tail.scores.size == impostor.size and np.all(np.diff(tail.scores) <= 0)
    grid = threshold_grid(tail, 50)
    point = weighted_far(tail, np.ones(tail.left.size), grid)
    assert point == pytest.approx([far_of_threshold(impostor, t) for t in grid])
    upper = bootstrap_upper(tail, grid, resamples=200)
    assert np.all(np.diff(upper) <= 1e-12), "the bound falls as the threshold rises"
    assert np.mean(upper >= point) > 0.9 and upper.max() > point.max() * 0.99
    # templates: each identity's first 2 images averaged, against every image of the others
    scores, t_tail = template_scores(vectors, names, 2)
    assert scores.size == sum(PEOPLE[n] >= 2 for n in PEOPLE) * len(names) - sum(c for c in PEOPLE.values() if c >= 2)
    t_grid = threshold_grid(t_tail, 20)
    t_far = weighted_far(t_tail, np.ones(t_tail.left.size), t_grid)
    assert t_far == pytest.approx([far_of_threshold(scores, t) for t in t_grid])
    halves = split_half(tail, grid, [1e-2])
    assert set(halves) == {"1e-2", "1e-5", "2e-5"} and 0 <= halves["1e-2"]["far_other_half"] <= 1


def test_shipped_card_default_uses_the_bound(verifier) -> None:
    card = verifier.card
    bounds = card.calibration["bounds"]
    assert bounds["identities"] == card.calibration["identities"] and bounds["resamples"] >= 100
    for key, entry in bounds["thresholds"].items():
        assert entry["threshold"] >= card.thresholds[key] and entry["point_far"] <= float(key)
    p = identification_point(card, 500)
    assert p.far == pytest.approx(2e-5) and p.fpir == pytest.approx(1e-2)
    unbounded = dict(card.calibration)
    unbounded.pop("bounds")
    point_card = type(card).from_dict({**card.__dict__, "calibration": unbounded})
    assert p.threshold > identification_point(point_card, 500).threshold


def test_templates_in_the_gallery_and_the_api(verifier, faces, tmp_path: Path) -> None:
    paths, names, vectors = faces
    with verifier.open_gallery(tmp_path / "g.sqlite") as g:
        enrolled = [i for i, n in enumerate(names) if n in ("Colin_Powell", "George_W_Bush") or i % 3 == 0]
        for i in enrolled:
            g.enroll(str(names[i]), [Enrolment(vectors[i], str(paths[i]), f"{i:064x}", None)])
        want_names, want = identity_templates(vectors[enrolled], names[enrolled])
        assert len(g.template_sizes()) == len(want_names) < g.embedding_count()
        got = g.search_templates(vectors, k=100)
        for row, v in zip(got, vectors):
            assert [n for n, _ in row] == [want_names[j] for j in np.argsort(-(want @ v), kind="stable")]
            assert row[0][1] == pytest.approx(float(np.max(want @ v)), abs=1e-5)
        # best-of-images scores an identity by its best stored embedding instead
        best = dict(g.search(vectors[:1], k=100)[0])
        for name in want_names:
            own = [i for i in enrolled if names[i] == name]
            assert best[name] == pytest.approx(float(np.max(vectors[own] @ vectors[0])), abs=1e-5)
        # templates follow the database: a new identity is searched at once
        g.enroll("Hugo_Chavez", [Enrolment(vectors[-2], str(paths[-2]), "f" * 64, None)])
        assert g.search_templates(vectors[-2:-1])[0][0] == ("Hugo_Chavez", pytest.approx(1.0, abs=1e-5))
        by_identity = verifier.identification_point(g, match="template")
        by_embedding = verifier.identification_point(g)
        sizes = g.template_sizes()
        assert max(sizes) == 4
        assert by_identity == identification_point(verifier.card, len(sizes), template_size=max(sizes))
        assert by_identity.fpir == pytest.approx(len(sizes) * by_identity.far)
        assert by_embedding.fpir == pytest.approx(g.embedding_count() * by_embedding.far)
        template = verifier.identify_embeddings(g, vectors[:1], by_identity, "template")
        assert template[0][0] == "Colin_Powell" and template[0][2] == "Colin_Powell"
        # identify (stills) decides against templates by default
        (result,) = verifier.identify(g, [paths[1]])
        assert result.faces[0].name == "Colin_Powell"
        assert result.faces[0].score == pytest.approx(g.search_templates(vectors[1:2])[0][0][1], abs=1e-4)


def test_folder_split_is_seeded_and_documented(faces) -> None:
    paths, _, _ = faces
    identities = {n: [p for p in paths if p.parent.name == n] for n in PEOPLE}
    a, b = split_identities(identities, enrol=2, enrolled_share=0.5, seed=3), split_identities(identities, 2, 0.5, 3)
    assert a.names == b.names and np.array_equal(a.enrolled, b.enrolled)
    eligible = [n for n, c in PEOPLE.items() if c > 2]
    chosen = {n for n, e in zip(a.names, a.enrolled) if e}
    assert len(chosen) == 2 and chosen <= set(eligible)
    for name in chosen:  # the first two images of an enrolled identity, the rest are probes
        flags = [e for n, e in zip(a.names, a.enrolled) if n == name]
        assert flags == [True, True] + [False] * (PEOPLE[name] - 2)
    assert "2 of the 4 identities with more than 2 images" in a.description


def test_evaluate_identify_on_a_folder(faces, tmp_path: Path, monkeypatch, capsys) -> None:
    paths, _, _ = faces
    root = tmp_path / "people"
    for p in paths:
        (root / p.parent.name).mkdir(parents=True, exist_ok=True)
        (root / p.parent.name / p.name).symlink_to(p)
    monkeypatch.setenv("FACEVERIFY_CACHE", str(tmp_path / "cache"))
    reports = {}
    for match in ("template", "best"):
        code = cli.run(["evaluate", "identify", str(root), "--enrol", "2", "--seeds", "2", "--match", match,
                        "--face", "center", "--json"])
        out, err = capsys.readouterr()
        assert code == 0, err
        reports[match] = json.loads(out)
    t, b = reports["template"], reports["best"]
    assert t["images"] == len(paths) and t["seeds"] == [0, 1] and len(t["per_seed"]) == 2
    assert t["gallery"] == 4 and t["gallery_embeddings"] == 8  # 2 of 4 eligible identities per split, 2 images
    assert t["mated"] == b["mated"] and t["non_mated"] == b["non_mated"] == len(paths) * 2 - 8 - t["mated"]
    assert t["default_point"]["compared"] == 2 and b["default_point"]["compared"] == 4
    assert 0 <= t["default_point"]["named"] <= t["non_mated"] and t["match"] == "template"
    code = cli.run(["evaluate", "identify", str(root), "--enrol", "2", "--face", "center"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "open-set:people: 2 enrolled identities (4 embeddings)" in out and "never-enrolled probes named" in out
    assert "seed 0: 2 of the 4 identities with more than 2 images enrolled" in out
