"""The one loaded model and the one gallery connection that every request shares, off the event loop.

Model work (detection, alignment, embedding) runs on one worker thread fed by a bounded queue: requests that
arrive together are taken as one batch (up to ``batch_images`` images), so concurrent clients share the
network's batched forward pass instead of contending for the CPU, and the model is never called from two
threads at once. A full queue is answered 503. Gallery work runs on one more thread that owns the service's
:class:`~faceverify.gallery.Gallery` (a Gallery belongs to one thread); the SQLite store lets the CLI and other
processes use the same file meanwhile.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import numpy as np

from ..api import FaceVerifier
from ..detect import FaceChoice
from ..gallery import Gallery, gallery_location
from ..pipeline import FaceEmbedding
from .config import ServiceConfig
from .errors import ApiError

if TYPE_CHECKING:
    from .observers import UnknownFaces, Webhooks
    from .streams import StreamManager
    from .thumbnails import Thumbnails
    from .uploads import Decoder

T = TypeVar("T")


@dataclass
class _Job:
    images: list[np.ndarray]
    face: FaceChoice
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.cancelled():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Engine:
    """The shared verifier, its batching model worker and the gallery thread."""

    def __init__(self, verifier: FaceVerifier, gallery_path: Path | str, queue_size: int = 64, batch_images: int = 16):
        self.verifier = verifier
        self.gallery_path = gallery_location(gallery_path)  # a file, or a postgresql:// URL
        self.batch_images = batch_images
        self.batches = self.batched_images = 0
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._worker = threading.Thread(target=self._model_loop, name="faceverify-model", daemon=True)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="faceverify-gallery")
        self._gallery: Gallery | None = None
        self._worker.start()

    # -- model ------------------------------------------------------------------------------------------

    async def embed(self, images: list[np.ndarray], face: FaceChoice = "largest") -> list[list[FaceEmbedding]]:
        """The chosen faces of each RGB image with their embeddings (an empty list: no face found)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        try:
            self._jobs.put_nowait(_Job(images, face, loop, future))
        except queue.Full:
            raise ApiError(503, "the server is busy (its queue of requests for the model is full); retry shortly",
                           {"Retry-After": "1"}) from None
        return await future

    def _model_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            batch, n, stop = [job], len(job.images), False
            while n < self.batch_images:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
                n += len(more.images)
            self._run_batch(batch)
            if stop:
                return

    def _run_batch(self, batch: list[_Job]) -> None:
        self.batches += 1
        self.batched_images += sum(len(j.images) for j in batch)
        by_face: dict[str, list[_Job]] = {}
        for job in batch:
            by_face.setdefault(job.face, []).append(job)
        for face, jobs in by_face.items():
            images = [img for j in jobs for img in j.images]
            try:
                results, error = self.verifier.pipeline.process_images(images, face), None
            except Exception as exc:  # noqa: BLE001 - handed to the requests, which answer it
                results, error = [], exc
            k = 0
            for j in jobs:
                part = None if error is not None else results[k: k + len(j.images)]
                k += len(j.images)
                j.loop.call_soon_threadsafe(_settle, j.future, part, error)

    # -- gallery ----------------------------------------------------------------------------------------

    async def gallery(self, work: Callable[[Gallery], T]) -> T:
        """``work(gallery)`` on the gallery thread, with the service's gallery opened there on first use."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._with_gallery, work)

    def _with_gallery(self, work: Callable[[Gallery], T]) -> T:
        if self._gallery is None:
            self._gallery = self.verifier.open_gallery(self.gallery_path)
        return work(self._gallery)

    def open_now(self) -> None:
        """Open the gallery at once (on its thread), so that a wrong file stops the server before it listens."""
        self._pool.submit(self._with_gallery, lambda g: len(g)).result()

    def close(self) -> None:
        """Stop the model worker and close the gallery (saving its search index when it changed enough)."""
        try:
            self._jobs.put(None, timeout=10)
        except queue.Full:
            pass
        self._worker.join(timeout=10)

        def close_gallery() -> None:
            if self._gallery is not None:
                self._gallery.close()
                self._gallery = None

        self._pool.submit(close_gallery).result()
        self._pool.shutdown(wait=True)


@dataclass
class ServiceState:
    """Everything the routes share: the configuration, the verifier and its engine, the upload decoder, the
    thumbnails, the running streams, the unknown faces kept to name later and the webhook sender."""

    config: ServiceConfig
    verifier: FaceVerifier
    engine: Engine
    decoder: "Decoder"
    thumbs: "Thumbnails"
    streams: "StreamManager"
    unknown: "UnknownFaces"
    hooks: "Webhooks"
