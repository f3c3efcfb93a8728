"""Hostile inputs: broken, lying and crafted image files, gallery and model files that are not what they claim,
identity names built to confuse, and a fuzzer over the image loader. Each must end in a clear BadInputError /
GalleryError / ModelError naming the file, never a crash, a hang, a half-loaded model or an unpickled object."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import sqlite3
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import faceverify
from faceverify.errors import BadInputError, GalleryError, ModelError
from faceverify.gallery import Enrolment, Gallery, open_gallery, validate_name
from faceverify.gallery.store import SCHEMA_VERSION
from faceverify.images import list_images, load_image

MODEL = "test-model@1:hostile"
FORMATS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}
PACKAGE = Path(faceverify.__file__).parent


# -- image files -------------------------------------------------------------------------------------------


def encode(fmt: str, w: int = 48, h: int = 40, seed: int = 0, **options) -> bytes:
    rgb = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **options)
    return buf.getvalue()


def bomb(fmt: str, w: int, h: int) -> bytes:
    """A tiny valid file whose header declares w x h pixels."""
    d = bytearray(encode(fmt, 8, 8))
    if fmt == "JPEG":
        i = d.index(b"\xff\xc0")
        d[i + 5 : i + 9] = struct.pack(">HH", h, w)
    elif fmt == "PNG":
        d[16:24] = struct.pack(">II", w, h)
        d[29:33] = struct.pack(">I", zlib.crc32(bytes(d[12:29])))
    elif fmt == "GIF":
        d[6:10] = struct.pack("<HH", w, h)
        i = d.index(b"\x2c")
        d[i + 5 : i + 9] = struct.pack("<HH", w, h)
    elif fmt == "BMP":
        d[18:26] = struct.pack("<ii", w, h)
    elif fmt == "TIFF":
        ifd = struct.unpack("<I", d[4:8])[0]
        for k in range(struct.unpack("<H", d[ifd : ifd + 2])[0]):
            e = ifd + 2 + 12 * k
            tag, kind = struct.unpack("<HH", d[e : e + 4])
            if tag in (256, 257):
                value = w if tag == 256 else h
                d[e + 8 : e + 12] = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
    else:  # WEBP: the VP8 key frame header holds 14-bit dimensions
        j = d.index(b"VP8 ") + 8 + 3
        assert d[j : j + 3] == b"\x9d\x01\x2a"
        d[j + 3 : j + 7] = struct.pack("<HH", w & 0x3FFF, h & 0x3FFF)
    return bytes(d)


def valid_array(out: np.ndarray) -> bool:
    return isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and out.size


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_files_of_each_format(tmp_path, fmt):
    data = encode(fmt, 120, 90)
    assert valid_array(load_image(_write(tmp_path / f"ok{FORMATS[fmt]}", data)))
    for cut in (8, len(data) // 10, len(data) // 2, len(data) - 40):
        path = _write(tmp_path / f"cut{cut}{FORMATS[fmt]}", data[:cut])
        with pytest.raises(BadInputError) as err:
            load_image(path)
        assert str(path) in str(err.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_corrupt_files_of_each_format(tmp_path, fmt):
    """Garbage over the header or the body: refused, or decoded into a valid (if wrong-looking) image."""
    data = bytearray(encode(fmt, 120, 90))
    rng = np.random.default_rng(7)
    for start in (4, 12, 30, len(data) // 3, len(data) // 2):
        bad = bytearray(data)
        bad[start : start + 24] = rng.integers(0, 256, 24, dtype=np.uint8).tobytes()
        path = _write(tmp_path / f"c{start}{FORMATS[fmt]}", bytes(bad))
        try:
            assert valid_array(load_image(path))
        except BadInputError as exc:
            assert str(path) in str(exc)


@pytest.mark.parametrize(
    "fmt, w, h",
    [(fmt, n, n) for fmt in FORMATS for n in (9000, 16383, 60000) if not (fmt == "WEBP" and n > 16383)],  # 14-bit
)
def test_decompression_bombs_are_refused_before_decoding(tmp_path, fmt, w, h):
    path = _write(tmp_path / f"bomb{FORMATS[fmt]}", bomb(fmt, w, h))
    start = time.perf_counter()
    with pytest.raises(BadInputError, match="too large"):
        load_image(path)
    assert time.perf_counter() - start < 2.0


def test_compressed_text_chunk_bomb(tmp_path):
    """A small PNG carrying a zTXt chunk that inflates to 64 MB."""
    data = bytearray(encode("PNG", 8, 8))
    body = b"Comment\x00\x00" + zlib.compress(b"\x00" * (64 << 20), 9)
    chunk = struct.pack(">I", len(body)) + b"zTXt" + body + struct.pack(">I", zlib.crc32(b"zTXt" + body))
    iend = data.index(b"IEND") - 4
    path = _write(tmp_path / "text_bomb.png", bytes(data[:iend]) + chunk + bytes(data[iend:]))
    try:
        assert valid_array(load_image(path))
    except BadInputError as exc:
        assert str(path) in str(exc)


def test_files_that_lie_about_their_type(tmp_path):
    png_as_jpg = _write(tmp_path / "really_png.jpg", encode("PNG"))
    jpg_as_gif = _write(tmp_path / "really_jpeg.gif", encode("JPEG"))
    webp_as_bmp = _write(tmp_path / "really_webp.bmp", encode("WEBP", lossless=True))
    assert np.array_equal(load_image(png_as_jpg), load_image(_write(tmp_path / "same.png", encode("PNG"))))
    assert valid_array(load_image(jpg_as_gif)) and valid_array(load_image(webp_as_bmp))
    liars = {
        "text.png": b"hello, I am not an image\n",
        "page.jpg": b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>",
        "doc.webp": b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n",
        "archive.tif": b"PK\x03\x04" + b"\x00" * 100,
        "script.bmp": b"#!/bin/sh\nrm -rf /\n",
        "pickle.gif": pickle.dumps({"x": 1}),
        "svg.png": b'<svg xmlns="http://www.w3.org/2000/svg" width="99999" height="99999"/>',
    }
    for name, data in liars.items():
        with pytest.raises(BadInputError, match="not an image") as err:
            load_image(_write(tmp_path / name, data))
        assert name in str(err.value)


@pytest.mark.parametrize("suffix", sorted(set(FORMATS.values())))
def test_zero_byte_files(tmp_path, suffix):
    with pytest.raises(BadInputError, match="empty file"):
        load_image(_write(tmp_path / f"empty{suffix}", b""))


def test_special_files_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(BadInputError, match="not a regular file"):
        load_image(fifo)  # opening a FIFO would block forever
    device = tmp_path / "device.png"
    device.symlink_to("/dev/zero")
    with pytest.raises(BadInputError, match="not a regular file"):
        load_image(device)
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    with pytest.raises(BadInputError):
        load_image(loop)
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(BadInputError, match="directory"):
        load_image(tmp_path / "folder.jpg")
    assert list_images([tmp_path]) == [], "directories, pipes, devices and loops are not listed as images"


def bad_files() -> dict[str, bytes]:
    """30 bad files: zero-byte, truncated, non-images, bombs and garbage headers, of every format."""
    out: dict[str, bytes] = {}
    for fmt, suffix in FORMATS.items():
        good = encode(fmt, 40, 30)
        out[f"bad_empty{suffix}"] = b""
        out[f"bad_truncated{suffix}"] = good[: len(good) // 2]
        out[f"bad_text{suffix}"] = f"not a {fmt} file".encode()
        out[f"bad_bomb{suffix}"] = bomb(fmt, 16383, 16383)
        out[f"bad_garbage{suffix}"] = good[:4] + bytes(range(256)) * 2
    return out


def mixed_directory(root: Path, n_good: int, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """``n_good`` small valid images (some named with the wrong suffix) and the 30 bad files, shuffled by name."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = list(FORMATS.items())
    good, bad = [], []
    for i in range(n_good):
        fmt, suffix = names[i % len(names)]
        if i % 25 == 0:
            suffix = ".jpg" if fmt != "JPEG" else ".png"  # lying suffix, valid content
        good.append(_write(root / f"{rng.integers(1e9):09d}_tiny{i}{suffix}", encode(fmt, 24, 24, seed=i)))
    for name, data in bad_files().items():
        bad.append(_write(root / f"{rng.integers(1e9):09d}_{name}", data))
    (root / "notes.txt").write_text("not listed: not an image suffix")
    return good, bad


def test_a_directory_of_hundreds_of_files_with_bad_ones(tmp_path):
    good, bad = mixed_directory(tmp_path / "dir", 270)
    listed = list_images([tmp_path / "dir"])
    assert sorted(listed) == sorted(good + bad) and len(listed) == 300
    loaded, refused = [], {}
    for path in listed:
        try:
            assert valid_array(load_image(path))
            loaded.append(path)
        except BadInputError as exc:
            refused[path] = exc.reason
    assert sorted(loaded) == sorted(good)
    assert sorted(refused) == sorted(bad)
    assert all(refused[p] for p in bad)


@pytest.fixture()
def one_torch_thread():
    """Detection single-threaded: on a shared 2-core machine two torch threads run several times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_identify_over_a_directory_processes_the_good_and_reports_the_bad(tmp_path, lfw_image, verifier,
                                                                          one_torch_thread):
    """20 real faces from LFW among 180 tiny non-face and bad files: every file gets a result, the faces are
    identified, the rest are reported with their reason, and nothing stops the run."""
    people = ["George_W_Bush", "Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder"]
    probe_dir = tmp_path / "probes"
    _, bad = mixed_directory(probe_dir, 150, seed=1)
    faces = {}
    for person in people:
        for i in (3, 4, 5, 6):
            dst = probe_dir / f"face_{person}_{i}.jpg"
            shutil.copy(lfw_image(person, i), dst)
            faces[str(dst)] = person
    with verifier.open_gallery(tmp_path / "g.sqlite") as g:
        for person in people:
            report = verifier.enroll(g, person, [lfw_image(person, 1), lfw_image(person, 2)])
            assert report.added == {person: 2}
        results = {r.image: r for r in verifier.identify(g, [probe_dir], threshold=0.5)}
    assert len(results) == 200
    for path in map(str, bad):
        assert results[path].error and results[path].error != "no face found", path
    for path, result in results.items():
        if path in faces:
            assert result.error is None and result.faces, f"{path}: {result.error}"
        elif path not in map(str, bad):
            assert result.error == "no face found", f"{path}: {result.error}"
    right = sum(results[p].faces[0].nearest == person for p, person in faces.items())
    assert right >= 18, f"only {right} of 20 faces matched their enrolled identity"


def test_images_smaller_than_a_face_are_no_face_not_a_crash(tmp_path, verifier, one_torch_thread):
    tiny = [_write(tmp_path / f"t{n}.png", encode("PNG", n, n)) for n in (1, 8, 19)]
    tiny.append(_write(tmp_path / "strip.png", encode("PNG", 2000, 1)))
    results = list(verifier.pipeline.process_paths(tiny))
    assert [r.error.reason for r in results] == ["no face found"] * 4


# -- fuzzing the image loader --------------------------------------------------------------------------------

_EXIF = Image.Exif()
_EXIF[0x0112] = 6  # rotated: the loader's EXIF path is fuzzed too
SEEDS = {"jpeg": encode("JPEG", 32, 24, exif=_EXIF), "png": encode("PNG", 32, 24)}


def _fuzz_one(data: bytes, suffix: str, tmp_dir: Path) -> None:
    path = _write(tmp_dir / f"fuzz{suffix}", data)
    try:
        assert valid_array(load_image(path))
    except BadInputError as exc:
        assert str(path) in str(exc)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096), suffix=st.sampled_from(sorted(set(FORMATS.values()))))
def test_fuzz_random_bytes(tmp_path, data, suffix):
    _fuzz_one(data, suffix, tmp_path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    base=st.sampled_from(sorted(SEEDS)),
    edits=st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), min_size=1, max_size=16),
    cut=st.one_of(st.none(), st.integers(1, 4096)),
)
def test_fuzz_mutated_jpeg_and_png(tmp_path, base, edits, cut):
    data = bytearray(SEEDS[base])
    for pos, value in edits:
        data[pos % len(data)] = value
    _fuzz_one(bytes(data[:cut]), ".jpg" if base == "jpeg" else ".png", tmp_path)


# -- gallery files -------------------------------------------------------------------------------------------


def _unit(seed: int, dim: int = 16) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _top(g: Gallery, query: np.ndarray) -> str:
    """The best-matching identity for one query."""
    return g.search(query[None, :])[0][0][0]


def _gallery(path: Path, names=("Alice", "Bob")) -> Path:
    with Gallery(path, MODEL, 16) as g:
        for k, name in enumerate(names):
            g.enroll(name, [Enrolment(_unit(k), f"/img/{k}.jpg", f"sha{k}")])
    return path


def test_gallery_of_an_unknown_schema_version(tmp_path):
    path = _gallery(tmp_path / "g.sqlite")
    with sqlite3.connect(path) as con:
        con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(GalleryError, match=re.escape(str(path)) + r".*schema version '99' is not supported"):
        Gallery(path, MODEL, 16)


def test_gallery_of_schema_1_is_migrated(tmp_path):
    """A gallery written by the first release: opened, migrated to the current schema, nothing lost; its legacy
    lookalike pair is kept, but no new lookalike can be added."""
    path = tmp_path / "v1.sqlite"
    con = sqlite3.connect(path)
    con.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE identities (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at REAL NOT NULL,
                                 updated_at REAL NOT NULL);
        CREATE TABLE embeddings (id INTEGER PRIMARY KEY, identity_id INTEGER NOT NULL REFERENCES identities(id)
            ON DELETE CASCADE, vector BLOB NOT NULL, source TEXT NOT NULL, source_sha256 TEXT NOT NULL,
            box TEXT NOT NULL DEFAULT '', model_id TEXT NOT NULL, created_at REAL NOT NULL,
            UNIQUE (identity_id, source_sha256, box));
        INSERT INTO meta VALUES ('schema_version', '1'), ('generation', '2'), ('model_id', 'test-model@1:hostile'),
                                ('embedding_size', '16');
        INSERT INTO identities VALUES (1, 'Alice', 0, 0), (2, 'alice', 0, 0);
        """
    )
    con.executemany("INSERT INTO embeddings VALUES (?, ?, ?, 'src', ?, '', 'test-model@1:hostile', 0)",
                    [(1, 1, _unit(1).tobytes(), "a"), (2, 2, _unit(2).tobytes(), "b")])
    con.commit()
    con.close()
    with Gallery(path, MODEL, 16) as g:
        assert [(i.name, i.embeddings) for i in g.identities()] == [("Alice", 1), ("alice", 1)]
        assert _top(g, _unit(2)) == "alice"
        with pytest.raises(GalleryError, match="looks like the existing identity"):
            g.enroll("ALICE", [Enrolment(_unit(3), "x", "y")])
        g.enroll("Carol", [Enrolment(_unit(3), "x", "y")])
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    assert [r[0] for r in con.execute("SELECT id FROM embeddings ORDER BY id")] == [1, 2, 3]
    con.close()


def test_gallery_of_another_model(tmp_path):
    path = _gallery(tmp_path / "g.sqlite")
    with pytest.raises(GalleryError, match=re.escape(str(path)) + ".*never mixed"):
        Gallery(path, "another-model@2:ffff", 16)
    with pytest.raises(GalleryError, match="16-d embeddings, not 128-d"):
        Gallery(path, MODEL, 128)


def _truncated_gallery(tmp_path: Path) -> bytes:
    _gallery(tmp_path / "src.sqlite", names=[f"person {i}" for i in range(300)])
    con = sqlite3.connect(tmp_path / "src.sqlite")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return (tmp_path / "src.sqlite").read_bytes()[:6000]


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: os.urandom(8192),
        lambda tmp: encode("PNG"),
        lambda tmp: b"name,vector\nAlice,0.1 0.2\n" * 100,
        lambda tmp: b"SQLite format 3\x00" + b"\xff" * 4000,
        _truncated_gallery,
    ],
    ids=["random", "png", "csv", "bad-header", "truncated-sqlite"],
)
def test_files_that_are_not_galleries(tmp_path, make):
    path = tmp_path / "g.sqlite"
    path.write_bytes(make(tmp_path))
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        with Gallery(path, MODEL, 16) as g:
            g.identities()
            g.search(_unit(0)[None, :])
        pytest.fail("a broken file was read as a gallery")
    except GalleryError as exc:
        assert str(path) in str(exc)
    if make is not _truncated_gallery:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == before, "a file that is not a gallery was modified"


def test_another_applications_database_is_refused_untouched(tmp_path):
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
        con.execute("INSERT INTO users(email) VALUES ('a@example.com')")
    con.close()
    before = path.read_bytes()
    with pytest.raises(GalleryError, match=re.escape(str(path)) + ".*not a faceverify gallery"):
        Gallery(path, MODEL, 16)
    assert path.read_bytes() == before and not Path(str(path) + "-wal").exists()


@pytest.mark.parametrize(
    "sql, problem",
    [
        ("UPDATE embeddings SET vector = x'0000' WHERE id = 1", "embedding row 1 is corrupt"),
        ("UPDATE embeddings SET vector = zeroblob(64) WHERE id = 2", None),
        ("UPDATE embeddings SET vector = ? WHERE id = 2", "corrupt"),
        ("UPDATE meta SET value = 'many' WHERE key = 'generation'", "corrupt gallery metadata"),
        ("UPDATE meta SET value = '-3' WHERE key = 'embedding_size'", "holds -3-d embeddings, not 16-d"),
    ],
    ids=["short-vector", "zero-vector", "nan-vector", "bad-counter", "bad-size"],
)
def test_tampered_gallery_rows(tmp_path, sql, problem):
    path = _gallery(tmp_path / "g.sqlite")
    with sqlite3.connect(path) as con:
        con.execute(sql, (np.full(16, np.nan, np.float32).tobytes(),) if "?" in sql else ())
    con.close()
    if problem is None:
        with Gallery(path, MODEL, 16) as g:
            assert _top(g, _unit(0)) == "Alice"
        return
    with pytest.raises(GalleryError, match=problem) as err:
        with Gallery(path, MODEL, 16) as g:
            g.search(_unit(0)[None, :])
    assert str(path) in str(err.value)


def test_corrupt_database_pages_raise_gallery_errors(tmp_path):
    path = _gallery(tmp_path / "g.sqlite", names=[f"person {i}" for i in range(400)])
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    data = bytearray(path.read_bytes())
    for p in range(2, len(data) // page, 3):
        data[p * page + 8 : p * page + 200] = os.urandom(192)
    path.write_bytes(bytes(data))
    try:
        g = Gallery(path, MODEL, 16)
    except GalleryError as exc:
        assert str(path) in str(exc)
        return
    failures = 0
    try:
        for action in (g.identities, lambda: g.search(_unit(5)[None, :]),
                       lambda: g.enroll("New Person", [Enrolment(_unit(9), "x", "y")])):
            try:
                action()
            except GalleryError as exc:
                assert str(path) in str(exc)
                failures += 1
    finally:
        g.close()
    assert failures, "reading corrupt pages went unnoticed"


# -- model cards and weights -----------------------------------------------------------------------------------

CARD_NAME = "dlib-resnet-v1"


@pytest.fixture()
def models(tmp_path, monkeypatch) -> Path:
    """A private models directory that the package reads first: the card copied, its weights written as the
    safetensors file they came from (the shipped ONNX file holds them) and named by the card, which loses its ONNX."""
    from faceverify.modelcard import shipped_models_dir
    from faceverify.embed import state_from_onnx

    src = shipped_models_dir()
    d = tmp_path / "models"
    d.mkdir()
    card = json.loads((src / f"{CARD_NAME}.json").read_text())
    (d / f"{CARD_NAME}.safetensors").write_bytes(state_from_onnx((src / card["onnx"]).read_bytes())[1])
    card.update(weights=f"{CARD_NAME}.safetensors", onnx="", onnx_sha256="")
    (d / f"{CARD_NAME}.json").write_text(json.dumps(card))
    (d / "DEFAULT").write_text(CARD_NAME)
    monkeypatch.setenv("FACEVERIFY_MODELS", str(d))
    return d


def _edit_card(models: Path, **changes) -> Path:
    path = models / f"{CARD_NAME}.json"
    card = json.loads(path.read_text())
    card.update(changes)
    path.write_text(json.dumps(card))
    return path


@pytest.mark.parametrize(
    "change, problem",
    [
        (dict(input_size="150"), "input_size"),
        (dict(embedding_size=12.5), "embedding_size"),
        (dict(embedding_size=10**9), "embedding_size"),
        (dict(template=[[1, 2]] * 4), "template"),
        (dict(template=[[1e9, 2]] * 5), "template"),
        (dict(mean=[1, 2, float("nan")]), "mean"),
        (dict(std=[0, 1, 1]), "std"),
        (dict(thresholds={"1e-3": 1.5}), "out of range"),
        (dict(thresholds={"2": 0.5}), "out of range"),
        (dict(thresholds={"nan": 0.5}), "out of range"),
        (dict(thresholds={"often": 0.5}), "not a number"),
        (dict(thresholds={"1e-3": True}), "out of range"),
        (dict(thresholds=[0.5]), "thresholds"),
        (dict(weights="../dlib-resnet-v1.safetensors"), "plain .safetensors file name beside the card, or"),
        (dict(weights="/etc/passwd"), "plain .safetensors file name beside the card, or"),
        (dict(weights="sub/w.safetensors"), "plain .safetensors file name beside the card, or"),
        (dict(weights="..\\w.safetensors"), "plain .safetensors file name beside the card, or"),
        (dict(weights="C:w.safetensors"), "plain .safetensors file name beside the card, or"),
        (dict(weights="w\x00.safetensors"), "plain .safetensors file name beside the card, or"),
        (dict(weights="weights.pt"), "plain .safetensors file name beside the card, or"),
        (dict(weights_sha256="deadbeef"), "64 lowercase hex"),
        (dict(calibration=[1, 2]), "calibration"),
        (dict(calibration={"far_curve": [["a", 1]]}), "far_curve"),
        (dict(calibration={"far_curve": [[0.5, 7]]}), "far_curve"),
        (dict(notes=["x"]), "notes"),
        (dict(schema=True), "schema"),
        (dict(schema=2), "schema"),
        (dict(extra_field=1), "unknown model card fields"),
        (dict(architecture=""), "architecture"),
    ],
)
def test_tampered_model_cards(models, change, problem):
    from faceverify.embed import Embedder

    path = _edit_card(models, **change)
    with pytest.raises(ModelError, match=re.escape(problem)) as err:
        Embedder.load(device="cpu")
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "content, problem",
    [
        (b'{"name": "x", ', "unreadable model card"),
        (b"[1, 2, 3]", "not a JSON object"),
        (b"\xff\xfe\x00garbage", "unreadable model card"),
        (b"[" * 100_000 + b"]" * 100_000, "unreadable model card"),
        (b'{"notes": "' + b"x" * (5 << 20) + b'"}', "larger than"),
        (b"{}", "missing"),
    ],
    ids=["cut", "array", "binary", "deep", "huge", "empty-object"],
)
def test_unreadable_model_cards(models, content, problem):
    from faceverify.modelcard import resolve_card

    path = models / f"{CARD_NAME}.json"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=problem) as err:
        resolve_card()
    assert str(path) in str(err.value)


def _real_weights(models: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(models / f"{CARD_NAME}.safetensors"))


def _install_weights(models: Path, data: bytes) -> Path:
    """Replace the weights with ``data`` and fix the card's sha256 to match (a consistent, crafted pair)."""
    weights = models / f"{CARD_NAME}.safetensors"
    weights.unlink()
    weights.write_bytes(data)
    _edit_card(models, weights_sha256=hashlib.sha256(data).hexdigest())
    return weights


def _safetensors(state: dict) -> bytes:
    from safetensors.torch import save

    return save(state)


def test_weights_that_do_not_match_their_card(models):
    from faceverify.embed import Embedder

    weights = models / f"{CARD_NAME}.safetensors"
    data = weights.read_bytes()
    weights.unlink()
    weights.write_bytes(data + b"\x00")
    with pytest.raises(ModelError, match="do not match the sha256") as err:
        Embedder.load(device="cpu")
    assert str(weights) in str(err.value)
    weights.unlink()
    with pytest.raises(ModelError, match="missing"):
        Embedder.load(device="cpu")


def test_crafted_weights_with_a_matching_card_sha(models):
    """Valid safetensors files that do not fit the architecture: wrong shape, wrong dtype, NaN, missing tensor."""
    from faceverify.embed import Embedder

    state = _real_weights(models)
    key = next(iter(state))
    crafted = {
        "shape": {**state, key: state[key][..., :1].contiguous()},
        "dtype": {**state, key: state[key].double()},
        "nan": {**state, key: state[key] * float("nan")},
        "missing": {k: v for k, v in state.items() if k != key},
    }
    for label, tensors in crafted.items():
        weights = _install_weights(models, _safetensors(tensors))
        with pytest.raises(ModelError) as err:
            Embedder.load(device="cpu")
        assert str(weights) in str(err.value), label


def test_a_pickle_posing_as_weights_is_never_unpickled(models, tmp_path):
    """A pickle whose loading would run code, with a card whose sha256 matches it: refused, not executed."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    from faceverify.embed import Embedder

    for data in (pickle.dumps(Payload()), b"\xff" * 8 + b"{}", struct.pack("<Q", 1 << 62) + b"{"):
        weights = _install_weights(models, data)
        with pytest.raises(ModelError, match="unreadable safetensors") as err:
            Embedder.load(device="cpu")
        assert str(weights) in str(err.value)
    assert not marker.exists()


def test_unknown_architecture_names_the_card(models):
    from faceverify.embed import Embedder

    path = _edit_card(models, architecture="evil_net")
    with pytest.raises(ModelError, match="unknown architecture") as err:
        Embedder.load(device="cpu")
    assert str(path) in str(err.value)


def test_nothing_is_ever_unpickled(monkeypatch, tmp_path):
    """No module of the package uses pickle, torch.load, numpy's pickle loading or the like; at run time the
    only torch.load calls are facenet-pytorch loading its own MTCNN weights from inside its installed package."""
    pattern = re.compile(r"\b(pickle|cPickle|dill|joblib|shelve|marshal)\b|torch\.load\(|allow_pickle\s*=\s*True")
    offenders = [
        f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line.split("#")[0]) and "never unpickle" not in line and "never pickle" not in line
    ]
    assert offenders == []

    import facenet_pytorch
    import torch

    from faceverify.detect import Detector
    from faceverify.embed import Embedder

    loaded: list[str] = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: loaded.append(str(f)) or real(f, *a, **k))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("pickle.loads called"))
    Embedder.load(device="cpu")
    Detector("cpu")
    with Gallery(tmp_path / "g.sqlite", MODEL, 16) as g:
        g.enroll("A", [Enrolment(_unit(1), "x", "y")])
        g.search(_unit(1)[None, :])
    facenet_dir = Path(facenet_pytorch.__file__).resolve().parent
    assert loaded and all(facenet_dir in Path(p).resolve().parents for p in loaded), loaded


# -- identity names ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, problem",
    [
        ("", "empty"), ("\u3000 \u00a0", "empty"), ("x" * 129, "longer"),
        ("a/b", "path separator"), ("a\\b", "path separator"), ("Ａ／Ｂ", "path separator"), ("..", "only dots"),
        (".", "only dots"), ("bad\x00name", "control"), ("tab\there", "control"), ("line\nbreak", "control"),
        ("rtl\u202eevil", "invisible"), ("zero\u200dwidth", "invisible"), ("bom\ufeff", "invisible"),
        ("lone\ud800", "control"), ("private\ue000", "control"), ("sep\u2028x", "control"),
        ("\U000e0001tag", "invisible"), ("Аlice", "mixes Cyrillic and Latin"), ("Pаypal Inc", "mixes"),
        ("Ηello", "mixes Greek and Latin"),
    ],
)
def test_hostile_names_are_refused(name, problem):
    with pytest.raises(GalleryError, match=problem):
        validate_name(name)


def test_names_are_stored_and_returned_verbatim(gallery_location):
    names = [
        "Robert'); DROP TABLE identities;--", 'O"Brien', "José Álvarez", "Zoë", "李小龙", "محمد علي", "דוד",
        "Ольга Петрова", "Σωκράτης", "👩 Ada", "x" * 128, "%s %d {0} $HOME `id`", "Ada  \u00a0 Lovelace",
    ]
    vectors = {}
    with open_gallery(gallery_location, MODEL, 16) as g:
        for k, name in enumerate(names):
            vectors[name] = _unit(k)
            g.enroll(name, [Enrolment(vectors[name], f"/img/{k}.jpg", f"s{k}")])
        stored = {i.name for i in g.identities()}
        assert "Ada Lovelace" in stored and len(stored) == len(names)
        for name, v in vectors.items():
            assert _top(g, v) == validate_name(name)
        assert len(g) == len(names)


@pytest.mark.parametrize(
    "existing, newcomer",
    [
        ("Alice", "alice"), ("Alice", "ALICE"), ("Alice", "Ａｌｉｃｅ"), ("Alice", "𝐀𝐥𝐢𝐜𝐞"),
        ("Ace", "Асе"), ("ABE", "ΑΒΕ"), ("Ada Lovelace", "ada   lovelace"), ("Straße", "STRASSE"),
        ("Zoë", "Zoe\u0308".upper()), ("Cox", "Сох"),
    ],
)
def test_lookalike_names_are_refused_naming_the_existing_one(gallery_location, existing, newcomer):
    with open_gallery(gallery_location, MODEL, 16) as g:
        g.enroll(existing, [Enrolment(_unit(1), "a", "a")])
        with pytest.raises(GalleryError, match=re.escape(f"looks like the existing identity {existing!r}")):
            g.enroll(newcomer, [Enrolment(_unit(2), "b", "b")])
        g.enroll("Someone Else", [Enrolment(_unit(3), "c", "c")])
        with pytest.raises(GalleryError, match="looks like the existing"):
            g.rename("Someone Else", newcomer)
        assert [i.name for i in g.identities()] == sorted([existing, "Someone Else"])


def test_renaming_to_a_lookalike_of_itself_and_lookup_hints(gallery_location):
    with open_gallery(gallery_location, MODEL, 16) as g:
        g.enroll("alice smith", [Enrolment(_unit(1), "a", "a")])
        g.rename("alice smith", "Alice Smith")  # fixing one's own capitalisation is allowed
        with pytest.raises(GalleryError, match="did you mean 'Alice Smith'"):
            g.remove("ALICE SMITH")
        assert g.remove("Alice Smith") == 1


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
