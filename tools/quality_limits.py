"""Choose the enrolment gate's limits and fit the quality score's ranking on LFW DevTrain (never DevTest): each
quality measure's distribution on DevTrain faces, where genuine-pair acceptance collapses as the measure
degrades, and how the measures predict a face's mean genuine similarity.

    python tools/quality_limits.py [--models edgeface-xs] [--per-person 4] [--sweep 300]
                                   [--detector yunet-onet] [--lfw LFW] [--json OUT]
    python tools/quality_limits.py --devtest-refusals    # what the shipped limits refuse of DevTest (report only)

Faces: the first ``--per-person`` images of every DevTrain identity with two or more, the largest face each
(``enroll``'s default), detected once and embedded by every model. A face's genuine acceptance is the share of
its pairs with the identity's other (untouched) faces that reach the model card's FAR=1e-3 threshold. Besides
the faces as they are, the first ``--sweep`` faces are re-measured on degraded copies: the image shrunk (eye
distance), Gaussian-blurred (sharpness), and cut to its left or right part through the face (pose), with
detection rerun on each copy. For each measure it prints the natural percentiles and a table of acceptance over
bins of the measure (the untouched faces and the copies degraded in the way the measure is meant to see), and
the limit by the rule written in BENCHMARKS.md: the best edge of the run of bins, from the worst on, whose
acceptance is below ``COLLAPSE`` of the untouched faces' acceptance for some model. The measures are taken in the
gate's order, each on the faces that pass the limits already chosen (so that a face too blurred does not count
against the detector's score as well). The limits are read for the first of ``--models`` (the default model).

The ranking: each untouched face's mean cosine similarity to its identity's other untouched faces (first model),
fitted by least squares on :func:`faceverify.quality.measures.ranking_features` within each identity (identity
means removed); it prints the weights, the intercept, the within-identity R^2 (also of a fit on half the
identities, read on the other half), and the mean genuine similarity of the face each identity would enrol:
its first one, the best by the fitted score, the best by the score now in faceverify.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from faceverify.detect import choose_detector, select_faces
from faceverify.modelcard import default_model_name
from faceverify.eval.pairs import lfw_image_dir, lfw_image_path, read_lfw_people
from faceverify.images import load_image
from faceverify.pipeline import FacePipeline
from faceverify.quality.limits import DEFAULT_LIMITS
from faceverify.quality.measures import FaceQuality, measure_face, ranking_features
from tools.common import lfw_root

COLLAPSE = 0.7
"""A bin whose genuine acceptance is below this share of the untouched faces' has collapsed."""
MEASURES = {  # in the gate's order: name -> (a function of FaceQuality, True when higher is better, the
    # degradations it is read on)
    "eye_distance": (lambda q: q.eye_distance, True, ("shrink",)),
    "second_face": (lambda q: q.second_face, False, ()),
    "sharpness": (lambda q: q.sharpness, True, ("blur",)),
    "eye_mouth_ratio": (lambda q: q.eye_mouth_ratio, True, ("cut",)),
    "abs_yaw": (lambda q: abs(q.yaw), False, ("cut",)),
    "detector_score": (lambda q: q.detector_score, True, ("shrink", "blur", "cut")),
}


def _shrink(factor: float) -> Callable[[np.ndarray], np.ndarray]:
    def apply(img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        return cv2.resize(img, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    return apply


def _blur(sigma: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda img: cv2.GaussianBlur(img, (0, 0), sigma)


def _cut(keep: float, left: bool) -> Callable[[np.ndarray], np.ndarray]:
    def apply(img: np.ndarray) -> np.ndarray:
        w = img.shape[1]
        part = img[:, : round(w * keep)] if left else img[:, w - round(w * keep):]
        return np.ascontiguousarray(part)
    return apply


DEGRADATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    **{f"shrink {f}": _shrink(f) for f in (0.6, 0.45, 0.35, 0.28, 0.22, 0.18)},
    **{f"blur {s}": _blur(s) for s in (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)},
    **{f"cut {'left' if left else 'right'} {k}": _cut(k, left) for k in (0.6, 0.55, 0.5) for left in (True, False)},
}


@dataclass
class Observations:
    """Faces measured: per face its identity index, clean-face index, degradation, quality fields, embeddings."""

    person: list[int] = field(default_factory=list)
    quality: list[FaceQuality] = field(default_factory=list)
    clean: list[int] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MEASURES})
    vectors: dict[str, list[np.ndarray]] = field(default_factory=dict)


def devtrain_faces(root: Path, per_person: int) -> tuple[list[Path], list[int]]:
    """The first ``per_person`` images of each DevTrain identity with two or more, and each one's identity."""
    images = lfw_image_dir(root)
    paths, people = [], []
    for k, (name, count) in enumerate(p for p in read_lfw_people(root / "peopleDevTrain.txt") if p[1] >= 2):
        for i in range(1, min(count, per_person) + 1):
            paths.append(images / lfw_image_path(name, i))
            people.append(k)
    return paths, people


def observe(pipelines: dict[str, FacePipeline], image: np.ndarray, person: int, clean: int, kind: str,
            out: Observations) -> bool:
    """Detect the largest face of ``image``, measure it and embed it by every model; False when none is found."""
    first = next(iter(pipelines.values()))
    faces = first.detector.detect([image])[0]
    chosen = select_faces(faces, image.shape, "largest")
    if not chosen:
        return False
    quality = measure_face(image, chosen[0], faces, first.detector_kind)
    out.person.append(person)
    out.clean.append(clean)
    out.kind.append(kind)
    out.quality.append(quality)
    for name, (get, _, _) in MEASURES.items():
        out.values[name].append(float(get(quality)))
    for model, p in pipelines.items():
        out.vectors.setdefault(model, []).append(p.embed_crops(p.align(image, chosen))[0])
    return True


def acceptance(obs: Observations, model: str, threshold: float | None) -> np.ndarray:
    """Per observed face: the share of its pairs with the other untouched faces of its identity accepted (with
    ``threshold`` None: their mean cosine similarity)."""
    vec = np.stack(obs.vectors[model])
    person, clean = np.array(obs.person), np.array(obs.clean)
    untouched = np.array([k == "as is" for k in obs.kind])
    out = np.full(len(person), np.nan)
    base = {c: i for i, c in enumerate(clean) if untouched[i]}
    by_person: dict[int, list[int]] = {}
    for i in np.flatnonzero(untouched):
        by_person.setdefault(int(person[i]), []).append(int(i))
    for i in range(len(person)):
        mates = [j for j in by_person.get(int(person[i]), []) if j != base.get(int(clean[i]))]
        if mates:
            scores = vec[mates] @ vec[i]
            out[i] = float(np.mean(scores if threshold is None else scores >= threshold))
    return out


def binned(values: np.ndarray, accepted: dict[str, np.ndarray], higher_better: bool, bins: int = 12
           ) -> list[dict]:
    """Acceptance per model over bins of equal count along the measure, worst bin first (the worst ends finer)."""
    order = np.argsort(values if higher_better else -values)
    edges = np.unique(np.concatenate([[0, 25, 50, 100, 200, 400], np.linspace(600, len(order), bins)]).astype(int))
    edges = edges[edges <= len(order)]
    rows = []
    for a, b in zip(edges[:-1], edges[1:]):
        idx = order[a:b]
        rows.append(dict(worst=float(values[idx[0]]), best=float(values[idx[-1]]), faces=int(b - a),
                         **{m: float(np.nanmean(acc[idx])) for m, acc in accepted.items()}))
    return rows


def collapse_limit(rows: list[dict], reference: dict[str, float]) -> float | None:
    """The best edge of the run of bins, from the worst one on, whose acceptance for some model is under
    ``COLLAPSE`` of that model's acceptance on untouched faces (None when the worst bin has not collapsed)."""
    limit = None
    for row in rows:
        if not any(row[m] < COLLAPSE * reference[m] for m in reference):
            break
        limit = row["best"]
    return limit


def _within(values: np.ndarray, person: np.ndarray) -> np.ndarray:
    """``values`` (rows) less their identity's mean."""
    out = values.astype(np.float64).copy()
    for k in np.unique(person):
        rows = person == k
        out[rows] -= out[rows].mean(0)
    return out


def fit_ranking(obs: Observations, similarity: np.ndarray, untouched: np.ndarray) -> dict:
    """The least-squares weights of :func:`ranking_features` for each untouched face's mean genuine ``similarity``,
    within identities (module docstring), with the fit's figures."""
    rows = np.flatnonzero(untouched & ~np.isnan(similarity))
    x = np.stack([ranking_features(obs.quality[i]) for i in rows])
    y, person = similarity[rows], np.array(obs.person)[rows]
    xd, yd = _within(x, person), _within(y[:, None], person)[:, 0]
    weights = np.linalg.lstsq(xd, yd, rcond=None)[0]
    intercept = float(y.mean() - x.mean(0) @ weights)

    def r2(w: np.ndarray, sel: np.ndarray) -> float:
        return float(1 - ((yd[sel] - xd[sel] @ w) ** 2).sum() / (yd[sel] ** 2).sum())

    people = np.unique(person)
    half = np.isin(person, np.random.default_rng(0).permutation(people)[: len(people) // 2])
    held_out = r2(np.linalg.lstsq(xd[half], yd[half], rcond=None)[0], ~half)
    current = np.array([obs.quality[i].score for i in rows])

    def enrolled(score: np.ndarray | None) -> float:
        picks = [np.flatnonzero(person == k) for k in people]
        return float(np.mean([y[m[0] if score is None else m[np.argmax(score[m])]] for m in picks]))

    return dict(faces=len(rows), identities=len(people), weights=[round(float(w), 4) for w in weights],
                intercept=round(intercept, 4), r2_within=round(r2(weights, np.ones(len(rows), bool)), 4),
                r2_held_out_half=round(held_out, 4), enrolled_similarity=dict(
                    first=round(enrolled(None), 4), fitted=round(enrolled(x @ weights), 4),
                    current_score=round(enrolled(current), 4)))


def devtest_refusals(root: Path, pipeline: FacePipeline) -> int:
    """Print the share of peopleDevTest images the shipped gate (DEFAULT_LIMITS) refuses, by reason."""
    people = read_lfw_people(root / "peopleDevTest.txt")
    paths = [lfw_image_dir(root) / lfw_image_path(name, k) for name, count in people for k in range(1, count + 1)]
    reasons: dict[str, int] = {}
    for path in paths:
        found = pipeline.measure(load_image(path), "largest")
        why = "no face" if not found else DEFAULT_LIMITS.refusal(found[0][1]) or "passes"
        reason = why.split(" (")[0].split(":")[0]
        reasons[reason] = reasons.get(reason, 0) + 1
    print(f"{len(paths)} DevTest images ({pipeline.detector_kind}, the shipped limits):")
    for reason, n in sorted(reasons.items(), key=lambda r: -r[1]):
        print(f"  {reason}: {n} ({n / len(paths):.2%})")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=[default_model_name()],
                    help="the first one's acceptance sets the limits (default: the default model)")
    ap.add_argument("--per-person", type=int, default=4)
    ap.add_argument("--sweep", type=int, default=300, help="faces re-measured on degraded copies")
    ap.add_argument("--detector", default=choose_detector(), help="default: the stills default")
    ap.add_argument("--lfw", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write every figure here")
    ap.add_argument("--devtest-refusals", action="store_true", help="only report what the shipped limits refuse of "
                    "every DevTest image (largest face; nothing is chosen on DevTest)")
    args = ap.parse_args(argv)
    if args.devtest_refusals:
        return devtest_refusals(lfw_root(args.lfw), FacePipeline(args.models[0], "cpu", detector=args.detector))
    root = lfw_root(args.lfw)
    pipelines = {m: FacePipeline(m, "cpu", detector=args.detector, backend="onnx", threads=1) for m in args.models}
    paths, people = devtrain_faces(root, args.per_person)
    obs = Observations()
    missed: dict[str, int] = {}
    for c, (path, person) in enumerate(zip(paths, people)):
        image = load_image(path)
        if not observe(pipelines, image, person, c, "as is", obs):
            missed["as is"] = missed.get("as is", 0) + 1
            continue
        if c < args.sweep:
            for kind, degrade in DEGRADATIONS.items():
                if not observe(pipelines, degrade(image), person, c, kind, obs):
                    missed[kind] = missed.get(kind, 0) + 1
    thresholds = {m: p.card.thresholds["1e-3"] for m, p in pipelines.items()}
    accepted = {m: acceptance(obs, m, thresholds[m]) for m in args.models}
    untouched = np.array([k == "as is" for k in obs.kind])
    reference = {m: float(np.nanmean(a[untouched])) for m, a in accepted.items()}
    first_model = args.models[0]
    report: dict = dict(faces=int(untouched.sum()), images=len(paths), missed=missed, reference=reference,
                        detector=args.detector, measures={})
    print(f"{report['faces']} DevTrain faces of {len(paths)} images ({args.detector}); no face found: {missed}")
    print("genuine acceptance at the card's FAR=1e-3 threshold, untouched faces: "
          + ", ".join(f"{m} {r:.4f}" for m, r in reference.items()))
    kinds = np.array(obs.kind)
    passing = np.ones(len(kinds), bool)
    for name, (_, higher, degradations) in MEASURES.items():
        values = np.array(obs.values[name])
        natural = values[untouched]
        pct = {p: float(np.percentile(natural, p if higher else 100 - p)) for p in (1, 2, 5, 10, 50)}
        used = passing & (untouched | np.array([k.split()[0] in degradations for k in kinds]))
        rows = binned(values[used], {m: a[used] for m, a in accepted.items()}, higher)
        limit = collapse_limit(rows, {first_model: reference[first_model]})
        if limit is not None:
            passing &= values >= limit if higher else values <= limit
        refused = None if limit is None else float(np.mean(natural < limit if higher else natural > limit))
        report["measures"][name] = dict(percentiles=pct, bins=rows, limit=limit, natural_refused=refused)
        print(f"\n{name} ({'higher' if higher else 'lower'} is better); natural worst-side percentiles "
              + ", ".join(f"{p}%: {v:.3f}" for p, v in pct.items()))
        print("| from | to | faces | " + " | ".join(args.models) + " |")
        for r in rows:
            print(f"| {r['worst']:.3f} | {r['best']:.3f} | {r['faces']} | "
                  + " | ".join(f"{r[m]:.3f}" for m in args.models) + " |")
        shown = "none" if limit is None else f"{limit:.3f} (refuses {refused:.2%} of untouched DevTrain faces)"
        print(f"collapse limit: {shown}")
    left = float(np.mean(passing[untouched]))
    report["natural_passing"] = left
    print(f"\nuntouched DevTrain faces passing every limit: {left:.2%}")
    report["ranking"] = fit_ranking(obs, acceptance(obs, first_model, None), untouched)
    print(f"\nranking ({first_model}): " + json.dumps(report["ranking"]))
    if args.json:
        report["observations"] = dict(kind=obs.kind, person=obs.person, values=obs.values,
                                      accepted={m: a.tolist() for m, a in accepted.items()})
        args.json.write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
