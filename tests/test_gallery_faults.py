"""The gallery under faults and at scale: the search index as a cache, writers killed mid-command, concurrent
writers and readers. Writers and readers are real processes (forked from a forkserver that has already imported
numpy, faiss and the gallery, so each starts in milliseconds) that use the Gallery API with synthetic vectors."""

from __future__ import annotations

import json
import multiprocessing
import random
import signal
import sqlite3
import time
import warnings
from pathlib import Path

import faiss
import numpy as np
import pytest

import faceverify.gallery.index as index_mod
from faceverify.errors import GalleryError
from faceverify.gallery import Gallery, GalleryIndexWarning

MODEL = "test-model@1:faults"
DIM = 32

# Shared by the test and by the worker processes (exec'ed in both), so both agree on every vector and command.
COMMON = f"""
import numpy as np
from faceverify.gallery import Enrolment, Gallery
MODEL, DIM = {MODEL!r}, {DIM}

def vec(seed):
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)

def items(seeds):
    return [Enrolment(vec(s), f"/img/{{s}}.jpg", f"s{{s}}") for s in seeds]

def top(g, v):
    '''The name of the best-matching identity for the one query v.'''
    return g.search(v[None, :])[0][0][0]

def command(i):
    '''The i-th command of the crash test: a cycle of enrol, enrol, add to an identity, remove, rename.'''
    step = i % 5
    if step in (0, 1):
        return ("enroll", f"p{{i}}", [10 * i, 10 * i + 1, 10 * i + 2])
    if step == 2:
        return ("enroll", f"p{{i - 2}}", [10 * i, 10 * i + 1])
    if step == 3:
        return ("remove", f"p{{i - 3}}")
    return ("rename", f"p{{i - 3}}", f"q{{i - 3}}")
"""

CRASH_WRITER = COMMON + """
g = Gallery(path, MODEL, DIM)
with open(progress, "a") as log:
    i = start
    while True:
        cmd = command(i)
        if cmd[0] == "enroll":
            g.enroll(cmd[1], items(cmd[2]))
        elif cmd[0] == "remove":
            g.remove(cmd[1])
        else:
            g.rename(cmd[1], cmd[2])
        if i % 5 == 4:  # also search (catching the index up) and save the index: kills land there too
            g.search(vec(10 * i)[None, :])
            g.save_index()
        log.write(f"{i}\\n")
        log.flush()
        i += 1
"""

SAVE_WRITER = COMMON + """
g = Gallery(path, MODEL, DIM)
with open(progress, "a") as log:
    for i in range(start, start + 10_000):
        g.enroll(f"extra{i}", items([10_000_000 + i]))
        g.search(vec(i)[None, :])
        g.save_index()
        log.write(f"{i}\\n")
        log.flush()
"""

CONCURRENT_WRITER = COMMON + """
g = Gallery(path, MODEL, DIM)
for i in range(50):
    g.enroll(f"w{w}-{i}", items([1000 * w + 2 * i, 1000 * w + 2 * i + 1]))
g.close()
"""

CONCURRENT_READER = COMMON + """
import json, os
from faceverify.errors import GalleryError
g = Gallery(path, MODEL, DIM)
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
correct = sum(
    top(g, vec(1000 * w + 2 * i + j)) == f"w{w}-{i}"
    for w in range(writers) for i in range(50) for j in range(2)
)
g.close()
with open(report, "w") as fh:
    json.dump(dict(searches=searches, errors=errors, correct=correct), fh)
"""

shared: dict = {}
exec(COMMON, shared)
vec, items, top, command = shared["vec"], shared["items"], shared["top"], shared["command"]

_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(["numpy", "faiss", "faceverify.gallery"])


def _start(code: str, **names: object) -> multiprocessing.Process:
    """Run ``code`` in a fresh process with ``names`` as globals."""
    scope = {"__name__": "__worker__", **{k: str(v) if isinstance(v, Path) else v for k, v in names.items()}}
    proc = _CTX.Process(target=exec, args=(code, scope), daemon=True)
    proc.start()
    return proc


def _kill(proc: multiprocessing.Process) -> None:
    proc.kill()
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL, f"the worker ended on its own (exit code {proc.exitcode})"


def _torn_save(path: Path) -> bool:
    """Whether a killed writer left a half-written index file (killed while saving); it is removed."""
    tmp = path.with_name(path.name + ".faiss.tmp")
    found = tmp.exists()
    tmp.unlink(missing_ok=True)
    return found


def _progress(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _expected(n_commands: int) -> dict[str, set[str]]:
    """Identity -> source hashes after the first ``n_commands`` commands."""
    state: dict[str, set[str]] = {}
    for i in range(n_commands):
        cmd = command(i)
        if cmd[0] == "enroll":
            state.setdefault(cmd[1], set()).update(f"s{s}" for s in cmd[2])
        elif cmd[0] == "remove":
            del state[cmd[1]]
        else:
            state[cmd[2]] = state.pop(cmd[1])
    return state


def _actual(path: Path) -> tuple[dict[str, set[str]], list[str]]:
    """The gallery's identities and hashes (vectors checked against their seeds), and the index warnings seen;
    the database must pass SQLite's integrity check and search must agree with exact search over the vectors."""
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with Gallery(path, MODEL, DIM) as g:
            state: dict[str, set[str]] = {}
            for name, v, meta in g.iter_vectors():
                assert np.array_equal(v, vec(int(meta["source_sha256"][1:]))), "a stored vector is corrupt"
                state.setdefault(name, set()).add(meta["source_sha256"])
            assert {i.name for i in g.identities()} == set(state), "an identity without its embeddings"
            for name, hashes in list(state.items())[-3:]:
                assert top(g, vec(int(sorted(hashes)[0][1:]))) == name
    return state, [str(w.message) for w in seen if issubclass(w.category, GalleryIndexWarning)]


# -- the index is a cache ----------------------------------------------------------------------------------


@pytest.fixture()
def builds(monkeypatch) -> list[int]:
    """Counts full index builds from the database."""
    calls: list[int] = []
    original = index_mod.SearchIndex.build.__func__

    def counting(cls, ids, *args):
        calls.append(len(ids))
        return original(cls, ids, *args)

    monkeypatch.setattr(index_mod.SearchIndex, "build", classmethod(counting))
    return calls


def _fill(path: Path, n_ids: int, per: int = 2, first: int = 0) -> None:
    with Gallery(path, MODEL, DIM) as g:
        g.enroll_many([(f"id{i}", items(range(100 * i, 100 * i + per))) for i in range(first, first + n_ids)])


def test_index_is_saved_with_its_checksum_and_reused(tmp_path, builds):
    path = tmp_path / "g.sqlite"
    _fill(path, 20)
    with Gallery(path, MODEL, DIM) as g:
        assert top(g, vec(500)) == "id5"
    assert builds == [40] and g.index_path.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Gallery(path, MODEL, DIM) as g:
            assert top(g, vec(701)) == "id7"
    assert builds == [40], "a saved, unchanged index must be loaded, not rebuilt"


def test_other_writers_are_caught_up_incrementally(tmp_path, builds):
    path = tmp_path / "g.sqlite"
    _fill(path, 10)
    reader, writer = Gallery(path, MODEL, DIM), Gallery(path, MODEL, DIM)
    assert top(reader, vec(300)) == "id3"
    writer.enroll("late", items([9001, 9002]))
    assert top(reader, vec(9001)) == "late"
    assert reader.search_index.ntotal == 22
    writer.rename("late", "Late Arrival")
    assert top(reader, vec(9002)) == "Late Arrival"  # names come from SQLite at query time
    writer.remove("id3")
    assert top(reader, vec(300)) != "id3"
    assert reader.search_index.ntotal == 20
    reader.remove("id4")  # this process's own removal: applied to its index directly
    assert reader.search_index.ntotal == 18 and top(reader, vec(400)) != "id4"
    assert builds == [20], "nothing may trigger a rebuild"
    reader.close()
    writer.close()


def test_embedding_ids_are_never_reused(tmp_path):
    """Removing the newest rows and enrolling again must not recycle their ids: an index whose high-water mark
    covers the old ids would otherwise miss the new rows."""
    path = tmp_path / "g.sqlite"
    _fill(path, 3)
    reader, writer = Gallery(path, MODEL, DIM), Gallery(path, MODEL, DIM)
    reader.search(vec(0)[None, :])
    writer.remove("id2")  # the two newest rows
    writer.enroll("fresh", items([7777, 7778]))
    ids = [r[0] for r in sqlite3.connect(path).execute("SELECT id FROM embeddings ORDER BY id")]
    assert ids == [1, 2, 3, 4, 7, 8]
    assert top(reader, vec(7777)) == "fresh"
    assert top(reader, vec(200)) != "id2"
    reader.close()
    writer.close()


def _tamper_garbage(g: Gallery) -> None:
    size = g.index_path.stat().st_size
    g.index_path.write_bytes(b"\x00" * size)


def _tamper_flip(g: Gallery) -> None:
    data = bytearray(g.index_path.read_bytes())
    data[len(data) // 2] ^= 0x40
    g.index_path.write_bytes(bytes(data))


def _tamper_other_index(g: Gallery) -> None:
    """A well-formed FAISS file of the right size, but not the one recorded (a swapped file)."""
    data = faiss.serialize_index(faiss.IndexIDMap2(faiss.IndexFlatIP(DIM)))
    g.index_path.write_bytes(bytes(data) + b"\x00" * (g.index_path.stat().st_size - len(data)))


def _set_index_record(g: Gallery, edit) -> None:
    """Replace the gallery's record of its index file by ``edit(record text)``, as another process would."""
    con = sqlite3.connect(g.path)
    with con:
        (raw,) = con.execute("SELECT value FROM meta WHERE key = 'index'").fetchone()
        con.execute("UPDATE meta SET value = ? WHERE key = 'index'", (edit(raw),))
    con.close()


def _tamper_record(g: Gallery) -> None:
    _set_index_record(g, lambda raw: "{not json")


def _tamper_record_model(g: Gallery) -> None:
    _set_index_record(g, lambda raw: json.dumps({**json.loads(raw), "dim": 7}))


@pytest.mark.parametrize(
    "tamper, problem",
    [
        (lambda g: g.index_path.unlink(), "is missing"),
        (lambda g: g.index_path.write_bytes(g.index_path.read_bytes()[:100]), "size"),
        (_tamper_garbage, "sha256"),
        (_tamper_flip, "sha256"),
        (_tamper_other_index, "sha256"),
        (_tamper_record, "unreadable record"),
        (_tamper_record_model, "another model"),
    ],
    ids=["missing", "truncated", "zeroed", "bit-flip", "swapped", "bad-record", "other-model"],
)
def test_a_bad_index_file_is_never_read_and_is_rebuilt(tmp_path, monkeypatch, tamper, problem):
    path = tmp_path / "g.sqlite"
    _fill(path, 10)
    with Gallery(path, MODEL, DIM) as g:
        g.search(vec(0)[None, :])
        tamper(g)
    read = []
    real = faiss.deserialize_index
    monkeypatch.setattr(faiss, "deserialize_index", lambda data: read.append(1) or real(data))
    with Gallery(path, MODEL, DIM) as g:
        with pytest.warns(GalleryIndexWarning, match=f"{problem}.*rebuilding it from g.sqlite"):
            assert top(g, vec(501)) == "id5"
    assert read == [], "FAISS must never parse a file whose checksum was not verified"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Gallery(path, MODEL, DIM) as g:  # the rebuilt index was saved and is used
            assert top(g, vec(801)) == "id8"
    assert read == [1]


def test_approximate_index_lifecycle(tmp_path, monkeypatch, builds):
    """Above EXACT_LIMIT the IVF index is used, kept up to date without rebuilds, saved and reloaded,
    retrained after 4x growth and replaced by the exact index once the gallery shrinks."""
    monkeypatch.setattr(index_mod, "EXACT_LIMIT", 300)
    path = tmp_path / "g.sqlite"
    _fill(path, 80, per=5)
    with Gallery(path, MODEL, DIM) as g:
        assert all(top(g, vec(100 * i + 1)) == f"id{i}" for i in range(80))
        assert g.search_index.kind == "ivf" and builds == [400]
        g.remove("id3")
        assert top(g, vec(301)) != "id3" and g.search_index.ntotal == 395
    with warnings.catch_warnings():
        warnings.simplefilter("error", GalleryIndexWarning)
        _fill(path, 40, per=5, first=100)
        with Gallery(path, MODEL, DIM) as g:
            assert top(g, vec(100 * 120 + 2)) == "id120"
            assert g.search_index.kind == "ivf" and builds == [400], "loaded from file and caught up"
            ranked = g.search(vec(100 * 7 + 3)[None, :])[0]
            assert ranked[0] == ("id7", pytest.approx(1.0, abs=1e-5))  # rescored exactly
    _fill(path, 250, per=5, first=200)
    with Gallery(path, MODEL, DIM) as g:
        assert top(g, vec(100 * 420)) == "id420"
        assert builds == [400, 1845] and g.search_index.trained_n == 1845
        for i in range(200, 205):
            g.remove(f"id{i}")
        assert top(g, vec(100 * 204)) != "id204" and g.search_index.ntotal == 1820
        monkeypatch.setattr(index_mod, "EXACT_LIMIT", 4000)  # now the gallery is below half the limit
        assert top(g, vec(100 * 50)) == "id50"
        assert g.search_index.kind == "flat" and builds[-1] == 1820


def test_gpu_code_path(tmp_path, monkeypatch):
    """Where FAISS sees a GPU, searches go to a GPU copy that follows additions and is redone after removals.
    (No GPU here: the FAISS GPU calls are stood in for by CPU clones.)"""
    clones = []

    def to_gpu(resources, device, index):
        clones.append(device)
        return faiss.clone_index(index)

    monkeypatch.setattr(index_mod, "gpu_resources", lambda: object())
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", to_gpu, raising=False)
    path = tmp_path / "g.sqlite"
    _fill(path, 5)
    with Gallery(path, MODEL, DIM) as g, Gallery(path, MODEL, DIM) as other:
        assert top(g, vec(100)) == "id1" and clones == [0]
        other.enroll("new", items([4242]))
        assert top(g, vec(4242)) == "new" and clones == [0]
        assert g.search_index.gpu.ntotal == g.search_index.ntotal == 11
        g.remove("new")
        assert top(g, vec(4242)) != "new" and clones == [0, 0]


# -- kills -------------------------------------------------------------------------------------------------

CRASH_KILLS = 36
SAVE_KILLS = 16


def test_writer_killed_at_random_moments_leaves_before_or_after(tmp_path):
    """SIGKILL a process running enrol / add / remove / rename (and index saves) at random moments; after each
    kill the gallery must open, pass integrity checks and hold exactly the state before or after the command in
    flight; the next writer carries on from there."""
    rng = random.Random(1234)
    path, progress = tmp_path / "g.sqlite", tmp_path / "progress"
    applied = 0
    stats = dict(kills=0, after_unlogged_commit=0, during_index_save=0, index_rebuilds=0, commands=0)
    for _ in range(CRASH_KILLS):
        progress.unlink(missing_ok=True)
        proc = _start(CRASH_WRITER, path=path, progress=progress, start=applied)
        time.sleep(rng.uniform(0.0, 0.25))
        _kill(proc)
        stats["during_index_save"] += _torn_save(path)
        logged = _progress(progress)
        done = logged[-1] + 1 if logged else applied
        state, warned = _actual(path) if path.exists() else ({}, [])
        if state == _expected(done):
            applied = done
        else:
            assert state == _expected(done + 1), f"after a kill the gallery is neither state {done} nor {done + 1}"
            applied = done + 1
            stats["after_unlogged_commit"] += 1
        stats["kills"] += 1
        stats["index_rebuilds"] += bool(warned)
    stats["commands"] = applied
    print(f"crash test: {stats}")
    assert applied >= 30, f"too few commands ran to exercise every kind ({applied})"


def test_writer_killed_while_saving_the_index(tmp_path):
    """SIGKILL a process that saves the index in a loop (enrol one, search, save): the gallery always opens and
    searches correctly, a torn or unrecorded index file is detected and rebuilt, never trusted."""
    path, progress = tmp_path / "g.sqlite", tmp_path / "progress"
    with Gallery(path, MODEL, DIM) as g:  # 16k vectors: the index file is ~2.5 MB, so saving takes a while
        g.enroll_many([(f"id{i}", items(range(100 * i, 100 * i + 8))) for i in range(2000)])
    rng = random.Random(99)
    start = rebuilt = torn = 0
    for _ in range(SAVE_KILLS):
        progress.unlink(missing_ok=True)
        proc = _start(SAVE_WRITER, path=path, progress=progress, start=start)
        time.sleep(rng.uniform(0.3, 0.9))
        _kill(proc)
        torn += _torn_save(path)
        logged = _progress(progress)
        start = (logged[-1] + 1 if logged else start) + 1
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with Gallery(path, MODEL, DIM) as g:
                assert top(g, vec(100 * 1234 + 5)) == "id1234"
                extras = [i.name for i in g.identities() if i.name.startswith("extra")]
                for name in extras[-2:]:
                    assert top(g, vec(10_000_000 + int(name[5:]))) == name
        rebuilt += any(issubclass(w.category, GalleryIndexWarning) for w in seen)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GalleryIndexWarning)
        with Gallery(path, MODEL, DIM) as g:
            g.search(vec(0)[None, :])
    print(f"index-save kills: {SAVE_KILLS}, extra identities enrolled: {len(extras)}, killed while writing the "
          f"file: {torn}, killed between renaming it and recording it (rebuilt on open): {rebuilt}")


# -- concurrency -------------------------------------------------------------------------------------------

WRITERS = 4


def test_concurrent_writers_lose_nothing_while_a_reader_searches(tmp_path):
    path, stop, report = tmp_path / "g.sqlite", tmp_path / "stop", tmp_path / "report.json"
    reader = _start(CONCURRENT_READER, path=path, stop=stop, report=report, writers=WRITERS)
    writers = [_start(CONCURRENT_WRITER, path=path, w=w) for w in range(WRITERS)]
    for proc in writers:
        proc.join(120)
        assert proc.exitcode == 0
    stop.touch()
    reader.join(120)
    assert reader.exitcode == 0
    seen = json.loads(report.read_text())
    assert seen["errors"] == []
    assert seen["searches"] > 0, "the reader must keep searching while writers write"
    assert seen["correct"] == WRITERS * 50 * 2, "the reader's incrementally updated index missed embeddings"
    with Gallery(path, MODEL, DIM) as g:
        people = {i.name: i.embeddings for i in g.identities()}
        assert people == {f"w{w}-{i}": 2 for w in range(WRITERS) for i in range(50)}
        assert top(g, vec(1000 * 3 + 2 * 49 + 1)) == "w3-49"
    print(f"concurrency: {WRITERS} writers x 50 enrolments, reader searches while writing: {seen['searches']}")


def test_model_mismatch_is_checked_inside_the_write(tmp_path):
    """Two processes creating the same gallery with different models: the second enrolment is refused."""
    path = tmp_path / "g.sqlite"
    first, second = Gallery(path, MODEL, DIM), Gallery(path, "other@1:x", DIM)
    first.enroll("a", items([1]))
    with pytest.raises(GalleryError, match="enrolled with model"):
        second.enroll("b", items([2]))
    first.close()
    second.close()
