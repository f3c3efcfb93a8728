"""What a training run is built from: its place in a torchrun job, its device, the face cache, the network
(fresh or from a shipped model), the teacher's embeddings, the optimiser's parameter groups and the schedule."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from .. import networks
from .._util import pick_device, replacing
from ..embed import Embedder
from ..errors import FaceverifyError
from ..modelcard import ModelCard, resolve_card
from .config import RunConfig, TrainConfig, expand
from .prepare import FaceCache, default_cache_root, default_workers, list_identity_folders, prepare, scaled_geometries


@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Distributed:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    info = Distributed(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return info


def training_device(run: RunConfig, info: Distributed) -> torch.device:
    """``run.device``; "auto" is this process's GPU (``cuda:<local rank>``) when CUDA is available, else the CPU."""
    if run.device != "auto":
        return torch.device(run.device)
    return pick_device(f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu")


def prepare_images(cfg: TrainConfig, info: Distributed, echo: Callable[[str], None]) -> Path:
    """The face cache of ``data.images``, prepared now (once, at the model's input size) if it is not complete."""
    root = expand(cfg.data.images)
    out = expand(cfg.data.cache) if cfg.data.cache else default_cache_root() / f"{root.resolve().name}-folders"
    size = resolve_card(cfg.model.init)[0].input_size if cfg.model.init else cfg.model.input_size
    if (out / "meta.json").exists() and FaceCache(out).complete:
        return out
    if info.world_size > 1:
        raise FaceverifyError(f"{out}: run `faceverify prepare {root} --out {out} --size {size}` before torchrun")
    echo(f"preparing the faces of {root} into {out} (once; later runs reuse it)")
    prepare(list_identity_folders(root), out, scaled_geometries([size]), workers=default_workers())
    return out


@dataclass
class ModelSetup:
    """The network and everything a model card needs to describe how it is fed."""

    network: nn.Module
    input_size: int
    template: list[list[float]]
    mean: list[float]
    std: list[float]


def build_model(cfg: TrainConfig, cache: FaceCache) -> ModelSetup:
    """The configured network: initialised from a shipped model's weights and card (``model.init``) or fresh."""
    m = cfg.model
    if m.init:
        card, _ = resolve_card(m.init)
        if card.architecture != m.architecture or card.embedding_size != m.embedding_size:
            raise FaceverifyError(
                f"model.init {m.init!r} is a {card.architecture} with {card.embedding_size}-d output, not "
                f"{m.architecture} with {m.embedding_size}-d"
            )
        _check_template(cache, card, m.init)
        network = Embedder.load(m.init, "cpu").network
        return ModelSetup(network, card.input_size, card.template, list(card.mean), list(card.std))
    network = networks.build(m.architecture, m.embedding_size)
    return ModelSetup(network, m.input_size, cache.template(m.input_size), list(m.mean), list(m.std))


def _check_template(cache: FaceCache, card: ModelCard, name: str) -> None:
    """A shipped model can only see the cache's crops if they were cut with its template at its input size."""
    if not np.allclose(cache.template(card.input_size), card.template, atol=1e-3):
        raise FaceverifyError(f"{cache.dir}: its {card.input_size}px template differs from {name}'s card")


def teacher_embeddings(cfg: TrainConfig, cache: FaceCache, device: torch.device) -> torch.Tensor | None:
    """The teacher's L2-normalised embedding of every cache row (without augmentation), or None without a
    teacher. Distillation pulls the student's view of an augmented crop towards these. They are computed once
    per teacher and kept beside the crops (``teacher-<model id>.npy``), so resumed and later runs reuse them."""
    name = cfg.objective.teacher
    if not name:
        return None
    teacher = Embedder.load(name, device)
    if teacher.card.embedding_size != cfg.model.embedding_size:
        raise FaceverifyError(f"teacher {name} has {teacher.card.embedding_size}-d embeddings, the student "
                              f"{cfg.model.embedding_size}-d")
    _check_template(cache, teacher.card, name)
    crops = cache.crops(teacher.card.input_size)
    stored = cache.dir / f"teacher-{teacher.card.model_id.replace('@', '-').replace(':', '-')}.npy"
    shape = (len(crops), teacher.card.embedding_size)
    try:
        vectors = np.load(stored, allow_pickle=False)
    except (OSError, ValueError):
        vectors = None
    if vectors is None or vectors.shape != shape or vectors.dtype != np.float32 or not np.isfinite(vectors).all():
        chunks = [teacher.embed(np.ascontiguousarray(crops[i : i + 256]), batch_size=64) for i in range(0, len(crops), 256)]
        vectors = np.concatenate(chunks)
        try:
            with replacing(stored) as tmp, open(tmp, "wb") as fh:
                np.save(fh, vectors)
        except OSError:
            pass  # a read-only cache still trains; the embeddings are recomputed next time
    return torch.from_numpy(vectors).to(device)


def param_groups(network: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Optimiser groups per stage (``stage_groups()``): the first ``freeze_stages`` frozen, the body at
    ``body_lr_scale``, the last trained stage at the full rate; no weight decay on 1-d parameters (norms, biases).
    With ``train_stages`` only the first that many groups train. The last group is always the last trained
    stage's (``lr_scale`` 1)."""
    o = cfg.optim
    if hasattr(network, "stage_groups"):
        stages: list[list[nn.Parameter]] = network.stage_groups()
    elif o.freeze_stages or o.train_stages or o.body_lr_scale != 1.0:
        raise FaceverifyError(f"{cfg.model.architecture} has no stage_groups(): "
                              "freeze_stages/train_stages/body_lr_scale unsupported")
    else:
        stages = [list(network.parameters())]
    trained = min(o.train_stages or len(stages), len(stages))
    if o.freeze_stages >= trained:
        raise FaceverifyError(f"optim.freeze_stages={o.freeze_stages} with train_stages={o.train_stages} would "
                              f"freeze all {len(stages)} stage groups")
    groups: list[dict[str, Any]] = []
    for i, params in enumerate(stages):
        if not o.freeze_stages <= i < trained:
            for p in params:
                p.requires_grad_(False)
            continue
        scale = 1.0 if i == trained - 1 else o.body_lr_scale
        for decay, chosen in ((o.weight_decay, [p for p in params if p.ndim > 1]), (0.0, [p for p in params if p.ndim <= 1])):
            if chosen:
                groups.append(dict(params=chosen, lr=o.lr * scale, lr_scale=scale, weight_decay=decay, stage=i))
    return groups


def build_optimizer(network: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, or Nesterov SGD, over :func:`param_groups`."""
    groups = param_groups(network, cfg)
    if cfg.optim.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.optim.lr, momentum=cfg.optim.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.optim.lr)


def lr_factor(step: int, total: int, warmup: int, floor: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``floor`` at ``total`` (and ``floor`` after)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int, start: int = 0) -> LambdaLR:
    """The per-step schedule: each group at ``optim.lr * lr_scale * lr_factor(step)``, positioned so that the
    group rates are those of step ``start`` (a resumed run's ``global_step``); ``step()`` it after each
    optimiser step. The factor is a function of the step alone, so the scheduler needs no saved state."""
    o = cfg.optim
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", o.lr * group["lr_scale"])  # a resumed optimiser may predate the scheduler
    factor = partial(lr_factor, total=total_steps, warmup=o.warmup_steps, floor=o.min_lr_ratio)
    return LambdaLR(optimizer, factor, last_epoch=start - 1)
