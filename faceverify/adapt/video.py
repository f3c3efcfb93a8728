"""Faces from video for an adaptation: the tracker follows every face through the video with its identity checks
(faceverify.video, no gallery: nobody is named), detecting every ``min_interval`` frames, and each face that
passes its track's checks (:class:`faceverify.video.CheckedFace`) is written as a kept-face crop with margin
into a folder of its own track. A track is one person as far as those checks can tell (a face that stops
matching its track or resembles another track more ends it; a cut ends every track; faces over faces are left
out), so the faces of one track folder are the same-track positives of :class:`GroupBatches`.

The faces are written once per video (by its resolved path, size and modification time) under the user cache
dir; later runs reuse them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2

from .._util import write_atomic
from ..align import face_crop
from ..api import FaceVerifier
from ..errors import BadInputError
from ..train.prepare import keyed_cache_dir
from ..video import VideoIdentifier, VideoSettings

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"})
"""Files under ``--from`` read as video."""

DONE = "tracks.json"
"""Written last into a video's face folder (the folder is complete): per track folder, the frame and box in the
video of each face it holds."""


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def video_face_folder(video: Path) -> Path:
    """Where the track faces of ``video`` are kept: one folder per video file as it is now."""
    stat = video.stat()
    return keyed_cache_dir("video-faces", [str(video.resolve()), stat.st_size, stat.st_mtime_ns])


def track_faces(verifier: FaceVerifier, video: Path) -> list[Path]:
    """The track folders of ``video`` (``t<track id>/<frame>.jpg``, tracks with at least one checked face),
    written when missing; BadInputError when the video cannot be read."""
    folder = video_face_folder(video)
    if not (folder / DONE).exists():
        write_track_faces(verifier, video, folder)
    tracks = json.loads((folder / DONE).read_text())["tracks"]
    return [folder / name for name in sorted(tracks)]


def write_track_faces(verifier: FaceVerifier, video: Path, folder: Path) -> dict[str, list]:
    """Run the tracker over ``video`` and write every checked face of every track into ``folder``; returns
    (and writes into ``DONE``) each track folder's faces as [frame, box] in the video."""
    if not video.is_file():
        raise BadInputError(video, "no such file")
    shutil.rmtree(folder, ignore_errors=True)  # a run cut short: start over
    tracks: dict[str, list] = {}
    detector = verifier.pipeline.video_detector
    settings = VideoSettings()
    settings.max_interval = settings.min_interval  # detect (and check) as often as the tracker ever does
    with VideoIdentifier(verifier, None, settings=settings).run(str(video)) as run:
        for result in run:
            if not result.checked:
                continue
            rgb = cv2.cvtColor(result.image, cv2.COLOR_BGR2RGB)
            for face in result.checked:
                name = f"t{face.track:05d}"
                crop = face_crop(rgb, face.landmarks, detector)
                target = folder / name / f"{result.frame:06d}.jpg"
                target.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(target, crop.image)
                tracks.setdefault(name, []).append([result.frame, face.box])
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / DONE, json.dumps(dict(video=str(video.resolve()), tracks=tracks)).encode())
    return tracks
