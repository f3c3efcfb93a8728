"""The gallery: enrolled identities in SQLite (the durable truth) and a FAISS search index derived from it.

Durability and concurrency
    Every command (enroll, remove, rename) is one ``BEGIN IMMEDIATE`` transaction in a WAL-mode database with
    ``synchronous=FULL``: a writer killed at any moment leaves the state before or after the command, never a
    mix. Concurrent writers queue on SQLite's write lock (60 s busy timeout); readers never wait for writers.
    Embedding row ids only grow (``meta.last_embedding_id``), so "rows above a high-water mark" is exactly "rows
    added since", and ``meta.removal_epoch`` counts removals.

Search index (a cache, never the truth)
    Up to ``EXACT_LIMIT`` embeddings, search is exact (``IndexFlatIP`` in an ``IndexIDMap2``). Beyond that it
    is an inverted-file index (``IndexIVFFlat``, inner product, ``nlist = 2 sqrt(N)`` trained on a sample,
    ``NPROBE`` lists probed) whose per-identity scores are then made exact: the best ``RERANK_IDENTITIES``
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

A ``Gallery`` object belongs to one thread; open one per thread or process.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import sqlite3
import time
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from .errors import GalleryError

SCHEMA_VERSION = 2
MAX_NAME_LENGTH = 128

EXACT_LIMIT = 100_000
"""Most embeddings searched exactly; above this the IVF index is used (see BENCHMARKS.md)."""
NPROBE = 32
"""Inverted lists probed per query by the IVF index."""
RERANK_IDENTITIES = 8
"""Candidate identities from the IVF index whose scores are recomputed exactly over all their embeddings."""
RETRAIN_GROWTH = 4
"""The IVF index is retrained once the gallery holds this many times the vectors it was trained on."""
SAVE_EVERY = 64
"""The index is saved on close once unsaved changes reach 1/SAVE_EVERY of its size (amortised O(1) writes)."""
PARALLEL_MIN = 64
"""FAISS calls on fewer rows (queries searched, vectors added or removed) run single-threaded: waking threads for
a few rows costs more than it saves, and on a busy machine a parallel region waits for descheduled threads
(measured on 2 shared cores: one query 0.45 -> 48 ms, adding 10 vectors to an IVF 0.1 -> 36 ms)."""
TRAIN_PER_LIST = 40
SAVE_BUSY_MS = 5_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS identities (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    skeleton TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS embeddings (
    id INTEGER PRIMARY KEY,
    identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    vector BLOB NOT NULL,
    source TEXT NOT NULL,
    source_sha256 TEXT NOT NULL,
    box TEXT NOT NULL DEFAULT '',
    model_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (identity_id, source_sha256, box)
);
CREATE INDEX IF NOT EXISTS embeddings_identity ON embeddings(identity_id);
"""

T = TypeVar("T")


class GalleryIndexWarning(UserWarning):
    """The saved search index could not be used and is being rebuilt from the gallery database."""


def default_gallery_path() -> Path:
    """``$FACEVERIFY_GALLERY`` or ``gallery.sqlite`` in the user's data directory."""
    env = os.environ.get("FACEVERIFY_GALLERY")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("faceverify")) / "gallery.sqlite"


# -- names -------------------------------------------------------------------------------------------------

_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Cyrillic and Greek letters (after case folding) that render like a Latin letter.
_LOOKALIKES = str.maketrans(
    "авеіјкмнопрстухѕԁԛԝһӏүɑıαβεηικμνορτυχζϲ",
    "abeijkmhonpctyxsdqwhlyaiabenikmvoptuxzc",
)
_SCRIPTS = ("LATIN", "CYRILLIC", "GREEK")


def _collapse(name: str) -> str:
    """NFC, ends trimmed, every run of space separators (Zs) inside turned into one plain space."""
    text = unicodedata.normalize("NFC", name).strip()
    spaced = "".join(" " if unicodedata.category(ch) == "Zs" else ch for ch in text)
    return " ".join(part for part in spaced.split(" ") if part)


def name_skeleton(name: str) -> str:
    """The key under which lookalike names collide: NFKC, case-folded, lookalike letters mapped to Latin."""
    folded = unicodedata.normalize("NFKC", _collapse(name)).casefold()
    mapped = unicodedata.normalize("NFD", folded).translate(_LOOKALIKES)
    return _collapse(mapped)


def validate_name(name: str) -> str:
    """Normalise (NFC, whitespace runs -> one space, trimmed) and check an identity name; raises GalleryError."""
    if not isinstance(name, str):
        raise GalleryError("identity name must be text")
    clean = _collapse(name)
    if not clean:
        raise GalleryError("identity name is empty")
    if len(clean) > MAX_NAME_LENGTH:
        raise GalleryError(f"identity name is longer than {MAX_NAME_LENGTH} characters ({len(clean)})")
    for ch in clean:
        if unicodedata.category(ch) in _FORBIDDEN_CATEGORIES:
            raise GalleryError(f"identity name {clean!r} contains a control or invisible character (U+{ord(ch):04X})")
    compat = unicodedata.normalize("NFKC", clean)
    if "/" in compat or "\\" in compat:
        raise GalleryError(f"identity name {clean!r} contains a path separator")
    if compat.strip(".") == "":
        raise GalleryError(f"identity name {clean!r} is only dots")
    for word in clean.split(" "):
        scripts = {s for ch in word if ch.isalpha() for s in _SCRIPTS if unicodedata.name(ch, "").startswith(s + " ")}
        if len(scripts) > 1:
            raise GalleryError(
                f"identity name {clean!r} mixes {' and '.join(sorted(s.title() for s in scripts))} letters in "
                f"{word!r} (a lookalike spelling)"
            )
    return clean


# -- records -----------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Match:
    """Best gallery identity for a query, with its similarity and the runner-up's."""

    name: str
    score: float
    second_name: str | None
    second_score: float | None


def _db_errors(method: Callable[..., T]) -> Callable[..., T]:
    """Turn SQLite failures (a corrupt or foreign file) into a GalleryError naming the gallery."""

    @functools.wraps(method)
    def wrapper(self: "Gallery", *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"{self.path}: gallery database error ({exc})") from None

    return wrapper


# -- the search index --------------------------------------------------------------------------------------


def _nlist_for(n: int) -> int:
    """Inverted lists for an IVF index trained on n vectors."""
    return max(64, int(2 * math.sqrt(n)))


@contextlib.contextmanager
def _faiss_threads(rows: int) -> Iterator[None]:
    """FAISS on one thread for calls on fewer than PARALLEL_MIN rows, else as configured."""
    import faiss

    if rows >= PARALLEL_MIN:
        yield
        return
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


@functools.lru_cache(maxsize=None)
def _gpu_resources() -> Any:
    """FAISS GPU resources when FAISS sees a GPU (created once per process), else None."""
    import faiss

    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() <= 0:
        return None
    return faiss.StandardGpuResources()


class _Index:
    """A FAISS index over embedding row ids and the database state it reflects."""

    def __init__(self, index: Any, kind: str, dim: int, hwm: int, epoch: int, generation: int, trained_n: int):
        self.index = index
        self.kind = kind
        self.dim = dim
        self.hwm = hwm
        self.epoch = epoch
        self.generation = generation
        self.trained_n = trained_n
        self.unsaved = 0
        self.gpu: Any = None

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, dim: int, hwm: int, epoch: int, generation: int) -> "_Index":
        """Exact index for up to EXACT_LIMIT vectors, else an IVF index trained on a sample of them."""
        import faiss

        n = len(ids)
        if n <= EXACT_LIMIT:
            index, kind, trained_n = faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), "flat", 0
        else:
            nlist = _nlist_for(n)
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.niter = 10
            sample = np.random.default_rng(0).choice(n, min(n, nlist * TRAIN_PER_LIST), replace=False)
            index.train(np.ascontiguousarray(vectors[np.sort(sample)]))
            index.nprobe = min(nlist, NPROBE)
            kind, trained_n = "ivf", n
        out = cls(index, kind, dim, hwm, epoch, generation, trained_n)
        out.add(ids, vectors)
        return out

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def needs_rebuild(self) -> bool:
        """Whether the index kind or training no longer suits its size."""
        if self.kind == "flat":
            return self.ntotal > EXACT_LIMIT
        return self.ntotal < EXACT_LIMIT // 2 or self.ntotal > RETRAIN_GROWTH * self.trained_n

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add embedding rows (and to the GPU copy, if any)."""
        if len(ids):
            with _faiss_threads(len(ids)):
                self.index.add_with_ids(vectors, ids)
                if self.gpu is not None:
                    self.gpu.add_with_ids(vectors, ids)
            self.unsaved += len(ids)

    def remove(self, ids: np.ndarray) -> None:
        """Remove embedding rows (ids not in the index are ignored); the GPU copy is redone on next use."""
        if len(ids):
            with _faiss_threads(len(ids)):
                self.unsaved += int(self.index.remove_ids(np.ascontiguousarray(ids, np.int64)))
            self.gpu = None

    def ids(self) -> np.ndarray:
        """Every embedding row id in the index."""
        import faiss

        if self.kind == "flat":
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        lists = self.index.invlists
        parts = [
            faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
            for i in range(self.index.nlist)
            if lists.list_size(i)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and embedding row ids (-1: none) of each query's k nearest rows."""
        with _faiss_threads(len(queries)):
            return self._searcher().search(queries, k)

    def _searcher(self) -> Any:
        """The GPU copy of the index when FAISS sees a GPU (made on first use), else the index itself."""
        resources = _gpu_resources()
        if resources is None:
            return self.index
        if self.gpu is None:
            import faiss

            self.gpu = faiss.index_cpu_to_gpu(resources, 0, self.index)
        return self.gpu

    def record(self, sha256: str, size: int, model_id: str) -> dict:
        """What the meta table stores about the saved file."""
        return dict(sha256=sha256, bytes=size, kind=self.kind, dim=self.dim, model_id=model_id, hwm=self.hwm,
                    epoch=self.epoch, generation=self.generation, trained_n=self.trained_n, ntotal=self.ntotal)


# -- the gallery -------------------------------------------------------------------------------------------


class Gallery:
    """A gallery file. Every write is one transaction, so a command is applied whole or not at all."""

    def __init__(self, path: str | Path, model_id: str | None = None, embedding_size: int | None = None):
        self.path = Path(path)
        self.index_path = self.path.with_name(self.path.name + ".faiss")
        self.model_id = model_id
        self.embedding_size = embedding_size
        self._index: _Index | None = None
        if self.path.is_dir():
            raise GalleryError(f"{self.path}: gallery path is a directory")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise GalleryError(f"{self.path}: cannot open gallery ({exc})") from None
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise GalleryError(f"{self.path}: not a faceverify gallery ({exc})") from None
        except BaseException:
            self._db.close()
            raise

    def _open(self) -> None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "meta" not in tables:
            raise GalleryError(f"{self.path}: not a faceverify gallery (an SQLite database of something else)")
        self._db.execute("PRAGMA busy_timeout = 60000")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute("PRAGMA foreign_keys = ON")
        with self._write() as db:
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            version = self._meta("schema_version")
            if version is None:
                if tables:
                    raise GalleryError(f"{self.path}: not a faceverify gallery (no schema version)")
                self._executescript(_SCHEMA)
                for key, value in (("schema_version", SCHEMA_VERSION), ("generation", 0),
                                   ("last_embedding_id", 0), ("removal_epoch", 0)):
                    self._set_meta(key, str(value))
            elif version == "1":
                self._migrate_from_1()
            elif version != str(SCHEMA_VERSION):
                raise GalleryError(
                    f"{self.path}: gallery schema version {version[:20]!r} is not supported "
                    f"(this faceverify reads {SCHEMA_VERSION} and migrates 1)"
                )
            db.execute("CREATE INDEX IF NOT EXISTS identities_skeleton ON identities(skeleton)")
            self._check_model()

    def _executescript(self, script: str) -> None:
        for stmt in filter(str.strip, script.split(";")):
            self._db.execute(stmt)

    def _migrate_from_1(self) -> None:
        """Schema 1 -> 2: name skeletons and the monotonic embedding id counter."""
        self._db.execute("ALTER TABLE identities ADD COLUMN skeleton TEXT NOT NULL DEFAULT ''")
        for identity_id, name in self._db.execute("SELECT id, name FROM identities").fetchall():
            self._db.execute("UPDATE identities SET skeleton = ? WHERE id = ?", (name_skeleton(name), identity_id))
        (last,) = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM embeddings").fetchone()
        self._set_meta("last_embedding_id", str(last))
        self._set_meta("removal_epoch", "0")
        self._set_meta("schema_version", str(SCHEMA_VERSION))

    def _check_model(self) -> None:
        stored = self._meta("model_id")
        if stored is not None and self.model_id is not None and stored != self.model_id:
            raise GalleryError(
                f"{self.path}: gallery was enrolled with model {stored}, not {self.model_id}; "
                "embeddings of different models are never mixed (use another --gallery or --model)"
            )
        size = self._meta("embedding_size")
        if stored is not None and self.embedding_size is not None and size != str(self.embedding_size):
            raise GalleryError(f"{self.path}: gallery holds {size}-d embeddings, not {self.embedding_size}-d")

    # -- transactions -------------------------------------------------------------------------------------

    class _Tx:
        """``BEGIN IMMEDIATE`` (a write) or ``BEGIN`` (a consistent read snapshot) ... COMMIT / ROLLBACK."""

        def __init__(self, db: sqlite3.Connection, begin: str, busy_ms: int | None = None):
            self.db, self.begin, self.busy_ms = db, begin, busy_ms

        def __enter__(self) -> sqlite3.Connection:
            if self.busy_ms is not None:
                self.db.execute(f"PRAGMA busy_timeout = {int(self.busy_ms)}")
            try:
                self.db.execute(self.begin)
            finally:
                if self.busy_ms is not None:
                    self.db.execute("PRAGMA busy_timeout = 60000")
            return self.db

        def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
            if exc_type is None:
                self.db.execute("COMMIT")
            elif self.db.in_transaction:
                self.db.execute("ROLLBACK")

    def _write(self, busy_ms: int | None = None) -> "Gallery._Tx":
        return Gallery._Tx(self._db, "BEGIN IMMEDIATE", busy_ms)

    def _read(self) -> "Gallery._Tx":
        return Gallery._Tx(self._db, "BEGIN")

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _meta_int(self, key: str) -> int:
        value = self._meta(key) or "0"
        if not value.isdigit():
            raise GalleryError(f"{self.path}: corrupt gallery metadata ({key} = {value[:20]!r})")
        return int(value)

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def _bump(self) -> None:
        self._set_meta("generation", str(self._meta_int("generation") + 1))

    @property
    @_db_errors
    def generation(self) -> int:
        """Counts committed writes."""
        return self._meta_int("generation")

    @property
    @_db_errors
    def stored_model_id(self) -> str | None:
        return self._meta("model_id")

    def close(self) -> None:
        """Save the search index if it changed enough since its last save, and close the database."""
        index, self._index = self._index, None
        try:
            if index is not None and index.unsaved >= max(1, index.ntotal // SAVE_EVERY):
                self._index = index
                self.save_index()
        finally:
            self._index = None
            self._db.close()

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes ------------------------------------------------------------------------------------------

    def enroll(self, name: str, items: Sequence[Enrolment]) -> int:
        """Add embeddings to ``name`` (created if new); returns how many were new. Re-enrolling the same face
        of the same file is a no-op."""
        return sum(self.enroll_many([(name, items)]).values())

    @_db_errors
    def enroll_many(self, batch: Iterable[tuple[str, Sequence[Enrolment]]]) -> dict[str, int]:
        """Enroll several identities in one transaction (all or nothing); returns new embeddings per name."""
        if self.model_id is None:
            raise GalleryError("enrolment needs the model id of the embeddings")
        prepared = [(validate_name(name), [self._row(item) for item in items]) for name, items in batch]
        now = time.time()
        added: dict[str, int] = {}
        with self._write() as db:
            self._bind_model(prepared)
            (top,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM embeddings").fetchone()
            next_id = max(self._meta_int("last_embedding_id"), int(top)) + 1
            for name, rows in prepared:
                identity_id = self._identity_for_enrolment(name, now)
                cur = db.executemany(
                    "INSERT OR IGNORE INTO embeddings(id, identity_id, vector, source, source_sha256, box, model_id, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(next_id + i, identity_id, *row, self.model_id, now) for i, row in enumerate(rows)],
                )
                next_id += len(rows)
                added[name] = added.get(name, 0) + max(cur.rowcount, 0)
            self._set_meta("last_embedding_id", str(next_id - 1))
            self._bump()
        return added

    def _row(self, item: Enrolment) -> tuple[bytes, str, str, str]:
        """(vector bytes, source, source sha256, box) of an enrolment, checked."""
        try:
            vec = np.asarray(item.vector, np.float32).reshape(-1)
        except (TypeError, ValueError):
            raise GalleryError(f"embedding of {item.source} is not a numeric vector") from None
        if self.embedding_size is not None and vec.size != self.embedding_size:
            raise GalleryError(f"embedding of {item.source} has size {vec.size}, expected {self.embedding_size}")
        if vec.size == 0 or not np.isfinite(vec).all():
            raise GalleryError(f"embedding of {item.source} is empty or not finite")
        box = "" if item.box is None else ",".join(f"{float(v):.1f}" for v in item.box)
        return vec.tobytes(), str(item.source), str(item.source_sha256), box

    def _bind_model(self, prepared: list[tuple[str, list[tuple[bytes, str, str, str]]]]) -> None:
        """Record the model and embedding size on first enrolment, else refuse another model or size."""
        stored = self._meta("model_id")
        sizes = [len(row[0]) // 4 for _, rows in prepared for row in rows]
        if stored is None:
            dim = self.embedding_size or (sizes[0] if sizes else 0)
            if not dim:
                raise GalleryError("the first enrolment needs the embedding size")
            self._set_meta("model_id", str(self.model_id))
            self._set_meta("embedding_size", str(dim))
        elif stored != self.model_id:
            raise GalleryError(f"{self.path}: gallery was enrolled with model {stored}, not {self.model_id}")
        dim = self._dim()
        wrong = next((s for s in sizes if s != dim), None)
        if wrong is not None:
            raise GalleryError(f"{self.path}: an embedding has size {wrong}, the gallery holds size {dim}")

    def _identity_for_enrolment(self, name: str, now: float) -> int:
        row = self._db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
        if row is not None:
            self._db.execute("UPDATE identities SET updated_at = ? WHERE id = ?", (now, row[0]))
            return int(row[0])
        skeleton = self._check_lookalike(name, None)
        cur = self._db.execute(
            "INSERT INTO identities(name, created_at, updated_at, skeleton) VALUES (?, ?, ?, ?)",
            (name, now, now, skeleton),
        )
        return int(cur.lastrowid)

    def _check_lookalike(self, name: str, identity_id: int | None) -> str:
        """The name's skeleton; raises if another identity's name looks the same."""
        skeleton = name_skeleton(name)
        row = self._db.execute(
            "SELECT name FROM identities WHERE skeleton = ? AND id IS NOT ? LIMIT 1", (skeleton, identity_id)
        ).fetchone()
        if row is not None:
            raise GalleryError(
                f"identity name {name!r} looks like the existing identity {row[0]!r} (same letters after "
                f"Unicode compatibility and case folding and lookalike mapping); use {row[0]!r} or a clearly "
                "different name"
            )
        return skeleton

    @_db_errors
    def remove(self, name: str) -> int:
        """Delete an identity and its embeddings; returns the number of embeddings removed."""
        with self._write() as db:
            identity_id = self._identity_id(name)
            ids = np.array(
                [r[0] for r in db.execute("SELECT id FROM embeddings WHERE identity_id = ?", (identity_id,))], np.int64
            )
            epoch = self._meta_int("removal_epoch")
            db.execute("DELETE FROM identities WHERE id = ?", (identity_id,))
            self._set_meta("removal_epoch", str(epoch + 1))
            self._bump()
        index = self._index
        if index is not None and index.epoch == epoch:
            index.remove(ids)
            index.epoch = epoch + 1
        return len(ids)

    @_db_errors
    def rename(self, old: str, new: str) -> None:
        """Rename an identity (its embeddings and the search index are untouched)."""
        new = validate_name(new)
        with self._write() as db:
            identity_id = self._identity_id(old)
            if db.execute("SELECT 1 FROM identities WHERE name = ? AND id != ?", (new, identity_id)).fetchone():
                raise GalleryError(f"identity '{new}' already exists")
            skeleton = self._check_lookalike(new, identity_id)
            db.execute(
                "UPDATE identities SET name = ?, skeleton = ?, updated_at = ? WHERE id = ?",
                (new, skeleton, time.time(), identity_id),
            )
            self._bump()

    def _identity_id(self, name: str) -> int:
        key = _collapse(name) if isinstance(name, str) else ""
        row = self._db.execute("SELECT id FROM identities WHERE name = ?", (key,)).fetchone()
        if row is not None:
            return int(row[0])
        hint = self._db.execute(
            "SELECT name FROM identities WHERE skeleton = ? LIMIT 1", (name_skeleton(key),)
        ).fetchone()
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise GalleryError(f"no identity named '{name}' in {self.path}{suggestion}")

    # -- reads -------------------------------------------------------------------------------------------

    @_db_errors
    def identities(self) -> list[Identity]:
        rows = self._db.execute(
            "SELECT i.name, COUNT(e.id), i.created_at, i.updated_at FROM identities i "
            "LEFT JOIN embeddings e ON e.identity_id = i.id GROUP BY i.id ORDER BY i.name"
        ).fetchall()
        return [Identity(n, int(c), float(a), float(u)) for n, c, a, u in rows]

    @_db_errors
    def embeddings_of(self, name: str) -> list[dict]:
        """Stored metadata of one identity's embeddings (no vectors)."""
        identity_id = self._identity_id(name)
        rows = self._db.execute(
            "SELECT source, source_sha256, box, model_id, created_at FROM embeddings WHERE identity_id = ? ORDER BY id",
            (identity_id,),
        ).fetchall()
        return [dict(source=s, source_sha256=h, box=b or None, model_id=m, created_at=t) for s, h, b, m, t in rows]

    def iter_vectors(self) -> Iterator[tuple[str, np.ndarray, dict]]:
        """Every stored embedding with its identity name and metadata."""
        try:
            rows = self._db.execute(
                "SELECT i.name, e.vector, e.source, e.source_sha256, e.box, e.model_id, e.created_at "
                "FROM embeddings e JOIN identities i ON i.id = e.identity_id ORDER BY e.id"
            )
            for name, blob, source, sha, box, model_id, created in rows:
                meta = dict(source=source, source_sha256=sha, box=box or None, model_id=model_id, created_at=created)
                yield name, np.frombuffer(blob, np.float32), meta
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"{self.path}: gallery database error ({exc})") from None

    @_db_errors
    def __len__(self) -> int:
        (n,) = self._db.execute("SELECT COUNT(*) FROM identities").fetchone()
        return int(n)

    @_db_errors
    def embedding_count(self) -> int:
        """How many embeddings a search compares a probe with."""
        (n,) = self._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()
        return int(n)

    # -- the search index ----------------------------------------------------------------------------------

    def _dim(self) -> int:
        value = self._meta("embedding_size") or str(self.embedding_size or "")
        if not value.isdigit() or int(value) == 0:
            raise GalleryError(f"{self.path}: gallery has no valid embedding size ({value[:20]!r})")
        return int(value)

    def _counters(self) -> tuple[int, int, int]:
        """(generation, last embedding id, removal epoch) of the current snapshot."""
        return self._meta_int("generation"), self._meta_int("last_embedding_id"), self._meta_int("removal_epoch")

    def _rows_above(self, hwm: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids and vectors of the embedding rows with id > hwm (call inside a read snapshot)."""
        (n,) = self._db.execute("SELECT COUNT(*) FROM embeddings WHERE id > ?", (hwm,)).fetchone()
        ids = np.empty(n, np.int64)
        vectors = np.empty((n, dim), np.float32)
        cursor = self._db.execute("SELECT id, vector FROM embeddings WHERE id > ? ORDER BY id", (hwm,))
        filled = 0
        while rows := cursor.fetchmany(65_536):
            for rid, blob in rows:
                if not isinstance(blob, bytes) or len(blob) != 4 * dim:
                    raise GalleryError(f"{self.path}: embedding row {rid} is corrupt (not {dim} float32 values)")
            ids[filled : filled + len(rows)] = [r[0] for r in rows]
            block = np.frombuffer(b"".join(r[1] for r in rows), np.float32)
            vectors[filled : filled + len(rows)] = block.reshape(-1, dim)
            filled += len(rows)
        if filled != n or not np.isfinite(vectors).all():
            raise GalleryError(f"{self.path}: stored embeddings are corrupt (non-finite values or rows changed)")
        return ids, vectors

    def _build_index(self) -> _Index:
        """A fresh index of every stored embedding, saved beside the gallery."""
        dim = self._dim()
        with self._read():
            generation, last, epoch = self._counters()
            ids, vectors = self._rows_above(0, dim)
        index = _Index.build(ids, vectors, dim, last, epoch, generation)
        del ids, vectors
        self._index = index
        self.save_index()
        return index

    def _catch_up(self, index: _Index) -> None:
        """Apply what other writers (or this process) committed since the index was last brought up to date."""
        with self._read() as db:
            generation, last, epoch = self._counters()
            if generation == index.generation:
                return
            gone = np.zeros(0, np.int64)
            if epoch != index.epoch:
                rows = db.execute("SELECT id FROM embeddings WHERE id <= ?", (index.hwm,))
                present = np.fromiter((r[0] for r in rows), np.int64)
                gone = np.setdiff1d(index.ids(), present, assume_unique=True)
            ids, vectors = self._rows_above(index.hwm, index.dim)
        index.remove(gone)
        index.add(ids, vectors)
        index.hwm, index.epoch, index.generation = last, epoch, generation

    def _load_saved_index(self) -> _Index | None:
        """The saved index brought up to date, or None when there is none usable (warned unless never saved)."""
        raw = self._meta("index")
        if raw is None:
            return None
        problem, index = self._read_index_file(raw)
        if problem is not None:
            warnings.warn(
                GalleryIndexWarning(f"{self.index_path}: search index {problem}; rebuilding it from {self.path.name}"),
                stacklevel=4,
            )
            return None
        assert index is not None
        self._catch_up(index)
        return index

    def _read_index_file(self, raw: str) -> tuple[str | None, _Index | None]:
        """(problem, None) or (None, index) for the file described by the meta record ``raw``."""
        import faiss

        try:
            state = json.loads(raw)
            sha, size, kind, dim = str(state["sha256"]), int(state["bytes"]), str(state["kind"]), int(state["dim"])
            counters = [int(state[k]) for k in ("hwm", "epoch", "generation", "trained_n", "ntotal")]
            model_id = state["model_id"]
        except (ValueError, TypeError, KeyError):
            return "has an unreadable record in the gallery", None
        if model_id != self._meta("model_id") or dim != self._dim() or kind not in ("flat", "ivf"):
            return "was built for another model or layout", None
        try:
            if self.index_path.stat().st_size != size:
                return "does not have the size recorded in the gallery (truncated or replaced)", None
            data = self.index_path.read_bytes()
        except FileNotFoundError:
            return "is missing", None
        except OSError as exc:
            return f"cannot be read ({exc.strerror})", None
        if hashlib.sha256(data).hexdigest() != sha:
            return "does not match the sha256 recorded in the gallery (corrupt or replaced)", None
        try:
            loaded = faiss.deserialize_index(np.frombuffer(data, np.uint8))
        except RuntimeError:
            return "cannot be read by FAISS", None
        del data
        expected = faiss.IndexIDMap2 if kind == "flat" else faiss.IndexIVFFlat
        hwm, epoch, generation, trained_n, ntotal = counters
        if not isinstance(loaded, expected) or loaded.d != dim or loaded.ntotal != ntotal:
            return "does not hold what the gallery recorded", None
        if kind == "ivf":
            loaded.nprobe = min(loaded.nlist, NPROBE)
        return None, _Index(loaded, kind, dim, hwm, epoch, generation, trained_n)

    def _search_index(self) -> _Index:
        """The in-memory index, loaded or built on first use and brought up to date with the database."""
        index = self._index
        if index is None:
            index = self._index = self._load_saved_index()
        else:
            self._catch_up(index)
        if index is None or index.needs_rebuild():
            index = self._build_index()
        return index

    @_db_errors
    def save_index(self) -> bool:
        """Write the in-memory index to ``<gallery>.faiss`` and record its sha256; False if there was nothing to
        save or the database stayed busy (the index is a cache: saving later, or never, loses nothing)."""
        import faiss

        index = self._index
        if index is None:
            return False
        data = faiss.serialize_index(index.index)
        record = index.record(hashlib.sha256(data).hexdigest(), len(data), str(self._meta("model_id")))
        tmp = self.index_path.with_name(self.index_path.name + ".tmp")
        try:
            with self._write(busy_ms=SAVE_BUSY_MS):  # one saver at a time: the file and its record agree
                with open(tmp, "wb") as fh:
                    fh.write(memoryview(data))
                os.replace(tmp, self.index_path)
                self._set_meta("index", json.dumps(record))
        except sqlite3.OperationalError:
            tmp.unlink(missing_ok=True)
            return False
        except OSError as exc:
            warnings.warn(GalleryIndexWarning(f"{self.index_path}: cannot save the search index ({exc})"), stacklevel=2)
            return False
        index.unsaved = 0
        return True

    @_db_errors
    def search(self, queries: np.ndarray, k: int = 32) -> list[list[tuple[str, float]]]:
        """For each query, identities ranked by their best-matching embedding's cosine similarity."""
        queries = np.ascontiguousarray(np.asarray(queries, np.float32))
        if queries.ndim != 2 or not np.isfinite(queries).all():
            raise GalleryError("query embeddings must be a finite N x D array")
        if self._db.execute("SELECT 1 FROM embeddings LIMIT 1").fetchone() is None:
            raise GalleryError(f"{self.path}: the gallery is empty (enroll someone first)")
        if queries.shape[1] != self._dim():
            raise GalleryError(f"query embeddings have size {queries.shape[1]}, the gallery holds size {self._dim()}")
        index = self._search_index()
        scores, ids = index.search(queries, max(1, min(k, index.ntotal)))
        owners = self._owners(ids)
        ranked: list[list[tuple[str, float]]] = []
        for row_scores, row_ids in zip(scores, ids):
            best: dict[int, float] = {}
            for s, i in zip(row_scores, row_ids):
                owner = owners.get(int(i))
                if owner is not None and owner not in best:
                    best[owner] = float(s)
            ranked.append(list(best.items()))
        if index.kind == "ivf":
            self._rescore(queries, ranked)
        names = self._names({owner for row in ranked for owner, _ in row})
        return [
            sorted(((names[o], s) for o, s in row if o in names), key=lambda kv: -kv[1]) for row in ranked
        ]

    def _owners(self, ids: np.ndarray) -> dict[int, int]:
        """Identity id of each embedding row id still in the database."""
        wanted = np.unique(ids[ids >= 0]).tolist()
        out: dict[int, int] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            out.update(self._db.execute(f"SELECT id, identity_id FROM embeddings WHERE id IN ({marks})", chunk))
        return out

    def _names(self, identity_ids: set[int]) -> dict[int, str]:
        wanted = sorted(identity_ids)
        out: dict[int, str] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            out.update(self._db.execute(f"SELECT id, name FROM identities WHERE id IN ({marks})", chunk))
        return out

    def _rescore(self, queries: np.ndarray, ranked: list[list[tuple[int, float]]]) -> None:
        """Replace the approximate scores of each query's leading candidate identities by exact ones."""
        dim = queries.shape[1]
        for q, row in zip(queries, ranked):
            top = sorted(row, key=lambda kv: -kv[1])[:RERANK_IDENTITIES]
            if not top:
                continue
            marks = ",".join("?" * len(top))
            rows = self._db.execute(
                f"SELECT identity_id, vector FROM embeddings WHERE identity_id IN ({marks})", [o for o, _ in top]
            ).fetchall()
            exact: dict[int, float] = {}
            for owner, blob in rows:
                if len(blob) == 4 * dim:
                    s = float(np.dot(np.frombuffer(blob, np.float32), q))
                    exact[owner] = max(s, exact.get(owner, -math.inf))
            row[:] = [(o, exact.get(o, s)) for o, s in row]

    def best_match(self, query: np.ndarray) -> Match:
        ranked = self.search(query[None, :])[0]
        if not ranked:
            raise GalleryError(f"{self.path}: no identity found")
        second = ranked[1] if len(ranked) > 1 else (None, None)
        return Match(ranked[0][0], ranked[0][1], second[0], second[1])
