"""Embeddings cached per image content (sha256 of the file), per model, front end and face choice, for evaluation."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..detect import FaceChoice
from .._util import sha256_file
from ..errors import BadInputError
from ..pipeline import FacePipeline


def default_cache_dir() -> Path:
    """``$FACEVERIFY_CACHE`` or the user's cache directory."""
    env = os.environ.get("FACEVERIFY_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("faceverify"))


class EmbeddingCache:
    """A SQLite file of (image content, face choice) -> embedding and whether a face was detected."""

    def __init__(self, model_id: str, directory: Path | None = None):
        directory = directory or default_cache_dir()
        directory.mkdir(parents=True, exist_ok=True)
        safe = hashlib.sha256(model_id.encode()).hexdigest()[:16]
        self._db = sqlite3.connect(directory / f"embeddings-{safe}.sqlite", timeout=60)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, detected INTEGER NOT NULL, vector BLOB NOT NULL)"
        )

    def get(self, keys: Sequence[str]) -> dict[str, tuple[bool, np.ndarray]]:
        out: dict[str, tuple[bool, np.ndarray]] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for key, detected, blob in self._db.execute(f"SELECT key, detected, vector FROM cache WHERE key IN ({marks})", chunk):
                out[key] = (bool(detected), np.frombuffer(blob, np.float32))
        return out

    def put(self, rows: Sequence[tuple[str, bool, np.ndarray]]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO cache(key, detected, vector) VALUES (?, ?, ?)",
                [(k, int(d), np.asarray(v, np.float32).tobytes()) for k, d, v in rows],
            )

    def close(self) -> None:
        self._db.close()


def front_end_tag(pipeline: FacePipeline) -> str:
    """What besides the model changes an embedding: the detector's kind, the network's runtime and flip fusion
    (``""`` for a front end without them), so that embeddings of different front ends never share a cache entry."""
    detector = getattr(pipeline, "detector", None)
    backend = getattr(getattr(pipeline, "embedder", None), "backend", None)
    if detector is None and backend is None:
        return ""
    name = getattr(pipeline, "detector_tag", None) or type(detector).__name__
    return f":{name}/{backend}" + ("+flip" if getattr(pipeline, "flip", False) else "")


def front_end_fields(pipeline: FacePipeline) -> dict[str, Any]:
    """What an evaluation report says of its front end: the detector (None for cached faces), whether the card's
    thresholds were calibrated through it, and the detector they were calibrated through."""
    return dict(detector=getattr(pipeline, "detector_kind", None),
                calibrated_front_end=getattr(pipeline, "calibrated_front_end", None),
                calibrated_detector=pipeline.card.calibrated_detector)


def embed_paths(
    pipeline: FacePipeline,
    paths: Sequence[str | Path],
    face: FaceChoice = "center",
    cache: EmbeddingCache | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One embedding per image (N x D) and a mask of images where a face was detected.

    Images without a detected face are embedded from a fixed centre crop (counted by the mask, never dropped).
    Unreadable images raise BadInputError: an evaluation must not silently lose pairs.
    """
    tag = front_end_tag(pipeline)
    keys = [f"{sha256_file(Path(p))}:{face}{tag}" for p in paths]
    known = cache.get(keys) if cache is not None else {}
    vectors = np.zeros((len(paths), pipeline.card.embedding_size), np.float32)
    detected = np.zeros(len(paths), bool)
    todo = []
    for i, key in enumerate(keys):
        if key in known:
            detected[i], vectors[i] = known[key]
        else:
            todo.append(i)
    if progress is not None and len(paths) - len(todo):
        progress(len(paths) - len(todo))
    for start in range(0, len(todo), 64):
        chunk = todo[start : start + 64]
        results = list(pipeline.process_paths([paths[i] for i in chunk], face, fallback="center"))
        rows = []
        for i, result in zip(chunk, results):
            if result.error is not None:
                raise result.error if isinstance(result.error, BadInputError) else BadInputError(paths[i], str(result.error))
            f = result.faces[0]
            detected[i], vectors[i] = f.face is not None, f.embedding
            rows.append((keys[i], detected[i], vectors[i]))
        if cache is not None:
            cache.put(rows)
        if progress is not None:
            progress(len(chunk))
    return vectors, detected
