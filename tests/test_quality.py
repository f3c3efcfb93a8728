"""The enrolment quality gate on real LFW faces made worse in each way it refuses: shrunk (a tiny face), blurred,
cut to a profile-like half, and put beside another face of the same size; the good face and ordinary LFW photos
pass, ``--force`` overrides, ``--skip-bad`` enrols the good ones (exit 3), refused input leaves the gallery
unchanged, and ``identify --json`` reports each face's quality."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceverify.errors import LowQualityError
from faceverify.images import load_image
from tests.test_cli import cli

REASONS = {"tiny": "face too small", "blurred": "face too blurred", "half": "face turned away",
           "two faces": "another face of similar size"}


def degraded(good: np.ndarray, other: np.ndarray) -> dict[str, np.ndarray]:
    """A good LFW face and its copies that the gate must refuse, each for the reason in :data:`REASONS`."""
    return {
        "good": good,
        "tiny": cv2.resize(good, None, fx=0.17, fy=0.17, interpolation=cv2.INTER_AREA),  # eyes about 5 px apart
        "blurred": cv2.GaussianBlur(good, (0, 0), 5.0),
        "half": np.ascontiguousarray(good[:, good.shape[1] // 2:]),  # the image's right half, through the nose
        "two faces": np.concatenate([good, other], axis=1),
    }


def encoded(image: np.ndarray) -> bytes:
    """An RGB image as PNG bytes (lossless: the degradation is the only change)."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


@pytest.fixture(scope="module")
def faces(tmp_path_factory, lfw_image) -> dict[str, Path]:
    """The :func:`degraded` set of Tony Blair's first image (George W Bush beside him) as files."""
    folder = tmp_path_factory.mktemp("quality")
    made = degraded(load_image(lfw_image("Tony_Blair", 1)), load_image(lfw_image("George_W_Bush", 1)))
    out = {}
    for kind, image in made.items():
        out[kind] = folder / f"{kind.replace(' ', '-')}.png"
        out[kind].write_bytes(encoded(image))
    return out


def test_each_reason_refuses_its_face_and_a_good_face_passes(verifier, faces):
    results = {r.path: r for r in verifier.pipeline.process_paths([str(p) for p in faces.values()])}
    for kind, path in faces.items():
        (face,) = results[str(path)].faces
        reason = verifier.quality_limits.refusal(face.quality)
        if kind == "good":
            assert reason is None, face.quality
        else:
            assert reason is not None and reason.startswith(REASONS[kind]), (kind, reason, face.quality)


def test_ordinary_lfw_photos_pass(verifier, lfw_root):
    """The first image of 20 DevTest people (every 25th with two or more images), as they are: all pass but
    Tammy_Lynn_Michaels_0001, two women's faces of one size cheek to cheek, refused for that."""
    from faceverify.eval.pairs import lfw_image_dir, lfw_image_path, read_lfw_people

    people = [name for name, count in read_lfw_people(lfw_root / "peopleDevTest.txt") if count >= 2][::25][:20]
    paths = [str(lfw_image_dir(lfw_root) / lfw_image_path(name, 1)) for name in people]
    results = list(verifier.pipeline.process_paths(paths))
    assert len(people) == 20 and all(r.error is None and len(r.faces) == 1 for r in results)
    refused = {Path(r.path).name: verifier.quality_limits.refusal(r.faces[0].quality) for r in results}
    assert len(refused) == 20
    assert {n: why for n, why in refused.items() if why} == {
        "Tammy_Lynn_Michaels_0001.jpg": "another face of similar size in the image (0.951 times this one's size, at "
                                        "most 0.949): crop the image to the person"}


def test_api_enroll_refuses_with_the_file_and_reason_and_force_overrides(verifier, faces, tmp_path):
    with verifier.open_gallery(tmp_path / "g.sqlite") as g:
        report = verifier.enroll(g, "Tony Blair", [faces["good"], faces["blurred"]])
        assert not report.added and len(g) == 0
        (failure,) = report.failures
        assert isinstance(failure, LowQualityError) and failure.path == str(faces["blurred"])
        assert str(failure).startswith(f"{faces['blurred']}: face too blurred")
        forced = verifier.enroll(g, "Tony Blair", [faces["good"], faces["blurred"]], force=True)
        assert forced.added == {"Tony Blair": 2} and not forced.failures


def test_cli_refuses_each_bad_image_with_one_line_and_leaves_the_gallery_unchanged(capsys, gallery_env, faces):
    assert cli(capsys, "enroll", "Tony Blair", faces["good"])[0] == 0
    before = cli(capsys, "gallery", "list", "--json")[1]
    for kind, reason in REASONS.items():
        code, out, err = cli(capsys, "enroll", "Tony Blair", faces[kind])
        lines = [line for line in err.splitlines() if str(faces[kind]) in line]
        assert code == 2 and len(lines) == 1 and reason in lines[0], (kind, err)
        assert "--force" in err and "Traceback" not in err
    assert cli(capsys, "gallery", "list", "--json")[1] == before


def test_skip_bad_enrols_the_good_ones_exit_3_and_force_enrols_all(capsys, gallery_env, faces):
    bad = [faces[kind] for kind in REASONS]
    code, out, err = cli(capsys, "enroll", "Tony Blair", faces["good"], *bad, "--skip-bad", "--json")
    assert code == 3, err
    report = json.loads(out)
    assert report["added"] == {"Tony Blair": 1} and len(report["failed"]) == len(bad)
    assert all(any(str(p) in line for line in err.splitlines()) for p in bad)
    code, out, err = cli(capsys, "enroll", "Tony Blair", *bad, "--force")
    assert code == 0, err
    listed = json.loads(cli(capsys, "gallery", "list", "--json")[1])
    assert listed == [{"name": "Tony Blair", "embeddings": 1 + len(bad)}]


def test_identify_json_reports_each_faces_quality(capsys, gallery_env, faces, lfw_image):
    assert cli(capsys, "enroll", "Tony Blair", lfw_image("Tony_Blair", 3))[0] == 0
    code, out, err = cli(capsys, "identify", faces["good"], faces["blurred"], "--json")
    assert code == 0, err
    good, blurred = (json.loads(line)["faces"][0]["quality"] for line in out.splitlines())
    assert set(good) == {"score", "eye_distance", "sharpness", "yaw", "eye_mouth_ratio", "detector_score",
                         "second_face", "detector", "enrollable", "refusal"}
    assert good["enrollable"] and good["refusal"] is None and good["eye_distance"] > 30
    assert not blurred["enrollable"] and blurred["refusal"].startswith("face too blurred")
    assert blurred["sharpness"] < good["sharpness"] and blurred["score"] < good["score"]
