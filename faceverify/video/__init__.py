"""Identification in video: a camera, a file or a stream, in real time on a CPU.

``source`` reads frames; ``tracking`` follows faces between detections and checks their continuity; ``scene``
notices cuts and jumps in time; ``identity`` keeps each track's embeddings, template and label; ``run`` is the
loop (``VideoIdentifier(verifier, gallery).run(source)`` is the API); ``render`` draws; ``stream`` is what
``faceverify identify --source`` runs (``identify_stream``).
"""

from .render import Display, draw_events, open_video_writer
from .results import (CheckedFace, EndReason, FrameResult, Status, TrackEnd, TrackEvent, TrackSummary,
                      VideoSummary)
from .run import VideoIdentifier, VideoRun
from .settings import VideoSettings
from .source import DEFAULT_FPS, FrameSource
from .stream import identify_stream

__all__ = [
    "CheckedFace", "DEFAULT_FPS", "Display", "EndReason", "FrameResult", "FrameSource", "Status", "TrackEnd",
    "TrackEvent", "TrackSummary", "VideoIdentifier", "VideoRun", "VideoSettings", "VideoSummary", "draw_events",
    "identify_stream", "open_video_writer",
]
