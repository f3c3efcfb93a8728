"""Identification on cameras, files and RTSP/HTTP streams inside the server, each run on its own thread.

A stream opens its own connection to the gallery (a Gallery belongs to one thread) and runs
:class:`faceverify.video.VideoIdentifier` over its source: the same loop as ``identify --source``. Its events
(the ``--json`` objects: one per track per frame, one per track end, and the summary last) are kept in a
bounded backlog for Server-Sent Events; the latest annotated frame is kept as a JPEG for MJPEG viewers. The
model's embedder is shared with the still-image worker (ONNX Runtime and torch inference are thread-safe); each
stream has its own detector.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import cv2

from ..api import FaceVerifier
from ..errors import FaceverifyError
from ..video import FrameResult, VideoIdentifier, VideoSettings, draw_events
from ..video.source import display_url, parse_source
from .errors import ApiError, one_line, status_of
from .observers import UnknownFaces, Webhooks

log = logging.getLogger("faceverify.service")

BACKLOG = 5000
"""Events kept per stream for subscribers that connect late or reconnect (``Last-Event-ID``)."""
START_TIMEOUT = 120.0
"""Seconds a start waits for the source to open and the video detector to load."""
ENDED_KEPT = 600.0
"""Seconds an ended or failed stream stays listed (with its summary) before it is forgotten."""
MAX_ENDED = 32
"""Ended streams kept listed at most (the oldest are forgotten first)."""


class Stream:
    """One running (or finished) identification on a source."""

    def __init__(self, ident: int, source: str, realtime: bool, options: dict[str, Any], manager: "StreamManager"):
        self.id = ident
        self.source = source
        self.realtime = realtime
        self.options = options
        self.manager = manager
        self.status = "starting"
        self.error: str | None = None
        self.error_status = 500
        self.summary: dict | None = None
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.viewers = 0
        self.seq = 0
        self._events: deque[tuple[int, dict]] = deque(maxlen=BACKLOG)
        self._lock = threading.Lock()
        self._jpeg: tuple[int, bytes] | None = None
        self._run = None
        self._ready = threading.Event()
        self.finished = threading.Event()
        self.thread = threading.Thread(target=self._main, name=f"faceverify-stream-{ident}", daemon=True)

    # -- the thread -------------------------------------------------------------------------------------

    def _main(self) -> None:
        gallery = None
        try:
            fv = self.manager.verifier
            gallery = fv.open_gallery(self.manager.gallery_path)
            match = self.options.get("match")
            identifier = VideoIdentifier(fv, gallery, fpir=self.options.get("fpir"), far=self.options.get("far"),
                                         threshold=self.options.get("threshold"),
                                         settings=None if match is None else VideoSettings(match=match))
            self.manager.warm_up()
            run = identifier.run(self.source, self.realtime)
        except FaceverifyError as exc:
            self.error_status = status_of(exc)
            self._fail(str(exc), log_it=False)
            if gallery is not None:
                gallery.close()
            return
        except Exception as exc:  # noqa: BLE001
            self._fail(f"internal error: {type(exc).__name__}: {one_line(exc, 200)}")
            if gallery is not None:
                gallery.close()
            return
        self._run = run
        self.status = "running"
        self._ready.set()
        last: FrameResult | None = None
        try:
            with run:
                for result in run:
                    self._publish(result)
                    last = result
            if last is not None:
                self._encode(last)
            self.summary = run.summary().to_dict()
            self._push(dict(summary=self.summary))
            self.status = "ended"
        except Exception as exc:  # noqa: BLE001 - a broken stream must not take the server down
            self._fail(f"internal error: {type(exc).__name__}: {one_line(exc, 200)}")
        finally:
            gallery.close()
            self.ended_at = self.ended_at or time.time()
            self.finished.set()

    def _fail(self, message: str, log_it: bool = True) -> None:
        self.error, self.status = message.replace(self.source, display_url(self.source)), "failed"
        if log_it:
            log.error("stream %d (%s): %s", self.id, display_url(self.source), self.error)
        self.ended_at = time.time()
        self._ready.set()
        self.finished.set()

    def _push(self, item: dict) -> None:
        with self._lock:
            self.seq += 1
            self._events.append((self.seq, item))

    def _publish(self, result: FrameResult) -> None:
        hooks: Webhooks = self.manager.hooks
        unknown: UnknownFaces = self.manager.unknown
        for e in result.events:
            item = e.to_dict()
            self._push(item)
            if e.changed and e.status in ("known", "unknown", "spoof"):
                hooks.post(dict(event="decided", stream=self.id, **item))
            if e.status == "unknown" and result.detected:
                unknown.offer(self.id, e.track, result.image, e.box, e.time, e.score)
            elif e.status in ("known", "spoof") and e.changed:  # named, or a print: not a face to name later
                unknown.forget(self.id, e.track)
        for end in result.ended:
            item = end.to_dict()
            self._push(item)
            hooks.post(dict(event="ended", stream=self.id, **item))
        if self.viewers > 0 or result.frame % 10 == 0:
            self._encode(result)

    def _encode(self, result: FrameResult) -> None:
        ok, buf = cv2.imencode(".jpg", draw_events(result.image, result.events), [cv2.IMWRITE_JPEG_QUALITY, 80])
        if ok:
            with self._lock:
                self._jpeg = (result.frame, buf.tobytes())

    # -- what the routes read ---------------------------------------------------------------------------

    def events_after(self, seq: int) -> list[tuple[int, dict]]:
        with self._lock:
            return [item for item in self._events if item[0] > seq]

    def latest_jpeg(self) -> tuple[int, bytes] | None:
        with self._lock:
            return self._jpeg

    def stop(self, reason: str = "stopped") -> None:
        if self._run is not None:
            self._run.stop(reason)
        self.finished.wait(10)

    def describe(self) -> dict:
        run = self._run
        return dict(id=self.id, source=display_url(self.source), status=self.status, realtime=self.realtime,
                    frames=run.frames if run is not None else 0,
                    dropped=run.source.dropped if run is not None else 0, error=self.error,
                    summary=self.summary)


class StreamManager:
    """The streams of one service: start, list, look up, stop."""

    def __init__(self, verifier: FaceVerifier, gallery_path: Path, hooks: Webhooks, unknown: UnknownFaces,
                 max_streams: int = 4):
        self.verifier = verifier
        self.gallery_path = gallery_path
        self.hooks = hooks
        self.unknown = unknown
        self.max_streams = max_streams
        self.ended_kept = ENDED_KEPT
        self._streams: dict[int, Stream] = {}
        self._lock = threading.Lock()
        self._warm = threading.Lock()
        self._warmed = False
        self._next = 1

    def warm_up(self) -> None:
        """Load the video detector's code and weights once (seconds, the first time: torch) before a source is
        opened: a live or real-time source is read from the moment it opens, and would drop those seconds."""
        with self._warm:
            if not self._warmed:
                self.verifier.pipeline.frame_detector(20, 0.6)
                self._warmed = True

    def start(self, source: str, realtime: bool | None = None, **options: Any) -> Stream:
        """Open ``source`` and start identifying (blocking until it runs or fails: call from a worker thread).
        A file is read at its frame rate unless ``realtime`` is False."""
        parse_source(source)  # a missing file, a folder or no such camera: refused before a stream starts
        with self._lock:
            self._forget_ended()
            running = sum(1 for s in self._streams.values() if not s.finished.is_set())
            if running >= self.max_streams:
                raise ApiError(409, f"{running} streams are running, the most this server runs at once; stop one")
            ident, self._next = self._next, self._next + 1
            stream = Stream(ident, source, True if realtime is None else realtime, options, self)
            self._streams[ident] = stream
        stream.thread.start()
        stream._ready.wait(START_TIMEOUT)
        if stream.status == "failed" or stream.status == "starting":
            with self._lock:
                self._streams.pop(ident, None)
            stream.stop()
            if stream.error is None:
                raise ApiError(504, f"{display_url(source)}: did not start within {START_TIMEOUT:.0f} s")
            raise ApiError(stream.error_status, stream.error)
        return stream

    def _forget_ended(self) -> None:
        """Drop streams that ended over ``ended_kept`` seconds ago (:data:`ENDED_KEPT`), and all but the last
        :data:`MAX_ENDED` ended ones (call holding the lock)."""
        now = time.time()
        ended = sorted((s for s in self._streams.values() if s.finished.is_set() and s.ended_at is not None),
                       key=lambda s: s.ended_at)  # type: ignore[arg-type, return-value]
        for i, s in enumerate(ended):
            if now - s.ended_at > self.ended_kept or i < len(ended) - MAX_ENDED:  # type: ignore[operator]
                del self._streams[s.id]

    def get(self, ident: int) -> Stream:
        with self._lock:
            self._forget_ended()
            stream = self._streams.get(ident)
        if stream is None:
            raise ApiError(404, f"no stream {ident}")
        return stream

    def list(self) -> list[dict]:
        with self._lock:
            self._forget_ended()
            streams = list(self._streams.values())
        return [s.describe() for s in streams]

    def remove(self, ident: int) -> dict:
        """Stop the stream (if running) and forget it; its description as it ended."""
        stream = self.get(ident)
        stream.stop("stopped by request")
        with self._lock:
            self._streams.pop(ident, None)
        return stream.describe()

    def close(self) -> None:
        with self._lock:
            streams = list(self._streams.values())
        for s in streams:
            s.stop("server shutting down")
