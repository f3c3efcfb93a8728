"""Flip fusion against plain embeddings on one front end: LFW pairsDevTest (threshold from pairsDevTrain), View 2
(10-fold) and DevTest open-set identification, with identify's default point, through the product's evaluation
functions (the same as `faceverify evaluate lfw|identify`).

    python tools/bench_flip.py [--detector yunet|mtcnn] [--backend onnx|torch] [--lfw LFW]

Prints one JSON line per setting (plain, then --flip); both must complete, or it exits 1.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from faceverify.eval.cache import EmbeddingCache
from faceverify.eval.evaluate import evaluate_identification, evaluate_lfw
from faceverify.pipeline import FacePipeline
from tools.common import lfw_root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", default="yunet")
    ap.add_argument("--backend", default="onnx")
    ap.add_argument("--lfw", type=Path, default=None)
    args = ap.parse_args(argv)
    root = lfw_root(args.lfw)
    rows = []
    for flip in (False, True):
        pipeline = FacePipeline(threads=1, flip=flip, detector=args.detector, backend=args.backend)
        cache = EmbeddingCache(pipeline.card.model_id)
        start = time.perf_counter()
        dev = evaluate_lfw(pipeline, root, "devtest", cache=cache)
        view2 = evaluate_lfw(pipeline, root, "view2", cache=cache)
        ident = evaluate_identification(pipeline, root, cache=cache)
        rows.append(dict(detector=args.detector, backend=args.backend, flip=flip, devtest_acc=dev["accuracy"],
                         devtest_auc=dev.get("auc"), view2=view2["accuracy"], view2_std=view2.get("accuracy_std"),
                         rank1=ident.get("rank1"), dir_at_fpir=ident.get("dir_at_fpir"),
                         default_point=ident.get("default_point"), seconds=time.perf_counter() - start))
        print(json.dumps(rows[-1], default=str), flush=True)
    return 0 if len(rows) == 2 and all(r["devtest_acc"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
