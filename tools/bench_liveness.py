"""What liveness costs beside the rest of the front end, per face on one CPU thread.

    python tools/bench_liveness.py [--root LFW] [--faces 200] [--rounds 5]

On the centre face of the first ``--faces`` LFW pairsDevTest images, the median per-face milliseconds of YuNet
detection (the whole 250 x 250 image), alignment + the default model's embedding (ONNX Runtime), and liveness
(both MiniFASNet networks on their crops, softmax averaged), all at one thread, rounds alternating. Also the share
of those LFW faces judged live (they are photographs of live people, taken by press cameras: a bona fide sample
of another camera, not an attack set).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from faceverify.detect import YuNetDetector, select_faces
from faceverify.eval.pairs import lfw_image_dir, read_lfw_pairs
from faceverify.images import load_image
from faceverify.liveness import LivenessChecker
from faceverify.pipeline import FacePipeline
from tools.common import lfw_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=None)
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
    steps = {
        "detect (YuNet)": lambda: [detector.detect_one(im) for im in images],
        "align + embed": lambda: [pipeline.embed_crops(pipeline.align(im, [f])) for im, f in zip(images, faces)],
        "liveness (2 networks)": lambda: [checker.judge(im, [f]) for im, f in zip(images, faces)],
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
    for name, ms in times.items():
        print(f"  {name:24s} {statistics.median(ms):6.2f}")
    print(f"  judged live: {live:.1%} of these LFW photographs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
