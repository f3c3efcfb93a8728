"""Degraded copies of LFW images, built on the fly for tools/compare_models.py: each is a function of the image and
its cached detection (box and 5 landmarks, None without one), applied before the cached landmarks are aligned, so
every model sees the same faces degraded the same way (the detection is the clean image's: these measure the
embedding, not whether the detector still finds the face).

    tight       everything outside the detected box black (a photo cropped tightly to the face)
    low-res     the image shrunk so that the box is 28 pixels wide (area averaging), then enlarged back (bilinear)
    greyscale   luma only (ITU-R BT.601), replicated to three channels
    sunglasses  two dark lenses over the eyes (ellipses along the eye line, 0.94 x 0.68 eye distances) with a
                bridge and arms
    shadow      light from one side: the image's left of the nose darkened to a quarter, a soft edge of 0.3
                eye distances
    mask        a light blue mask, square to the eye line, from the nose bridge (45% of the way from the eyes to
                the nose tip) to below the chin, 0.55 eye distances wider than the eyes and the mouth corners on
                each side
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

LOW_RES_WIDTH = 28
Landmarks = np.ndarray
"""5 x 2: the eyes first (in either order), the nose tip, the mouth corners."""


def tight(image: np.ndarray, box: np.ndarray | None, landmarks: Landmarks | None = None) -> np.ndarray:
    if box is None:
        return image
    h, w = image.shape[:2]
    x1, y1 = max(0, int(round(box[0]))), max(0, int(round(box[1])))
    x2, y2 = min(w, int(round(box[2]))), min(h, int(round(box[3])))
    out = np.zeros_like(image)
    out[y1:y2, x1:x2] = image[y1:y2, x1:x2]
    return out


def low_res(image: np.ndarray, box: np.ndarray | None, landmarks: Landmarks | None = None) -> np.ndarray:
    if box is None or box[2] - box[0] <= LOW_RES_WIDTH:
        return image
    h, w = image.shape[:2]
    k = LOW_RES_WIDTH / float(box[2] - box[0])
    small = cv2.resize(image, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def greyscale(image: np.ndarray, box: np.ndarray | None, landmarks: Landmarks | None = None) -> np.ndarray:
    return np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)


def _eyes(landmarks: Landmarks) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """The image-left eye, the image-right eye, the distance between them and the unit vector from left to right."""
    left, right = sorted(np.asarray(landmarks[:2], np.float64), key=lambda p: p[0])
    d = float(np.linalg.norm(right - left))
    return left, right, d, (right - left) / max(d, 1e-6)


def sunglasses(image: np.ndarray, box: np.ndarray | None, landmarks: Landmarks | None = None) -> np.ndarray:
    if landmarks is None:
        return image
    left, right, d, unit = _eyes(landmarks)
    angle = float(np.degrees(np.arctan2(unit[1], unit[0])))
    out, dark, width = image.copy(), (12, 12, 14), max(1, round(0.06 * d))
    axes = (max(1, round(0.47 * d)), max(1, round(0.34 * d)))
    for eye in (left, right):
        cv2.ellipse(out, (round(eye[0]), round(eye[1])), axes, angle, 0, 360, dark, -1, cv2.LINE_AA)
    inner = [left + unit * 0.47 * d, right - unit * 0.47 * d]
    outer = [left - unit * 0.47 * d, right + unit * 0.47 * d]
    cv2.line(out, tuple(map(round, inner[0])), tuple(map(round, inner[1])), dark, width, cv2.LINE_AA)
    for end, side in zip(outer, (-1, 1)):
        cv2.line(out, tuple(map(round, end)), tuple(map(round, end + side * unit * 0.5 * d)), dark, width, cv2.LINE_AA)
    return out


def shadow(image: np.ndarray, box: np.ndarray | None, landmarks: Landmarks | None = None) -> np.ndarray:
    if landmarks is None:
        return image
    d = _eyes(landmarks)[2]
    edge = float(landmarks[2][0])
    x = np.arange(image.shape[1], dtype=np.float32)
    lit = np.clip((x - (edge - 0.15 * d)) / max(0.3 * d, 1e-6), 0, 1)
    gain = (0.25 + 0.75 * lit)[None, :, None]
    return np.clip(image.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)


def mask(image: np.ndarray, box: np.ndarray | None, landmarks: Landmarks | None = None) -> np.ndarray:
    if landmarks is None:
        return image
    left, right, d, along = _eyes(landmarks)
    middle = (left + right) / 2
    down = np.array([-along[1], along[0]])  # perpendicular to the eye line, toward the mouth
    nose, mouth = np.asarray(landmarks[2], np.float64) - middle, np.asarray(landmarks[3:5], np.float64) - middle
    top, bottom = 0.45 * float(nose @ down), float((mouth @ down).max()) + 0.9 * d
    top_half, bottom_half = 0.5 * d + 0.55 * d, float(np.abs(mouth @ along).max()) + 0.55 * d
    corners = [middle + along * x + down * y
               for x, y in ((-top_half, top), (top_half, top), (bottom_half, bottom), (-bottom_half, bottom))]
    out = image.copy()
    cv2.fillPoly(out, [np.round(np.array(corners)).astype(np.int32)], (170, 200, 230), cv2.LINE_AA)
    return out


VARIANTS: dict[str, Callable[[np.ndarray, np.ndarray | None, Landmarks | None], np.ndarray]] = {
    "tight": tight, "low-res": low_res, "greyscale": greyscale, "sunglasses": sunglasses, "shadow": shadow,
    "mask": mask,
}
