"""Score fusion of networks as one embedding model, for tools/compare_models.py.

Each network's cosine is standardised by its own impostor distribution on LFW DevTrain (every cross-identity
pair: mean mu_i, standard deviation s_i) and the standardised scores are averaged. The same decision comes from
one embedding: the concatenation of each network's L2-normalised embedding scaled by 1 / sqrt(s_i), normalised
again. Its cosine is sum_i(cos_i / s_i) / sum_i(1 / s_i), an increasing affine function of the averaged
standardised score (the mu_i only shift it), so thresholds, ROC and rankings are those of the average, and the
fusion is calibrated (``faceverify.eval.calibrate``) and evaluated like any model, on the same faces.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from faceverify.detect import Face, FaceChoice
from faceverify.errors import NoFaceError
from faceverify.eval.cache import EmbeddingCache, embed_paths
from faceverify.eval.calibrate import all_pair_scores, calibrate_on_lfw, devtrain_images
from faceverify.modelcard import ModelCard
from faceverify.pipeline import FaceEmbedding, Fallback, ImageResult
from faceverify.train.validate import CachedFrontEnd


def impostor_stats(front: CachedFrontEnd, root: Path, cache: EmbeddingCache | None) -> tuple[float, float]:
    """Mean and standard deviation of the cosine over every cross-identity pair of LFW DevTrain."""
    paths, labels = devtrain_images(root)
    vectors, _ = embed_paths(front, paths, "center", cache)  # type: ignore[arg-type]
    _, impostor = all_pair_scores(vectors, labels)
    return float(impostor.mean(dtype=np.float64)), float(impostor.std(dtype=np.float64))


class FusedFrontEnd:
    """The fronts' embeddings of the same faces (through ``caches``, one per front, when given), each scaled by
    ``scales[i]``, concatenated and normalised. Only what evaluation reads is carried: whether a face was
    detected, not its box (NaN)."""

    def __init__(self, fronts: Sequence[CachedFrontEnd], scales: Sequence[float], card: ModelCard,
                 caches: Sequence[EmbeddingCache | None] | None = None):
        self.fronts, self.scales, self.card = list(fronts), [float(s) for s in scales], card
        self.caches = list(caches) if caches is not None else [None] * len(self.fronts)

    def with_fronts(self, fronts: Sequence[CachedFrontEnd], caches: Sequence[EmbeddingCache | None] | None = None
                    ) -> "FusedFrontEnd":
        """The same fusion (scales, card and its calibration) over other fronts of the same models."""
        return FusedFrontEnd(fronts, self.scales, self.card, caches)

    def process_paths(
        self, paths: Iterable[str | Path], face: FaceChoice = "largest", fallback: Fallback = "none", batch_size: int = 16
    ) -> Iterator[ImageResult]:
        paths = [str(p) for p in paths]
        parts = [embed_paths(f, paths, face, c) for f, c in zip(self.fronts, self.caches)]  # type: ignore[arg-type]
        vectors = np.concatenate([s * v for s, (v, _) in zip(self.scales, parts)], axis=1)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        detected = parts[0][1]
        for path, vector, found in zip(paths, vectors.astype(np.float32), detected):
            if not found and fallback == "none":
                yield ImageResult(path, [], NoFaceError(path))
            else:
                yield ImageResult(path, [FaceEmbedding(_UNPLACED if found else None, vector)])


_UNPLACED = Face(np.full(4, np.nan, np.float32), float("nan"), np.full((5, 2), np.nan, np.float32))


def fuse(fronts: Sequence[CachedFrontEnd], root: Path, caches: Sequence[EmbeddingCache | None] | None = None
         ) -> FusedFrontEnd:
    """The fusion of ``fronts``: impostor statistics of each on DevTrain, then the fusion calibrated there."""
    caches = list(caches) if caches is not None else [None] * len(fronts)
    stats = [impostor_stats(f, root, c) for f, c in zip(fronts, caches)]
    scales = [1 / np.sqrt(s) for _, s in stats]
    first = fronts[0].card
    ids = [f.card.model_id for f in fronts]
    card = ModelCard(
        name="+".join(f.card.name for f in fronts), architecture="fusion", input_size=first.input_size,
        template=first.template, mean=first.mean, std=first.std, embedding_size=sum(f.card.embedding_size for f in fronts),
        weights="fusion.safetensors", weights_sha256=hashlib.sha256(json.dumps([ids, scales]).encode()).hexdigest(),
        provenance=dict(models=ids, impostor_mean=[m for m, _ in stats], impostor_std=[s for _, s in stats],
                        scales=scales, rule="average of cosines standardised by DevTrain impostors"),
    )
    fused = FusedFrontEnd(fronts, scales, card, caches)
    card.thresholds, card.calibration = calibrate_on_lfw(fused, root)  # type: ignore[arg-type]
    return fused
