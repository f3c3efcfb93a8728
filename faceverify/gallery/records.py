"""What goes into the gallery (an Enrolment) and what comes out of it (an Identity)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import ConflictError, GalleryError


@dataclass(frozen=True)
class Enrolment:
    """One embedding to store: the vector, where it came from and which face in that image."""

    vector: np.ndarray
    source: str
    source_sha256: str
    box: Sequence[float] | None = None


@dataclass(frozen=True)
class Identity:
    """An enrolled identity and how many embeddings it has."""

    name: str
    embeddings: int
    created_at: float
    updated_at: float


def enrolment_row(item: Enrolment, embedding_size: int | None) -> tuple[bytes, str, str, str]:
    """(vector bytes, source, source sha256, box) of an enrolment, checked; raises GalleryError."""
    try:
        vec = np.asarray(item.vector, np.float32).reshape(-1)
    except (TypeError, ValueError):
        raise GalleryError(f"embedding of {item.source} is not a numeric vector") from None
    if embedding_size is not None and vec.size != embedding_size:
        raise GalleryError(f"embedding of {item.source} has size {vec.size}, expected {embedding_size}")
    if vec.size == 0 or not np.isfinite(vec).all():
        raise GalleryError(f"embedding of {item.source} is empty or not finite")
    box = "" if item.box is None else ",".join(f"{float(v):.1f}" for v in item.box)
    return vec.tobytes(), str(item.source), str(item.source_sha256), box


def check_model(location: object, stored: str | None, size: str | None, model_id: str | None,
                embedding_size: int | None) -> None:
    """ConflictError unless a gallery that holds embeddings of model ``stored`` (``size``-d) may be used with
    ``model_id`` / ``embedding_size`` (None: any)."""
    if stored is not None and model_id is not None and stored != model_id:
        raise ConflictError(
            f"{location}: gallery was enrolled with model {stored}, not {model_id}; "
            "embeddings of different models are never mixed (use another --gallery or --model)"
        )
    if stored is not None and embedding_size is not None and size != str(embedding_size):
        raise ConflictError(f"{location}: gallery holds {size}-d embeddings, not {embedding_size}-d")
