"""Where models are found and what they are stored as: the search path ($FACEVERIFY_MODELS, the user models folder,
the shipped models) adds folders rather than hiding the shipped ones, says when a user's card hides another model
of the same name, and every shipped model keeps its weights once, in the ONNX file both runtimes read."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from faceverify.cli import run
from faceverify.embed import Embedder, OnnxEmbedder
from faceverify.errors import ModelError
from faceverify.modelcard import (
    ModelCard,
    available_models,
    default_model_name,
    model_folders,
    resolve_card,
    shipped_models_dir,
    user_copy,
    user_models_dir,
)


@pytest.fixture()
def folders(tmp_path, monkeypatch) -> dict[str, Path]:
    """Two $FACEVERIFY_MODELS folders and a user data folder of this test's own."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    monkeypatch.setenv("FACEVERIFY_MODELS", os.pathsep.join([str(first), str(second)]))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return dict(first=first, second=second, user=tmp_path / "data" / "faceverify" / "models")


def _copy_model(model: str, into: Path, **changes) -> Path:
    """A copy of shipped model ``model`` in ``into`` (its ONNX file linked), with ``changes`` to its card."""
    into.mkdir(parents=True, exist_ok=True)
    card = json.loads((shipped_models_dir() / f"{model}.json").read_text())
    (into / card["onnx"]).symlink_to(shipped_models_dir() / card["onnx"])
    card.update(changes)
    path = into / f"{card['name']}.json"
    path.write_text(json.dumps(card))
    return path


def test_the_search_path_adds_folders_in_front_of_the_shipped_models(folders, capsys):
    shipped = set(available_models(shipped_models_dir()))
    _copy_model("edgeface-xxs", folders["second"], name="door-cam")
    kinds = [(f.path, f.kind) for f in model_folders()]
    assert kinds == [(folders["first"], "FACEVERIFY_MODELS"), (folders["second"], "FACEVERIFY_MODELS"),
                     (folders["user"], "user"), (shipped_models_dir(), "shipped")]
    assert set(available_models()) == shipped | {"door-cam"}  # nothing shipped is hidden
    assert user_models_dir() == folders["first"]  # new models go to the first folder the user named
    assert resolve_card("door-cam")[1] == folders["second"] / "door-cam.json"
    assert default_model_name() == (shipped_models_dir() / "DEFAULT").read_text().strip()
    (folders["second"] / "DEFAULT").write_text("door-cam")  # the first DEFAULT along the path names the default
    assert default_model_name() == "door-cam" and resolve_card()[0].name == "door-cam"
    assert run(["models", "--json"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert listed["door-cam"]["default"] and listed["door-cam"]["source"] == "FACEVERIFY_MODELS"
    assert all(listed[n]["source"] == "shipped" and not listed[n]["hides"] for n in shipped)


def test_a_user_model_that_hides_a_shipped_one_says_so(folders, capsys, lfw_image):
    same = _copy_model("edgeface-xs", folders["first"])  # the same model: nothing to say
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_card("edgeface-xs")[1] == same
    other = json.loads(same.read_text())  # another network under a shipped name
    other["weights_sha256"] = "0" * 64
    same.write_text(json.dumps(other))
    img = str(lfw_image("Colin_Powell", 1))
    assert run(["verify", img, img, "--model", "edgeface-xs"]) == 0  # ONNX Runtime runs the file the card names
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.count(f"model 'edgeface-xs': using {same}, which hides the shipped model") == 1
    assert run(["models"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln[2:].startswith("edgeface-xs\t"))
    assert line.endswith("FACEVERIFY_MODELS\t(hides the shipped model of that name)")


def test_a_model_name_that_is_nowhere_lists_the_folders(folders):
    with pytest.raises(ModelError, match=r"model 'nobody' not found in .*first.*second.*available: .*edgeface-xs"):
        resolve_card("nobody")


def test_weights_stored_once_serve_both_runtimes():
    assert not list(shipped_models_dir().glob("*.safetensors"))
    card, _ = resolve_card("edgeface-xxs")
    assert card.weights_in_onnx
    crops = np.random.default_rng(3).integers(0, 256, (6, 112, 112, 3), dtype=np.uint8)
    on_torch, on_onnx = Embedder.load("edgeface-xxs", "cpu").embed(crops), OnnxEmbedder.load("edgeface-xxs").embed(crops)
    assert (on_torch * on_onnx).sum(1).min() > 0.99999


def test_a_changed_tensor_in_the_onnx_file_is_refused_by_the_torch_backend(folders):
    """An initialiser changed and the card's ONNX sha256 updated to match: the file is what the card names, but its
    tensors no longer hash to the card's weights_sha256, so torch refuses them (ONNX Runtime trusts the card)."""
    card_path = _copy_model("edgeface-xxs", folders["first"])
    card = ModelCard.load(card_path)
    model_path = folders["first"] / card.onnx
    proto = onnx.load(str(model_path))
    tensor = proto.graph.initializer[0]
    changed = numpy_helper.to_array(tensor).copy()
    changed.flat[0] += 1
    tensor.CopyFrom(numpy_helper.from_array(changed, tensor.name))
    model_path.unlink()
    data = proto.SerializeToString()
    model_path.write_bytes(data)
    card.onnx_sha256 = hashlib.sha256(data).hexdigest()
    card.save(card_path)
    with pytest.raises(ModelError, match="the weights in this ONNX file do not match the sha256") as err:
        Embedder.load("edgeface-xxs", "cpu")
    assert str(model_path) in str(err.value)


def test_a_changed_shipped_card_is_saved_as_a_user_copy(folders, monkeypatch, capsys):
    """`calibrate` never rewrites a shipped card (site-packages in a normal install): the card and its ONNX file
    go to the user models folder, which then answers for the name; the shipped card stays as it was."""
    monkeypatch.delenv("FACEVERIFY_MODELS")
    card, path = resolve_card("edgeface-xxs")
    shipped = path.read_bytes()
    assert user_copy(card, path) == folders["user"] / "edgeface-xxs.json"
    assert (folders["user"] / card.onnx).read_bytes() == (path.parent / card.onnx).read_bytes()
    card.thresholds = {"1e-3": 0.5}
    card.save(folders["user"] / "edgeface-xxs.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same model (thresholds are not part of its id): nothing hidden
        again, where = resolve_card("edgeface-xxs")
    assert where == folders["user"] / "edgeface-xxs.json" and again.thresholds == {"1e-3": 0.5}
    assert user_copy(again, where) == where and path.read_bytes() == shipped
    (folders["user"] / card.onnx).write_bytes(b"another file")
    with pytest.raises(ModelError, match="another file of that name is in the user models folder"):
        user_copy(card, path)
    assert run(["models", "--json"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert listed["edgeface-xxs"]["source"] == "user" and listed["edgeface-xs"]["source"] == "shipped"
