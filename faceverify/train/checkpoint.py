"""Checkpoints: ``<kind>.safetensors`` (tensors: ``model.*``, ``optim.*``, ``objective.*``) beside
``<kind>.json`` (configuration, loop state, model card, validation report, the optimiser's non-tensor state and
the memory banks' positions). No pickles; both files are replaced atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .._util import replacing, write_atomic
from ..errors import FaceverifyError
from .config import TrainConfig, stored_config

if TYPE_CHECKING:
    from .objective import Objective

CHECKPOINT_FORMAT = 1
RESUME_MUST_MATCH = ("seed", "data", "augment", "model", "objective", "optim")
"""Config sections a resumed run must share with its checkpoint (``run`` and ``validation`` may change)."""


def weights_of(network: nn.Module) -> dict[str, torch.Tensor]:
    """The network's state dict as contiguous CPU tensors (what safetensors stores)."""
    return {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser state dict as tensors (``optim.<param>.<key>``) and a JSON-able rest (groups, scalars)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, dict(param_groups=state["param_groups"], scalars=scalars)


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The optimiser state dict :func:`flatten_optimizer` took apart."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return dict(state=state, param_groups=meta["param_groups"])


def save_checkpoint(
    directory: Path,
    kind: str,
    meta: dict[str, Any],
    network: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    objective: Objective | None = None,
) -> None:
    """Write ``directory/kind.*``: the network's weights and ``meta``, plus (for a resumable checkpoint) the
    optimiser's state and the objective's buffers and memory positions."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in weights_of(network).items()}
    meta = dict(format=CHECKPOINT_FORMAT, kind=kind, **meta)
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = flatten_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
    if objective is not None:
        tensors.update({f"objective.{k}": v.detach().cpu().contiguous() for k, v in objective.state_dict().items()})
        meta["memory"] = objective.memory_state()
    with replacing(directory / f"{kind}.safetensors") as tmp:
        save_file(tensors, str(tmp))
    write_atomic(directory / f"{kind}.json", json.dumps(meta, indent=1))


def read_resumable(directory: Path, cfg: TrainConfig, world_size: int) -> dict[str, Any] | None:
    """The metadata of ``directory/last.json`` (None when there is none), after checking that a run with
    ``cfg`` on ``world_size`` processes may continue from it."""
    path = directory / "last.json"
    if not path.exists():
        return None
    meta = json.loads(path.read_text())
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise FaceverifyError(f"{path}: checkpoint format {meta.get('format')} is not {CHECKPOINT_FORMAT}")
    saved = stored_config(meta["config"]).to_dict()
    now = cfg.to_dict()
    changed = [k for k in RESUME_MUST_MATCH if saved[k] != now[k]]
    if changed or saved["run"]["steps_per_epoch"] != now["run"]["steps_per_epoch"]:
        raise FaceverifyError(f"{path}: the config differs from the checkpoint's in {changed or ['run.steps_per_epoch']}")
    if meta["world_size"] != world_size:
        raise FaceverifyError(f"{path}: written by {meta['world_size']} process(es), resumed with {world_size}")
    return meta


def load_resumable(
    directory: Path,
    meta: dict[str, Any],
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    objective: Objective,
    device: torch.device,
) -> None:
    """Load ``directory/last.safetensors`` (whose metadata is ``meta``) into the network, optimiser and objective."""
    tensors = load_file(str(directory / "last.safetensors"), device=str(device))
    network.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    optimizer.load_state_dict(unflatten_optimizer(tensors, meta["optimizer"]))
    objective.load_state_dict({k[10:]: v for k, v in tensors.items() if k.startswith("objective.")}, strict=True)
    objective.load_memory_state(meta["memory"])
