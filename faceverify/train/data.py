"""Training data: the usable images of a face cache, identity-balanced batches, augmentation on the device.

Batches hold ``m`` images of each of ``(batch_size - singletons) / m`` identities, drawn with
pytorch-metric-learning's MPerClassSampler from identities with at least two images, plus ``singletons``
images of identities that have a single image: those have no positive, so they serve as negatives only.
Every draw comes from generators seeded by (seed, epoch, rank), so an epoch's batches can be regenerated
exactly when training resumes.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_metric_learning.samplers import MPerClassSampler
from pytorch_metric_learning.utils import common_functions as pml_common

from ..errors import FaceverifyError
from .camera import CameraAugment
from .config import AugmentConfig
from .prepare import NO_FACE, UNREADABLE, FaceCache


class TrainImages:
    """The trainable crops of a face cache at one size: unreadable images are dropped, and optionally the
    centre-crop fallbacks of images without a detected face."""

    def __init__(self, cache: FaceCache, size: int, include_no_face: bool = True):
        keep = cache.status != UNREADABLE
        if not include_no_face:
            keep &= cache.status != NO_FACE
        self.rows = np.flatnonzero(keep)
        self.crops = cache.crops(size)
        _, self.labels = np.unique(cache.labels[self.rows], return_inverse=True)
        if len(self.rows) == 0:
            raise FaceverifyError(f"{cache.dir}: no usable images")

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 N x S x S x 3 crops (pinned when CUDA is present) and int64 labels of positions ``items``."""
        rows = self.rows[items]
        order = np.argsort(rows, kind="stable")  # read the memory map front to back
        crops = np.empty((len(rows), *self.crops.shape[1:]), np.uint8)
        crops[order] = self.crops[rows[order]]
        x = torch.from_numpy(crops)
        return (x.pin_memory() if torch.cuda.is_available() else x), torch.from_numpy(self.labels[items])


@contextmanager
def _pml_random(state: np.random.RandomState) -> Iterator[None]:
    """Make pytorch-metric-learning draw from ``state`` (it uses the module-level ``NUMPY_RANDOM``)."""
    saved = pml_common.NUMPY_RANDOM
    pml_common.NUMPY_RANDOM = state
    try:
        yield
    finally:
        pml_common.NUMPY_RANDOM = saved


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class IdentityBatches:
    """Per-epoch batch plans: rows ``[P*m identity-balanced | singletons]`` of positions into ``labels``."""

    def __init__(
        self,
        labels: np.ndarray,
        batch_size: int,
        m_per_class: int,
        singletons: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        steps_per_epoch: int = 0,
    ):
        counts = np.bincount(labels)
        multi = counts[labels] >= 2
        self.labels = labels
        self.multi_rows = np.flatnonzero(multi)
        self.single_rows = np.flatnonzero(~multi)
        self.m = m_per_class
        self.singletons = singletons if len(self.single_rows) else 0
        self.per_batch = batch_size - self.singletons
        identities = int((counts >= 2).sum())
        if identities * m_per_class < self.per_batch:
            raise FaceverifyError(
                f"{identities} identities with two or more images cannot fill {self.per_batch // m_per_class} "
                f"identities per batch: lower data.batch_size or raise data.singletons_per_batch"
            )
        self.seed, self.rank = seed, rank
        self.steps = steps_per_epoch or max(1, len(labels) // (batch_size * world_size))

    def epoch(self, epoch: int) -> np.ndarray:
        """``steps x batch_size`` positions for this rank's epoch ``epoch``, reproducible from the seed."""
        state = np.random.RandomState(_seed(self.seed, epoch, self.rank, 0))
        sampler = MPerClassSampler(
            self.labels[self.multi_rows], self.m, batch_size=self.per_batch,
            length_before_new_iter=self.steps * self.per_batch,
        )
        with _pml_random(state):
            drawn = np.fromiter(iter(sampler), np.int64, count=len(sampler))
        batches = self.multi_rows[drawn].reshape(self.steps, self.per_batch)
        if not self.singletons:
            return batches
        rng = np.random.default_rng(_seed(self.seed, epoch, self.rank, 1))
        need = self.steps * self.singletons
        laps = math.ceil(need / len(self.single_rows))
        stream = np.concatenate([rng.permutation(self.single_rows) for _ in range(laps)])[:need]
        return np.concatenate([batches, stream.reshape(self.steps, self.singletons)], axis=1)


class BatchAugment:
    """Face augmentation on a whole uint8 N x S x S x 3 batch with torch ops on its device.

    Geometry (one ``grid_sample``: mirror, zoom, shift, rotation), colour (brightness, contrast, saturation,
    greyscale), light from one side, Gaussian blur (per-sample kernels in one grouped convolution), the camera
    augmentations when ``camera`` > 0 (:class:`~faceverify.train.camera.CameraAugment`), normalisation with the
    model's mean/std, then random erasing (rectangles set to 0, the mean colour). Draws come from ``generator``.
    """

    def __init__(self, cfg: AugmentConfig, mean: tuple[float, ...], std: tuple[float, ...], generator: torch.Generator):
        self.cfg = cfg
        self.gen = generator
        self.device = generator.device
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self.camera = CameraAugment(cfg, generator) if cfg.camera > 0 else None

    def _u(self, n: int, lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=self.gen, device=self.device) * (hi - lo) + lo

    def _p(self, n: int, p: float) -> torch.Tensor:
        return torch.rand(n, generator=self.gen, device=self.device) < p

    def normalise(self, crops: torch.Tensor) -> torch.Tensor:
        """uint8 N x S x S x 3 -> float N x 3 x S x S, exactly as :meth:`faceverify.embed.Embedder.preprocess`."""
        x = crops.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        return (x - self.mean) / self.std

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        x = crops.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        n, _, h, w = x.shape
        x = self._geometry(x, c)
        x = self._colour(x, c)
        if c.light > 0:
            x = self._side_light(x, c)
        if c.blur > 0:
            x = self._blur(x, c)
        if self.camera is not None:
            x = self.camera(x)
        x = (x - self.mean) / self.std
        if c.erase > 0:
            x = self._erase(x, c, h, w)
        return x.contiguous()

    def _geometry(self, x: torch.Tensor, c: AugmentConfig) -> torch.Tensor:
        n = x.shape[0]
        angle = self._u(n, -c.rotate, c.rotate) * (math.pi / 180)
        zoom = self._u(n, 1 - c.scale, 1 + c.scale)
        tx, ty = self._u(n, -2 * c.shift, 2 * c.shift), self._u(n, -2 * c.shift, 2 * c.shift)
        mirror = torch.where(self._p(n, c.flip), -1.0, 1.0)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [torch.stack([cos * mirror, -sin, tx], 1), torch.stack([sin * mirror, cos, ty], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _colour(self, x: torch.Tensor, c: AugmentConfig) -> torch.Tensor:
        n = x.shape[0]
        weights = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
        x = x * self._u(n, 1 - c.brightness, 1 + c.brightness).view(n, 1, 1, 1)
        grey = (x * weights).sum(1, keepdim=True)
        mean = grey.mean(dim=(2, 3), keepdim=True)
        x = (x - mean) * self._u(n, 1 - c.contrast, 1 + c.contrast).view(n, 1, 1, 1) + mean
        grey = (x * weights).sum(1, keepdim=True)
        x = (x - grey) * self._u(n, 1 - c.saturation, 1 + c.saturation).view(n, 1, 1, 1) + grey
        x = torch.where(self._p(n, c.grayscale).view(n, 1, 1, 1), grey.expand_as(x), x)
        return x.clamp(0, 255)

    def _side_light(self, x: torch.Tensor, c: AugmentConfig) -> torch.Tensor:
        """One side of a soft, slightly tilted edge through the face darkened to a gain in ``light_gain``."""
        n, _, h, w = x.shape
        tilt = self._u(n, -math.radians(20), math.radians(20)).view(n, 1, 1)
        edge = self._u(n, -0.5, 0.5).view(n, 1, 1)
        width = self._u(n, 0.1, 0.6).view(n, 1, 1)  # of the [-1, 1] span: 5-30% of the crop
        side = torch.where(self._p(n, 0.5), 1.0, -1.0).view(n, 1, 1)
        cols = torch.linspace(-1, 1, w, device=x.device).view(1, 1, w)
        rows = torch.linspace(-1, 1, h, device=x.device).view(1, h, 1)
        across = cols * torch.cos(tilt) + rows * torch.sin(tilt) - edge
        lit = (side * across / width + 0.5).clamp(0, 1)
        gain = self._u(n, *c.light_gain).view(n, 1, 1)
        factor = torch.where(self._p(n, c.light).view(n, 1, 1), gain + (1 - gain) * lit, torch.ones_like(lit))
        return x * factor.unsqueeze(1)

    def _blur(self, x: torch.Tensor, c: AugmentConfig) -> torch.Tensor:
        n, ch, h, w = x.shape
        radius = max(1, math.ceil(2 * c.blur_sigma))
        sigma = self._u(n, 0.3, c.blur_sigma)
        offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-(offsets.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
        kernel = kernel / kernel.sum(1, keepdim=True)
        identity = (offsets == 0).to(x.dtype).expand(n, -1)
        kernel = torch.where(self._p(n, c.blur).view(n, 1), kernel, identity).repeat_interleave(ch, 0)
        y = F.pad(x.reshape(1, n * ch, h, w), (radius, radius, radius, radius), mode="reflect")
        y = F.conv2d(y, kernel.view(n * ch, 1, 1, -1), groups=n * ch)
        y = F.conv2d(y, kernel.view(n * ch, 1, -1, 1), groups=n * ch)
        return y.view(n, ch, h, w)

    def _erase(self, x: torch.Tensor, c: AugmentConfig, h: int, w: int) -> torch.Tensor:
        n = x.shape[0]
        area = self._u(n, *c.erase_area)
        aspect = torch.exp(self._u(n, math.log(0.3), math.log(3.3)))
        eh = (torch.sqrt(area * aspect) * h).clamp(max=h)
        ew = (torch.sqrt(area / aspect) * w).clamp(max=w)
        top = self._u(n, 0, 1) * (h - eh)
        left = self._u(n, 0, 1) * (w - ew)
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        inside = (
            (rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1))
            & (cols >= left.view(n, 1, 1)) & (cols < (left + ew).view(n, 1, 1))
            & self._p(n, c.erase).view(n, 1, 1)
        )
        return x.masked_fill(inside.unsqueeze(1), 0.0)
