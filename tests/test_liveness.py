"""Liveness (issue 33): the shipped MiniFASNet pair against the reference implementation's outputs, the samples
judged as labelled, the CLI's exit codes, a spoof never named (in stills and in video), and faces the crop rule
must cope with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, require_data
from faceverify.cli import run
from faceverify.detect import Face
from faceverify.errors import OperatingPointError
from faceverify.images import load_image
from faceverify.liveness import LivenessChecker
from faceverify.liveness.crop import context_box
from tools.common import DEV_MINIFASNET
from tools.video_synth import choose_cast, held_up_attacks, make_test_video


@pytest.fixture(scope="module")
def samples() -> Path:
    if not (DEV_MINIFASNET / "reference.json").is_file():
        require_data(f"{DEV_MINIFASNET}: the MiniFASNet samples and reference outputs are not here")
    return DEV_MINIFASNET


@pytest.fixture(scope="module")
def checker() -> LivenessChecker:
    return LivenessChecker.load(threads=1)


def test_parity_with_the_reference_outputs(samples, checker):
    """Each shipped network's softmax on the crop of the reference's box is within 1e-4 of the authors' code."""
    reference = json.loads((samples / "reference.json").read_text())["samples"]
    for name, ref in reference.items():
        image = load_image(samples / name)
        for net, p in zip(checker.card.networks, checker.per_network(image, [ref["bbox_xywh"]])):
            assert np.abs(p[0] - ref[net["source_file"]]).max() < 1e-4, (name, net["model"])
        averaged = checker.probabilities(image, [ref["bbox_xywh"]])[0]
        expected = (np.asarray(ref["2.7_80x80_MiniFASNetV2.pth"]) + ref["4_0_0_80x80_MiniFASNetV1SE.pth"]) / 2
        assert np.abs(averaged - expected).max() < 1e-4


def test_cli_judges_the_samples_as_labelled(samples, capsys):
    assert run(["liveness", str(samples / "image_T1.jpg")]) == 0
    assert run(["liveness", str(samples / "image_F1.jpg"), str(samples / "image_F2.jpg")]) == 1
    capsys.readouterr()
    assert run(["liveness", "--json", str(samples)]) == 1
    rows = {Path(r["image"]).name: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert {n: r["live"] for n, r in rows.items()} == {"image_F1.jpg": False, "image_F2.jpg": False,
                                                       "image_T1.jpg": True}
    assert rows["image_T1.jpg"]["score"] > 0.99 and rows["image_F2.jpg"]["score"] < 0.05
    # a stricter threshold than the live sample's score turns it away; a file that is not an image is an error
    assert run(["liveness", "--threshold", "0.99999", str(samples / "image_T1.jpg")]) == 1
    bad = samples.parent / "README.md"
    assert run(["liveness", str(bad)]) == 2
    assert "not an image" in capsys.readouterr().err


def test_no_face_and_bad_threshold(tmp_path, capsys):
    blank = tmp_path / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    assert run(["liveness", str(blank)]) == 2
    assert f"{blank}: no face found" in capsys.readouterr().err
    with pytest.raises(OperatingPointError):
        LivenessChecker.load(threshold=1.5)


def test_faces_the_crop_must_cope_with(samples, checker):
    """A face at the border (the context region is moved inside, not clipped), one larger than the image, a tiny
    one and an empty box: each gets a verdict, never an exception."""
    image = load_image(samples / "image_T1.jpg")
    h, w = image.shape[:2]
    assert context_box(w, h, (0, 0, 100, 100), 2.7) == (0, 0, 270, 270)
    x1, y1, x2, y2 = context_box(w, h, (w - 50, h - 50, 100, 100), 4.0)
    assert (x2, y2) == (w - 1, h - 1) and x1 >= 0 and y1 >= 0
    assert context_box(w, h, (-50, -50, 2 * w, 2 * h), 2.7)[:2] == (0, 0)
    faces = [Face(np.array(b, float), 0.9, np.zeros((5, 2))) for b in
             ([0, 0, 120, 160], [w - 100, h - 120, w + 20, h + 10], [-40, -40, w + 40, h + 40], [10, 10, 20, 22],
              [30, 30, 30, 80])]
    verdicts = checker.judge(image, faces)
    assert [v.score is None for v in verdicts] == [False, False, False, True, True]
    assert "below the 32 px" in verdicts[3].reason and verdicts[4].reason == "empty face box"
    assert not verdicts[3].live and not verdicts[4].live


def test_a_spoof_is_never_named(samples, tmp_path, gallery_env, capsys):
    """Enrol the live sample's person and the spoof samples' people; with --liveness the prints and screens are
    reported not live and never named, the live face still is; verify refuses a spoof probe."""
    for name, image in (("live-person", "image_T1.jpg"), ("poster", "image_F1.jpg"), ("tablet", "image_F2.jpg")):
        assert run(["enroll", name, str(samples / image), "--force"]) == 0
    capsys.readouterr()
    assert run(["identify", "--json", str(samples)]) == 0
    plain = {Path(r["image"]).name: r["faces"][0] for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert plain["image_F1.jpg"]["name"] == "poster" and "liveness" not in plain["image_F1.jpg"]  # off by default
    assert run(["identify", "--json", "--liveness", str(samples)]) == 0
    rows = {Path(r["image"]).name: r["faces"][0] for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["image_T1.jpg"]["name"] == "live-person" and rows["image_T1.jpg"]["liveness"]["live"]
    for spoof in ("image_F1.jpg", "image_F2.jpg"):
        assert rows[spoof]["name"] is None and rows[spoof]["nearest"] is None
        assert rows[spoof]["liveness"]["live"] is False
    assert run(["verify", str(samples / "image_F1.jpg"), str(samples / "image_F1.jpg")]) == 0
    assert run(["verify", "--liveness", str(samples / "image_F1.jpg"), str(samples / "image_F1.jpg")]) == 1
    assert "not live" in capsys.readouterr().out
    assert run(["verify", "--liveness", str(samples / "image_T1.jpg"), str(samples / "image_T1.jpg")]) == 0
    assert run(["verify", "--liveness-threshold", "0.5", str(samples / "image_T1.jpg"),
                str(samples / "image_T1.jpg")]) == 2


def test_a_print_or_screen_held_up_to_a_camera_is_never_named(samples, lfw_root, verifier, tmp_path, gallery_env,
                                                              capsys):
    """A generated video: the two spoof samples held up whole (a print, a phone screen) and moved through the
    scene, their people enrolled from those very images, between an enrolled DevTest person and a stranger.
    Without --liveness the attacks are named (so the test can fail); with it no frame names them, their tracks
    end "spoof", the live enrolled person is still named, and every event and track carries the pooled score."""
    actors, cast = choose_cast(lfw_root, enrolled=1, strangers=1, distractors=2, seed=7)
    held = held_up_attacks(samples)
    cast.update({a.name: a.enroll_images for a in held})
    video = tmp_path / "attack.mp4"
    make_test_video([held[0], actors[0], held[1], actors[1]], video, seconds=6.0, seed=7,
                    detector=verifier.pipeline.detector)
    for name, paths in cast.items():
        assert run(["enroll", name, *map(str, paths)]) == 0
    capsys.readouterr()

    def identify(*extra: str) -> tuple[list[dict], dict]:
        assert run(["identify", "--source", str(video), "--json", *extra]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        return [r for r in rows if "status" in r and "ended" not in r], rows[-1]["summary"]

    events, _ = identify()
    assert {"poster", "tablet"} <= {e["name"] for e in events}  # the attack works when nothing judges liveness
    events, summary = identify("--liveness")
    assert {e["name"] for e in events} - {None} == {actors[0].name}
    assert sum(t["status"] == "spoof" for t in summary["tracks"]) >= 2
    assert all("liveness" in e for e in events) and all("liveness" in t for t in summary["tracks"])
    named = [t for t in summary["tracks"] if t["name"] is not None]
    assert named and all(t["liveness"]["live"] and t["liveness"]["score"] > 0.5 for t in named)
    spoofs = [t for t in summary["tracks"] if t["status"] == "spoof"]
    assert all(not t["liveness"]["live"] for t in spoofs)


def test_importer_reproduces_the_shipped_networks(samples, tmp_path):
    """tools/import_minifasnet.py from the source state dicts writes the very ONNX files that ship."""
    pytest.importorskip("torch")
    from tools.import_minifasnet import main

    assert main(["--weights", str(samples), "--out", str(tmp_path)]) == 0
    shipped = REPO_ROOT / "models" / "liveness"
    for name in ("minifasnet-v2.onnx", "minifasnet-v1se.onnx"):
        assert (tmp_path / "liveness" / name).read_bytes() == (shipped / name).read_bytes()
