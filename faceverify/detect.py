"""Face detection: boxes, scores and 5 landmarks for every face in a batch of images, by one of three detectors:
YuNet (OpenCV's ``cv2.FaceDetectorYN`` on the shipped ONNX file; no torch), MTCNN (facenet-pytorch; torch) or
MTCNN's cascade on ONNX Runtime (``mtcnn-onnx``: the same weights exported, facenet-pytorch's faces; no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Sequence, Union

import numpy as np

from ._util import onnx_session, pick_device, sha256_bytes
from .align import similarity_transform
from .embed import onnx_runtime_installed
from .errors import ModelError
from .errors import require
from .modelcard import DetectorCard, detector_card_path
from .mtcnn.cascade import Cascade, Onet
from .yunet.onnx_file import free_image_sides

if TYPE_CHECKING:
    import torch

FaceChoice = Literal["largest", "center", "all"]
DetectorName = Literal["yunet", "yunet-onet", "mtcnn", "mtcnn-onnx"]
DETECTORS = ("yunet", "yunet-onet", "mtcnn", "mtcnn-onnx")
"""The detectors one can choose; ``mtcnn-onnx`` finds MTCNN's faces and landmarks, so its ``kind`` is ``mtcnn``."""
YuNetRuntime = Literal["opencv", "onnxruntime"]
YUNET_RUNTIMES = ("opencv", "onnxruntime")
YUNET_STRIDES = (8, 16, 32)
"""The feature strides of YuNet's outputs (``cls_8`` ... ``kps_32``)."""


@dataclass(frozen=True)
class Face:
    """One detected face: box (x1, y1, x2, y2), detector score and landmarks (5 x 2: left eye, right eye,
    nose, left and right mouth corner as seen in the image), all in pixel coordinates of the source image."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return float(max(x2 - x1, 0) * max(y2 - y1, 0))


class MtcnnOutputs:
    """What both MTCNN runtimes share: faces come from batches, and landmarks are MTCNN's own."""

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        raise NotImplementedError

    def detect_one(self, image: np.ndarray) -> list[Face]:
        """Faces in one RGB image."""
        return self.detect([image])[0]

    def template_for(self, template: np.ndarray) -> np.ndarray:
        """The alignment template for this detector's landmarks: the card's own (cards are fitted to MTCNN)."""
        return template


class Detector(MtcnnOutputs):
    """MTCNN face detector (facenet-pytorch).

    ``min_face_size`` is in pixels; ``score_threshold`` drops faces the final stage is less sure of;
    ``stage_thresholds`` are MTCNN's three cascade thresholds.
    """

    kind: DetectorName = "mtcnn"

    def __init__(
        self,
        device: str | torch.device | None = None,
        min_face_size: int = 20,
        score_threshold: float = 0.9,
        stage_thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
    ):
        require("train", MTCNN_ON_TORCH)
        from facenet_pytorch import MTCNN

        self.device = pick_device(device)
        self.min_face_size = min_face_size
        self.score_threshold = score_threshold
        self._mtcnn = MTCNN(
            min_face_size=min_face_size,
            thresholds=list(stage_thresholds),
            factor=factor,
            keep_all=True,
            post_process=False,
            device=self.device,
        ).eval()

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Detect faces in H x W x 3 uint8 RGB images; images of equal size are run as one batch."""
        results: list[list[Face]] = [[] for _ in images]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, img in enumerate(images):
            if min(img.shape[:2]) >= self.min_face_size:  # smaller images cannot hold a face
                groups.setdefault(img.shape, []).append(i)
        import torch

        for indices in groups.values():
            batch = np.stack([images[i] for i in indices])
            with torch.inference_mode():
                boxes, probs, points = self._mtcnn.detect(batch, landmarks=True)
            for slot, i in enumerate(indices):
                if boxes[slot] is None:
                    continue
                faces = [
                    Face(box=np.asarray(b, np.float32), score=float(p), landmarks=np.asarray(lm, np.float32))
                    for b, p, lm in zip(boxes[slot], probs[slot], points[slot])
                    if p is not None and float(p) >= self.score_threshold
                ]
                results[i] = faces
        return results

    def like(self, min_face_size: int, factor: float) -> "Detector":
        """A detector like this one (device, score threshold) with its own smallest face and pyramid factor."""
        return Detector(self.device, min_face_size=min_face_size, score_threshold=self.score_threshold, factor=factor)


class YuNetDetector:
    """YuNet on OpenCV's ``cv2.FaceDetectorYN``, from the shipped ONNX file checked against its card's sha256.

    ``min_face_size`` drops faces whose box is smaller (longer side, pixels); ``score_threshold`` defaults to
    the card's; images whose longer side exceeds the card's ``max_side`` are shrunk to it before detection.
    ``runtime`` ``onnxruntime`` (the default where it is installed) runs the same network on ONNX Runtime and
    decodes its outputs as OpenCV does (the same faces to about 1e-4 px; about 1.8x faster per 640x480 frame at one
    thread, see BENCHMARKS.md); ``opencv`` runs it on OpenCV's DNN module.
    """

    kind: DetectorName = "yunet"

    def __init__(self, min_face_size: int = 20, score_threshold: float | None = None, threads: int | None = None,
                 runtime: YuNetRuntime | None = None):
        import cv2

        runtime = runtime or ("onnxruntime" if onnx_runtime_installed() else "opencv")
        if runtime not in YUNET_RUNTIMES:
            raise ModelError(f"unknown YuNet runtime {runtime!r} ({' or '.join(YUNET_RUNTIMES)})")
        self.card, (model,) = detector_files("yunet", "YuNet is not installed (run tools/import_yunet.py, or use "
                                             "--detector mtcnn)")
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # not its one-time backend notice
        if threads:
            cv2.setNumThreads(threads)
        self.min_face_size = min_face_size
        self.score_threshold = self.card.score_threshold if score_threshold is None else score_threshold
        self.threads, self.runtime = threads, runtime
        self._cv2 = cv2
        if runtime == "onnxruntime":
            if not onnx_runtime_installed():
                raise ModelError("YuNet on onnxruntime needs onnxruntime (pip install onnxruntime)")
            self._session = onnx_session(free_image_sides(model), threads)
            self._outputs = [f"{part}_{stride}" for part in ("cls", "obj", "bbox", "kps") for stride in YUNET_STRIDES]
        else:
            self._model = np.frombuffer(model, np.uint8)
            self._net = cv2.FaceDetectorYN.create("onnx", self._model, np.zeros(0, np.uint8), (320, 320),
                                                  self.score_threshold, self.card.nms_threshold, 5000)
        self.device = "cpu"

    def detect_one(self, image: np.ndarray) -> list[Face]:
        """Faces in one H x W x 3 uint8 RGB image."""
        h, w = image.shape[:2]
        if min(h, w) < self.min_face_size:
            return []
        scale = min(1.0, self.card.max_side / max(h, w))
        bgr = self._cv2.cvtColor(image, self._cv2.COLOR_RGB2BGR)
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            bgr = self._cv2.resize(bgr, size, interpolation=self._cv2.INTER_AREA)
            sx, sy = w / size[0], h / size[1]
        else:
            sx = sy = 1.0
        if self.runtime == "onnxruntime":
            rows = self._run_onnx(bgr)
        else:
            self._net.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, rows = self._net.detect(bgr)
        faces = []
        for row in [] if rows is None else rows:
            x, y, bw, bh = (float(v) for v in row[:4])
            box = np.array([x * sx, y * sy, (x + bw) * sx, (y + bh) * sy], np.float32)
            if max(box[2] - box[0], box[3] - box[1]) < self.min_face_size or row[14] < self.score_threshold:
                continue
            landmarks = (row[4:14].reshape(5, 2) * np.array([sx, sy])).astype(np.float32)
            faces.append(Face(box=box, score=float(row[14]), landmarks=landmarks))
        return faces

    def _run_onnx(self, bgr: np.ndarray) -> np.ndarray | None:
        """What ``cv2.FaceDetectorYN.detect`` returns for ``bgr`` (N x 15 rows: x, y, w, h, 5 landmarks, score),
        by ONNX Runtime and OpenCV's decoding in numpy: the image zero-padded to multiples of 32, per stride
        score sqrt(clip(cls) * clip(obj)) kept at the threshold, centre and landmarks offset from the cell and
        size exp(.) in strides, then OpenCV's NMS on integer boxes."""
        h, w = bgr.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        blob = np.zeros((1, 3, ph, pw), np.float32)
        blob[0, :, :h, :w] = bgr.transpose(2, 0, 1)
        out = dict(zip(self._outputs, self._session.run(self._outputs, {"input": blob})))
        rows = []
        for s in YUNET_STRIDES:
            score = np.sqrt(np.clip(out[f"cls_{s}"][0, :, 0], 0, 1) * np.clip(out[f"obj_{s}"][0, :, 0], 0, 1))
            cells = np.flatnonzero(score >= self.score_threshold)
            if not len(cells):
                continue
            r, c = (cells // (pw // s)).astype(np.float32), (cells % (pw // s)).astype(np.float32)
            b, k = out[f"bbox_{s}"][0, cells], out[f"kps_{s}"][0, cells].reshape(-1, 5, 2)
            bw, bh = np.exp(b[:, 2]) * s, np.exp(b[:, 3]) * s
            x, y = (c + b[:, 0]) * s - bw / 2, (r + b[:, 1]) * s - bh / 2
            points = ((k + np.stack([c, r], 1)[:, None]) * s).reshape(-1, 10)
            rows.append(np.column_stack([x, y, bw, bh, points, score[cells]]).astype(np.float32))
        if not rows:
            return None
        found = np.concatenate(rows)
        if len(found) > 1:
            boxes = [tuple(int(v) for v in row[:4]) for row in found]
            keep = self._cv2.dnn.NMSBoxes(boxes, found[:, 14].tolist(), self.score_threshold,
                                          self.card.nms_threshold, top_k=5000)
            found = found[np.asarray(keep, int).reshape(-1)]
        return found

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces in each RGB image (one at a time: YuNet is fast enough that batching buys little)."""
        return [self.detect_one(img) for img in images]

    def template_for(self, template: np.ndarray) -> np.ndarray:
        """Where YuNet's landmarks should land for the crop that MTCNN's landmarks give on ``template``: YuNet's
        mean shape moved by the similarity that takes MTCNN's mean shape onto the template (the card's
        ``mean_shapes``; the template itself when it has none)."""
        return _moved_template(self.card, template)

    def like(self, min_face_size: int, factor: float) -> "YuNetDetector":
        """A detector like this one (score threshold) with its own smallest face; ``factor`` (MTCNN's pyramid
        step) does not apply to YuNet and is ignored."""
        del factor
        return YuNetDetector(min_face_size, self.score_threshold, self.threads, self.runtime)


class YuNetOnetDetector(YuNetDetector):
    """YuNet's faces with MTCNN's landmarks: each YuNet box goes through MTCNN's last stage (ONet, on ONNX Runtime)
    to place the five points, so the card's own template applies (cards are fitted to MTCNN's landmarks). YuNet
    finds the faces (its recall on turned heads and small faces), ONet places the points (YuNet's own move more from
    one photo of a person to the next; BENCHMARKS.md "Front ends: YuNet's faces, MTCNN's landmarks")."""

    kind: DetectorName = "yunet-onet"

    def __init__(self, min_face_size: int = 20, score_threshold: float | None = None, threads: int | None = None,
                 runtime: YuNetRuntime | None = None):
        super().__init__(min_face_size, score_threshold, threads, runtime)
        _, stages = detector_files("mtcnn", "MTCNN's ONNX export is not installed (run tools/export_mtcnn.py, or use "
                                   "--detector yunet)")
        self._onet = Onet(stages[-1], threads)  # the cascade's last stage: only it runs here

    def detect_one(self, image: np.ndarray) -> list[Face]:
        faces = super().detect_one(image)
        if not faces:
            return faces
        points, _ = self._onet.place_landmarks(image, np.stack([f.box for f in faces]))
        return [Face(box=f.box, score=f.score, landmarks=lm) for f, lm in zip(faces, points)]

    def template_for(self, template: np.ndarray) -> np.ndarray:
        """The card's own template: the landmarks are MTCNN's."""
        return template

    def like(self, min_face_size: int, factor: float) -> "YuNetOnetDetector":
        del factor
        return YuNetOnetDetector(min_face_size, self.score_threshold, self.threads, self.runtime)


class OnnxMtcnnDetector(MtcnnOutputs):
    """MTCNN's cascade on ONNX Runtime (:mod:`faceverify.mtcnn`) from the stages named by ``detectors/mtcnn.json``,
    each checked against its sha256: facenet-pytorch's faces, boxes, scores and landmarks, without torch. The
    parameters are :class:`Detector`'s; ``threads`` caps ONNX Runtime's threads."""

    kind: DetectorName = "mtcnn"
    device = "cpu"

    def __init__(
        self, min_face_size: int = 20, score_threshold: float = 0.9,
        stage_thresholds: Sequence[float] = (0.6, 0.7, 0.7), factor: float = 0.709, threads: int | None = None,
    ):
        self.card, models = detector_files("mtcnn", "MTCNN's ONNX export is not installed (run "
                                           "tools/export_mtcnn.py, or use --detector mtcnn)")
        try:
            self._cascade = Cascade(models, min_face_size, stage_thresholds, factor, threads)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for malformed graphs
            raise ModelError(f"mtcnn-onnx: ONNX Runtime cannot load a stage ({str(exc).splitlines()[0][:160]})") from None
        self.min_face_size = min_face_size
        self.score_threshold = score_threshold
        self.threads = threads

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces in H x W x 3 uint8 RGB images, all run together (images of one size share PNet's batches)."""
        results: list[list[Face]] = [[] for _ in images]
        able = [i for i, img in enumerate(images) if min(img.shape[:2]) >= self.min_face_size]
        for i, found in zip(able, self._cascade.detect([images[i] for i in able])):
            results[i] = [Face(box=b, score=float(p), landmarks=lm)
                          for b, p, lm in zip(found.boxes, found.scores, found.landmarks) if p >= self.score_threshold]
        return results

    def like(self, min_face_size: int, factor: float) -> "OnnxMtcnnDetector":
        """A detector like this one (score threshold, threads) with its own smallest face and pyramid factor."""
        return OnnxMtcnnDetector(min_face_size, self.score_threshold, factor=factor, threads=self.threads)


AnyDetector = Union[Detector, YuNetDetector, YuNetOnetDetector, OnnxMtcnnDetector]


MTCNN_ON_TORCH = "the mtcnn detector (facenet-pytorch, on torch; mtcnn-onnx is the same cascade without torch)"


def detector_files(name: str, missing: str) -> tuple[DetectorCard, list[bytes]]:
    """The card ``detectors/<name>.json`` and the bytes of each ONNX file it names, each checked against its
    sha256; ModelError (``missing`` when there is no card) otherwise."""
    path = detector_card_path(name)
    if not path.is_file():
        raise ModelError(f"{path}: {missing}")
    card = DetectorCard.load(path)
    models = []
    for file, sha256 in card.files().items():
        model_path = path.parent / file
        try:
            models.append(model_path.read_bytes())
        except OSError:
            raise ModelError(f"{model_path}: detector file named by {path.name} is missing") from None
        if sha256_bytes(models[-1]) != sha256:
            raise ModelError(f"{model_path}: detector does not match the sha256 recorded in {path.name}")
    return card, models


def _moved_template(card: DetectorCard, template: np.ndarray) -> np.ndarray:
    """``template`` moved for a detector whose card has ``mean_shapes`` (see YuNetDetector.template_for)."""
    shapes = card.mean_shapes
    if not shapes:
        return template
    m = similarity_transform(np.asarray(shapes["mtcnn"]), template)
    return np.asarray(shapes["own"], np.float64) @ m[:, :2].T + m[:, 2]


def landmark_template(detector: str, template: np.ndarray) -> np.ndarray:
    """The alignment template for landmarks found by ``detector`` (a kind in DETECTORS) that is the card's
    ``template`` for MTCNN's: what re-aligns a kept face whatever detector the pipeline now uses."""
    if detector in ("mtcnn", "mtcnn-onnx", "yunet-onet"):
        return np.asarray(template, np.float64)
    if detector == "yunet":
        path = detector_card_path("yunet")
        if not path.is_file():
            raise ModelError(f"{path}: YuNet is not installed, and a kept face's landmarks are YuNet's")
        return _moved_template(DetectorCard.load(path), np.asarray(template, np.float64))
    raise ModelError(f"unknown detector {detector!r} ({' or '.join(DETECTORS)})")


def alignment_of(detector: str) -> str:
    """What a card records of how faces found by ``detector`` are aligned (see :func:`landmark_template`)."""
    moved = detector == "yunet"
    return "the card's template" + (" moved by YuNet's mean shapes (detectors/yunet.json)" if moved else "")


def yunet_installed() -> bool:
    return detector_card_path("yunet").is_file()


def mtcnn_onnx_installed() -> bool:
    """MTCNN's ONNX cascade can run: its card is shipped and ONNX Runtime is installed."""
    return detector_card_path("mtcnn").is_file() and onnx_runtime_installed()


def choose_detector(detector: str | None = None, device: str | None = None) -> DetectorName:
    """``detector`` when given; else on CPU YuNet's faces with MTCNN's landmarks (``yunet-onet``) when YuNet,
    MTCNN's ONNX stages and ONNX Runtime are installed, YuNet alone when only it is; MTCNN otherwise (and on CUDA).
    MTCNN's whole ONNX cascade (``mtcnn-onnx``) is only used when asked for (and by video)."""
    if detector is None:
        on_cpu = device is None or str(device) == "cpu"
        if not on_cpu or not yunet_installed():
            return "mtcnn"
        return "yunet-onet" if mtcnn_onnx_installed() else "yunet"
    if detector not in DETECTORS:
        raise ModelError(f"unknown detector {detector!r} ({' or '.join(DETECTORS)})")
    return detector  # type: ignore[return-value]


def make_detector(
    detector: str | None = None, device: str | torch.device | None = None, min_face_size: int = 20,
    score_threshold: float | None = None, threads: int | None = None, yunet_runtime: YuNetRuntime | None = None,
) -> AnyDetector:
    """The chosen detector (see :func:`choose_detector`); ``score_threshold`` None means the detector's own
    default (MTCNN 0.9, YuNet its card's); ``threads`` caps OpenCV's threads (YuNet), ONNX Runtime's (mtcnn-onnx)
    or torch's (MTCNN); ``yunet_runtime`` runs YuNet on ONNX Runtime (the default where installed) or OpenCV."""
    chosen = choose_detector(detector, None if device is None else str(device))
    if chosen == "yunet":
        return YuNetDetector(min_face_size, score_threshold, threads, yunet_runtime)
    if chosen == "yunet-onet":
        return YuNetOnetDetector(min_face_size, score_threshold, threads, yunet_runtime)
    if chosen == "mtcnn-onnx":
        if device is not None and str(device) != "cpu":
            raise ModelError(f"the mtcnn-onnx detector runs on cpu, not {device} (use --detector mtcnn)")
        if not onnx_runtime_installed():
            raise ModelError("the mtcnn-onnx detector needs onnxruntime (pip install onnxruntime), or use --detector mtcnn")
        return OnnxMtcnnDetector(min_face_size, 0.9 if score_threshold is None else score_threshold, threads=threads)
    require("train", MTCNN_ON_TORCH)
    if threads:
        import torch

        torch.set_num_threads(threads)
    return Detector(device, min_face_size=min_face_size, score_threshold=0.9 if score_threshold is None else score_threshold)


def select_faces(faces: list[Face], image_shape: tuple[int, ...], choice: FaceChoice = "largest") -> list[Face]:
    """Which faces count: the largest, the one nearest the image centre, or all (largest first)."""
    if not faces:
        return []
    if choice == "all":
        return sorted(faces, key=lambda f: -f.area)
    if choice == "largest":
        return [max(faces, key=lambda f: f.area)]
    if choice == "center":
        h, w = image_shape[:2]
        centre = np.array([w / 2, h / 2])

        def distance(f: Face) -> float:
            x1, y1, x2, y2 = f.box
            return float(np.linalg.norm(np.array([(x1 + x2) / 2, (y1 + y2) / 2]) - centre))

        return [min(faces, key=distance)]
    raise ValueError(f"unknown face choice {choice!r} (largest, center or all)")
