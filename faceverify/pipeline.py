"""The one front end every path uses: image -> detect -> align -> embed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import warnings
from typing import Any, Iterable, Iterator, Literal, Sequence

import numpy as np

from .align import FaceCrop, align_face, center_crop, face_crop
from .detect import (AnyDetector, Detector, Face, FaceChoice, OnnxMtcnnDetector, alignment_of, landmark_template,
                     make_detector, mtcnn_onnx_installed, select_faces)
from .embed import AnyEmbedder, load_embedder
from .errors import BadInputError, NoFaceError
from .images import MAX_PIXELS, load_image_hashed
from .liveness import Liveness, LivenessChecker
from .modelcard import ModelCard, detector_kind
from .quality import FaceQuality, measure_face

Fallback = Literal["none", "center"]
_warned: set[tuple[str, str]] = set()


def warn_uncalibrated(card: ModelCard, detector: str) -> None:
    """One warning per process and (model, detector) whose thresholds were not calibrated through that detector."""
    key = (card.model_id, detector_kind(detector))
    if not card.thresholds or key in _warned:
        return
    _warned.add(key)
    measured = card.calibrated_detector
    on = f"the {measured} detector's faces" if measured else "a front end its card does not name"
    warnings.warn(f"model '{card.name}': thresholds were calibrated on {on}, not {key[1]}'s; the false-accept rates "
                  f"they promise may not hold (faceverify calibrate --detector {key[1]} calibrates it)", stacklevel=3)


@dataclass
class FaceEmbedding:
    """A face found in an image (``face`` is None for a centre-crop fallback), its embedding, when asked for the
    crop kept for re-alignment, its quality (None for a fallback) and, when the pipeline judges liveness, the
    verdict (a fallback is never live)."""

    face: Face | None
    embedding: np.ndarray
    crop: FaceCrop | None = None
    quality: FaceQuality | None = None
    liveness: Liveness | None = None

    @property
    def box(self) -> list[float] | None:
        return None if self.face is None else [round(float(v), 1) for v in self.face.box]


@dataclass
class ImageResult:
    """What the pipeline made of one image: its faces, or the error that stopped it, and the sha256 of the
    file's bytes as they were decoded (None when the file could not be read)."""

    path: str
    faces: list[FaceEmbedding]
    error: BadInputError | None = None
    sha256: str | None = None


class FacePipeline:
    """Detector + aligner + embedder configured from one model card.

    ``backend`` (torch or onnx) and ``detector`` (yunet or mtcnn) default to ONNX Runtime and YuNet on CPU when
    installed, torch and MTCNN otherwise (see embed.choose_backend, detect.choose_detector); ``threads`` caps
    the runtimes' threads; ``score_threshold`` None is the detector's own default. ``flip``: each face is
    embedded with its mirror image and the two averaged (twice the network's work; the cards are calibrated
    without it). ``liveness``: every chosen face is also judged live or not (:class:`LivenessChecker`).
    """

    def __init__(
        self,
        model: str | None = None,
        device: str | None = None,
        min_face_size: int = 20,
        score_threshold: float | None = None,
        max_pixels: int = MAX_PIXELS,
        embedder: AnyEmbedder | None = None,
        detector: AnyDetector | str | None = None,
        backend: str | None = None,
        threads: int | None = None,
        flip: bool = False,
        liveness: LivenessChecker | None = None,
    ):
        self.embedder = embedder or load_embedder(model, device, backend, threads)
        self.flip, self.threads, self.liveness = flip, threads, liveness
        chosen = detector is not None
        if detector is None or isinstance(detector, str):
            detector = make_detector(detector, self.embedder.device, min_face_size, score_threshold, threads)
        self.detector = detector
        self.video_detector = getattr(detector, "kind", "mtcnn") if chosen else "mtcnn"
        self.max_pixels = max_pixels
        template = np.asarray(self.embedder.card.template, np.float64)
        moved = getattr(self.detector, "template_for", None)  # a stand-in detector may not move it
        self.template = template if moved is None else moved(template)
        self.detector_kind: str = getattr(self.detector, "kind", "mtcnn")
        self._card, self.calibrated_front_end = self.embedder.card.for_detector(self.detector_kind)

    @property
    def card(self) -> ModelCard:
        """The model's card as used through this pipeline's detector (that detector's calibration when it has one)."""
        return self._card

    def decision_card(self) -> ModelCard:
        """:attr:`card`, for reading a threshold: warned about once when its thresholds were calibrated on another
        detector's faces (the warning waits for a decision: a pipeline only used for video never makes one)."""
        if not self.calibrated_front_end:
            warn_uncalibrated(self._card, self.detector_kind)
        return self._card

    def card_for(self, detector: str) -> tuple[ModelCard, bool]:
        """The model's card as used through ``detector`` (see ModelCard.for_detector), warned about once when its
        thresholds were calibrated on another detector's faces."""
        card, calibrated = self.embedder.card.for_detector(detector)
        if not calibrated:
            warn_uncalibrated(card, detector)
        return card, calibrated

    def front_end(self) -> dict[str, Any]:
        """What a card records of this front end: detector kind, its settings, alignment and runtime."""
        return dict(detector=detector_kind(self.detector_kind),
                    settings=dict(min_face_size=getattr(self.detector, "min_face_size", None),
                                  score_threshold=getattr(self.detector, "score_threshold", None)),
                    alignment=alignment_of(self.detector_kind), runtime=self.embedder.backend, flip=self.flip)

    @property
    def embedding_id(self) -> str:
        """What a stored embedding of this front end is: the card's model id, marked when faces are flip-fused
        (a gallery never mixes the two)."""
        return self.card.model_id + ("+flip" if self.flip else "")

    def align(self, image: np.ndarray, faces: list[Face]) -> np.ndarray:
        """Aligned crops (N x S x S x 3 uint8) for ``faces`` found in ``image``."""
        size = self.embedder.input_size
        crops = [align_face(image, f.landmarks, self.template, size) for f in faces]
        return np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)

    def template_for(self, detector: str) -> np.ndarray:
        """The alignment template for landmarks found by ``detector`` (this pipeline's own for its detector)."""
        if detector == self.detector_kind:
            return self.template
        return landmark_template(detector, np.asarray(self.card.template, np.float64))

    def embed_kept(self, crops: Sequence[FaceCrop]) -> np.ndarray:
        """Embeddings (N x D) of kept faces, each re-aligned from its crop's landmarks onto this model's template
        and embedded as :meth:`process_images` would; ValueError for a crop that does not decode."""
        size = self.embedder.input_size
        aligned = [align_face(c.pixels(), c.landmarks, self.template_for(c.detector), size) for c in crops]
        return self.embed_crops(np.stack(aligned)) if aligned else np.zeros((0, self.card.embedding_size), np.float32)

    def frame_detector(self, min_face_size: int, factor: float) -> AnyDetector:
        """A detector like this pipeline's (device; kind and score threshold when it is the same kind) with its own
        smallest face and pyramid factor (MTCNN only): what video uses on downscaled frames. Video uses MTCNN
        unless a detector was chosen explicitly: on 320-pixel detection copies YuNet's landmarks cost an enrolled
        person their name in tests/test_video.py, so YuNet is not yet the video default (see BENCHMARKS.md).
        On CPU that MTCNN is the ONNX cascade where it is installed (facenet-pytorch's faces, without torch)."""
        if getattr(self.detector, "kind", "mtcnn") == self.video_detector:
            return self.detector.like(min_face_size, factor)
        if str(self.embedder.device) == "cpu" and mtcnn_onnx_installed():
            return OnnxMtcnnDetector(min_face_size, factor=factor, threads=self.threads)
        return Detector(self.embedder.device, min_face_size=min_face_size, factor=factor)

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """L2-normalised embeddings (N x D float32) of crops made by :meth:`align` (with ``flip``: of each crop
        and its mirror, averaged and renormalised)."""
        if not self.flip or len(crops) == 0:
            return self.embedder.embed(crops)
        both = self.embedder.embed(np.concatenate([crops, crops[:, :, ::-1]]))
        fused = both[: len(crops)] + both[len(crops):]
        return (fused / np.linalg.norm(fused, axis=1, keepdims=True)).astype(np.float32)

    def process_images(
        self, images: list[np.ndarray], face: FaceChoice = "largest", fallback: Fallback = "none",
        keep_faces: bool = False,
    ) -> list[list[FaceEmbedding]]:
        """Embeddings of the chosen faces in each RGB image; with ``fallback='center'`` an image without a
        detected face gets one embedding of its centre crop (``face=None``) instead of none; ``keep_faces``
        adds each detected face's :func:`~faceverify.align.face_crop`. Each detected face's quality is measured
        (:func:`~faceverify.quality.measure_face`, among all the faces found in its image)."""
        detections = self.detector.detect(images)
        chosen: list[list[Face | None]] = []
        crops: list[np.ndarray] = []
        size = self.embedder.input_size
        for image, faces in zip(images, detections):
            picked: list[Face | None] = list(select_faces(faces, image.shape, face))
            if picked:
                crops.extend(self.align(image, picked))
            elif fallback == "center":
                picked = [None]
                crops.append(center_crop(image, size))
            chosen.append(picked)
        vectors = self.embed_crops(np.stack(crops)) if crops else np.zeros((0, 0), np.float32)
        out: list[list[FaceEmbedding]] = []
        k = 0
        for image, faces, picked in zip(images, detections, chosen):
            live = self.judge(image, picked)
            out.append([FaceEmbedding(f, vectors[k + j], self.keep(image, f) if keep_faces else None,
                                      None if f is None else measure_face(image, f, faces, self.detector_kind),
                                      live[j]) for j, f in enumerate(picked)])
            k += len(picked)
        return out

    def judge(self, image: np.ndarray, faces: Sequence[Face | None]) -> list[Liveness | None]:
        """Liveness of each face of an RGB image (None for all without a checker; a fallback is not live)."""
        if self.liveness is None:
            return [None] * len(faces)
        found = iter(self.liveness.judge(image, [f for f in faces if f is not None]))
        return [next(found) if f is not None else Liveness(False, None, reason="no face detected") for f in faces]

    def measure(self, image: np.ndarray, face: FaceChoice = "largest") -> list[tuple[Face, FaceQuality]]:
        """The chosen faces of one RGB image with their quality, as :meth:`process_images` finds and measures
        them, without embedding them."""
        faces = self.detector.detect([image])[0]
        return [(f, measure_face(image, f, faces, self.detector_kind)) for f in select_faces(faces, image.shape, face)]

    def keep(self, image: np.ndarray, face: Face | None) -> FaceCrop | None:
        """The crop kept of a face detected in ``image`` (none of a centre-crop fallback)."""
        return None if face is None else face_crop(image, face.landmarks, self.detector_kind)

    def process_paths(
        self,
        paths: Iterable[str | Path],
        face: FaceChoice = "largest",
        fallback: Fallback = "none",
        batch_size: int = 16,
        keep_faces: bool = False,
    ) -> Iterator[ImageResult]:
        """Run the pipeline over files in batches, reading each file once; bad files come back with ``error``
        set, never raised; ``keep_faces`` as in :meth:`process_images`."""
        batch: list[tuple[str, np.ndarray, str]] = []

        def flush() -> Iterator[ImageResult]:
            if batch:
                results = self.process_images([img for _, img, _ in batch], face, fallback, keep_faces)
                for (p, _, sha), faces in zip(batch, results):
                    yield ImageResult(p, faces, None if faces else NoFaceError(p), sha)
                batch.clear()

        for path in paths:
            try:
                batch.append((str(path), *load_image_hashed(path, self.max_pixels)))
            except BadInputError as exc:
                yield ImageResult(str(path), [], exc)
                continue
            if len(batch) >= batch_size:
                yield from flush()
        yield from flush()

    def embed_file(self, path: str | Path, face: FaceChoice = "largest") -> list[FaceEmbedding]:
        """Faces of one image file; raises BadInputError (NoFaceError when no face is found)."""
        result = next(self.process_paths([path], face))
        if result.error is not None:
            raise result.error
        return result.faces
