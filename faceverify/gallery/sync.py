"""The search index kept in step with the database: built from it, loaded from its saved file, caught up with
what was committed since, and saved with a record of what it reflects."""

from __future__ import annotations

import json
import sqlite3
import warnings
from pathlib import Path

import numpy as np

from .._util import write_atomic
from .index import SearchIndex, load_index
from .store import Store

SAVE_EVERY = 64
"""The index is saved on close once unsaved changes reach 1/SAVE_EVERY of its size (amortised O(1) writes)."""
SAVE_BUSY_MS = 5_000
"""How long a save waits for the write lock before giving up (saving later loses nothing)."""


class GalleryIndexWarning(UserWarning):
    """The saved search index could not be used and is being rebuilt from the gallery database."""


def build_index(store: Store) -> SearchIndex:
    """A fresh index of every stored embedding."""
    dim = store.dim()
    with store.read():
        generation, last, epoch = store.counters()
        ids, vectors = store.rows_above(0, dim)
    return SearchIndex.build(ids, vectors, dim, last, epoch, generation)


def catch_up(store: Store, index: SearchIndex) -> None:
    """Apply what other writers (or this process) committed since the index was last brought up to date."""
    with store.read():
        generation, last, epoch = store.counters()
        if generation == index.generation:
            return
        gone = np.zeros(0, np.int64)
        if epoch != index.epoch:
            gone = np.setdiff1d(index.ids(), store.ids_up_to(index.hwm), assume_unique=True)
        ids, vectors = store.rows_above(index.hwm, index.dim)
    index.remove(gone)
    index.add(ids, vectors)
    index.hwm, index.epoch, index.generation = last, epoch, generation


def load_saved_index(store: Store, path: Path, stacklevel: int) -> SearchIndex | None:
    """The index saved at ``path`` brought up to date, or None when there is none usable (then, unless none was
    ever saved, a GalleryIndexWarning attributed as ``warnings.warn(stacklevel=...)`` would in the caller)."""
    raw = store.meta("index")
    if raw is None:
        return None
    problem, index = load_index(path, raw, store.meta("model_id"), store.dim())
    if problem is not None:
        warnings.warn(
            GalleryIndexWarning(f"{path}: search index {problem}; rebuilding it from {store.path.name}"),
            stacklevel=stacklevel + 1,
        )
        return None
    assert index is not None
    catch_up(store, index)
    return index


def needs_saving(index: SearchIndex) -> bool:
    """Whether the changes since the last save reach 1/SAVE_EVERY of the index."""
    return index.unsaved >= max(1, index.ntotal // SAVE_EVERY)


def save_index(store: Store, index: SearchIndex, path: Path, stacklevel: int) -> bool:
    """Write the index to ``path`` and record it in the meta table, as one saver at a time; False if the
    database stayed busy or the file could not be written (then a GalleryIndexWarning, ``stacklevel`` as in
    load_saved_index)."""
    data, record = index.serialize(str(store.meta("model_id")))
    try:
        with store.write(busy_ms=SAVE_BUSY_MS):  # one saver at a time: the file and its record agree
            write_atomic(path, data)
            store.set_meta("index", json.dumps(record))
    except sqlite3.OperationalError:
        return False
    except OSError as exc:
        warnings.warn(GalleryIndexWarning(f"{path}: cannot save the search index ({exc})"), stacklevel=stacklevel + 1)
        return False
    index.unsaved = 0
    return True
