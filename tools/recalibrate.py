"""`faceverify calibrate` for a pinned front end: the same calibration (faceverify.eval.calibrate) written into the
same card, with the detector and runtime named instead of left to the pipeline's defaults.

    python tools/recalibrate.py --detector mtcnn --backend torch [--model NAME] [--lfw LFW] [--dry-run]

Only the card's ``thresholds`` and ``calibration`` change (weights, and so their sha256, are untouched); the
calibration record names the front end it was measured with.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from faceverify.embed import resolve_card
from faceverify.eval.cache import EmbeddingCache
from faceverify.eval.calibrate import calibrate_on_lfw
from faceverify.pipeline import FacePipeline
from tools.common import lfw_root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--lfw", type=Path, default=None, help="LFW root (default: $FACEVERIFY_LFW or the shared copy)")
    ap.add_argument("--detector", required=True)
    ap.add_argument("--backend", required=True)
    ap.add_argument("--dry-run", action="store_true", help="print the record, leave the card alone")
    args = ap.parse_args(argv)
    pipeline = FacePipeline(args.model, "cpu", detector=args.detector, backend=args.backend)
    thresholds, record = calibrate_on_lfw(pipeline, lfw_root(args.lfw), cache=EmbeddingCache(pipeline.card.model_id))
    record.update(front_end=f"{args.detector} detector, {args.backend} runtime",
                  command=f"python tools/recalibrate.py --detector {args.detector} --backend {args.backend}")
    if not args.dry_run:
        card, path = resolve_card(args.model)
        card.thresholds = thresholds
        card.calibration = record
        card.save(path)
        print(f"written to {path}")
    print(json.dumps(dict(thresholds=thresholds, bounds=record["bounds"]["thresholds"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
