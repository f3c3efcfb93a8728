"""The FAISS search index over embedding row ids: exact or IVF, add and remove rows, search, the saved file.

This module knows nothing of SQLite; ``sync`` keeps an index in step with the database.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .._util import sha256_bytes

EXACT_LIMIT = 100_000
"""Most embeddings searched exactly; above this the IVF index is used (see BENCHMARKS.md)."""
NPROBE = 32
"""The fewest inverted lists an IVF search probes."""
PROBE_SHARE = 32
"""An IVF search probes 1/PROBE_SHARE of the lists (at least NPROBE): misses follow the share probed, not nlist
(894 lists: 1/56 missed 0.2% of identities, 1/28 none; 1,996 lists, seed 1: 1/62 missed 0.07%, 1/32 0.01%)."""
RERANK_IDENTITIES = 8
"""Candidate identities from the IVF index whose scores are recomputed exactly over all their embeddings."""
RETRAIN_GROWTH = 4
"""The IVF index is retrained once the gallery holds this many times the vectors it was trained on."""
PARALLEL_MIN = 64
"""FAISS calls on fewer rows (queries searched, vectors added or removed) run single-threaded: waking threads for
a few rows costs more than it saves, and on a busy machine a parallel region waits for descheduled threads
(measured on 2 shared cores: one query 0.45 -> 48 ms, adding 10 vectors to an IVF 0.1 -> 36 ms)."""
TRAIN_PER_LIST = 40
"""Training sample per inverted list of an IVF index."""


def nlist_for(n: int) -> int:
    """Inverted lists for an IVF index trained on n vectors."""
    return max(64, int(2 * math.sqrt(n)))


def nprobe_for(nlist: int) -> int:
    """Inverted lists an IVF index of ``nlist`` lists probes per query."""
    return min(nlist, max(NPROBE, nlist // PROBE_SHARE))


@contextlib.contextmanager
def faiss_threads(rows: int) -> Iterator[None]:
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
def gpu_resources() -> Any:
    """FAISS GPU resources when FAISS sees a GPU (created once per process), else None."""
    import faiss

    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() <= 0:
        return None
    return faiss.StandardGpuResources()


class SearchIndex:
    """A FAISS index over embedding row ids and the database state it reflects: the rows up to ``hwm``, removals
    up to ``epoch``, writes up to ``generation``. ``gpu`` is its GPU copy, if any."""

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
    def build(
        cls, ids: np.ndarray, vectors: np.ndarray, dim: int, hwm: int, epoch: int, generation: int
    ) -> "SearchIndex":
        """Exact index for up to EXACT_LIMIT vectors, else an IVF index trained on a sample of them."""
        import faiss

        n = len(ids)
        if n <= EXACT_LIMIT:
            index, kind, trained_n = faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), "flat", 0
        else:
            nlist = nlist_for(n)
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.niter = 10
            sample = np.random.default_rng(0).choice(n, min(n, nlist * TRAIN_PER_LIST), replace=False)
            index.train(np.ascontiguousarray(vectors[np.sort(sample)]))
            index.nprobe = nprobe_for(nlist)
            kind, trained_n = "ivf", n
        out = cls(index, kind, dim, hwm, epoch, generation, trained_n)
        out.add(ids, vectors)
        return out

    @property
    def ntotal(self) -> int:
        """Embedding rows in the index."""
        return int(self.index.ntotal)

    def needs_rebuild(self) -> bool:
        """Whether the index kind or training no longer suits its size."""
        if self.kind == "flat":
            return self.ntotal > EXACT_LIMIT
        return self.ntotal < EXACT_LIMIT // 2 or self.ntotal > RETRAIN_GROWTH * self.trained_n

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add embedding rows (and to the GPU copy, if any)."""
        if len(ids):
            with faiss_threads(len(ids)):
                self.index.add_with_ids(vectors, ids)
                if self.gpu is not None:
                    self.gpu.add_with_ids(vectors, ids)
            self.unsaved += len(ids)

    def remove(self, ids: np.ndarray) -> None:
        """Remove embedding rows (ids not in the index are ignored); the GPU copy is redone on next use."""
        if len(ids):
            with faiss_threads(len(ids)):
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
        with faiss_threads(len(queries)):
            return self._searcher().search(queries, k)

    def _searcher(self) -> Any:
        """The GPU copy of the index when FAISS sees a GPU (made on first use), else the index itself."""
        resources = gpu_resources()
        if resources is None:
            return self.index
        if self.gpu is None:
            import faiss

            self.gpu = faiss.index_cpu_to_gpu(resources, 0, self.index)
        return self.gpu

    def serialize(self, model_id: str) -> tuple[memoryview, dict]:
        """The index file's bytes and the record the gallery keeps of them (sha256, size, state reflected)."""
        import faiss

        data = memoryview(faiss.serialize_index(self.index))
        record = dict(sha256=sha256_bytes(data), bytes=len(data), kind=self.kind, dim=self.dim, model_id=model_id,
                      hwm=self.hwm, epoch=self.epoch, generation=self.generation, trained_n=self.trained_n,
                      ntotal=self.ntotal)
        return data, record


def load_index(path: Path, raw_record: str, model_id: str | None, dim: int) -> tuple[str | None, SearchIndex | None]:
    """(problem, None) or (None, index) for the file at ``path`` described by the record ``raw_record``; the
    file reaches FAISS only if its size and sha256 match the record."""
    import faiss

    try:
        state = json.loads(raw_record)
        sha, size, kind, saved_dim = str(state["sha256"]), int(state["bytes"]), str(state["kind"]), int(state["dim"])
        counters = [int(state[k]) for k in ("hwm", "epoch", "generation", "trained_n", "ntotal")]
        saved_model = state["model_id"]
    except (ValueError, TypeError, KeyError):
        return "has an unreadable record in the gallery", None
    if saved_model != model_id or saved_dim != dim or kind not in ("flat", "ivf"):
        return "was built for another model or layout", None
    try:
        if path.stat().st_size != size:
            return "does not have the size recorded in the gallery (truncated or replaced)", None
        data = path.read_bytes()
    except FileNotFoundError:
        return "is missing", None
    except OSError as exc:
        return f"cannot be read ({exc.strerror})", None
    if sha256_bytes(data) != sha:
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
        loaded.nprobe = nprobe_for(loaded.nlist)
    return None, SearchIndex(loaded, kind, dim, hwm, epoch, generation, trained_n)
