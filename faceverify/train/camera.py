"""Camera augmentations on a batch: what a cheap, night-time or compressed camera does to a face, in torch ops on
the batch's device (part of :class:`~faceverify.train.data.BatchAugment`, before normalisation).

Each view passes through the camera with probability ``camera``, and then through each step with its own draws:
infrared-like greyscale (a random channel mix weighing red most, skin being bright in near infrared), low light
(gamma, gain and a black level), a downscale-upscale (the face seen by fewer pixels), sensor noise (Gaussian plus
shot noise), motion blur (a line kernel at a random angle) and JPEG artefacts at a random quality.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg

from .config import AugmentConfig

JPEG_STEPS = 4
"""JPEG qualities are drawn from this many levels spread over ``camera_jpeg`` (one encoder call per level)."""


class CameraAugment:
    """``__call__(x, chosen)``: float N x 3 x S x S on the 0..255 scale -> the same, rows ``chosen`` camera-like."""

    def __init__(self, cfg: AugmentConfig, generator: torch.Generator):
        self.cfg = cfg
        self.gen = generator
        self.device = generator.device

    def _u(self, n: int, lo: float, hi: float) -> torch.Tensor:
        return torch.rand(n, generator=self.gen, device=self.device) * (hi - lo) + lo

    def _p(self, n: int, p: float) -> torch.Tensor:
        return torch.rand(n, generator=self.gen, device=self.device) < p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        n = x.shape[0]
        chosen = self._p(n, c.camera)
        if not bool(chosen.any()):
            return x
        y = x[chosen]
        m = y.shape[0]
        y = self._infrared(y, self._p(m, c.camera_grey))
        y = self._low_light(y)
        y = self._downscale(y)
        y = self._noise(y)
        if c.motion_blur > 0:
            y = self._motion_blur(y, self._p(m, c.motion_blur))
        y = self._jpeg(y.clamp(0, 255))
        out = x.clone()
        out[chosen] = y
        return out

    def _infrared(self, x: torch.Tensor, grey: torch.Tensor) -> torch.Tensor:
        m = x.shape[0]
        red = self._u(m, 0.3, 0.7)
        green = (1 - red) * self._u(m, 0.6, 0.9)
        mix = torch.stack([red, green, 1 - red - green], 1).view(m, 3, 1, 1)
        luma = (x * mix).sum(1, keepdim=True).expand_as(x)
        return torch.where(grey.view(m, 1, 1, 1), luma, x)

    def _low_light(self, x: torch.Tensor) -> torch.Tensor:
        c, m = self.cfg, x.shape[0]
        gamma = self._u(m, *c.camera_gamma).view(m, 1, 1, 1)
        gain = self._u(m, *c.camera_gain).view(m, 1, 1, 1)
        black = self._u(m, 0.0, 16.0).view(m, 1, 1, 1)
        return black + gain * 255.0 * (x.clamp(0, 255) / 255.0) ** gamma

    def _downscale(self, x: torch.Tensor) -> torch.Tensor:
        """Each row shrunk to a random fraction of its side (area averaging) and enlarged back (bilinear); rows
        are grouped by their shrunken size, one resize per size."""
        c, (m, _, h, w) = self.cfg, x.shape
        sides = (self._u(m, *c.camera_downscale) * h).round().clamp(8, h).long()
        out = x.clone()
        for side in sides.unique().tolist():
            if side >= h:
                continue
            rows = sides == side
            small = F.interpolate(x[rows], size=(side, side * w // h), mode="area")
            out[rows] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        return out

    def _noise(self, x: torch.Tensor) -> torch.Tensor:
        m = x.shape[0]
        sigma = self._u(m, 0.0, self.cfg.camera_noise).view(m, 1, 1, 1)
        shot = self._u(m, 0.0, 0.6).view(m, 1, 1, 1)
        grain = torch.randn(x.shape[0], 1, *x.shape[2:], generator=self.gen, device=self.device)
        return x + grain * torch.sqrt(sigma**2 + shot * x.clamp(min=0))

    def _motion_blur(self, x: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """A normalised line kernel per row (random length and angle) in one grouped convolution."""
        m, ch, h, w = x.shape
        size = 2 * math.ceil(self.cfg.motion_length / 2) + 1
        length = self._u(m, 1.0, self.cfg.motion_length).view(m, 1, 1)
        angle = self._u(m, 0.0, math.pi).view(m, 1, 1)
        r = torch.arange(size, device=x.device, dtype=x.dtype) - size // 2
        yy, xx = r.view(1, -1, 1), r.view(1, 1, -1)
        across = (xx * torch.sin(angle) - yy * torch.cos(angle)).abs()  # distance from the line through the centre
        along = (xx * torch.cos(angle) + yy * torch.sin(angle)).abs()
        kernel = ((1 - across).clamp(min=0) * (along <= length / 2)).float()
        centre = torch.zeros_like(kernel)
        centre[:, size // 2, size // 2] = 1
        kernel = torch.where(chosen.view(m, 1, 1), kernel, centre)
        kernel = (kernel / kernel.sum((1, 2), keepdim=True)).repeat_interleave(ch, 0)
        y = F.pad(x.reshape(1, m * ch, h, w), (size // 2,) * 4, mode="replicate")
        return F.conv2d(y, kernel.unsqueeze(1), groups=m * ch).view(m, ch, h, w)

    def _jpeg(self, x: torch.Tensor) -> torch.Tensor:
        """JPEG round trips at qualities drawn from :data:`JPEG_STEPS` levels (torchvision: nvJPEG on CUDA)."""
        lo, hi = self.cfg.camera_jpeg
        levels = torch.linspace(lo, hi, JPEG_STEPS).round().long().tolist()
        pick = (torch.rand(x.shape[0], generator=self.gen, device=self.device) * JPEG_STEPS).long().clamp(max=JPEG_STEPS - 1)
        images = x.round().to(torch.uint8)
        out = x.clone()
        for k, quality in enumerate(levels):
            rows = torch.nonzero(pick == k).flatten().tolist()
            if not rows:
                continue
            encoded = encode_jpeg([images[i].contiguous() for i in rows], quality=int(quality))
            decoded = decode_jpeg([e.cpu() for e in encoded] if x.device.type == "cpu" else encoded, device=x.device)
            for i, d in zip(rows, decoded):
                out[i] = d.to(x.dtype)
        return out
