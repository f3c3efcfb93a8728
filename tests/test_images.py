"""Image loading: real formats and orientations, and every kind of bad file refused with its reason."""

from __future__ import annotations

import hashlib
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from faceverify.errors import BadInputError
from faceverify.images import MAX_PIXELS, list_images, load_image, load_image_hashed


def _gradient(w: int = 40, h: int = 30) -> np.ndarray:
    x = np.linspace(0, 255, w, dtype=np.uint8)
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = x
    rgb[..., 1] = 255 - x
    rgb[..., 2] = 80
    return rgb


def test_rgb_jpeg_and_png(tmp_path):
    img = _gradient()
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(img).save(tmp_path / "a.jpg", quality=95)
    assert np.array_equal(load_image(tmp_path / "a.png"), img)
    jpg = load_image(tmp_path / "a.jpg")
    assert jpg.shape == (30, 40, 3) and jpg.dtype == np.uint8
    assert np.abs(jpg.astype(int) - img).mean() < 4


def test_exif_orientation_is_applied(tmp_path):
    img = _gradient(40, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(img).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "rot.jpg")
    assert out.shape == (40, 30, 3)
    # after a clockwise turn the left column (dark red) becomes the top row
    assert out[0, :, 0].mean() < out[-1, :, 0].mean()


def test_greyscale_rgba_and_16bit(tmp_path):
    grey = np.arange(0, 250, 10, dtype=np.uint8).reshape(5, 5)
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    assert out.shape == (5, 5, 3) and np.array_equal(out[..., 0], grey) and np.array_equal(out[..., 2], grey)

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert tuple(out[0, 0]) == (200, 0, 0) and tuple(out[3, 3]) == (255, 255, 255)

    deep = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4369).astype(np.uint16)  # 0 .. 65535
    Image.fromarray(deep).save(tmp_path / "d.png")
    out = load_image(tmp_path / "d.png")
    assert out[0, 0, 0] == 0 and out[3, 3, 0] == 255 and out[1, 0, 0] == round(4 * 4369 / 257)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("hello, not an image"), "not an image"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20), "not an image"),
        (lambda p: p.write_bytes(_png_header_only(10, 10)), "corrupt or truncated"),
    ],
)
def test_bad_files_name_the_file_and_reason(tmp_path, make, reason):
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(BadInputError) as err:
        load_image(path)
    assert str(path) in str(err.value) and reason in str(err.value)


def test_truncated_jpeg(tmp_path):
    Image.fromarray(_gradient(200, 200)).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError, match="truncated"):
        load_image(tmp_path / "cut.jpg")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(BadInputError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(BadInputError, match="directory"):
        load_image(tmp_path)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares huge dimensions: the classic decompression bomb shape."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_huge_declared_dimensions_are_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(100_000, 100_000))
    with pytest.raises(BadInputError, match="too large"):
        load_image(path)
    small_cap = tmp_path / "ok.png"
    Image.fromarray(_gradient(100, 100)).save(small_cap)
    with pytest.raises(BadInputError, match="too large"):
        load_image(small_cap, max_pixels=5_000)
    assert load_image(small_cap, max_pixels=MAX_PIXELS).shape == (100, 100, 3)


def test_hashed_load_decodes_and_hashes_the_same_bytes(tmp_path):
    path = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the hashed variant applies EXIF orientation as load_image does
    Image.fromarray(_gradient()).save(path, quality=95, exif=exif)
    rgb, sha = load_image_hashed(path)
    assert np.array_equal(rgb, load_image(path)) and rgb.shape == (40, 30, 3)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "cut.png").write_bytes(path.read_bytes()[:50])
    for bad in (tmp_path / "cut.png", tmp_path / "missing.png", tmp_path):
        with pytest.raises(BadInputError) as plain:
            load_image(bad)
        with pytest.raises(BadInputError) as hashed:
            load_image_hashed(bad)
        assert str(hashed.value) == str(plain.value)


def test_list_images_expands_directories(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/b.jpg", "d/a.PNG", "d/sub/c.jpeg", "d/notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = list_images([tmp_path / "d", tmp_path / "explicit.txt"])
    assert [p.name for p in found] == ["a.PNG", "b.jpg", "c.jpeg", "explicit.txt"]
