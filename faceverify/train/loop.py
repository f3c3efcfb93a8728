"""The training loop: bf16/channels_last/compile on CUDA, DDP under torchrun, per-step schedule, checkpoints
with exact resume, per-epoch validation and a metrics log. The parts it is built from are in
:mod:`~faceverify.train.setup`; the checkpoint files in :mod:`~faceverify.train.checkpoint`.

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
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..embed import Embedder
from ..errors import FaceverifyError
from ..eval.pairs import find_lfw_root
from ..modelcard import ModelCard
from .checkpoint import load_resumable, read_resumable, save_checkpoint
from .config import TrainConfig, expand
from .data import BatchAugment, IdentityBatches, TrainImages, _seed
from .objective import Objective
from .prepare import FaceCache
from .setup import (
    Distributed,
    build_model,
    build_optimizer,
    build_schedule,
    init_distributed,
    prepare_images,
    teacher_embeddings,
    training_device,
)
from .validate import CachedFrontEnd, run_validation

Progress = Callable[[int, int, dict[str, Any]], None]
"""``progress(done, total, info)``: ``done`` of the epoch's ``total`` steps; ``info`` has ``epoch`` (from 1),
``epochs`` and ``loss`` (the last step's, None at the epoch's start)."""


@dataclass
class LoopState:
    """Where training stands: ``step`` counts batches done in ``epoch``; ``global_step`` all batches."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    best_score: float | None = None
    best_epoch: int | None = None


class Trainer:
    """One training run described by a :class:`TrainConfig`; ``run()`` trains, validates and checkpoints."""

    def __init__(self, cfg: TrainConfig, distributed: Distributed | None = None, echo: Callable[[str], None] = print):
        self.cfg = cfg
        self.dist = distributed or Distributed()
        self.echo = echo if self.dist.main else (lambda _msg: None)
        if cfg.run.threads > 0:
            torch.set_num_threads(cfg.run.threads)
        self.device = training_device(cfg.run, self.dist)
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
        self.batches = self.plan_batches()
        self.channels_last = cfg.run.channels_last == "always" or (self.cuda and cfg.run.channels_last == "cuda")
        self.network = setup.network.to(self.device)
        if self.channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.network, cfg)
        self.total_steps = cfg.run.epochs * self.batches.steps
        self.scheduler = build_schedule(self.optimizer, cfg, self.total_steps)
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

    def plan_batches(self) -> IdentityBatches:
        """The per-epoch batch plans: identity-balanced (a subclass may plan otherwise)."""
        d = self.cfg.data
        return IdentityBatches(
            self.images.labels, d.batch_size, d.m_per_class, d.singletons_per_batch, self.cfg.seed,
            self.dist.rank, self.dist.world_size, self.cfg.run.steps_per_epoch,
        )

    # -- persistence -------------------------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoints"

    def save(self, kind: str, report: dict[str, Any] | None = None) -> None:
        """Write checkpoint ``kind`` ("last": everything needed to resume; "best": weights and report)."""
        if not self.dist.main:
            return
        meta = dict(config=self.cfg.to_dict(), state=asdict(self.state), card=json.loads(self.card.to_json()),
                    validation=report, world_size=self.dist.world_size)
        last = kind == "last"
        save_checkpoint(self.checkpoint_dir, kind, meta, self.network,
                        self.optimizer if last else None, self.objective if last else None)

    def resume(self) -> bool:
        """Load ``checkpoints/last`` if present (False when there is none); the config must match it."""
        meta = read_resumable(self.checkpoint_dir, self.cfg, self.dist.world_size)
        if meta is None:
            return False
        load_resumable(self.checkpoint_dir, meta, self.network, self.optimizer, self.objective, self.device)
        self.state = LoopState(**meta["state"])
        self.scheduler = build_schedule(self.optimizer, self.cfg, self.total_steps, start=self.state.global_step)
        return True

    # -- training ----------------------------------------------------------------------------------

    def batch(self, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Crops, labels and (when distilling) the teacher's embeddings of the images at positions ``items``."""
        crops, labels = self.images.load(items)
        if self.teacher is None:
            return crops, labels, None
        return crops, labels, self.teacher[torch.from_numpy(self.images.rows[items]).to(self.device)]

    def views(self, crops: torch.Tensor) -> torch.Tensor:
        """The network's input for a batch of uint8 crops: each augmented (a subclass may leave some as they are)."""
        return self.augment(crops)

    def plain_rows(self, rows: int) -> torch.Tensor | None:
        """Which of a batch's ``rows`` :meth:`views` left as they are (None: every one was augmented); a
        ``relation`` term compares only these."""
        return None

    def anchored_rows(self, labels: torch.Tensor) -> torch.Tensor | None:
        """Which rows of a batch (given its ``labels``) a ``distill`` term anchors to the teacher (None: every one)."""
        return None

    def train_step(self, crops: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None = None) -> dict[str, float]:
        """One optimiser step on a batch (``teacher``: the teacher's embeddings of its images, for distillation);
        returns the loss, its statistics, the learning rate (the head's: the last group's) and grad norm."""
        grad_clip = self.cfg.optim.grad_clip
        lr = self.optimizer.param_groups[-1]["lr"]
        self.generator.manual_seed(_seed(self.cfg.seed, self.dist.rank, self.state.global_step))
        x = self.views(crops)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda and self.cfg.run.amp):
            embeddings = self.model(x)
        loss, stats = self.objective(embeddings.float(), labels.to(self.device, non_blocking=True), teacher,
                                     self.plain_rows(len(crops)), self.anchored_rows(labels))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainable = [p for g in self.optimizer.param_groups for p in g["params"]]
        norm = torch.nn.utils.clip_grad_norm_(trainable, grad_clip if grad_clip > 0 else float("inf"))
        self.optimizer.step()
        self.scheduler.step()
        return dict(loss=float(loss.detach()), lr=lr, grad_norm=float(norm), **stats)

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

    def run(self, stop_after: int | None = None, progress: Progress | None = None) -> dict[str, Any]:
        """Train to ``run.epochs`` (or until ``global_step`` reaches ``stop_after``, then checkpoint and stop).

        ``progress`` (rank 0 only) is called at each epoch's start and after each of its steps; its last call
        for an epoch has ``done == total``, before the epoch is validated and reported through ``echo``."""
        cfg = self.cfg
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
        self.network.train()
        notify = progress if progress is not None and self.dist.main else (lambda _done, _total, _info: None)
        window: list[dict[str, float]] = []
        while self.state.epoch < cfg.run.epochs:
            plan = self.batches.epoch(self.state.epoch)
            where = dict(epoch=self.state.epoch + 1, epochs=cfg.run.epochs)
            notify(self.state.step, len(plan), dict(where, loss=None))
            tick, seen = time.perf_counter(), 0
            while self.state.step < len(plan):
                crops, labels, teacher = self.batch(plan[self.state.step])
                stats = self.train_step(crops, labels, teacher)
                self.state.step += 1
                self.state.global_step += 1
                seen += len(labels)
                window.append(stats)
                notify(self.state.step, len(plan), dict(where, loss=stats["loss"]))
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
                    return self.summary()
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
            v = self.cfg.validation
            why = "" if v.lfw_root or v.pairs else "LFW not found: set $FACEVERIFY_LFW or validation.lfw_root; "
            self.echo(f"epoch {epoch + 1}/{self.cfg.run.epochs}: no validation ({why}the latest epoch is kept as best)")
        else:
            best = self.state.best_epoch + 1 if self.state.best_epoch is not None else "-"
            self.echo(f"epoch {epoch + 1}/{self.cfg.run.epochs}: validation accuracy {score:.4f} "
                      f"({report['protocol']}, {report['images']} images); best epoch {best}")

    def summary(self) -> dict[str, Any]:
        return dict(out=str(self.out), **asdict(self.state))


def train(
    cfg: TrainConfig, resume: bool = False, echo: Callable[[str], None] = print, progress: Progress | None = None
) -> dict[str, Any]:
    """Train as configured (joining a torchrun job when there is one); returns where training ended.
    ``progress``: see :meth:`Trainer.run`."""
    info = init_distributed()
    try:
        if cfg.data.images:
            cfg.data.cache = str(prepare_images(cfg, info, echo))
        trainer = Trainer(cfg, info, echo)
        if resume and trainer.resume():
            trainer.echo(f"resumed at epoch {trainer.state.epoch + 1}, step {trainer.state.step}")
        elif (trainer.checkpoint_dir / "last.json").exists():
            raise FaceverifyError(f"{trainer.out} already holds a run: pass --resume, or choose another run.out")
        return trainer.run(progress=progress)
    finally:
        if info.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
