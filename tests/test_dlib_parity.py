"""The imported dlib ResNet against dlib itself, and the importer's handling of damaged .dat files."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from faceverify.embed import torch_weights
from faceverify.modelcard import ModelCard
from faceverify.networks import build

from conftest import require_data

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
CARD = MODELS / "dlib-resnet-v1.json"
NUM_FACES = 200


@pytest.fixture(scope="module")
def importer() -> ModuleType:
    """tools/import_dlib.py, which is a script rather than part of the package."""
    spec = importlib.util.spec_from_file_location("import_dlib", REPO / "tools" / "import_dlib.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


def _dlib_models() -> Path | None:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0]) / "models"


@pytest.fixture(scope="module")
def dat_path() -> Path:
    models = _dlib_models()
    if models is None or not (models / "dlib_face_recognition_resnet_model_v1.dat").exists():
        pytest.skip("face-recognition-models (dlib's .dat files) is not installed")
    return models / "dlib_face_recognition_resnet_model_v1.dat"


def _load_ours() -> tuple[ModelCard, torch.nn.Module]:
    if not CARD.exists():
        pytest.skip(f"{CARD} is missing: run python tools/import_dlib.py")
    card = ModelCard.load(CARD)
    model = build(card.architecture, card.embedding_size)
    model.load_state_dict(torch_weights(card, CARD), strict=True)  # checked against the card's sha256
    return card, model.eval()


def _lfw_chips(dlib: ModuleType, models: Path, root: Path, count: int) -> list[np.ndarray]:
    """dlib's own alignment of the first image of each person in peopleDevTest, until ``count`` faces."""
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    lines = (root / "peopleDevTest.txt").read_text().splitlines()
    people = [line.split("\t")[0] for line in lines[1 : int(lines[0]) + 1]]
    chips: list[np.ndarray] = []
    for name in people:
        image = dlib.load_rgb_image(str(root / "lfw" / name / f"{name}_0001.jpg"))
        faces = detector(image, 1)
        if faces:
            face = max(faces, key=lambda r: r.area())
            chips.append(dlib.get_face_chip(image, predictor(image, face), size=150, padding=0.25))
        if len(chips) == count:
            break
    return chips


def test_descriptors_match_dlib(lfw_root: Path) -> None:
    dlib = pytest.importorskip("dlib", reason="dlib is not importable (pip install dlib-bin)")
    models = _dlib_models()
    if models is None:
        pytest.skip("face-recognition-models (dlib's .dat files) is not installed")
    if not (lfw_root / "peopleDevTest.txt").exists() or not (lfw_root / "lfw").is_dir():
        require_data(f"LFW at {lfw_root} lacks peopleDevTest.txt or lfw/ (set FACEVERIFY_LFW)")
    card, model = _load_ours()

    chips = _lfw_chips(dlib, models, lfw_root, NUM_FACES)
    assert len(chips) == NUM_FACES, f"dlib found only {len(chips)} faces in peopleDevTest"
    facerec = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
    theirs = np.array([facerec.compute_face_descriptor(chip) for chip in chips], dtype=np.float64)

    x = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float()
    x = (x - torch.tensor(card.mean).view(1, 3, 1, 1)) / torch.tensor(card.std).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = model(x).double().numpy()

    assert ours.shape == theirs.shape == (NUM_FACES, card.embedding_size)
    cosine = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    print(f"\ncosine to dlib over {NUM_FACES} LFW faces: 1 - mean = {1 - cosine.mean():.3g}, "
          f"1 - worst = {1 - cosine.min():.3g}; largest absolute difference {np.abs(ours - theirs).max():.3g}")
    assert cosine.mean() >= 0.9999
    assert cosine.min() >= 0.999


@pytest.mark.parametrize("keep", [0, 3, 200, 300, 5000, -20])
def test_reader_rejects_truncated_file(importer: ModuleType, dat_path: Path, tmp_path: Path, keep: int) -> None:
    data = dat_path.read_bytes()
    cut = tmp_path / "truncated.dat"
    cut.write_bytes(data[:keep] if keep >= 0 else data[: len(data) + keep])
    with cut.open("rb") as f, pytest.raises(importer.DlibFormatError, match="file ends inside"):
        importer.read_dlib_net(f, str(cut))


def test_reader_rejects_trailing_bytes(importer: ModuleType, dat_path: Path, tmp_path: Path) -> None:
    longer = tmp_path / "longer.dat"
    longer.write_bytes(dat_path.read_bytes() + b"\x00")
    with longer.open("rb") as f, pytest.raises(importer.DlibFormatError, match="unexpected bytes after"):
        importer.read_dlib_net(f, str(longer))


def test_stage_groups_cover_every_parameter_once() -> None:
    model = build("dlib_resnet_v1", 128)
    groups = model.stage_groups()
    assert len(groups) == 7  # stem, five levels, fc
    assert groups[0][0] is model.stem[0].weight and groups[-1] == [model.fc.weight]
    flat = [id(p) for group in groups for p in group]
    assert sorted(flat) == sorted(id(p) for p in model.parameters())
