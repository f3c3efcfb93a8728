"""What `faceverify adapt` is told (:class:`AdaptSettings`), without torch: the CLI reads its defaults from here
at start-up."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AdaptSettings:
    """What `faceverify adapt` is told: the base model, the new name and how long and how hard to train;
    ``keep``: the share of the change in weights that the exported model keeps (:func:`~faceverify.adapt.run.toward_base`);
    ``anchor_camera`` False: the anchor holds only the ordinary faces (when there are any), the camera's are free;
    ``train_stages``: only that many of the network's stage groups learn, input side first (0: all).
    The defaults are those of the benchmark run that met issue 18's goals (EdgeFace: the stem and stages 0-2 learn,
    stage 3 and the head stay the base's; BENCHMARKS.md, "Camera adaptation")."""

    base: str
    name: str
    out: str
    epochs: int = 1
    batch_size: int = 64
    lr: float = 1.5e-4
    temperature: float = 0.1
    memory_size: int = 4096
    anchor_weight: float = 16.0
    relation_weight: float = 0.0
    anchor_camera: bool = False
    train_stages: int = 4
    camera: float = 0.8
    keep: float = 1.0
    device: str = "auto"
    threads: int = 0
    seed: int = 0
