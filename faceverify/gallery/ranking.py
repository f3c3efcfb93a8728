"""From index hits to ranked identities: owners and names looked up in SQLite at query time, and exact scores
for the leading candidates of an approximate (IVF) search."""

from __future__ import annotations

import math

import numpy as np

from .index import RERANK_IDENTITIES, SearchIndex
from .store import Store


def rank(store: Store, index: SearchIndex, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
    """For each query, identities ranked by their best-matching embedding's cosine similarity."""
    scores, ids = index.search(queries, max(1, min(k, index.ntotal)))
    wanted = np.unique(ids[ids >= 0]).tolist()
    owners = dict(store.select_in("SELECT id, identity_id FROM embeddings WHERE id IN ({})", wanted))
    ranked: list[list[tuple[int, float]]] = []
    for row_scores, row_ids in zip(scores, ids):
        best: dict[int, float] = {}
        for s, i in zip(row_scores, row_ids):
            owner = owners.get(int(i))
            if owner is not None and owner not in best:
                best[owner] = float(s)
        ranked.append(list(best.items()))
    if index.kind == "ivf":
        rescore(store, queries, ranked)
    identities = sorted({owner for row in ranked for owner, _ in row})
    names = dict(store.select_in("SELECT id, name FROM identities WHERE id IN ({})", identities))
    return [sorted(((names[o], s) for o, s in row if o in names), key=lambda kv: -kv[1]) for row in ranked]


def rescore(store: Store, queries: np.ndarray, ranked: list[list[tuple[int, float]]]) -> None:
    """Replace the approximate scores of each query's leading candidate identities by exact ones."""
    dim = queries.shape[1]
    for q, row in zip(queries, ranked):
        top = [owner for owner, _ in sorted(row, key=lambda kv: -kv[1])[:RERANK_IDENTITIES]]
        exact: dict[int, float] = {}
        for owner, blob in store.select_in("SELECT identity_id, vector FROM embeddings WHERE identity_id IN ({})", top):
            if len(blob) == 4 * dim:
                s = float(np.dot(np.frombuffer(blob, np.float32), q))
                exact[owner] = max(s, exact.get(owner, -math.inf))
        row[:] = [(o, exact.get(o, s)) for o, s in row]
