"""dlib's own face pipeline (HOG detector, 5-point shapes, face chips, ResNet descriptors) as a peer to compare with.

    python tools/dlib_peer.py pairs [--lfw ROOT] --protocol devtest|devtrain [--limit N] --out scores.csv

The CSV has one row per pair: ``path_a, path_b, same, score``, where ``score`` is the cosine similarity of the
two descriptors, empty when dlib finds no face in either image.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
from pathlib import Path
from typing import Sequence

import dlib
import numpy as np

from faceverify.eval.pairs import lfw_image_dir, read_lfw_pairs
from faceverify.images import load_image
from tools.common import PeerFailed, lfw_root

CHIP_SIZE = 150
CHIP_PADDING = 0.25
UPSAMPLE = 1
DESCRIPTOR_SIZE = 128
PROTOCOLS = {"devtest": "pairsDevTest.txt", "devtrain": "pairsDevTrain.txt"}


def checked_descriptors(vectors: np.ndarray, count: int) -> np.ndarray:
    """``vectors`` if they are ``count`` finite, non-zero 128-d descriptors; PeerFailed otherwise."""
    if vectors.shape != (count, DESCRIPTOR_SIZE):
        raise PeerFailed("dlib", f"{count} descriptors of size {DESCRIPTOR_SIZE} expected, got shape {vectors.shape}")
    if not np.all(np.isfinite(vectors)) or np.any(np.linalg.norm(vectors, axis=1) == 0):
        raise PeerFailed("dlib", "descriptors contain NaN, infinite or all-zero vectors")
    return vectors


def dlib_models_dir() -> Path:
    """The model files shipped by face-recognition-models (located without importing it: it needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise PeerFailed("dlib", "face-recognition-models is not installed (pip install -e '.[peer]')")
    return Path(spec.submodule_search_locations[0]) / "models"


class DlibPipeline:
    """dlib's reference pipeline: largest HOG detection, 5-point shape, 150 x 150 chip, 128-d descriptor."""

    def __init__(self, models: Path | None = None):
        models = models or dlib_models_dir()
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.recognizer = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def shape(self, img: np.ndarray) -> dlib.full_object_detection | None:
        """5-point shape of the largest face dlib's HOG detector finds (upsampling once), or None."""
        rects = self.detector(img, UPSAMPLE)
        if len(rects) == 0:
            return None
        return self.predictor(img, max(rects, key=lambda r: r.area()))

    def chip(self, img: np.ndarray, shape: dlib.full_object_detection) -> np.ndarray:
        """dlib's aligned face chip (the network's input) for ``shape``: CHIP_SIZE x CHIP_SIZE x 3 uint8 RGB."""
        return dlib.get_face_chip(img, shape, size=CHIP_SIZE, padding=CHIP_PADDING)

    def descriptor(self, chip: np.ndarray) -> np.ndarray:
        """The 128-d descriptor (dlib's scale, not unit length) of one chip."""
        vector = np.asarray(self.recognizer.compute_face_descriptor(chip), np.float32)
        return checked_descriptors(vector[None], 1)[0]

    def descriptors(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """Descriptors of many chips in one batch: N x 128."""
        if len(chips) == 0:
            return np.zeros((0, DESCRIPTOR_SIZE), np.float32)
        vectors = np.asarray(self.recognizer.compute_face_descriptor(list(chips)), np.float32)
        return checked_descriptors(vectors, len(chips))

    def embed_image(self, img: np.ndarray) -> np.ndarray | None:
        """Full pipeline on an RGB uint8 image; None when no face is found."""
        shape = self.shape(img)
        return None if shape is None else self.descriptor(self.chip(img, shape))

    def embed_file(self, path: str | Path) -> np.ndarray | None:
        """Full pipeline on an image file; None when no face is found."""
        return self.embed_image(load_image(path))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors."""
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def score_pairs(root: Path, protocol: str, out: Path, limit: int | None = None) -> None:
    """Write dlib's cosine similarity for every pair of an LFW protocol file (each image embedded once)."""
    pairs = read_lfw_pairs(root / PROTOCOLS[protocol])
    if limit is not None:
        pairs = [p for p in pairs if p.same][:limit] + [p for p in pairs if not p.same][:limit]
    images = lfw_image_dir(root)
    pipeline = DlibPipeline()
    cache: dict[Path, np.ndarray | None] = {}
    missed = 0
    with open(out, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path_a", "path_b", "same", "score"])
        for pair in pairs:
            for rel in (pair.path_a, pair.path_b):
                if rel not in cache:
                    cache[rel] = pipeline.embed_file(images / rel)
            a, b = cache[pair.path_a], cache[pair.path_b]
            score = "" if a is None or b is None else f"{cosine(a, b):.6f}"
            missed += score == ""
            writer.writerow([pair.path_a.as_posix(), pair.path_b.as_posix(), int(pair.same), score])
    faceless = sum(v is None for v in cache.values())
    if pairs and missed == len(pairs):
        raise PeerFailed("dlib", f"no pair scored: HOG found no face in {faceless} of {len(cache)} images")
    print(f"{len(pairs)} pairs -> {out}; dlib found no face in {faceless} of {len(cache)} images "
          f"({missed} pairs unscored)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pairs = sub.add_parser("pairs", help="score an LFW pairs protocol with dlib's pipeline")
    pairs.add_argument("--lfw", type=Path, help="LFW root (default: $FACEVERIFY_LFW or the shared copy)")
    pairs.add_argument("--protocol", choices=sorted(PROTOCOLS), required=True)
    pairs.add_argument("--limit", type=int, help="only the first N same and first N different pairs")
    pairs.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    score_pairs(lfw_root(args.lfw), args.protocol, args.out, args.limit)


if __name__ == "__main__":
    main()
