"""Open-set identification at `identify`'s default on two LFW protocols, templates against best-of-images.

    python tools/bench_identify.py [--lfw LFW] [--detector mtcnn] [--backend torch] [--seeds 5] [--json]

Protocols (thresholds from the model card, calibrated on peopleDevTrain only; no DevTest image is ever used to
choose anything):

* ``devtest``: LFW DevTest identification as `faceverify evaluate identify` runs it (496 identities enrolled from
  their first image, 1,997 mated probes, 1,215 never-enrolled singletons).
* ``split kN``: the identity-folder protocol of `faceverify evaluate identify DIR` on DevTest's 1,711 people:
  per seed, half of the identities with more than N images enrolled from their first N, every other identity
  (the other half of them, with all their images, and all with N or fewer) never enrolled; pooled over the
  seeds. Its never-enrolled probes include people with several images, unlike ``devtest``'s singletons.

Each row gives rank-1, DIR@FPIR=1% (the threshold chosen on the probes' own scores: an oracle, the usual
figure), and at `identify`'s default: the threshold, how many never-enrolled probes were named (FPIR) and DIR.
Also pairsDevTest accuracy (threshold from pairsDevTrain). Embeddings are cached per front end.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from faceverify.eval.cache import EmbeddingCache
from faceverify.eval.evaluate import evaluate_identification, evaluate_lfw
from faceverify.eval.identify import evaluate_folder_identification
from faceverify.eval.pairs import lfw_image_dir, read_lfw_people
from faceverify.pipeline import FacePipeline
from tools.common import lfw_root


def rows(pipeline: FacePipeline, root: Path, cache: EmbeddingCache, seeds: int, enrols: list[int]) -> list[dict]:
    """One row per protocol and match."""
    out = []
    people = dict(read_lfw_people(root / "peopleDevTest.txt"))
    for match in ("template", "best"):
        report = evaluate_identification(pipeline, root, "center", cache, match=match)
        out.append(dict(report, protocol="devtest"))
        for enrol in enrols:
            report = evaluate_folder_identification(pipeline, lfw_image_dir(root), people, enrol, 0.5,
                                                    tuple(range(seeds)), "center", cache, match=match)
            report.pop("per_seed")
            out.append(dict(report, protocol=f"split k{enrol}"))
    return out


def table(results: list[dict]) -> str:
    head = ("| protocol | match | enrolled identities (embeddings) | mated / never-enrolled probes | rank-1 | "
            "DIR@FPIR=1% (oracle) | default: threshold | never-enrolled named (FPIR) | DIR at default |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in results:
        d = r["default_point"]
        lines.append(
            f"| {r['protocol']} | {r['match']} | {r['gallery']} ({r['gallery_embeddings']}) | {r['mated']} / "
            f"{r['non_mated']} | {100 * r['rank1']:.2f}% | {100 * r['dir_at_fpir']['1e-2']:.2f}% | "
            f"{d['threshold']:.4f} | {d['named']} ({100 * d['fpir']:.2f}%) | {100 * d['dir']:.2f}% |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", type=Path, default=None, help="LFW root (default: $FACEVERIFY_LFW or the shared copy)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--detector", default=None, help="face detector (default: the pipeline's)")
    ap.add_argument("--backend", default=None, help="embedding runtime (default: the pipeline's)")
    ap.add_argument("--seeds", type=int, default=5, help="splits pooled per split protocol")
    ap.add_argument("--enrol", type=int, nargs="+", default=[1, 3], help="images enrolled per identity (split)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    root = lfw_root(args.lfw)
    choice = {k: v for k, v in (("detector", args.detector), ("backend", args.backend)) if v is not None}
    pipeline = FacePipeline(args.model, "cpu", **choice)
    cache = EmbeddingCache(pipeline.card.model_id)
    results = rows(pipeline, root, cache, args.seeds, args.enrol)
    verification = evaluate_lfw(pipeline, root, "devtest", "center", cache)
    if args.json:
        print(json.dumps(dict(identification=results, devtest=verification)))
    else:
        print(table(results))
        print(f"\npairsDevTest accuracy {100 * verification['accuracy']:.2f}% at threshold "
              f"{verification['threshold']:.4f} (from pairsDevTrain); model {pipeline.card.model_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
