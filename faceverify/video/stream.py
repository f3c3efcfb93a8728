"""``faceverify identify --source``: run a video, show and/or write it annotated, and report what happened."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Callable

from ..api import FaceVerifier
from ..gallery import Gallery
from ..liveness import Liveness
from .render import Display, draw_events, open_video_writer
from .results import FrameResult, VideoSummary
from .settings import VideoSettings
from .run import VideoIdentifier


_UNNAMED = {"unknown": "unknown", "spoof": "not live"}


def _live(liveness: Liveness | None, form: str = " [live {:.4f}]") -> str:
    """A track's pooled live probability in ``form``; nothing when liveness is not judged or nothing judged yet."""
    return "" if liveness is None or liveness.score is None else form.format(liveness.score)


def _report(result: FrameResult, as_json: bool, echo: Callable[[str], None]) -> None:
    """Echo one frame: every event and ending as JSON lines, or in words each label decided and each labelled
    track that ended (with why)."""
    if as_json:
        for e in result.events:
            echo(json.dumps(e.to_dict()))
        for end in result.ended:
            echo(json.dumps(end.to_dict()))
        return
    for e in result.events:
        if e.changed:
            label = e.name if e.name is not None else _UNNAMED.get(e.status, "unknown")
            score = "" if e.score is None else f" ({e.score:.4f})"  # a track judged not live is not compared
            echo(f"{e.time:8.2f}s  frame {e.frame}  track {e.track}: {label}{score}{_live(e.liveness)}")
    for end in result.ended:
        if end.status != "pending" or end.ended == "identity changed":
            label = end.name if end.name is not None else _UNNAMED.get(end.status, end.status)
            echo(f"{end.time:8.2f}s  frame {end.frame}  track {end.track} ({label}) ended: {end.ended}")


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
    settings: VideoSettings | None = None,
) -> VideoSummary:
    """``faceverify identify --source``: run, show and/or write the annotated video, and report on ``echo``
    either every event and the summary as JSON lines, or each label decision and a summary in words.
    Ctrl-C ends the run cleanly (the summary is still reported)."""
    identifier = VideoIdentifier(verifier, gallery, far, threshold, fpir=fpir, settings=settings)
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
                _report(result, as_json, echo)
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
            label = t.name if t.name is not None else _UNNAMED.get(t.status, "undecided")
            score = "-" if t.score is None else f"{t.score:.4f}"
            echo(f"track {t.id}: {label} (score {score}{_live(t.liveness, ', live {:.4f}')}, frames {t.first_frame}-"
                 f"{t.last_frame}, ended: {t.ended})")
    return summary
