"""Uploaded images: read with a size cap, named for messages, and decoded within the service's memory budget.

Decoding runs on a few threads of its own (not the server's shared pool), at most ``work_side`` pixels on the
longer side (the detector shrinks images far below that anyway: YuNet looks at 640), and each decode reserves
what it may need from a :class:`MemoryBudget` first; the decoded image holds its
bytes of the budget until its request is answered. Requests that hold or wait for decoded images count against
the model queue's bound (503 beyond it). Faces are found in the decoded image; boxes are answered and stored in
the uploaded image's own pixels. Memory a large decode freed is handed back to the system."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import threading
import time
import unicodedata
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import AsyncIterator

import numpy as np
from fastapi import UploadFile

from ..errors import BadInputError, ImageTooLargeError
from ..images import load_image_reduced
from ..pipeline import FaceEmbedding
from .config import ServiceConfig
from .errors import ApiError

MAX_LABEL = 100
DECODE_THREADS = 2

TRIM_ABOVE = 32 * 1024 * 1024
"""Decodes reserving more than this many bytes hand freed memory back to the system when they are done."""


class MemoryBudget:
    """``limit`` bytes shared by decodes and decoded images (thread-safe). A reservation waits until it fits, or
    until nothing else is held (one image larger than the whole budget still decodes, alone); one that cannot
    start within ``wait`` seconds is refused 503."""

    def __init__(self, limit: int, wait: float = 30.0):
        self.limit, self.wait = limit, wait
        self.used = 0
        self._cond = threading.Condition()

    def reserve(self, n: int) -> None:
        deadline = time.monotonic() + self.wait
        with self._cond:
            while self.used and self.used + n > self.limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ApiError(503, "the server is busy decoding other large images; retry shortly",
                                   {"Retry-After": "2"})
                self._cond.wait(left)
            self.used += n

    def release(self, n: int) -> None:
        with self._cond:
            self.used = max(0, self.used - n)
            self._cond.notify_all()


def _malloc_trim():
    """glibc's malloc_trim, or None elsewhere (musl, macOS, Windows)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def give_back_memory() -> None:
    """Return the heap's free pages to the system (glibc keeps them per thread otherwise: the process would stay
    at its peak size after a burst of large images)."""
    if _TRIM is not None:
        _TRIM(0)


@dataclass
class Upload:
    """One decoded upload: the name errors and the gallery use, the RGB image as decoded, ``scale`` (uploaded
    pixels per decoded pixel), the sha256 of its bytes, and the budget bytes it holds."""

    label: str
    image: np.ndarray
    scale: float
    sha256: str
    held: int

    def in_upload(self, faces: list[FaceEmbedding]) -> list[FaceEmbedding]:
        """``faces`` found in the decoded image, with boxes and landmarks in the uploaded image's pixels."""
        if self.scale == 1.0:
            return faces
        return [f if f.face is None else replace(f, face=replace(f.face, box=f.face.box * self.scale,
                                                                   landmarks=f.face.landmarks * self.scale))
                for f in faces]


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


class Decoder:
    """Decodes uploads for the service within its memory budget (see the module's description)."""

    def __init__(self, config: ServiceConfig):
        self.config = config
        self.budget = MemoryBudget(config.decode_memory)
        self.in_flight = 0
        self._pool = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="faceverify-decode")

    @asynccontextmanager
    async def request(self) -> AsyncIterator["RequestImages"]:
        """One request's decodes: refused 503 when the queue's bound of requests is already in flight; what they
        hold of the budget is given back when the request is done."""
        if self.in_flight >= self.config.queue_size:
            raise ApiError(503, "the server is busy (its queue of requests is full); retry shortly",
                           {"Retry-After": "1"})
        self.in_flight += 1
        images = RequestImages(self)
        try:
            yield images
        finally:
            self.in_flight -= 1
            images.close()

    def _decode(self, label: str, data: bytes) -> Upload:
        reserved = 0

        def reserve(n: int) -> None:
            nonlocal reserved
            self.budget.reserve(n)
            reserved = n

        try:
            out = load_image_reduced(data, label, self.config.work_side, self.config.max_pixels, reserve)
        except BaseException:
            self.budget.release(reserved)
            raise
        finally:
            if reserved > TRIM_ABOVE:
                give_back_memory()
        held = min(reserved, out.image.nbytes)
        self.budget.release(reserved - held)
        return Upload(label, out.image, out.scale, out.sha256, held)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class RequestImages:
    """The uploads one request decoded: their budget is held until the request ends, also for a decode that
    finishes after its client went away."""

    def __init__(self, decoder: Decoder):
        self.decoder = decoder
        self._held = 0
        self._closed = False
        self._lock = threading.Lock()

    def _settle(self, future: Future) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        with self._lock:
            if not self._closed:
                self._held += future.result().held
                return
        self.decoder.budget.release(future.result().held)

    def close(self) -> None:
        with self._lock:
            self._closed, held, self._held = True, self._held, 0
        self.decoder.budget.release(held)

    async def decode(self, label: str, data: bytes) -> Upload:
        future = self.decoder._pool.submit(self.decoder._decode, label, data)
        future.add_done_callback(self._settle)
        return await asyncio.wrap_future(future)

    async def read(self, files: list[UploadFile], field: str) -> list[Upload]:
        """Every file of a multipart field, read and decoded; the first bad one raises (nothing is stored)."""
        config = self.decoder.config
        if not files:
            raise ApiError(422, f"malformed request: no files in the multipart field '{field}'")
        if len(files) > config.max_files:
            raise ApiError(413, f"too many files ({len(files)}; the limit is {config.max_files} per request)")
        out = []
        for i, f in enumerate(files):
            if not hasattr(f, "read"):
                raise ApiError(422, f"malformed request: field '{field}' must be a file upload")
            label, data = await read_upload(f, f"{field}{i + 1}", config)
            out.append(await self.decode(label, data))
        return out
