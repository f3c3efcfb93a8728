"""The gallery's SQLite database: schema and migration, transactions, the meta table and bulk reads.

Schema 3 (this one) keeps, per embedding, the face crop it was made from (table ``faces``: JPEG, 5 landmarks
in its pixels, the detector), deleted with its embedding; schema 2 galleries gain the empty table on open, their
embeddings have no kept face. Deleted rows are overwritten (``secure_delete``): a removed identity's faces do not
linger in the file's free pages."""

from __future__ import annotations

import functools
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np

from .._util import chunked, placeholders
from ..errors import ConflictError, GalleryError, UnknownIdentityError
from .names import SKELETON_VERSION, collapse_name, name_skeleton
from .records import check_model

SCHEMA_VERSION = 3
BUSY_MS = 60_000

_FACES = """
CREATE TABLE IF NOT EXISTS faces (
    embedding_id INTEGER PRIMARY KEY REFERENCES embeddings(id) ON DELETE CASCADE,
    image BLOB NOT NULL,
    landmarks TEXT NOT NULL,
    detector TEXT NOT NULL
)
"""

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
""" + _FACES

T = TypeVar("T")


def database_error(path: Path, exc: sqlite3.DatabaseError) -> GalleryError:
    """The GalleryError reported for an SQLite failure (a corrupt or foreign file)."""
    return GalleryError(f"{path}: gallery database error ({exc})")


def db_errors(method: Callable[..., T]) -> Callable[..., T]:
    """Turn SQLite failures in a method of an object with a ``path`` into a GalleryError naming that path."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            raise database_error(self.path, exc) from None

    return wrapper


class Transaction:
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
                self.db.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
        return self.db

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        elif self.db.in_transaction:
            self.db.execute("ROLLBACK")


class Store:
    """An open gallery database bound to one model (``model_id`` None: whatever the gallery holds)."""

    def __init__(self, path: Path, model_id: str | None, embedding_size: int | None):
        self.path = path
        self.model_id = model_id
        self.embedding_size = embedding_size
        if path.is_dir():
            raise GalleryError(f"{path}: gallery path is a directory")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=BUSY_MS / 1000, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise GalleryError(f"{path}: cannot open gallery ({exc})") from None
        try:
            self._open_when_free()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise GalleryError(f"{path}: not a faceverify gallery ({exc})") from None
        except BaseException:
            self.db.close()
            raise

    def _open_when_free(self) -> None:
        """:meth:`_open`, again while another process holds a lock the busy handler does not wait for (SQLite
        answers "database is locked" at once while a new file is switched to WAL; seen with 8 writers opening one
        gallery), for up to BUSY_MS."""
        deadline = time.monotonic() + BUSY_MS / 1000
        while True:
            try:
                return self._open()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _open(self) -> None:
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "meta" not in tables:
            raise GalleryError(f"{self.path}: not a faceverify gallery (an SQLite database of something else)")
        for pragma in (f"busy_timeout = {BUSY_MS}", "journal_mode = WAL", "synchronous = FULL", "foreign_keys = ON",
                       "secure_delete = ON"):
            self.db.execute(f"PRAGMA {pragma}")
        with self.write() as db:
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            version = self.meta("schema_version")
            if version is None:
                if tables:
                    raise GalleryError(f"{self.path}: not a faceverify gallery (no schema version)")
                for stmt in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(stmt)
                for key, value in (("schema_version", SCHEMA_VERSION), ("generation", 0),
                                   ("last_embedding_id", 0), ("removal_epoch", 0)):
                    self.set_meta(key, str(value))
            elif version in ("1", "2"):
                if version == "1":
                    self._migrate_from_1()
                self._migrate_from_2()
            elif version != str(SCHEMA_VERSION):
                raise GalleryError(
                    f"{self.path}: gallery schema version {version[:20]!r} is not supported "
                    f"(this faceverify reads {SCHEMA_VERSION} and migrates 1 and 2)"
                )
            db.execute("CREATE INDEX IF NOT EXISTS identities_skeleton ON identities(skeleton)")
            if self.meta("skeleton_version") != SKELETON_VERSION:
                for identity_id, name in db.execute("SELECT id, name FROM identities").fetchall():
                    db.execute("UPDATE identities SET skeleton = ? WHERE id = ?", (name_skeleton(name), identity_id))
                self.set_meta("skeleton_version", SKELETON_VERSION)
            self._check_model()

    def _migrate_from_1(self) -> None:
        """Schema 1 -> 2: name skeletons and the monotonic embedding id counter."""
        self.db.execute("ALTER TABLE identities ADD COLUMN skeleton TEXT NOT NULL DEFAULT ''")
        for identity_id, name in self.db.execute("SELECT id, name FROM identities").fetchall():
            self.db.execute("UPDATE identities SET skeleton = ? WHERE id = ?", (name_skeleton(name), identity_id))
        (last,) = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM embeddings").fetchone()
        self.set_meta("last_embedding_id", str(last))
        self.set_meta("removal_epoch", "0")

    def _migrate_from_2(self) -> None:
        """Schema 2 -> 3: the table of kept faces (empty: older embeddings have none)."""
        self.db.execute(_FACES)
        self.set_meta("schema_version", str(SCHEMA_VERSION))

    def _check_model(self) -> None:
        check_model(self.path, self.meta("model_id"), self.meta("embedding_size"), self.model_id, self.embedding_size)

    def close(self) -> None:
        self.db.close()

    # -- transactions and meta -----------------------------------------------------------------------------

    def write(self, busy_ms: int | None = None) -> Transaction:
        """A write transaction; ``busy_ms`` shortens the wait for the write lock."""
        return Transaction(self.db, "BEGIN IMMEDIATE", busy_ms)

    def read(self) -> Transaction:
        """A consistent read snapshot."""
        return Transaction(self.db, "BEGIN")

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def meta_int(self, key: str) -> int:
        value = self.meta(key) or "0"
        if not value.isdigit():
            raise GalleryError(f"{self.path}: corrupt gallery metadata ({key} = {value[:20]!r})")
        return int(value)

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def bump(self) -> None:
        """Count one committed write (inside the write transaction)."""
        self.set_meta("generation", str(self.meta_int("generation") + 1))

    def counters(self) -> tuple[int, int, int]:
        """(generation, last embedding id, removal epoch) of the current snapshot."""
        return self.meta_int("generation"), self.meta_int("last_embedding_id"), self.meta_int("removal_epoch")

    def dim(self) -> int:
        """The gallery's embedding size (else the one it was opened with); raises if there is none."""
        value = self.meta("embedding_size") or str(self.embedding_size or "")
        if not value.isdigit() or int(value) == 0:
            raise GalleryError(f"{self.path}: gallery has no valid embedding size ({value[:20]!r})")
        return int(value)

    def bind_model(self, sizes: Sequence[int]) -> None:
        """Record the model and embedding size on first enrolment, else refuse another model or size."""
        stored = self.meta("model_id")
        if stored is None:
            dim = self.embedding_size or (sizes[0] if sizes else 0)
            if not dim:
                raise GalleryError("the first enrolment needs the embedding size")
            self.set_meta("model_id", str(self.model_id))
            self.set_meta("embedding_size", str(dim))
        elif stored != self.model_id:
            raise ConflictError(f"{self.path}: gallery was enrolled with model {stored}, not {self.model_id}")
        dim = self.dim()
        wrong = next((s for s in sizes if s != dim), None)
        if wrong is not None:
            raise ConflictError(f"{self.path}: an embedding has size {wrong}, the gallery holds size {dim}")

    # -- reads ---------------------------------------------------------------------------------------------

    def has_embeddings(self) -> bool:
        return self.db.execute("SELECT 1 FROM embeddings LIMIT 1").fetchone() is not None

    def select_in(self, sql: str, keys: Sequence[Any]) -> Iterator[tuple]:
        """Rows of ``sql``, whose one ``IN ({})`` slot is filled with ``keys`` a chunk at a time."""
        for chunk in chunked(keys):
            yield from self.db.execute(sql.format(placeholders(len(chunk))), chunk)

    def rows_above(self, hwm: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids and vectors of the embedding rows with id > hwm (call inside a read snapshot)."""
        (n,) = self.db.execute("SELECT COUNT(*) FROM embeddings WHERE id > ?", (hwm,)).fetchone()
        ids = np.empty(n, np.int64)
        vectors = np.empty((n, dim), np.float32)
        cursor = self.db.execute("SELECT id, vector FROM embeddings WHERE id > ? ORDER BY id", (hwm,))
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

    def ids_up_to(self, hwm: int) -> np.ndarray:
        """Ids of the embedding rows with id <= hwm (call inside a read snapshot)."""
        rows = self.db.execute("SELECT id FROM embeddings WHERE id <= ?", (hwm,))
        return np.fromiter((r[0] for r in rows), np.int64)

    # -- identities ----------------------------------------------------------------------------------------

    def identity_id(self, name: str) -> int:
        """The id of the identity called ``name``; the error suggests a lookalike name if there is one."""
        key = collapse_name(name) if isinstance(name, str) else ""
        row = self.db.execute("SELECT id FROM identities WHERE name = ?", (key,)).fetchone()
        if row is not None:
            return int(row[0])
        hint = self.db.execute(
            "SELECT name FROM identities WHERE skeleton = ? LIMIT 1", (name_skeleton(key),)
        ).fetchone()
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise UnknownIdentityError(f"no identity named '{name}' in {self.path}{suggestion}")

    def identity_for_enrolment(self, name: str, now: float) -> int:
        """The id of identity ``name`` (a valid name), touched or created (inside a write)."""
        row = self.db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
        if row is not None:
            self.db.execute("UPDATE identities SET updated_at = ? WHERE id = ?", (now, row[0]))
            return int(row[0])
        skeleton = self.check_lookalike(name, None)
        cur = self.db.execute(
            "INSERT INTO identities(name, created_at, updated_at, skeleton) VALUES (?, ?, ?, ?)",
            (name, now, now, skeleton),
        )
        return int(cur.lastrowid)

    def check_lookalike(self, name: str, identity_id: int | None) -> str:
        """The name's skeleton; raises if an identity other than ``identity_id`` has a name that looks the same."""
        skeleton = name_skeleton(name)
        row = self.db.execute(
            "SELECT name FROM identities WHERE skeleton = ? AND id IS NOT ? LIMIT 1", (skeleton, identity_id)
        ).fetchone()
        if row is not None:
            raise ConflictError(
                f"identity name {name!r} looks like the existing identity {row[0]!r} (same letters after "
                f"Unicode compatibility and case folding and lookalike mapping); use {row[0]!r} or a clearly "
                "different name"
            )
        return skeleton

