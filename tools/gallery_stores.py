"""The two gallery stores as tools/bench_gallery.py measures them: where a gallery of each lives, the PostgreSQL
server (``$FACEVERIFY_TEST_POSTGRES``, else one started by ``pgserver`` in a temporary folder), what each store
keeps on disk, and every stored vector read back for the exact-search reference."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import numpy as np

STORES = ("sqlite", "postgresql")
POSTGRES_ENV = "FACEVERIFY_TEST_POSTGRES"
SHARED_BUFFERS = "2GB"
"""The pgserver-started server's shared_buffers (PostgreSQL's 128 MB default would not hold a 1M gallery's index)."""


@contextmanager
def postgres_server() -> Iterator[str]:
    """A superuser URL of a PostgreSQL server with pgvector: ``$FACEVERIFY_TEST_POSTGRES``, else pgserver's
    PostgreSQL 16 in a temporary folder (default durability settings, ``shared_buffers`` = SHARED_BUFFERS),
    stopped and deleted afterwards."""
    url = os.environ.get(POSTGRES_ENV, "").strip()
    if url:
        yield url
        return
    import pgserver
    import psycopg

    data = Path(tempfile.mkdtemp(prefix="bench-postgres-"))
    data.chmod(0o755)  # run as root, pgserver runs PostgreSQL as its own user
    server = pgserver.get_server(data, cleanup_mode="stop")
    try:
        with psycopg.connect(server.get_uri(), autocommit=True) as con:
            con.execute(f"ALTER SYSTEM SET shared_buffers = '{SHARED_BUFFERS}'")
        pgserver.pg_ctl(["-w", "-m", "fast", "restart"], pgdata=data, user=server.system_user)
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(data, ignore_errors=True)


def server_info(url: str) -> dict:
    """The server's version, pgvector's and the settings the benchmark reports."""
    import psycopg

    with psycopg.connect(url) as con:
        one = lambda sql: str(con.execute(sql).fetchone()[0])  # noqa: E731
        return dict(version=one("SHOW server_version"), shared_buffers=one("SHOW shared_buffers"),
                    parallel_workers=one("SHOW max_parallel_maintenance_workers"),
                    pgvector=one("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"))


def with_db(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + dbname))


def create_database(admin_url: str, dbname: str) -> str:
    """A new empty database (dropped first if left over) and its URL."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {dbname}")
        con.execute(f"CREATE DATABASE {dbname}")
    return with_db(admin_url, dbname)


def drop_database(admin_url: str, dbname: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")


def disk_mb(location: str) -> dict:
    """What the store keeps: ``index_mb`` (the FAISS file; the HNSW index) and ``data_mb`` (the SQLite file; the
    gallery's tables with their other indexes)."""
    if not location.startswith("postgresql://"):
        path = Path(location)
        index = path.with_name(path.name + ".faiss")
        return dict(index_mb=index.stat().st_size / 2**20, data_mb=path.stat().st_size / 2**20)
    import psycopg

    with psycopg.connect(location) as con:
        index, total = con.execute(
            "SELECT pg_relation_size('faceverify_embeddings_hnsw'), pg_total_relation_size('faceverify_embeddings') "
            "+ pg_total_relation_size('faceverify_identities')"
        ).fetchone()
    return dict(index_mb=index / 2**20, data_mb=(total - index) / 2**20)


def stored_vectors(location: str, dim: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Every stored embedding, read straight from the store's tables: row ids, identity names, vectors."""
    if not location.startswith("postgresql://"):
        db = sqlite3.connect(f"file:{location}?mode=ro", uri=True)
        rows = db.execute("SELECT e.id, i.name, e.vector FROM embeddings e JOIN identities i ON i.id = e.identity_id "
                          "ORDER BY e.id").fetchall()
        db.close()
        vectors = [np.frombuffer(blob, np.float32) for _, _, blob in rows]
    else:
        import psycopg
        from pgvector.psycopg import register_vector

        with psycopg.connect(location) as con:
            register_vector(con)
            rows = con.cursor(binary=True).execute(
                "SELECT e.id, i.name, e.vector FROM faceverify_embeddings e JOIN faceverify_identities i "
                "ON i.id = e.identity_id ORDER BY e.id").fetchall()
        vectors = [v.to_numpy() for _, _, v in rows]
    xb = np.stack(vectors).astype(np.float32).reshape(-1, dim)
    return np.array([r[0] for r in rows], np.int64), [r[1] for r in rows], xb
