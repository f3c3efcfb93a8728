"""The anti-spoofing networks' crop: the face box widened about its centre, kept inside the image, resized."""

from __future__ import annotations

import cv2
import numpy as np


def xywh(box: np.ndarray) -> tuple[float, float, float, float]:
    """A face box (x1, y1, x2, y2) as the crop rule takes it: (x, y, width, height)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return x1, y1, x2 - x1, y2 - y1


def context_box(width: int, height: int, box_xywh: tuple[float, float, float, float], scale: float
                ) -> tuple[int, int, int, int]:
    """The region (x1, y1, x2, y2, inclusive, integers) an anti-spoofing network sees of a ``width`` x ``height``
    image: the face box (x, y, w, h) scaled by ``scale`` about its centre, the scale lowered until the region fits
    the image, the region moved back inside where it crosses an edge (not clipped, so that the face keeps its
    context), then truncated to whole pixels."""
    x, y, w, h = (float(v) for v in box_xywh)
    s = min(scale, (height - 1) / h, (width - 1) / w)
    cx, cy, half_w, half_h = x + w / 2, y + h / 2, w * s / 2, h * s / 2
    x1, y1, x2, y2 = cx - half_w, cy - half_h, cx + half_w, cy + half_h
    if x1 < 0:
        x1, x2 = 0.0, x2 - x1
    if y1 < 0:
        y1, y2 = 0.0, y2 - y1
    if x2 > width - 1:
        x1, x2 = x1 - (x2 - width + 1), width - 1.0
    if y2 > height - 1:
        y1, y2 = y1 - (y2 - height + 1), height - 1.0
    return int(x1), int(y1), int(x2), int(y2)


def context_crop(image: np.ndarray, box_xywh: tuple[float, float, float, float], scale: float, size: int
                 ) -> np.ndarray:
    """``size`` x ``size`` crop of ``image`` (H x W x 3, any channel order, kept) around a face box, as
    :func:`context_box` places it, resized bilinearly."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = context_box(width, height, box_xywh, scale)
    return cv2.resize(image[y1:y2 + 1, x1:x2 + 1], (size, size), interpolation=cv2.INTER_LINEAR)
