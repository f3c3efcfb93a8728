"""The real clips of ``../shared/datasets/real-video`` (its README says who is where) and the reference photos
enrolled for them: what the real-footage tests and tools/bench_real_video.py share."""

from __future__ import annotations

import os
from pathlib import Path

from tools.common import REPO_ROOT

REAL_VIDEO_ENV = "FACEVERIFY_REAL_VIDEO"
SINGER = "Lin-Manuel Miranda"
STAGE, STREET = "hamilton/short_hamilton_clip.mp4", "street/covent_garden.mp4"
REFERENCES = {  # name -> reference photos (none of them a frame of the clips)
    SINGER: ["hamilton/lin-manuel-miranda.png"],
    "Alex Lacamoire": ["hamilton/alex-lacamoire.png", "hamilton/alex_lacamoire_img1.jpg"],
    "Barack Obama": ["hamilton/obama_ref_obama.jpg", "hamilton/obama_ref_obama2.jpg"],
    **{name: [f"street/{name}.jpg"] for name in ("angelina_jolie", "kate_siegel", "paul_rudd", "shea_whigham")},
}

ON_SCREEN = {  # name -> the frames of the stage clip where that person's face is seen (its README, by eye, widened)
    SINGER: [(0, 25), (80, 215)],
    "Alex Lacamoire": [(10, 85)],
    "Barack Obama": [(210, 274)],
}
"""Nobody enrolled is in the street clip: a name given there is always a wrong one."""


def wrong_name(clip: str, name: str, frame: int) -> bool:
    """Whether ``name`` given at ``frame`` of ``clip`` (STAGE or STREET) names someone who is not on screen then."""
    spans = ON_SCREEN.get(name, []) if clip == STAGE else []
    return not any(first <= frame <= last for first, last in spans)


def real_video_root() -> Path:
    """``$FACEVERIFY_REAL_VIDEO``, else a development checkout's ``../shared/datasets/real-video``."""
    return Path(os.environ.get(REAL_VIDEO_ENV) or REPO_ROOT.parent / "shared" / "datasets" / "real-video")
