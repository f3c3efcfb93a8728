"""MobileFaceNet (Chen et al., 2018): a compact face embedding network for 112 x 112 crops, about 1M parameters.

    conv 3x3/2 64, depthwise 3x3 64                         -> stem        (56 x 56)
    bottleneck t=2 c=64  n=5 s=2                            -> stages[0]   (28 x 28)
    bottleneck t=4 c=128 n=1 s=2, t=2 c=128 n=6 s=1         -> stages[1]   (14 x 14)
    bottleneck t=4 c=128 n=1 s=2, t=2 c=128 n=2 s=1         -> stages[2]   (7 x 7)
    conv 1x1 512, global depthwise 7x7 (linear), 1x1 -> D, BatchNorm   -> head

Every convolution is followed by BatchNorm; PReLU everywhere except after the projection of a bottleneck, the
global depthwise convolution and the embedding (linear outputs).
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register

INPUT_SIZE = 112


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, padding=k // 2 if k < 7 else 0, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.PReLU(cout))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise (stride), 1x1 linear projection; identity shortcut at stride 1."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        mid = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            _conv_bn(cin, mid, 1),
            _conv_bn(mid, mid, 3, stride, groups=mid),
            _conv_bn(mid, cout, 1, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


def _stage(cin: int, spec: list[tuple[int, int, int, int]]) -> nn.Sequential:
    """Bottlenecks from ``(expansion, channels, repeats, first stride)`` rows."""
    blocks: list[nn.Module] = []
    for t, c, n, s in spec:
        for i in range(n):
            blocks.append(Bottleneck(cin, c, s if i == 0 else 1, t))
            cin = c
    return nn.Sequential(*blocks)


@register("mobilefacenet")
class MobileFaceNet(nn.Module):
    """MobileFaceNet; ``forward`` maps normalised N x 3 x 112 x 112 RGB to the (unnormalised) embedding."""

    def __init__(self, embedding_size: int = 128):
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(3, 64, 3, 2), _conv_bn(64, 64, 3, groups=64))
        self.stages = nn.ModuleList(
            [
                _stage(64, [(2, 64, 5, 2)]),
                _stage(64, [(4, 128, 1, 2), (2, 128, 6, 1)]),
                _stage(128, [(4, 128, 1, 2), (2, 128, 2, 1)]),
            ]
        )
        self.head = nn.Sequential(
            _conv_bn(128, 512, 1),
            _conv_bn(512, 512, 7, groups=512, act=False),  # global depthwise convolution over the 7 x 7 map
            nn.Flatten(),
            nn.Linear(512, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)

    def stage_groups(self) -> list[list[nn.Parameter]]:
        """Parameters grouped by depth, input side first: stem, the three stages, then the head."""
        stages: list[nn.Module] = [self.stem, *self.stages, self.head]
        return [list(stage.parameters()) for stage in stages]
