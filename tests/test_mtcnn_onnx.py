"""MTCNN's cascade on ONNX Runtime (``--detector mtcnn-onnx``) finds facenet-pytorch's faces: the same faces on 300
LFW images and 20 generated 640x480 frames (box IoU >= 0.9, none missing or extra on >= 99% of images, landmarks
within 1 px median), its files are checked against the card, and it runs without importing torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from faceverify.detect import Detector, Face, OnnxMtcnnDetector, make_detector
from faceverify.errors import ModelError
from faceverify.eval.pairs import read_lfw_pairs
from faceverify.images import load_image
from faceverify.modelcard import DetectorCard, shipped_models_dir
from faceverify.pipeline import FacePipeline
from faceverify.video.tracking import iou_matrix
from tools.video_synth import choose_cast, make_test_video


@pytest.fixture(scope="module")
def parity_images(lfw_root, lfw_images, tmp_path_factory) -> list[np.ndarray]:
    """300 LFW pairsDevTest images, then 20 frames of a generated 640x480 video (RGB)."""
    pairs = read_lfw_pairs(lfw_root / "pairsDevTest.txt")
    rels = sorted({p.path_a for p in pairs} | {p.path_b for p in pairs})[:300]
    stills = [load_image(lfw_images / rel) for rel in rels]
    actors, _ = choose_cast(lfw_root, enrolled=2, strangers=1, distractors=0, seed=5)
    video = tmp_path_factory.mktemp("mtcnn-onnx") / "scene.avi"
    make_test_video(actors, video, seconds=4.0, fps=5.0, seed=5, detector=Detector("cpu"))
    capture = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < 20:
        ok, bgr = capture.read()
        assert ok, f"{video}: {len(frames)} frames"
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    assert frames[0].shape == (480, 640, 3)
    return stills + frames


def _boxes(faces: list[Face]) -> np.ndarray:
    return np.array([f.box for f in faces], np.float64).reshape(-1, 4)


def test_the_onnx_cascade_finds_facenet_pytorchs_faces(parity_images):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        detector = Detector("cpu")  # one image a call: its batches' NMS lets boxes of one image suppress another's
        reference = [detector.detect_one(image) for image in parity_images]
    finally:
        torch.set_num_threads(before)
    ours = OnnxMtcnnDetector(threads=1).detect(parity_images)  # all at once: mixed sizes, one RNet and ONet batch
    agree, ious, offsets = 0, [], []
    for theirs, mine in zip(reference, ours):
        iou = iou_matrix(_boxes(theirs), _boxes(mine))
        pairs = [(i, int(iou[i].argmax())) for i in range(len(theirs)) if len(mine) and iou[i].max() >= 0.5]
        agree += len(pairs) == len(theirs) == len(mine) and len({j for _, j in pairs}) == len(pairs)
        for i, j in pairs:
            ious.append(iou[i, j])
            offsets.extend(np.linalg.norm(theirs[i].landmarks - mine[j].landmarks, axis=1))
            assert abs(theirs[i].score - mine[j].score) < 1e-3
    assert sum(map(bool, reference[:300])) >= 297 and sum(map(bool, reference[300:])) >= 10, "faces to compare"
    assert agree >= 0.99 * len(parity_images), f"{agree} of {len(parity_images)} images agree"
    assert min(ious) >= 0.9 and np.median(offsets) <= 1.0, (min(ious), np.median(offsets))


def test_the_video_loop_can_use_it_and_the_card_is_checked(tmp_path, monkeypatch):
    pipeline = FacePipeline(detector="mtcnn-onnx", threads=1)
    frame_detector = pipeline.frame_detector(24, 0.6)
    assert isinstance(frame_detector, OnnxMtcnnDetector) and frame_detector.min_face_size == 24
    assert pipeline.detector_kind == "mtcnn" and np.allclose(pipeline.template, pipeline.card.template)
    with pytest.raises(ModelError, match="runs on cpu"):
        make_detector("mtcnn-onnx", "cuda")
    shipped, copy = shipped_models_dir(), tmp_path / "models"
    shutil.copytree(shipped, copy, ignore=shutil.ignore_patterns("*.safetensors", "*.onnx", "__pycache__"))
    monkeypatch.setenv("FACEVERIFY_MODELS", str(copy))
    card = DetectorCard.load(copy / "detectors" / "mtcnn.json")
    for name in card.files():
        shutil.copy(shipped / "detectors" / name, copy / "detectors" / name)
    OnnxMtcnnDetector()
    onet = copy / "detectors" / card.stages["onet"]["model"]
    data = bytearray(onet.read_bytes())
    data[len(data) // 2] ^= 1
    onet.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the sha256"):
        OnnxMtcnnDetector()
    onet.unlink()
    with pytest.raises(ModelError, match="is missing"):
        OnnxMtcnnDetector()


NO_TORCH = """\
import json, sys
from faceverify.images import load_image
from faceverify.pipeline import FacePipeline
pipeline = FacePipeline(detector="mtcnn-onnx", threads=1)
faces = pipeline.process_images([load_image(sys.argv[1])])[0]
video = pipeline.frame_detector(20, 0.6).detect_one(load_image(sys.argv[1]))
heavy = sorted(m for m in ("torch", "torchvision", "facenet_pytorch") if m in sys.modules)
print(json.dumps(dict(faces=len(faces), video=len(video), heavy=heavy)))
"""


def test_it_runs_without_importing_torch(lfw_image):
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, str(lfw_image("Colin_Powell", 1))],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == dict(faces=1, video=1, heavy=[])
