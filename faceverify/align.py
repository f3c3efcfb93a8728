"""Alignment: a similarity transform of the 5 detected landmarks onto the model card's template; and the face
crops a gallery keeps so that any model can re-align a face later without the source image."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import cv2
import numpy as np


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation taking ``src`` points onto ``dst``.

    Returns the 2 x 3 matrix M with ``dst ~ M @ [x, y, 1]``. Closed form (Umeyama, no reflection).
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    s, d = src - src_mean, dst - dst_mean
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    var = (s**2).sum() / len(src)
    scale = float((sig * np.diag(sign)).sum() / var) if var > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = dst_mean - scale * rot @ src_mean
    return m


def align_face(image: np.ndarray, landmarks: np.ndarray, template: np.ndarray, size: int,
               border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    """Warp ``image`` so that ``landmarks`` land on ``template``; returns a size x size x 3 uint8 crop, black
    beyond the image (``border``: another OpenCV border mode, e.g. ``cv2.BORDER_REPLICATE``).

    When the face is much larger than the crop, the image is first shrunk with area averaging so that the
    bilinear warp does not alias.
    """
    m = similarity_transform(landmarks, template)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.5:
        shrink = 2.0 * scale
        h, w = image.shape[:2]
        small = (max(1, round(w * shrink)), max(1, round(h * shrink)))
        image = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
        fx, fy = small[0] / w, small[1] / h
        m = similarity_transform(landmarks * np.array([fx, fy]), template)
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)


def center_crop(image: np.ndarray, size: int, fraction: float = 0.6) -> np.ndarray:
    """Fallback crop when no face is found: the central ``fraction`` of the shorter side, resized."""
    h, w = image.shape[:2]
    side = max(1, int(round(min(h, w) * fraction)))
    y0, x0 = (h - side) // 2, (w - side) // 2
    crop = image[y0 : y0 + side, x0 : x0 + side]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)


CROP_HALF = 4.5
"""Half the side of a kept face crop, in units of the face's scale (the RMS distance of its 5 landmarks from
their mean): the canvas of every shipped template fits at any rotation (the widest, ArcFace's at 112 px, needs
3.92; dlib's 3.04)."""
CROP_DENSITY = 40.0
"""The most pixels per unit of face scale a kept crop holds (dlib's 150 px template uses 35.2, ArcFace's 112 px
23.2): larger faces are shrunk to it, smaller ones kept at their own resolution (enlarging adds no detail)."""
CROP_QUALITY = 95
"""JPEG quality of a kept crop."""


@dataclass(frozen=True)
class FaceCrop:
    """A face kept for re-alignment: a JPEG of the face with margin, its 5 landmarks in that crop's pixels and
    the detector that found them (whose landmark convention a template is fitted to)."""

    image: bytes
    landmarks: np.ndarray
    detector: str

    def to_dict(self) -> dict:
        """JSON-ready: the JPEG in base64, the landmarks, the detector."""
        return dict(image=base64.b64encode(self.image).decode(), landmarks=np.round(self.landmarks, 3).tolist(),
                    detector=self.detector)

    def pixels(self) -> np.ndarray:
        """The crop as H x W x 3 uint8 RGB; ValueError if the bytes are not a decodable image."""
        bgr = cv2.imdecode(np.frombuffer(self.image, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError("stored face is not a decodable image")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def face_crop(image: np.ndarray, landmarks: np.ndarray, detector: str) -> FaceCrop:
    """The square crop around a face's ``landmarks`` (``CROP_HALF`` scales each side of their mean, black beyond
    the image), shrunk to ``CROP_DENSITY`` when larger, JPEG-encoded. Made by :func:`align_face` onto the
    landmarks' own shape moved by a whole pixel offset (and scaled), so that a face kept at its resolution is
    copied pixel for pixel."""
    points = np.asarray(landmarks, np.float64).reshape(5, 2)
    centre = points.mean(0)
    scale = max(float(np.sqrt(((points - centre) ** 2).sum(1).mean())), 1.0)
    shrink = min(1.0, CROP_DENSITY / scale)
    placed = (points - np.floor(centre - CROP_HALF * scale)) * shrink
    crop = align_face(image, points, placed, int(np.ceil((2 * CROP_HALF * scale + 1) * shrink)))
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, CROP_QUALITY])
    if not ok:
        raise ValueError("could not encode the face crop")
    return FaceCrop(data.tobytes(), placed.astype(np.float32), detector)
