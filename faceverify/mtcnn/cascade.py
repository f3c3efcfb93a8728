"""MTCNN's cascade on ONNX Runtime: PNet over each image's pyramid (images of one size as one batch per level),
then every candidate box of every image through RNet as one batch, then ONet the same, with facenet-pytorch's
thresholds, regression, squaring and NMS (see :mod:`.boxes`), its area resampling (see :mod:`.crops`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .._util import onnx_session
from .boxes import level_size, nms, nms_min, pnet_boxes, pyramid_scales, regress, square, windows
from .crops import area_level, area_resize, integral

RNET_SIZE, ONET_SIZE = 24, 48
CHUNK_PIXELS = 1 << 17
"""Most input pixels (batch x height x width) per network run: larger runs outgrow the CPU's caches and were
3x slower per image on 50 LFW images at once."""
LEVEL_NMS, IMAGE_NMS = 0.5, 0.7
"""PNet's candidates are thinned at IoU 0.5 within a level, then 0.7 within the image; RNet's and ONet's at 0.7."""


@dataclass
class Candidates:
    """Boxes still in the cascade (N x 4 float32), their scores and the index of the image each is in."""

    boxes: np.ndarray
    scores: np.ndarray
    images: np.ndarray

    def take(self, keep: np.ndarray) -> "Candidates":
        return Candidates(self.boxes[keep], self.scores[keep], self.images[keep])


@dataclass
class Detections:
    """MTCNN's faces in one image, largest box first: boxes (N x 4), scores (N), landmarks (N x 5 x 2)."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray


def run_chunked(session, outputs: list[str], batch: np.ndarray) -> list[np.ndarray]:
    """``session`` on ``batch`` (N x 3 x H x W) in slices of at most CHUNK_PIXELS input pixels, outputs joined."""
    step = max(1, CHUNK_PIXELS // (batch.shape[2] * batch.shape[3]))
    parts = [session.run(outputs, {"image": batch[i:i + step]}) for i in range(0, len(batch), step)]
    return [np.concatenate(p) for p in zip(*parts)]


def normalised(pixels: np.ndarray) -> np.ndarray:
    """N x H x W x 3 float pixels as the networks' N x 3 x H x W input, (pixel - 127.5) / 128."""
    return np.ascontiguousarray(((pixels - 127.5) * 0.0078125).transpose(0, 3, 1, 2), np.float32)


class Cascade:
    """The three stages (ONNX bytes of PNet, RNet, ONet) with their pyramid and thresholds."""

    def __init__(
        self, stages: Sequence[bytes], min_face_size: float = 20, thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        factor: float = 0.709, threads: int | None = None,
    ):
        self._pnet, self._rnet = (onnx_session(model, threads) for model in stages[:2])
        self._onet = Onet(stages[2], threads)
        self.min_face_size = min_face_size
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = factor

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Faces in each H x W x 3 uint8 RGB image."""
        tables = [integral(img) for img in images]
        shapes = [img.shape[:2] for img in images]
        found = self._propose(tables, shapes)
        found = self._refine(found, tables, shapes)
        return self._finish(found, tables, shapes, len(images))

    def _propose(self, tables: list[np.ndarray], shapes: list[tuple[int, int]]) -> Candidates:
        """Stage 1: PNet's boxes over each image's pyramid, thinned by NMS, regressed and squared."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, shape in enumerate(shapes):
            groups.setdefault(shape, []).append(i)
        parts = []
        for (h, w), members in groups.items():
            for scale in pyramid_scales(h, w, self.min_face_size, self.factor):
                lh, lw = level_size(h, w, scale)
                level = np.concatenate([area_level(tables[i], lh, lw) for i in members])
                regression, probability = run_chunked(self._pnet, ["regression", "probability"], normalised(level))
                boxes, scores, offsets, local = pnet_boxes(probability, regression, scale, self.thresholds[0])
                images = np.asarray(members, np.int64)[local]
                keep = nms(boxes, scores, images, LEVEL_NMS)
                parts.append((boxes[keep], scores[keep], offsets[keep], images[keep]))
        if not parts:
            return Candidates(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
        boxes, scores, offsets, images = (np.concatenate(p) for p in zip(*parts))
        keep = nms(boxes, scores, images, IMAGE_NMS)
        return Candidates(square(regress(boxes[keep], offsets[keep], inclusive=False)), scores[keep], images[keep])

    def _crops(
        self, found: Candidates, tables: list[np.ndarray], shapes: list[tuple[int, int]], size: int,
    ) -> tuple[Candidates, np.ndarray]:
        """The candidates whose windows are not empty, and their crops area-resampled to ``size`` (stage input)."""
        crops = np.zeros((len(found.boxes), size, size, 3), np.float32)
        valid = np.zeros(len(found.boxes), bool)
        for i in np.unique(found.images):
            members = np.flatnonzero(found.images == i)
            h, w = shapes[i]
            win, ok = windows(found.boxes[members], w, h)
            if ok.any():
                crops[members[ok]] = area_resize(tables[i], win[ok], size, size)
            valid[members] = ok
        return found.take(valid), normalised(crops[valid])

    def _refine(self, found: Candidates, tables: list[np.ndarray], shapes: list[tuple[int, int]]) -> Candidates:
        """Stage 2: RNet scores every candidate of every image in one batch; survivors are thinned, regressed
        and squared."""
        found, batch = self._crops(found, tables, shapes, RNET_SIZE)
        if not len(found.boxes):
            return found
        regression, probability = run_chunked(self._rnet, ["regression", "probability"], batch)
        passed = probability[:, 1] > self.thresholds[1]
        found = Candidates(found.boxes[passed], probability[passed, 1], found.images[passed])
        keep = nms(found.boxes, found.scores, found.images, IMAGE_NMS)
        found, offsets = found.take(keep), regression[passed][keep]
        return Candidates(square(regress(found.boxes, offsets, inclusive=True)), found.scores, found.images)

    def _finish(
        self, found: Candidates, tables: list[np.ndarray], shapes: list[tuple[int, int]], count: int,
    ) -> list[Detections]:
        """Stage 3: ONet scores and places landmarks on every candidate in one batch; survivors are regressed
        and thinned by the smaller-box overlap; then split by image, largest box first."""
        found, batch = self._crops(found, tables, shapes, ONET_SIZE)
        landmarks, regression, probability = self._onet.outputs(found.boxes, batch)
        passed = probability > self.thresholds[2]
        found = Candidates(regress(found.boxes[passed], regression[passed], inclusive=True), probability[passed],
                           found.images[passed])
        keep = nms_min(found.boxes, found.scores, found.images, IMAGE_NMS)
        found, landmarks = found.take(keep), landmarks[passed][keep]
        out = []
        for i in range(count):
            mine = np.flatnonzero(found.images == i)
            b = found.boxes[mine]
            mine = mine[np.argsort(-(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), kind="stable")]
            out.append(Detections(found.boxes[mine], found.scores[mine], landmarks[mine]))
        return out


class Onet:
    """MTCNN's last stage alone (ONNX bytes of ONet): the cascade's third stage, and the landmarks of faces that
    another detector found (``yunet-onet``)."""

    def __init__(self, model: bytes, threads: int | None = None):
        self._session = onnx_session(model, threads)

    def outputs(self, boxes: np.ndarray, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ONet on the crops ``batch`` of ``boxes``: landmarks (pixels of the source image), regression, probability."""
        if not len(boxes):
            return np.zeros((0, 5, 2), np.float32), np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        regression, points, probability = run_chunked(self._session, ["regression", "landmarks", "probability"], batch)
        size = (boxes[:, 2:] - boxes[:, :2] + 1)[:, None, :]
        landmarks = size * points.reshape(-1, 2, 5).transpose(0, 2, 1) + boxes[:, None, :2] - 1
        return landmarks.astype(np.float32), regression, probability[:, 1]

    def place_landmarks(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ONet's landmarks (N x 5 x 2) and face probability (N) for faces found in one RGB image by another
        detector: each box (N x 4) is squared and run through ONet once, then once more on its own regressed box,
        squared (the boxes ONet was trained on are RNet's, which another detector's only resemble). Each crop is cut
        from the box's own window, black beyond the image's edge (the cascade's crops are clipped and stretched
        instead, which moves the points of a face that fills the photo)."""
        current = square(np.asarray(boxes, np.float32).reshape(-1, 4))
        landmarks, probability = np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32)
        for _ in range(2):
            batch = normalised(np.stack([_padded_crop(image, box, ONET_SIZE) for box in current]))
            landmarks, regression, probability = self.outputs(current, batch)
            current = square(regress(current, regression, inclusive=True))
        return landmarks, probability


def _padded_crop(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """The window the cascade would cut for ``box`` (see boxes.windows), black where it leaves the image,
    area-resampled to ``size`` x ``size`` (float32)."""
    h, w = image.shape[:2]
    x0, y0 = int(np.trunc(box[0])) - 1, int(np.trunc(box[1])) - 1
    x1, y1 = max(int(np.trunc(box[2])), x0 + 1), max(int(np.trunc(box[3])), y0 + 1)
    local = np.zeros((y1 - y0, x1 - x0, 3), image.dtype)
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if ix1 > ix0 and iy1 > iy0:
        local[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = image[iy0:iy1, ix0:ix1]
    return area_resize(integral(local), np.array([[0, 0, x1 - x0, y1 - y0]]), size, size)[0]
