"""Alignment: the similarity fit on synthetic points, and MTCNN + align_face on a few real LFW images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from faceverify.align import align_face, similarity_transform
from faceverify.errors import BadInputError, ModelError
from faceverify.eval.pairs import find_lfw_root, lfw_image_dir

from conftest import require_data

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL = "dlib-resnet-v1"
# One frontal face each; none is among the images tools/fit_dlib_template.py fits the template on.
LFW_IMAGES = [("Abdullah_Gul", 14), ("Colin_Powell", 2), ("Tony_Blair", 5), ("Laura_Bush", 3)]
PAD = 25  # context around the crop for re-detection: MTCNN is unreliable when the face fills the whole image


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def test_similarity_transform_recovers_known_transform() -> None:
    src = np.array([[38.3, 51.7], [73.5, 51.5], [56.0, 71.7], [41.5, 92.4], [70.7, 92.2]])
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    expected = np.hstack([rot, shift[:, None]])
    m = similarity_transform(src, apply(expected, src))
    np.testing.assert_allclose(m, expected, atol=1e-9)


@pytest.fixture(scope="module")
def lfw_images() -> Path:
    try:
        root = find_lfw_root()
    except BadInputError as exc:
        require_data(f"LFW not usable: {exc}")
    if root is None:
        require_data("LFW not found: set $FACEVERIFY_LFW to the directory with the protocol files")
    return lfw_image_dir(root)


@pytest.fixture(scope="module")
def template() -> np.ndarray:
    from faceverify.modelcard import resolve_card

    directory = Path(os.environ.get("FACEVERIFY_MODELS") or REPO_ROOT / "models")
    try:
        card, _ = resolve_card(MODEL, directory)
    except ModelError as exc:
        pytest.skip(f"no model card for {MODEL}: {exc}")
    assert card.input_size == 150
    return np.asarray(card.template, np.float64)


@pytest.fixture(scope="module")
def detector():
    from faceverify.detect import Detector

    return Detector(device="cpu")


def test_mtcnn_and_align_face_on_lfw(lfw_images: Path, template: np.ndarray, detector) -> None:
    from faceverify.images import load_image

    images = [load_image(lfw_images / name / f"{name}_{number:04d}.jpg") for name, number in LFW_IMAGES]
    for (name, _), img, faces in zip(LFW_IMAGES, images, detector.detect(images)):
        assert len(faces) == 1, name
        face = faces[0]
        x1, y1, x2, y2 = face.box
        lm = face.landmarks
        assert lm.shape == (5, 2)
        assert ((lm[:, 0] > x1) & (lm[:, 0] < x2) & (lm[:, 1] > y1) & (lm[:, 1] < y2)).all(), name
        assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0], name  # left before right as seen in the image

        crop = align_face(img, lm, template, 150)
        assert crop.shape == (150, 150, 3) and crop.dtype == np.uint8
        # The same alignment with a margin: its centre is the crop, and MTCNN finds the face reliably in it.
        canvas = align_face(img, lm, template + PAD, 150 + 2 * PAD)
        assert np.abs(canvas[PAD:-PAD, PAD:-PAD].astype(int) - crop).max() <= 1, name
        again = detector.detect_one(canvas)
        assert again, f"{name}: no face in the aligned crop"
        redetected = max(again, key=lambda f: f.area).landmarks - PAD
        mapped = apply(similarity_transform(lm, template), lm)
        # Re-detection agrees with where the warp put the landmarks ...
        assert np.linalg.norm(redetected - mapped, axis=1).max() < 4.0, name
        # ... and those lie near the template (they differ by this face's shape, not by a misalignment).
        to_template = np.linalg.norm(redetected - template, axis=1)
        assert to_template.mean() < 6.0 and to_template.max() < 10.0, name
