"""Copying a gallery between stores (SQLite <-> PostgreSQL, or file to file), verified by counts and checksums.

The copy goes through the stores' own ``enroll_many`` (a transaction per ``BATCH`` identities) inside the
target's ``bulk_loading`` (PostgreSQL: an empty target gets its HNSW index built once, after the copy), so the
target's model check and name policy apply, and re-enrolling a face already there is a no-op: a copy cut short is
finished by running it again. A target enrolled with another model (or embedding size) is refused before
anything is written. Afterwards every source embedding (identity, source hash, box, vector bytes, kept face)
must be in the target, checked by a sha256 over the sorted records of both sides.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from ..errors import ConflictError, GalleryError
from ..align import FaceCrop
from .records import Enrolment, parse_box

BATCH = 500
"""Identities written per transaction."""


@dataclass(frozen=True)
class MigrationReport:
    identities: int
    embeddings: int
    added: int
    checksum: str


Record = tuple[str, str, str, bytes, str]


def _face_digest(face: FaceCrop | None) -> str:
    """A kept face's sha256 (of its image, landmarks and detector), '' for none."""
    if face is None:
        return ""
    points = np.asarray(face.landmarks, np.float32).tobytes()
    return hashlib.sha256(b"".join([face.image, points, face.detector.encode()])).hexdigest()


def _records(gallery: Any, names: set[str] | None = None) -> list[Record]:
    """(name, source hash, box, vector bytes, kept face digest) of every embedding (of ``names`` only, when
    given), sorted."""
    rows = [
        (name, str(meta["source_sha256"]), str(meta["box"] or ""), np.asarray(vec, np.float32).tobytes(),
         _face_digest(meta["face"]))
        for name, vec, meta in gallery.iter_vectors(faces=True)
        if names is None or name in names
    ]
    return sorted(rows)


def checksum(records: Iterable[Record]) -> str:
    digest = hashlib.sha256()
    for record in records:
        for part in (p.encode() if isinstance(p, str) else p for p in record):
            digest.update(len(part).to_bytes(8, "little") + part)
    return digest.hexdigest()


def migrate(source: Any, open_target: Callable[[str, int], Any],
            progress: Callable[[int], None] | None = None) -> MigrationReport:
    """Copy every identity of ``source`` (an open gallery) into ``open_target(model_id, dim)`` (which opens the
    target for that model, refusing another); returns counts and the checksum both sides agree on."""
    model_id = source.stored_model_id
    if model_id is None or source.embedding_count() == 0:
        raise ConflictError(f"{source.path}: the gallery is empty (nothing to migrate)")
    dim = source.dim()
    wanted = _records(source)
    with open_target(model_id, dim) as target:
        stored = target.stored_model_id
        if stored is not None and stored != model_id:
            raise ConflictError(f"{target.path}: gallery was enrolled with model {stored}, not {model_id}")
        people: dict[str, list[Enrolment]] = {}
        for name, vec, meta in source.iter_vectors(faces=True):
            people.setdefault(name, []).append(
                Enrolment(vec, str(meta["source"]), str(meta["source_sha256"]), parse_box(meta["box"]), meta["face"])
            )
        items = list(people.items())
        added = 0
        with target.bulk_loading():  # PostgreSQL: into an empty gallery, the HNSW index is built once at the end
            for start in range(0, len(items), BATCH):
                added += sum(target.enroll_many(items[start : start + BATCH]).values())
                if progress is not None:
                    progress(len(items[start : start + BATCH]))
        wanted_set = set(wanted)
        arrived = [r for r in _records(target, set(people)) if r in wanted_set]  # read back from the target
        if len(arrived) != len(wanted) or checksum(arrived) != checksum(wanted):
            missing = sorted(wanted_set - set(arrived))
            first = f" (first: identity {missing[0][0]!r}, source hash {missing[0][1]})" if missing else ""
            raise GalleryError(
                f"{target.path}: verification failed: {len(arrived)} of {len(wanted)} embeddings arrived{first}"
            )
    return MigrationReport(len(people), len(wanted), added, checksum(wanted))
