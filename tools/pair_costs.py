"""Which pairs cost each model its AUC: per-pair AUC cost from `faceverify evaluate lfw --scores` files.

    faceverify evaluate lfw --protocol devtest --model dlib-resnet-v1 --scores dlib.csv
    faceverify evaluate lfw --protocol devtest --model edgeface-xxs --scores xxs.csv
    python tools/pair_costs.py dlib.csv xxs.csv [--worst 5] [--bootstrap 2000] [--exclude A.jpg/B.jpg ...] [--json]

AUC is the fraction of (genuine, impostor) pairs ordered right (ties count 1/2), so each pair's share of the
loss is exact: each wrongly ordered (genuine, impostor) couple is charged half to each of its two pairs, so a
genuine pair costs half the impostors scoring above it, an impostor half the genuine pairs below it, over
n_genuine x n_impostor, and the costs add up to 1 - AUC. The tool lists each model's costliest pairs with every model's score
and rank on them (a pair costly for one model and easy for another is where the models disagree), and each
model's AUC without the union of the listed pairs, beside the AUC on all. Every file must hold the same pairs
(the same protocol), else it stops. --bootstrap N adds, for each model after the first, a paired bootstrap of its
AUC minus the first's: the genuine and the impostor pairs are resampled separately (N times, seed 0), the same
draw scoring both models, and the 2.5% and 97.5% quantiles of the difference are reported (pairs that share a
person are not independent, so read the interval as a lower bound on the uncertainty).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceverify.eval.metrics import auc  # noqa: E402


def read_scores(path: Path) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray]:
    """(pairs, same, scores) of one --scores CSV."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or set(rows[0]) != {"path_a", "path_b", "same", "fold", "score"}:
        raise SystemExit(f"{path}: not a `faceverify evaluate --scores` file")
    pairs = [(Path(r["path_a"]).name, Path(r["path_b"]).name) for r in rows]
    return pairs, np.array([r["same"] == "1" for r in rows]), np.array([float(r["score"]) for r in rows])


def pair_costs(same: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Each pair's share of 1 - AUC (they sum to it): half of each wrongly ordered couple it is in."""
    gen, imp = np.sort(scores[same]), np.sort(scores[~same])
    cost = np.empty(len(scores))
    g = scores[same]
    cost[same] = (len(imp) - np.searchsorted(imp, g, "left") + len(imp) - np.searchsorted(imp, g, "right")) / 2
    i = scores[~same]
    cost[~same] = (np.searchsorted(gen, i, "right") + np.searchsorted(gen, i, "left")) / 2
    return cost / (2 * len(gen) * len(imp))


def auc_difference_interval(same: np.ndarray, base: np.ndarray, other: np.ndarray, rounds: int
                            ) -> tuple[float, float]:
    """95% paired-bootstrap interval of AUC(other) - AUC(base), resampling genuine and impostor pairs apart."""
    rng = np.random.default_rng(0)
    gen, imp = np.flatnonzero(same), np.flatnonzero(~same)
    diffs = np.empty(rounds)
    for r in range(rounds):
        rows = np.concatenate([rng.choice(gen, len(gen)), rng.choice(imp, len(imp))])
        diffs[r] = auc(other[rows], same[rows]) - auc(base[rows], same[rows])
    low, high = np.quantile(diffs, [0.025, 0.975])
    return float(low), float(high)


def excluded(pairs: list[tuple[str, str]], wanted: list[str]) -> np.ndarray:
    """Mask of the pairs to keep: all but those named ``A/B`` (either order) in ``wanted``."""
    index = {frozenset(p): k for k, p in enumerate(pairs)}
    keep = np.ones(len(pairs), bool)
    for name in wanted:
        key = frozenset(name.split("/"))
        if key not in index:
            raise SystemExit(f"--exclude {name}: no such pair in the files")
        keep[index[key]] = False
    return keep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scores", nargs="+", type=Path, help="--scores CSV files, one per model (named by file stem)")
    ap.add_argument("--worst", type=int, default=5, help="pairs listed per model")
    ap.add_argument("--bootstrap", type=int, default=0, metavar="N",
                    help="95%% paired-bootstrap interval of each model's AUC minus the first's (N resamples)")
    ap.add_argument("--exclude", action="append", default=[], metavar="A/B", help="leave this pair out (repeatable)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    runs = {p.stem: read_scores(p) for p in args.scores}
    (first_name, (pairs, same, _)), *rest = runs.items()
    for name, (other_pairs, other_same, _) in rest:
        if other_pairs != pairs or not np.array_equal(other_same, same):
            raise SystemExit(f"{args.scores[list(runs).index(name)]}: holds other pairs than {first_name}'s file")
    kept = excluded(pairs, args.exclude)
    pairs, same = [p for p, k in zip(pairs, kept) if k], same[kept]
    runs = {n: (pairs, same, s[kept]) for n, (_, _, s) in runs.items()}
    costs = {name: pair_costs(same, s) for name, (_, _, s) in runs.items()}
    for name, (_, _, s) in runs.items():  # the exact decomposition is the check that the scores are sane
        if not np.isclose(costs[name].sum(), 1 - auc(s, same), atol=1e-9):
            raise SystemExit(f"{name}: pair costs do not add up to 1 - AUC")
    listed = sorted({int(k) for c in costs.values() for k in np.argsort(-c)[: args.worst]})
    keep = np.ones(len(pairs), bool)
    keep[listed] = False
    result = {
        "pairs": len(pairs),
        "excluded": args.exclude,
        "auc": {n: auc(s, same) for n, (_, _, s) in runs.items()},
        "auc_without_listed": {n: auc(s[keep], same[keep]) for n, (_, _, s) in runs.items()},
        "listed": [dict(a=pairs[k][0], b=pairs[k][1], same=bool(same[k]),
                        **{n: dict(score=round(float(runs[n][2][k]), 4), auc_cost=float(costs[n][k])) for n in runs})
                   for k in listed],
    }
    if args.bootstrap:
        base = runs[first_name][2]
        result["auc_minus_first_95"] = {n: auc_difference_interval(same, base, s, args.bootstrap)
                                        for n, (_, _, s) in list(runs.items())[1:]}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    names = list(runs)
    left_out = f" ({len(args.exclude)} excluded)" if args.exclude else ""
    print(f"{len(pairs)} pairs{left_out}; the {args.worst} costliest of each model: {len(listed)} pairs")
    print("| pair | same | " + " | ".join(f"{n} score (AUC cost)" for n in names) + " |")
    print("| --- | --- | " + " | ".join("---:" for _ in names) + " |")
    for row in result["listed"]:
        cells = " | ".join(f"{row[n]['score']:.4f} ({row[n]['auc_cost']:.5f})" for n in names)
        print(f"| {row['a']} / {row['b']} | {'yes' if row['same'] else 'no'} | {cells} |")
    for n in names:
        print(f"{n}: AUC {result['auc'][n]:.5f}; without the {len(listed)} listed pairs {result['auc_without_listed'][n]:.5f}")
    for n, (low, high) in result.get("auc_minus_first_95", {}).items():
        diff = result["auc"][n] - result["auc"][first_name]
        print(f"{n} - {first_name}: AUC difference {diff:+.5f}, 95% paired bootstrap [{low:+.5f}, {high:+.5f}]")


if __name__ == "__main__":
    main()
