"""Export: a run's best checkpoint becomes ``<models>/<name>.safetensors`` plus its model card.

The card records the data, configuration, losses and epochs; thresholds calibrated with
:mod:`faceverify.eval.calibrate` on every pair of the training cache (LFW DevTrain for the shipped configs: these
identities were *seen in training*, so the thresholds are optimistic and the card says so); and, when LFW is
available, DevTrain and DevTest figures from :func:`faceverify.eval.evaluate.evaluate_lfw`, with the DevTest FAR
actually measured at the calibrated FAR=1e-3 threshold.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .. import networks
from .._util import pick_device, sha256_file
from ..embed import Embedder
from ..errors import FaceverifyError
from ..eval.cache import embed_paths
from ..eval.calibrate import CALIBRATION_FARS, all_pair_scores, calibrate_scores
from ..detect import alignment_of
from ..modelcard import ModelCard, user_models_dir
from .config import expand, stored_config
from .prepare import UNREADABLE, FaceCache
from .validate import CachedFrontEnd

REPORT_KEYS = ("accuracy", "threshold", "threshold_source", "auc", "eer", "tar_at_far", "pairs", "images", "no_face",
               "at_card_threshold")


def load_best(run_dir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The best checkpoint's metadata and network weights."""
    base = run_dir / "checkpoints" / "best"
    try:
        meta = json.loads(Path(str(base) + ".json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FaceverifyError(f"{run_dir}: no best checkpoint ({exc})") from None
    tensors = load_file(str(base) + ".safetensors")
    return meta, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}


def calibrate_on_cache(front: CachedFrontEnd, cache: FaceCache) -> tuple[dict[str, float], dict[str, Any]]:
    """Thresholds for the FARs the cache's impostor pairs can support, from every pair of its usable images."""
    usable = np.flatnonzero(cache.status != UNREADABLE)
    every = cache.absolute_paths()
    paths = [every[i] for i in usable]
    vectors, detected = embed_paths(front, paths, cache.face)  # type: ignore[arg-type]
    genuine, impostor = all_pair_scores(vectors, cache.labels[usable])
    fars = [f for f in CALIBRATION_FARS if impostor.size * f >= 1]
    if not fars or genuine.size == 0:
        return {}, dict(skipped=f"{genuine.size} genuine and {impostor.size} impostor pairs are too few to calibrate")
    thresholds, record = calibrate_scores(genuine, impostor, fars)
    # Impostors at a cosine of 1 (a collapsed model) put the threshold at 1 or above: no threshold reaches that FAR.
    unreachable = sorted(k for k, t in thresholds.items() if t > 1 or (t >= 1 and record["achieved_far"][k] > float(k)))
    for key in unreachable:
        del thresholds[key], record["tar_at_threshold"][key], record["achieved_far"][key]
    record["far_curve"] = [p for p in record["far_curve"] if p[0] < 1]
    if unreachable:
        record["unreachable_fars"] = f"{', '.join(unreachable)}: impostor pairs score a cosine of 1 (a collapsed model)"
    record.update(
        data=f"face cache {cache.meta['selection']} ({cache.meta['root']}): all same-identity pairs genuine, all "
             "cross-identity pairs impostors; these identities were seen in training, so the thresholds are "
             "optimistic (see evaluation.lfw_devtest.at_card_threshold for the FAR measured on unseen people)",
        images=len(paths), identities=int(len(np.unique(cache.labels[usable]))), no_face=int((~detected).sum()),
        face_choice=cache.face,
        date=_dt.date.today().isoformat(),
    )
    return thresholds, record


def cache_front_end(cache: FaceCache) -> dict[str, Any]:
    """What a card records of the front end that made a face cache: its detector, settings and alignment."""
    settings = {k: v for k, v in cache.meta.get("detector", {}).items() if k not in ("kind", "name")}
    return dict(detector=cache.detector_kind, settings=settings, faces=f"the face cache {cache.dir.name}",
                alignment=alignment_of(cache.detector_kind), runtime="torch")


def export_run(
    run_dir: Path,
    name: str | None = None,
    directory: Path | None = None,
    lfw_root: Path | None = None,
    extra_caches: Sequence[Path] = (),
    device: str | None = None,
    force: bool = False,
    notes: str = "",
    progress: Callable[[str], None] = lambda _msg: None,
    calibrate: bool = True,
    amend: Callable[[ModelCard], None] = lambda _card: None,
    transform: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write the best checkpoint of ``run_dir`` as model ``name`` (default: the run's name); returns the card path.

    ``calibrate`` False leaves the card without thresholds (a model trained without labels: `faceverify
    calibrate` must be run before it decides anything); ``amend`` may add to the card before it is saved;
    ``transform`` maps the checkpoint's weights to those exported (adapt's interpolation toward its base).
    The weights file is removed again if the card cannot be completed: no weights without their card.
    """
    meta, weights = load_best(run_dir)
    if transform is not None:
        weights = transform(weights)
    cfg = stored_config(meta["config"])
    name = name or cfg.name
    directory = directory or user_models_dir()
    card_path, weights_path = directory / f"{name}.json", directory / f"{name}.safetensors"
    if not force and (card_path.exists() or weights_path.exists()):
        raise FaceverifyError(f"{card_path} exists: choose another --name or pass --force")
    network = networks.build(cfg.model.architecture, cfg.model.embedding_size)
    network.load_state_dict(weights, strict=True)
    cache = FaceCache(expand(cfg.data.cache))
    directory.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(weights_path))
    weights_path.chmod(0o644)  # safetensors writes 0600; a model is meant to be read by everyone who runs it
    try:
        card = _describe(meta, run_dir, name, weights_path, cache, notes)
        caches = [cache, *(FaceCache(p) for p in extra_caches)]
        front = CachedFrontEnd(Embedder(card, network, pick_device(device)), caches)
        card.front_end = dict(trained=cache_front_end(cache))
        if calibrate:
            progress("calibrating thresholds on the training cache")
            card = card.with_calibration(cache_front_end(cache), *calibrate_on_cache(front, cache))
        else:
            card.calibration = dict(skipped="trained without identity labels: run `faceverify calibrate --model "
                                            f"{name}` on labelled faces from the camera before using it")
        amend(card)
        if lfw_root is not None:
            from ..eval.evaluate import evaluate_lfw

            for protocol in ("devtrain", "devtest"):
                progress(f"evaluating on LFW {protocol}")
                report = evaluate_lfw(front, lfw_root, protocol, face=cache.face)
                card.evaluation[f"lfw_{protocol}"] = {k: report[k] for k in REPORT_KEYS if k in report}
            card.evaluation["note"] = ("LFW View 1: trained on peopleDevTrain identities, threshold chosen on "
                                       "pairsDevTrain, reported on pairsDevTest (disjoint people)")
            kinds = "+".join(sorted({c.detector_kind for c in caches}))
            card.evaluation["front_end"] = (f"{kinds} detections of the face caches for the images they hold, the "
                                            "live pipeline's for the rest; torch runtime")
        card.validate(str(card_path))
        card.save(card_path)
    except BaseException:
        weights_path.unlink(missing_ok=True)
        raise
    return card_path


def _describe(meta: dict[str, Any], run_dir: Path, name: str, weights_path: Path, cache: FaceCache, notes: str) -> ModelCard:
    """The card of an exported checkpoint, before calibration and evaluation: geometry, data, objective, epochs."""
    cfg, base, state, report = meta["config"], meta["card"], meta["state"], meta.get("validation")
    last = run_dir / "checkpoints" / "last.json"
    epochs_run = json.loads(last.read_text())["state"]["epoch"] if last.exists() else state["epoch"]
    losses = [
        dict(type=s["type"], weight=s["weight"],
             **({"margin": s["margin"]} if s["type"] == "triplet" else {"temperature": s["temperature"]}))
        for s in cfg["objective"]["losses"]
    ]
    return ModelCard(
        name=name, architecture=base["architecture"], input_size=base["input_size"], template=base["template"],
        mean=base["mean"], std=base["std"], embedding_size=base["embedding_size"], weights=weights_path.name,
        weights_sha256=sha256_file(weights_path), notes=notes,
        provenance=dict(
            trained_by="faceverify train", run=str(run_dir), init=cfg["model"]["init"] or "random (trained from scratch)",
            data=dict(cache=cfg["data"]["cache"], selection=cache.meta["selection"], root=cache.meta["root"],
                      images=len(cache.paths), identities=len(cache.names)),
            losses=losses, miner=cfg["objective"]["miner"], memory_size=cfg["objective"]["memory_size"],
            teacher=cfg["objective"]["teacher"] or None,
            epochs_run=epochs_run, best_epoch=None if state["best_epoch"] is None else state["best_epoch"] + 1,
            checkpoint_selection="no validation: the last epoch" if report is None else
            f"best validation accuracy at an epoch end ({report['protocol']}: {report['accuracy']:.4f})",
            config=cfg,
        ),
    )
