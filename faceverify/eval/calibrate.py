"""Calibration: thresholds by target false-accept rate, from genuine and impostor scores of LFW DevTrain."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .bounds import bound_record
from .cache import EmbeddingCache, embed_paths
from ..errors import FaceverifyError
from .metrics import far_key, far_of_threshold, threshold_at_far
from .pairs import lfw_image_dir, lfw_image_path, read_lfw_people
from ..pipeline import FacePipeline

CALIBRATION_FARS = (1e-2, 1e-3, 1e-4)
CURVE_FARS = tuple(float(f) for f in np.logspace(-6, -0.3, 24))


def all_pair_scores(vectors: np.ndarray, labels: np.ndarray, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of every unordered pair: (genuine = same label, impostor = different labels)."""
    genuine: list[np.ndarray] = []
    impostor: list[np.ndarray] = []
    n = len(vectors)
    for start in range(0, n, block):
        rows = slice(start, min(start + block, n))
        sims = vectors[rows] @ vectors[start:].T
        same = labels[rows, None] == labels[None, start:]
        upper = np.triu(np.ones(sims.shape, bool), k=1)
        genuine.append(sims[same & upper])
        impostor.append(sims[~same & upper])
    return np.concatenate(genuine).astype(np.float32), np.concatenate(impostor).astype(np.float32)


def calibrate_scores(
    genuine: np.ndarray, impostor: np.ndarray, fars: Sequence[float] = CALIBRATION_FARS
) -> tuple[dict[str, float], dict]:
    """Thresholds for each FAR and a calibration record (counts, TAR at each threshold, a FAR curve)."""
    if impostor.size < 1 / min(fars):
        raise FaceverifyError(f"{impostor.size} impostor pairs cannot calibrate FAR={min(fars):g}")
    thresholds = {far_key(f): round(threshold_at_far(impostor, f), 6) for f in fars}
    curve = [[round(threshold_at_far(impostor, f), 6), f] for f in CURVE_FARS if f * impostor.size >= 1]
    record = dict(
        genuine_pairs=int(genuine.size),
        impostor_pairs=int(impostor.size),
        tar_at_threshold={k: round(float(np.mean(genuine >= t)), 6) for k, t in thresholds.items()},
        achieved_far={k: float(far_of_threshold(impostor, t)) for k, t in thresholds.items()},
        far_curve=curve,
    )
    return thresholds, record


def devtrain_images(root: Path, max_per_person: int | None = None) -> tuple[list[Path], np.ndarray]:
    """Paths and integer identity labels of the LFW DevTrain images."""
    images = lfw_image_dir(root)
    paths: list[Path] = []
    labels: list[int] = []
    for label, (name, count) in enumerate(read_lfw_people(root / "peopleDevTrain.txt")):
        for i in range(1, (count if max_per_person is None else min(count, max_per_person)) + 1):
            paths.append(images / lfw_image_path(name, i))
            labels.append(label)
    return paths, np.array(labels)


def calibrate_on_lfw(
    pipeline: FacePipeline,
    root: Path,
    fars: Sequence[float] = CALIBRATION_FARS,
    max_per_person: int | None = None,
    cache: EmbeddingCache | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, float], dict]:
    """Embed DevTrain (centre face, centre-crop fallback), score all pairs, pick thresholds by FAR, and bound
    each threshold's FAR for unseen people (``bounds``: see :mod:`faceverify.eval.bounds`)."""
    paths, labels = devtrain_images(root, max_per_person)
    vectors, detected = embed_paths(pipeline, paths, "center", cache, progress)
    genuine, impostor = all_pair_scores(vectors, labels)
    thresholds, record = calibrate_scores(genuine, impostor, fars)
    record["bounds"] = bound_record(vectors, labels, impostor, fars, CURVE_FARS)
    record.update(
        data="LFW peopleDevTrain (all cross-identity pairs as impostors, all same-identity pairs as genuine)",
        images=len(paths),
        identities=int(len(np.unique(labels))),
        no_face=int((~detected).sum()),
        face_choice="center",
        date=_dt.date.today().isoformat(),
        command="faceverify calibrate --root LFW",
    )
    return thresholds, record
