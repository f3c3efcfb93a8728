"""The PostgreSQL store's connection and schema: one-line errors for what goes wrong when connecting, the
pgvector extension, the tables and their schema version.

Tables (prefixed ``faceverify_`` so that a gallery can live in a database that holds other things):
``faceverify_meta`` (key -> value: ``schema_version``, ``generation`` (bumped by every write, which also makes
it the row every writer locks first), ``model_id``, ``embedding_size``), ``faceverify_identities`` (name
unique, skeleton, timestamps), ``faceverify_embeddings`` (``vector(dim)``, source, its sha256, box, model id,
timestamp; unique per identity, source hash and box; an HNSW index with ``vector_cosine_ops``) and
``faceverify_faces`` (per embedding, the face crop kept for re-embedding: JPEG, landmarks, detector; deleted with
it). The embeddings and faces tables are created by the first enrolment, which fixes the dimension. Schema 1
galleries gain the faces table on open (their embeddings have none).
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

from ..errors import GalleryError

SCHEMA_VERSION = 2
"""The PostgreSQL store's own schema version (``faceverify_meta.schema_version``)."""
CONNECT_TIMEOUT_S = 10
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 64
HNSW_BYTES_PER_ROW = 1280
"""Memory an HNSW graph element takes during a build beyond its vector (layer-0 neighbours of m = 16, upper
layers, bookkeeping; with a margin)."""
BUILD_MEMORY_MAX = 8 * 2**30
"""The most ``maintenance_work_mem`` an index build asks for (8 GiB holds the graph of ~4M 128-d rows)."""
SETUP_LOCK = 0x66766731  # pg_advisory_xact_lock key: one process creates the tables, others then see them
INSTALL_HINT = (
    "install pgvector on the server (Debian/Ubuntu: apt install postgresql-16-pgvector, matching the server's "
    "major version; others: https://github.com/pgvector/pgvector#installation), then run CREATE EXTENSION vector "
    "in this database as a superuser"
)

_IDENTITIES = """
CREATE TABLE IF NOT EXISTS faceverify_identities (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    skeleton TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS faceverify_identities_skeleton ON faceverify_identities(skeleton)
"""

_EMBEDDINGS = """
CREATE TABLE IF NOT EXISTS faceverify_embeddings (
    id BIGSERIAL PRIMARY KEY,
    identity_id BIGINT NOT NULL REFERENCES faceverify_identities(id) ON DELETE CASCADE,
    vector vector({dim}) NOT NULL,
    source TEXT NOT NULL,
    source_sha256 TEXT NOT NULL,
    box TEXT NOT NULL DEFAULT '',
    model_id TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    UNIQUE (identity_id, source_sha256, box)
);
CREATE INDEX IF NOT EXISTS faceverify_embeddings_identity ON faceverify_embeddings(identity_id)
"""

HNSW_INDEX = "faceverify_embeddings_hnsw"
_HNSW = f"""
CREATE INDEX IF NOT EXISTS {HNSW_INDEX} ON faceverify_embeddings
    USING hnsw (vector vector_cosine_ops) WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})
"""


_FACES = """
CREATE TABLE IF NOT EXISTS faceverify_faces (
    embedding_id BIGINT PRIMARY KEY REFERENCES faceverify_embeddings(id) ON DELETE CASCADE,
    image BYTEA NOT NULL,
    landmarks TEXT NOT NULL,
    detector TEXT NOT NULL
)
"""


def create_faces(conn: Any) -> None:
    """The kept faces' table (right after the embeddings table it references)."""
    conn.execute(_FACES)


def _migrate_from_1(conn: Any) -> None:
    """Schema 1 -> 2: the kept faces' table, where the embeddings table exists (else the first enrolment makes
    both)."""
    if conn.execute("SELECT to_regclass('faceverify_embeddings')").fetchone()[0] is not None:
        create_faces(conn)


INSERT_EMBEDDING = (
    "INSERT INTO faceverify_embeddings(identity_id, vector, source, source_sha256, box, model_id, created_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
INSERT_WITH_FACE = (  # the face goes in only with its embedding (a face already enrolled keeps what it had)
    f"WITH e AS ({INSERT_EMBEDDING} RETURNING id) "
    "INSERT INTO faceverify_faces(embedding_id, image, landmarks, detector) SELECT id, %s, %s, %s FROM e"
)
MIGRATIONS: dict[int, Callable[[Any], None]] = {1: _migrate_from_1}
"""What takes a schema from version N to N + 1 (inside ``ensure_schema``'s transaction)."""


EF_SEARCH, EF_ROWS, EF_SEARCH_MAX = 100, 100_000, 1000
"""A search's HNSW candidate list (``hnsw.ef_search``; pgvector returns at most that many rows and takes at most
EF_SEARCH_MAX): EF_SEARCH up to EF_ROWS embeddings, growing as the square root of the table beyond. 100 found every
identity up to 100,000; at 1,000,000 (seed 1) 100 missed 0.8%, 200 and 300 none, and sqrt gives 316 there."""


def ef_search_for(rows: float, k: int) -> int:
    """The HNSW candidate list of a search for ``k`` nearest rows in a table of ``rows`` embeddings."""
    grown = EF_SEARCH * math.sqrt(max(1.0, rows / EF_ROWS))
    return min(EF_SEARCH_MAX, max(2 * k, math.ceil(grown)))


SEARCH_NEAREST = """
WITH near AS (
    SELECT identity_id FROM faceverify_embeddings ORDER BY vector <=> %(q)s LIMIT %(k)s
)
SELECT i.name, MAX(-(e.vector <#> %(q)s)) AS score
FROM faceverify_embeddings e JOIN faceverify_identities i ON i.id = e.identity_id
WHERE e.identity_id IN (SELECT identity_id FROM near)
GROUP BY i.id, i.name
ORDER BY score DESC
"""
"""The identities among the ``k`` embeddings nearest ``q`` (HNSW), each scored exactly by its best stored embedding."""

def is_database_url(location: object) -> bool:
    """Whether a gallery location names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return isinstance(location, str) and location.lower().startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    url = re.sub(r"(://[^/@:]*):[^/@]+@", r"\1:***@", url)
    return re.sub(r"(?i)(password=)[^&]+", r"\1***", url)


def one_line(exc: BaseException) -> str:
    """The first meaningful line of a driver message."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def import_driver() -> Any:
    try:
        import psycopg
        from pgvector.psycopg import register_vector  # noqa: F401
    except ImportError as exc:
        raise GalleryError(
            f"a PostgreSQL gallery needs psycopg 3 and pgvector ({exc}): pip install 'faceverify[postgres]'"
        ) from None
    return psycopg


def connection_error(where: str, exc: BaseException) -> GalleryError:
    """The GalleryError for a failed connection: refused login, missing database, or an unreachable server."""
    text = " ".join(str(exc).split())
    if "password authentication failed" in text or "no password supplied" in text or "authentication failed" in text:
        return GalleryError(f"{where}: the PostgreSQL server refused the login (wrong user or password)")
    found = re.search(r'database "[^"]*" does not exist', text)
    if found:
        return GalleryError(f"{where}: {found.group(0)} (create it first: createdb NAME)")
    if "invalid" in text.lower() and ("dsn" in text.lower() or "uri" in text.lower() or "connection option" in text):
        return GalleryError(f"{where}: not a valid PostgreSQL URL ({one_line(exc)})")
    reason = re.sub(r"^connection failed: ", "", one_line(exc))
    return GalleryError(f"{where}: cannot reach the PostgreSQL server ({reason})")


def connect(url: str, where: str) -> Any:
    """An autocommit connection with pgvector's types registered; raises GalleryError."""
    psycopg = import_driver()
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                               application_name="faceverify")
    except (psycopg.Error, ValueError) as exc:
        raise connection_error(where, exc) from None
    return conn


def register(conn: Any) -> None:
    from pgvector.psycopg import register_vector

    register_vector(conn)


def ensure_extension(conn: Any, where: str) -> None:
    """pgvector enabled in the database (created when the user may); else a GalleryError saying how."""
    psycopg = import_driver()
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
        return
    if not conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone():
        raise GalleryError(f"{where}: the server has no pgvector extension; {INSTALL_HINT}")
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SETUP_LOCK,))
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.errors.InsufficientPrivilege:
        raise GalleryError(
            f"{where}: the pgvector extension is not enabled in this database and this user may not enable it; "
            "ask an administrator to run CREATE EXTENSION vector in it"
        ) from None


def ensure_schema(conn: Any, where: str, create: bool) -> None:
    """The meta and identities tables at the current schema version (created when ``create``); raises
    GalleryError for another program's tables, a newer schema version or, without ``create``, no gallery."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SETUP_LOCK,))
        exists = conn.execute("SELECT to_regclass('faceverify_meta')").fetchone()[0] is not None
        if not exists:
            if not create:
                raise GalleryError(f"{where}: no gallery here (enroll someone first)")
            conn.execute("CREATE TABLE faceverify_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            for stmt in filter(str.strip, _IDENTITIES.split(";")):
                conn.execute(stmt)
            conn.execute(
                "INSERT INTO faceverify_meta(key, value) VALUES ('schema_version', %s), ('generation', '0')",
                (str(SCHEMA_VERSION),),
            )
            return
        row = conn.execute("SELECT value FROM faceverify_meta WHERE key = 'schema_version'").fetchone()
        version = None if row is None else str(row[0])
        if version is None or not version.isdigit():
            raise GalleryError(f"{where}: not a faceverify gallery (schema version {version!r})")
        if int(version) > SCHEMA_VERSION:
            raise GalleryError(
                f"{where}: gallery schema version {version} is newer than this faceverify reads ({SCHEMA_VERSION}); "
                "upgrade faceverify"
            )
        for step in range(int(version), SCHEMA_VERSION):
            MIGRATIONS[step](conn)
        conn.execute("UPDATE faceverify_meta SET value = %s WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))


def create_embeddings(conn: Any, dim: int) -> None:
    """The embeddings table of ``dim``-d vectors and its indexes (inside the first enrolment's transaction)."""
    for stmt in filter(str.strip, _EMBEDDINGS.format(dim=int(dim)).split(";")):
        conn.execute(stmt)
    conn.execute(_HNSW)


def build_search_index(conn: Any, dim: int) -> None:
    """Build the HNSW index if it is missing (after a bulk load), inside the caller's transaction: with
    ``maintenance_work_mem`` raised so that the graph fits in memory (pgvector builds much slower once it does
    not), in parallel as the server's ``max_parallel_maintenance_workers`` allows; then ANALYZE, so that the
    planner knows the table's new size."""
    (rows,) = conn.execute("SELECT COUNT(*) FROM faceverify_embeddings").fetchone()
    need = int(rows) * (4 * int(dim) + HNSW_BYTES_PER_ROW) + 2**26
    conn.execute(f"SET LOCAL maintenance_work_mem = '{min(need, BUILD_MEMORY_MAX) // 2**20}MB'")
    conn.execute(_HNSW)
    conn.execute("ANALYZE faceverify_embeddings")
