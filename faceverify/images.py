"""Image loading that copes with what users actually hand us, and refuses the rest with a clear reason."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, overload

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ._util import sha256_bytes
from .errors import BadInputError, ImageTooLargeError

MAX_PIXELS = 50_000_000
"""Largest image (width x height) we decode; larger ones are refused before decoding (decompression bombs)."""

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as an H x W x 3 uint8 RGB array.

    EXIF orientation is applied; greyscale, palette, RGBA (composited on white), CMYK and 16-bit images are
    converted. Raises BadInputError naming the file for anything missing, empty, truncated, not an image or
    larger than ``max_pixels``.
    """
    return _decode(path, _read_bytes(path), max_pixels)


def load_image_hashed(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, str]:
    """:func:`load_image` plus the hex sha256 of the file, from the one read of its bytes."""
    data = _read_bytes(path)
    return _decode(path, data, max_pixels), sha256_bytes(data)


def load_image_bytes(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, str]:
    """:func:`load_image_hashed` for bytes already in memory (an upload): RGB array and sha256; errors name
    ``name``."""
    if not data:
        raise BadInputError(name, "empty file (0 bytes)")
    return _decode(name, data, max_pixels), sha256_bytes(data)


@dataclass
class Reduced:
    """An image decoded at most ``max_side`` pixels on its longer side: the RGB array, ``scale`` (original pixels
    per decoded pixel, 1.0 when not reduced) and the sha256 of the file's bytes."""

    image: np.ndarray
    scale: float
    sha256: str


def load_image_reduced(data: bytes, name: str, max_side: int, max_pixels: int = MAX_PIXELS,
                       reserve: Callable[[int], None] | None = None) -> Reduced:
    """:func:`load_image_bytes` decoding no more than is needed for ``max_side``: a JPEG is decoded at 1/2, 1/4
    or 1/8 scale by its decoder (its DCT), other formats are box-filtered down by an integer factor right after
    decoding. ``reserve(n)`` is called with the bytes the decode may need at most, from the header alone, before
    anything is decoded (a memory budget blocks there)."""
    if not data:
        raise BadInputError(name, "empty file (0 bytes)")
    image, scale = _decode(name, data, max_pixels, max_side, reserve)
    return Reduced(image, scale, sha256_bytes(data))


def _read_bytes(path: str | Path) -> bytes:
    """The bytes of a regular, non-empty file; BadInputError naming it otherwise (never opens pipes or devices)."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(path, "no such file")
    if path.is_dir():
        raise BadInputError(path, "is a directory, not an image")
    if not path.is_file():
        raise BadInputError(path, "not a regular file (a device, pipe or socket)")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BadInputError(path, f"cannot read ({exc.strerror})") from None
    if size == 0:
        raise BadInputError(path, "empty file (0 bytes)")
    try:
        return path.read_bytes()
    except PermissionError:
        raise BadInputError(path, "permission denied") from None
    except MemoryError:
        raise ImageTooLargeError(path, "image too large to decode in the memory available") from None
    except OSError as exc:
        raise BadInputError(path, f"corrupt or truncated image ({_short(exc)})") from None


@overload
def _decode(path: str | Path, data: bytes, max_pixels: int) -> np.ndarray: ...
@overload
def _decode(path: str | Path, data: bytes, max_pixels: int, max_side: int,
            reserve: Callable[[int], None] | None) -> tuple[np.ndarray, float]: ...


def _decode(path, data, max_pixels, max_side=None, reserve=None):
    """Decode an image file's bytes to RGB (see :func:`load_image`); errors name ``path``. With ``max_side``:
    (RGB at most that side, scale) as :func:`load_image_reduced`."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageTooLargeError(
                        path, f"image too large ({width}x{height} pixels; the limit is {max_pixels:,} pixels)"
                    )
                if max_side is None:
                    img.load()
                    return to_rgb_array(ImageOps.exif_transpose(img))
                shrink = min(1.0, max_side / max(width, height))
                target = (max(1, round(width * shrink)), max(1, round(height * shrink)))
                if shrink < 1 and img.format == "JPEG":
                    img.draft(img.mode, target)  # decoded at the smallest 1/2^k scale still at least the target
                if reserve is not None:  # the decoded image and a converted copy (4 bytes a pixel each), and reduced ones
                    reserve(8 * (img.size[0] * img.size[1] + target[0] * target[1]))
                img.load()
                if img.size != target:
                    if img.mode not in ("L", "RGB", "RGBA"):  # 16-bit, palette, CMYK...: converted as unreduced images are
                        img = Image.fromarray(to_rgb_array(img))
                    img = img.resize(target, Image.Resampling.BOX)
                out = to_rgb_array(ImageOps.exif_transpose(img))
                return out, max(width, height) / max(out.shape[:2])
    except BadInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLargeError(path, "image too large (decompression bomb protection)") from None
    except UnidentifiedImageError:
        raise BadInputError(path, "not an image file (unrecognised format)") from None
    except MemoryError:
        raise ImageTooLargeError(path, "image too large to decode in the memory available") from None
    except Exception as exc:  # noqa: BLE001 - whatever a decoder raises on untrusted bytes, the file is bad
        raise BadInputError(path, f"corrupt or truncated image ({_short(exc)})") from None


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert any PIL image mode to H x W x 3 uint8 RGB (16-bit scaled, alpha composited on white)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        if img.mode == "I":
            top = max(int(arr.max()), 1)
            scale = 65535 if top > 255 else 255
            arr = (arr.astype(np.float64) * (255.0 / scale)).clip(0, 255)
        else:
            arr = arr.astype(np.float64) / 257.0
        grey = np.round(arr).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        finite = np.isfinite(arr)
        lo, hi = (float(arr[finite].min()), float(arr[finite].max())) if finite.any() else (0.0, 0.0)
        arr = np.where(finite, arr, lo)
        grey = np.round((arr - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def list_images(paths: list[str | Path], suffixes: frozenset[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Expand files and directories (recursively, sorted) into the paths of files with ``suffixes`` (image
    files by default); files are kept as given."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes))
        else:
            out.append(p)
    return out


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]
