"""Several models on the same LFW protocols and the same detected, aligned faces, in one run.

    python tools/compare_models.py dlib-resnet-v1 faceverify-mobile [--identify [--match best]] [--speed] [--cache DIR ...] [--json]

Faces come from face caches written by `faceverify prepare` (the shipped detector and alignment, run once), so
every model sees exactly the same detections; any image not in a cache goes through the live front end. The
scoring is `faceverify evaluate`'s: threshold chosen on pairsDevTrain, accuracy reported on pairsDevTest, and
with --identify the open-set identification of peopleDevTest, including what `identify` does by default;
with --speed the network's throughput on the same 256 cached faces (each model at its own crop size, rounds
interleaved between models, median faces/second; torch's thread count as set by --threads).
Default caches (under the user cache dir): faces/lfw-peopleDevTrain, faces/lfw-pairsDevTest and, for
--identify, faces/lfw-peopleDevTest:

    faceverify prepare $LFW --people $LFW/peopleDevTrain.txt
    faceverify prepare $LFW --pairs $LFW/pairsDevTest.txt
    faceverify prepare $LFW --people $LFW/peopleDevTest.txt     # for --identify
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from faceverify.decision import DEFAULT_MATCH, MATCHES
from faceverify.embed import Embedder
from faceverify.eval.evaluate import evaluate_identification, evaluate_lfw
from faceverify.train.prepare import FaceCache, default_cache_root
from faceverify.train.validate import CachedFrontEnd
from tools.common import lfw_root

DEFAULT_CACHES = ("lfw-peopleDevTrain", "lfw-pairsDevTest", "lfw-peopleDevTest")


def compare(models: list[str], root: Path, caches: list[FaceCache], identify: bool, match: str = DEFAULT_MATCH) -> list[dict]:
    """One row of figures per model: DevTest verification and, with ``identify``, open-set identification."""
    rows = []
    for name in models:
        front = CachedFrontEnd(Embedder.load(name, "cpu"), caches)
        test = evaluate_lfw(front, root, "devtest")
        row = dict(model=name, model_id=front.card.model_id, devtest=test["accuracy"], auc=test["auc"],
                   eer=test["eer"], threshold=test["threshold"], no_face=test["no_face"])
        if identify:
            ident = evaluate_identification(front, root, match=match)
            row.update(rank1=ident["rank1"], dir_1=ident["dir_at_fpir"]["1e-2"], default_point=ident.get("default_point"))
        rows.append(row)
    return rows


def speed(models: list[str], cache: FaceCache, count: int = 256, rounds: int = 5) -> dict[str, float]:
    """Median faces/second of each model's network on the same ``count`` faces, rounds interleaved."""
    embedders = {name: Embedder.load(name, "cpu") for name in models}
    crops = {name: np.array(cache.crops(e.input_size)[:count]) for name, e in embedders.items()}
    rates: dict[str, list[float]] = {name: [] for name in models}
    for k in range(rounds + 1):  # the first round warms up and is not counted
        for name, e in embedders.items():
            start = time.perf_counter()
            e.embed(crops[name], batch_size=32)
            if k:
                rates[name].append(count / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def table(rows: list[dict]) -> str:
    """The rows of :func:`compare` (and :func:`speed`) as a markdown table."""
    identify = "rank1" in rows[0]
    head = "| model | pairsDevTest accuracy | AUC | EER | threshold (from pairsDevTrain) |"
    head += " rank-1 | DIR@FPIR=1% | identify's default: threshold, measured FPIR, DIR |" if identify else ""
    head += " faces/s (network) |" if "faces_per_s" in rows[0] else ""
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        line = f"| {r['model']} | {100 * r['devtest']:.2f}% | {r['auc']:.4f} | {100 * r['eer']:.2f}% | {r['threshold']:.4f} |"
        if identify:
            d = r["default_point"]
            point = "-" if d is None else f"{d['threshold']:.4f}, {100 * d['fpir']:.2f}%, {100 * d['dir']:.2f}%"
            line += f" {100 * r['rank1']:.2f}% | {100 * r['dir_1']:.2f}% | {point} |"
        if "faces_per_s" in r:
            line += f" {r['faces_per_s']:.1f} |"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--lfw", type=Path, default=None, help="LFW root (default: $FACEVERIFY_LFW or the shared copy)")
    ap.add_argument("--cache", type=Path, action="append", default=None, help="face cache (repeatable)")
    ap.add_argument("--identify", action="store_true", help="also open-set identification on peopleDevTest")
    ap.add_argument("--match", choices=MATCHES, default=DEFAULT_MATCH, help="identification against identity "
                    "templates or every embedding (default: identify's)")
    ap.add_argument("--speed", action="store_true", help="also each network's faces/second on the same faces")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    root = lfw_root(args.lfw)
    dirs = args.cache or [default_cache_root() / c for c in DEFAULT_CACHES]
    caches = [FaceCache(d) for d in dirs if (d / "meta.json").exists()]
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = compare(args.models, root, caches, args.identify, args.match)
    if args.speed:
        rates = speed(args.models, caches[-1])
        for r in rows:
            r["faces_per_s"] = rates[r["model"]]
    print(json.dumps(rows) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
