"""EdgeFace (George, Ecabert, Otroshi Shahreza, Kotwal and Marcel, 2023): timm's EdgeNeXt with a 512-d head.

    edgeface_xs  = timm ``edgenext_x_small``  (about 1.8M parameters), 512-d head
    edgeface_xxs = timm ``edgenext_xx_small`` (about 1.2M parameters), 512-d head

Input: 112 x 112 RGB aligned onto the ArcFace 5-point template, pixels ``x / 127.5 - 1`` (card mean = std =
127.5); the output is the raw 512-d vector (faceverify L2-normalises it). The module holds the timm network as
``model``, so its state dict keys are the authors' (``model.stem.0.weight``, ...). timm is imported only when an
EdgeFace network is built.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register

INPUT_SIZE = 112
ARCFACE_TEMPLATE = [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
"""The standard ArcFace 5-point template in the 112 x 112 crop (left eye, right eye, nose, mouth corners as seen)."""
MEAN = STD = [127.5, 127.5, 127.5]


class EdgeFace(nn.Module):
    """An EdgeNeXt variant from timm (random initialisation) whose classifier is the embedding head."""

    def __init__(self, variant: str, embedding_size: int = 512):
        super().__init__()
        import timm

        self.model = timm.create_model(variant, pretrained=False, num_classes=embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def stage_groups(self) -> list[list[nn.Parameter]]:
        """Parameters grouped by depth, input side first: stem, the four EdgeNeXt stages, then the head (its
        norm and the 512-d linear, with ``norm_pre``) -- what ``optim.freeze_stages`` counts."""
        m = self.model
        head = [*m.norm_pre.parameters(), *m.head.parameters()]
        return [list(m.stem.parameters()), *(list(stage.parameters()) for stage in m.stages), head]


@register("edgeface_xs")
def edgeface_xs(embedding_size: int = 512) -> EdgeFace:
    return EdgeFace("edgenext_x_small", embedding_size)


@register("edgeface_xxs")
def edgeface_xxs(embedding_size: int = 512) -> EdgeFace:
    return EdgeFace("edgenext_xx_small", embedding_size)
