"""Face detection: MTCNN (facenet-pytorch) boxes, scores and 5 landmarks for every face in a batch of images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch

from ._util import pick_device

FaceChoice = Literal["largest", "center", "all"]


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


class Detector:
    """MTCNN face detector.

    ``min_face_size`` is in pixels; ``score_threshold`` drops faces the final stage is less sure of;
    ``stage_thresholds`` are MTCNN's three cascade thresholds.
    """

    def __init__(
        self,
        device: str | torch.device | None = None,
        min_face_size: int = 20,
        score_threshold: float = 0.9,
        stage_thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
    ):
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

    def detect_one(self, image: np.ndarray) -> list[Face]:
        """Faces in one RGB image."""
        return self.detect([image])[0]


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
