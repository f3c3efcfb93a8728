"""Label-free adaptation as a training run: :class:`AdaptTrainer` is :class:`~faceverify.train.loop.Trainer`
with group batches (a group is one face, or one trusted video track) seen twice, under independent camera
augmentations, and :func:`adapt_config` the objective it is given.

Positives: the two views of one face, and every pair of faces of one group (the frames of one track). Negatives:
every other face of the batch and of the memory bank (``CrossBatchMemory``), less the pairs the model already
scores at or above its FAR=1e-3 threshold (a repeated visitor seen in another track or photo is not pushed away
from themself). Anchor: contrastive distillation toward the frozen base model's embedding of each face without
augmentation (``distill``), so that adaptation cannot move the model far from what works; an ordinary face (its
group named with :data:`~faceverify.adapt.faces.ORDINARY`) is also seen a third time as it is, where the anchor
asks for the base model's embedding exactly: the daytime photos the model already handles keep their scores.
With ``relation_weight`` the anchor also holds the cosines between those ordinary faces at the base's
(``relation``): the scores that thresholds are read against, not only the embeddings.
Export can keep only part of the way travelled (:func:`toward_base`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..modelcard import resolve_card
from ..train.config import (
    AugmentConfig,
    DataConfig,
    LossConfig,
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    ValidationConfig,
)
from ..train.data import _seed
from ..train.loop import Trainer
from .faces import ORDINARY
from .settings import AdaptSettings

FALSE_NEGATIVE_FAR = 1e-3
"""A negative pair the base model scores at or above its threshold for this FAR is left out."""


def toward_base(base: dict[str, torch.Tensor], keep: float) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """Weight-space interpolation of adapted weights toward ``base`` (as WiSE-FT does for fine-tuning): each
    floating-point tensor becomes ``base + keep * (adapted - base)``; 1 keeps the adaptation whole, 0 the base."""

    def blend(adapted: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in adapted.items():
            start = base[key].to(value.device, value.dtype)
            out[key] = start + keep * (value - start) if value.is_floating_point() else value
        return out

    return blend


def adapt_config(s: AdaptSettings, cache: str) -> TrainConfig:
    """The training configuration of an adaptation of ``s.base`` on the face cache ``cache``."""
    card, _ = resolve_card(s.base)
    limit = card.threshold_for(FALSE_NEGATIVE_FAR)
    cfg = TrainConfig(
        name=s.name,
        seed=s.seed,
        data=DataConfig(cache=cache, batch_size=s.batch_size, m_per_class=2, singletons_per_batch=0,
                        include_no_face=False),
        augment=AugmentConfig(scale=0.06, shift=0.04, rotate=6.0, grayscale=0.0, blur=0.1, erase=0.1,
                              camera=s.camera),
        model=ModelConfig(architecture=card.architecture, embedding_size=card.embedding_size, init=s.base,
                          input_size=card.input_size, mean=tuple(card.mean), std=tuple(card.std)),
        objective=ObjectiveConfig(
            losses=[LossConfig(type="ntxent", weight=1.0, temperature=s.temperature),
                    LossConfig(type="distill", weight=s.anchor_weight, temperature=0.05)]
                   + ([LossConfig(type="relation", weight=s.relation_weight)] if s.relation_weight else []),
            teacher=s.base, miner="none", memory_size=s.memory_size, false_negative_cos=limit,
        ),
        optim=OptimConfig(lr=s.lr, weight_decay=5e-4, warmup_steps=50, min_lr_ratio=0.05, train_stages=s.train_stages),
        run=RunConfig(out=s.out, epochs=s.epochs, device=s.device, threads=s.threads, log_every=10),
        validation=ValidationConfig(lfw_root="none"),
    )
    cfg.validate()
    return cfg


class GroupBatches:
    """Per-epoch plans of ``batch_size`` faces from as many groups as fit: each group in an order drawn from the
    seed, two faces (drawn at random) from a group of two or more (a track: same-group positives), one from a
    single face. ``steps`` plans per epoch cover every group once (the last partial batch is dropped)."""

    def __init__(self, labels: np.ndarray, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        order = np.argsort(labels, kind="stable")
        starts = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1]])
        self.groups = np.split(order, starts[1:])
        self.batch_size, self.seed, self.rank = batch_size, seed, rank
        faces = sum(min(2, len(g)) for g in self.groups)
        self.steps = max(1, faces // (batch_size * world_size))

    def epoch(self, epoch: int) -> np.ndarray:
        """``steps x batch_size`` positions for this rank's epoch ``epoch``, reproducible from the seed."""
        rng = np.random.default_rng(_seed(self.seed, epoch, self.rank, 2))
        picks: list[int] = []
        for g in rng.permutation(len(self.groups)):
            group = self.groups[g]
            picks.extend(rng.choice(group, 2, replace=False) if len(group) >= 2 else group)
        need = self.steps * self.batch_size
        while len(picks) < need:  # fewer faces than one batch: repeat them (a tiny adaptation, or a test)
            picks.extend(picks[: need - len(picks)])
        return np.asarray(picks[:need], np.int64).reshape(self.steps, self.batch_size)


class AdaptTrainer(Trainer):
    """A :class:`Trainer` over unlabelled faces: group batches, each face in two augmented views, and each
    ordinary face of the batch once more as it is (after the two views)."""

    def __init__(self, *args, anchor_camera: bool = AdaptSettings.anchor_camera, **kwargs):
        super().__init__(*args, **kwargs)
        group_is_ordinary = np.asarray([n.startswith(ORDINARY) for n in self.cache.names])
        self.ordinary = group_is_ordinary[self.cache.labels[self.images.rows]]
        """Per training position: whether the face is an ordinary one."""
        label_is_ordinary = group_is_ordinary[np.unique(self.cache.labels[self.images.rows])]  # TrainImages' labels
        self.anchored = None if anchor_camera or not self.ordinary.any() else torch.from_numpy(label_is_ordinary)
        """Per batch label: whether the anchor holds its faces (None: every face is held)."""

    def plan_batches(self) -> GroupBatches:
        d = self.cfg.data
        return GroupBatches(self.images.labels, d.batch_size, self.cfg.seed, self.dist.rank, self.dist.world_size)

    def batch(self, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The batch's crops twice over (the augmentation draws each view apart) and its ordinary faces' crops
        once more, their group labels and the base model's embeddings of them in the same order."""
        crops, labels, teacher = super().batch(items)
        plain = torch.from_numpy(self.ordinary[items])
        return (torch.cat([crops, crops, crops[plain]]), torch.cat([labels, labels, labels[plain]]),
                None if teacher is None else torch.cat([teacher, teacher, teacher[plain.to(teacher.device)]]))

    def views(self, crops: torch.Tensor) -> torch.Tensor:
        """The two views augmented; the ordinary faces' third view as it is."""
        two = 2 * self.cfg.data.batch_size
        return torch.cat([self.augment(crops[:two]), self.augment.normalise(crops[two:])])

    def plain_rows(self, rows: int) -> torch.Tensor:
        """The ordinary faces' third view: the rows after the two augmented views."""
        return torch.arange(rows, device=self.device) >= 2 * self.cfg.data.batch_size

    def anchored_rows(self, labels: torch.Tensor) -> torch.Tensor | None:
        """Every row, or (``anchor_camera`` False) only the ordinary faces' rows."""
        return None if self.anchored is None else self.anchored[labels.cpu()].to(self.device)
