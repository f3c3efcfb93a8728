"""MiniFASNet (Minivision's Silent-Face anti-spoofing networks, Apache-2.0): MiniFASNetV2 and MiniFASNetV1SE, built
from the shapes in a state dict.

Both are MobileFaceNet-shaped and take an 80 x 80 BGR crop in 0..255 (not normalised):

    conv1 3x3/2, conv2_dw 3x3 depthwise                          (40 x 40)
    conv_23 bottleneck /2, conv_3 residual bottlenecks           (20 x 20)
    conv_34 bottleneck /2, conv_4 residual bottlenecks           (10 x 10)
    conv_45 bottleneck /2, conv_5 residual bottlenecks           (5 x 5)
    conv_6_sep 1x1, conv_6_dw 5x5 depthwise (valid, linear), linear -> BatchNorm1d -> prob (3 logits)

A bottleneck is a 1x1 expansion, a 3x3 depthwise convolution and a linear 1x1 projection; V1SE adds a
squeeze-excitation on the projection of each residual stage's last block. The channel counts were pruned per
block, so they are read off the weights. Logits order: 0 a 2-D attack, 1 a live face, 2 a 3-D attack.
"""

from __future__ import annotations

import re

import torch
from torch import nn

STAGES = (("conv_23", 2), ("conv_3", 1), ("conv_34", 2), ("conv_4", 1), ("conv_45", 2), ("conv_5", 1))
"""The bottleneck stages in order and their stride (a stride-1 stage holds residual blocks in ``.model``)."""


class ConvUnit(nn.Module):
    """Bias-free convolution, BatchNorm and (unless linear) PReLU, shaped by its weight tensor."""

    def __init__(self, weight_shape: torch.Size, stride: int = 1, linear: bool = False, padded: bool = True):
        super().__init__()
        cout, cin_per_group, k, _ = weight_shape
        groups = cout if cin_per_group == 1 and k > 1 else 1
        self.conv = nn.Conv2d(cin_per_group * groups, cout, k, stride, padding=k // 2 if padded else 0,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.prelu = None if linear else nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return x if self.prelu is None else self.prelu(x)


class SplitPReLUConv(nn.Module):
    """A :class:`ConvUnit` with PReLU as ONNX Runtime runs fastest: BatchNorm folded into the convolution y, and
    PReLU(y) = a y + ReLU((1 - a) y), the same for every slope a <= 1, as two convolutions (weights scaled by a,
    and by 1 - a with ReLU) whose outputs are added. Both stay in ONNX Runtime's blocked (NCHWc) layout, where the
    ReLU and the sum fuse into the convolutions; its PRelu, or max(y, a y), would reorder the tensor to plain
    NCHW and back around every activation."""

    def __init__(self, unit: ConvUnit):
        super().__init__()
        conv, bn = unit.conv, unit.bn
        gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        weight, bias = conv.weight * gain.view(-1, 1, 1, 1), bn.bias - bn.running_mean * gain
        slope = unit.prelu.weight

        def scaled(by: torch.Tensor) -> nn.Conv2d:
            out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                            groups=conv.groups, bias=True)
            out.weight.data, out.bias.data = (weight * by.view(-1, 1, 1, 1)).detach(), (bias * by).detach()
            return out

        self.linear, self.positive = scaled(slope), scaled(1 - slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + torch.relu(self.positive(x))


class SqueezeExcite(nn.Module):
    """Channel gates from the global average: 1x1 conv, BN, ReLU, 1x1 conv, BN, sigmoid."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(reduced)
        self.fc2 = nn.Conv2d(reduced, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.relu(self.bn1(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(self.bn2(self.fc2(gate)))


class Bottleneck(nn.Module):
    """1x1 expansion, 3x3 depthwise (``stride``), linear 1x1 projection, the optional squeeze-excitation, and the
    input added back when ``residual``."""

    def __init__(self, state: dict[str, torch.Tensor], prefix: str, stride: int, residual: bool):
        super().__init__()
        self.conv = ConvUnit(state[f"{prefix}.conv.conv.weight"].shape)
        self.conv_dw = ConvUnit(state[f"{prefix}.conv_dw.conv.weight"].shape, stride)
        self.project = ConvUnit(state[f"{prefix}.project.conv.weight"].shape, linear=True)
        se = state.get(f"{prefix}.se_module.fc1.weight")
        self.se_module = None if se is None else SqueezeExcite(se.shape[1], se.shape[0])
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.conv_dw(self.conv(x)))
        if self.se_module is not None:
            y = self.se_module(y)
        return x + y if self.residual else y


class ResidualStage(nn.Module):
    """Residual bottlenecks at stride 1 (``model`` as in the released weights' names)."""

    def __init__(self, state: dict[str, torch.Tensor], prefix: str):
        super().__init__()
        blocks = sorted({int(m.group(1)) for k in state if (m := re.match(rf"{prefix}\.model\.(\d+)\.", k))})
        self.model = nn.Sequential(*(Bottleneck(state, f"{prefix}.model.{i}", 1, True) for i in blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MiniFASNet(nn.Module):
    """One MiniFASNet; ``forward`` maps N x 3 x 80 x 80 BGR crops in 0..255 to N x 3 logits."""

    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        self.conv1 = ConvUnit(state["conv1.conv.weight"].shape, stride=2)
        self.conv2_dw = ConvUnit(state["conv2_dw.conv.weight"].shape)
        for name, stride in STAGES:
            block = Bottleneck(state, name, stride, False) if stride > 1 else ResidualStage(state, name)
            setattr(self, name, block)
        self.conv_6_sep = ConvUnit(state["conv_6_sep.conv.weight"].shape)
        self.conv_6_dw = ConvUnit(state["conv_6_dw.conv.weight"].shape, linear=True, padded=False)
        width, features = state["linear.weight"].shape
        self.linear = nn.Linear(features, width, bias=False)
        self.bn = nn.BatchNorm1d(width)
        self.prob = nn.Linear(width, state["prob.weight"].shape[0], bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2_dw(self.conv1(x))
        for name, _ in STAGES:
            x = getattr(self, name)(x)
        x = self.conv_6_dw(self.conv_6_sep(x)).flatten(1)
        return self.prob(self.bn(self.linear(x)))


def pad_channels(state: dict[str, torch.Tensor], multiple: int = 16) -> dict[str, torch.Tensor]:
    """The same network with each bottleneck's pruned width (103, 13, 231, ...) rounded up to ``multiple`` by
    channels that are always zero: zero weights into them, BatchNorm mapping 0 to 0, zero weights out of them, so
    every output is unchanged. ONNX Runtime's blocked (NCHWc) convolutions take only whole blocks of 8 or 16
    channels; padded, they take every layer, the depthwise ones included."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    for prefix in {k.removesuffix(".conv_dw.conv.weight") for k in state if k.endswith(".conv_dw.conv.weight")}:
        extra = -state[f"{prefix}.conv.conv.weight"].shape[0] % multiple
        for unit in ("conv", "conv_dw"):
            for name, value in (("conv.weight", 0.0), ("bn.weight", 0.0), ("bn.bias", 0.0), ("bn.running_mean", 0.0),
                                ("bn.running_var", 1.0), ("prelu.weight", 0.0)):
                key = f"{prefix}.{unit}.{name}"
                state[key] = _grown(state[key], extra, value)
        state[f"{prefix}.project.conv.weight"] = _grown(state[f"{prefix}.project.conv.weight"], extra, dim=1)
    return state


def _grown(t: torch.Tensor, extra: int, value: float = 0.0, dim: int = 0) -> torch.Tensor:
    """``t`` with ``extra`` more entries along ``dim``, all ``value``."""
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([t, torch.full(shape, value, dtype=t.dtype)], dim)


def runtime_form(network: nn.Module) -> nn.Module:
    """``network`` (changed in place) with every PReLU unit as a :class:`SplitPReLUConv`: for export to ONNX."""
    for name, child in network.named_children():
        if isinstance(child, ConvUnit) and child.prelu is not None:
            setattr(network, name, SplitPReLUConv(child))
        else:
            runtime_form(child)
    return network


def minifasnet_from_state(state: dict[str, torch.Tensor]) -> MiniFASNet:
    """The network the state dict describes (keys with or without the ``module.`` of a DataParallel save), with
    its weights loaded strictly, in eval mode; ValueError for a PReLU slope above 1 (see :class:`SplitPReLUConv`)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(float(v.max()) > 1 for k, v in state.items() if k.endswith("prelu.weight")):
        raise ValueError("a PReLU slope above 1: a y + ReLU((1 - a) y) would not be its PReLU")
    network = MiniFASNet(state)
    network.load_state_dict(state, strict=True)
    return network.eval()
