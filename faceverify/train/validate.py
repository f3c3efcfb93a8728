"""Validation with the code `faceverify evaluate` runs, for a network that is still training.

:class:`CachedFrontEnd` is the front end :mod:`faceverify.eval.evaluate` expects (``card`` + ``process_paths``):
an image found in a face cache prepared with the same face choice is embedded from its cached crop when the cache
has the model's crop geometry (made by the shipped detect + align code, so only the network runs), else from the
cached detection aligned onto the model's own template (the same faces for models of any geometry); any other
image goes through the live :class:`~faceverify.pipeline.FacePipeline`. The scores, thresholds and reports are
then those of :func:`faceverify.eval.evaluate.evaluate_lfw` / :func:`~faceverify.eval.evaluate.evaluate_pairs` unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ..align import align_face, center_crop
from ..detect import Face, FaceChoice, landmark_template
from ..embed import Embedder
from ..errors import NoFaceError
from ..images import load_image
from ..modelcard import ModelCard
from ..pipeline import FaceEmbedding, FacePipeline, Fallback, ImageResult
from .prepare import FACE, NO_FACE, FaceCache


ImageTransform = Callable[[np.ndarray, "np.ndarray | None", "np.ndarray | None"], np.ndarray]
"""``(image, box, landmarks)`` -> image; box and landmarks are None for an image without a detection."""


class CachedFrontEnd:
    """Cached crops where they exist (same face choice and geometry), cached detections re-aligned where the
    geometry differs, the live pipeline elsewhere.

    Results are remembered per (path, face, fallback): the network must not change during the object's life
    (make a new one after a training step). ``transform(image, box, landmarks)`` (both None without a detection),
    when given, changes each cached image before its detection is aligned (evaluation on degraded copies, same
    detections).
    """

    def __init__(self, embedder: Embedder, caches: Sequence[FaceCache], transform: ImageTransform | None = None):
        self.embedder = embedder
        self._transform = transform
        self._live: FacePipeline | None = None
        self._seen: dict[tuple[str, str, str], ImageResult] = {}
        self._index: dict[str, tuple[FaceCache, int, bool]] = {}
        size, self._template = embedder.input_size, np.asarray(embedder.card.template, np.float64)
        fits = [(c, c.geometries.get(size) is not None and np.allclose(c.geometries[size].template, self._template,
                                                                         atol=1e-3)) for c in caches]
        for cache, has_crops in sorted(fits, key=lambda f: not f[1]):  # caches with the model's crops first
            for row, path in enumerate(cache.absolute_paths()):
                self._index.setdefault(str(path.resolve()), (cache, row, has_crops and transform is None))
        kinds = sorted({c.detector_kind for c in caches})
        # what the evaluation cache's key records of the detections (MTCNN caches keep their old key)
        self.detector_tag = None if kinds in ([], ["mtcnn"]) else "cache-" + "+".join(kinds)

    @property
    def card(self) -> ModelCard:
        return self.embedder.card

    def _lookup(self, path: str | Path, face: FaceChoice) -> tuple[FaceCache, int, bool] | None:
        hit = self._index.get(str(Path(path).resolve()))
        if hit is None or hit[0].face != face or hit[0].status[hit[1]] not in (FACE, NO_FACE):
            return None
        return hit

    def _crop(self, cache: FaceCache, row: int, has_crops: bool) -> np.ndarray:
        """The cached crop, or the cached detection aligned onto this model's template (centre crop without one)."""
        size = self.embedder.input_size
        if has_crops:
            return cache.crops(size)[row]
        image = load_image(cache.root / cache.paths[row])
        found = cache.status[row] == FACE
        if self._transform is not None:
            image = self._transform(image, cache.boxes[row] if found else None, cache.landmarks[row] if found else None)
        if found:
            template = landmark_template(cache.detector_kind, self._template)
            return align_face(image, cache.landmarks[row].astype(np.float64), template, size)
        return center_crop(image, size)

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
                crops = np.stack([self._crop(*hits[i]) for i in cached])  # type: ignore[misc]
                vectors = self.embedder.embed(crops)
                for k, i in enumerate(cached):
                    cache, row, _ = hits[i]  # type: ignore[misc]
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
