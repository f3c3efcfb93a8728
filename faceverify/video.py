"""Identification in video: a camera, a file or a stream, in real time on a CPU.

Faces are detected every few frames on a downscaled copy (more often while the scene changes or someone awaits
a name), followed in between by optical flow, and associated to tracks by IoU. Each track embeds its sharpest,
most frontal detected faces, averages them, and is named against the gallery at the calibrated threshold; the
label is held with hysteresis so it does not flicker. ``VideoIdentifier(verifier, gallery).run(source)`` is the
API; ``identify_stream`` is what ``faceverify identify --source`` runs.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal

import cv2
import numpy as np
import torch

from .api import FaceVerifier
from .detect import Detector, Face
from .errors import BadInputError, FaceverifyError
from .gallery import Gallery
from .tracking import DetectionSchedule, Tracker, visible_fraction
from .verify import OperatingPoint

# OpenCV and FFmpeg would print their own warnings when a source cannot be opened; ours are one clear line.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

Status = Literal["pending", "known", "unknown"]
DEFAULT_FPS = 25.0


# -- sources -----------------------------------------------------------------------------------------------


def _parse_source(source: str | int) -> tuple[str, str | int, bool]:
    """(label for messages, what cv2.VideoCapture opens, whether it is live)."""
    if isinstance(source, int) or str(source).isdigit():
        return f"camera {int(source)}", int(source), True
    text = str(source)
    if "://" in text:
        return text, text, True
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
    than they are taken are dropped and counted in ``dropped``.
    """

    def __init__(self, source: str | int, realtime: bool = False):
        self.label, target, self.live = _parse_source(source)
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
            self._thread.start()

    def _open_failure(self) -> str:
        if self.label.startswith("camera "):
            return "cannot open this camera (no such device, it is busy, or access is denied)"
        if self.live:
            return "cannot open this stream (unreachable, or a protocol or codec OpenCV cannot read)"
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
        with self._cond:
            while self._latest is None and not self._done and not self._stop.is_set():
                self._cond.wait(0.1)
            item, self._latest = self._latest, None
            return item

    def close(self) -> None:
        """Stop reading and release the device or file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        else:
            self._cap.release()

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- per-track identity --------------------------------------------------------------------------------------


@dataclass
class VideoSettings:
    """How hard to look and how sure to be.

    Detection: MTCNN on a copy at most ``detect_width`` pixels wide, for faces of ``min_face`` pixels (in the
    frame; at least 12 at the detection scale) and up, with pyramid ``factor``; every ``min_interval`` frames
    while tracks start, end or await a name, doubling up to ``max_interval`` while all is stable.
    Identity: up to ``max_samples`` embeddings per track (its best-quality faces; at most ``max_embeddings``
    computed in all, a new one only when ``improve`` times better than the worst kept). Decisions use the
    quality-weighted mean of the samples at least half as good as the best, once ``min_samples`` are in and one
    reaches ``good_quality`` (or ``max_samples`` are in); a label is given when ``confirm`` successive decisions
    agree, and changed only when ``confirm`` successive decisions clear the threshold by ``margin`` the other
    way.
    ``torch_threads``: intra-op threads while running (1 is fastest for these small batches on a busy CPU).
    """

    detect_width: int = 320
    min_face: int = 40
    factor: float = 0.6
    min_interval: int = 5
    max_interval: int = 15
    iou_threshold: float = 0.3
    max_misses: int = 2
    max_samples: int = 5
    max_embeddings: int = 15
    improve: float = 1.25
    min_samples: int = 2
    good_quality: float = 0.15
    confirm: int = 2
    margin: float = 0.005
    torch_threads: int | None = 1


def face_quality(crop: np.ndarray, landmarks: np.ndarray) -> float:
    """How useful an aligned face crop is for recognition, in [0, 1): sharpness (variance of the Laplacian of
    the crop's centre, squashed) times frontality (left/right symmetry of the landmarks about the nose)."""
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    m = gray.shape[0] // 6
    sharp = float(cv2.Laplacian(gray[m:-m, m:-m], cv2.CV_64F).var())
    left_eye, right_eye, nose, left_mouth, right_mouth = np.asarray(landmarks, np.float64)

    def balance(a: np.ndarray, b: np.ndarray) -> float:
        da, db = np.linalg.norm(a - nose), np.linalg.norm(b - nose)
        return float(min(da, db) / max(da, db, 1e-6))

    frontal = np.sqrt(balance(left_eye, right_eye) * balance(left_mouth, right_mouth))
    return float(frontal * sharp / (sharp + 100.0))


class TrackIdentity:
    """The embeddings kept for one track and the label decided from their mean, with hysteresis."""

    def __init__(self, settings: VideoSettings):
        self.settings = settings
        self.samples: list[tuple[float, np.ndarray]] = []
        self.embedded = 0
        self.name: str | None = None
        self.status: Status = "pending"
        self.score: float | None = None
        self._candidate: str | None = None
        self._streak = 0

    def wants(self, quality: float) -> bool:
        """Is a face of this quality worth embedding?"""
        s = self.settings
        if len(self.samples) < s.max_samples:
            return True
        return self.embedded < s.max_embeddings and quality > s.improve * min(q for q, _ in self.samples)

    def add(self, quality: float, vector: np.ndarray) -> None:
        self.embedded += 1
        self.samples.append((quality, vector))
        if len(self.samples) > self.settings.max_samples:
            self.samples.remove(min(self.samples, key=lambda qv: qv[0]))

    def mean(self) -> np.ndarray:
        """Quality-weighted mean of the kept embeddings at least half as good as the best, re-normalised."""
        floor = 0.5 * max(q for q, _ in self.samples)
        used = [(q, vec) for q, vec in self.samples if q >= floor]
        v = np.average([vec for _, vec in used], axis=0, weights=[max(q, 1e-6) for q, _ in used])
        return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)

    def ready(self) -> bool:
        """Enough evidence to decide: ``min_samples`` in and one of good quality, or the pool full."""
        s = self.settings
        n = len(self.samples)
        return n >= s.max_samples or (n >= s.min_samples and max(q for q, _ in self.samples) >= s.good_quality)

    def decide(self, name: str | None, score: float, point: OperatingPoint) -> bool:
        """Take the gallery's verdict on the current mean; True when the label changed."""
        self.score = score
        s = self.settings
        if not self.ready():
            return False
        if self.status != "pending":
            if name == self.name:
                self._streak = 0
                return False
            clear = score >= point.threshold + s.margin if name is not None else score < point.threshold - s.margin
            if not clear:
                self._streak = 0
                return False
        if name == self._candidate and self._streak > 0:
            self._streak += 1
        else:
            self._candidate, self._streak = name, 1
        if self._streak < s.confirm:
            return False
        self.name, self.status, self._streak = name, ("known" if name is not None else "unknown"), 0
        return True


# -- results ---------------------------------------------------------------------------------------------------


def _box(box: np.ndarray) -> list[float]:
    return [round(float(v), 1) for v in box]


@dataclass
class TrackEvent:
    """A track seen in a frame: its label (``name`` None while pending or unknown), score and box."""

    frame: int
    time: float
    track: int
    name: str | None
    score: float | None
    box: list[float]
    status: Status
    changed: bool = False

    def to_dict(self) -> dict:
        return dict(frame=self.frame, time=round(self.time, 3), track=self.track, name=self.name,
                    score=None if self.score is None else round(self.score, 4), box=self.box, status=self.status)


@dataclass
class FrameResult:
    """One processed frame: its index in the source, time, the BGR image and the tracks in it."""

    frame: int
    time: float
    image: np.ndarray
    events: list[TrackEvent]
    detected: bool


@dataclass
class TrackSummary:
    id: int
    name: str | None
    status: Status
    score: float | None
    first_frame: int
    last_frame: int
    samples: int

    def to_dict(self) -> dict:
        return dict(id=self.id, name=self.name, status=self.status,
                    score=None if self.score is None else round(self.score, 4),
                    first_frame=self.first_frame, last_frame=self.last_frame, samples=self.samples)


@dataclass
class VideoSummary:
    """The run in numbers: frames processed, processing rate, frames dropped, and every track; ``busy``: seconds
    spent tracking (optical flow), detecting, and identifying (quality, embedding, search)."""

    source: str
    frames: int
    fps: float
    dropped: int
    seconds: float
    source_fps: float
    detections: int
    embeddings: int
    busy: dict[str, float]
    ended: str
    threshold: float
    far: float | None
    fpir: float | None = None
    tracks: list[TrackSummary] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(source=self.source, frames=self.frames, fps=round(self.fps, 2), dropped=self.dropped,
                    seconds=round(self.seconds, 3), source_fps=round(self.source_fps, 3),
                    detections=self.detections, embeddings=self.embeddings,
                    busy={k: round(v, 3) for k, v in self.busy.items()}, ended=self.ended,
                    threshold=round(self.threshold, 6), far=self.far, fpir=self.fpir, tracks=[t.to_dict() for t in self.tracks])


# -- the identifier --------------------------------------------------------------------------------------------


class VideoIdentifier:
    """Names the people in a video against a gallery, one stable label per tracked face."""

    def __init__(
        self,
        verifier: FaceVerifier,
        gallery: Gallery,
        far: float | None = None,
        threshold: float | None = None,
        settings: VideoSettings | None = None,
        fpir: float | None = None,
    ):
        if len(gallery) == 0:
            raise FaceverifyError(f"{gallery.path}: the gallery is empty (enroll someone first)")
        self.verifier = verifier
        self.gallery = gallery
        self.settings = settings or VideoSettings()
        # a track is judged on up to max_samples samples: as many looks at one person for the FPIR bound
        self.point = verifier.identification_point(gallery, far, threshold, fpir, looks=self.settings.max_samples)
        gallery.search(np.zeros((1, verifier.card.embedding_size), np.float32))  # build the index before frame one

    def run(self, source: str | int, realtime: bool = False) -> "VideoRun":
        """Open ``source`` (camera index, file or URL; BadInputError if it cannot be read) and return the run:
        iterate it for FrameResults, then read ``summary()``."""
        return VideoRun(self, FrameSource(source, realtime))


class VideoRun:
    """One pass over a source. Iterating yields a FrameResult per processed frame; ``stop()`` (from any thread
    or a signal handler) or Ctrl-C ends it cleanly; ``summary()`` describes it at any point."""

    def __init__(self, identifier: VideoIdentifier, source: FrameSource):
        self.identifier = identifier
        self.source = source
        s = identifier.settings
        self.scale = min(1.0, s.detect_width / source.width)
        pipeline = identifier.verifier.pipeline
        self.detector = Detector(pipeline.embedder.device, min_face_size=max(12, round(s.min_face * self.scale)),
                                 score_threshold=pipeline.detector.score_threshold, factor=s.factor)
        self.tracker = Tracker(iou_threshold=s.iou_threshold, max_misses=s.max_misses)
        self.schedule = DetectionSchedule(s.min_interval, s.max_interval)
        self.identities: dict[int, TrackIdentity] = {}
        self.spans: dict[int, list[int]] = {}
        self.frames = self.detections = self.embeddings = 0
        self.busy = dict(track=0.0, detect=0.0, identify=0.0)
        self.ended = "not started"
        self._stop = threading.Event()
        self._stop_reason = "stopped"
        self._seconds = 0.0

    def stop(self, reason: str = "stopped") -> None:
        """End the run after the current frame; ``reason`` becomes the summary's ``ended``."""
        self._stop_reason = reason
        self._stop.set()

    def __enter__(self) -> "VideoRun":
        return self

    def __exit__(self, *exc: object) -> None:
        self.source.close()

    def __iter__(self) -> Iterator[FrameResult]:
        threads = torch.get_num_threads()
        if self.identifier.settings.torch_threads:
            torch.set_num_threads(self.identifier.settings.torch_threads)
        start = time.perf_counter()
        prev_gray: np.ndarray | None = None
        self.ended = "running"
        try:
            while not self._stop.is_set():
                item = self.source.read()
                if item is None:
                    break
                index, stamp, image = item
                gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
                result = self._step(index, stamp, image, gray, prev_gray)
                prev_gray = gray
                self.frames += 1
                self._seconds = time.perf_counter() - start
                yield result
            self.ended = self._stop_reason if self._stop.is_set() else (self.source.end_reason or "stopped")
        except KeyboardInterrupt:
            self.ended = "interrupted"
        finally:
            self._seconds = time.perf_counter() - start
            torch.set_num_threads(threads)
            self.source.close()

    def _step(
        self, index: int, stamp: float, image: np.ndarray, gray: np.ndarray, prev_gray: np.ndarray | None
    ) -> FrameResult:
        changed: set[int] = set()
        if prev_gray is not None:
            t0 = time.perf_counter()
            self.tracker.propagate(prev_gray, gray, index)
            self.busy["track"] += time.perf_counter() - t0
            if any(not t.flow_ok for t in self.tracker.tracks):
                self.schedule.request()
        detected = self.schedule.due()
        if detected:
            changed = self._detect(index, image)
        events = []
        for t in self.tracker.tracks:
            self.spans.setdefault(t.id, [index, index])[1] = index
            ident = self.identities[t.id]
            events.append(
                TrackEvent(index, stamp, t.id, ident.name, ident.score, _box(t.box), ident.status, t.id in changed)
            )
        return FrameResult(index, stamp, image, events, detected)

    def _detect(self, index: int, image: np.ndarray) -> set[int]:
        """Detect, associate, embed the faces worth it and update the labels; returns tracks whose label changed."""
        s = self.identifier.settings
        pipeline = self.identifier.verifier.pipeline
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        scale = self.scale
        small = rgb if scale == 1.0 else cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        t0 = time.perf_counter()
        faces = [Face(f.box / scale, f.score, f.landmarks / scale) for f in self.detector.detect_one(small)]
        t1 = time.perf_counter()
        self.busy["detect"] += t1 - t0
        self.detections += 1
        assoc = self.tracker.associate(faces, index)
        for t in assoc.started:
            self.identities[t.id] = TrackIdentity(s)
        h, w = rgb.shape[:2]
        chosen = [(t, f) for t, f in assoc.matched if visible_fraction(f.box, w, h) >= 0.98]
        crops = pipeline.align(rgb, [f for _, f in chosen])
        wanted = []
        for (t, f), crop in zip(chosen, crops):
            q = face_quality(crop, f.landmarks) * f.score
            if self.identities[t.id].wants(q):
                wanted.append((t.id, q, crop))
        changed: set[int] = set()
        if wanted:
            vectors = pipeline.embedder.embed(np.stack([c for _, _, c in wanted]))
            self.embeddings += len(wanted)
            for (tid, q, _), v in zip(wanted, vectors):
                self.identities[tid].add(q, v)
            ids = [tid for tid, _, _ in wanted]
            means = np.stack([self.identities[tid].mean() for tid in ids])
            point = self.identifier.point
            decisions = self.identifier.verifier.identify_embeddings(self.identifier.gallery, means, point)
            for tid, (name, score, _) in zip(ids, decisions):
                if self.identities[tid].decide(name, score, point):
                    changed.add(tid)
        self.busy["identify"] += time.perf_counter() - t1
        pending = any(self.identities[t.id].status == "pending" for t in self.tracker.tracks)
        self.schedule.detected(not (assoc.started or assoc.ended or assoc.missed or pending))
        return changed

    def summary(self) -> VideoSummary:
        point = self.identifier.point
        tracks = []
        for tid, (first, last) in sorted(self.spans.items()):
            ident = self.identities[tid]
            tracks.append(TrackSummary(tid, ident.name, ident.status, ident.score, first, last, len(ident.samples)))
        return VideoSummary(
            source=self.source.label, frames=self.frames, fps=self.frames / self._seconds if self._seconds > 0 else 0.0,
            dropped=self.source.dropped, seconds=self._seconds, source_fps=self.source.fps,
            detections=self.detections, embeddings=self.embeddings, busy=dict(self.busy), ended=self.ended,
            threshold=point.threshold, far=point.far, fpir=point.fpir, tracks=tracks,
        )


# -- output ----------------------------------------------------------------------------------------------------

_COLOURS = {"known": (60, 200, 60), "unknown": (40, 40, 230), "pending": (0, 200, 255)}


def draw_events(image: np.ndarray, events: list[TrackEvent]) -> np.ndarray:
    """The frame with each track's box, label and score drawn on it (a copy)."""
    out = image.copy()
    for e in events:
        colour = _COLOURS[e.status]
        x1, y1, x2, y2 = (int(round(v)) for v in e.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, 2)
        label = {"known": e.name, "unknown": "unknown", "pending": "..."}[e.status]
        text = f"#{e.track} {label}" + ("" if e.score is None else f" {e.score:.2f}")
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else y2 + th + 4
        tx = max(0, min(x1, out.shape[1] - tw - 4))  # keep the label inside the frame
        cv2.rectangle(out, (tx, ty - th - base), (tx + tw + 4, ty + base), colour, cv2.FILLED)
        cv2.putText(out, text, (tx + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def open_video_writer(path: str | Path, fps: float, width: int, height: int) -> cv2.VideoWriter:
    """A writer for ``path``: MJPG in .avi, MPEG-4 part 2 (mp4v) otherwise; FaceverifyError if it cannot."""
    path = Path(path)
    fourcc = "MJPG" if path.suffix.lower() == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps or DEFAULT_FPS, (width, height))
    if not writer.isOpened():
        raise FaceverifyError(f"{path}: cannot write a video here (check the directory; use .mp4 or .avi)")
    return writer


class Display:
    """A window showing the annotated frames; 'q', Esc or closing it ends the run."""

    def __init__(self, title: str):
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise FaceverifyError(
                "--show needs a GUI, and this OpenCV has none (opencv-python-headless, or no display); "
                "use --output FILE to write the annotated video instead"
            ) from None

    def show(self, image: np.ndarray) -> bool:
        """Show a frame; False once the user asked to stop."""
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        return key not in (ord("q"), 27) and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        cv2.destroyWindow(self.title)


def identify_stream(
    verifier: FaceVerifier,
    gallery: Gallery,
    source: str,
    far: float | None = None,
    threshold: float | None = None,
    realtime: bool = False,
    show: bool = False,
    output: Path | None = None,
    as_json: bool = False,
    echo: Callable[[str], None] = print,
    fpir: float | None = None,
) -> VideoSummary:
    """``faceverify identify --source``: run, show and/or write the annotated video, and report on ``echo``
    either every event and the summary as JSON lines, or each label decision and a summary in words.
    Ctrl-C ends the run cleanly (the summary is still reported)."""
    identifier = VideoIdentifier(verifier, gallery, far, threshold, fpir=fpir)
    display = Display(f"faceverify: {source}") if show else None
    writer = None
    with identifier.run(source, realtime) as run:
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)

            def on_interrupt(signum: int, frame: object) -> None:
                run.stop("interrupted")
                signal.signal(signal.SIGINT, previous)  # a second Ctrl-C interrupts at once

            signal.signal(signal.SIGINT, on_interrupt)
        try:
            if output is not None:
                writer = open_video_writer(output, run.source.fps, run.source.width, run.source.height)
            for result in run:
                if as_json:
                    for e in result.events:
                        echo(json.dumps(e.to_dict()))
                else:
                    for e in result.events:
                        if e.changed:
                            label = e.name if e.name is not None else "unknown"
                            echo(f"{e.time:8.2f}s  frame {e.frame}  track {e.track}: {label} ({e.score:.4f})")
                if writer is not None or display is not None:
                    annotated = draw_events(result.image, result.events)
                    if writer is not None:
                        writer.write(annotated)
                    if display is not None and not display.show(annotated):
                        run.stop("window closed")
        except KeyboardInterrupt:
            run.ended = "interrupted"
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            if writer is not None:
                writer.release()
            if display is not None:
                display.close()
    summary = run.summary()
    if as_json:
        echo(json.dumps(dict(summary=summary.to_dict())))
    else:
        echo(f"{summary.frames} frames in {summary.seconds:.1f} s ({summary.fps:.1f} fps), {summary.dropped} dropped, "
             f"{summary.detections} detections, {summary.embeddings} embeddings; ended: {summary.ended}")
        for t in summary.tracks:
            label = t.name if t.name is not None else ("unknown" if t.status == "unknown" else "undecided")
            score = "-" if t.score is None else f"{t.score:.4f}"
            echo(f"track {t.id}: {label} (score {score}, frames {t.first_frame}-{t.last_frame})")
    return summary
