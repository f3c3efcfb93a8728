"""Several models (and score fusions of them) on the same LFW protocols and the same detected faces, in one run.

    python tools/compare_models.py dlib-resnet-v1 edgeface-xs [--fuse dlib-resnet-v1+edgeface-xs] [--view2]
        [--identify [--match best]] [--variants tight,low-res,greyscale,sunglasses,shadow,mask [--against M]]
        [--speed] [--cache DIR ...] [--json]

Faces come from face caches written by `faceverify prepare` (MTCNN and the shipped selection, run once): a model
whose crop geometry a cache holds reads its crops, any other model aligns the cached landmarks onto its own
template, so every model sees exactly the same detections; an image in no cache goes through the live front end.
Embeddings of the unchanged images are kept in each model's evaluation cache (the one tools/recalibrate.py --faces
fills), so a rerun embeds nothing twice.
The scoring is `faceverify evaluate`'s: threshold chosen on pairsDevTrain, accuracy, AUC and EER reported on
pairsDevTest; --view2 adds View 2's 10-fold accuracy and TAR at FAR 1e-2 and 1e-3 on its 3000 impostor pairs;
--identify the open-set identification of peopleDevTest, including what `identify` does by default (from each
card's calibration). --fuse A+B adds a row for the score fusion of A and B (tools/score_fusion.py, calibrated on
DevTrain in the run). --variants adds pairsDevTest accuracy by the 10-fold rule within it (threshold chosen on
the other nine folds), on the images as they are and on degraded copies built on the fly from the same
detections (tools/lfw_variants.py); --against M pairs every row's decisions of those pairs with M's (pairs it
gets right where M errs and the reverse, with an exact McNemar test). --speed measures each network on ONNX
Runtime (the CPU default) at 1 and 2 threads on the same 256 cached faces (rounds interleaved between models,
median faces/second; a fusion runs both of its networks).
Default caches (under the user cache dir): faces/lfw-peopleDevTrain, faces/lfw-pairsDevTest and
faces/lfw-peopleDevTest (for --identify and --view2: DevTrain and DevTest people hold every LFW image):

    faceverify prepare $LFW --people $LFW/peopleDevTrain.txt
    faceverify prepare $LFW --pairs $LFW/pairsDevTest.txt
    faceverify prepare $LFW --people $LFW/peopleDevTest.txt     # for --identify and --view2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np
import torch
from scipy.stats import binomtest

from faceverify.decision import DEFAULT_MATCH, MATCHES
from faceverify.embed import Embedder, OnnxEmbedder
from faceverify.eval.cache import EmbeddingCache
from faceverify.eval.evaluate import PROTOCOL_FILES, evaluate_identification, evaluate_lfw, score_pairs
from faceverify.eval.metrics import kfold_accuracy
from faceverify.eval.pairs import lfw_image_dir, read_lfw_pairs
from faceverify.train.prepare import FaceCache, default_cache_root
from faceverify.train.validate import CachedFrontEnd
from tools.common import lfw_root
from tools.lfw_variants import VARIANTS
from tools.score_fusion import FusedFrontEnd, fuse

DEFAULT_CACHES = ("lfw-peopleDevTrain", "lfw-pairsDevTest", "lfw-peopleDevTest")
THREADS = (1, 2)
Front = Union[CachedFrontEnd, FusedFrontEnd]


def figures(front: Front, root: Path, view2: bool, identify: bool, match: str, cache: EmbeddingCache | None
            ) -> dict[str, Any]:
    """One row: pairsDevTest verification, and View 2 and open-set identification when asked."""
    test = evaluate_lfw(front, root, "devtest", cache=cache)
    row = dict(model=front.card.name, model_id=front.card.model_id, devtest=test["accuracy"], auc=test["auc"],
               eer=test["eer"], threshold=test["threshold"], no_face=test["no_face"])
    if view2:
        v2 = evaluate_lfw(front, root, "view2", cache=cache)
        row.update(view2=v2["accuracy"], view2_std=v2["accuracy_std"], view2_auc=v2["auc"], tar=v2["tar_at_far"])
    if identify:
        ident = evaluate_identification(front, root, cache=cache, match=match)
        row.update(rank1=ident["rank1"], dir_1=ident["dir_at_fpir"]["1e-2"], default_point=ident.get("default_point"))
    return row


def variant_store(model_id: str, variant: str) -> EmbeddingCache:
    """The evaluation cache of a model's embeddings of one variant (apart from those of the unchanged images)."""
    return EmbeddingCache(f"{model_id}|variant:{variant}")


def devtest_kfold(front: Front, root: Path, cache: EmbeddingCache | None) -> tuple[float, np.ndarray]:
    """pairsDevTest accuracy by the 10-fold rule within it (folds: pair index mod 10, 50 + 50 pairs each), and
    which pairs were decided right (each at its fold's threshold)."""
    pairs = read_lfw_pairs(root / PROTOCOL_FILES["devtest"])
    scored = score_pairs(front, pairs, lfw_image_dir(root), "center", cache, None, "pairsDevTest")
    return kfold_decisions(scored.scores, scored.labels, np.arange(len(pairs)) % 10)


def kfold_decisions(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> tuple[float, np.ndarray]:
    """The 10-fold rule's accuracy (folds numbered 0..k-1) and whether each pair was decided right at the threshold
    its fold got from the others."""
    result = kfold_accuracy(scores, labels, folds)
    return result.mean, (np.asarray(scores) >= result.thresholds[folds]) == np.asarray(labels, bool)


def paired_against(rows: list[dict], rights: dict[tuple[str, str], np.ndarray], against: str) -> None:
    """Add to each row, for each 10-fold column, the pairs it decides right where ``against`` errs (``better``),
    the reverse (``worse``) and the exact two-sided McNemar p-value of that split (a binomial test at 1/2)."""
    for row in rows:
        paired: dict[str, Any] = {"against": against}
        for column in (k for k in row if k.startswith("kfold")):
            mine, theirs = rights[row["model"], column], rights[against, column]
            better, worse = int((mine & ~theirs).sum()), int((~mine & theirs).sum())
            p = binomtest(min(better, worse), better + worse, 0.5).pvalue if better + worse else 1.0
            paired[column] = dict(better=better, worse=worse, p=float(p))
        row["paired"] = paired


def compare(models: list[str], fusions: list[str], root: Path, caches: list[FaceCache], view2: bool = False,
            identify: bool = False, match: str = DEFAULT_MATCH, variants: tuple[str, ...] = (),
            against: str | None = None) -> list[dict]:
    """One row of figures per model and per fusion (``A+B``), all on the same detections; with ``against`` (one
    of them) and ``variants``, each row's paired comparison with it (:func:`paired_against`)."""
    names = list(dict.fromkeys([*models, *(m for f in fusions for m in f.split("+"))]))
    embedders = {name: Embedder.load(name, "cpu") for name in names}
    fronts = {name: CachedFrontEnd(e, caches) for name, e in embedders.items()}
    stores = {name: EmbeddingCache(e.card.model_id) for name, e in embedders.items()}
    fused = {f: fuse([fronts[m] for m in f.split("+")], root, [stores[m] for m in f.split("+")]) for f in fusions}
    degraded = {(v, m): CachedFrontEnd(e, caches, VARIANTS[v]) for v in variants for m, e in embedders.items()}
    vstores = {(v, m): variant_store(e.card.model_id, v) for v, m in degraded for e in [embedders[m]]}
    rows, rights = [], {}
    for name in [*models, *fusions]:
        front: Front = fused[name] if name in fused else fronts[name]
        row = figures(front, root, view2, identify, match, None if name in fused else stores[name])
        if variants:
            row["kfold"], rights[name, "kfold"] = devtest_kfold(front, root, None if name in fused else stores[name])
        for variant in variants:
            parts, kept = [degraded[variant, m] for m in name.split("+")], [vstores[variant, m] for m in name.split("+")]
            vfront = fused[name].with_fronts(parts, kept) if name in fused else parts[0]
            column = f"kfold_{variant}"
            row[column], rights[name, column] = devtest_kfold(vfront, root, None if name in fused else kept[0])
        rows.append(row)
    if against is not None and variants:
        paired_against(rows, rights, against)
    return rows


def speed(models: list[str], cache: FaceCache, threads: int, count: int = 256, rounds: int = 5) -> dict[str, float]:
    """Median faces/second of each model's ONNX export at ``threads`` on the same ``count`` faces."""
    runtimes = {name: OnnxEmbedder.load(name, threads) for name in models}
    base = np.array(cache.crops(max(cache.geometries))[:count])
    crops = {name: np.stack([cv2.resize(c, (e.input_size,) * 2, interpolation=cv2.INTER_AREA) for c in base])
             for name, e in runtimes.items()}
    rates: dict[str, list[float]] = {name: [] for name in models}
    for k in range(rounds + 1):  # the first round warms up and is not counted
        for name, e in runtimes.items():
            start = time.perf_counter()
            e.embed(crops[name], batch_size=32)
            if k:
                rates[name].append(count / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def add_speed(rows: list[dict], cache: FaceCache) -> None:
    """faces/s at each of THREADS in every row; a fusion's is that of running its networks one after the other."""
    names = list(dict.fromkeys(m for r in rows for m in r["model"].split("+")))
    for threads in THREADS:
        rates = speed(names, cache, threads)
        for r in rows:
            r[f"faces_per_s_{threads}"] = 1 / sum(1 / rates[m] for m in r["model"].split("+"))


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def table(rows: list[dict]) -> str:
    """The rows of :func:`compare` as a markdown table (columns for the figures the rows have)."""
    r0 = rows[0]
    cols: list[tuple[str, Any]] = [("model", lambda r: r["model"]), ("pairsDevTest accuracy", lambda r: pct(r["devtest"]))]
    cols += [(f"pairsDevTest 10-fold{' ' + k[6:] if k != 'kfold' else ''}", lambda r, k=k: pct(r[k]))
             for k in r0 if k.startswith("kfold")]
    cols += [("AUC", lambda r: f"{r['auc']:.4f}"), ("EER", lambda r: pct(r["eer"])),
             ("threshold (pairsDevTrain)", lambda r: f"{r['threshold']:.4f}")]
    if "view2" in r0:
        cols += [("View 2 (10-fold)", lambda r: f"{100 * r['view2']:.2f} ± {100 * r['view2_std']:.2f}%"),
                 ("View 2 AUC", lambda r: f"{r['view2_auc']:.4f}"),
                 ("View 2 TAR@FAR=1e-2 / 1e-3", lambda r: f"{pct(r['tar']['1e-2'])} / {pct(r['tar']['1e-3'])}")]
    if "rank1" in r0:
        def point(r: dict) -> str:
            d = r["default_point"]
            return "-" if d is None else f"{d['threshold']:.4f}, {pct(d['fpir'])}, {pct(d['dir'])}"
        cols += [("rank-1", lambda r: pct(r["rank1"])), ("DIR@FPIR=1%", lambda r: pct(r["dir_1"])),
                 ("identify's default: threshold, FPIR, DIR", point)]
    cols += [(f"faces/s ({t} thread{'s' if t > 1 else ''})", lambda r, t=t: f"{r[f'faces_per_s_{t}']:.1f}")
             for t in THREADS if f"faces_per_s_{t}" in r0]
    lines = ["| " + " | ".join(c for c, _ in cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(f(r) for _, f in cols) + " |" for r in rows]
    if "paired" in r0:
        columns = [k for k in r0["paired"] if k != "against"]
        lines += ["", f"Paired with {r0['paired']['against']} (pairs right where it errs / wrong where it is right, "
                  "exact McNemar p):", "",
                  "| model | " + " | ".join("10-fold" + (" " + c[6:] if c != "kfold" else "") for c in columns) + " |",
                  "|" + " --- |" * (len(columns) + 1)]
        lines += ["| " + r["model"] + " | " + " | ".join(
            f"+{r['paired'][c]['better']} / -{r['paired'][c]['worse']}, p {r['paired'][c]['p']:.2g}" for c in columns)
            + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--fuse", action="append", default=[], metavar="A+B", help="also the score fusion (repeatable)")
    ap.add_argument("--lfw", type=Path, default=None, help="LFW root (default: $FACEVERIFY_LFW or the shared copy)")
    ap.add_argument("--cache", type=Path, action="append", default=None, help="face cache (repeatable)")
    ap.add_argument("--view2", action="store_true", help="also View 2 (10-fold) and its TAR@FAR")
    ap.add_argument("--identify", action="store_true", help="also open-set identification on peopleDevTest")
    ap.add_argument("--match", choices=MATCHES, default=DEFAULT_MATCH, help="identification against identity "
                    "templates or every embedding (default: identify's)")
    ap.add_argument("--variants", default="", help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--against", metavar="MODEL", help="with --variants: each row's 10-fold decisions paired with "
                    "this model's (one of the rows), pair by pair, with an exact McNemar test")
    ap.add_argument("--speed", action="store_true", help="also each network's faces/second at 1 and 2 threads")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the evaluation (default: torch's)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    variants = tuple(v for v in args.variants.split(",") if v)
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)} (known: {', '.join(VARIANTS)})")
    if args.against and (not variants or args.against not in [*args.models, *args.fuse]):
        ap.error("--against needs --variants and names one of the models or fusions compared")
    root = lfw_root(args.lfw)
    dirs = args.cache or [default_cache_root() / c for c in DEFAULT_CACHES]
    caches = [FaceCache(d) for d in dirs if (d / "meta.json").exists()]
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = compare(args.models, args.fuse, root, caches, args.view2, args.identify, args.match, variants, args.against)
    if args.speed:
        add_speed(rows, caches[0])
    print(json.dumps(rows) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
