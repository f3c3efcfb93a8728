"""The gallery at scale, in both stores side by side (SQLite + FAISS, PostgreSQL + pgvector): enrol throughput,
index build and upkeep, query latency, memory and recall against exact search.

Synthetic data (stated in the report): identity centres are random unit vectors in 128-d; each identity has
``--per-identity`` embeddings, each its centre plus Gaussian noise (sigma ``--noise`` per dimension), normalised,
so two samples of one identity score ~0.75 cosine and different identities ~0; queries are fresh noisy samples
of enrolled identities. (Independent random unit vectors would all be nearly orthogonal, which makes approximate
search artificially hard and tells nothing about galleries of faces.)

Every size and store runs in two fresh processes: ``fill`` enrols through ``open_gallery`` and builds the index,
``query`` reopens the gallery (loading the saved index, as a new CLI process would) and measures search. The
PostgreSQL server is ``$FACEVERIFY_TEST_POSTGRES`` or one started by ``pgserver`` in a temporary folder
(tools/gallery_stores.py). The run stops with an error unless every store produced sane figures at every size.

    python tools/bench_gallery.py --sizes 10000 100000 1000000 --compare 200000 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 128
MODEL = "synthetic@1:bench"
CHUNK = 1_000  # identities per bulk transaction
LIVE = 100  # identities enrolled in one transaction into the searchable gallery
SINGLES = 200  # identities enrolled one call at a time, each followed by a search
HEADING = "## Gallery at scale"


def rss_mb(key: str = "VmRSS") -> float:
    """Resident (VmRSS) or peak resident (VmHWM) memory of this process in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def centres(n_ids: int, seed: int) -> np.ndarray:
    return unit(np.random.default_rng([seed, 0]).standard_normal((n_ids, DIM), dtype=np.float32))


def samples(c: np.ndarray, per: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """``per`` noisy samples of each centre, identity-major."""
    x = np.repeat(c, per, axis=0)
    return unit(x + noise * rng.standard_normal(x.shape, dtype=np.float32))


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# -- phases (each in its own process) ----------------------------------------------------------------------


def phase_fill(location: str, n: int, per: int, noise: float, seed: int) -> dict:
    """Enrol n embeddings into the store at ``location``: bulk transactions inside ``bulk_loading`` (then the
    index: SQLite builds FAISS on the first search, PostgreSQL its HNSW index at the end of the load), LIVE
    identities in one transaction into the searchable gallery, then SINGLES identities one call each, each
    followed by a search."""
    from faceverify.gallery import Enrolment, open_gallery

    n_ids = n // per
    c = centres(n_ids, seed)
    bulk_ids = n_ids - SINGLES - LIVE

    def batch(first: int, last: int) -> list[tuple[str, list[Enrolment]]]:
        x = samples(c[first:last], per, noise, np.random.default_rng([seed, 1, first]))
        return [
            (f"person {i:07d}", [Enrolment(x[(i - first) * per + j], f"/synthetic/{i}/{j}.jpg", f"{i}-{j}")
                                 for j in range(per)])
            for i in range(first, last)
        ]

    out: dict = {}
    probe = samples(c[:1], 1, noise, np.random.default_rng([seed, 3]))
    with open_gallery(location, MODEL, DIM) as g:
        t0 = time.perf_counter()
        with g.bulk_loading():
            for first in range(0, bulk_ids, CHUNK):
                g.enroll_many(batch(first, min(first + CHUNK, bulk_ids)))
            t1 = time.perf_counter()
        g.search(probe)
        t2 = time.perf_counter()
        out["bulk_rate"] = bulk_ids * per / (t1 - t0)
        out["build_s"] = t2 - t1
        out["searchable_rate"] = bulk_ids * per / (t2 - t0)
        index = g.search_index
        out["kind"] = "hnsw" if index is None else index.kind
        out["nlist"] = int(index.index.nlist) if out["kind"] == "ivf" else None
        items = batch(bulk_ids, bulk_ids + LIVE)
        t0 = time.perf_counter()
        g.enroll_many(items)
        g.search(probe)
        out["live_rate"] = LIVE * per / (time.perf_counter() - t0)
        enrol_ms, upkeep_ms = [], []
        for first in range(bulk_ids + LIVE, n_ids):
            ((name, items),) = batch(first, first + 1)
            t0 = time.perf_counter()
            g.enroll(name, items)
            t1 = time.perf_counter()
            g.search(probe)
            t2 = time.perf_counter()
            enrol_ms.append((t1 - t0) * 1e3)
            upkeep_ms.append((t2 - t1) * 1e3)
        out["enrol1_p50_ms"] = pct(enrol_ms, 50)
        out["upkeep_p50_ms"] = pct(upkeep_ms, 50)
        out["embeddings"], out["identities"] = g.embedding_count(), len(g)
        t0 = time.perf_counter()
    out["close_s"] = time.perf_counter() - t0
    out["fill_peak_rss_mb"] = rss_mb("VmHWM")
    return out


def exact_best(queries: np.ndarray, xb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact search: each query's best inner product over every row of ``xb`` and that row."""
    best = np.full(len(queries), -np.inf, np.float32)
    arg = np.zeros(len(queries), np.int64)
    rows = np.arange(len(queries))
    for start in range(0, len(xb), 200_000):
        s = queries @ xb[start : start + 200_000].T
        top = s.argmax(axis=1)
        better = s[rows, top] > best
        best[better] = s[rows, top][better]
        arg[better] = start + top[better]
    return best, arg


def phase_query(location: str, n: int, per: int, noise: float, seed: int, n_queries: int, n_batches: int) -> dict:
    """Reopen the gallery, then measure latency, memory and recall against exact search over the stored vectors."""
    import faiss

    from faceverify.gallery import open_gallery
    from tools.gallery_stores import disk_mb, stored_vectors

    n_ids = n // per
    rng = np.random.default_rng([seed, 2])
    truth_ids = rng.integers(0, n_ids, n_queries + 64 * n_batches)
    queries = samples(centres(n_ids, seed)[truth_ids], 1, noise, rng)
    single, batches = queries[:n_queries], queries[n_queries:].reshape(n_batches, 64, DIM)
    out: dict = {"faiss_threads": faiss.omp_get_max_threads()}

    rss0 = rss_mb()
    t0 = time.perf_counter()
    g = open_gallery(location, MODEL, DIM)
    g.search(single[:1])
    out["cold_s"] = time.perf_counter() - t0
    out["index_rss_mb"] = rss_mb() - rss0
    out["rss_mb"] = rss_mb()
    out.update(disk_mb(location))

    lat, cpu, answers = [], [], []
    for q in single:
        t0, c0 = time.perf_counter(), time.process_time()
        answers.append(g.search(q[None, :])[0][0])
        cpu.append((time.process_time() - c0) * 1e3)
        lat.append((time.perf_counter() - t0) * 1e3)
    out.update(q_p50_ms=pct(lat, 50), q_p99_ms=pct(lat, 99), q_cpu_p50_ms=pct(cpu, 50))
    blat, bcpu = [], []
    for b in batches:
        t0, c0 = time.perf_counter(), time.process_time()
        g.search(b)
        bcpu.append((time.process_time() - c0) * 1e3)
        blat.append((time.perf_counter() - t0) * 1e3)
    out.update(b_p50_ms=pct(blat, 50), b_p99_ms=pct(blat, 99), b_cpu_p50_ms=pct(bcpu, 50))
    raw_top = g.search_index.search(single, 1)[1][:, 0] if g.search_index is not None else None
    g.close()

    ids, owners, xb = stored_vectors(location, DIM)
    best, arg = exact_best(single, xb)
    exact_names = [owners[a] for a in arg]
    out["recall_identity"] = float(np.mean([name == e for (name, _), e in zip(answers, exact_names)]))
    out["recall_score"] = float(np.mean([name == e and abs(s - b) < 1e-5
                                         for (name, s), e, b in zip(answers, exact_names, best)]))
    if raw_top is not None:
        out["recall_raw_embedding"] = float(np.mean(raw_top == ids[arg]))
    if n > 100_000 and raw_top is not None:  # how slow exact search would be at this size
        flat = faiss.IndexFlatIP(DIM)
        flat.add(xb)
        del xb
        ex = []
        for q in single[:50]:
            t0 = time.perf_counter()
            flat.search(q[None, :], 32)
            ex.append((time.perf_counter() - t0) * 1e3)
        out["exact_p50_ms"] = pct(ex, 50)
    return out


def phase_compare(n: int, per: int, noise: float, seed: int, n_queries: int) -> dict:
    """IVF as the gallery builds it vs HNSW on the same data: build time, latency, recall, memory."""
    import faiss

    from faceverify.gallery.index import EXACT_LIMIT, NPROBE, SearchIndex

    if n <= EXACT_LIMIT:
        raise SystemExit(f"--compare needs more than {EXACT_LIMIT:,} embeddings (below that the gallery is exact)")
    n_ids = n // per
    c = centres(n_ids, seed)
    xb = samples(c, per, noise, np.random.default_rng([seed, 1]))
    rng = np.random.default_rng([seed, 2])
    truth = rng.integers(0, n_ids, n_queries)
    q = samples(c[truth], 1, noise, rng)
    exact = (q @ xb.T).argmax(axis=1)
    rows = []

    def measure(label: str, index, build_s: float) -> None:
        lat = []
        for v in q:
            t0 = time.perf_counter()
            index.search(v[None, :], 32)
            lat.append((time.perf_counter() - t0) * 1e3)
        top = index.search(q, 1)[1][:, 0]
        rows.append(dict(index=label, build_s=build_s, p50_ms=pct(lat, 50), p99_ms=pct(lat, 99),
                         recall_embedding=float(np.mean(top == exact)),
                         recall_identity=float(np.mean(top // per == exact // per)),
                         mb=len(faiss.serialize_index(index)) / 2**20))

    t0 = time.perf_counter()
    ivf = SearchIndex.build(np.arange(n, dtype=np.int64), xb, DIM, n, 0, 0).index
    build = time.perf_counter() - t0
    for nprobe in (8, 16, NPROBE, 64):
        ivf.nprobe = nprobe
        measure(f"IVF{ivf.nlist},Flat nprobe={nprobe}", ivf, build)
    del ivf
    t0 = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 40
    hnsw.add(xb)
    build = time.perf_counter() - t0
    for ef in (32, 64, 128):
        hnsw.hnsw.efSearch = ef
        measure(f"HNSW32 efSearch={ef}", hnsw, build)
    return dict(rows=rows)


# -- driver ------------------------------------------------------------------------------------------------


def child(args: list[str]) -> dict:
    """Run one phase in a fresh Python process and return its JSON result."""
    out = subprocess.run([sys.executable, "-m", "tools.bench_gallery", *args], capture_output=True, text=True,
                         check=False, cwd=Path(__file__).resolve().parents[1])
    if out.returncode != 0:
        raise SystemExit(f"bench phase {args[:2]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(results: list[dict], compare: dict | None, command: str, per: int, noise: float, loads: list,
           server: dict | None) -> str:
    from faceverify.gallery.index import EXACT_LIMIT, NPROBE, PROBE_SHARE, RERANK_IDENTITIES

    lite = [r for r in results if r["store"] == "sqlite"]
    lines = [
        HEADING,
        "",
        f"Command: `{command}`",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on this machine: {os.cpu_count()} CPU cores **shared with other jobs** "
        f"(load average {loads[0]:.1f} at the start, {loads[1]:.1f} at the end), so wall-clock figures are "
        "pessimistic; "
        "the CPU time (all threads of the process) is given as well. No GPU. Synthetic data: identity centres are random unit "
        f"vectors in {DIM}-d, {per} embeddings per identity (centre + Gaussian noise, sigma {noise} per dimension, "
        "normalised: ~0.75 cosine within an identity, ~0 across), queries are fresh noisy samples of enrolled "
        "identities. Recall@1 is measured against exact search over every stored vector: *identity* = the "
        "gallery's top identity is exact search's; *identity + score* = and its score equals the exact best "
        f"score (to 1e-5); *raw ANN* = the index's own top embedding is exact search's nearest embedding, before "
        f"the gallery rescores its best {RERANK_IDENTITIES} candidate identities exactly.",
        "",
        f"Index: exact (`IndexFlatIP`) up to {EXACT_LIMIT:,} embeddings, else `IndexIVFFlat` (nlist = 2 sqrt(N), "
        f"nprobe = max({NPROBE}, nlist / {PROBE_SHARE})).",
        "",
        f"| embeddings | index | bulk enrol, {CHUNK * per:,} per transaction (emb/s) | enrol 1 identity, p50 (ms) "
        "| index build from DB (s) "
        "| catch-up + search after an enrol, p50 (ms) | reopen + first search (s) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in lite:
        kind = "exact" if r["kind"] == "flat" else f"IVF{r['nlist']}"
        lines.append(
            f"| {r['n']:,} | {kind} | {r['bulk_rate']:,.0f} | {r['enrol1_p50_ms']:.1f} | {r['build_s']:.1f} "
            f"| {r['upkeep_p50_ms']:.1f} | {r['cold_s']:.2f} |"
        )
    lines += [
        "",
        "| embeddings | query p50 / p99 (ms) | query CPU p50 (ms) | batch of 64 p50 / p99 (ms) | batch CPU p50 (ms) "
        "| exact search p50 (ms) | recall@1 identity | recall@1 identity + score | recall@1 raw ANN "
        "| index RSS (MiB) | process RSS (MiB) | index file (MiB) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in lite:
        exact = f"{r['exact_p50_ms']:.1f}" if "exact_p50_ms" in r else "(is exact)"
        lines.append(
            f"| {r['n']:,} | {r['q_p50_ms']:.2f} / {r['q_p99_ms']:.2f} | {r['q_cpu_p50_ms']:.2f} "
            f"| {r['b_p50_ms']:.1f} / {r['b_p99_ms']:.1f} | {r['b_cpu_p50_ms']:.1f} | {exact} "
            f"| {r['recall_identity']:.4f} | {r['recall_score']:.4f} | {r['recall_raw_embedding']:.4f} | {r['index_rss_mb']:.0f} | {r['rss_mb']:.0f} "
            f"| {r['index_mb']:.0f} |"
        )
    lines += ["", *findings(lite, compare)]
    if compare:
        lines += [
            "",
            f"IVF or HNSW, on the same synthetic data ({compare['n']:,} embeddings, raw index search, k = 32):",
            "",
            "| index | build (s) | p50 / p99 (ms) | recall@1 embedding | recall@1 identity | size (MiB) |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in compare["rows"]:
            lines.append(
                f"| {r['index']} | {r['build_s']:.1f} | {r['p50_ms']:.2f} / {r['p99_ms']:.2f} "
                f"| {r['recall_embedding']:.4f} | {r['recall_identity']:.4f} | {r['mb']:.0f} |"
            )
    if server is not None:
        lines += ["", *postgres_section(results, server, per)]
    return "\n".join(lines) + "\n"


def postgres_section(results: list[dict], server: dict, per: int) -> list[str]:
    """The two stores side by side (a subsection of this benchmark's section)."""
    from faceverify.gallery.pgstore import HNSW_EF_CONSTRUCTION, HNSW_M
    from faceverify.gallery.pgstore import EF_ROWS, EF_SEARCH

    lines = [
        "### PostgreSQL + pgvector beside SQLite + FAISS",
        "",
        f"The same run, the same embeddings, each store filled and queried by fresh processes through "
        f"`open_gallery`. PostgreSQL {server['version']} with pgvector {server['pgvector']} from the `pgserver` "
        f"wheel on this machine (client and server share its cores; Unix socket), durable settings as shipped "
        f"(fsync, synchronous_commit on; SQLite runs synchronous=FULL), shared_buffers {server['shared_buffers']}, "
        f"max_parallel_maintenance_workers {server['parallel_workers']}. HNSW m = {HNSW_M}, ef_construction = "
        f"{HNSW_EF_CONSTRUCTION}, ef_search = {EF_SEARCH} up to {EF_ROWS:,} embeddings, x sqrt(N / {EF_ROWS:,}) beyond, identities among the nearest rescored exactly. Bulk "
        f"enrolment: `enroll_many` of {CHUNK:,} identities ({CHUNK * per:,} embeddings) per transaction inside "
        "`bulk_loading()`, which on PostgreSQL loads without the HNSW index and builds it at the end (as "
        "`gallery migrate` does); *index build* is that build (SQLite: FAISS's, from the database) plus the first "
        f"search; *into the searchable gallery*: {LIVE} identities in one transaction with the index kept "
        "up, plus one search; *enrol 1 identity*: one identity per call, each followed by a search.",
        "",
        "| embeddings | store | bulk enrol (emb/s) | index build (s) | bulk enrol to searchable (emb/s) "
        "| into the searchable gallery (emb/s) | enrol 1 identity, p50 (ms) | search after it, p50 (ms) "
        "| reopen + first search (s) | query p50 / p99 (ms) | batch of 64, p50 (ms) | recall@1 identity "
        "| recall@1 identity + score | index (MiB) | other data (MiB) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        store = "SQLite + FAISS" if r["store"] == "sqlite" else "PostgreSQL + pgvector"
        index = {"flat": "exact", "ivf": f"IVF{r['nlist']}", "hnsw": "HNSW"}[r["kind"]]
        lines.append(
            f"| {r['n']:,} | {store} ({index}) | {r['bulk_rate']:,.0f} | {r['build_s']:.1f} "
            f"| {r['searchable_rate']:,.0f} | {r['live_rate']:,.0f} | {r['enrol1_p50_ms']:.1f} "
            f"| {r['upkeep_p50_ms']:.1f} | {r['cold_s']:.2f} | {r['q_p50_ms']:.2f} / {r['q_p99_ms']:.2f} "
            f"| {r['b_p50_ms']:.0f} | {r['recall_identity']:.4f} | {r['recall_score']:.4f} | {r['index_mb']:.0f} "
            f"| {r['data_mb']:.0f} |"
        )
    return lines


def findings(results: list[dict], compare: dict | None) -> list[str]:
    """What the tables show, in words, from the measured figures."""
    from faceverify.gallery.index import EXACT_LIMIT

    out = []
    big = [r for r in results if "exact_p50_ms" in r]
    edge = [r for r in results if r["n"] == EXACT_LIMIT]
    if big and edge:
        r, e = big[-1], edge[0]
        out.append(
            f"Exact search costs {e['q_p50_ms']:.1f} ms per query at {e['n']:,} embeddings ({e['q_cpu_p50_ms']:.1f} ms "
            f"of CPU) and {r['exact_p50_ms']:.0f} ms at {r['n']:,}, growing linearly: hence exact search up to "
            f"{EXACT_LIMIT:,} and IVF beyond. At {r['n']:,} the gallery answers in {r['q_p50_ms']:.2f} ms (p50), "
            f"and its top identity and score equal exact search's for {r['recall_score']:.2%} of queries, although "
            f"the IVF's own top embedding is exact search's for only {r['recall_raw_embedding']:.1%}: the samples of "
            "one identity are near-ties, and rescoring the candidate identities over all their stored embeddings "
            "makes the answer exact whenever the right identity is among the candidates."
        )
    out.append(
        "Enrolment writes only SQLite (one transaction per call); the index follows on the next search by adding "
        "the rows above its high-water mark (the catch-up column), and a reopened gallery loads the saved index "
        "after checking its sha256 instead of rebuilding it."
    )
    if compare:
        rows = compare["rows"]
        ivf = next(r for r in rows if r["index"].startswith("IVF"))
        hnsw = next(r for r in rows if r["index"].startswith("HNSW"))
        out.append(
            f"IVF rather than HNSW: on {compare['n']:,} embeddings HNSW reaches better raw recall at similar latency, "
            f"but takes {hnsw['build_s'] / ivf['build_s']:.0f}x longer to build ({hnsw['build_s']:.0f} s vs "
            f"{ivf['build_s']:.0f} s), {hnsw['mb'] / ivf['mb']:.1f}x the memory, cannot remove vectors "
            "(tombstones and periodic rebuilds) and is not taken by FAISS's GPU cloner; IVF supports remove_ids and "
            "GPU search, and exact rescoring closes its recall gap."
        )
    return [line for text in out for line in (text, "")][:-1]


def write_section(path: Path, section: str) -> None:
    """Add or replace this benchmark's section of BENCHMARKS.md, leaving the other sections as they are."""
    from faceverify._util import write_atomic

    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.rstrip() == HEADING), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = "".join(lines[end:])
        new = "".join(lines[:start]) + section + ("\n" + tail if tail else "")
    write_atomic(path, new)


def check_row(row: dict, per: int) -> None:
    """Stop (PeerFailed) unless a store's figures are all there and sane: every embedding stored, rates and
    latencies positive and finite, recall computed."""
    from tools.common import PeerFailed

    store = f"{row['store']} at {row['n']:,}"
    need = ("bulk_rate", "build_s", "searchable_rate", "live_rate", "enrol1_p50_ms", "upkeep_p50_ms", "cold_s",
            "q_p50_ms", "q_p99_ms", "b_p50_ms", "recall_identity", "recall_score", "index_mb", "data_mb")
    bad = [k for k in need if not isinstance(row.get(k), (int, float)) or not math.isfinite(row[k]) or row[k] < 0]
    if bad:
        raise PeerFailed(store, f"missing or invalid figures {bad}")
    if row["embeddings"] != row["n"] or row["identities"] != row["n"] // per:
        raise PeerFailed(store, f"holds {row['embeddings']:,} embeddings of {row['identities']:,} identities, "
                                f"not {row['n']:,} of {row['n'] // per:,}")
    if min(row["bulk_rate"], row["live_rate"], row["q_p50_ms"], row["index_mb"]) <= 0 or row["recall_identity"] > 1:
        raise PeerFailed(store, f"implausible figures: {row}")


def run_store(store: str, n: int, work: Path, admin_url: str | None, common: list[str], a: argparse.Namespace) -> dict:
    """Fill then query one store at one size (each in its own process), checked; the gallery deleted after."""
    from tools.gallery_stores import create_database, drop_database

    dbname = f"fv_bench_{n}"
    location = str(work / f"g{n}.sqlite") if store == "sqlite" else create_database(admin_url, dbname)
    row = dict(n=n, store=store)
    try:
        row.update(child(["--phase", "fill", "--n", str(n), "--location", location, *common]))
        row.update(child(["--phase", "query", "--n", str(n), "--location", location, *common,
                          "--queries", str(a.queries), "--batches", str(a.batches)]))
    finally:
        if store == "sqlite":
            for f in work.glob(f"g{n}.sqlite*"):
                f.unlink()
        else:
            drop_database(admin_url, dbname)
    check_row(row, a.per_identity)
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def main() -> None:
    from tools.gallery_stores import STORES, postgres_server, server_info

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--stores", nargs="+", choices=STORES, default=list(STORES))
    ap.add_argument("--per-identity", type=int, default=10)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare", type=int, default=0, help="also compare IVF with HNSW at this size (0: skip)")
    ap.add_argument("--dir", type=Path, default=None, help="where the galleries go (default: a temporary directory)")
    ap.add_argument("--write", type=Path, default=None, help="add/replace the section in this markdown file")
    ap.add_argument("--phase", choices=["fill", "query", "compare"], help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--location", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.phase == "fill":
        print(json.dumps(phase_fill(a.location, a.n, a.per_identity, a.noise, a.seed)))
        return
    if a.phase == "query":
        print(json.dumps(phase_query(a.location, a.n, a.per_identity, a.noise, a.seed, a.queries, a.batches)))
        return
    if a.phase == "compare":
        print(json.dumps(phase_compare(a.n, a.per_identity, a.noise, a.seed, a.queries)))
        return

    command = "python tools/bench_gallery.py " + " ".join(sys.argv[1:])
    common = ["--per-identity", str(a.per_identity), "--noise", str(a.noise), "--seed", str(a.seed)]
    loads = [os.getloadavg()[0]]
    work = Path(tempfile.mkdtemp(prefix="bench_gallery_", dir=a.dir))
    results: list[dict] = []
    server = postgres_server() if "postgresql" in a.stores else contextlib.nullcontext(None)
    try:
        with server as admin_url:
            info = server_info(admin_url) if admin_url else None
            for n in a.sizes:
                for store in a.stores:
                    results.append(run_store(store, n, work, admin_url, common, a))
        compare = None
        if a.compare:
            compare = dict(n=a.compare, **child(["--phase", "compare", "--n", str(a.compare), *common,
                                                  "--queries", str(a.queries)]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    loads.append(os.getloadavg()[0])
    section = report(results, compare, command, a.per_identity, a.noise, loads, info)
    print(section)
    if a.write:
        write_section(a.write, section)


if __name__ == "__main__":
    main()
