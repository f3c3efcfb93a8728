"""Import OpenCV Zoo's YuNet face detector into models/detectors/ with its card.

    python tools/import_yunet.py [--weights DIR]     # default: ../shared/weights

Copies ``face_detection_yunet_2023mar.onnx`` after checking it against the sha256 that the weights README gives
(exit 1 otherwise, nothing written), checks that OpenCV's ``cv2.FaceDetectorYN`` loads it, and writes
``yunet.json``: licence, provenance, sha256, thresholds and the longest image side it is run at.

It also fits the card's ``mean_shapes``: on the first ``--fit-images`` images of LFW pairsDevTrain (never
DevTest, where the detectors are compared), YuNet's and MTCNN's landmarks of the same face (the one nearest the
centre) are both mapped by the similarity that takes MTCNN's points onto ArcFace's 112-pixel template, and
averaged. The embedding cards' templates were fitted to MTCNN's points; YuNet then aligns onto the template
moved by the same amount (its mouth corners, for one, sit about 2.5 px higher on a 250 px LFW image).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from faceverify._util import sha256_file, write_atomic
from faceverify.align import similarity_transform
from faceverify.detect import Detector, YuNetDetector, select_faces
from faceverify.eval.pairs import lfw_image_dir, read_lfw_pairs
from faceverify.images import load_image
from faceverify.modelcard import DetectorCard, shipped_models_dir
from tools.common import REPO_ROOT, lfw_root

SOURCE = "face_detection_yunet_2023mar.onnx"
SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
"""From ../shared/weights/README.md (equals the Git LFS object id in opencv/opencv_zoo)."""
FRAME = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]])
"""The frame the mean shapes are given in: ArcFace's 112-pixel template (any fixed 5 points would do)."""


def fit_mean_shapes(root: Path, count: int) -> tuple[dict[str, list[list[float]]], int]:
    """Mean MTCNN and YuNet shapes of the faces both find in the first ``count`` pairsDevTrain images."""
    rels = sorted({r for p in read_lfw_pairs(root / "pairsDevTrain.txt") for r in (p.path_a, p.path_b)})[:count]
    yunet, mtcnn = YuNetDetector(threads=1), Detector("cpu")
    ours, theirs = [], []
    for rel in rels:
        image = load_image(lfw_image_dir(root) / rel)
        a = select_faces(yunet.detect_one(image), image.shape, "center")
        b = select_faces(mtcnn.detect_one(image), image.shape, "center")
        if a and b:
            m = similarity_transform(b[0].landmarks, FRAME)
            ours.append(a[0].landmarks @ m[:, :2].T + m[:, 2])
            theirs.append(b[0].landmarks @ m[:, :2].T + m[:, 2])
    shapes = dict(mtcnn=np.mean(theirs, 0), own=np.mean(ours, 0))
    return {k: [[round(float(v), 4) for v in p] for p in s] for k, s in shapes.items()}, len(ours)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=REPO_ROOT.parent / "shared" / "weights")
    parser.add_argument("--lfw", type=Path, default=None, help="LFW root for fitting the mean shapes")
    parser.add_argument("--fit-images", type=int, default=1000)
    args = parser.parse_args(argv)
    source = args.weights / SOURCE
    if not source.is_file():
        raise SystemExit(f"error: {source}: not found")
    if sha256_file(source) != SHA256:
        raise SystemExit(f"error: {source}: sha256 does not match the weights README ({SHA256[:12]}...)")
    data = source.read_bytes()
    detector = cv2.FaceDetectorYN.create("onnx", np.frombuffer(data, np.uint8), np.zeros(0, np.uint8), (320, 320))
    detector.detect(np.zeros((320, 320, 3), np.uint8))  # loads and runs, or raises
    licence = (args.weights / "LICENSE-yunet-MIT.txt").read_text().strip()
    out = shipped_models_dir() / "detectors"
    out.mkdir(exist_ok=True)
    target = out / "yunet.onnx"
    write_atomic(target, data)
    card = DetectorCard(
        name="yunet", kind="yunet", model=target.name, model_sha256=sha256_file(target),
        score_threshold=0.6, nms_threshold=0.3, max_side=640, licence="MIT",
        provenance=dict(
            source=f"OpenCV Zoo models/face_detection_yunet/{SOURCE}",
            copy="GitHub iwantgobackhome/Atec_EdgeFace (sha256 equals the Git LFS object id in opencv/opencv_zoo)",
            source_sha256=SHA256, imported_by="tools/import_yunet.py", licence_text=licence,
        ),
        notes="YuNet (Wu et al., OpenCV Zoo), run by OpenCV's cv2.FaceDetectorYN: boxes, scores and 5 landmarks "
        "(image's left eye, right eye, nose tip, left and right mouth corner: MTCNN's order, checked on LFW by "
        "tests/test_onnx_path.py). Images whose longer side exceeds max_side are shrunk to it first. "
        "score_threshold: see BENCHMARKS.md (detection) for recall at it.",
    )
    card.save(out / "yunet.json")  # the detector must be loadable to fit its mean shapes
    card.mean_shapes, fitted = fit_mean_shapes(lfw_root(args.lfw), args.fit_images)
    card.provenance["mean_shapes"] = f"fitted by tools/import_yunet.py on {fitted} LFW pairsDevTrain faces"
    card.save(out / "yunet.json")
    print(f"imported {SOURCE} -> {target} (sha256 {card.model_sha256[:12]}), card {out / 'yunet.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
