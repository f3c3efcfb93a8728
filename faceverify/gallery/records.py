"""What goes into the gallery (an Enrolment) and what comes out of it (an Identity)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import GalleryError


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
