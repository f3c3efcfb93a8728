"""What goes into the gallery (an Enrolment) and what comes out of it (an Identity)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..align import FaceCrop
from ..errors import ConflictError, GalleryError


@dataclass(frozen=True)
class Enrolment:
    """One embedding to store: the vector, where it came from, which face in that image and, unless the
    enrolment opted out, the face crop kept for re-embedding with another model."""

    vector: np.ndarray
    source: str
    source_sha256: str
    box: Sequence[float] | None = None
    face: FaceCrop | None = None


@dataclass(frozen=True)
class Identity:
    """An enrolled identity and how many embeddings it has."""

    name: str
    embeddings: int
    created_at: float
    updated_at: float


FaceRow = tuple[bytes, str, str]
"""A kept face as stored: (JPEG bytes, landmarks text, detector)."""


def enrolment_row(item: Enrolment, embedding_size: int | None) -> tuple[bytes, str, str, str, FaceRow | None]:
    """(vector bytes, source, source sha256, box, kept face or None) of an enrolment, checked; raises
    GalleryError."""
    try:
        vec = np.asarray(item.vector, np.float32).reshape(-1)
    except (TypeError, ValueError):
        raise GalleryError(f"embedding of {item.source} is not a numeric vector") from None
    if embedding_size is not None and vec.size != embedding_size:
        raise GalleryError(f"embedding of {item.source} has size {vec.size}, expected {embedding_size}")
    if vec.size == 0 or not np.isfinite(vec).all():
        raise GalleryError(f"embedding of {item.source} is empty or not finite")
    box = "" if item.box is None else ",".join(f"{float(v):.1f}" for v in item.box)
    return vec.tobytes(), str(item.source), str(item.source_sha256), box, face_row(item)


def parse_box(text: str | None) -> list[float] | None:
    """A stored box (``x1,y1,x2,y2`` text, '' or None for none) as numbers."""
    return [float(v) for v in text.split(",")] if text else None


def face_row(item: Enrolment) -> FaceRow | None:
    """The stored form of an enrolment's kept face (None: none kept); raises GalleryError."""
    face = item.face
    if face is None:
        return None
    points = np.asarray(face.landmarks, np.float64)
    if not face.image or points.shape != (5, 2) or not np.isfinite(points).all():
        raise GalleryError(f"kept face of {item.source} is empty or its landmarks are not 5 finite points")
    return bytes(face.image), " ".join(f"{x:.3f},{y:.3f}" for x, y in points), str(face.detector)


def face_of(image: bytes | None, landmarks: str | None, detector: str | None) -> FaceCrop | None:
    """A kept face read back from its stored form (None when the row has none)."""
    if image is None or landmarks is None or detector is None:
        return None
    points = np.array([[float(v) for v in pair.split(",")] for pair in landmarks.split()], np.float32)
    return FaceCrop(bytes(image), points, detector)


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
