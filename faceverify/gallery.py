"""The gallery: enrolled identities in SQLite (the durable truth) and a FAISS index derived from it."""

from __future__ import annotations

import os
import sqlite3
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .errors import GalleryError

SCHEMA_VERSION = 1
MAX_NAME_LENGTH = 128

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identities (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
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


def default_gallery_path() -> Path:
    """``$FACEVERIFY_GALLERY`` or ``gallery.sqlite`` in the user's data directory."""
    env = os.environ.get("FACEVERIFY_GALLERY")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir("faceverify")) / "gallery.sqlite"


def validate_name(name: str) -> str:
    """Normalise (NFC, outer whitespace stripped) and check an identity name; raises GalleryError."""
    if not isinstance(name, str):
        raise GalleryError("identity name must be text")
    clean = unicodedata.normalize("NFC", name).strip()
    if not clean:
        raise GalleryError("identity name is empty")
    if len(clean) > MAX_NAME_LENGTH:
        raise GalleryError(f"identity name is longer than {MAX_NAME_LENGTH} characters")
    for ch in clean:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            raise GalleryError(f"identity name {clean!r} contains a control or invisible character (U+{ord(ch):04X})")
    if "/" in clean or "\\" in clean:
        raise GalleryError(f"identity name {clean!r} contains a path separator")
    return clean


@dataclass(frozen=True)
class Enrolment:
    """One embedding to store: the vector, where it came from and which face in that image."""

    vector: np.ndarray
    source: str
    source_sha256: str
    box: Sequence[float] | None = None


@dataclass(frozen=True)
class Identity:
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


class Gallery:
    """A gallery file. Every write is one transaction, so a command is applied whole or not at all."""

    def __init__(self, path: str | Path, model_id: str | None = None, embedding_size: int | None = None):
        self.path = Path(path)
        self.model_id = model_id
        self.embedding_size = embedding_size
        self._index = None
        self._index_generation: int | None = None
        if self.path.exists() and self.path.is_dir():
            raise GalleryError(f"{self.path}: gallery path is a directory")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout = 60000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            with self._write():
                for stmt in filter(str.strip, _SCHEMA.split(";")):
                    self._db.execute(stmt)
                self._init_meta()
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"{self.path}: not a faceverify gallery ({exc})") from None

    # -- transactions -------------------------------------------------------------------------------------

    class _Tx:
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, exc, tb) -> None:
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")

    def _write(self) -> "Gallery._Tx":
        return Gallery._Tx(self._db)

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def _init_meta(self) -> None:
        version = self._meta("schema_version")
        if version is None:
            self._set_meta("schema_version", str(SCHEMA_VERSION))
            self._set_meta("generation", "0")
        elif version != str(SCHEMA_VERSION):
            raise GalleryError(
                f"{self.path}: gallery schema version {version} is not supported (this faceverify reads {SCHEMA_VERSION})"
            )
        stored = self._meta("model_id")
        if stored is not None and self.model_id is not None and stored != self.model_id:
            raise GalleryError(
                f"{self.path}: gallery was enrolled with model {stored}, not {self.model_id}; "
                "embeddings of different models are never mixed (use another --gallery or --model)"
            )

    def _bump(self) -> None:
        self._set_meta("generation", str(self.generation + 1))

    @property
    def generation(self) -> int:
        """Counts committed writes; the search index is rebuilt when it lags behind."""
        return int(self._meta("generation") or 0)

    @property
    def stored_model_id(self) -> str | None:
        return self._meta("model_id")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes ------------------------------------------------------------------------------------------

    def enroll(self, name: str, items: Sequence[Enrolment]) -> int:
        """Add embeddings to ``name`` (created if new); returns how many were new. Re-enrolling the same face
        of the same file is a no-op."""
        name = validate_name(name)
        if self.model_id is None:
            raise GalleryError("enrolment needs the model id of the embeddings")
        now = time.time()
        added = 0
        with self._write() as db:
            stored = self._meta("model_id")
            if stored is None:
                self._set_meta("model_id", self.model_id)
                self._set_meta("embedding_size", str(self.embedding_size))
            elif stored != self.model_id:
                raise GalleryError(f"{self.path}: gallery was enrolled with model {stored}, not {self.model_id}")
            db.execute(
                "INSERT INTO identities(name, created_at, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET updated_at = excluded.updated_at",
                (name, now, now),
            )
            (identity_id,) = db.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
            for item in items:
                vec = np.asarray(item.vector, np.float32).reshape(-1)
                if self.embedding_size is not None and vec.size != self.embedding_size:
                    raise GalleryError(f"embedding of {item.source} has size {vec.size}, expected {self.embedding_size}")
                box = "" if item.box is None else ",".join(f"{v:.1f}" for v in item.box)
                cur = db.execute(
                    "INSERT OR IGNORE INTO embeddings(identity_id, vector, source, source_sha256, box, model_id, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (identity_id, vec.tobytes(), item.source, item.source_sha256, box, self.model_id, now),
                )
                added += cur.rowcount
            self._bump()
        return added

    def remove(self, name: str) -> int:
        """Delete an identity and its embeddings; returns the number of embeddings removed."""
        with self._write() as db:
            identity_id = self._identity_id(name)
            (count,) = db.execute("SELECT COUNT(*) FROM embeddings WHERE identity_id = ?", (identity_id,)).fetchone()
            db.execute("DELETE FROM identities WHERE id = ?", (identity_id,))
            self._bump()
        return int(count)

    def rename(self, old: str, new: str) -> None:
        new = validate_name(new)
        with self._write() as db:
            identity_id = self._identity_id(old)
            if db.execute("SELECT 1 FROM identities WHERE name = ?", (new,)).fetchone():
                raise GalleryError(f"identity '{new}' already exists")
            db.execute("UPDATE identities SET name = ?, updated_at = ? WHERE id = ?", (new, time.time(), identity_id))
            self._bump()

    def _identity_id(self, name: str) -> int:
        key = unicodedata.normalize("NFC", name).strip()
        row = self._db.execute("SELECT id FROM identities WHERE name = ?", (key,)).fetchone()
        if row is None:
            raise GalleryError(f"no identity named '{name}' in {self.path}")
        return int(row[0])

    # -- reads -------------------------------------------------------------------------------------------

    def identities(self) -> list[Identity]:
        rows = self._db.execute(
            "SELECT i.name, COUNT(e.id), i.created_at, i.updated_at FROM identities i "
            "LEFT JOIN embeddings e ON e.identity_id = i.id GROUP BY i.id ORDER BY i.name"
        ).fetchall()
        return [Identity(n, int(c), float(a), float(u)) for n, c, a, u in rows]

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
        rows = self._db.execute(
            "SELECT i.name, e.vector, e.source, e.source_sha256, e.box, e.model_id, e.created_at "
            "FROM embeddings e JOIN identities i ON i.id = e.identity_id ORDER BY e.id"
        )
        for name, blob, source, sha, box, model_id, created in rows:
            meta = dict(source=source, source_sha256=sha, box=box or None, model_id=model_id, created_at=created)
            yield name, np.frombuffer(blob, np.float32), meta

    def __len__(self) -> int:
        (n,) = self._db.execute("SELECT COUNT(*) FROM identities").fetchone()
        return int(n)

    # -- search ------------------------------------------------------------------------------------------

    def _load_index(self):
        """(Re)build the FAISS inner-product index from the database when the gallery has changed."""
        generation = self.generation
        if self._index is not None and self._index_generation == generation:
            return self._index
        import faiss

        rows = self._db.execute("SELECT e.identity_id, e.vector FROM embeddings e ORDER BY e.id").fetchall()
        names = dict(self._db.execute("SELECT id, name FROM identities").fetchall())
        dim = int(self._meta("embedding_size") or self.embedding_size or 0)
        labels = np.array([r[0] for r in rows], np.int64)
        vectors = np.stack([np.frombuffer(r[1], np.float32) for r in rows]) if rows else np.zeros((0, dim), np.float32)
        index = faiss.IndexFlatIP(dim)
        if len(vectors):
            index.add(np.ascontiguousarray(vectors))
        self._index = (index, labels, names)
        self._index_generation = generation
        return self._index

    def search(self, queries: np.ndarray, k: int = 32) -> list[list[tuple[str, float]]]:
        """For each query, identities ranked by their best-matching embedding's cosine similarity."""
        index, labels, names = self._load_index()
        queries = np.ascontiguousarray(np.asarray(queries, np.float32).reshape(len(queries), -1))
        if index.ntotal == 0:
            raise GalleryError(f"{self.path}: the gallery is empty (enroll someone first)")
        if queries.shape[1] != index.d:
            raise GalleryError(f"query embeddings have size {queries.shape[1]}, the gallery holds size {index.d}")
        scores, idx = index.search(queries, min(k, index.ntotal))
        ranked: list[list[tuple[str, float]]] = []
        for row_scores, row_idx in zip(scores, idx):
            best: dict[str, float] = {}
            for s, i in zip(row_scores, row_idx):
                if i < 0:
                    continue
                name = names[int(labels[i])]
                if name not in best:
                    best[name] = float(s)
            ranked.append(sorted(best.items(), key=lambda kv: -kv[1]))
        return ranked

    def best_match(self, query: np.ndarray) -> Match:
        ranked = self.search(query[None, :])[0]
        second = ranked[1] if len(ranked) > 1 else (None, None)
        return Match(ranked[0][0], ranked[0][1], second[0], second[1])
