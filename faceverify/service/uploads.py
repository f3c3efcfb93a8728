"""Uploaded images: read with a size cap, named for messages, decoded off the event loop; and the face
thumbnails kept beside the gallery (``<gallery>.faces/``) for the page.

Uploads themselves are not kept, so the service saves a small crop of each face it enrols; for faces enrolled
by the CLI a crop is cut from the source file while that file is still there. Removing an identity removes its
crops."""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from .._util import write_atomic
from ..errors import BadInputError, ImageTooLargeError
from ..images import load_image, load_image_bytes
from .config import ServiceConfig
from .errors import ApiError

MAX_LABEL = 100


@dataclass
class Upload:
    """One decoded upload: the name errors and the gallery use, the RGB image, the sha256 of its bytes, and the
    bytes (kept for thumbnails)."""

    label: str
    image: np.ndarray
    sha256: str
    data: bytes


def label_of(filename: str | None, fallback: str) -> str:
    """A printable, single-line, short name for an uploaded file (its base name), never a path."""
    text = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C").strip()
    return (text or fallback)[:MAX_LABEL]


async def read_upload(file: UploadFile, fallback: str, config: ServiceConfig) -> tuple[str, bytes]:
    """(label, bytes) of one uploaded file, refusing one over the per-image byte cap (413) or empty (400)."""
    label = label_of(file.filename, fallback)
    data = await file.read(config.max_image_bytes + 1)
    if len(data) > config.max_image_bytes:
        raise ImageTooLargeError(label, f"file too large (over {config.max_image_bytes:,} bytes)")
    if not data:
        raise BadInputError(label, "empty file (0 bytes)")
    return label, data


async def decode(label: str, data: bytes, config: ServiceConfig) -> Upload:
    """Decode in a worker thread (EXIF, modes, the pixel cap: the CLI's rules and messages)."""
    image, sha = await run_in_threadpool(load_image_bytes, data, label, config.max_pixels)
    return Upload(label, image, sha, data)


async def read_images(files: list[UploadFile], field: str, config: ServiceConfig) -> list[Upload]:
    """Every file of a multipart field, read and decoded; the first bad one raises (nothing is stored)."""
    if not files:
        raise ApiError(422, f"malformed request: no files in the multipart field '{field}'")
    if len(files) > config.max_files:
        raise ApiError(413, f"too many files ({len(files)}; the limit is {config.max_files} per request)")
    out = []
    for i, f in enumerate(files):
        if not hasattr(f, "read"):
            raise ApiError(422, f"malformed request: field '{field}' must be a file upload")
        label, data = await read_upload(f, f"{field}{i + 1}", config)
        out.append(await decode(label, data, config))
    return out


# -- thumbnails ---------------------------------------------------------------------------------------

SIZE = 128
"""Longest side of a thumbnail, pixels."""


def parse_box(box: object) -> list[float] | None:
    """A stored box (``"x1,y1,x2,y2"`` text, a list, or None) as four floats."""
    if box is None or box == "":
        return None
    try:
        values = [float(v) for v in (box.split(",") if isinstance(box, str) else box)]
    except (TypeError, ValueError):
        return None
    return values if len(values) == 4 else None


def face_crop(rgb: np.ndarray, box: Sequence[float] | None, margin: float = 0.25, size: int = SIZE) -> np.ndarray:
    """The face (with ``margin`` of its size around it; the image centre without a box), at most ``size``
    pixels on its longer side, as BGR for OpenCV."""
    h, w = rgb.shape[:2]
    if box is None:
        side = min(h, w)
        x1, y1, x2, y2 = (w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2
    else:
        x1, y1, x2, y2 = box
        mx, my = (x2 - x1) * margin, (y2 - y1) * margin
        x1, y1, x2, y2 = x1 - mx, y1 - my, x2 + mx, y2 + my
    x1, y1 = max(0, int(x1)), max(0, int(y1))
    x2, y2 = min(w, max(x1 + 1, int(round(x2)))), min(h, max(y1 + 1, int(round(y2))))
    crop = rgb[y1:y2, x1:x2]
    scale = size / max(crop.shape[:2])
    if scale < 1:
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)


def jpeg(bgr: np.ndarray, quality: int = 85) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


class Thumbnails:
    def __init__(self, gallery_path: Path | str):
        from ..gallery import is_database_url

        if is_database_url(gallery_path):  # a database gallery: kept in the user data dir, one folder per URL
            from platformdirs import user_data_dir

            key = hashlib.sha256(str(gallery_path).encode()).hexdigest()[:16]
            self.dir = Path(user_data_dir("faceverify")) / f"postgres-{key}.faces"
            return
        gallery_path = Path(gallery_path)
        self.dir = gallery_path.with_name(gallery_path.name + ".faces")

    def _path(self, sha256: str, box: object) -> Path:
        parsed = parse_box(box)
        key = "none" if parsed is None else "-".join(str(int(round(v))) for v in parsed)
        return self.dir / f"{sha256[:64]}-{key}.jpg"

    def save(self, rgb: np.ndarray, sha256: str, box: Sequence[float] | None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self._path(sha256, box), jpeg(face_crop(rgb, box)))

    def find(self, rows: list[dict]) -> bytes | None:
        """A thumbnail for an identity whose stored embeddings are ``rows`` (``Gallery.embeddings_of``)."""
        for r in rows:
            path = self._path(r["source_sha256"], r["box"])
            if path.is_file():
                return path.read_bytes()
        for r in rows:
            source = Path(r["source"])
            if source.is_file():
                try:
                    return jpeg(face_crop(load_image(source), parse_box(r["box"])))
                except (BadInputError, ValueError):
                    continue
        return None

    def remove(self, rows: list[dict]) -> None:
        for r in rows:
            self._path(r["source_sha256"], r["box"]).unlink(missing_ok=True)
