"""What liveness costs beside the rest of the front end, per face on one CPU thread.

    python tools/bench_liveness.py [--root LFW] [--weights DIR] [--faces 200] [--rounds 5]

On the centre face of the first ``--faces`` LFW pairsDevTest images, the median per-face milliseconds of YuNet
detection (the whole 250 x 250 image), alignment + the default model's embedding (ONNX Runtime), and liveness
(both MiniFASNet networks on their crops, softmax averaged), all at one thread, rounds alternating. The peer is
the same two networks in PyTorch (the authors' framework: the released state dicts in ``--weights``, loaded into
:mod:`faceverify.networks.minifasnet` as the importer does) on the same crops; it must agree with the shipped
ONNX files on every face (softmax within 1e-4), else the tool stops. Also the share of those LFW faces judged
live (they are photographs of live people, taken by press cameras: a bona fide sample of another camera, not an
attack set).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from faceverify.detect import YuNetDetector, select_faces
from faceverify.eval.pairs import lfw_image_dir, read_lfw_pairs
from faceverify.images import load_image
from faceverify.liveness import LivenessChecker
from faceverify.liveness.checker import network_input
from faceverify.liveness.crop import xywh
from faceverify.pipeline import FacePipeline
from tools.common import DEV_MINIFASNET, lfw_root


def torch_peer(weights: Path, checker: LivenessChecker) -> Callable[[np.ndarray, list], np.ndarray]:
    """The card's networks in PyTorch at one thread, built from the released state dicts: (image, boxes) -> the
    averaged softmax, on the checker's own crops."""
    try:
        import torch
    except ImportError:
        raise SystemExit("error: the peer needs torch (pip install '.[train]')") from None
    from faceverify.networks.minifasnet import minifasnet_from_state

    torch.set_num_threads(1)
    networks = []
    for net in checker.card.networks:
        path = weights / str(net["source_file"])
        if not path.is_file():
            raise SystemExit(f"error: {path}: the peer's state dict is not here (--weights)")
        networks.append((minifasnet_from_state(torch.load(path, map_location="cpu", weights_only=True)), net))

    def run(image: np.ndarray, boxes: list) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for network, net in networks:
                x = torch.from_numpy(network_input(image, boxes, net))
                out.append(torch.softmax(network(x), dim=1).numpy())
        return np.mean(out, axis=0)

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--weights", type=Path, default=DEV_MINIFASNET, help="the MiniFASNet .pth files (the peer)")
    parser.add_argument("--faces", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    root = lfw_root(args.root)
    rels = sorted({r for p in read_lfw_pairs(root / "pairsDevTest.txt") for r in (p.path_a, p.path_b)})
    detector, checker = YuNetDetector(threads=1), LivenessChecker.load(threads=1)
    pipeline = FacePipeline(backend="onnx", detector="yunet-onet", threads=1)
    images, faces = [], []
    for rel in rels:
        image = load_image(lfw_image_dir(root) / rel)
        found = select_faces(detector.detect_one(image), image.shape, "center")
        if found:
            images.append(image)
            faces.append(found[0])
        if len(images) == args.faces:
            break
    peer = torch_peer(args.weights, checker)
    boxes = [[xywh(f.box)] for f in faces]
    ours = np.concatenate([checker.probabilities(im, b) for im, b in zip(images, boxes)])
    theirs = np.concatenate([peer(im, b) for im, b in zip(images, boxes)])
    if np.abs(ours - theirs).max() > 1e-4:
        raise SystemExit(f"error: the PyTorch peer disagrees with the shipped networks ({np.abs(ours - theirs).max():.1e})")
    steps = {
        "detect (YuNet)": lambda: [detector.detect_one(im) for im in images],
        "align + embed": lambda: [pipeline.embed_crops(pipeline.align(im, [f])) for im, f in zip(images, faces)],
        "liveness (2 networks)": lambda: [checker.judge(im, [f]) for im, f in zip(images, faces)],
        "liveness, PyTorch peer": lambda: [peer(im, b) for im, b in zip(images, boxes)],
    }
    for step in steps.values():
        step()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            t = time.perf_counter()
            step()
            times[name].append((time.perf_counter() - t) / len(images) * 1000)
    live = np.mean([checker.judge(im, [f])[0].live for im, f in zip(images, faces)])
    print(f"{len(images)} LFW faces, one thread, median of {args.rounds} rounds (ms per face):")
    medians = {name: statistics.median(ms) for name, ms in times.items()}
    for name, ms in medians.items():
        print(f"  {name:24s} {ms:6.2f}")
    print(f"  liveness / PyTorch peer: {medians['liveness (2 networks)'] / medians['liveness, PyTorch peer']:.2f}x "
          f"(same crops, softmax within {np.abs(ours - theirs).max():.1e})")
    print(f"  judged live: {live:.1%} of these LFW photographs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
