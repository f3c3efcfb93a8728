"""dlib's metric-learning ResNet (``dlib_face_recognition_resnet_model_v1``) as a plain PyTorch module.

This is the ``anet_type`` of dlib's ``examples/dnn_face_recognition_ex.cpp``, layer for layer:

    input_rgb_image_sized<150>
    con 32 7x7 /2, affine, relu, max_pool 3x3 /2          -> stem
    alevel4: 3 x ares(32)                                   -> levels[0]
    alevel3: ares_down(64), 3 x ares(64)                    -> levels[1]
    alevel2: ares_down(128), 2 x ares(128)                  -> levels[2]
    alevel1: ares_down(256), 2 x ares(256)                  -> levels[3]
    alevel0: ares_down(256)                                 -> levels[4]
    avg_pool_everything, fc_no_bias 128                     -> fc

dlib semantics reproduced here: convolutions and pools have no padding when their stride is not 1 and
``size // 2`` when it is; dlib's ``add_prev`` adds tensors of different shapes by zero-extending both to the
larger size in every dimension (missing channels, rows and columns at the end are zeros), which happens in
every down-sampling block (e.g. 128 channels at 4x4 plus 256 channels at 3x3 gives 256 channels at 4x4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register

INPUT_SIZE = 150


class ChannelAffine(nn.Module):
    """dlib's ``affine`` layer in convolution mode: ``y = x * weight[c] + bias[c]`` (no batch statistics)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


def _dlib_conv(in_channels: int, out_channels: int, size: int, stride: int) -> nn.Conv2d:
    """A dlib ``con`` layer (it always has a bias) with dlib's default padding."""
    return nn.Conv2d(in_channels, out_channels, size, stride=stride, padding=0 if stride != 1 else size // 2)


def zero_padded_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum over the larger shape, with each input zero-extended at the end."""
    if a.shape == b.shape:
        return a + b
    shape = [max(sa, sb) for sa, sb in zip(a.shape, b.shape)]

    def grow(t: torch.Tensor) -> torch.Tensor:
        # F.pad lists (before, after) pairs from the last dimension backwards.
        pads: list[int] = []
        for dim in range(t.dim() - 1, -1, -1):
            pads += [0, shape[dim] - t.shape[dim]]
        return F.pad(t, pads)

    return grow(a) + grow(b)


class ResidualBlock(nn.Module):
    """dlib's ``ares`` (stride 1, identity shortcut) or ``ares_down`` (stride 2, 2x2 average-pool shortcut)."""

    def __init__(self, in_channels: int, out_channels: int, down: bool):
        super().__init__()
        if not down and in_channels != out_channels:
            raise ValueError("a stride-1 residual block keeps its channel count")
        self.down = down
        self.conv1 = _dlib_conv(in_channels, out_channels, 3, 2 if down else 1)
        self.affine1 = ChannelAffine(out_channels)
        self.conv2 = _dlib_conv(out_channels, out_channels, 3, 1)
        self.affine2 = ChannelAffine(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(zero_padded_add(y, shortcut))


def _level(in_channels: int, out_channels: int, num_blocks: int, down: bool) -> nn.Sequential:
    blocks = [ResidualBlock(in_channels, out_channels, down)]
    blocks += [ResidualBlock(out_channels, out_channels, False) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


@register("dlib_resnet_v1")
class DlibResNet(nn.Module):
    """dlib's 29-layer face ResNet; ``forward`` maps normalised N x 3 x 150 x 150 RGB to the raw fc output."""

    def __init__(self, embedding_size: int = 128):
        super().__init__()
        self.stem = nn.Sequential(
            _dlib_conv(3, 32, 7, 2),
            ChannelAffine(32),
            nn.ReLU(),
            nn.MaxPool2d(3, 2),
        )
        self.levels = nn.ModuleList(
            [
                _level(32, 32, 3, down=False),  # alevel4
                _level(32, 64, 4, down=True),  # alevel3
                _level(64, 128, 3, down=True),  # alevel2
                _level(128, 256, 3, down=True),  # alevel1
                _level(256, 256, 1, down=True),  # alevel0
            ]
        )
        self.fc = nn.Linear(256, embedding_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for level in self.levels:
            x = level(x)
        return self.fc(x.mean(dim=(2, 3)))

    def stage_groups(self) -> list[list[nn.Parameter]]:
        """Parameters grouped by depth, input side first: stem, the five levels, then fc."""
        stages: list[nn.Module] = [self.stem, *self.levels, self.fc]
        return [list(stage.parameters()) for stage in stages]
