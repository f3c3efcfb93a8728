"""Degraded copies of LFW images, built on the fly for tools/compare_models.py: each is a function of the image and
its cached MTCNN box (None without a detection), applied before the cached landmarks are aligned, so every model
sees the same faces degraded the same way.

    tight      everything outside the detected box black (a photo cropped tightly to the face)
    low-res    the image shrunk so that the box is 28 pixels wide (area averaging), then enlarged back (bilinear)
    greyscale  luma only (ITU-R BT.601), replicated to three channels
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

LOW_RES_WIDTH = 28


def tight(image: np.ndarray, box: np.ndarray | None) -> np.ndarray:
    if box is None:
        return image
    h, w = image.shape[:2]
    x1, y1 = max(0, int(round(box[0]))), max(0, int(round(box[1])))
    x2, y2 = min(w, int(round(box[2]))), min(h, int(round(box[3])))
    out = np.zeros_like(image)
    out[y1:y2, x1:x2] = image[y1:y2, x1:x2]
    return out


def low_res(image: np.ndarray, box: np.ndarray | None) -> np.ndarray:
    if box is None or box[2] - box[0] <= LOW_RES_WIDTH:
        return image
    h, w = image.shape[:2]
    k = LOW_RES_WIDTH / float(box[2] - box[0])
    small = cv2.resize(image, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def greyscale(image: np.ndarray, box: np.ndarray | None) -> np.ndarray:
    return np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)


VARIANTS: dict[str, Callable[[np.ndarray, np.ndarray | None], np.ndarray]] = {
    "tight": tight, "low-res": low_res, "greyscale": greyscale,
}
