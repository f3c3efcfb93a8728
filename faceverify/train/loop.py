"""The training loop: optimiser and schedule, bf16/channels_last/compile on CUDA, DDP under torchrun,
checkpoints (safetensors + JSON, never pickles) with exact resume, per-epoch validation and a metrics log.

Run directory (``run.out``)::

    config.json                 the resolved configuration
    metrics.jsonl               one JSON object per logged step and per epoch
    checkpoints/last.*          weights + optimiser + memory bank (.safetensors) and loop state (.json)
    checkpoints/best.*          the weights with the best validation accuracy (.safetensors) and its report

Resuming regenerates the interrupted epoch's batch plan from the seed and skips the batches already done;
augmentation draws are seeded per (seed, rank, step), so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn

from .. import networks
from ..detect import pick_device
from ..embed import Embedder, resolve_card
from ..errors import FaceverifyError
from ..modelcard import ModelCard
from ..pairs import find_lfw_root
from .config import TrainConfig, config_from_dict, expand
from .data import BatchAugment, IdentityBatches, TrainImages, _seed
from .objective import Objective
from .prepare import FaceCache, default_cache_root, default_workers, list_identity_folders, prepare, scaled_geometries
from .validate import CachedFrontEnd, run_validation

CHECKPOINT_FORMAT = 1
RESUME_MUST_MATCH = ("seed", "data", "augment", "model", "objective", "optim")
"""Config sections a resumed run must share with its checkpoint (``run`` and ``validation`` may change)."""


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


@dataclass
class LoopState:
    """Where training stands: ``step`` counts batches done in ``epoch``; ``global_step`` all batches."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    best_score: float | None = None
    best_epoch: int | None = None


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
            with open(f"{stored}.tmp", "wb") as fh:
                np.save(fh, vectors)
            os.replace(f"{stored}.tmp", stored)
        except OSError:
            pass  # a read-only cache still trains; the embeddings are recomputed next time
    return torch.from_numpy(vectors).to(device)


def param_groups(network: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Optimiser groups per stage (``stage_groups()``): the first ``freeze_stages`` frozen, the body at
    ``body_lr_scale``, the last stage at the full rate; no weight decay on 1-d parameters (norms, biases)."""
    o = cfg.optim
    if hasattr(network, "stage_groups"):
        stages: list[list[nn.Parameter]] = network.stage_groups()
    elif o.freeze_stages or o.body_lr_scale != 1.0:
        raise FaceverifyError(f"{cfg.model.architecture} has no stage_groups(): freeze_stages/body_lr_scale unsupported")
    else:
        stages = [list(network.parameters())]
    if o.freeze_stages >= len(stages):
        raise FaceverifyError(f"optim.freeze_stages={o.freeze_stages} would freeze all {len(stages)} stage groups")
    groups: list[dict[str, Any]] = []
    for i, params in enumerate(stages):
        if i < o.freeze_stages:
            for p in params:
                p.requires_grad_(False)
            continue
        scale = 1.0 if i == len(stages) - 1 else o.body_lr_scale
        for decay, chosen in ((o.weight_decay, [p for p in params if p.ndim > 1]), (0.0, [p for p in params if p.ndim <= 1])):
            if chosen:
                groups.append(dict(params=chosen, lr=o.lr * scale, lr_scale=scale, weight_decay=decay, stage=i))
    return groups


def build_optimizer(network: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(network, cfg)
    if cfg.optim.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.optim.lr, momentum=cfg.optim.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.optim.lr)


def lr_factor(step: int, total: int, warmup: int, floor: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``floor`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


# ------------------------------------------------------------------------------------------ checkpoints


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, dict(param_groups=state["param_groups"], scalars=scalars)


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return dict(state=state, param_groups=meta["param_groups"])


def weights_of(network: nn.Module) -> dict[str, torch.Tensor]:
    """The network's state dict as contiguous CPU tensors (what safetensors stores)."""
    return {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}


# ---------------------------------------------------------------------------------------------- trainer


class Trainer:
    """One training run described by a :class:`TrainConfig`; ``run()`` trains, validates and checkpoints."""

    def __init__(self, cfg: TrainConfig, distributed: Distributed | None = None, echo: Callable[[str], None] = print):
        self.cfg = cfg
        self.dist = distributed or Distributed()
        self.echo = echo if self.dist.main else (lambda _msg: None)
        if cfg.run.threads > 0:
            torch.set_num_threads(cfg.run.threads)
        if cfg.run.device == "auto":
            self.device = pick_device(f"cuda:{self.dist.local_rank}" if torch.cuda.is_available() else "cpu")
        else:
            self.device = torch.device(cfg.run.device)
        self.cuda = self.device.type == "cuda"
        torch.manual_seed(cfg.seed)
        self.cache = FaceCache(expand(cfg.data.cache))
        if not self.cache.complete:
            raise FaceverifyError(f"{self.cache.dir}: prepare has not finished (run it again to complete the cache)")
        setup = build_model(cfg, self.cache)
        self.card = ModelCard(
            name=cfg.name, architecture=cfg.model.architecture, input_size=setup.input_size, template=setup.template,
            mean=setup.mean, std=setup.std, embedding_size=cfg.model.embedding_size,
            weights=f"{cfg.name}.safetensors", weights_sha256="0" * 64,  # the real digest is written at export
        )
        self.images = TrainImages(self.cache, setup.input_size, cfg.data.include_no_face)
        d = cfg.data
        self.batches = IdentityBatches(
            self.images.labels, d.batch_size, d.m_per_class, d.singletons_per_batch, cfg.seed,
            self.dist.rank, self.dist.world_size, cfg.run.steps_per_epoch,
        )
        self.channels_last = cfg.run.channels_last == "always" or (self.cuda and cfg.run.channels_last == "cuda")
        self.network = setup.network.to(self.device)
        if self.channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.network, cfg)
        model: nn.Module = self.network
        if self.dist.world_size > 1:
            model = nn.parallel.DistributedDataParallel(
                self.network, device_ids=[self.device.index] if self.cuda else None
            )
        self.model: Callable[[torch.Tensor], torch.Tensor] = torch.compile(model) if (cfg.run.compile and self.cuda) else model
        self.objective = Objective(cfg.objective, cfg.model.embedding_size).to(self.device)
        self.teacher = teacher_embeddings(cfg, self.cache, self.device)
        self.generator = torch.Generator(device=self.device)
        self.augment = BatchAugment(cfg.augment, tuple(setup.mean), tuple(setup.std), self.generator)
        self.state = LoopState()
        self.out = expand(cfg.run.out)
        self.total_steps = cfg.run.epochs * self.batches.steps

    # -- persistence -------------------------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoints"

    def save(self, kind: str, report: dict[str, Any] | None = None) -> None:
        """Write checkpoint ``kind`` ("last": everything needed to resume; "best": weights and report)."""
        if not self.dist.main:
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v for k, v in weights_of(self.network).items()}
        meta: dict[str, Any] = dict(
            format=CHECKPOINT_FORMAT, kind=kind, config=self.cfg.to_dict(), state=asdict(self.state),
            card=json.loads(self.card.to_json()), validation=report, world_size=self.dist.world_size,
        )
        if kind == "last":
            opt_tensors, meta["optimizer"] = _flatten_optimizer(self.optimizer.state_dict())
            tensors.update(opt_tensors)
            tensors.update({f"objective.{k}": v.detach().cpu().contiguous() for k, v in self.objective.state_dict().items()})
            meta["memory"] = self.objective.memory_state()
        base = self.checkpoint_dir / kind
        save_file(tensors, str(base) + ".safetensors.tmp")
        os.replace(str(base) + ".safetensors.tmp", str(base) + ".safetensors")
        Path(str(base) + ".json.tmp").write_text(json.dumps(meta, indent=1))
        os.replace(str(base) + ".json.tmp", str(base) + ".json")

    def resume(self) -> bool:
        """Load ``checkpoints/last`` if present (False when there is none); the config must match it."""
        base = self.checkpoint_dir / "last"
        if not Path(str(base) + ".json").exists():
            return False
        meta = json.loads(Path(str(base) + ".json").read_text())
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise FaceverifyError(f"{base}.json: checkpoint format {meta.get('format')} is not {CHECKPOINT_FORMAT}")
        saved = config_from_dict(meta["config"]).to_dict()
        now = self.cfg.to_dict()
        changed = [k for k in RESUME_MUST_MATCH if saved[k] != now[k]]
        if changed or saved["run"]["steps_per_epoch"] != now["run"]["steps_per_epoch"]:
            raise FaceverifyError(f"{base}.json: the config differs from the checkpoint's in {changed or ['run.steps_per_epoch']}")
        if meta["world_size"] != self.dist.world_size:
            raise FaceverifyError(f"{base}.json: written by {meta['world_size']} process(es), resumed with {self.dist.world_size}")
        tensors = load_file(str(base) + ".safetensors", device=str(self.device))
        self.network.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
        self.optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
        self.objective.load_state_dict({k[10:]: v for k, v in tensors.items() if k.startswith("objective.")}, strict=True)
        self.objective.load_memory_state(meta["memory"])
        self.state = LoopState(**meta["state"])
        return True

    # -- training ----------------------------------------------------------------------------------

    def batch(self, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Crops, labels and (when distilling) the teacher's embeddings of the images at positions ``items``."""
        crops, labels = self.images.load(items)
        if self.teacher is None:
            return crops, labels, None
        return crops, labels, self.teacher[torch.from_numpy(self.images.rows[items]).to(self.device)]

    def train_step(self, crops: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None = None) -> dict[str, float]:
        """One optimiser step on a batch (``teacher``: the teacher's embeddings of its images, for distillation);
        returns the loss, its statistics, the learning rate and grad norm."""
        o = self.cfg.optim
        factor = lr_factor(self.state.global_step, self.total_steps, o.warmup_steps, o.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = o.lr * group["lr_scale"] * factor
        self.generator.manual_seed(_seed(self.cfg.seed, self.dist.rank, self.state.global_step))
        x = self.augment(crops)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda and self.cfg.run.amp):
            embeddings = self.model(x)
        loss, stats = self.objective(embeddings.float(), labels.to(self.device, non_blocking=True), teacher)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainable = [p for g in self.optimizer.param_groups for p in g["params"]]
        norm = torch.nn.utils.clip_grad_norm_(trainable, o.grad_clip if o.grad_clip > 0 else float("inf"))
        self.optimizer.step()
        return dict(loss=float(loss.detach()), lr=o.lr * factor, grad_norm=float(norm), **stats)

    def validate(self) -> dict[str, Any] | None:
        """The validation report (rank 0; other ranks get None), with the network back in training mode."""
        if not self.dist.main:
            return None
        v = self.cfg.validation
        root = None if v.lfw_root == "none" or v.pairs else find_lfw_root(v.lfw_root or None)
        pairs = expand(v.pairs) if v.pairs else None
        if root is None and pairs is None:
            return None
        caches = [self.cache, *(FaceCache(expand(c)) for c in v.extra_caches)]
        front = CachedFrontEnd(Embedder(self.card, self.network, self.device), caches)
        try:
            return run_validation(front, root, pairs, self.cache.face)
        finally:
            self.network.train()

    def _log(self, record: dict[str, Any]) -> None:
        if self.dist.main:
            with open(self.out / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(dict(time=round(time.time(), 1), **record)) + "\n")

    def run(self, stop_after: int | None = None, progress: bool = True) -> dict[str, Any]:
        """Train to ``run.epochs`` (or until ``global_step`` reaches ``stop_after``, then checkpoint and stop)."""
        cfg = self.cfg
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
        self.network.train()
        bar = _EpochBar(enabled=progress and self.dist.main and sys.stderr.isatty())
        window: list[dict[str, float]] = []
        while self.state.epoch < cfg.run.epochs:
            plan = self.batches.epoch(self.state.epoch)
            bar.start(f"epoch {self.state.epoch + 1}/{cfg.run.epochs}", len(plan), self.state.step)
            tick, seen = time.perf_counter(), 0
            while self.state.step < len(plan):
                crops, labels, teacher = self.batch(plan[self.state.step])
                stats = self.train_step(crops, labels, teacher)
                self.state.step += 1
                self.state.global_step += 1
                seen += len(labels)
                window.append(stats)
                bar.advance(stats["loss"])
                if self.state.global_step % cfg.run.log_every == 0:
                    elapsed = time.perf_counter() - tick
                    record = {k: float(np.nanmean([w[k] for w in window if k in w])) for k in window[-1]}
                    self._log(dict(kind="step", epoch=self.state.epoch, step=self.state.step,
                                   global_step=self.state.global_step,
                                   images_per_s=seen * self.dist.world_size / max(elapsed, 1e-9), **record))
                    window, tick, seen = [], time.perf_counter(), 0
                if cfg.run.checkpoint_every and self.state.global_step % cfg.run.checkpoint_every == 0:
                    self.save("last")
                if stop_after is not None and self.state.global_step >= stop_after:
                    self.save("last")
                    bar.stop()
                    return self.summary()
            bar.stop()
            self._end_epoch()
        return self.summary()

    def _end_epoch(self) -> None:
        report = self.validate()
        if self.dist.world_size > 1:
            dist.barrier()
        epoch = self.state.epoch
        self.state.epoch, self.state.step = epoch + 1, 0
        score = None if report is None else float(report["accuracy"])
        improved = self.state.best_score is None or (score is not None and score > self.state.best_score)
        if improved:
            self.state.best_score, self.state.best_epoch = score, epoch
        if improved or score is None:  # without validation, the latest epoch is the best
            self.save("best", report)
        self.save("last", report)
        keys = ("accuracy", "threshold", "auc", "eer", "tar_at_far", "protocol", "images", "no_face")
        brief = None if report is None else {k: report[k] for k in keys if k in report}
        self._log(dict(kind="epoch", epoch=epoch, global_step=self.state.global_step, validation=brief,
                       best_epoch=self.state.best_epoch, best_score=self.state.best_score))
        if report is None:
            self.echo(f"epoch {epoch + 1}/{self.cfg.run.epochs}: no validation (the latest epoch is kept as best)")
        else:
            best = self.state.best_epoch + 1 if self.state.best_epoch is not None else "-"
            self.echo(f"epoch {epoch + 1}/{self.cfg.run.epochs}: validation accuracy {score:.4f} "
                      f"({report['protocol']}, {report['images']} images); best epoch {best}")

    def summary(self) -> dict[str, Any]:
        return dict(out=str(self.out), **asdict(self.state))


class _EpochBar:
    """A rich progress bar per epoch on stderr, showing the running loss."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._progress: Any = None

    def start(self, label: str, total: int, done: int) -> None:
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(),
                                  console=Console(stderr=True), transient=True)
        self._progress.start()
        self._task = self._progress.add_task(label, total=total, completed=done, loss="-")

    def advance(self, loss: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, loss=f"{loss:.4f}")

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


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


def train(cfg: TrainConfig, resume: bool = False, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Train as configured (joining a torchrun job when there is one); returns where training ended."""
    info = init_distributed()
    try:
        if cfg.data.images:
            cfg.data.cache = str(prepare_images(cfg, info, echo))
        trainer = Trainer(cfg, info, echo)
        if resume and trainer.resume():
            trainer.echo(f"resumed at epoch {trainer.state.epoch + 1}, step {trainer.state.step}")
        elif (trainer.checkpoint_dir / "last.json").exists():
            raise FaceverifyError(f"{trainer.out} already holds a run: pass --resume, or choose another run.out")
        return trainer.run()
    finally:
        if info.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
