"""Face detectors side by side in one run: YuNet's faces with MTCNN's ONet points (yunet-onet, the stills default),
YuNet (cv2.FaceDetectorYN, and the same network on ONNX Runtime), facenet-pytorch's MTCNN, MTCNN's cascade on ONNX Runtime (mtcnn-onnx), dlib's HOG.

    python tools/bench_detect.py [--lfw ROOT] [--limit N] [--frames 20] [--threads 1] [--batch 16] [--model NAME]
    python tools/bench_detect.py --interleaved [--frames 20]

On the images of LFW pairsDevTest (all 1000 pairs, or the first N same and N different with ``--limit``) each
detector is timed one image per call, and its recall is the share of images where it finds a face. Each image's
face nearest the centre is aligned (YuNet and MTCNN: our similarity transform of the 5 landmarks onto the card's
template, for YuNet moved by its card's mean shapes, and once more as is; HOG: dlib's own 5-point shape and
face chip) and embedded by the same network (``--model``, else the default model, on ONNX Runtime); accuracy is LFW's 10-fold rule over the pairs (folds interleaved), an image without a face
falling back to its centre crop. Then ``--frames`` generated 640x480 frames, each holding 1 to 3 LFW faces
pasted at random places and scales on a noise background: time per frame and the share of pasted faces found
(a detection whose box centre falls inside a pasted face). Detectors that take a list of images (both MTCNNs)
are timed again on the LFW images and on the frames in lists of ``--batch``: mean ms per image (YuNet and HOG
take one image per call: "-"). The rows run one after another, so a change of load during the run falls on some
rows only: ``--interleaved`` times speed alone, every detector called in turn on each frame (3 rounds) and on
every 8th LFW image, for ratios that a changing load does not bias. All runtimes are held to ``--threads``. A detector that finds a face in fewer than
half the images stops the benchmark (it did not really run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from faceverify.align import align_face, center_crop
from faceverify.detect import Detector, Face, OnnxMtcnnDetector, YuNetDetector, YuNetOnetDetector, select_faces
from faceverify.eval.metrics import kfold_accuracy
from faceverify.eval.pairs import lfw_image_dir, read_lfw_pairs
from faceverify.images import load_image
from faceverify.pipeline import FacePipeline
from tools.common import PeerFailed, lfw_root

FRAME = (480, 640)
DetectFn = Callable[[np.ndarray], list[Face]]


class HogDetector:
    """dlib's HOG detector (upsampling once, as face_recognition does) with its 5-point shapes and face chips."""

    def __init__(self) -> None:
        from tools.dlib_peer import DlibPipeline

        self.dlib = DlibPipeline()

    def detect_one(self, image: np.ndarray) -> list:
        return list(self.dlib.detector(image, 1))

    def chip(self, image: np.ndarray, rects: list) -> np.ndarray | None:
        """dlib's aligned 150 x 150 chip of the detection nearest the centre, or None."""
        if not rects:
            return None
        h, w = image.shape[:2]
        rect = min(rects, key=lambda r: abs(r.center().x - w / 2) + abs(r.center().y - h / 2))
        return self.dlib.chip(image, self.dlib.predictor(image, rect))


def box_centres(found: list, kind: str) -> list[tuple[float, float]]:
    if kind == "hog":
        return [(r.center().x, r.center().y) for r in found]
    return [((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2) for f in found]


def make_frames(images: list[np.ndarray], count: int, seed: int = 0) -> list[tuple[np.ndarray, list[tuple[int, int, int, int]]]]:
    """``count`` 640x480 RGB frames with 1-3 LFW images pasted (scaled 0.6-1.3) on noise, and the face regions
    (the central 60% of each pasted image, where LFW's face is)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        frame = cv2.GaussianBlur(rng.integers(0, 256, (*FRAME, 3), dtype=np.uint8), (0, 0), 3)
        regions: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(1, 4))):
            img = images[int(rng.integers(len(images)))]
            side = int(250 * rng.uniform(0.6, 1.3))
            for _attempt in range(20):
                x, y = int(rng.integers(0, FRAME[1] - side)), int(rng.integers(0, FRAME[0] - side))
                if all(x + side <= a or a + c <= x or y + side <= b or b + d <= y for a, b, c, d in regions):
                    frame[y : y + side, x : x + side] = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
                    regions.append((x, y, side, side))
                    break
        frames.append((frame, [(x + s // 5, y + s // 5, s * 3 // 5, s * 3 // 5) for x, y, s, _ in regions]))
    return frames


def timed_detect(detect: DetectFn, image: np.ndarray) -> tuple[float, list]:
    start = time.perf_counter()
    found = detect(image)
    return time.perf_counter() - start, found


def batch_ms(detect: Callable[[list[np.ndarray]], list], images: list[np.ndarray], batch: int) -> float:
    """Mean ms per image of ``detect`` over ``images`` in consecutive lists of ``batch``."""
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        detect(images[i : i + batch])
    return (time.perf_counter() - start) * 1e3 / len(images)


def interleaved(detectors: dict, groups: dict[str, list[np.ndarray]], rounds: dict[str, int]) -> dict:
    """Median ms per call of each detector on each group's images, the detectors called in turn on every image."""
    times: dict[str, dict[str, list[float]]] = {g: {k: [] for k in detectors} for g in groups}
    for group, images in groups.items():
        for _ in range(rounds[group]):
            for image in images:
                for kind, det in detectors.items():
                    times[group][kind].append(timed_detect(det.detect_one, image)[0])
    return {g: {k: statistics.median(v) * 1e3 for k, v in t.items()} for g, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, default=None)
    parser.add_argument("--limit", type=int, default=None, help="first N same and N different pairs")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16, help="images per call for the batch columns")
    parser.add_argument("--interleaved", action="store_true", help="time speed only, detectors interleaved")
    parser.add_argument("--model", default=None, help="the embedding model for the accuracy column (default: the default)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    root = lfw_root(args.lfw)
    pairs = read_lfw_pairs(root / "pairsDevTest.txt")
    if args.limit:
        pairs = [p for p in pairs if p.same][: args.limit] + [p for p in pairs if not p.same][: args.limit]
    rels = sorted({p.path_a for p in pairs} | {p.path_b for p in pairs})
    images = [load_image(lfw_image_dir(root) / rel) for rel in rels]
    pipeline = FacePipeline(args.model, backend="onnx", detector="yunet", threads=args.threads)
    detectors = {"yunet-onet": YuNetOnetDetector(threads=args.threads), "yunet": pipeline.detector, "yunet-opencv": YuNetDetector(threads=args.threads, runtime="opencv"),
                 "mtcnn": Detector("cpu"), "mtcnn-onnx": OnnxMtcnnDetector(threads=args.threads), "hog": HogDetector()}
    labels_of = {"yunet-onet": "yunet-onet (the default: YuNet's faces, ONet's points)",
                 "yunet": "yunet (ONNX Runtime, its own points)", "yunet-opencv": "yunet on OpenCV's DNN (same network)", "mtcnn": "mtcnn (facenet-pytorch)",
                 "mtcnn-onnx": "mtcnn-onnx (ONNX Runtime cascade)", "hog": "hog (dlib)"}
    frames = make_frames(images, args.frames)
    labels = np.array([p.same for p in pairs])
    index = {rel: i for i, rel in enumerate(rels)}
    print(f"{len(images)} LFW pairsDevTest images ({len(pairs)} pairs), {len(frames)} 640x480 frames "
          f"({sum(len(r) for _, r in frames)} faces), {args.threads} thread(s), embedding model {pipeline.card.name} (onnx), "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.interleaved:
        for det in detectors.values():
            det.detect_one(frames[0][0])  # warm-up
        ms = interleaved(detectors, {"lfw": images[::8], "frame": [f for f, _ in frames]}, {"lfw": 1, "frame": 3})
        print(f"| detector | ms per LFW image (median of {len(images[::8])}) | MTCNN's time / this | "
              f"ms per 640x480 frame (median of {3 * len(frames)}) | MTCNN's time / this |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for kind in detectors:
            print(f"| {labels_of.get(kind, kind)} | {ms['lfw'][kind]:.1f} | {ms['lfw']['mtcnn'] / ms['lfw'][kind]:.1f}x | "
                  f"{ms['frame'][kind]:.1f} | {ms['frame']['mtcnn'] / ms['frame'][kind]:.1f}x |")
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
        return 0
    print(f"| detector | recall (LFW images) | pairsDevTest accuracy (10-fold) | ms per LFW image (median) | "
          f"ms per 640x480 frame (median) | faces found in frames | ms per LFW image, lists of {args.batch} (mean) | "
          f"ms per frame, lists of {args.batch} (mean) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    card_template = np.asarray(pipeline.card.template, np.float64)
    size = pipeline.embedder.input_size
    variants = [(labels_of.get(kind, kind), kind, det, None if kind == "hog" else det.template_for(card_template))
                for kind, det in detectors.items()]
    variants.insert(2, ("yunet, card template as is", "yunet", detectors["yunet"], card_template))
    for label, kind, det, template in variants:
        det.detect_one(images[0])  # warm-up
        times, crops, found_any = [], [], 0
        for image in images:
            t, found = timed_detect(det.detect_one, image)
            times.append(t)
            found_any += bool(found)
            if kind == "hog":
                chip = det.chip(image, found)
                if chip is not None and chip.shape[0] != pipeline.embedder.input_size:
                    chip = cv2.resize(chip, (pipeline.embedder.input_size,) * 2, interpolation=cv2.INTER_AREA)
            else:
                faces = select_faces(found, image.shape, "center")
                chip = align_face(image, faces[0].landmarks, template, size) if faces else None
            crops.append(chip if chip is not None else center_crop(image, pipeline.embedder.input_size))
        if found_any < len(images) / 2:
            raise PeerFailed(kind, f"found a face in only {found_any} of {len(images)} LFW images")
        vectors = pipeline.embed_crops(np.stack(crops))
        scores = np.array([vectors[index[p.path_a]] @ vectors[index[p.path_b]] for p in pairs])
        accuracy = kfold_accuracy(scores, labels, np.arange(len(pairs)) % 10).mean
        frame_times, hits = [], 0
        for frame, regions in frames:
            t, found = timed_detect(det.detect_one, frame)
            frame_times.append(t)
            centres = box_centres(found, kind)
            hits += sum(any(x <= cx <= x + w and y <= cy <= y + h for cx, cy in centres) for x, y, w, h in regions)
        total = sum(len(r) for _, r in frames)
        batched = ["-", "-"]
        if kind in ("mtcnn", "mtcnn-onnx"):  # they take lists of images
            batched = [f"{batch_ms(det.detect, list(group), args.batch):.1f}" for group in (images, [f for f, _ in frames])]
        print(f"| {label} | {found_any / len(images):.4f} ({found_any}/{len(images)}) | {accuracy:.4f} | "
              f"{statistics.median(times) * 1e3:.1f} | {statistics.median(frame_times) * 1e3:.1f} | {hits}/{total} | "
              f"{batched[0]} | {batched[1]} |", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
