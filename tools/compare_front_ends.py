"""Front ends (detector + landmarks + alignment) compared through one model on the same LFW images, in one run.

    python tools/compare_front_ends.py [--model edgeface-xs] [--front-ends yunet,mtcnn-onnx,yunet-onet]
        [--lfw LFW] [--threads 2] [--json PATH]

Chosen on DevTrain, reported on DevTest (LFW's README): for each front end the live pipeline (the product's own
code: detect, align onto the card's template for that detector, embed on ONNX Runtime) embeds

- every peopleDevTrain image (9,525): TAR at FAR 1e-3 and 1e-4 over all same-person pairs against all
  different-person pairs, and images without a face (they are embedded from a centre crop, as `evaluate` does);
- the pairsDevTrain images as they are and as two hard copies made on the fly: ``tight`` (the central 120 x 120
  pixels, forehead and chin cut off, enlarged to 250) and ``small`` (the whole image shrunk to 80 x 80, faces of
  about 35 pixels); 10-fold accuracy on each, and on the pairs with the most turned heads (``turned``: the tenth
  of pairsDevTrain whose larger |yaw|, measured once on YuNet's landmarks for every front end alike, is highest);
- pairsDevTest: accuracy at the threshold chosen on pairsDevTrain (what `faceverify evaluate lfw` reports), and
  10-fold accuracy on its ``tight`` and ``small`` copies (reported only: nothing is chosen on DevTest).

Cost: each front end's detection and landmarks (no embedding) on the same 200 pairsDevTest images at one thread,
rounds interleaved, median milliseconds per face. Embeddings of unchanged files are kept in the model's evaluation
cache (keyed by front end), so a rerun embeds only the hard copies.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from faceverify.detect import make_detector
from faceverify.eval.cache import EmbeddingCache, embed_paths
from faceverify.eval.metrics import best_threshold, kfold_accuracy, threshold_at_far
from faceverify.eval.pairs import lfw_image_dir, lfw_image_path, read_lfw_pairs, read_lfw_people
from faceverify.images import load_image
from faceverify.pipeline import FacePipeline
from faceverify.quality import measure_face
from tools.common import lfw_root

FRONT_ENDS = ("yunet", "mtcnn-onnx", "yunet-onet")
FARS = (1e-3, 1e-4)
TURNED_SHARE = 0.1
COST_IMAGES, COST_ROUNDS = 200, 5


def tight(image: np.ndarray) -> np.ndarray:
    """The central 120 x 120 pixels of a 250 x 250 LFW image (forehead and chin cut off), enlarged back."""
    h, w = image.shape[:2]
    y, x = (h - 120) // 2, (w - 120) // 2
    return cv2.resize(np.ascontiguousarray(image[y:y + 120, x:x + 120]), (w, h), interpolation=cv2.INTER_LINEAR)


def small(image: np.ndarray) -> np.ndarray:
    """The whole image shrunk to 80 x 80 (area averaging): faces of about 35 pixels."""
    return cv2.resize(image, (80, 80), interpolation=cv2.INTER_AREA)


VARIANTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"tight": tight, "small": small}


def pipeline_for(model: str, front_end: str, threads: int) -> FacePipeline:
    return FacePipeline(model, "cpu", detector=make_detector(front_end, "cpu", threads=threads), backend="onnx",
                        threads=threads)


def embed_arrays(pipeline: FacePipeline, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One embedding per image (centre face; centre crop without one) and which had a face."""
    vectors, found = [], []
    for start in range(0, len(images), 32):
        for faces in pipeline.process_images(images[start:start + 32], "center", fallback="center"):
            vectors.append(faces[0].embedding)
            found.append(faces[0].face is not None)
    return np.stack(vectors), np.asarray(found)


def all_pairs_tar(vectors: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """TAR at each FAR of FARS over every pair of ``vectors``: same label genuine, different label impostor."""
    genuine, impostor = [], []
    for start in range(0, len(vectors), 1024):
        sims = vectors[start:start + 1024] @ vectors.T
        rows = np.arange(start, min(start + 1024, len(vectors)))
        upper = np.arange(len(vectors))[None, :] > rows[:, None]
        same = labels[rows][:, None] == labels[None, :]
        genuine.append(sims[upper & same])
        impostor.append(sims[upper & ~same])
    g, i = np.concatenate(genuine), np.concatenate(impostor)
    out = {"genuine_pairs": int(len(g)), "impostor_pairs": int(len(i))}
    for far in FARS:
        out[f"tar_at_far_{far:g}"] = round(float((g >= threshold_at_far(i, far)).mean()), 5)
    return out


def pair_scores(vectors: dict[str, np.ndarray], pairs: list[Any]) -> np.ndarray:
    return np.array([float(vectors[str(a)] @ vectors[str(b)]) for a, b in ((p.path_a, p.path_b) for p in pairs)])


def turned_pairs(pairs: list[Any], threads: int) -> np.ndarray:
    """Mask of the TURNED_SHARE of ``pairs`` whose larger |yaw| (YuNet's landmarks, centre face) is highest."""
    detector = make_detector("yunet", "cpu", threads=threads)
    yaw: dict[str, float] = {}
    for path in {str(p) for pair in pairs for p in (pair.path_a, pair.path_b)}:
        image = load_image(path)
        faces = detector.detect_one(image)
        centre = np.array(image.shape[1::-1]) / 2
        face = min(faces, key=lambda f: np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre), default=None)
        yaw[path] = 0.0 if face is None else abs(measure_face(image, face, faces, "yunet").yaw)
    worst = np.array([max(yaw[str(p.path_a)], yaw[str(p.path_b)]) for p in pairs])
    return worst >= np.quantile(worst, 1 - TURNED_SHARE)


def cost_per_face(front_ends: list[str], paths: list[Path]) -> dict[str, float]:
    """Median ms per face of each front end's detection and landmarks at one thread, rounds interleaved."""
    images = [load_image(p) for p in paths]
    detectors = {f: make_detector(f, "cpu", threads=1) for f in front_ends}
    times: dict[str, list[float]] = {f: [] for f in front_ends}
    faces: dict[str, int] = {}
    for _ in range(COST_ROUNDS):
        for name, detector in detectors.items():
            start = time.perf_counter()
            found = detector.detect(images)
            times[name].append(time.perf_counter() - start)
            faces[name] = sum(len(f) for f in found)
    return {f: round(1000 * statistics.median(times[f]) / max(faces[f], 1), 2) for f in front_ends}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="edgeface-xs")
    ap.add_argument("--front-ends", default=",".join(FRONT_ENDS))
    ap.add_argument("--lfw", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = ap.parse_args(argv)
    root = lfw_root(args.lfw)
    images = lfw_image_dir(root)
    front_ends = args.front_ends.split(",")
    people = read_lfw_people(root / "peopleDevTrain.txt")
    train_paths = [images / lfw_image_path(name, k) for name, n in people for k in range(1, n + 1)]
    train_labels = np.array([i for i, (_, n) in enumerate(people) for _ in range(n)])
    dev_train = read_lfw_pairs(root / "pairsDevTrain.txt")
    dev_test = read_lfw_pairs(root / "pairsDevTest.txt")
    dev_train = [p._replace(path_a=images / p.path_a, path_b=images / p.path_b) for p in dev_train]
    dev_test = [p._replace(path_a=images / p.path_a, path_b=images / p.path_b) for p in dev_test]
    train_pair_paths = sorted({str(p) for pair in dev_train for p in (pair.path_a, pair.path_b)})
    test_paths = sorted({str(p) for pair in dev_test for p in (pair.path_a, pair.path_b)})
    train_y = np.array([p.same for p in dev_train])
    test_y = np.array([p.same for p in dev_test])
    folds = np.arange(len(dev_train)) % 10
    test_folds = np.arange(len(dev_test)) % 10
    turned = turned_pairs(dev_train, args.threads)
    report: dict[str, Any] = {"model": args.model, "turned_pairs": int(turned.sum()), "front_ends": {}}
    for name in front_ends:
        pipeline = pipeline_for(args.model, name, args.threads)
        cache = EmbeddingCache(pipeline.card.model_id)
        row: dict[str, Any] = {}
        vectors, found = embed_paths(pipeline, train_paths, "center", cache)
        row["devtrain_people"] = dict(all_pairs_tar(vectors, train_labels), no_face=int((~found).sum()))
        by_path = dict(zip(map(str, train_paths), vectors))
        scores = pair_scores(by_path, dev_train)
        row["pairs_devtrain_kfold"] = round(kfold_accuracy(scores, train_y, folds).mean, 4)
        row["turned_kfold"] = round(kfold_accuracy(scores[turned], train_y[turned], folds[turned]).mean, 4)
        raw = [load_image(p) for p in train_pair_paths]
        for variant, make in VARIANTS.items():
            vecs, hit = embed_arrays(pipeline, [make(img) for img in raw])
            s = pair_scores(dict(zip(train_pair_paths, vecs)), dev_train)
            row[f"{variant}_kfold"] = round(kfold_accuracy(s, train_y, folds).mean, 4)
            row[f"{variant}_no_face"] = int((~hit).sum())
        test_vectors, test_found = embed_paths(pipeline, test_paths, "center", cache)
        threshold = best_threshold(scores, train_y)
        test_scores = pair_scores(dict(zip(test_paths, test_vectors)), dev_test)
        row["pairs_devtest_accuracy"] = round(float(((test_scores >= threshold) == test_y).mean()), 4)
        row["pairs_devtest_no_face"] = int((~test_found).sum())
        test_raw = [load_image(p) for p in test_paths]
        for variant, make in VARIANTS.items():  # reported only: the same hard copies of pairsDevTest
            vecs, hit = embed_arrays(pipeline, [make(img) for img in test_raw])
            s = pair_scores(dict(zip(test_paths, vecs)), dev_test)
            row[f"devtest_{variant}_kfold"] = round(kfold_accuracy(s, test_y, test_folds).mean, 4)
            row[f"devtest_{variant}_no_face"] = int((~hit).sum())
        report["front_ends"][name] = row
        print(name, json.dumps(row), file=sys.stderr, flush=True)
    cost = cost_per_face(front_ends, [Path(p) for p in test_paths[:COST_IMAGES]])
    for name, ms in cost.items():
        report["front_ends"][name]["ms_per_face_1_thread"] = ms
    text = json.dumps(report, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
