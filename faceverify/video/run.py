"""The video loop: track faces between detections, check every track's identity, name tracks against a gallery.

Faces are detected every few frames on a downscaled copy (at once when anything looks wrong), followed in
between by optical flow, and assigned to tracks by an optimal assignment. A track's identity is checked, not
assumed: every detected face is embedded and compared with the track's own template, and a face that no longer
matches ends the track; a sudden change under a box, lost flow or two tracks on one face withhold the label until
that check; a scene change or a jump in time ends every track. No label is ever carried across such a break.
When the pipeline judges liveness, every checked face of a track is judged and the track is named only while its
pooled liveness is live.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Iterator

import cv2
import numpy as np

from ..api import FaceVerifier
from ..decision import operating_point
from ..detect import Face
from ..gallery import Gallery
from ..liveness import Liveness
from ..quality import face_quality
from .identity import TrackIdentity
from .results import (EndReason, FrameResult, TrackEnd, TrackEvent, CheckedFace, TrackSummary, VideoSummary,
                      box_list)
from .scene import SceneWatch
from .settings import VideoSettings
from .source import FrameSource
from .tracking import DetectionSchedule, Track, Tracker, iou_matrix, visible_fraction


class VideoIdentifier:
    """Names the people in a video against a gallery, one checked label per tracked face; without a gallery,
    tracks only (every identity check made, nobody named: the faces of a track for `adapt`)."""

    def __init__(
        self,
        verifier: FaceVerifier,
        gallery: Gallery | None,
        far: float | None = None,
        threshold: float | None = None,
        settings: VideoSettings | None = None,
        fpir: float | None = None,
    ):
        self.verifier = verifier
        self.gallery = gallery
        self.settings = settings or VideoSettings()
        # frames go through the pipeline's video detector: decide by the card's calibration for it
        self.card, self.calibrated_front_end = verifier.pipeline.card_for(verifier.pipeline.video_detector)
        card = self.card
        if gallery is None:
            self.point = verifier.operating_point(far, threshold, card=card)
        else:
            gallery.require_entries()
            # a track is judged on up to max_samples samples: as many looks at one person for the FPIR bound
            self.point = verifier.identification_point(gallery, far, threshold, fpir, looks=self.settings.max_samples,
                                                       match=self.settings.match, card=card)
            gallery.search(np.zeros((1, card.embedding_size), np.float32))  # the index, before frame one
        self.recheck = operating_point(card, far=self.settings.recheck_far).threshold
        # the margin in decades of FAR: the similarity between the card's 1e-2 and 1e-3 points
        self.margin = self.settings.margin * (card.threshold_for(1e-3) - card.threshold_for(1e-2))

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
        self.pipeline = identifier.verifier.pipeline
        width = s.yunet_width if self.pipeline.video_detector in ("yunet", "yunet-onet") else s.detect_width
        self.scale = min(1.0, width / source.width)
        self.detector = self.pipeline.frame_detector(max(12, round(s.min_face * self.scale)), s.factor)
        self.tracker = Tracker(iou_threshold=s.iou_threshold, continuity=s.continuity)
        self.schedule = DetectionSchedule(s.min_interval, s.max_interval)
        self.scene = SceneWatch(s.cut_correlation, s.cut_brightness, s.max_gap)
        self.identities: dict[int, TrackIdentity] = {}
        self.checked: list[CheckedFace] = []  # of the current frame
        self.spans: dict[int, list[int]] = {}
        self.endings: dict[int, EndReason] = {}
        self.frames = self.detections = self.embeddings = self.scene_changes = self.breaks = 0
        self.busy = dict(track=0.0, detect=0.0, identify=0.0)
        self.ended = "not started"
        self._stop = threading.Event()
        self._stop_reason = "stopped"
        self._seconds = 0.0
        self._last = (0, 0.0)

    def stop(self, reason: str = "stopped") -> None:
        """End the run after the current frame; ``reason`` becomes the summary's ``ended``."""
        self._stop_reason = reason
        self._stop.set()

    def __enter__(self) -> "VideoRun":
        return self

    def __exit__(self, *exc: object) -> None:
        self.source.close()

    def __iter__(self) -> Iterator[FrameResult]:
        torch = sys.modules.get("torch")  # only a backend that already loaded torch has threads to set
        threads = torch.get_num_threads() if torch is not None else None
        if torch is not None and self.identifier.settings.torch_threads:
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
                self._last = (index, stamp)
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
            if torch is not None:
                torch.set_num_threads(threads)
            self.source.close()
            self._finish(list(self.tracker.tracks), "end of run", *self._last)

    def _step(
        self, index: int, stamp: float, image: np.ndarray, gray: np.ndarray, prev_gray: np.ndarray | None
    ) -> FrameResult:
        ended: list[TrackEnd] = []
        self.checked = []
        t0 = time.perf_counter()
        cut = self.scene.check(gray, stamp)
        if cut is not None:
            self.scene_changes += 1
            ended += self._finish(list(self.tracker.tracks), cut, index, stamp)
            self.schedule.request()
        elif prev_gray is not None:
            left, broken = self.tracker.propagate(prev_gray, gray, index)
            ended += self._finish(left, "left frame", index, stamp, forget=False)
            for t in broken:
                self.identities[t.id].checking = True
            if broken:
                self.schedule.request()
        self.busy["track"] += time.perf_counter() - t0
        detected = self.schedule.due()
        changed: set[int] = set()
        if detected:
            changed, more = self._detect(index, stamp, image, gray)
            ended += more
        events = []
        for t in self.tracker.tracks:
            self.spans.setdefault(t.id, [index, index])[1] = index
            ident = self.identities[t.id]
            status, name = ident.shown
            events.append(TrackEvent(index, stamp, t.id, name, ident.score, box_list(t.box), status, t.id in changed,
                                     self._liveness(ident)))
        return FrameResult(index, stamp, image, events, detected, ended, cut is not None, self.checked)

    def _finish(self, tracks: list[Track], reason: EndReason, index: int, stamp: float,
                forget: bool = True) -> list[TrackEnd]:
        """End ``tracks`` for ``reason`` (``forget``: remove them from the tracker too)."""
        out = []
        for t in tracks:
            ident = self.identities[t.id]
            self.endings[t.id] = reason
            status, name = ident.status, ident.name
            out.append(TrackEnd(index, stamp, t.id, reason, name, status))
        if forget:
            self.tracker.end(tracks)
        return out

    def _find(self, rgb: np.ndarray) -> tuple[list[Face], set[int], dict[int, np.ndarray], dict[int, float]]:
        """Detect on a downscaled copy of the RGB frame and align every face: (faces in frame pixels, those fully
        inside the frame (only they may become samples), aligned crops and quality by face index)."""
        small = rgb if self.scale == 1.0 else cv2.resize(rgb, None, fx=self.scale, fy=self.scale,
                                                         interpolation=cv2.INTER_AREA)
        t0 = time.perf_counter()
        faces = [Face(f.box / self.scale, f.score, f.landmarks / self.scale) for f in self.detector.detect_one(small)]
        self.busy["detect"] += time.perf_counter() - t0
        self.detections += 1
        h, w = rgb.shape[:2]
        full = {i for i, f in enumerate(faces) if visible_fraction(f.box, w, h) >= 0.98}
        crops = dict(enumerate(self.pipeline.align(rgb, faces))) if faces else {}
        quality = {i: face_quality(crop, faces[i].landmarks) * faces[i].score for i, crop in crops.items()}
        return faces, full, crops, quality

    def _detect(self, index: int, stamp: float, image: np.ndarray,
                gray: np.ndarray) -> tuple[set[int], list[TrackEnd]]:
        """Detect, embed every face, assign faces to tracks, end tracks whose face no longer matches them, and
        update the labels; returns (tracks whose label changed, tracks ended)."""
        s = self.identifier.settings
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        faces, full, crops, quality = self._find(rgb)
        t1 = time.perf_counter()
        vectors = self._embed(crops, list(crops) if s.recheck else [])  # every face checks its track
        similarity = self._similarity(len(faces), vectors)
        column = {t.id: j for j, t in enumerate(self.tracker.tracks)}  # of ``similarity``
        assoc = self.tracker.associate(faces, index, gray, similarity)
        if not s.recheck:  # only what the tracks keep as samples
            wanted = [fi for t, fi in assoc.matched if fi in full and self.identities[t.id].wants(quality[fi])]
            vectors = self._embed(crops, wanted + [fi for _, fi in assoc.started if fi in full])
        ended: list[TrackEnd] = []
        fresh: list[tuple[Track, int]] = list(assoc.started)
        verified: list[Track] = []
        crowded = _overlapping_faces(faces)
        for track, fi in assoc.matched:
            ident = self.identities[track.id]
            if fi in crowded:  # faces over faces (people crossing): neither the box nor the crop can be trusted
                ident.checking, track.continuous = True, False
                continue
            score = ident.similarity(vectors[fi]) if s.recheck and fi in vectors else None
            rival = _best_other(similarity, fi, column[track.id]) if track.id in column else -1.0
            if score is not None and (score < self.identifier.recheck or score < rival):
                self.breaks += 1
                ended += self._finish([track], "identity changed", index, stamp)
                fresh.append((self.tracker.start(faces[fi], index, gray), fi))
            elif score is not None or not ident.samples or not s.recheck:
                track.continuous, ident.checking = True, False
                if fi in vectors and fi in full:
                    if score is not None:
                        self._checked(track, faces[fi])
                    if ident.wants(quality[fi]):
                        ident.add(quality[fi], vectors[fi])
                if ident.samples:
                    verified.append(track)
        for track, fi in fresh:
            ident = self.identities[track.id] = TrackIdentity(s, self.identifier.margin)
            if fi in vectors and fi in full and fi not in crowded:
                self._checked(track, faces[fi])
                ident.add(quality[fi], vectors[fi])
                verified.append(track)
        self._judge(rgb)
        for track in assoc.missed:
            self.identities[track.id].checking = True
            track.continuous = False
            if track.misses > s.max_misses or not track.flow_ok:
                ended += self._finish([track], "lost", index, stamp)
        changed = self._decide(verified)
        self.busy["identify"] += time.perf_counter() - t1
        pending = any(self.identities[t.id].status == "pending" or self.identities[t.id].checking
                      for t in self.tracker.tracks)
        self.schedule.detected(not (assoc.started or ended or assoc.missed or pending))
        return changed, ended

    def _checked(self, track: Track, face: Face) -> None:
        """Report in this frame's result a fully visible, uncrowded face that is ``track``'s person as far as
        the checks tell: its first face, or one that matched the track's template."""
        self.checked.append(CheckedFace(track.id, box_list(face.box), face.landmarks.copy()))

    def _judge(self, rgb: np.ndarray) -> None:
        """With liveness judged, pool each checked face of this frame (large enough to judge) into its track."""
        checker = self.pipeline.liveness
        if checker is None:
            return
        faces = [Face(np.asarray(c.box, np.float32), 1.0, c.landmarks) for c in self.checked]
        for c, probabilities in zip(self.checked, checker.face_probabilities(rgb, faces)):
            if probabilities is not None:
                self.identities[c.track].judged(probabilities)

    def _liveness(self, ident: TrackIdentity) -> Liveness | None:
        """A track's pooled liveness (None when liveness is not judged)."""
        checker = self.pipeline.liveness
        return None if checker is None else ident.liveness(checker)

    def _embed(self, crops: dict[int, np.ndarray], which: list[int]) -> dict[int, np.ndarray]:
        """Embeddings of the aligned crops of the faces ``which``, by face index."""
        if not which:
            return {}
        self.embeddings += len(which)
        return dict(zip(which, self.pipeline.embed_crops(np.stack([crops[i] for i in which]))))

    def _similarity(self, n_faces: int, vectors: dict[int, np.ndarray]) -> np.ndarray | None:
        """faces x tracks cosine of each embedded face with each track's template (NaN where either is unknown)."""
        tracks = self.tracker.tracks
        if not vectors or not tracks:
            return None
        out = np.full((n_faces, len(tracks)), np.nan)
        for ti, t in enumerate(tracks):
            ident = self.identities[t.id]
            if ident.samples:
                template = ident.mean()
                for fi, v in vectors.items():
                    out[fi, ti] = float(template @ v)
        return out

    def _decide(self, tracks: list[Track]) -> set[int]:
        """Name (or call unknown) the given tracks from their templates; returns those whose label changed."""
        ready = [t.id for t in tracks if self.identities[t.id].samples and not self.identities[t.id].checking]
        if not ready or self.identifier.gallery is None:
            return set()
        changed: set[int] = set()
        if self.pipeline.liveness is not None:  # a name only for a track judged live, over enough of its faces
            enough = [tid for tid in ready if self.identities[tid].status != "spoof"
                      and self.identities[tid].live_judged >= self.identifier.settings.live_samples]
            live = {tid for tid in enough if self._liveness(self.identities[tid]).live}
            changed = {tid for tid in enough if tid not in live and self.identities[tid].spoofed()}
            ready = [tid for tid in ready if tid in live]
            if not ready:
                return changed
        point, settings = self.identifier.point, self.identifier.settings
        verifier, gallery = self.identifier.verifier, self.identifier.gallery
        means = np.stack([self.identities[tid].mean() for tid in ready])
        decisions = verifier.identify_embeddings(gallery, means, point, settings.match)
        if settings.agree:
            other = "best" if settings.match == "template" else "template"
            firsts = [nearest for _, _, nearest in verifier.identify_embeddings(gallery, means, point, other)]
        else:
            firsts = [nearest for _, _, nearest in decisions]
        # a name the two rankings do not agree on is not yet clear: no decision (an unknown needs no agreement)
        return changed | {tid for tid, (name, score, nearest), first in zip(ready, decisions, firsts)
                          if (name is None or nearest == first) and self.identities[tid].decide(name, score, point)}

    def summary(self) -> VideoSummary:
        point = self.identifier.point
        tracks = []
        for tid, (first, last) in sorted(self.spans.items()):
            ident = self.identities[tid]
            tracks.append(TrackSummary(tid, ident.name, ident.status, ident.score, first, last, len(ident.samples),
                                       self.endings.get(tid), self._liveness(ident)))
        return VideoSummary(
            source=self.source.label, frames=self.frames, fps=self.frames / self._seconds if self._seconds > 0 else 0.0,
            dropped=self.source.dropped, seconds=self._seconds, source_fps=self.source.fps,
            detections=self.detections, embeddings=self.embeddings, busy=dict(self.busy), ended=self.ended,
            threshold=point.threshold, far=point.far, fpir=point.fpir, scene_changes=self.scene_changes,
            breaks=self.breaks, tracks=tracks, calibrated_front_end=self.identifier.calibrated_front_end,
        )


def _best_other(similarity: np.ndarray | None, face: int, track: int) -> float:
    """The highest similarity of a face to any other track's template (-1 when none is known): a face that
    resembles another track more than its own is not its own track's person."""
    if similarity is None or similarity.shape[1] < 2:
        return -1.0
    others = np.delete(similarity[face], track)
    return float(np.nanmax(others)) if np.isfinite(others).any() else -1.0


CROWDED_IOU = 0.1
"""Detected faces overlapping another detected face by more than this are not trusted for identity."""


def _overlapping_faces(faces: list[Face]) -> set[int]:
    """Indices of faces whose boxes overlap another face's (one person passing in front of another)."""
    if len(faces) < 2:
        return set()
    overlap = iou_matrix(np.stack([f.box for f in faces]), np.stack([f.box for f in faces]))
    np.fill_diagonal(overlap, 0.0)
    return {int(i) for i in np.nonzero(overlap.max(axis=1) > CROWDED_IOU)[0]}
