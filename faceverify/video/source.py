"""Frames of a camera, a video file or a stream, read on a thread for live sources."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from ..errors import BadInputError

# OpenCV and FFmpeg would print their own warnings when a source cannot be opened; ours are one clear line.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

DEFAULT_FPS = 25.0
MAX_CAMERA = 63
"""Largest camera index opened (Linux numbers video devices from 0; far larger ones are typing mistakes)."""
STREAM_TIMEOUT = 5.0
"""Seconds a URL source has to open, and then to send each frame, before it counts as lost."""


def display_url(url: str) -> str:
    """A URL (or a video source) without its user:password part, for lists and messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host.rsplit('@', 1)[-1]}{slash}{path}"


def parse_source(source: str | int) -> tuple[str, str | int, bool]:
    """(label for messages, what cv2.VideoCapture opens, whether it is live); a URL's label hides its
    password."""
    if isinstance(source, int) or str(source).isdigit():
        text = str(source)
        if len(text) > 3 or int(text) > MAX_CAMERA:
            raise BadInputError(f"camera {text[:12]}{'...' if len(text) > 12 else ''}",
                                f"no such camera (indexes run from 0 to {MAX_CAMERA})")
        return f"camera {int(text)}", int(text), True
    text = str(source)
    if "://" in text:
        return display_url(text), text, True
    path = Path(text)
    if not path.exists():
        raise BadInputError(path, "no such file")
    if path.is_dir():
        raise BadInputError(path, "is a directory, not a video")
    return text, text, False


class FrameSource:
    """Frames of a camera, video file or stream as (frame index, time in seconds, BGR image).

    A file is read frame by frame, none dropped. A live source (camera, URL), or a file with ``realtime``
    (read at its own frame rate), is read by a thread that keeps only the latest frame: frames arriving faster
    than they are taken are dropped and counted in ``dropped``. That thread starts at the first ``read``, so
    the time spent getting ready (loading a detector) drops no frames.
    """

    def __init__(self, source: str | int, realtime: bool = False):
        self.label, target, self.live = parse_source(source)
        if isinstance(target, str) and "://" in target:  # FFmpeg gives up on a silent server instead of waiting
            ms = int(STREAM_TIMEOUT * 1000)
            cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        else:
            cap = cv2.VideoCapture(target)
        if not cap.isOpened():
            cap.release()
            raise BadInputError(self.label, self._open_failure())
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if 0 < fps < 1000 else 0.0
        ok, first = cap.read()
        if not ok or first is None:
            cap.release()
            raise BadInputError(self.label, "opened, but no frame could be read from it")
        self.height, self.width = first.shape[:2]
        self.dropped = 0
        self.end_reason: str | None = None
        self._cap = cap
        self._first: np.ndarray | None = first
        self._index = 0
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._latest: tuple[int, float, np.ndarray] | None = None
        self._done = False
        self._thread: threading.Thread | None = None
        if self.live or realtime:
            self._thread = threading.Thread(target=self._reader, name="faceverify-video-reader", daemon=True)

    def _open_failure(self) -> str:
        if self.label.startswith("camera "):
            return "cannot open this camera (no such device, it is busy, or access is denied)"
        if self.live:
            return (f"cannot open this stream (unreachable, no answer within {STREAM_TIMEOUT:g} s, or a protocol "
                    "or codec OpenCV cannot read)")
        return "cannot open as a video (not a video file, corrupt, or a codec OpenCV cannot read)"

    def _reader(self) -> None:
        """Thread body: keep only the newest frame; a file is paced at its frame rate."""
        cap, frame = self._cap, self._first
        self._first = None
        fps = self.fps or DEFAULT_FPS
        start = time.monotonic()
        index = 0
        try:
            while not self._stop.is_set():
                stamp = index / fps if not self.live else time.monotonic() - start
                with self._cond:
                    if self._latest is not None:
                        self.dropped += 1
                    self._latest = (index, stamp, frame)
                    self._cond.notify()
                index += 1
                if not self.live:
                    delay = start + index / fps - time.monotonic()
                    if delay > 0:
                        self._stop.wait(delay)
                ok, frame = cap.read()
                if not ok or frame is None:
                    self.end_reason = "source lost" if self.live else "end of file"
                    break
        finally:
            cap.release()
            with self._cond:
                self._done = True
                self._cond.notify()

    def read(self) -> tuple[int, float, np.ndarray] | None:
        """The next frame to process, or None when the source has ended (or ``close`` was called)."""
        if self._thread is None:
            if self._first is not None:
                frame, self._first = self._first, None
            else:
                ok, frame = self._cap.read()
                if not ok or frame is None:
                    self.end_reason = "end of file"
                    return None
            index = self._index
            self._index += 1
            return index, index / (self.fps or DEFAULT_FPS), frame
        if self._thread.ident is None:
            self._thread.start()
        with self._cond:
            while self._latest is None and not self._done and not self._stop.is_set():
                self._cond.wait(0.1)
            item, self._latest = self._latest, None
            return item

    def close(self) -> None:
        """Stop reading and release the device or file."""
        self._stop.set()
        if self._thread is not None and self._thread.ident is not None:
            self._thread.join(timeout=2.0)
        else:
            self._cap.release()

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
