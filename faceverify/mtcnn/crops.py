"""Area resampling from integral images: the pyramid levels and the stage-2/3 crops of MTCNN's cascade.

facenet-pytorch resizes with ``interpolate(mode="area")``, an adaptive average pool: output row ``i`` of ``n``
from ``m`` input rows averages rows ``floor(i * m / n)`` to ``ceil((i + 1) * m / n)`` (exclusive), and columns
alike. The same bins summed from an integral image of the uint8 pixels (integers, so exact) give the same
averages for any number of windows at once, whatever their sizes, with one gather. The sums are exact and
divided in float32 by the bin's height, then its width, as torch divides its float32 sums (exact integers
below 2**24), so levels and crops equal torch's to the last bit (bins under 65536 pixels).
"""

from __future__ import annotations

import cv2
import numpy as np

EXACT_INT32_PIXELS = (2**31 - 1) // 255
"""Images up to this many pixels (H x W) have integral images that fit in int32; larger ones use float64."""


def integral(image: np.ndarray) -> np.ndarray:
    """The (H + 1) x (W + 1) x 3 integral image of an H x W x 3 uint8 image (exact sums)."""
    depth = cv2.CV_32S if image.shape[0] * image.shape[1] <= EXACT_INT32_PIXELS else cv2.CV_64F
    return cv2.integral(np.ascontiguousarray(image), sdepth=depth)


def _bins(start: np.ndarray, length: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive-pool bin edges (N x size, start inclusive and end exclusive) of windows ``start:start+length``."""
    i = np.arange(size)
    lo = start[:, None] + (i * length[:, None]) // size
    hi = start[:, None] + ((i + 1) * length[:, None] + size - 1) // size
    return lo, hi


def area_resize(table: np.ndarray, windows: np.ndarray, height: int, width: int) -> np.ndarray:
    """Windows (N x 4 ints: x0, y0, x1, y1, end exclusive) of the image whose integral image is ``table``, each
    area-resampled to ``height`` x ``width``: N x height x width x 3 float32 on the pixels' 0..255 scale."""
    windows = np.asarray(windows, np.int64).reshape(-1, 4)
    r0, r1 = _bins(windows[:, 1], windows[:, 3] - windows[:, 1], height)
    c0, c1 = _bins(windows[:, 0], windows[:, 2] - windows[:, 0], width)
    flat = table.reshape(-1, table.shape[2])  # one row of channels per table cell: four gathers of whole rows
    top, bottom = (r0 * table.shape[1])[:, :, None], (r1 * table.shape[1])[:, :, None]
    left, right = c0[:, None, :], c1[:, None, :]

    def cells(index: np.ndarray) -> np.ndarray:
        return np.take(flat, index, axis=0)

    sums = cells(bottom + right) - cells(top + right) - cells(bottom + left) + cells(top + left)
    rows, cols = (r1 - r0).astype(np.float32), (c1 - c0).astype(np.float32)
    return sums.astype(np.float32) / rows[:, :, None, None] / cols[:, None, :, None]


def area_level(table: np.ndarray, height: int, width: int) -> np.ndarray:
    """The whole image of integral image ``table`` area-resampled to ``height`` x ``width`` (1 x height x width x
    3 float32), as :func:`area_resize` would but faster for one large window: bins of rows, then of columns."""
    r0, r1 = _bins(np.zeros(1, np.int64), np.array([table.shape[0] - 1]), height)
    c0, c1 = _bins(np.zeros(1, np.int64), np.array([table.shape[1] - 1]), width)
    rows = table[r1[0]] - table[r0[0]]
    sums = np.take(rows, c1[0], axis=1) - np.take(rows, c0[0], axis=1)
    heights, widths = (r1[0] - r0[0]).astype(np.float32), (c1[0] - c0[0]).astype(np.float32)
    return (sums.astype(np.float32) / heights[:, None, None] / widths[None, :, None])[None]
