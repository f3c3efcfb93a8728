"""The PostgreSQL gallery store against a real server (pgserver's PostgreSQL 16 + pgvector, or
``$FACEVERIFY_TEST_POSTGRES``): concurrent writer processes, writers killed mid-transaction, HNSW search against
exact search, a lost connection, and the one-line errors. The behaviours both stores share run on both in
tests/test_gallery.py and tests/test_hostile_inputs.py (the ``gallery_location`` fixture)."""

from __future__ import annotations

import json
import multiprocessing
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from faceverify.errors import GalleryError
from faceverify.gallery import Enrolment, open_gallery

MODEL = "test-model@1:postgres"
DIM = 32

COMMON = f"""
import numpy as np
from faceverify.gallery import Enrolment, open_gallery
MODEL, DIM = {MODEL!r}, {DIM}

def vec(seed):
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)

def items(seeds):
    return [Enrolment(vec(s), f"/img/{{s}}.jpg", f"s{{s}}") for s in seeds]

def top(g, v):
    return g.search(v[None, :])[0][0][0]
"""

WRITER = COMMON + """
g = open_gallery(url, MODEL, DIM)
for i in range(50):
    if i % 5 == 4:  # every writer also adds to the same 10 identities
        g.enroll(f"shared{i // 5}", items([900_000 + 1000 * w + i]))
    else:
        g.enroll(f"w{w}-{i}", items([1000 * w + 2 * i, 1000 * w + 2 * i + 1]))
g.close()
"""

READER = COMMON + """
import json, os
from faceverify.errors import GalleryError
g = open_gallery(url, MODEL, DIM)
searches, errors = 0, []
while not os.path.exists(stop):
    try:
        g.search(vec(0)[None, :])
        searches += 1
    except GalleryError as exc:
        if "empty" not in str(exc):
            errors.append(str(exc))
    except Exception as exc:
        errors.append(repr(exc))
correct = sum(top(g, vec(1000 * w + 2 * i + j)) == f"w{w}-{i}" for w in range(writers) for i in range(50) if i % 5 != 4
              for j in range(2))
g.close()
with open(report, "w") as fh:
    json.dump(dict(searches=searches, errors=errors, correct=correct), fh)
"""

BATCH_WRITER = COMMON + """
g = open_gallery(url, MODEL, DIM)
with open(progress, "a") as log:
    for b in range(start, start + 10_000):
        g.enroll_many([(f"b{b}-{j}", items([100 * (100 * b + j) + t for t in range(3)])) for j in range(40)])
        log.write(f"{b}\\n")
        log.flush()
"""

SEARCHER = COMMON + """
import json, os
from faceverify.errors import GalleryError
g = open_gallery(url, MODEL, DIM)
counts, errors, n = dict(right=0, wrong=0, failed=0, right_after_restart=0), [], 0
while not os.path.exists(stop):
    n += 1
    try:
        name = top(g, vec(n % 20))
    except GalleryError as exc:
        counts["failed"] += 1
        errors.append(str(exc))
        continue
    except Exception as exc:
        errors.append("not a GalleryError: " + repr(exc))
        continue
    right = name == f"id{n % 20}"
    counts["right" if right else "wrong"] += 1
    counts["right_after_restart"] += right and os.path.exists(restarted)
with open(report, "w") as fh:
    json.dump(dict(counts=counts, errors=errors[:50]), fh)
"""

shared: dict = {}
exec(COMMON, shared)
vec, items, top = shared["vec"], shared["items"], shared["top"]

_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(["numpy", "psycopg", "faceverify.gallery", "faceverify.gallery.postgres"])


def _start(code: str, **names: object) -> multiprocessing.Process:
    scope = {"__name__": "__worker__", **{k: str(v) if isinstance(v, Path) else v for k, v in names.items()}}
    proc = _CTX.Process(target=exec, args=(code, scope), daemon=True)
    proc.start()
    return proc


@pytest.fixture()
def url(postgres) -> str:
    return postgres.fresh_url()


# -- concurrency and kills ---------------------------------------------------------------------------------

WRITERS = 8


def test_concurrent_writer_processes_lose_and_duplicate_nothing(url, tmp_path):
    stop, report = tmp_path / "stop", tmp_path / "report.json"
    reader = _start(READER, url=url, stop=stop, report=report, writers=WRITERS)
    writers = [_start(WRITER, url=url, w=w) for w in range(WRITERS)]
    for proc in writers:
        proc.join(120)
        assert proc.exitcode == 0
    stop.touch()
    reader.join(120)
    assert reader.exitcode == 0
    seen = json.loads(report.read_text())
    assert seen["errors"] == [] and seen["searches"] > 0
    assert seen["correct"] == WRITERS * 40 * 2
    with open_gallery(url, MODEL, DIM) as g:
        people = {i.name: i.embeddings for i in g.identities()}
        expected = {f"w{w}-{i}": 2 for w in range(WRITERS) for i in range(50) if i % 5 != 4}
        expected |= {f"shared{i}": WRITERS for i in range(10)}
        assert people == expected  # each identity once, with every writer's embeddings
        assert len(g) == len(expected) and g.embedding_count() == sum(expected.values())
    print(f"postgres concurrency: {WRITERS} writers x 50 enrolments, reader searches meanwhile: {seen['searches']}")


def test_writer_killed_mid_transaction_leaves_nothing_half_written(url, tmp_path):
    """SIGKILL a process enrolling batches of 40 identities (3 embeddings each, one transaction per batch) at
    random moments: every batch is in the gallery whole or not at all, and the next writer carries on."""
    rng = random.Random(7)
    progress = tmp_path / "progress"
    start, partial = 0, 0
    for _ in range(6):
        progress.unlink(missing_ok=True)
        proc = _start(BATCH_WRITER, url=url, progress=progress, start=start)
        time.sleep(rng.uniform(0.6, 1.2))
        proc.kill()
        proc.join(10)
        assert proc.exitcode == -signal.SIGKILL
        logged = [int(x) for x in progress.read_text().split()] if progress.exists() else []
        done = logged[-1] + 1 if logged else start
        with open_gallery(url, MODEL, DIM) as g:
            people = {i.name: i.embeddings for i in g.identities()}
        batches = {int(name[1:].split("-")[0]) for name in people}
        assert all(n == 3 for n in people.values()), "an identity without all its embeddings"
        assert all(sum(name.startswith(f"b{b}-") for name in people) == 40 for b in batches), "a batch in part"
        assert batches in (set(range(done)), set(range(done + 1))), "a logged batch lost or a stray one kept"
        partial += batches == set(range(done + 1))
        start = max(batches, default=-1) + 1
    assert start >= 6, f"too few batches ran ({start})"
    print(f"postgres kills: 6, batches committed: {start}, killed after commit before logging: {partial}")


def test_model_mismatch_is_checked_inside_the_write(url):
    first, second = open_gallery(url, MODEL, DIM), open_gallery(url, "other@1:x", DIM)
    first.enroll("a", items([1]))
    with pytest.raises(GalleryError, match="enrolled with model"):
        second.enroll("b", items([2]))
    first.close()
    second.close()


# -- search ------------------------------------------------------------------------------------------------


def test_search_equals_exact_search(url, tmp_path):
    """HNSW candidates re-scored exactly per identity: the same ranking and scores as exact search, and as the
    SQLite store's answer."""
    people = [(f"id{i}", items(range(10 * i, 10 * i + 4))) for i in range(300)]
    with open_gallery(url, MODEL, DIM) as g, open_gallery(tmp_path / "g.sqlite", MODEL, DIM) as lite:
        g.enroll_many(people)
        lite.enroll_many(people)
        names = np.array([name for name, its in people for _ in its])
        matrix = np.stack([it.vector for _, its in people for it in its])
        rng = np.random.default_rng(3)
        probes = np.stack([vec(10 * i + 2) + 0.6 * vec(10**6 + i) for i in rng.choice(300, 40)] +
                          [vec(2 * 10**6 + j) for j in range(40)])  # near enrolled faces, and strangers
        probes /= np.linalg.norm(probes, axis=1, keepdims=True)
        got, lite_got = g.search(probes, k=10), lite.search(probes, k=10)
        for q, row, lite_row in zip(probes, got, lite_got):
            sims = matrix @ q
            best = {n: float(sims[names == n].max()) for n in set(names)}
            exact = sorted(best.items(), key=lambda kv: -kv[1])[:3]
            assert [n for n, _ in row[:3]] == [n for n, _ in exact]
            assert [s for _, s in row[:3]] == pytest.approx([s for _, s in exact], abs=1e-5)
            assert [n for n, _ in row[:3]] == [n for n, _ in lite_row[:3]]
        templates, lite_templates = g.search_templates(probes, k=5), lite.search_templates(probes, k=5)
        for row, lite_row in zip(templates, lite_templates):
            assert [n for n, _ in row] == [n for n, _ in lite_row]
            assert [s for _, s in row] == pytest.approx([s for _, s in lite_row], abs=1e-5)
        assert sorted(g.template_sizes()) == sorted(lite.template_sizes()) == [4] * 300


def test_search_sets_ef_search_from_k_and_the_table_size(url, monkeypatch):
    """pgvector's HNSW scan returns at most ``hnsw.ef_search`` rows (default 40): a search sets it, inside its
    transaction, to what ``ef_search_for`` gives for ``k`` and the table's size, and the server obeys it."""
    from faceverify.gallery import pgstore
    from faceverify.gallery import postgres as pg

    assert pg.ef_search_for(0, 32) == pg.ef_search_for(pgstore.EF_ROWS, 32) == pgstore.EF_SEARCH
    assert pg.ef_search_for(100 * pgstore.EF_ROWS, 32) == 10 * pgstore.EF_SEARCH and pg.ef_search_for(10**9, 600) == 1000
    asked: list[tuple[float, int]] = []
    rule, forced = pg.ef_search_for, 0

    def spy(rows: float, k: int) -> int:
        asked.append((rows, k))
        return forced or rule(rows, k)

    monkeypatch.setattr(pg, "ef_search_for", spy)
    people = [(f"id{i}", items([i])) for i in range(2000)]
    with open_gallery(url, MODEL, DIM) as g:
        with g.bulk_loading():  # the index, then ANALYZE: the planner knows the table's size
            g.enroll_many(people)
        assert len(g.search(vec(7)[None, :], k=200)[0]) == 200  # ef_search 400, not the server's 40
        forced = 55
        assert len(g.search(vec(7)[None, :], k=200)[0]) == 55
        assert asked == [(2000, 200)] * 2
        assert g.search(vec(7)[None, :])[0][0][0] == "id7"
        with g._connection(), g._read() as db:  # SET LOCAL: gone once the search's transaction ends
            assert db.execute("SHOW hnsw.ef_search").fetchone()[0] == "40"


def _has_search_index(url: str) -> bool:
    import psycopg

    with psycopg.connect(url) as con:
        return con.execute("SELECT to_regclass('faceverify_embeddings_hnsw')").fetchone()[0] is not None


def test_bulk_loading_builds_the_index_once_at_the_end(url):
    """Into an empty gallery, a bulk load goes in without the HNSW index (searches meanwhile are exact) and
    builds it at the end; into a gallery with embeddings and its index, nothing is dropped."""
    people = [(f"id{i}", items(range(10 * i, 10 * i + 3))) for i in range(200)]
    with open_gallery(url, MODEL, DIM) as g:
        with g.bulk_loading():
            g.enroll_many(people[:100])
            assert not _has_search_index(url)
            assert top(g, vec(71)) == "id7"
            g.enroll_many(people[100:])
        assert _has_search_index(url)
        assert [top(g, vec(10 * i + 1)) for i in range(0, 200, 7)] == [f"id{i}" for i in range(0, 200, 7)]
        with g.bulk_loading():
            g.enroll("late", items([5000]))
            assert _has_search_index(url)
        assert top(g, vec(5000)) == "late" and g.embedding_count() == 601


FACEVERIFY_SESSIONS = "SELECT pid FROM pg_stat_activity WHERE application_name = 'faceverify'"
"""The server's sessions of faceverify's connection pools."""


def _terminate(postgres, pids: str = FACEVERIFY_SESSIONS) -> int:
    with postgres.admin() as con:
        return len(con.execute(f"SELECT pg_terminate_backend(pid) FROM ({pids}) p").fetchall())


def _sessions(postgres) -> int:
    """How many sessions of faceverify's pools the server has."""
    with postgres.admin() as con:
        return con.execute(f"SELECT count(*) FROM ({FACEVERIFY_SESSIONS}) p").fetchone()[0]


def test_a_lost_connection_is_replaced_or_an_error_never_a_wrong_answer(url, postgres):
    """A pooled connection the server dropped is replaced when taken; one dropped during a call fails that call
    with a one-line GalleryError, and the next call is right."""
    with open_gallery(url, MODEL, DIM) as g:
        g.enroll_many([(f"id{i}", items([i])) for i in range(20)])
        assert top(g, vec(7)) == "id7"
        assert _terminate(postgres) >= 1
        assert top(g, vec(8)) == "id8"
        with g._connection() as held:  # as if the server went away in the middle of a call
            (pid,) = held.execute("SELECT pg_backend_pid()").fetchone()
            _terminate(postgres, f"SELECT {int(pid)} AS pid")
            with pytest.raises(GalleryError, match="lost the connection") as err:
                g.search(vec(9)[None, :])
        assert "\n" not in str(err.value)
        assert top(g, vec(9)) == "id9"


def test_galleries_of_one_url_share_a_pool_of_configurable_size(url, monkeypatch):
    """Gallery objects on one URL share one pool, used by threads at once (each with its own gallery object)
    without a wrong answer; the size comes from $FACEVERIFY_PG_POOL_SIZE and a bad one is a one-line error."""
    from concurrent.futures import ThreadPoolExecutor

    from faceverify.gallery.pgpool import DEFAULT_POOL_SIZE, POOL_SIZE_ENV

    with open_gallery(url, MODEL, DIM) as a, open_gallery(url, MODEL, DIM) as b:
        a.enroll_many([(f"id{i}", items([i])) for i in range(20)])
        assert a._pool is b._pool and a._pool.max_size == DEFAULT_POOL_SIZE

    def searches(t: int) -> list[bool]:
        with open_gallery(url, MODEL, DIM) as g:
            return [top(g, vec((t + j) % 20)) == f"id{(t + j) % 20}" for j in range(30)]

    with ThreadPoolExecutor(2 * DEFAULT_POOL_SIZE) as ex:
        assert all(all(r) for r in ex.map(searches, range(2 * DEFAULT_POOL_SIZE)))
    monkeypatch.setenv(POOL_SIZE_ENV, "0")
    line = _cli_error("gallery", "list", "--gallery", url)
    assert f"{POOL_SIZE_ENV} must be a whole number of at least 1" in line


def test_server_restarted_under_a_searching_process(url, postgres, tmp_path):
    """The server restarts while another process searches in a loop (as identify --source does between frames):
    each search is right or a one-line GalleryError, never a wrong answer, and searches work again after."""
    if postgres.server is None:
        pytest.skip("needs the pgserver-started server (to restart it)")
    import pgserver

    with open_gallery(url, MODEL, DIM) as g:
        g.enroll_many([(f"id{i}", items([i])) for i in range(20)])
    stop, restarted, report = tmp_path / "stop", tmp_path / "restarted", tmp_path / "report.json"
    proc = _start(SEARCHER, url=url, stop=stop, restarted=restarted, report=report)
    time.sleep(1.0)
    pgserver.pg_ctl(["-w", "-m", "fast", "restart"], pgdata=postgres.data_dir, user=postgres.server.system_user)
    restarted.touch()
    time.sleep(1.5)
    stop.touch()
    proc.join(60)
    assert proc.exitcode == 0
    seen = json.loads(report.read_text())
    counts = seen["counts"]
    assert counts["wrong"] == 0 and counts["right"] > 0 and counts["right_after_restart"] > 0, counts
    assert all("\n" not in e and e.startswith("postgresql://") and "not a GalleryError" not in e for e in seen["errors"])
    print(f"postgres restart under a searching process: {counts}; first error: {seen['errors'][:1]}")


def test_server_restarted_under_a_running_identify_source(postgres, service_scene, verifier):
    """`faceverify identify --source VIDEO --gallery postgresql://... --json` (real time, so that it runs for the
    video's 4 s) while the server restarts: it reconnects and finishes, or stops with one error line and exit 2;
    no event ever names the wrong person (scored against the video's ground truth), and it did search the
    restarted server."""
    if postgres.server is None:
        pytest.skip("needs the pgserver-started server (to restart it)")
    import os

    import pgserver

    from tools.bench_video import _who, score

    url = postgres.fresh_url()
    with verifier.open_gallery(url) as gallery:
        for name, paths in service_scene["truth"]["gallery"].items():
            verifier.enroll(gallery, name, paths)
    cmd = [sys.executable, "-m", "faceverify.cli", "identify", "--source", str(service_scene["video"]),
           "--gallery", url, "--json", "--realtime"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        first = proc.stdout.readline()  # the run has started: the gallery was opened and searched
        assert first, proc.stderr.read()
        pgserver.pg_ctl(["-w", "-m", "fast", "restart"], pgdata=postgres.data_dir, user=postgres.server.system_user)
        assert proc.poll() is None, "identify ended before the restart was over"
        # this process's own pooled connection died with the restart and stays unused: a faceverify session on
        # the restarted server is identify's, i.e. it searched the gallery again after the restart
        reconnected, deadline = False, time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            reconnected = reconnected or _sessions(postgres) > 0
            time.sleep(0.05)
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    lines = [json.loads(line) for line in [first, *rest.splitlines()]]
    events = [e for e in lines if "ended" not in e and "summary" not in e]
    truth = service_scene["truth"]
    scored = score(truth, [(e["frame"], e["box"], e["name"]) for e in events])
    assert scored.get("wrong_face_frames", 0) == 0 and scored.get("strangers_named", 0) == 0, scored
    # a named box on no ground-truth face (a person half out of the picture) carries its own track's right name
    on_face = {(e["track"], e["name"]) for e in events if e["name"] and _who(truth, e["frame"], e["box"]) is not None}
    off_face = {(e["track"], e["name"]) for e in events if e["name"] and _who(truth, e["frame"], e["box"]) is None}
    assert off_face <= on_face, (off_face, on_face)
    if proc.returncode == 0:
        summary = lines[-1]["summary"]
        assert summary["ended"] == "end of file" and events, summary
        assert reconnected, "identify never searched the gallery after the restart: nothing was tested"
        outcome = f"reconnected and finished ({summary['frames']} frames, {scored['face_frames_named']} named)"
    else:
        assert proc.returncode == 2, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        line = err.strip()
        assert "postgresql://" in line, err
        outcome = f"stopped with: {line}"
    print(f"postgres restart under identify --source: {outcome}")


# -- errors ------------------------------------------------------------------------------------------------


def _cli_error(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "faceverify.cli", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_unreachable_server_is_one_line_exit_2():
    line = _cli_error("gallery", "list", "--gallery", "postgresql://nobody@127.0.0.1:1/gallery")
    assert "cannot reach the PostgreSQL server" in line and "127.0.0.1" in line


def test_wrong_password(postgres):
    if postgres.data_dir is None:
        pytest.skip("needs the pgserver-started server (its pg_hba.conf)")
    with postgres.admin() as con:
        con.execute("DROP ROLE IF EXISTS fv_pw")
        con.execute("CREATE ROLE fv_pw LOGIN PASSWORD 'right-one'")
        hba = postgres.data_dir / "pg_hba.conf"
        if "fv_pw" not in hba.read_text():
            hba.write_text("local all fv_pw scram-sha-256\n" + hba.read_text())
        con.execute("SELECT pg_reload_conf()")
    base = postgres.with_db("postgres")
    wrong = base.replace("postgresql://postgres:", "postgresql://fv_pw:wrong-one", 1)
    import psycopg

    for _ in range(100):  # the server reloads pg_hba.conf a moment after the signal
        try:
            psycopg.connect(wrong).close()
        except psycopg.OperationalError:
            break
        time.sleep(0.05)
    with pytest.raises(GalleryError, match=r"refused the login \(wrong user or password\)") as err:
        open_gallery(wrong, MODEL, DIM)
    assert "wrong-one" not in str(err.value)  # the password is not echoed
    line = _cli_error("gallery", "list", "--gallery", wrong)
    assert "refused the login" in line


def test_extension_missing_and_not_creatable_says_how_to_install(postgres):
    with postgres.admin() as con:
        con.execute("DROP DATABASE IF EXISTS fv_noext")
        con.execute("DROP ROLE IF EXISTS fv_plain")
        con.execute("CREATE ROLE fv_plain LOGIN")
        con.execute("CREATE DATABASE fv_noext OWNER fv_plain")
    base = postgres.with_db("fv_noext")
    plain = base.replace("postgresql://postgres:", "postgresql://fv_plain:", 1)
    with pytest.raises(GalleryError, match="pgvector extension is not enabled.*CREATE EXTENSION vector"):
        open_gallery(plain, MODEL, DIM)
    with open_gallery(base, MODEL, DIM) as g:  # a superuser may enable it: the gallery is created
        g.enroll("Ada", items([1]))


def test_newer_schema_version_and_foreign_database(url, postgres):
    with open_gallery(url, MODEL, DIM) as g:
        g.enroll("Ada", items([1]))
        import psycopg

        with psycopg.connect(url) as con:
            con.execute("UPDATE faceverify_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(GalleryError, match="schema version 99 is newer than this faceverify reads"):
        open_gallery(url, MODEL, DIM)
    line = _cli_error("gallery", "list", "--gallery", url)
    assert "schema version 99 is newer" in line
    empty = postgres.fresh_url()
    assert "no gallery here" in _cli_error("gallery", "list", "--gallery", empty)


# -- migrate, the CLI and the service on a PostgreSQL gallery -----------------------------------------------


def test_migrate_sqlite_to_postgres_and_back(url, tmp_path, postgres):
    from faceverify.cli import run

    lite, back = tmp_path / "g.sqlite", tmp_path / "back.sqlite"
    with open_gallery(lite, MODEL, DIM) as g:
        g.enroll_many([(f"id{i}", [Enrolment(vec(10 * i + j), f"/img/{i}-{j}.jpg", f"s{i}-{j}", (1, 2.5, 30, 40))
                                   for j in range(3)]) for i in range(30)])
        expected = [(n, v.tobytes(), m["source"], m["source_sha256"], m["box"]) for n, v, m in g.iter_vectors()]
    assert run(["gallery", "migrate", str(lite), url]) == 0
    assert run(["gallery", "migrate", str(lite), url]) == 0  # again: nothing new, still verified
    assert _has_search_index(url)  # built after the copy into the empty gallery
    assert run(["gallery", "migrate", url, str(back)]) == 0
    for where in (url, back):
        with open_gallery(where, MODEL, DIM) as g:
            got = [(n, v.tobytes(), m["source"], m["source_sha256"], m["box"]) for n, v, m in g.iter_vectors()]
            assert sorted(got) == sorted(expected) and g.stored_model_id == MODEL
    other = postgres.fresh_url()
    with open_gallery(other, "other@1:x", DIM) as g:
        g.enroll("Someone", items([5]))
    line = _cli_error("gallery", "migrate", str(lite), other)
    assert "never mixed" in line
    with open_gallery(other, "other@1:x", DIM) as g:
        assert [i.name for i in g.identities()] == ["Someone"]


def test_cli_enroll_identify_on_postgres(url, lfw_image, capsys):
    from faceverify.cli import run

    assert run(["enroll", "Colin Powell", str(lfw_image("Colin_Powell", 1)), str(lfw_image("Colin_Powell", 2)),
                "--gallery", url]) == 0
    assert run(["enroll", "George W Bush", str(lfw_image("George_W_Bush", 1)), "--gallery", url]) == 0
    capsys.readouterr()
    assert run(["identify", str(lfw_image("Colin_Powell", 3)), "--gallery", url, "--json"]) == 0
    (face,) = json.loads(capsys.readouterr().out)["faces"]
    assert face["name"] == "Colin Powell"
    assert run(["gallery", "list", "--gallery", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [dict(name="Colin Powell", embeddings=2),
                                                   dict(name="George W Bush", embeddings=1)]


def test_serve_on_postgres(url, verifier, lfw_image):
    import httpx

    from faceverify.errors import FaceverifyError
    from faceverify.service import ServiceConfig
    from faceverify.service.app import create_app
    from tests.servers import ThreadServer, files

    with pytest.raises(FaceverifyError, match="PGPASSWORD"):
        ServiceConfig(gallery=url.replace("postgresql://postgres:", "postgresql://postgres:secret", 1))
    config = ServiceConfig(gallery=url)
    with ThreadServer(create_app(config, verifier)) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        faces = files("images", [lfw_image("Colin_Powell", i) for i in (1, 2)])
        r = c.post("/v1/identities/Colin Powell/faces", files=faces)
        assert r.status_code == 200 and r.json()["added"] == {"Colin Powell": 2}
        r = c.post("/v1/identify", files=files("image", [lfw_image("Colin_Powell", 3)]))
        assert r.status_code == 200 and r.json()["faces"][0]["name"] == "Colin Powell"
        assert c.get("/v1/health").json()["gallery"] == "postgresql:///" + urlsplit(url).path.lstrip("/")  # not its host
    with open_gallery(url) as g:  # the service wrote to the database
        assert [(i.name, i.embeddings) for i in g.identities()] == [("Colin Powell", 2)]
