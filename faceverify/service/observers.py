"""What watches the streams' decisions besides their viewers: webhooks, and the unknown faces kept to name later.

Webhooks: each decided track (named or unknown) and each track end is posted as JSON to every ``--webhook``
URL by one sender thread, with retries (exponential back-off) and a bounded queue; when the queue is full new
events are dropped and counted rather than slowing the video down.

Unknown faces: with ``--keep-unknown N`` the service keeps, for each of the last N tracks that it could not
name, the face crop with the largest face seen while the track was unknown; the page shows them, and naming one
enrolls the crop (``POST /v1/unknown/{id}/enroll``).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .errors import ApiError
from .uploads import face_crop, jpeg

log = logging.getLogger("faceverify.service")


class Webhooks:
    """Posts JSON events to URLs from a background thread; ``sent``, ``failed`` and ``dropped`` count them."""

    def __init__(self, urls: list[str], queue_size: int = 1000, retries: int = 3, backoff: float = 0.5,
                 timeout: float = 5.0):
        self.urls = list(urls)
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.sent = self.failed = self.dropped = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread = None
        if self.urls:
            self._thread = threading.Thread(target=self._loop, name="faceverify-webhooks", daemon=True)
            self._thread.start()

    def post(self, payload: dict) -> None:
        if not self.urls:
            return
        try:
            self._queue.put_nowait(json.dumps(payload).encode())
        except queue.Full:
            self.dropped += 1

    def _loop(self) -> None:
        while True:
            body = self._queue.get()
            if body is None:
                return
            try:
                for url in self.urls:
                    self._deliver(url, body)
            finally:
                self._queue.task_done()

    def _deliver(self, url: str, body: bytes) -> None:
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "faceverify"})
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                    if 200 <= reply.status < 300:
                        self.sent += 1
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if attempt < self.retries and self._stop.wait(self.backoff * 2 ** attempt):
                break
        self.failed += 1
        log.warning("webhook %s: an event could not be delivered after %d tries", _display_url(url), attempt + 1)

    def stats(self) -> dict:
        return dict(urls=len(self.urls), sent=self.sent, failed=self.failed, dropped=self.dropped,
                    queued=self._queue.qsize())

    def close(self, drain: float = 2.0) -> None:
        """Deliver what is queued for up to ``drain`` seconds, then stop."""
        if self._thread is None:
            return
        deadline = time.monotonic() + drain
        while self._queue.unfinished_tasks and time.monotonic() < deadline:  # queued or being delivered
            time.sleep(0.05)
        self._stop.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout=self.timeout + 1)


def _display_url(url: str) -> str:
    """A URL without its user:password part, for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host.rsplit('@', 1)[-1]}{slash}{path}"


@dataclass
class UnknownFace:
    id: int
    stream: int
    track: int
    time: float
    score: float | None
    area: float
    image: bytes
    seen: float

    def to_dict(self) -> dict:
        return dict(id=self.id, stream=self.stream, track=self.track, time=round(self.time, 3),
                    score=None if self.score is None else round(self.score, 4), seen=round(self.seen, 3))


class UnknownFaces:
    """The best face crop of each of the last ``keep`` unknown tracks (thread-safe; streams offer, routes read)."""

    def __init__(self, keep: int):
        self.keep = max(0, keep)
        self._items: OrderedDict[tuple[int, int], UnknownFace] = OrderedDict()
        self._lock = threading.Lock()
        self._next = 1

    def offer(self, stream: int, track: int, bgr: np.ndarray, box: list[float], stamp: float,
              score: float | None) -> None:
        """A frame in which ``track`` of ``stream`` is unknown: keep its face if it is the largest seen."""
        if self.keep == 0:
            return
        area = max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])
        key = (stream, track)
        with self._lock:
            old = self._items.get(key)
            if old is not None and old.area >= area:
                return
        data = jpeg(face_crop(np.ascontiguousarray(bgr[:, :, ::-1]), box, margin=0.4, size=320), 92)
        with self._lock:
            old = self._items.get(key)
            if old is not None and old.area >= area:
                return
            ident = old.id if old is not None else self._next
            if old is None:
                self._next += 1
            self._items[key] = UnknownFace(ident, stream, track, stamp, score, area, data, time.time())
            while len(self._items) > self.keep:
                self._items.popitem(last=False)

    def list(self) -> list[dict]:
        with self._lock:
            return [f.to_dict() for f in reversed(self._items.values())]

    def get(self, ident: int) -> UnknownFace:
        with self._lock:
            for f in self._items.values():
                if f.id == ident:
                    return f
        raise ApiError(404, f"no unknown face {ident} (named, dismissed, or pushed out by newer ones)")

    def pop(self, ident: int) -> UnknownFace:
        with self._lock:
            for key, f in self._items.items():
                if f.id == ident:
                    del self._items[key]
                    return f
        raise ApiError(404, f"no unknown face {ident} (named, dismissed, or pushed out by newer ones)")

    def forget(self, stream: int, track: int) -> None:
        """``track`` was named after all: it is not an unknown face."""
        with self._lock:
            self._items.pop((stream, track), None)
