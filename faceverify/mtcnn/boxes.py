"""Box arithmetic of MTCNN's cascade, in float32 as facenet-pytorch computes it: the pyramid's scales, PNet's
cells as boxes, box regression, squaring, the integer windows cropped for the next stage, and two NMS flavours.

Boxes are N x 4 arrays (x1, y1, x2, y2) in pixels of the source image; regression offsets are N x 4 fractions
of the box's width and height (dx1, dy1, dx2, dy2).
"""

from __future__ import annotations

import cv2
import numpy as np

CELL = 12
"""PNet's receptive field (pixels of a pyramid level), and the smallest level side searched."""
STRIDE = 2
"""Pixels of a pyramid level between two neighbouring PNet outputs."""


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """Scales at which PNet sees the image: a face of ``min_face_size`` pixels becomes 12 at the first, each next
    is ``factor`` times the last, down to the one where the shorter side still holds 12 pixels."""
    scale = CELL / min_face_size
    side = min(height, width) * scale
    scales = []
    while side >= CELL:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def level_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """Height and width of the pyramid level at ``scale``."""
    return int(height * scale + 1), int(width * scale + 1)


def pnet_boxes(
    probability: np.ndarray, regression: np.ndarray, scale: float, threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PNet's maps at one level (B x 2 x h x w probabilities, B x 4 x h x w offsets) as the boxes of the cells
    whose face probability is at least ``threshold``: boxes, scores, offsets and the image each belongs to."""
    face = probability[:, 1]
    image, row, col = np.nonzero(face >= threshold)
    cells = np.stack([col, row], 1).astype(np.float32)
    s = np.float32(scale)
    boxes = np.concatenate([np.floor((STRIDE * cells + 1) / s), np.floor((STRIDE * cells + CELL) / s)], 1)
    offsets = regression.transpose(0, 2, 3, 1)[image, row, col]
    return boxes, face[image, row, col], offsets, image


def regress(boxes: np.ndarray, offsets: np.ndarray, inclusive: bool) -> np.ndarray:
    """Boxes moved by their offsets; ``inclusive`` counts the width as x2 - x1 + 1 (stages 2 and 3), else x2 - x1."""
    size = boxes[:, 2:] - boxes[:, :2] + (1 if inclusive else 0)
    return boxes + offsets * np.tile(size, 2)


def square(boxes: np.ndarray) -> np.ndarray:
    """Each box grown to a square around its centre (side: the longer of width and height)."""
    size = boxes[:, 2:] - boxes[:, :2]
    side = size.max(1, keepdims=True)
    corner = boxes[:, :2] + size * 0.5 - side * 0.5
    return np.concatenate([corner, corner + side], 1)


def windows(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The pixel windows (x0, y0, x1, y1, end exclusive) cropped for each box: coordinates truncated, then clipped
    to the image (no padding: a box over the edge is cropped to the image and stretched), and which are not empty."""
    b = np.trunc(boxes).astype(np.int64)
    win = np.stack([np.maximum(b[:, 0], 1) - 1, np.maximum(b[:, 1], 1) - 1,
                    np.minimum(b[:, 2], width), np.minimum(b[:, 3], height)], 1)
    return win, (win[:, 2] > win[:, 0]) & (win[:, 3] > win[:, 1])


def nms(boxes: np.ndarray, scores: np.ndarray, images: np.ndarray, threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS within each image, best score first: a box goes when its intersection over
    union (areas x2 - x1 by y2 - y1) with a kept box of its image exceeds ``threshold``."""
    kept = []
    for i in np.unique(images):
        members = np.flatnonzero(images == i)
        b = boxes[members].astype(np.float64)
        rects = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1)
        picked = cv2.dnn.NMSBoxes(rects.tolist(), scores[members].astype(np.float64).tolist(), 0.0, threshold)
        kept.append(members[np.asarray(picked, np.int64).reshape(-1)])
    return _by_score(kept, scores)


def nms_min(boxes: np.ndarray, scores: np.ndarray, images: np.ndarray, threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS within each image, overlap measured as intersection over the smaller box with
    inclusive pixel counts (x2 - x1 + 1): the final stage's rule. Equal scores are taken in facenet-pytorch's
    order for a single image (from the end of numpy's ascending argsort of the image's scores): strong faces
    often score exactly 1.0 there, and which of two such boxes stays must not change."""
    areas = np.prod(boxes[:, 2:] - boxes[:, :2] + 1, axis=1)
    kept = []
    for i in np.unique(images):
        members = np.flatnonzero(images == i)
        order = members[np.argsort(scores[members])]
        while order.size:
            best, rest = order[-1], order[:-1]
            kept.append(best)
            low = np.maximum(boxes[best, :2], boxes[rest, :2])
            high = np.minimum(boxes[best, 2:], boxes[rest, 2:])
            overlap = np.prod(np.maximum(high - low + 1, 0), axis=1) / np.minimum(areas[best], areas[rest])
            order = rest[overlap <= threshold]
    return np.asarray(kept, np.int64)


def _by_score(groups: list[np.ndarray], scores: np.ndarray) -> np.ndarray:
    """The kept indices of all groups, best score first."""
    if not groups:
        return np.zeros(0, np.int64)
    kept = np.concatenate(groups).astype(np.int64)
    return kept[np.argsort(-scores[kept], kind="stable")]
