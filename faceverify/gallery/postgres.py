"""The gallery in PostgreSQL with pgvector: the same behaviour as the SQLite :class:`~faceverify.gallery.Gallery`
for galleries that many processes and machines share.

Writes
    Every command (enroll, remove, rename) is one transaction whose first statement bumps the ``generation``
    row of ``faceverify_meta``: that row lock makes writers take turns (as SQLite's write lock does), so the
    name checks (taken, lookalike) and the model check of one writer see everything the writers before it
    committed. The unique constraints (identity name; identity + source hash + box) hold regardless. A client
    killed mid-command leaves nothing: the server rolls its transaction back.

Search
    ``search`` asks the HNSW index (``vector_cosine_ops``, ``hnsw.ef_search`` by ``ef_search_for``) for the
    ``k`` nearest embeddings, and scores each identity among them exactly, by the best inner product over all
    of its stored embeddings, in the same statement; on unit vectors this equals exact search unless HNSW
    misses an identity altogether (measured: tests/test_gallery_postgres.py). ``search_templates`` is exact,
    over templates computed from the stored embeddings and kept in memory until the next write.

Connections
    Pooled (:mod:`.pgpool`): the gallery objects of one URL in a process share one pool; each call takes a
    connection for its duration (a gallery object belongs to one thread). A connection a server restart broke
    is replaced when taken; while the server is away a call waits for it up to ``CONNECT_TIMEOUT_S``, then fails
    with a one-line GalleryError; a call that loses its connection midway raises a GalleryError, and nothing is
    answered from a half-finished query.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar
import functools

import numpy as np

from ..decision import identity_templates
from ..errors import ConflictError, GalleryError, UnknownIdentityError
from .base import GalleryBase, rank_templates
from .names import SKELETON_VERSION, collapse_name, name_skeleton, validate_name
from .pgpool import shared_pool, unavailable
from .pgstore import (HNSW_INDEX, INSERT_EMBEDDING, INSERT_WITH_FACE, SEARCH_NEAREST, build_search_index, create_embeddings,
                      create_faces, ef_search_for, ensure_schema, import_driver, one_line, redact)
from .records import Enrolment, Identity, check_model, enrolment_row, face_of, parse_box

PAGE = 10_000

T = TypeVar("T")


def _array(vector: Any) -> np.ndarray:
    """A pgvector value as a float32 array."""
    return np.asarray(vector.to_numpy() if hasattr(vector, "to_numpy") else vector, np.float32)


def pg_errors(method: Callable[..., T]) -> Callable[..., T]:
    """Run the call on a pooled connection (the one the calling call holds, if any), driver failures turned into
    one-line GalleryErrors naming the gallery (the URL without its password)."""

    @functools.wraps(method)
    def wrapper(self: "PostgresGallery", *args: Any, **kwargs: Any) -> T:
        psycopg = import_driver()
        from psycopg_pool import PoolTimeout

        try:
            with self._connection():
                return method(self, *args, **kwargs)
        except PoolTimeout:
            raise unavailable(self.url, self.path, self._pool.max_size) from None
        except psycopg.OperationalError as exc:
            raise GalleryError(f"{self.path}: lost the connection to the PostgreSQL server ({one_line(exc)})") from None
        except psycopg.Error as exc:
            raise GalleryError(f"{self.path}: gallery database error ({one_line(exc)})") from None

    return wrapper


class PostgresGallery(GalleryBase):
    """A gallery in a PostgreSQL database (``postgresql://user@host/db``); see the module's documentation."""

    search_index = None
    index_path = None

    def __init__(self, url: str, model_id: str | None = None, embedding_size: int | None = None,
                 create: bool = True, pool_size: int | None = None):
        self.url = url
        self.path = redact(url)
        self.model_id = model_id
        self.embedding_size = embedding_size
        self._templates: tuple[str, tuple[list[str], np.ndarray]] | None = None
        self._held: Any = None
        self._closed = False
        self._pool = shared_pool(url, self.path, pool_size)
        self._setup(create)

    @pg_errors
    def _setup(self, create: bool) -> None:
        ensure_schema(self._db(), self.path, create)
        if self._meta("skeleton_version") != SKELETON_VERSION:
            with self._write() as db:
                for identity_id, name in db.execute("SELECT id, name FROM faceverify_identities").fetchall():
                    db.execute("UPDATE faceverify_identities SET skeleton = %s WHERE id = %s",
                               (name_skeleton(name), identity_id))
                self._set_meta(db, "skeleton_version", SKELETON_VERSION)
        check_model(self.path, self._meta("model_id"), self._meta("embedding_size"), self.model_id, self.embedding_size)

    def close(self) -> None:
        """Stop using the gallery (its pool stays open for the process's other galleries of this URL)."""
        self._closed = True

    def save_index(self) -> bool:
        """Nothing to save: the HNSW index lives in the database."""
        return False

    # -- connection, transactions, meta -------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """A pooled connection held for the duration of the outermost call."""
        if self._held is not None:
            yield self._held
            return
        if self._closed:
            raise GalleryError(f"{self.path}: the gallery is closed")
        with self._pool.connection() as conn:
            self._held = conn
            try:
                yield conn
            finally:
                self._held = None

    def _db(self) -> Any:
        """The connection the current call holds."""
        return self._held

    @contextmanager
    def _write(self) -> Iterator[Any]:
        """One write transaction, writers in turn (the generation row is locked first)."""
        db = self._db()
        with db.transaction():
            db.execute("UPDATE faceverify_meta SET value = (value::bigint + 1)::text WHERE key = 'generation'")
            yield db

    @contextmanager
    def _read(self) -> Iterator[Any]:
        """A consistent read snapshot."""
        db = self._db()
        with db.transaction():
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield db

    def _meta(self, key: str) -> str | None:
        row = self._db().execute("SELECT value FROM faceverify_meta WHERE key = %s", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, db: Any, key: str, value: str) -> None:
        db.execute(
            "INSERT INTO faceverify_meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = %s",
            (key, value, value),
        )

    def _bound(self) -> bool:
        """Whether the first enrolment happened (model recorded, embeddings table created)."""
        return self._meta("embedding_size") is not None

    @property
    @pg_errors
    def stored_model_id(self) -> str | None:
        """The model the gallery's embeddings were made with (None before the first enrolment)."""
        return self._meta("model_id")

    @pg_errors
    def dim(self) -> int:
        """The gallery's embedding size (else the one it was opened with); raises if there is none."""
        value = self._meta("embedding_size") or str(self.embedding_size or "")
        if not value.isdigit() or int(value) == 0:
            raise GalleryError(f"{self.path}: gallery has no valid embedding size ({value[:20]!r})")
        return int(value)

    def _bind_model(self, db: Any, sizes: Sequence[int]) -> None:
        stored = self._meta("model_id")
        if stored is None:
            dim = self.embedding_size or (sizes[0] if sizes else 0)
            if not dim:
                raise GalleryError("the first enrolment needs the embedding size")
            self._set_meta(db, "model_id", str(self.model_id))
            self._set_meta(db, "embedding_size", str(dim))
            create_embeddings(db, dim)
            create_faces(db)
        elif stored != self.model_id:
            raise ConflictError(f"{self.path}: gallery was enrolled with model {stored}, not {self.model_id}")
        dim = self.dim()
        wrong = next((s for s in sizes if s != dim), None)
        if wrong is not None:
            raise ConflictError(f"{self.path}: an embedding has size {wrong}, the gallery holds size {dim}")

    @contextmanager
    def bulk_loading(self) -> Iterator[None]:
        """Enrolments inside go in without the HNSW index when the gallery holds no embeddings yet (or lacks its
        index), and the index is built once at the end: an HNSW build is much faster than keeping the graph up on
        every insert. Meanwhile searches are exact (sequential scans, slower). A load cut short leaves the gallery
        without its index, searching exactly, until a bulk load finishes (rerun the migration). Into a gallery
        that holds embeddings and its index, enrolments go in as usual."""
        deferred = self._defer_index()
        yield
        if deferred:
            self._build_index()

    @pg_errors
    def _defer_index(self) -> bool:
        with self._write() as db:
            self._bind_model(db, [])
            empty = not db.execute("SELECT 1 FROM faceverify_embeddings LIMIT 1").fetchone()
            indexed = db.execute("SELECT to_regclass(%s)", (HNSW_INDEX,)).fetchone()[0] is not None
            if empty and indexed:
                db.execute(f"DROP INDEX {HNSW_INDEX}")
            return empty or not indexed

    @pg_errors
    def _build_index(self) -> None:
        with self._write() as db:  # writers wait for the build; readers do not
            build_search_index(db, self.dim())

    # -- identities -------------------------------------------------------------------------------------------

    def _identity_id(self, db: Any, name: str) -> int:
        key = collapse_name(name) if isinstance(name, str) else ""
        row = db.execute("SELECT id FROM faceverify_identities WHERE name = %s", (key,)).fetchone()
        if row is not None:
            return int(row[0])
        hint = db.execute(
            "SELECT name FROM faceverify_identities WHERE skeleton = %s LIMIT 1", (name_skeleton(key),)
        ).fetchone()
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise UnknownIdentityError(f"no identity named '{name}' in {self.path}{suggestion}")

    def _check_lookalike(self, db: Any, name: str, identity_id: int | None) -> str:
        skeleton = name_skeleton(name)
        row = db.execute(
            "SELECT name FROM faceverify_identities WHERE skeleton = %s AND id IS DISTINCT FROM %s LIMIT 1",
            (skeleton, identity_id),
        ).fetchone()
        if row is not None:
            raise ConflictError(
                f"identity name {name!r} looks like the existing identity {row[0]!r} (same letters after "
                f"Unicode compatibility and case folding and lookalike mapping); use {row[0]!r} or a clearly "
                "different name"
            )
        return skeleton

    def _identity_for_enrolment(self, db: Any, name: str, now: float) -> int:
        row = db.execute("SELECT id FROM faceverify_identities WHERE name = %s", (name,)).fetchone()
        if row is not None:
            db.execute("UPDATE faceverify_identities SET updated_at = %s WHERE id = %s", (now, row[0]))
            return int(row[0])
        skeleton = self._check_lookalike(db, name, None)
        (new_id,) = db.execute(
            "INSERT INTO faceverify_identities(name, skeleton, created_at, updated_at) VALUES (%s, %s, %s, %s) "
            "RETURNING id",
            (name, skeleton, now, now),
        ).fetchone()
        return int(new_id)

    # -- writes -------------------------------------------------------------------------------------------

    @pg_errors
    def enroll_many(self, batch: Iterable[tuple[str, Sequence[Enrolment]]]) -> dict[str, int]:
        """Enroll several identities in one transaction (all or nothing); returns new embeddings per name."""
        if self.model_id is None:
            raise GalleryError("enrolment needs the model id of the embeddings")
        size = self.embedding_size
        prepared = [(validate_name(name), [enrolment_row(item, size) for item in items]) for name, items in batch]
        now = time.time()
        added: dict[str, int] = {}
        with self._write() as db:
            self._bind_model(db, [len(row[0]) // 4 for _, rows in prepared for row in rows])
            for name, rows in prepared:
                identity_id = self._identity_for_enrolment(db, name, now)
                added[name] = added.get(name, 0) + self._insert(db, identity_id, rows, now)
        return added

    def _insert(self, db: Any, identity_id: int, rows: Sequence[tuple], now: float) -> int:
        """Insert embedding rows (vector bytes, source, sha256, box, kept face or None); returns how many were
        new."""
        added = 0
        for query, with_face in ((INSERT_EMBEDDING, False), (INSERT_WITH_FACE, True)):
            params = [(identity_id, np.frombuffer(row[0], np.float32), *row[1:4], self.model_id, now,
                       *(row[4] or ())) for row in rows if (row[4] is not None) == with_face]
            if params:
                with db.cursor() as cur:
                    cur.executemany(query, params)  # pipelined: one round trip for the lot; rowcount is the sum
                    added += max(cur.rowcount, 0)
        return added

    @pg_errors
    def remove(self, name: str) -> int:
        """Delete an identity and its embeddings; returns the number of embeddings removed."""
        with self._write() as db:
            identity_id = self._identity_id(db, name)
            n = 0
            if self._bound():
                (n,) = db.execute(
                    "SELECT COUNT(*) FROM faceverify_embeddings WHERE identity_id = %s", (identity_id,)
                ).fetchone()
            db.execute("DELETE FROM faceverify_identities WHERE id = %s", (identity_id,))
        return int(n)

    @pg_errors
    def rename(self, old: str, new: str) -> None:
        """Rename an identity (its embeddings are untouched)."""
        new = validate_name(new)
        with self._write() as db:
            identity_id = self._identity_id(db, old)
            if db.execute(
                "SELECT 1 FROM faceverify_identities WHERE name = %s AND id != %s", (new, identity_id)
            ).fetchone():
                raise ConflictError(f"identity '{new}' already exists")
            skeleton = self._check_lookalike(db, new, identity_id)
            db.execute(
                "UPDATE faceverify_identities SET name = %s, skeleton = %s, updated_at = %s WHERE id = %s",
                (new, skeleton, time.time(), identity_id),
            )

    # -- reads --------------------------------------------------------------------------------------------

    @pg_errors
    def identities(self) -> list[Identity]:
        db = self._db()
        if not self._bound():
            rows = db.execute(
                'SELECT name, 0, created_at, updated_at FROM faceverify_identities ORDER BY name COLLATE "C"'
            )
        else:
            rows = db.execute(
                "SELECT i.name, COUNT(e.id), i.created_at, i.updated_at FROM faceverify_identities i "
                "LEFT JOIN faceverify_embeddings e ON e.identity_id = i.id GROUP BY i.id ORDER BY i.name COLLATE \"C\""
            )
        return [Identity(n, int(c), float(a), float(u)) for n, c, a, u in rows.fetchall()]

    @pg_errors
    def embeddings_of(self, name: str) -> list[dict]:
        """Stored metadata of one identity's embeddings (no vectors; ``id``: the embedding's, ``box`` as numbers,
        ``face``: whether its face is kept)."""
        db = self._db()
        identity_id = self._identity_id(db, name)
        if not self._bound():
            return []
        rows = db.execute(
            "SELECT e.id, e.source, e.source_sha256, e.box, e.model_id, e.created_at, f.embedding_id IS NOT NULL "
            "FROM faceverify_embeddings e LEFT JOIN faceverify_faces f ON f.embedding_id = e.id "
            "WHERE e.identity_id = %s ORDER BY e.id",
            (identity_id,),
        ).fetchall()
        return [dict(id=i, source=s, source_sha256=h, box=parse_box(b), model_id=m, created_at=t, face=bool(k))
                for i, s, h, b, m, t, k in rows]

    def iter_vectors(self, faces: bool = False) -> Iterator[tuple[str, np.ndarray, dict]]:
        """Every stored embedding with its identity name and metadata (read a page at a time); with ``faces``,
        ``meta["face"]`` is its kept :class:`~faceverify.align.FaceCrop` or None."""
        if not pg_errors(PostgresGallery._bound)(self):
            return
        last = 0
        while True:
            rows = pg_errors(PostgresGallery._page)(self, last, faces)
            for rid, name, vector, source, sha, box, model_id, created, *face in rows:
                meta = dict(source=source, source_sha256=sha, box=box or None, model_id=model_id, created_at=created)
                if faces:
                    meta["face"] = face_of(*face)
                yield name, _array(vector), meta
                last = rid
            if len(rows) < PAGE:
                return

    def _page(self, after: int, faces: bool) -> list[tuple]:
        kept = ("f.image, f.landmarks, f.detector FROM faceverify_embeddings e LEFT JOIN faceverify_faces f "
                "ON f.embedding_id = e.id") if faces else "NULL, NULL, NULL FROM faceverify_embeddings e"
        return self._db().execute(
            f"SELECT e.id, i.name, e.vector, e.source, e.source_sha256, e.box, e.model_id, e.created_at, {kept} "
            "JOIN faceverify_identities i ON i.id = e.identity_id WHERE e.id > %s ORDER BY e.id LIMIT %s",
            (after, PAGE // 10 if faces else PAGE),  # kept faces are ~20 kB each
        ).fetchall()

    @pg_errors
    def __len__(self) -> int:
        (n,) = self._db().execute("SELECT COUNT(*) FROM faceverify_identities").fetchone()
        return int(n)

    @pg_errors
    def embedding_count(self) -> int:
        """How many embeddings a search compares a probe with."""
        if not self._bound():
            return 0
        (n,) = self._db().execute("SELECT COUNT(*) FROM faceverify_embeddings").fetchone()
        return int(n)

    @pg_errors
    def require_entries(self) -> None:
        """Raise GalleryError ("<url>: the gallery is empty (enroll someone first)") unless an embedding is
        enrolled, i.e. unless a search has something to compare with."""
        if not self._bound() or not self._db().execute("SELECT 1 FROM faceverify_embeddings LIMIT 1").fetchone():
            raise ConflictError(f"{self.path}: the gallery is empty (enroll someone first)")

    # -- search -------------------------------------------------------------------------------------------

    def _set_ef_search(self, db: Any, k: int) -> None:
        """Set ``hnsw.ef_search`` for the current transaction from ``k`` and the table's size (the planner's
        estimate, kept by ANALYZE and autovacuum)."""
        row = db.execute("SELECT reltuples FROM pg_class WHERE oid = to_regclass('faceverify_embeddings')").fetchone()
        db.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef_search_for(row[0] if row else 0, k)),))

    @pg_errors
    def search(self, queries: np.ndarray, k: int = 32) -> list[list[tuple[str, float]]]:
        """For each query, identities among the ``k`` nearest embeddings (HNSW), ranked by the exact cosine
        similarity of their best-matching embedding."""
        queries = self.check_queries(queries)
        k = max(1, int(k))
        out = []
        with self._read() as db:
            self._set_ef_search(db, k)
            for q in queries:
                rows = db.execute(SEARCH_NEAREST, dict(q=q, k=k)).fetchall()
                out.append([(name, float(score)) for name, score in rows])
        return out

    @pg_errors
    def search_templates(self, queries: np.ndarray, k: int = 32) -> list[list[tuple[str, float]]]:
        """For each query, identities ranked by the cosine similarity of their template: the renormalised mean
        of their normalised embeddings (exact search; the stored embeddings stay the truth)."""
        queries = self.check_queries(queries)
        return rank_templates(queries, *self._current_templates(), k)

    def _current_templates(self) -> tuple[list[str], np.ndarray]:
        with self._read() as db:
            (state,) = db.execute("SELECT value FROM faceverify_meta WHERE key = 'generation'").fetchone()
            if self._templates is not None and self._templates[0] == state:
                return self._templates[1]
            rows = db.execute(
                "SELECT i.name, e.vector FROM faceverify_embeddings e JOIN faceverify_identities i "
                "ON i.id = e.identity_id ORDER BY e.id"
            ).fetchall()
        vectors = np.stack([_array(v) for _, v in rows])
        self._templates = (state, identity_templates(vectors, [n for n, _ in rows]))
        return self._templates[1]

    @pg_errors
    def template_sizes(self) -> list[int]:
        """How many embeddings each identity's template averages: one entry per template a search compares."""
        if not self._bound():
            return []
        rows = self._db().execute("SELECT COUNT(*) FROM faceverify_embeddings GROUP BY identity_id").fetchall()
        return [int(n) for (n,) in rows]
