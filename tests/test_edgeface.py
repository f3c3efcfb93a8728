"""The imported EdgeFace models: cards that say how to feed them, shipped files that match the card, weights that
are the authors' int8 values exactly, and the importer's parity with the authors' quantised model on LFW faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from faceverify._util import sha256_file
from faceverify.embed import Embedder, models_dir, resolve_card
from faceverify.networks.edgeface import ARCFACE_TEMPLATE, INPUT_SIZE
from tools import import_edgeface as importer

from conftest import require_data

NAMES = sorted(importer.MODELS)


@pytest.fixture(scope="module")
def parity_crops(lfw_root) -> np.ndarray:
    return importer.parity_crops(lfw_root)


def checkpoint(name: str) -> dict[str, torch.Tensor]:
    """The authors' checkpoint (../shared/weights), checked against the README's sha256; required data."""
    path = importer.SHARED_WEIGHTS / importer.MODELS[name][0]
    if not path.is_file():
        require_data(f"{path} not found: the EdgeFace checkpoints live in ../shared/weights")
    return importer.read_checkpoint(path, importer.MODELS[name][1])


@pytest.mark.parametrize("name", NAMES)
def test_card_describes_the_front_end_and_the_source(name):
    card, _ = resolve_card(name)
    checkpoint_file, sha256, architecture, _ = importer.MODELS[name]
    assert (card.architecture, card.input_size, card.embedding_size) == (architecture, INPUT_SIZE, 512)
    assert card.template == ARCFACE_TEMPLATE
    embedder = Embedder.load(name, "cpu")
    pixels = np.array([[[[0, 127, 255]]]], np.uint8).repeat(INPUT_SIZE, 1).repeat(INPUT_SIZE, 2)
    assert torch.allclose(embedder.preprocess(pixels)[0, :, 0, 0], torch.tensor([-1.0, 127 / 127.5 - 1, 1.0]))
    source = card.provenance
    assert (source["source_file"], source["source_sha256"]) == (checkpoint_file, sha256)
    assert source["source_commit"] and "BSD-3-Clause" in source["licence"] and "research" in source["training_data"]
    assert not importer.parity_failures(source["parity"]) and source["parity"]["faces"] == importer.PARITY_FACES


@pytest.mark.parametrize("name", NAMES)
def test_shipped_files_match_the_card(name):
    card, _ = resolve_card(name)
    assert sha256_file(models_dir() / card.weights) == card.weights_sha256
    assert card.onnx and sha256_file(models_dir() / card.onnx) == card.onnx_sha256


@pytest.mark.parametrize("name", NAMES)
def test_shipped_weights_are_the_dequantised_checkpoint(name):
    card, _ = resolve_card(name)
    expected = importer.dequantise(checkpoint(name))
    shipped = load_file(str(models_dir() / card.weights))
    assert set(shipped) == set(expected)
    assert all(torch.equal(shipped[k], expected[k]) for k in expected)


@pytest.mark.parametrize("name", NAMES)
def test_parity_with_the_authors_int8_model_on_lfw_faces(name, parity_crops):
    state = checkpoint(name)
    torch.set_num_threads(1)
    network = Embedder.load(name, "cpu").network
    check = importer.parity(network, importer.reference_model(importer.MODELS[name][2], state), parity_crops)
    assert len(parity_crops) == importer.PARITY_FACES
    assert not importer.parity_failures(check), check
    recorded = resolve_card(name)[0].provenance["parity"]
    if check["engine"] == recorded["engine"]:
        assert abs(check["mean_cosine"] - recorded["mean_cosine"]) < 1e-3, (check, recorded)
