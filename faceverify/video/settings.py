"""How a video run looks for faces, how sure it must be, and what ends a track."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class VideoSettings:
    """How hard to look and how sure to be.

    Detection: MTCNN on a copy at most ``detect_width`` pixels wide (YuNet: ``yunet_width``), for faces of
    ``min_face`` pixels (in the frame; at least 12 at the detection scale) and up, with pyramid ``factor``
    (MTCNN); every ``min_interval`` frames
    while tracks start, end, await a name or are being re-checked, doubling up to ``max_interval`` while all is
    stable.
    Identity: up to ``max_samples`` embeddings per track (its best-quality faces; at most ``max_embeddings``
    added in all, a new one only when ``improve`` times better than the worst kept). Decisions use the
    quality-weighted mean of the samples at least half as good as the best, once ``min_samples`` are in and one
    reaches ``good_quality`` (or ``max_samples`` are in); a label is given when ``confirm`` successive decisions
    agree, and changed only when ``confirm`` successive decisions clear the threshold by ``margin`` the other
    way; ``margin`` is in decades of false-accept rate, so that it means the same for every model (in similarity:
    ``margin`` times the distance between the card's thresholds at FAR 1e-2 and 1e-3; 0.25 is 0.005 for
    ``dlib-resnet-v1``, 0.019 for ``edgeface-xxs``).
    Safety: every detected, fully visible face of a track is embedded and compared with the track's own
    template; below the calibrated threshold at ``recheck_far`` the track ends ("identity changed") and the face
    starts a new, unnamed track (``recheck`` False turns this off: only the faces kept as samples are embedded,
    to measure what re-checking costs). Between detections a track's label is shown only while the content under its
    box stays continuous (grey-patch correlation with the previous frame of at least ``continuity``, the flow
    followed, no other track on the same face); otherwise it is re-checked at once. A frame whose downscaled
    grey image correlates with the previous one below ``cut_correlation``, or whose brightness jumps by a factor
    of ``cut_brightness``, is a scene change; so is a gap of more than ``max_gap`` seconds between frames: every
    track ends. A track unseen by ``max_misses`` successive detections ends.
    ``match``: what a track's mean is named against: every stored embedding (``best``, the default: on
    held-out generated videos templates named a stranger who resembled an enrolled person, see BENCHMARKS.md)
    or one template per identity (``template``); the open-set bound counts what is compared. ``agree``: a track
    is named only when both rankings (best stored embeddings and templates) put the same identity first: a
    degraded face can sit nearer another person's template than its own, and is then not named.
    ``live_samples``: with liveness judged (the pipeline's ``liveness``), a track is named only once this many
    of its checked faces were judged and their pooled (mean) live probability reaches ``live_probability`` (or
    the checker's threshold when one was given): live more probable than both kinds of attack together, not
    merely than each (the still rule); a pool judged not live makes the track ``spoof``, never named.
    ``torch_threads``: intra-op threads while running (1 is fastest for these small batches on a busy CPU).
    """

    detect_width: int = 320
    yunet_width: int = 640
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
    margin: float = 0.25
    match: str = "best"
    agree: bool = True
    recheck: bool = True
    recheck_far: float = 1e-3
    live_samples: int = 3
    live_probability: float = 0.5
    continuity: float = 0.8
    cut_correlation: float = 0.5
    cut_brightness: float = 1.6
    max_gap: float = 1.0
    torch_threads: int | None = 1
