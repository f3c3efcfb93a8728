"""The gallery: enrolled identities in SQLite (the durable truth) and a FAISS search index derived from it; or,
for a ``postgresql://`` location, the same interface on PostgreSQL + pgvector (:mod:`.postgres`).
:func:`open_gallery` picks the store from the location; both share :mod:`.base`, the name policy and the
records, and decide alike. What follows describes the SQLite store.

Durability and concurrency
    Every command (enroll, remove, rename) is one ``BEGIN IMMEDIATE`` transaction in a WAL-mode database with
    ``synchronous=FULL``: a writer killed at any moment leaves the state before or after the command, never a
    mix. Concurrent writers queue on SQLite's write lock (60 s busy timeout); readers never wait for writers.
    Embedding row ids only grow (``meta.last_embedding_id``), so "rows above a high-water mark" is exactly "rows
    added since", and ``meta.removal_epoch`` counts removals.

Search index (a cache, never the truth)
    Up to ``EXACT_LIMIT`` embeddings, search is exact (``IndexFlatIP`` in an ``IndexIDMap2``). Beyond that it
    is an inverted-file index (``IndexIVFFlat``, inner product, ``nlist = 2 sqrt(N)`` trained on a sample,
    ``nprobe_for(nlist)`` lists probed, at least ``NPROBE``) whose per-identity scores are then made exact: the best ``RERANK_IDENTITIES``
    candidate identities are rescored against all their stored embeddings. The IVF is retrained once the
    gallery has grown ``RETRAIN_GROWTH``-fold since training (amortised O(1) per embedding) and replaced by an
    exact index below ``EXACT_LIMIT / 2``. Measured by ``tools/bench_gallery.py`` (BENCHMARKS.md).

    The index holds embedding row ids; names are looked up in SQLite at query time, so a rename costs nothing
    and a row deleted by another process is never reported. It follows the database incrementally: before a
    search it adds the rows above its high-water mark and, after removals, ``remove_ids`` the rows that are
    gone; nobody is re-embedded and nothing is rebuilt. It is saved to ``<gallery>.faiss`` (after a build, and
    on close once the changes since the last save reach 1/``SAVE_EVERY`` of its size) with its sha256, size
    and the state it reflects in the meta table (key ``index``). The file is read into memory once, and handed
    to FAISS only if its size and sha256 match the record, so a crafted, torn or swapped file never reaches
    FAISS's reader (which could crash on it). A missing, corrupt or mismatched file is rebuilt from the
    database with a :class:`GalleryIndexWarning` (Python ``warnings``: printed to stderr once per process by
    default). FAISS calls on fewer than ``PARALLEL_MIN`` rows run single-threaded. When FAISS sees a GPU,
    searches run on a GPU copy of the index.

Names
    A name is stored NFC-normalised, ends trimmed, each inner run of spaces (any Unicode space) made one space;
    it must be 1-128 characters, without control, format (zero-width, bidi), private-use, surrogate or
    unassigned characters, without path separators (``/``, ``\\``, also their compatibility forms such as
    fullwidth ``／``), not only dots, and no word may mix Latin, Cyrillic and Greek letters (``Аlice`` with a
    Cyrillic ``А`` is refused outright). Lookalikes: each name has a *skeleton* (NFKC, case-folded, Cyrillic
    and Greek letters that look Latin mapped to those Latin letters, spaces collapsed). A new name, or a
    rename, whose skeleton equals that of an existing different identity is refused with a message naming that
    identity: once ``Alice`` exists, ``alice``, ``ALICE``, fullwidth ``Ａｌｉｃｅ`` and mathematical ``𝐀𝐥𝐢𝐜𝐞``
    are taken, as ``Асе`` (all Cyrillic) is once ``Ace`` exists. Renaming an identity to a lookalike of its own
    name (fixing capitals) is allowed, and a lookup by a missing name suggests its lookalike.
    Galleries written before skeletons existed (schema 1) are migrated on open; lookalike pairs already in them
    are kept.

Templates
    ``search_templates`` compares a probe with one template per identity: the mean of its L2-normalised
    embeddings, renormalised (:func:`faceverify.decision.identity_templates`), computed from SQLite and kept in
    memory until the next write. The stored embeddings stay the truth; ``search`` (best embedding per identity)
    remains. Template search is exact (one matrix product over the identities).

Kept faces
    Each embedding may carry the face crop it was made from (:class:`~faceverify.align.FaceCrop`: a JPEG of
    the face with margin and its 5 landmarks), in its own table, deleted with the embedding, so that
    ``FaceVerifier.reembed`` can make a gallery for another model without the source images.

A ``Gallery`` object belongs to one thread; open one per thread or process.

Modules, from the bottom up: ``names`` (the name policy), ``records`` (what goes in and comes out), ``store``
(SQLite), ``index`` (FAISS, and the tunables named above but ``SAVE_EVERY``), ``sync`` (the index kept in step
with SQLite; ``SAVE_EVERY``), ``ranking`` (index hits to identities); this module holds the :class:`Gallery`
that ties them together. ``pgstore`` (connection, schema) and ``postgres`` are the PostgreSQL store, ``migrate``
copies a gallery between any two locations.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np

from ..decision import identity_templates
from ..errors import ConflictError, GalleryError
from .base import GalleryBase, rank_templates
from .index import SearchIndex
from .names import name_skeleton, validate_name
from .pgstore import is_database_url
from .ranking import rank
from .records import Enrolment, Identity, enrolment_row, face_of, parse_box
from .store import Store, database_error, db_errors
from .sync import GalleryIndexWarning, build_index, catch_up, load_saved_index, needs_saving, save_index

if TYPE_CHECKING:
    from .postgres import PostgresGallery

__all__ = [
    "Enrolment",
    "Gallery",
    "GalleryIndexWarning",
    "Identity",
    "default_gallery_path",
    "gallery_exists",
    "gallery_location",
    "is_database_url",
    "open_gallery",
    "name_skeleton",
    "validate_name",
]


def default_gallery_path() -> Path | str:
    """``$FACEVERIFY_GALLERY`` (a path, or a ``postgresql://`` URL) or ``gallery.sqlite`` in the user's data
    directory."""
    env = os.environ.get("FACEVERIFY_GALLERY")
    if env:
        return gallery_location(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("faceverify")) / "gallery.sqlite"


def gallery_location(location: str | Path | None) -> Path | str:
    """A gallery location as given (``--gallery``): a ``postgresql://`` URL stays text, anything else is an
    SQLite file path; None is the default location."""
    if location is None or location == "":
        return default_gallery_path()
    return location if is_database_url(location) else Path(location)


def gallery_exists(location: str | Path) -> bool:
    """Whether there is a gallery to read at ``location`` (a database URL is only known once connected)."""
    return is_database_url(location) or Path(location).exists()


def open_gallery(location: str | Path | None, model_id: str | None = None, embedding_size: int | None = None,
                 create: bool = True) -> "Gallery | PostgresGallery":
    """The gallery at ``location``: the PostgreSQL store for a ``postgresql://`` URL, else the SQLite file
    (``model_id`` None: any model). ``create=False`` refuses a database without a gallery."""
    location = gallery_location(location)
    if is_database_url(location):
        from .postgres import PostgresGallery

        return PostgresGallery(str(location), model_id, embedding_size, create=create)
    return Gallery(location, model_id, embedding_size)


class Gallery(GalleryBase):
    """A gallery file (the SQLite store). Every write is one transaction: a command is applied whole or not at all."""

    def __init__(self, path: str | Path, model_id: str | None = None, embedding_size: int | None = None):
        self.path = Path(path)
        self.index_path = self.path.with_name(self.path.name + ".faiss")
        self._store = Store(self.path, model_id, embedding_size)
        self._index: SearchIndex | None = None
        self._templates: tuple[tuple[int, int, int], tuple[list[str], np.ndarray]] | None = None

    @property
    def model_id(self) -> str | None:
        """The model this gallery was opened for (None: any)."""
        return self._store.model_id

    @property
    def embedding_size(self) -> int | None:
        """The embedding size this gallery was opened for (None: any)."""
        return self._store.embedding_size

    @property
    @db_errors
    def stored_model_id(self) -> str | None:
        """The model the gallery's embeddings were made with (None before the first enrolment)."""
        return self._store.meta("model_id")

    @property
    def search_index(self) -> SearchIndex | None:
        """The in-memory search index as of the last search (None before it), for inspection only: its
        ``kind`` ("flat" or "ivf"), ``ntotal``, ``trained_n`` and GPU copy ``gpu``; the gallery keeps it up to date."""
        return self._index

    def close(self) -> None:
        """Save the search index if it changed enough since its last save, and close the database."""
        try:
            if self._index is not None and needs_saving(self._index):
                self.save_index()
        finally:
            self._index = None
            self._store.close()

    # -- writes ------------------------------------------------------------------------------------------

    @db_errors
    def enroll_many(self, batch: Iterable[tuple[str, Sequence[Enrolment]]]) -> dict[str, int]:
        """Enroll several identities in one transaction (all or nothing); returns new embeddings per name."""
        store = self._store
        if store.model_id is None:
            raise GalleryError("enrolment needs the model id of the embeddings")
        size = store.embedding_size
        prepared = [(validate_name(name), [enrolment_row(item, size) for item in items]) for name, items in batch]
        now = time.time()
        added: dict[str, int] = {}
        with store.write() as db:
            store.bind_model([len(row[0]) // 4 for _, rows in prepared for row in rows])
            (top,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM embeddings").fetchone()
            next_id = max(store.meta_int("last_embedding_id"), int(top)) + 1
            for name, rows in prepared:
                identity_id = store.identity_for_enrolment(name, now)
                ids = range(next_id, next_id + len(rows))
                cur = db.executemany(
                    "INSERT OR IGNORE INTO embeddings(id, identity_id, vector, source, source_sha256, box, model_id, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(rid, identity_id, *row[:4], store.model_id, now) for rid, row in zip(ids, rows)],
                )
                added[name] = added.get(name, 0) + max(cur.rowcount, 0)
                db.executemany(  # only for the rows inserted (a face already enrolled keeps what it had)
                    "INSERT INTO faces(embedding_id, image, landmarks, detector) SELECT ?, ?, ?, ? "
                    "WHERE EXISTS (SELECT 1 FROM embeddings WHERE id = ?)",
                    [(rid, *row[4], rid) for rid, row in zip(ids, rows) if row[4] is not None],
                )
                next_id += len(rows)
            store.set_meta("last_embedding_id", str(next_id - 1))
            store.bump()
        return added

    @db_errors
    def remove(self, name: str) -> int:
        """Delete an identity and its embeddings; returns the number of embeddings removed."""
        store = self._store
        with store.write() as db:
            identity_id = store.identity_id(name)
            rows = db.execute("SELECT id FROM embeddings WHERE identity_id = ?", (identity_id,))
            ids = np.array([r[0] for r in rows], np.int64)
            epoch = store.meta_int("removal_epoch")
            db.execute("DELETE FROM identities WHERE id = ?", (identity_id,))
            store.set_meta("removal_epoch", str(epoch + 1))
            store.bump()
        index = self._index
        if index is not None and index.epoch == epoch:
            index.remove(ids)
            index.epoch = epoch + 1
        return len(ids)

    @db_errors
    def rename(self, old: str, new: str) -> None:
        """Rename an identity (its embeddings and the search index are untouched)."""
        new = validate_name(new)
        store = self._store
        with store.write() as db:
            identity_id = store.identity_id(old)
            if db.execute("SELECT 1 FROM identities WHERE name = ? AND id != ?", (new, identity_id)).fetchone():
                raise ConflictError(f"identity '{new}' already exists")
            skeleton = store.check_lookalike(new, identity_id)
            db.execute(
                "UPDATE identities SET name = ?, skeleton = ?, updated_at = ? WHERE id = ?",
                (new, skeleton, time.time(), identity_id),
            )
            store.bump()

    # -- reads -------------------------------------------------------------------------------------------

    @db_errors
    def identities(self) -> list[Identity]:
        rows = self._store.db.execute(
            "SELECT i.name, COUNT(e.id), i.created_at, i.updated_at FROM identities i "
            "LEFT JOIN embeddings e ON e.identity_id = i.id GROUP BY i.id ORDER BY i.name"
        ).fetchall()
        return [Identity(n, int(c), float(a), float(u)) for n, c, a, u in rows]

    @db_errors
    def embeddings_of(self, name: str) -> list[dict]:
        """Stored metadata of one identity's embeddings (no vectors; ``id``: the embedding's, ``box`` as numbers,
        ``face``: whether its face is kept)."""
        identity_id = self._store.identity_id(name)
        rows = self._store.db.execute(
            "SELECT e.id, e.source, e.source_sha256, e.box, e.model_id, e.created_at, f.embedding_id IS NOT NULL "
            "FROM embeddings e LEFT JOIN faces f ON f.embedding_id = e.id WHERE e.identity_id = ? ORDER BY e.id",
            (identity_id,),
        ).fetchall()
        return [dict(id=i, source=s, source_sha256=h, box=parse_box(b), model_id=m, created_at=t, face=bool(k))
                for i, s, h, b, m, t, k in rows]

    def iter_vectors(self, faces: bool = False) -> Iterator[tuple[str, np.ndarray, dict]]:
        """Every stored embedding with its identity name and metadata; with ``faces``, ``meta["face"]`` is its
        kept :class:`~faceverify.align.FaceCrop` or None."""
        kept = "f.image, f.landmarks, f.detector" if faces else "NULL, NULL, NULL"
        try:
            rows = self._store.db.execute(
                f"SELECT i.name, e.vector, e.source, e.source_sha256, e.box, e.model_id, e.created_at, {kept} "
                "FROM embeddings e JOIN identities i ON i.id = e.identity_id "
                f"{'LEFT JOIN faces f ON f.embedding_id = e.id ' if faces else ''}ORDER BY e.id"
            )
            for name, blob, source, sha, box, model_id, created, *face in rows:
                meta = dict(source=source, source_sha256=sha, box=box or None, model_id=model_id, created_at=created)
                if faces:
                    meta["face"] = face_of(*face)
                yield name, np.frombuffer(blob, np.float32), meta
        except sqlite3.DatabaseError as exc:
            raise database_error(self.path, exc) from None

    @db_errors
    def __len__(self) -> int:
        (n,) = self._store.db.execute("SELECT COUNT(*) FROM identities").fetchone()
        return int(n)

    @db_errors
    def embedding_count(self) -> int:
        """How many embeddings a search compares a probe with."""
        (n,) = self._store.db.execute("SELECT COUNT(*) FROM embeddings").fetchone()
        return int(n)

    @db_errors
    def require_entries(self) -> None:
        """Raise GalleryError ("<path>: the gallery is empty (enroll someone first)") unless an embedding is
        enrolled, i.e. unless a search has something to compare with."""
        if not self._store.has_embeddings():
            raise ConflictError(f"{self.path}: the gallery is empty (enroll someone first)")

    # -- search ------------------------------------------------------------------------------------------

    @db_errors
    def search(self, queries: np.ndarray, k: int = 32) -> list[list[tuple[str, float]]]:
        """For each query, identities ranked by their best-matching embedding's cosine similarity."""
        queries = self.check_queries(queries)
        return rank(self._store, self._current_index(), queries, k)

    @db_errors
    def search_templates(self, queries: np.ndarray, k: int = 32) -> list[list[tuple[str, float]]]:
        """For each query, identities ranked by the cosine similarity of their template: the renormalised mean
        of their normalised embeddings (exact search; the stored embeddings stay the truth)."""
        queries = self.check_queries(queries)
        return rank_templates(queries, *self._current_templates(), k)

    @db_errors
    def template_sizes(self) -> list[int]:
        """How many embeddings each identity's template averages: one entry per template a search compares."""
        rows = self._store.db.execute("SELECT COUNT(*) FROM embeddings GROUP BY identity_id").fetchall()
        return [int(n) for (n,) in rows]

    def dim(self) -> int:
        """The gallery's embedding size (else the one it was opened with); raises if there is none."""
        return self._store.dim()

    def _current_templates(self) -> tuple[list[str], np.ndarray]:
        """The identity templates as of the database's last write, recomputed only after a write."""
        with self._store.read() as db:
            state = self._store.counters()
            if self._templates is not None and self._templates[0] == state:
                return self._templates[1]
            rows = db.execute(
                "SELECT i.name, e.vector FROM embeddings e JOIN identities i ON i.id = e.identity_id ORDER BY e.id"
            ).fetchall()
        dim = self._store.dim()
        rows = [(n, b) for n, b in rows if len(b) == 4 * dim]
        vectors = np.stack([np.frombuffer(b, np.float32) for _, b in rows])
        self._templates = (state, identity_templates(vectors, [n for n, _ in rows]))
        return self._templates[1]

    def _current_index(self) -> SearchIndex:
        """The in-memory index, loaded or built on first use and brought up to date with the database."""
        index = self._index
        if index is None:
            # stacklevel 3: a warning points at search's db_errors wrapper, one place whoever searches
            index = self._index = load_saved_index(self._store, self.index_path, stacklevel=3)
        else:
            catch_up(self._store, index)
        if index is None or index.needs_rebuild():
            index = self._index = build_index(self._store)
            self.save_index()
        return index

    @db_errors
    def save_index(self) -> bool:
        """Write the in-memory index to ``<gallery>.faiss`` and record its sha256; False if there was nothing to
        save or the database stayed busy (the index is a cache: saving later, or never, loses nothing)."""
        if self._index is None:
            return False
        return save_index(self._store, self._index, self.index_path, stacklevel=2)
