"""What watches the streams' decisions besides their viewers: webhooks, and the unknown faces kept to name later.

Webhooks: each decided track (named, unknown, or with ``--liveness`` judged not live) and each track end is
posted as JSON to every ``--webhook`` URL, by one sender thread per URL with retries (exponential back-off) and a
bounded queue; when a queue is full new events for that URL are dropped and counted rather than slowing the video
(or the other URLs) down.

Unknown faces: with ``--keep-unknown N`` the service keeps, for each of the last N tracks that it could not
name, the face crop with the largest face seen while the track was unknown (forgotten once the track is named or
judged not live); the page shows them, and naming one enrolls the crop (``POST /v1/unknown/{id}/enroll``).
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

from ..video.source import display_url
from .errors import ApiError
from .thumbnails import face_crop, jpeg

log = logging.getLogger("faceverify.service")


class _Hook:
    """One URL's sender: its own bounded queue and thread, so that a slow or dead receiver delays only itself."""

    def __init__(self, url: str, queue_size: int, retries: int, backoff: float, timeout: float):
        self.url = url
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.sent = self.failed = self.dropped = 0
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=queue_size)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="faceverify-webhook", daemon=True)
        self.thread.start()

    def put(self, body: bytes) -> None:
        try:
            self.queue.put_nowait(body)
        except queue.Full:
            self.dropped += 1

    def _loop(self) -> None:
        while True:
            body = self.queue.get()
            try:
                if body is None:
                    return
                self._deliver(body)
            finally:
                self.queue.task_done()

    def _deliver(self, body: bytes) -> None:
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "faceverify"})
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                    if 200 <= reply.status < 300:
                        self.sent += 1
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if attempt < self.retries and self.stop.wait(self.backoff * 2 ** attempt):
                break
        self.failed += 1
        log.warning("webhook %s: an event could not be delivered after %d tries", display_url(self.url), attempt + 1)


class Webhooks:
    """Posts JSON events to URLs, one background sender per URL; ``stats()`` counts what was sent, failed after
    every retry, or dropped because that URL's queue was full."""

    def __init__(self, urls: list[str], queue_size: int = 1000, retries: int = 3, backoff: float = 0.5,
                 timeout: float = 5.0):
        self.urls = list(urls)
        self.timeout = timeout
        self._hooks = [_Hook(url, queue_size, retries, backoff, timeout) for url in self.urls]

    def post(self, payload: dict) -> None:
        if not self._hooks:
            return
        body = json.dumps(payload).encode()
        for hook in self._hooks:
            hook.put(body)

    def stats(self) -> dict:
        hooks = self._hooks
        return dict(urls=len(hooks), sent=sum(h.sent for h in hooks), failed=sum(h.failed for h in hooks),
                    dropped=sum(h.dropped for h in hooks), queued=sum(h.queue.qsize() for h in hooks))

    def close(self, drain: float = 2.0) -> None:
        """Deliver what is queued for up to ``drain`` seconds, then stop."""
        deadline = time.monotonic() + drain
        while any(h.queue.unfinished_tasks for h in self._hooks) and time.monotonic() < deadline:
            time.sleep(0.05)  # queued or being delivered
        for hook in self._hooks:
            hook.stop.set()
            try:
                hook.queue.put_nowait(None)
            except queue.Full:
                pass
        for hook in self._hooks:
            hook.thread.join(timeout=self.timeout + 1)


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
