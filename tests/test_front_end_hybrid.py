"""The stills default front end (``yunet-onet``): YuNet's faces, with the five points placed by MTCNN's last stage
on each of YuNet's boxes. Its faces are YuNet's, its points are MTCNN's (nearer MTCNN's own than YuNet's are), a
face that fills the photo keeps its points where they are on the uncropped photo, and boxes at the image's edge
or tiny faces give points, never a crash."""

from __future__ import annotations

import numpy as np
import pytest

from faceverify.detect import OnnxMtcnnDetector, YuNetDetector, YuNetOnetDetector, select_faces
from faceverify.eval.pairs import read_lfw_pairs
from faceverify.images import load_image
from faceverify.pipeline import FacePipeline


@pytest.fixture(scope="module")
def stills(lfw_root, lfw_images) -> list[np.ndarray]:
    pairs = read_lfw_pairs(lfw_root / "pairsDevTrain.txt")
    return [load_image(lfw_images / rel) for rel in sorted({p.path_a for p in pairs})[::20][:60]]


def _centre(faces, image):
    chosen = select_faces(faces, image.shape, "center")
    return chosen[0] if chosen else None


def _error(points: np.ndarray, reference: np.ndarray) -> float:
    """Mean point distance in eye distances of ``reference``."""
    return float(np.linalg.norm(points - reference, axis=1).mean() / np.linalg.norm(reference[0] - reference[1]))


def test_the_faces_are_yunets_and_the_points_mtcnns(stills):
    yunet, hybrid, mtcnn = YuNetDetector(threads=1), YuNetOnetDetector(threads=1), OnnxMtcnnDetector(threads=1)
    own, placed = [], []
    for image in stills:
        y, h = yunet.detect_one(image), hybrid.detect_one(image)
        assert [f.box.tolist() for f in y] == [f.box.tolist() for f in h]  # the same faces, box for box
        m = _centre(mtcnn.detect_one(image), image)
        if m is None or not y:
            continue
        a, b = _centre(y, image), _centre(h, image)
        own.append(_error(a.landmarks, m.landmarks))
        placed.append(_error(b.landmarks, m.landmarks))
    assert len(placed) >= 50
    assert np.median(placed) < 0.05 and np.median(placed) < np.median(own) / 2, (np.median(placed), np.median(own))


def test_a_face_that_fills_the_photo_keeps_its_points(stills):
    hybrid = YuNetOnetDetector(threads=1)
    moved = []
    for image in stills[:30]:
        whole = _centre(hybrid.detect_one(image), image)
        crop = image[65:185, 65:185]  # forehead and chin cut off: YuNet's box leaves the image
        tight = _centre(hybrid.detect_one(np.ascontiguousarray(crop)), crop)
        if whole is None or tight is None:
            continue
        moved.append(_error(tight.landmarks + 65, whole.landmarks))
    assert len(moved) >= 25 and np.median(moved) < 0.04, np.median(moved)


def test_faces_at_the_edge_and_tiny_faces_get_points_not_errors(stills):
    hybrid = YuNetOnetDetector(threads=1, min_face_size=8)
    image = stills[0]
    for part in (image[:, 150:], image[160:, :], image[:90, :90], image[::6, ::6]):
        part = np.ascontiguousarray(part)
        for face in hybrid.detect_one(part):
            assert face.landmarks.shape == (5, 2) and np.isfinite(face.landmarks).all()
    assert hybrid.detect_one(np.zeros((5, 5, 3), np.uint8)) == []


def test_the_default_pipeline_aligns_the_hybrids_points_onto_the_cards_own_template():
    pipeline = FacePipeline(threads=1)
    assert pipeline.detector_kind == "yunet-onet"
    assert np.allclose(pipeline.template, pipeline.card.template)
