"""dlib's own pipeline on faceverify's protocols, metrics and embedding cache, and the two pipelines side by side.

    python tools/peer_dlib_eval.py [--root LFW] [--protocol devtest|devtrain|view2] [--json]
    python tools/peer_dlib_eval.py --identify [--root LFW] [--json]
    python tools/peer_dlib_eval.py --side-by-side [--root LFW] [--protocol devtest] [--timing-images 100] [--rounds 3]

dlib's pipeline (tools/dlib_peer.DlibPipeline: HOG detector upsampling once, 5-point shape, 150 x 150 chip with
padding 0.25, ResNet descriptor) is wrapped to look like faceverify's FacePipeline, so faceverify.eval.evaluate runs
it unchanged: the same pair scoring (cosine of unit-length descriptors), threshold rules, metrics and reports.
When HOG finds no face the chip is the same fixed centre crop faceverify falls back to, counted in ``no_face``.
Descriptors are cached per image content under a model id naming both .dat files' hashes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import dlib
import numpy as np
import torch

from faceverify.align import center_crop
from faceverify.detect import Face, FaceChoice, select_faces
from faceverify._util import sha256_file
from faceverify.errors import BadInputError, FaceverifyError, NoFaceError, OperatingPointError
from faceverify.eval.cache import EmbeddingCache
from faceverify.eval.evaluate import PROTOCOL_FILES, FrontEnd, evaluate_identification, evaluate_lfw
from faceverify.eval.pairs import lfw_image_dir, read_lfw_pairs
from faceverify.eval.report import identification_lines, verification_lines
from faceverify.images import load_image
from faceverify.pipeline import Fallback, FaceEmbedding, FacePipeline, ImageResult
from tools.common import PeerFailed, lfw_root, progress_bar
from tools.dlib_peer import CHIP_PADDING, CHIP_SIZE, UPSAMPLE, DlibPipeline, dlib_models_dir

RECOGNIZER_FILE = "dlib_face_recognition_resnet_model_v1.dat"
PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"
OURS = "faceverify"
THEIRS = "dlib: HOG + 5-point shape + get_face_chip + dlib's ResNet"


@dataclass(frozen=True)
class PeerCard:
    """The model-card facts evaluation reads; dlib's pipeline has no calibrated thresholds."""

    name: str
    model_id: str
    embedding_size: int = 128
    thresholds: dict[str, float] = field(default_factory=dict)
    calibrated_detector: str | None = None

    def threshold_for(self, far: float) -> float:
        raise OperatingPointError(f"{self.name} has no calibrated thresholds")


class DlibFrontEnd:
    """DlibPipeline behind FacePipeline's ``card`` / ``process_paths`` interface, with unit-length descriptors.

    A found face comes back as a :class:`~faceverify.detect.Face` with dlib's box, HOG score and the 5 points
    of dlib's own shape (dlib's point order, not MTCNN's).
    """

    def __init__(self, models: Path | None = None):
        models = models or dlib_models_dir()
        self.dlib = DlibPipeline(models)
        digests = ":".join(sha256_file(models / name)[:16] for name in (RECOGNIZER_FILE, PREDICTOR_FILE))
        self.card = PeerCard("dlib-peer", f"dlib-peer:{digests}:hog-up{UPSAMPLE}:chip{CHIP_SIZE}-pad{CHIP_PADDING}")

    def detect(self, image: np.ndarray) -> list[Face]:
        """Every HOG detection (upsampling UPSAMPLE times) as a Face without landmarks."""
        rects, scores, _ = self.dlib.detector.run(image, UPSAMPLE)
        return [
            Face(np.array([r.left(), r.top(), r.right(), r.bottom()], np.float32), float(s), np.zeros((0, 2), np.float32))
            for r, s in zip(rects, scores)
        ]

    def chip(self, image: np.ndarray, choice: FaceChoice) -> tuple[Face | None, np.ndarray | None]:
        """The chosen face (select_faces: "largest" is DlibPipeline.shape's choice) and dlib's chip of it."""
        picked = select_faces(self.detect(image), image.shape, choice)
        if not picked:
            return None, None
        box = picked[0].box
        shape = self.dlib.predictor(image, dlib.rectangle(*(int(v) for v in box)))
        points = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
        return Face(box, picked[0].score, points), self.dlib.chip(image, shape)

    def process_paths(
        self, paths: Iterable[str | Path], face: FaceChoice = "largest", fallback: Fallback = "none", batch_size: int = 16
    ) -> Iterator[ImageResult]:
        """One result per path, in order; descriptors are computed a batch of chips at a time."""
        paths = list(paths)
        for start in range(0, len(paths), batch_size):
            found: list[tuple[str, Face | None, np.ndarray | None, BadInputError | None]] = []
            for path in paths[start : start + batch_size]:
                try:
                    image = load_image(path)
                except BadInputError as exc:
                    found.append((str(path), None, None, exc))
                    continue
                chosen, chip = self.chip(image, face)
                if chip is None and fallback == "center":
                    chip = center_crop(image, CHIP_SIZE)
                found.append((str(path), chosen, chip, None if chip is not None else NoFaceError(path)))
            vectors = self.dlib.descriptors([chip for _, _, chip, _ in found if chip is not None])
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            k = 0
            for path, chosen, chip, error in found:
                if chip is None:
                    yield ImageResult(path, [], error)
                    continue
                yield ImageResult(path, [FaceEmbedding(chosen, vectors[k])])
                k += 1


def seconds_per_image(front: FrontEnd, paths: list[Path], face: FaceChoice) -> float:
    """Uncached wall time per image of the whole pipeline (decode, detect, align, embed) over ``paths``."""
    start = time.perf_counter()
    for result in front.process_paths(paths, face, fallback="center"):
        if result.error is not None:
            raise result.error
    return (time.perf_counter() - start) / len(paths)


def interleaved_timing(fronts: dict[str, FrontEnd], paths: list[Path], face: FaceChoice, rounds: int) -> dict[str, float]:
    """Median seconds per image of each pipeline over ``rounds`` alternating rounds, after one short warm-up."""
    times: dict[str, list[float]] = {name: [] for name in fronts}
    for front in fronts.values():
        seconds_per_image(front, paths[:4], face)
    for _ in range(rounds):
        for name, front in fronts.items():
            times[name].append(seconds_per_image(front, paths, face))
    return {name: statistics.median(t) for name, t in times.items()}


def timing_sample(root: Path, count: int) -> list[Path]:
    """The first ``count`` distinct images of pairsDevTest, in file order."""
    pairs = read_lfw_pairs(root / PROTOCOL_FILES["devtest"])
    unique = list(dict.fromkeys(p for pair in pairs for p in (pair.path_a, pair.path_b)))
    return [lfw_image_dir(root) / p for p in unique[:count]]


def checked(report: dict[str, Any], front: FrontEnd) -> dict[str, Any]:
    """``report``, unless ``front`` found no face in any image (the figures would then be the centre crops', not
    the pipeline's): then PeerFailed."""
    if report["images"] and report["no_face"] == report["images"]:
        raise PeerFailed(front.card.name, f"no face found in any of the {report['images']} images")
    return report


def evaluate_both(
    front: FrontEnd, root: Path, protocol: str, face: FaceChoice
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verification on ``protocol`` and open-set identification, with ``front``'s own embedding cache."""
    cache = EmbeddingCache(front.card.model_id)
    with progress_bar() as start:
        verification = checked(evaluate_lfw(front, root, protocol, face, cache, progress=start), front)
        identification = checked(evaluate_identification(front, root, face, cache, progress=start), front)
    return verification, identification


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def markdown_table(rows: dict[str, tuple[dict[str, Any], dict[str, Any], float]], protocol: str) -> str:
    """One row per pipeline: verification and identification figures and seconds per image."""
    head = (f"| pipeline | {protocol} accuracy | AUC | EER | TAR@FAR=1e-3 | no_face (pairs) | rank-1 | DIR@FPIR=1% "
            f"| DIR@FPIR=10% | no_face (identification) | s/image |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, (ver, ident, seconds) in rows.items():
        accuracy = _pct(ver["accuracy"]) + (f" ± {_pct(ver['accuracy_std'])}" if ver["accuracy_std"] is not None else "")
        lines.append(
            f"| {name} | {accuracy} | {ver['auc']:.4f} | {_pct(ver['eer'])} | {_pct(ver['tar_at_far']['1e-3'])} "
            f"| {ver['no_face']} of {ver['images']} | {_pct(ident['rank1'])} | {_pct(ident['dir_at_fpir']['1e-2'])} "
            f"| {_pct(ident['dir_at_fpir']['1e-1'])} | {ident['no_face']} of {ident['images']} | {seconds:.3f} |"
        )
    return "\n".join(lines)


def side_by_side(root: Path, protocol: str, face: FaceChoice, timing_images: int, rounds: int) -> str:
    """Both pipelines on the same protocol, identification and timing sample, as a markdown table and notes."""
    ours = FacePipeline(device="cpu")
    label = f"{OURS}: {ours.detector.kind} + our alignment + {ours.card.name} (the defaults)"
    fronts: dict[str, FrontEnd] = {label: ours, THEIRS: DlibFrontEnd()}
    results = {name: evaluate_both(front, root, protocol, face) for name, front in fronts.items()}
    paths = timing_sample(root, timing_images)
    seconds = interleaved_timing(fronts, paths, face, rounds)
    table = markdown_table({name: (*results[name], seconds[name]) for name in fronts}, protocol)
    notes = [
        f"protocol {protocol} (threshold: {results[label][0]['threshold_source']}), identification "
        f"{results[label][1]['protocol']}, face choice {face}; no face: fixed centre crop, counted",
        f"s/image: median of {rounds} interleaved uncached rounds over the first {len(paths)} distinct "
        f"{PROTOCOL_FILES['devtest']} images (decode + detect + align + embed, CPU, {torch.get_num_threads()} torch "
        f"threads); faceverify's time per image is {seconds[label] / seconds[THEIRS]:.2f}x dlib's",
    ]
    return table + "\n\n" + "\n".join(f"- {n}" for n in notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="LFW root (default: $FACEVERIFY_LFW or the shared copy)")
    parser.add_argument("--protocol", choices=sorted(PROTOCOL_FILES), default="devtest")
    parser.add_argument("--face", choices=["center", "largest"], default="center")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--identify", action="store_true", help="open-set identification on peopleDevTest")
    mode.add_argument("--side-by-side", action="store_true", help="faceverify and dlib in one markdown table")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--timing-images", type=int, default=100, help="images timed per round (side by side)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (side by side)")
    args = parser.parse_args(argv)
    try:
        root = lfw_root(args.root, "--root")
        if args.side_by_side:
            print(side_by_side(root, args.protocol, args.face, args.timing_images, args.rounds))
            return 0
        front = DlibFrontEnd()
        cache = EmbeddingCache(front.card.model_id)
        with progress_bar() as start:
            if args.identify:
                report = checked(evaluate_identification(front, root, args.face, cache, progress=start), front)
                lines = identification_lines(report)
            else:
                report = checked(evaluate_lfw(front, root, args.protocol, args.face, cache, progress=start), front)
                lines = verification_lines(report)
    except FaceverifyError as exc:
        print(f"peer_dlib_eval: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report) if args.json else "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
