"""What every gallery store shares above its database: the public calls that need no SQL, the query checks and
the template ranking, so that the SQLite and the PostgreSQL stores decide alike."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np

from ..errors import GalleryError
from .records import Enrolment


class GalleryBase:
    """The store-independent half of a gallery; a store implements ``enroll_many``, ``require_entries`` and the
    rest of the reads and writes."""

    path: object

    def enroll(self, name: str, items: Sequence[Enrolment]) -> int:
        """Add embeddings to ``name`` (created if new); returns how many were new. Re-enrolling the same face
        of the same file is a no-op."""
        return sum(self.enroll_many([(name, items)]).values())  # type: ignore[attr-defined]

    @contextmanager
    def bulk_loading(self) -> Iterator[None]:
        """Many ``enroll_many`` calls to come (a migration, a bulk import): a store may defer its search index
        until the end. The SQLite store needs nothing: its index catches up on the next search."""
        yield

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # type: ignore[attr-defined]

    def check_queries(self, queries: np.ndarray) -> np.ndarray:
        """``queries`` as a contiguous float32 N x D array of the gallery's size, else GalleryError (also when
        nothing is enrolled)."""
        queries = np.ascontiguousarray(np.asarray(queries, np.float32))
        if queries.ndim != 2 or not np.isfinite(queries).all():
            raise GalleryError("query embeddings must be a finite N x D array")
        self.require_entries()  # type: ignore[attr-defined]
        dim = self.dim()  # type: ignore[attr-defined]
        if queries.shape[1] != dim:
            raise GalleryError(f"query embeddings have size {queries.shape[1]}, the gallery holds size {dim}")
        return queries

def rank_templates(queries: np.ndarray, names: list[str], matrix: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
    """For each query, the ``k`` identities whose templates (rows of ``matrix``) are most similar, best first."""
    sims = queries @ matrix.T
    k = max(1, min(k, len(names)))
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    out = []
    for row, cols in zip(sims, top):
        cols = cols[np.argsort(-row[cols], kind="stable")]
        out.append([(names[j], float(row[j])) for j in cols])
    return out
