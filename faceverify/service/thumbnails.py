"""The face thumbnails kept beside the gallery (``<gallery>.faces/``) for the page.

Uploads themselves are not kept, so the service saves a small crop of each face it enrols, named by the stored
embedding's id: two identities enrolled from one photo have a crop each, and removing one removes only its own.
For faces enrolled by the CLI a crop is cut from the source file while that file is still there."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .._util import write_atomic
from ..errors import BadInputError
from ..images import load_image_reduced

SIZE = 128
"""Longest side of a thumbnail, pixels."""
SOURCE_SIDE = 2048
"""A source file is decoded at most this many pixels on its longer side to cut a thumbnail from."""


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


def scaled(box: Sequence[float] | None, factor: float) -> list[float] | None:
    return None if box is None else [float(v) * factor for v in box]


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

    def _path(self, embedding_id: int) -> Path:
        return self.dir / f"e{int(embedding_id)}.jpg"

    def save(self, rgb: np.ndarray, embedding_id: int, box: Sequence[float] | None) -> None:
        """Keep the crop of the face at ``box`` (pixels of ``rgb``) for the stored embedding ``embedding_id``."""
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self._path(embedding_id), jpeg(face_crop(rgb, box)))

    def find(self, rows: list[dict]) -> bytes | None:
        """A thumbnail for an identity whose stored embeddings are ``rows`` (``Gallery.embeddings_of``)."""
        for r in rows:
            path = self._path(r["id"])
            if path.is_file():
                return path.read_bytes()
        for r in rows:
            source = Path(r["source"])
            try:
                if source.is_file():
                    image = load_image_reduced(source.read_bytes(), str(source), SOURCE_SIDE)
                    return jpeg(face_crop(image.image, scaled(r["box"], 1 / image.scale)))
            except (BadInputError, OSError, ValueError):
                continue
        return None

    def remove(self, rows: list[dict]) -> None:
        for r in rows:
            self._path(r["id"]).unlink(missing_ok=True)
