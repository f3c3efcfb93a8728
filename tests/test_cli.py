"""The CLI end to end on real LFW faces: verify, enroll, identify, gallery edits, and every bad input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceverify.cli import run
from faceverify.modelcard import resolve_card
from faceverify.eval.pairs import read_lfw_people


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = run([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def devtest_people(lfw_root):
    people = read_lfw_people(lfw_root / "peopleDevTest.txt")
    many = [name for name, n in people if n >= 3]
    singles = [name for name, n in people if n == 1]
    return many, singles


def _no_face_image(path: Path) -> Path:
    x = np.linspace(0, 255, 200, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(x, (200, 1))] * 3, axis=2)).save(path)
    return path


# -- verify ------------------------------------------------------------------------------------------------


def test_verify_same_different_and_json(capsys, lfw_image):
    a, b = lfw_image("Colin_Powell", 1), lfw_image("Colin_Powell", 2)
    code, out, _ = cli(capsys, "verify", a, b)
    assert code == 0 and out.startswith("same person")
    code, out, _ = cli(capsys, "verify", a, lfw_image("George_W_Bush", 1), "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["same"] is False and doc["far"] == 1e-3
    assert doc["similarity"] < doc["threshold"] and set(doc) >= {"same", "similarity", "threshold", "far"}


def test_verify_threshold_override_reports_its_far(capsys, lfw_image):
    a, b = lfw_image("Colin_Powell", 1), lfw_image("Colin_Powell", 2)
    code, out, _ = cli(capsys, "verify", a, b, "--threshold", "0.999", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["threshold"] == 0.999 and doc["far"] is not None and doc["far"] < 1e-3


def test_verify_corrupt_file_is_one_line_exit_2(tmp_path, lfw_image):
    bad = tmp_path / "corrupt.jpg"
    data = lfw_image("Colin_Powell", 1).read_bytes()
    bad.write_bytes(data[:300])
    proc = subprocess.run(
        [sys.executable, "-m", "faceverify.cli", "verify", str(bad), str(lfw_image("Colin_Powell", 2))],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "noface"])
def test_verify_bad_inputs(capsys, tmp_path, lfw_image, kind):
    path = tmp_path / f"{kind}.jpg"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("not an image")
    elif kind == "noface":
        _no_face_image(path)
    code, out, err = cli(capsys, "verify", path, lfw_image("Colin_Powell", 1))
    reason = {"missing": "no such file", "empty": "empty file", "text": "not an image", "noface": "no face"}[kind]
    assert code == 2 and out == "" and str(path) in err and reason in err and len(err.strip().splitlines()) == 1


# -- enroll / identify -------------------------------------------------------------------------------------


def test_enroll_twenty_identify_held_out_and_strangers(capsys, tmp_path, gallery_env, lfw_image, devtest_people):
    many, singles = devtest_people
    chosen = many[:: max(1, len(many) // 20)][:20]
    folders = tmp_path / "people"
    for name in chosen:
        (folders / name).mkdir(parents=True)
        for i in (1, 2):
            os.symlink(lfw_image(name, i), folders / name / f"{i}.jpg")
    code, out, err = cli(capsys, "enroll", "--from-folders", folders, "--json")
    assert code in (0, 3), err
    assert len(json.loads(out)["added"]) == 20

    strangers = singles[:: max(1, len(singles) // 5)][:5]
    probes = [lfw_image(n, 3) for n in chosen] + [lfw_image(n, 1) for n in strangers]
    code, out, err = cli(capsys, "identify", *probes, "--json")
    assert code == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    assert len(results) == 25
    named = 0
    for name, res in zip(chosen, results[:20]):
        got = res["faces"][0]["name"]
        assert got in (name, None), f"{name} was identified as {got}"
        named += got == name
    assert named >= 17, f"only {named}/20 enrolled people were named"
    for name, res in zip(strangers, results[20:]):
        assert res["faces"][0]["name"] is None, f"never-enrolled {name} got a name"
        assert set(res["faces"][0]) >= {"name", "score", "box"}


def test_enroll_bad_input_leaves_gallery_unchanged(capsys, tmp_path, gallery_env, lfw_image):
    code, _, err = cli(capsys, "enroll", "Colin Powell", lfw_image("Colin_Powell", 1))
    assert code == 0, err
    before = cli(capsys, "gallery", "list", "--json")[1]
    bad = [tmp_path / "empty.jpg", tmp_path / "trunc.jpg", _no_face_image(tmp_path / "noface.png"), tmp_path / "missing.jpg"]
    bad[0].write_bytes(b"")
    bad[1].write_bytes(lfw_image("Colin_Powell", 3).read_bytes()[:500])
    for path in bad:
        code, out, err = cli(capsys, "enroll", "Colin Powell", lfw_image("Colin_Powell", 2), path)
        assert code == 2 and str(path) in err and "Traceback" not in err
    code, _, err = cli(capsys, "enroll", "bad\x07name", lfw_image("Colin_Powell", 2))
    assert code == 2 and "control" in err
    assert cli(capsys, "gallery", "list", "--json")[1] == before

    code, out, err = cli(capsys, "enroll", "Colin Powell", lfw_image("Colin_Powell", 2), bad[0], "--skip-bad")
    assert code == 3 and str(bad[0]) in err
    assert json.loads(cli(capsys, "gallery", "list", "--json")[1]) == [{"name": "Colin Powell", "embeddings": 2}]


def test_gallery_commands_and_persistence(capsys, tmp_path, gallery_env, lfw_image):
    env = dict(os.environ, FACEVERIFY_GALLERY=str(gallery_env))
    subprocess.run(
        [sys.executable, "-m", "faceverify.cli", "enroll", "Colin Powell", str(lfw_image("Colin_Powell", 1))],
        check=True, env=env, capture_output=True,
    )
    code, out, _ = cli(capsys, "gallery", "list")
    assert code == 0 and out.strip() == "Colin Powell\t1"
    code, out, _ = cli(capsys, "gallery", "show", "Colin Powell", "--json")
    shown = json.loads(out)["embeddings"][0]
    assert shown["source"].endswith("Colin_Powell_0001.jpg")
    assert shown["source_sha256"] == hashlib.sha256(lfw_image("Colin_Powell", 1).read_bytes()).hexdigest()
    assert cli(capsys, "gallery", "rename", "Colin Powell", "General Powell")[0] == 0
    out_file = tmp_path / "export.json"
    assert cli(capsys, "gallery", "export", out_file)[0] == 0
    exported = json.loads(out_file.read_text())
    assert exported["embeddings"][0]["name"] == "General Powell" and len(exported["embeddings"][0]["vector"]) == resolve_card()[0].embedding_size
    code, _, err = cli(capsys, "gallery", "remove", "Nobody")
    assert code == 2 and "no identity named 'Nobody'" in err
    assert cli(capsys, "gallery", "remove", "General Powell")[0] == 0
    code, _, err = cli(capsys, "identify", lfw_image("Colin_Powell", 2))
    assert code == 2 and "empty" in err


def test_identify_without_gallery_is_an_error(capsys, tmp_path, gallery_env, lfw_image):
    code, out, err = cli(capsys, "identify", lfw_image("Colin_Powell", 2))
    assert code == 2 and str(gallery_env) in err


def test_gallery_of_another_model_is_refused(capsys, tmp_path, gallery_env, lfw_image):
    from faceverify.gallery import Enrolment, Gallery

    with Gallery(gallery_env, "another-model@1:000000000000", 128) as g:
        g.enroll("Someone", [Enrolment(np.ones(128, np.float32) / np.sqrt(128), "/x.jpg", "0" * 64)])
    code, _, err = cli(capsys, "identify", lfw_image("Colin_Powell", 2))
    assert code == 2 and "never mixed" in err


def test_a_gallery_keeps_its_model_when_the_default_changes(capsys, tmp_path, monkeypatch, gallery_env, lfw_image):
    from faceverify.modelcard import shipped_models_dir
    from faceverify.gallery import Gallery

    assert cli(capsys, "enroll", "Colin Powell", lfw_image("Colin_Powell", 1))[0] == 0
    with Gallery(gallery_env) as g:
        made_with = g.stored_model_id
    moved = tmp_path / "models"  # the shipped models, with another default
    moved.mkdir()
    for f in shipped_models_dir().iterdir():
        if f.name != "DEFAULT":
            (moved / f.name).symlink_to(f)
    other = "edgeface-xxs" if not made_with.startswith("edgeface-xxs@") else "dlib-resnet-v1"
    (moved / "DEFAULT").write_text(other)
    monkeypatch.setenv("FACEVERIFY_MODELS", str(moved))
    assert cli(capsys, "enroll", "George W Bush", lfw_image("George_W_Bush", 1))[0] == 0
    code, out, err = cli(capsys, "identify", lfw_image("Colin_Powell", 2), "--json")
    assert code == 0 and json.loads(out)["faces"][0]["name"] == "Colin Powell" and err == ""
    with Gallery(gallery_env) as g:
        assert g.stored_model_id == made_with and g.embedding_count() == 2
    code, _, err = cli(capsys, "identify", lfw_image("Colin_Powell", 2), "--model", other)
    assert code == 2 and "never mixed" in err  # asking for another model is still refused
    fresh = tmp_path / "new.sqlite"
    assert cli(capsys, "enroll", "Colin Powell", lfw_image("Colin_Powell", 1), "--gallery", fresh)[0] == 0
    with Gallery(fresh) as g:
        assert g.stored_model_id.startswith(other + "@")  # a new gallery gets the new default


def test_identify_warns_when_calibration_cannot_hold_the_fpir(capsys, gallery_env, lfw_image):
    assert cli(capsys, "enroll", "Colin Powell", lfw_image("Colin_Powell", 1))[0] == 0
    code, out, err = cli(capsys, "identify", lfw_image("Colin_Powell", 2))
    assert code == 0 and "Colin Powell" in out and err == ""
    code, out, err = cli(capsys, "identify", lfw_image("Colin_Powell", 2), "--fpir", "1e-8")
    assert code == 0 and out.count("\n") == 1
    assert len(err.splitlines()) == 1 and "warning" in err and "FPIR" in err
    code, _, err = cli(capsys, "identify", lfw_image("Colin_Powell", 2), "--fpir", "2")
    assert code == 2 and "FPIR" in err and "Traceback" not in err


def test_identify_match_chooses_templates_or_best_embeddings(capsys, gallery_env, lfw_image):
    assert cli(capsys, "enroll", "Colin Powell", lfw_image("Colin_Powell", 1), lfw_image("Colin_Powell", 3))[0] == 0
    assert cli(capsys, "enroll", "George W Bush", lfw_image("George_W_Bush", 1))[0] == 0
    scores = {}
    for match in ("template", "best"):
        code, out, err = cli(capsys, "identify", lfw_image("Colin_Powell", 2), "--match", match, "--json")
        face = json.loads(out)["faces"][0]
        assert code == 0 and face["name"] == "Colin Powell" and err == "", (match, out, err)
        scores[match] = face["score"]
    assert scores["template"] != scores["best"]  # a 2-image template is not either image
    code, _, err = cli(capsys, "identify", lfw_image("Colin_Powell", 2), "--match", "nearest")
    assert code == 2 and "--match" in err and "Traceback" not in err


def test_flip_fused_embeddings_never_mix_with_plain_ones(capsys, gallery_env, lfw_image):
    code, out, _ = cli(capsys, "verify", lfw_image("Colin_Powell", 1), lfw_image("Colin_Powell", 2), "--flip", "--json")
    assert code == 0 and json.loads(out)["same"] is True
    assert cli(capsys, "enroll", "Colin Powell", lfw_image("Colin_Powell", 1))[0] == 0
    code, _, err = cli(capsys, "identify", lfw_image("Colin_Powell", 2), "--flip")
    assert code == 2 and "never mixed" in err and len(err.splitlines()) == 1
    code, out, _ = cli(capsys, "identify", lfw_image("Colin_Powell", 2))
    assert code == 0 and "Colin Powell" in out


# -- demo --------------------------------------------------------------------------------------------------


def test_demo_clip_shows_each_still_in_turn(tmp_path, lfw_image):
    """The demo's video step needs no tools/: its clip is made in the package, one still after another."""
    import cv2

    from faceverify.cli.demo import CLIP_FPS, CLIP_GAP_SECONDS, CLIP_SECONDS, CLIP_SIZE, make_demo_clip
    from faceverify.errors import BadInputError

    out = tmp_path / "clip.mp4"
    make_demo_clip([lfw_image("Colin_Powell", 1), lfw_image("George_W_Bush", 1)], out)
    shown, gap = round(CLIP_SECONDS * CLIP_FPS), round(CLIP_GAP_SECONDS * CLIP_FPS)
    capture = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 2 * (gap + shown) and frames[0].shape == (CLIP_SIZE[1], CLIP_SIZE[0], 3)
    assert frames[0].std() < 3 and frames[gap + shown // 2].std() > 20  # an empty scene, then a face
    with pytest.raises(BadInputError, match="no such file"):
        make_demo_clip([tmp_path / "missing.jpg"], tmp_path / "never.mp4")


def test_list_options_take_several_values_after_one_flag():
    """`--from a b c` reads as `--from a --from b --from c`, up to the next option; `--` ends the spreading."""
    from typer.main import get_command

    from faceverify.cli import app

    group = get_command(app)
    adapt = group.get_command(group.make_context("faceverify", ["adapt"], resilient_parsing=True), "adapt")
    ctx = adapt.make_context("adapt", ["--from", "a", "b", "c", "--ordinary=x", "y", "--out", "n", "--epochs", "2"])
    assert [p.name for p in ctx.params["sources"]] == ["a", "b", "c"]
    assert [p.name for p in ctx.params["ordinary"]] == ["x", "y"]
    assert (ctx.params["out"], ctx.params["epochs"]) == ("n", 2)
    export = group.get_command(group.make_context("faceverify", ["export-model"], resilient_parsing=True), "export-model")
    ctx = export.make_context("export-model", ["--cache", "c1", "c2", "--", "run-dir"])
    assert [p.name for p in ctx.params["cache"]] == ["c1", "c2"] and ctx.params["run"].name == "run-dir"
