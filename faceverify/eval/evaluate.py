"""Evaluation with the same front end, model and decision rule users run: LFW protocols, pair lists, open-set search.

Every image is embedded once (centre-crop fallback when no face is found: counted as ``no_face``, never dropped)
and every pair is scored with :func:`faceverify.decision.cosine`, the similarity ``verify`` decides on.

Thresholds are never chosen on the pairs they are reported on: DevTest accuracy is measured at the threshold
with the best accuracy on pairsDevTrain, View 2 uses the standard 10-fold rule (each fold's threshold chosen on
the other nine). View 2 shares people with DevTrain, so it is meaningful only for models never trained on LFW.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

import numpy as np

from .cache import EmbeddingCache, embed_paths, front_end_fields
from ..detect import FaceChoice
from ..errors import BadInputError, FaceverifyError, OperatingPointError
from .metrics import (
    accuracy_at,
    best_threshold,
    far_key,
    far_of_threshold,
    roc,
    threshold_at_far,
    verification_report,
)
from .pairs import Pair, lfw_image_dir, lfw_image_path, read_lfw_pairs, read_lfw_people, read_pair_file
from ..pipeline import Fallback, ImageResult
from ..decision import DEFAULT_FAR, DEFAULT_MATCH, cosine
from .identify import OpenSet, best_first, check_enrol_by, identification_report

__all__ = [
    "PROTOCOL_FILES",
    "evaluate_identification",
    "evaluate_lfw",
    "evaluate_pairs",
    "plot_roc",
    "write_scores_csv",
]

PROTOCOL_FILES = {"devtrain": "pairsDevTrain.txt", "devtest": "pairsDevTest.txt", "view2": "pairs.txt"}
THRESHOLD_FILE = PROTOCOL_FILES["devtrain"]
IDENTIFICATION_FILE = "peopleDevTest.txt"
REPORT_FARS = (1e-2, 1e-3)

StartProgress = Callable[[str, int], Callable[[int], None]]
"""``start(label, total)`` opens a progress task and returns ``advance(n)``."""


class Card(Protocol):
    """What evaluation reads from a model card."""

    name: str
    model_id: str
    embedding_size: int

    def threshold_for(self, far: float) -> float: ...


class FrontEnd(Protocol):
    """Image files -> embeddings: :class:`~faceverify.pipeline.FacePipeline`, or a peer shaped like it."""

    @property
    def card(self) -> Card: ...

    def process_paths(
        self, paths: Iterable[str | Path], face: FaceChoice = "largest", fallback: Fallback = "none", batch_size: int = 16
    ) -> Iterator[ImageResult]: ...


@dataclass
class ScoredPairs:
    """Pairs, their similarity scores and labels, and how many distinct images had no detected face."""

    pairs: list[Pair]
    scores: np.ndarray
    labels: np.ndarray
    images: int
    no_face: int


def card_threshold(card: Card, far: float = DEFAULT_FAR) -> float | None:
    """The card's calibrated threshold for ``far``, or None when it has none."""
    try:
        return card.threshold_for(far)
    except OperatingPointError:
        return None


def embed_images(
    pipeline: FrontEnd,
    paths: Sequence[Path],
    face: FaceChoice,
    cache: EmbeddingCache | None,
    progress: StartProgress | None,
    label: str,
) -> tuple[np.ndarray, np.ndarray]:
    """One embedding per image and the detected-face mask (see :func:`faceverify.eval.cache.embed_paths`)."""
    advance = progress(label, len(paths)) if progress is not None else None
    return embed_paths(pipeline, paths, face, cache, advance)  # type: ignore[arg-type]


def score_pairs(
    pipeline: FrontEnd,
    pairs: list[Pair],
    image_dir: Path | None,
    face: FaceChoice,
    cache: EmbeddingCache | None,
    progress: StartProgress | None,
    label: str,
) -> ScoredPairs:
    """Embed each distinct image of ``pairs`` once (relative to ``image_dir`` when given) and score every pair."""
    unique = list(dict.fromkeys(p for pair in pairs for p in (pair.path_a, pair.path_b)))
    paths = [image_dir / p for p in unique] if image_dir is not None else unique
    vectors, detected = embed_images(pipeline, paths, face, cache, progress, label)
    index = {p: i for i, p in enumerate(unique)}
    scores = np.array([cosine(vectors[index[p.path_a]], vectors[index[p.path_b]]) for p in pairs])
    labels = np.array([p.same for p in pairs], bool)
    return ScoredPairs(pairs, scores, labels, len(unique), int((~detected).sum()))


def _card_point(card: Card, scored: ScoredPairs) -> dict[str, Any] | None:
    """Accuracy, TAR and achieved FAR at the card's calibrated FAR=1e-3 threshold (None without one)."""
    thr = card_threshold(card)
    if thr is None:
        return None
    return dict(
        far=far_key(DEFAULT_FAR),
        threshold=thr,
        accuracy=accuracy_at(scored.scores, scored.labels, thr),
        tar=float(np.mean(scored.scores[scored.labels] >= thr)),
        achieved_far=far_of_threshold(scored.scores[~scored.labels], thr),
    )


def _describe(report: dict[str, Any], pipeline: FrontEnd, protocol: str, face: FaceChoice, images: int, no_face: int) -> None:
    """Add what was evaluated, with which model, and how many images had no detected face."""
    report.update(
        protocol=protocol, model=pipeline.card.name, model_id=pipeline.card.model_id, face=face, images=images,
        no_face=no_face, **front_end_fields(pipeline),
    )


def _write_outputs(scored: ScoredPairs, threshold: float, scores_path: Path | None, plot_path: Path | None) -> None:
    if scores_path is not None:
        write_scores_csv(scores_path, scored.pairs, scored.scores)
    if plot_path is not None:
        plot_roc(plot_path, scored.scores, scored.labels, operating_points(scored.scores, scored.labels, threshold))


def evaluate_lfw(
    pipeline: FrontEnd,
    root: Path,
    protocol: str = "devtest",
    face: FaceChoice = "center",
    cache: EmbeddingCache | None = None,
    threshold: float | None = None,
    progress: StartProgress | None = None,
    scores_path: Path | None = None,
    plot_path: Path | None = None,
) -> dict[str, Any]:
    """Verification report on an LFW protocol ("devtest", "devtrain" or "view2").

    devtest/devtrain: accuracy at ``threshold``, else at the best-accuracy threshold of pairsDevTrain (for
    devtrain that is the optimistic same-set figure); ``at_card_threshold`` adds accuracy at the card's
    FAR=1e-3 threshold when the card has one, and ``threshold_set`` describes the DevTrain pairs used.
    view2: the 10-fold rule, ``accuracy`` ± ``accuracy_std`` over folds. ``scores_path`` and ``plot_path``
    receive the per-pair scores (CSV) and the ROC curve (PNG) of the evaluated pairs.
    """
    if protocol not in PROTOCOL_FILES:
        raise FaceverifyError(f"unknown LFW protocol {protocol!r} (choose from {', '.join(PROTOCOL_FILES)})")
    if protocol == "view2" and threshold is not None:
        raise FaceverifyError("view2 chooses each fold's threshold on the other nine folds: drop the fixed threshold")
    images = lfw_image_dir(root)
    test_pairs = read_lfw_pairs(root / PROTOCOL_FILES[protocol])
    if protocol == "view2":
        scored = score_pairs(pipeline, test_pairs, images, face, cache, progress, "View 2")
        report = verification_report(scored.scores, scored.labels, REPORT_FARS, folds=np.array([p.fold for p in test_pairs]))
        report["threshold_source"] = "10-fold rule: per fold, the best threshold on the other nine; mean shown"
    else:
        source = "given"
        train: ScoredPairs | None = None
        if threshold is None:
            train = score_pairs(
                pipeline, read_lfw_pairs(root / THRESHOLD_FILE), images, face, cache, progress, "DevTrain (threshold)"
            )
            threshold = best_threshold(train.scores, train.labels)
            source = f"best accuracy on {THRESHOLD_FILE}"
        if protocol == "devtrain" and train is not None:
            scored = train
        else:
            scored = score_pairs(pipeline, test_pairs, images, face, cache, progress, protocol)
        report = verification_report(scored.scores, scored.labels, REPORT_FARS, threshold=threshold)
        report["threshold_source"] = source
        report["threshold_set"] = None if train is None else dict(
            file=THRESHOLD_FILE, pairs=len(train.pairs), images=train.images, no_face=train.no_face
        )
        report["at_card_threshold"] = _card_point(pipeline.card, scored)
    _describe(report, pipeline, protocol, face, scored.images, scored.no_face)
    _write_outputs(scored, report["threshold"], scores_path, plot_path)
    return report


def evaluate_pairs(
    pipeline: FrontEnd,
    pair_file: Path,
    threshold: float | None = None,
    face: FaceChoice = "largest",
    cache: EmbeddingCache | None = None,
    progress: StartProgress | None = None,
    scores_path: Path | None = None,
    plot_path: Path | None = None,
) -> dict[str, Any]:
    """Verification report on a generic pair file (see :func:`faceverify.eval.pairs.read_pair_file`).

    With a fold column the k-fold rule applies (a fixed threshold is then refused); without one, accuracy is
    measured at ``threshold``, else at the card's calibrated FAR=1e-3 threshold.
    """
    pairs = read_pair_file(pair_file)
    if not pairs:
        raise BadInputError(pair_file, "no pairs in the file")
    folded = pairs[0].fold is not None
    if folded and threshold is not None:
        raise FaceverifyError(f"{pair_file} has a fold column, so the k-fold rule chooses thresholds: drop --threshold")
    if not folded and threshold is None:
        threshold = card_threshold(pipeline.card)
        if threshold is None:
            raise FaceverifyError(
                f"model '{pipeline.card.name}' has no calibrated FAR={far_key(DEFAULT_FAR)} threshold: "
                "pass --threshold or run `faceverify calibrate`"
            )
        source = f"model card FAR={far_key(DEFAULT_FAR)}"
    else:
        source = "k-fold rule" if folded else "given"
    scored = score_pairs(pipeline, pairs, None, face, cache, progress, Path(pair_file).name)
    folds = np.array([p.fold for p in pairs]) if folded else None
    report = verification_report(scored.scores, scored.labels, REPORT_FARS, folds=folds, threshold=threshold)
    report["threshold_source"] = source
    _describe(report, pipeline, f"pairs:{Path(pair_file).name}", face, scored.images, scored.no_face)
    _write_outputs(scored, report["threshold"], scores_path, plot_path)
    return report


def evaluate_identification(
    pipeline: FrontEnd,
    root: Path,
    face: FaceChoice = "center",
    cache: EmbeddingCache | None = None,
    progress: StartProgress | None = None,
    match: str = DEFAULT_MATCH,
    enrol_by: str = "first",
) -> dict[str, Any]:
    """Open-set identification on LFW peopleDevTest.

    Each identity with two or more images enrols its first image (``enrol_by="quality"``: its image whose face
    has the best quality score, see :mod:`faceverify.eval.identify`); its other images are mated probes.
    Identities with a single image are never enrolled: their images are non-mated probes. Reports rank-1 and DIR at FPIR
    1% and 10% (see :func:`faceverify.eval.metrics.open_set_identification`) with the probe and gallery counts, and
    what `identify` would do by default with this gallery (``default_point``: the threshold chosen to hold FPIR
    at 1% from the card's calibration, and the FPIR and DIR measured there), when the card has thresholds; see
    :func:`faceverify.eval.identify.identification_report`.
    """
    images = lfw_image_dir(root)
    identities = {name: [images / lfw_image_path(name, i) for i in range(1, count + 1)]
                  for name, count in read_lfw_people(root / IDENTIFICATION_FILE)}
    if check_enrol_by(enrol_by) == "quality":
        identities = best_first(pipeline, identities, 1, face, progress)
    paths = [p for listed in identities.values() for p in listed]
    names = [name for name, listed in identities.items() for _ in listed]
    enrolled = [i == 0 and len(listed) >= 2 for listed in identities.values() for i in range(len(listed))]
    vectors, detected = embed_images(pipeline, paths, face, cache, progress, "DevTest people")
    which = "first image" if enrol_by == "first" else "best-quality image"
    protocol = OpenSet(paths, names, np.array(enrolled), f"{which} of each identity with two or more enrolled")
    report = identification_report(pipeline.card, vectors, protocol, match)
    _describe(report, pipeline, f"open-set:{IDENTIFICATION_FILE}", face, len(paths), int((~detected).sum()))
    report["enrol_by"] = enrol_by
    return report


def operating_points(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Thresholds worth marking on a ROC: FAR 1e-2 and 1e-3 on these impostors, and the chosen threshold."""
    impostors = np.asarray(scores)[~np.asarray(labels, bool)]
    points = {f"FAR={far_key(f)}": threshold_at_far(impostors, f) for f in REPORT_FARS}
    points["chosen threshold"] = float(threshold)
    return points


def write_scores_csv(path: Path, pairs: Sequence[Pair], scores: Sequence[float]) -> None:
    """One row per pair: ``path_a, path_b, same (1/0), fold (empty without), score``."""
    if len(pairs) != len(scores):
        raise FaceverifyError(f"{len(pairs)} pairs but {len(scores)} scores")
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path_a", "path_b", "same", "fold", "score"])
        for pair, score in zip(pairs, scores):
            fold = "" if pair.fold is None else pair.fold
            writer.writerow([Path(pair.path_a).as_posix(), Path(pair.path_b).as_posix(), int(pair.same), fold, f"{score:.6f}"])


def plot_roc(path: Path, scores: Sequence[float], labels: Sequence[bool], operating_points: Mapping[str, float]) -> None:
    """ROC (TAR against FAR on a log axis) as a PNG, with each named threshold marked at its (FAR, TAR).

    FAR 0 cannot sit on a log axis: it is drawn at half of the smallest measurable FAR (1 / impostors).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, bool)
    far, tar, _ = roc(s, y)
    floor = 0.5 / max(int((~y).sum()), 1)
    fig = Figure(figsize=(6, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(np.maximum(far, floor), tar, label="ROC")
    for (name, thr), marker in zip(operating_points.items(), "os^Dv"):
        point_far = max(far_of_threshold(s[~y], thr), floor)
        point_tar = float(np.mean(s[y] >= thr))
        ax.plot([point_far], [point_tar], marker, label=f"{name}: t={thr:.3f}, TAR={point_tar:.3f}")
    ax.set_xscale("log")
    ax.set_xlim(floor, 1.0)
    ax.set_xlabel(f"FAR (0 drawn at {floor:.1e})")
    ax.set_ylabel("TAR")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
