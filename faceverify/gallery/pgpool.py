"""Pooled connections to a PostgreSQL gallery: one ``psycopg_pool`` pool per URL and process, shared by every
gallery object opened on that URL (a service's gallery thread and its streams, a CLI command), so that opening a
gallery costs no new connection once one is open.

Size: ``pool_size`` where a gallery is opened, else ``$FACEVERIFY_PG_POOL_SIZE``, else ``DEFAULT_POOL_SIZE``;
one connection is kept open, more are opened on demand and closed after ``max_idle``. Each connection is
checked when taken from the pool, so one that a server restart broke is replaced instead of failing the call;
while the server is away, taking a connection waits up to ``CONNECT_TIMEOUT_S`` for it to come back, then fails
with the reason a direct connection attempt gives (one line, see :func:`pgstore.connection_error`).
"""

from __future__ import annotations

import atexit
import os
import threading
from typing import Any

from ..errors import GalleryError
from .pgstore import CONNECT_TIMEOUT_S, connect, ensure_extension, register

POOL_SIZE_ENV = "FACEVERIFY_PG_POOL_SIZE"
DEFAULT_POOL_SIZE = 4
"""Connections per URL and process at most (a service: its gallery thread and up to 4 streams take turns)."""

_pools: dict[str, Any] = {}
_lock = threading.Lock()
_inherited: list[Any] = []


def pool_size(size: int | None = None) -> int:
    """The pool size to use: ``size``, else ``$FACEVERIFY_PG_POOL_SIZE``, else the default; GalleryError
    unless a whole number of at least 1."""
    value = size if size is not None else os.environ.get(POOL_SIZE_ENV, "").strip() or DEFAULT_POOL_SIZE
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise GalleryError(f"{POOL_SIZE_ENV} must be a whole number of at least 1, not {value!r}")
    return n


def shared_pool(url: str, where: str, size: int | None = None) -> Any:
    """The open pool for ``url`` in this process, created on first use: a direct connection first (so that an
    unreachable server, a refused login or a missing database fails at once, in one line) enables pgvector
    where it is missing, since every pooled connection registers its types. A pool already open keeps its
    size."""
    try:
        from psycopg_pool import ConnectionPool
    except ImportError as exc:
        raise GalleryError(f"a PostgreSQL gallery needs psycopg_pool ({exc}): pip install 'faceverify[postgres]'") from None
    with _lock:
        pool = _pools.get(url)
        if pool is not None and not pool.closed:
            return pool
        n = pool_size(size)
        conn = connect(url, where)
        try:
            ensure_extension(conn, where)
        finally:
            conn.close()
        pool = ConnectionPool(
            url, min_size=1, max_size=n, open=True, name="faceverify", timeout=CONNECT_TIMEOUT_S,
            kwargs=dict(autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name="faceverify"),
            configure=register, check=ConnectionPool.check_connection,
        )
        _pools[url] = pool
        return pool


def unavailable(url: str, where: str, size: int) -> GalleryError:
    """Why no pooled connection came in time: what a direct connection attempt says, else a busy pool."""
    connect(url, where).close()  # raises the one-line reason when the server is away or refuses
    return GalleryError(f"{where}: all {size} pooled connections stayed busy for {CONNECT_TIMEOUT_S} s "
                        f"(raise {POOL_SIZE_ENV})")


def close_pools() -> None:
    """Close every pool of this process (at exit)."""
    with _lock:
        for pool in _pools.values():
            pool.close(timeout=1)
        _pools.clear()


def _forget_in_child() -> None:
    """A forked child must not use (or close) its parent's connections: it opens its own."""
    global _lock
    _lock = threading.Lock()
    _inherited.extend(_pools.values())
    _pools.clear()


atexit.register(close_pools)
os.register_at_fork(after_in_child=_forget_in_child)
