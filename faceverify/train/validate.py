"""Validation with the code `faceverify evaluate` runs, for a network that is still training.

:class:`CachedFrontEnd` is the front end :mod:`faceverify.eval.evaluate` expects (``card`` + ``process_paths``):
an image found in a face cache prepared with the same face choice and crop geometry is embedded from its
cached crop (made by the shipped detect + align code, so only the network runs); any other image goes through
the live :class:`~faceverify.pipeline.FacePipeline`. The scores, thresholds and reports are then those of
:func:`faceverify.eval.evaluate.evaluate_lfw` / :func:`~faceverify.eval.evaluate.evaluate_pairs` unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..detect import Face, FaceChoice
from ..embed import Embedder
from ..errors import NoFaceError
from ..modelcard import ModelCard
from ..pipeline import FaceEmbedding, FacePipeline, Fallback, ImageResult
from .prepare import FACE, NO_FACE, FaceCache


class CachedFrontEnd:
    """Cached crops where they exist (same face choice and geometry), the live pipeline elsewhere.

    Results are remembered per (path, face, fallback): the network must not change during the object's life
    (make a new one after a training step).
    """

    def __init__(self, embedder: Embedder, caches: Sequence[FaceCache]):
        self.embedder = embedder
        self._live: FacePipeline | None = None
        self._seen: dict[tuple[str, str, str], ImageResult] = {}
        self._index: dict[str, tuple[FaceCache, int]] = {}
        size, template = embedder.input_size, np.asarray(embedder.card.template)
        for cache in caches:
            geometry = cache.geometries.get(size)
            if geometry is None or not np.allclose(geometry.template, template, atol=1e-3):
                continue
            for row, path in enumerate(cache.absolute_paths()):
                self._index.setdefault(str(path.resolve()), (cache, row))

    @property
    def card(self) -> ModelCard:
        return self.embedder.card

    def _lookup(self, path: str | Path, face: FaceChoice) -> tuple[FaceCache, int] | None:
        hit = self._index.get(str(Path(path).resolve()))
        if hit is None or hit[0].face != face or hit[0].status[hit[1]] not in (FACE, NO_FACE):
            return None
        return hit

    def _live_pipeline(self) -> FacePipeline:
        if self._live is None:
            self._live = FacePipeline(embedder=self.embedder)
        return self._live

    def process_paths(
        self, paths: Iterable[str | Path], face: FaceChoice = "largest", fallback: Fallback = "none", batch_size: int = 16
    ) -> Iterator[ImageResult]:
        paths = [str(p) for p in paths]
        todo = list(dict.fromkeys(p for p in paths if (p, face, fallback) not in self._seen))
        for start in range(0, len(todo), max(batch_size, 64)):
            chunk = todo[start : start + max(batch_size, 64)]
            hits = [self._lookup(p, face) for p in chunk]
            results: dict[int, ImageResult] = {}
            cached = [i for i, h in enumerate(hits) if h is not None]
            if cached:
                crops = np.stack([hits[i][0].crops(self.embedder.input_size)[hits[i][1]] for i in cached])  # type: ignore[index]
                vectors = self.embedder.embed(crops)
                for k, i in enumerate(cached):
                    cache, row = hits[i]  # type: ignore[misc]
                    if cache.status[row] == FACE:
                        found = Face(cache.boxes[row], float(cache.scores[row]), cache.landmarks[row])
                        results[i] = ImageResult(chunk[i], [FaceEmbedding(found, vectors[k])])
                    elif fallback == "center":
                        results[i] = ImageResult(chunk[i], [FaceEmbedding(None, vectors[k])])
                    else:
                        results[i] = ImageResult(chunk[i], [], NoFaceError(chunk[i]))
            live = [i for i, h in enumerate(hits) if h is None]
            if live:
                for i, result in zip(live, self._live_pipeline().process_paths([chunk[i] for i in live], face, fallback)):
                    results[i] = result
            self._seen.update(((chunk[i], face, fallback), results[i]) for i in range(len(chunk)))
        for p in paths:
            yield self._seen[(p, face, fallback)]


def run_validation(
    front: CachedFrontEnd, lfw_root: Path | None, pairs: Path | None, face: FaceChoice
) -> dict[str, Any] | None:
    """The validation report: a pair file with folds (k-fold accuracy) when given, else LFW pairsDevTrain
    (accuracy at its own best threshold, the selection figure), else None."""
    from ..eval.evaluate import evaluate_lfw, evaluate_pairs

    if pairs is not None:
        return evaluate_pairs(front, pairs, face=face)
    if lfw_root is not None:
        return evaluate_lfw(front, lfw_root, "devtrain", face=face)
    return None
