"""`faceverify calibrate` for a pinned front end: the same calibration (faceverify.eval.calibrate) written into the
same card, with the detector and runtime named instead of left to the pipeline's defaults.

    python tools/recalibrate.py --detector yunet-onet --backend onnx [--main] [--model NAME] [--lfw LFW] [--dry-run]
    python tools/recalibrate.py --faces [--cache DIR ...] [--model NAME]    # MTCNN detections of face caches

With ``--faces`` no detector runs: the faces are the MTCNN detections that `faceverify prepare` stored in the face
caches (default: faces/lfw-peopleDevTrain under the user cache dir), aligned onto the model's own template, on the
torch runtime: the same detections for every model, as in tools/compare_models.py. Only the card's
``thresholds`` and ``calibration`` change, or the detector's entry in ``calibrations`` when the card's main
calibration names another detector (ModelCard.with_calibration); weights, and so their sha256, are untouched.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from faceverify.embed import Embedder
from faceverify.modelcard import resolve_card
from faceverify.eval.cache import EmbeddingCache
from faceverify.eval.calibrate import calibrate_on_lfw
from faceverify.pipeline import FacePipeline
from faceverify.train.prepare import FaceCache, default_cache_root
from faceverify.train.validate import CachedFrontEnd
from tools.common import lfw_root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--lfw", type=Path, default=None, help="LFW root (default: $FACEVERIFY_LFW or the shared copy)")
    ap.add_argument("--detector", help="live detector (yunet or mtcnn); required without --faces")
    ap.add_argument("--backend", help="runtime (torch or onnx); required without --faces")
    ap.add_argument("--faces", action="store_true", help="the face caches' MTCNN detections instead of a detector")
    ap.add_argument("--cache", type=Path, action="append", default=None, help="face cache for --faces (repeatable)")
    ap.add_argument("--main", action="store_true", help="make this the card's main calibration (the default "
                    "front end's), the old main one kept beside it")
    ap.add_argument("--dry-run", action="store_true", help="print the record, leave the card alone")
    args = ap.parse_args(argv)
    if args.faces:
        caches = [FaceCache(d) for d in args.cache or [default_cache_root() / "lfw-peopleDevTrain"]]
        front = CachedFrontEnd(Embedder.load(args.model, "cpu"), caches)
        front_end = dict(detector="mtcnn", faces=f"MTCNN detections of face caches ({', '.join(c.dir.name for c in caches)})",
                         alignment="the card's template", runtime="torch")
        command = "python tools/recalibrate.py --faces"
    elif args.detector and args.backend:
        front = FacePipeline(args.model, "cpu", detector=args.detector, backend=args.backend)
        front_end = front.front_end()
        command = f"python tools/recalibrate.py --detector {args.detector} --backend {args.backend}"
    else:
        ap.error("give --detector and --backend, or --faces")
    model_id = front.card.model_id
    thresholds, record = calibrate_on_lfw(front, lfw_root(args.lfw), cache=EmbeddingCache(model_id))  # type: ignore[arg-type]
    record.update(command=command + (f" --model {args.model}" if args.model else ""))
    if not args.dry_run:
        card, path = resolve_card(args.model)
        card.with_calibration(front_end, thresholds, record, main=args.main).save(path)
        print(f"written to {path}")
    print(json.dumps(dict(thresholds=thresholds, bounds=record["bounds"]["thresholds"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
