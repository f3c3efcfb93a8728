"""Cards bind their front end: each says which detector its weights were trained on and which its thresholds were
calibrated through; a model used through a detector it carries a calibration for decides by that one, and one used
through any other says so (a warning once, ``calibrated_front_end: false`` in JSON, a line in `evaluate`)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from faceverify.cli import run
from faceverify.detect import choose_detector
from faceverify.errors import ModelError
from faceverify.modelcard import ModelCard, detector_kind, resolve_card, shipped_models_dir
from faceverify.pipeline import FacePipeline

SHIPPED_DETECTORS = ("yunet", "yunet-onet", "mtcnn")
"""The detector kinds the shipped detectors find faces as (mtcnn-onnx finds mtcnn's)."""


@pytest.fixture()
def models_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv("FACEVERIFY_MODELS", str(folder))
    return folder


def _mtcnn_only_copy(into: Path, name: str) -> Path:
    """edgeface-xxs under another name, its card keeping only the calibration measured through MTCNN."""
    card = json.loads((shipped_models_dir() / "edgeface-xxs.json").read_text())
    (into / card["onnx"]).symlink_to(shipped_models_dir() / card["onnx"])
    mtcnn = card["calibrations"].pop("mtcnn", None)
    if card["front_end"]["calibrated"]["detector"] != "mtcnn":
        card.update(thresholds=mtcnn["thresholds"], calibration=mtcnn["calibration"])
        card["front_end"]["calibrated"] = mtcnn["front_end"]
    card.update(name=name, calibrations={})
    path = into / f"{name}.json"
    path.write_text(json.dumps(card))
    return path


@pytest.mark.parametrize("model", ["edgeface-xs", "edgeface-xxs"])
def test_the_edgeface_cards_carry_a_calibration_for_every_shipped_detector(model):
    card, _ = resolve_card(model)
    assert card.front_end["trained"] and card.calibrated_detector == detector_kind(choose_detector())
    thresholds = {}
    for kind in SHIPPED_DETECTORS:
        used, calibrated = card.for_detector(kind)
        assert calibrated and used.calibrated_detector == kind and used.model_id == card.model_id
        assert used.calibration["genuine_pairs"] > 200_000
        thresholds[kind] = used.thresholds["1e-3"]
    assert len(set(thresholds.values())) == len(SHIPPED_DETECTORS)  # each measured on its own detector's faces
    assert card.for_detector("mtcnn-onnx")[0].thresholds == card.for_detector("mtcnn")[0].thresholds


def test_every_shipped_card_names_the_front_end_of_its_weights_and_of_its_thresholds():
    for path in sorted(shipped_models_dir().glob("*.json")):
        card = ModelCard.load(path)
        assert card.front_end["trained"], path.name
        assert card.calibrated_detector in SHIPPED_DETECTORS, path.name


def test_a_pipeline_decides_by_the_calibration_of_its_own_detector():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no detector a shipped card was calibrated through warns
        pipelines = {d: FacePipeline("edgeface-xs", "cpu", detector=d, backend="onnx") for d in ("yunet", "mtcnn-onnx")}
    for name, pipeline in pipelines.items():
        assert pipeline.calibrated_front_end
        assert pipeline.card.calibrated_detector == detector_kind(name)
    assert pipelines["yunet"].card.thresholds != pipelines["mtcnn-onnx"].card.thresholds


def test_a_model_used_through_another_detector_says_so_once_and_in_json(models_dir, lfw_image, capsys):
    _mtcnn_only_copy(models_dir, "door-cam")
    a, b = str(lfw_image("Colin_Powell", 1)), str(lfw_image("Colin_Powell", 2))
    assert run(["verify", a, b, "--model", "door-cam", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["calibrated_front_end"] is False
    default = detector_kind(choose_detector())
    assert captured.err.count("\n") == 1
    assert (f"model 'door-cam': thresholds were calibrated on the mtcnn detector's faces, not {default}'s"
            in captured.err)
    assert run(["identify", a, "--model", "door-cam", "--json", "--gallery", str(models_dir / "g.sqlite")]) in (0, 2)
    assert "warning" not in capsys.readouterr().err  # once per process, not once per command
    assert run(["verify", a, b, "--model", "door-cam", "--detector", "mtcnn-onnx", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["calibrated_front_end"] is True and captured.err == ""


def test_evaluate_reports_the_front_end_and_whether_the_card_was_calibrated_on_it(models_dir, lfw_image, tmp_path,
                                                                                  capsys):
    _mtcnn_only_copy(models_dir, "desk-cam")
    people = ["Colin_Powell", "George_W_Bush", "Tony_Blair", "Donald_Rumsfeld"]
    lines = [f"{lfw_image(p, 1)}\t{lfw_image(p, 2)}\t1" for p in people]
    lines += [f"{lfw_image(p, 1)}\t{lfw_image(q, 1)}\t0" for p, q in zip(people, people[1:] + people[:1])]
    pair_file = tmp_path / "pairs.tsv"
    pair_file.write_text("\n".join(lines) + "\n")
    assert run(["evaluate", "pairs", str(pair_file), "--model", "desk-cam", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["calibrated_front_end"] is False and report["calibrated_detector"] == "mtcnn"
    assert report["detector"] == choose_detector()
    assert run(["evaluate", "pairs", str(pair_file), "--model", "desk-cam"]) == 0
    assert "NOT the front end the card's thresholds were calibrated with: mtcnn" in capsys.readouterr().out
    assert run(["evaluate", "pairs", str(pair_file), "--model", "edgeface-xs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["calibrated_front_end"] is True


def test_a_video_run_decides_by_the_calibration_of_the_video_detector(models_dir, drifting_face_video):
    from faceverify.api import FaceVerifier
    from faceverify.video.run import VideoIdentifier

    _mtcnn_only_copy(models_dir, "gate-cam")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # video finds faces with MTCNN's cascade: the calibration this card has
        run_ = VideoIdentifier(FaceVerifier("gate-cam", "cpu"), None).run(str(drifting_face_video))
        list(run_)
    assert run_.summary().to_dict()["calibrated_front_end"] is True
    with pytest.warns(UserWarning, match="gate-cam.*not yunet's"):
        chosen = VideoIdentifier(FaceVerifier("gate-cam", "cpu", detector="yunet"), None)
    assert chosen.calibrated_front_end is False


def test_calibrating_through_another_detector_keeps_the_main_calibration():
    card, _ = resolve_card("edgeface-xxs")
    main = card.calibrated_detector
    other = next(k for k in SHIPPED_DETECTORS if k != main)
    record = dict(card.calibration, images=1)
    changed = card.with_calibration(dict(detector=other, runtime="onnx"), {"1e-3": 0.5}, record)
    assert changed.calibrated_detector == main and changed.thresholds == card.thresholds
    assert changed.for_detector(other)[0].thresholds == {"1e-3": 0.5}
    again = changed.with_calibration(dict(detector=main), {"1e-3": 0.4}, record)  # the main one is replaced
    assert again.thresholds == {"1e-3": 0.4} and again.calibrations[other]["thresholds"] == {"1e-3": 0.5}


def test_a_card_whose_other_calibration_is_malformed_is_refused():
    card = json.loads((shipped_models_dir() / "edgeface-xxs.json").read_text())
    kind = next(iter(card["calibrations"]))
    for broken in ({"thresholds": {}}, dict(card["calibrations"][kind], thresholds={"1e-3": 7.0}),
                   dict(card["calibrations"][kind], front_end={"detector": "someone-else"})):
        card["calibrations"] = {kind: broken}
        with pytest.raises(ModelError, match="calibrations"):
            ModelCard.from_dict(card, source="x.json")
