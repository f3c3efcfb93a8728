"""Alignment: a similarity transform of the 5 detected landmarks onto the model card's template."""

from __future__ import annotations

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


def align_face(image: np.ndarray, landmarks: np.ndarray, template: np.ndarray, size: int) -> np.ndarray:
    """Warp ``image`` so that ``landmarks`` land on ``template``; returns a size x size x 3 uint8 crop.

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
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def center_crop(image: np.ndarray, size: int, fraction: float = 0.6) -> np.ndarray:
    """Fallback crop when no face is found: the central ``fraction`` of the shorter side, resized."""
    h, w = image.shape[:2]
    side = max(1, int(round(min(h, w) * fraction)))
    y0, x0 = (h - side) // 2, (w - side) // 2
    crop = image[y0 : y0 + side, x0 : x0 + side]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)
