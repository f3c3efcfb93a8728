""":func:`adapt`: unlabelled faces in, a new model with its card out (gather -> train -> score -> export).

The card says what the model was adapted from, on how many faces, with what objective, and how it scored by
the measures that need no labels (:func:`label_free_scores`). It carries no thresholds: nothing here knows who
is who, so `faceverify calibrate` (on labelled faces from the same camera) must run before the model decides.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..api import FaceVerifier
from ..embed import Embedder
from ..errors import FaceverifyError
from ..modelcard import ModelCard, resolve_card, user_models_dir
from ..train.data import BatchAugment
from ..train.export import export_run
from ..train.loop import Progress
from ..train.prepare import Listing, keyed_cache_dir
from .faces import list_faces, prepare_faces, video_sources
from .video import track_faces
from .run import AdaptTrainer, adapt_config, toward_base
from .settings import AdaptSettings

SCORE_FACES = 512


def label_free_scores(trainer: AdaptTrainer, base: torch.nn.Module, count: int = SCORE_FACES) -> dict[str, Any]:
    """On up to ``count`` of the faces, for the base and the adapted network: ``view_agreement``, the mean cosine
    between two augmented views of one face (higher: more invariant to the camera), ``spread``, the mean cosine
    between different faces (lower: faces kept apart), and the adapted model's mean cosine to the base on the
    faces as they are (``anchor_cosine``: how far adaptation moved)."""
    images = trainer.images
    rows = np.random.default_rng(0).permutation(len(images))[:count]
    crops, _ = images.load(np.sort(rows))
    generator = torch.Generator(device=trainer.device)
    augment = BatchAugment(trainer.cfg.augment, tuple(trainer.card.mean), tuple(trainer.card.std), generator)
    generator.manual_seed(1)
    views = [augment(crops), augment(crops)]
    plain = augment.normalise(crops)
    out: dict[str, Any] = dict(faces=len(rows))
    embedded: dict[str, torch.Tensor] = {}
    trainer.network.eval()
    try:
        with torch.no_grad():
            for label, net in (("base", base), ("adapted", trainer.network)):
                a, b = (F.normalize(torch.cat([net(v[i : i + 64]) for i in range(0, len(v), 64)]), dim=1) for v in views)
                sim = a @ b.T
                off = ~torch.eye(len(a), dtype=torch.bool, device=a.device)
                out[label] = dict(view_agreement=round(float(sim.diagonal().mean()), 4),
                                  spread=round(float(sim[off].mean()), 4))
                embedded[label] = F.normalize(torch.cat([net(plain[i : i + 64]) for i in range(0, len(plain), 64)]), dim=1)
    finally:
        trainer.network.train()
    out["anchor_cosine"] = round(float((embedded["base"] * embedded["adapted"]).sum(1).mean()), 4)
    return out


def adapt_cache_dir(listing: Listing, card: ModelCard) -> Path:
    """Where the faces of ``listing`` aligned for ``card`` are cached: one directory per folder (by its resolved
    path, so an identical copy elsewhere never collides with it), file list and crop geometry."""
    key = [str(listing.root.resolve()), listing.digest(), card.input_size, card.template]
    return keyed_cache_dir("adapt", key, f"-{card.input_size}")


def adapt(
    sources: Sequence[str | Path],
    settings: AdaptSettings,
    ordinary: Sequence[str | Path] = (),
    models: Path | None = None,
    resume: bool = False,
    force: bool = False,
    echo: Callable[[str], None] = print,
    progress: Progress | None = None,
) -> Path:
    """Adapt ``settings.base`` to the faces of ``sources`` and export it as ``settings.name``; returns its card.
    ``ordinary``: photos in ordinary light (files, folders) on which the base model's embeddings are kept."""
    card, _ = resolve_card(settings.base)
    target = (models or user_models_dir()) / f"{settings.name}.json"
    if target.exists() and not force:  # before hours of training, not after
        raise FaceverifyError(f"{target} exists: choose another --out or pass --force")
    tracks: list[Path] = []
    videos = video_sources(sources)
    tracker = FaceVerifier(settings.base, threads=settings.threads or None) if videos else None
    for video in videos:
        echo(f"following the faces of {video} (once; later runs reuse them)")
        tracks += track_faces(tracker, video)
    listing = list_faces(sources, tracks, ordinary)
    cache_dir = adapt_cache_dir(listing, card)
    echo(f"gathering the faces of {len(listing.paths)} images into {cache_dir} (once; later runs reuse it)")
    cache = prepare_faces(listing, settings.base, cache_dir)
    cfg = adapt_config(settings, str(cache.dir))
    trainer = AdaptTrainer(cfg, echo=echo, anchor_camera=settings.anchor_camera)
    if resume and trainer.resume():
        echo(f"resumed at epoch {trainer.state.epoch + 1}, step {trainer.state.step}")
    elif (trainer.checkpoint_dir / "last.json").exists():
        raise FaceverifyError(f"{trainer.out} already holds a run: pass --resume, or choose another --run")
    trainer.run(progress=progress)
    base = Embedder.load(settings.base, trainer.device).network
    blend = toward_base(base.state_dict(), settings.keep) if settings.keep != 1.0 else None
    if blend is not None:  # the label-free scores are the exported model's
        trainer.network.load_state_dict(blend(trainer.network.state_dict()))
    scores = label_free_scores(trainer, base)
    faces = len(trainer.images)
    ordinary_faces = int(trainer.ordinary.sum())

    def describe(new: ModelCard) -> None:
        new.provenance.update(
            trained_by="faceverify adapt (self-supervised, no identity labels)",
            adapted_from=dict(model=settings.base, model_id=card.model_id),
            unlabelled_faces=faces, ordinary_faces=ordinary_faces, images=len(listing.paths),
            no_face=int(len(listing.paths) - faces), sources=[str(Path(s)) for s in [*sources, *ordinary]][:20],
            videos=len(videos), video_tracks=len(tracks),
            kept_share_of_adaptation=settings.keep, camera_faces_anchored=settings.anchor_camera,
            trained_stage_groups=settings.train_stages or "all",
        )
        new.evaluation["label_free"] = scores

    notes = (f"{settings.base} adapted without labels to {faces} faces; uncalibrated until `faceverify calibrate` "
             "runs on labelled faces from the same camera")
    path = export_run(trainer.out, settings.name, models, None, (), None, force, notes,
                      echo, calibrate=False, amend=describe, transform=blend)
    (trainer.out / "label_free_scores.json").write_text(json.dumps(scores, indent=1))
    return path
