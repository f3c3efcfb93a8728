"""Embedding throughput on identical chips: faceverify's Embedder (torch, and the ONNX export on ONNX Runtime)
against dlib's compute_face_descriptor.

    python tools/bench_embed.py [--root LFW] [--chips 256] [--rounds 5] [--threads 2] [--batch 32] [--json]

The network is dlib-resnet-v1 (our port of the network dlib runs, so that the two compute the same thing), at
batch 1 and ``--batch`` on torch and on ONNX Runtime. Its GFLOP per face (torch's FlopCounterMode, a
multiply-add counted as 2) times faces/s, over a 2048 x 2048 float32 matmul's GFLOP/s measured in the same run at
the same threads, is the share of this machine's fp32 rate each runner reaches.

The chips are dlib's own (HOG, 5-point shape, get_face_chip 150 x 150) of the first images of LFW peopleDevTest,
so all see the same input. Rounds alternate between them (torch, onnx, dlib, torch, ...) after a warm-up, and the median faces/second of each is reported with the ratio ours / dlib. The largest descriptor
difference (cosine) between the two on these chips is printed as a parity check.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from faceverify.embed import Embedder, OnnxEmbedder
from faceverify.eval.pairs import lfw_image_dir, lfw_image_path, read_lfw_people
from faceverify.images import load_image
from tools.common import PeerFailed, lfw_root
from tools.dlib_peer import DlibPipeline


def dlib_chips(dlib_pipeline: DlibPipeline, root: Path, count: int) -> np.ndarray:
    """dlib's chips of the first ``count`` peopleDevTest images (in file order) where HOG finds a face."""
    images = lfw_image_dir(root)
    chips: list[np.ndarray] = []
    for name, n in read_lfw_people(root / "peopleDevTest.txt"):
        for i in range(1, n + 1):
            image = load_image(images / lfw_image_path(name, i))
            shape = dlib_pipeline.shape(image)
            if shape is not None:
                chips.append(dlib_pipeline.chip(image, shape))
            if len(chips) == count:
                return np.stack(chips)
    raise PeerFailed("dlib", f"HOG found only {len(chips)} faces in peopleDevTest, {count} wanted")


def faces_per_second(run: Callable[[], np.ndarray], count: int) -> float:
    """Faces per second of one call of ``run`` on ``count`` chips."""
    start = time.perf_counter()
    run()
    return count / (time.perf_counter() - start)


def gflop_per_face(embedder: Embedder) -> float:
    """GFLOP of one face through the torch network (a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    size = embedder.input_size
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        embedder.network(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def matmul_gflops(rounds: int = 5, n: int = 2048) -> float:
    """This machine's fp32 rate at torch's current threads: the best of ``rounds`` n x n matmuls, GFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(timed(lambda: torch.mm(a, b)) for _ in range(rounds))
    return 2 * n**3 / best / 1e9


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="LFW root (default: $FACEVERIFY_LFW or the shared copy)")
    parser.add_argument("--model", default="dlib-resnet-v1", help="faceverify model name (dlib's network: the "
                        "parity check compares with dlib's descriptors)")
    parser.add_argument("--chips", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--batch", type=int, default=32, help="our batch size")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    peer = DlibPipeline()
    chips = dlib_chips(peer, lfw_root(args.root, "--root"), args.chips)
    embedder = Embedder.load(args.model, "cpu")
    onnx = OnnxEmbedder.load(args.model, threads=args.threads)
    runners: dict[str, Callable[[], np.ndarray]] = {
        "faceverify": lambda: embedder.embed(chips, batch_size=args.batch),
        "onnx": lambda: onnx.embed(chips, batch_size=args.batch),
        "faceverify batch 1": lambda: embedder.embed(chips[:32], batch_size=1),
        "onnx batch 1": lambda: onnx.embed(chips[:32], batch_size=1),
        "dlib": lambda: peer.descriptors(list(chips)),
    }
    counts = {name: 32 if name.endswith("batch 1") else len(chips) for name in runners}
    outputs = {name: run() for name, run in runners.items()}  # warm-up, and the parity check
    theirs = outputs["dlib"] / np.linalg.norm(outputs["dlib"], axis=1, keepdims=True)
    worst_cosine = float((outputs["faceverify"] * theirs).sum(1).min())
    worst_onnx = float((outputs["faceverify"] * outputs["onnx"]).sum(1).min())
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            rates[name].append(faces_per_second(run, counts[name]))
    median = {name: statistics.median(r) for name, r in rates.items()}
    gflop, machine_rate = gflop_per_face(embedder), matmul_gflops()
    share = {name: gflop * rate / machine_rate for name, rate in median.items() if name != "dlib"}
    result = dict(
        chips=len(chips),
        rounds=args.rounds,
        torch_threads=torch.get_num_threads(),
        batch=args.batch,
        faces_per_second=median,
        all_rounds=rates,
        ratio=median["faceverify"] / median["dlib"],
        onnx_ratio=median["onnx"] / median["dlib"],
        worst_cosine_to_dlib=worst_cosine,
        worst_cosine_onnx_to_torch=worst_onnx,
        gflop_per_face=gflop,
        matmul_gflops=machine_rate,
        share_of_fp32_rate=share,
        machine=f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
    )
    if args.json:
        print(json.dumps(result))
        return 0
    for name, rate in median.items():
        used = f"; {share[name]:.0%} of the fp32 rate" if name in share else ""
        print(f"{name:<18} {rate:7.1f} faces/s (median of {args.rounds}: {', '.join(f'{r:.1f}' for r in rates[name])}){used}")
    print(f"network     {gflop:.3f} GFLOP per face; 2048 x 2048 fp32 matmul {machine_rate:.1f} GFLOP/s at "
          f"{torch.get_num_threads()} threads")
    print(f"ratio       {result['ratio']:.2f}x (faceverify / dlib), {len(chips)} chips, batch {args.batch}, "
          f"{result['torch_threads']} torch threads; worst cosine to dlib {worst_cosine:.7f}")
    print(f"onnx ratio  {result['onnx_ratio']:.2f}x (onnx / dlib); worst cosine onnx to torch {worst_onnx:.7f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
