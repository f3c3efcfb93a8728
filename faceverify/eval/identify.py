"""Open-set identification protocols: LFW DevTest's, and a seeded split of any identity-folder data set.

Both are scored the same way (:func:`identification_report`): each never-enrolled probe's best score over the
gallery gives the FPIR, each mated probe's rank-1 and score the DIR, and ``default_point`` is what ``identify``
does by default with this gallery: the threshold :func:`faceverify.decision.identification_point` chooses from
the card for this many gallery entries (identities with templates, embeddings with best-of-images), and the FPIR
and DIR measured there.

The folder split (:func:`split_identities`), seeded and documented: identities are the sub-folders (images in
name order). Of those with more than ``enrol`` images, a random ``enrolled_share`` (seeded) is enrolled from its
first ``enrol`` images, its other images being mated probes; every other identity is never enrolled and all its
images are non-mated probes.

``enrol_by="quality"`` (both protocols) orders each enrollable identity's images by the quality score of their
face (:attr:`faceverify.quality.FaceQuality.score`, best first; ties and faceless images keep name order) before
the first ones are enrolled, as a user enrolling their best photos would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..decision import DEFAULT_MATCH, check_match, identification_point, identity_templates
from ..detect import FaceChoice
from ..errors import FaceverifyError
from ..images import list_images, load_image
from .cache import EmbeddingCache, embed_paths, front_end_fields
from .metrics import open_set_identification

REPORT_FPIRS = (1e-2, 1e-1)
ENROL_BY = ("first", "quality")
ENROL = 1
ENROLLED_SHARE = 0.5
SEED = 0


@dataclass(frozen=True)
class OpenSet:
    """Images to embed, each one's identity, and which of them are enrolled (the rest are probes)."""

    paths: list[Path]
    names: list[str]
    enrolled: np.ndarray
    description: str


def identification_report(
    card: Any, vectors: np.ndarray, protocol: OpenSet, match: str = DEFAULT_MATCH
) -> dict[str, Any]:
    """Rank-1, DIR at FPIR 1% and 10%, and ``identify``'s default point, with the gallery matched by ``match``."""
    check_match(match)
    labels = np.array(protocol.names)
    gallery = protocol.enrolled
    size = 1
    if match == "template":
        gallery_names, gallery_vectors = identity_templates(vectors[gallery], labels[gallery])
        size = int(np.unique(labels[gallery], return_counts=True)[1].max())
    else:
        gallery_names, gallery_vectors = list(labels[gallery]), vectors[gallery]
    sim = vectors[~gallery] @ np.asarray(gallery_vectors).T
    point = identification_point(card, len(gallery_names), template_size=size) if card.thresholds else None
    report = open_set_identification(sim, labels[~gallery], np.array(gallery_names), REPORT_FPIRS,
                                     None if point is None else point.threshold)
    if point is not None:
        at = report.pop("at_threshold")
        named = int(round(at["fpir"] * report["non_mated"])) if at["fpir"] is not None else None
        report["default_point"] = dict(at, far=point.far, fpir_bound=point.fpir, compared=len(gallery_names),
                                       named=named)
    report.update(gallery=len(set(labels[gallery])), gallery_embeddings=int(gallery.sum()), match=match,
                  split=protocol.description)
    return report


def folder_identities(root: Path, people: Mapping[str, int] | None = None) -> dict[str, list[Path]]:
    """``root/<identity>/`` image lists in name order (only the identities in ``people`` when given)."""
    if not root.is_dir():
        raise FaceverifyError(f"{root}: not a directory of identity folders")
    out = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if people is None or folder.name in people:
            images = sorted(list_images([folder]))
            if images:
                out[folder.name] = images
    if not out:
        raise FaceverifyError(f"{root}: no identity folder with images")
    return out


def quality_scores(pipeline: Any, paths: Sequence[Path], face: FaceChoice = "largest",
                   progress: Callable[[int], None] | None = None) -> dict[Path, float]:
    """The quality score of the face each image stands for (chosen by ``face`` as the pipeline chooses it), 0
    where none is found."""
    out = {}
    for path in paths:
        found = pipeline.measure(load_image(path, pipeline.max_pixels), face)
        out[path] = found[0][1].score if found else 0.0
        if progress is not None:
            progress(1)
    return out


def best_first(
    pipeline: Any, identities: Mapping[str, Sequence[Path]], enrol: int, face: FaceChoice,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> dict[str, list[Path]]:
    """``identities`` with the images of each that has more than ``enrol`` ordered by :func:`quality_scores`,
    best first (a stable sort: ties keep their order); the others as they are."""
    every = [p for paths in identities.values() if len(paths) > enrol for p in paths]
    advance = progress("quality", len(every)) if progress is not None else None
    scores = quality_scores(pipeline, every, face, advance)
    return {n: sorted(paths, key=lambda p: -scores[p]) if len(paths) > enrol else list(paths)
            for n, paths in identities.items()}


def check_enrol_by(enrol_by: str) -> str:
    if enrol_by not in ENROL_BY:
        raise FaceverifyError(f"unknown enrolment order {enrol_by!r} ({' or '.join(ENROL_BY)})")
    return enrol_by


def split_identities(
    identities: Mapping[str, Sequence[Path]],
    enrol: int = ENROL,
    enrolled_share: float = ENROLLED_SHARE,
    seed: int = SEED,
) -> OpenSet:
    """The seeded open-set split described in the module docstring."""
    if enrol < 1 or not 0 < enrolled_share <= 1:
        raise FaceverifyError(f"need enrol >= 1 and 0 < enrolled share <= 1 (got {enrol}, {enrolled_share:g})")
    names = sorted(identities)
    eligible = [n for n in names if len(identities[n]) > enrol]
    if not eligible:
        raise FaceverifyError(f"no identity has more than {enrol} images: nothing to enrol and probe")
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(eligible, size=max(1, round(enrolled_share * len(eligible))), replace=False).tolist())
    paths: list[Path] = []
    labels: list[str] = []
    enrolled: list[bool] = []
    for name in names:
        images = list(identities[name])
        paths += images
        labels += [name] * len(images)
        enrolled += [name in chosen and i < enrol for i in range(len(images))]
    description = (f"seed {seed}: {len(chosen)} of the {len(eligible)} identities with more than {enrol} images "
                   f"enrolled from their first {enrol}; {len(names) - len(chosen)} identities never enrolled")
    return OpenSet(paths, labels, np.array(enrolled), description)


def evaluate_folder_identification(
    pipeline: Any,
    root: Path,
    people: Mapping[str, int] | None = None,
    enrol: int = ENROL,
    enrolled_share: float = ENROLLED_SHARE,
    seeds: Sequence[int] = (SEED,),
    face: FaceChoice = "largest",
    cache: EmbeddingCache | None = None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
    match: str = DEFAULT_MATCH,
    enrol_by: str = "first",
) -> dict[str, Any]:
    """Open-set identification on ``root/<identity>/*.jpg`` over one split per seed; with several seeds the
    counts add up and the rates are pooled over all splits (``per_seed`` keeps each). ``enrol_by``: which
    images are enrolled (module docstring)."""
    identities = folder_identities(root, people)
    if check_enrol_by(enrol_by) == "quality":
        identities = best_first(pipeline, identities, enrol, face, progress)
    every = sorted({p for paths in identities.values() for p in paths})
    advance = progress("identity folders", len(every)) if progress is not None else None
    vectors, detected = embed_paths(pipeline, every, face, cache, advance)
    index = {p: i for i, p in enumerate(every)}
    reports = []
    for seed in seeds:
        protocol = split_identities(identities, enrol, enrolled_share, seed)
        rows = [index[p] for p in protocol.paths]
        reports.append(identification_report(pipeline.card, vectors[rows], protocol, match))
    report = pooled(reports) if len(reports) > 1 else reports[0]
    report.update(protocol=f"open-set:{root.name}", model=pipeline.card.name, model_id=pipeline.card.model_id,
                  face=face, images=len(every), no_face=int((~detected).sum()), seeds=list(seeds), enrol_by=enrol_by,
                  **front_end_fields(pipeline))
    return report


def pooled(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Several splits' reports in one: counts summed, rates weighted by their probe counts, each kept."""
    mated = sum(r["mated"] for r in reports)
    non = sum(r["non_mated"] for r in reports)

    def mean(get: Callable[[dict], float | None], weight: str) -> float | None:
        values = [(get(r), r[weight]) for r in reports]
        if any(v is None for v, _ in values):
            return None
        return float(sum(v * w for v, w in values) / max(1, sum(w for _, w in values)))

    out: dict[str, Any] = dict(
        rank1=mean(lambda r: r["rank1"], "mated"), mated=mated, non_mated=non,
        thresholds={k: mean(lambda r: r["thresholds"][k], "non_mated") for k in reports[0]["thresholds"]},
        fpir={k: mean(lambda r: r["fpir"][k], "non_mated") for k in reports[0]["fpir"]},
        dir_at_fpir={k: mean(lambda r: r["dir_at_fpir"][k], "mated") for k in reports[0]["dir_at_fpir"]},
        gallery=sum(r["gallery"] for r in reports), gallery_embeddings=sum(r["gallery_embeddings"] for r in reports),
        match=reports[0]["match"], split=f"{len(reports)} splits, pooled", per_seed=reports,
    )
    if all("default_point" in r for r in reports):
        points = [r["default_point"] for r in reports]
        out["default_point"] = dict(
            threshold=float(np.mean([p["threshold"] for p in points])), far=max(p["far"] for p in points),
            fpir_bound=max(p["fpir_bound"] for p in points), compared=max(p["compared"] for p in points),
            fpir=mean(lambda r: r["default_point"]["fpir"], "non_mated"),
            dir=mean(lambda r: r["default_point"]["dir"], "mated"),
            named=sum(p["named"] for p in points),
        )
    return out
