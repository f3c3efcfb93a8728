"""Training configuration: TOML (or JSON) files read into dataclasses; unknown keys are errors.

Relative paths are taken from the working directory; ``~`` is expanded. ``overrides`` such as
``["run.epochs=2", "optim.lr=3e-4"]`` replace single values (parsed as TOML values, bare words as strings).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import FaceverifyError

MINERS = ("none", "batch_hard", "semihard", "hard", "all", "multi_similarity")
LOSSES = ("triplet", "supcon", "distill", "relation", "ntxent")
TEACHER_LOSSES = ("distill", "relation")
RETIRED_KEYS = {"validation": ("batch_size",)}
"""Keys that configs no longer take (an error in a config file) but older checkpoints still record."""


@dataclass
class DataConfig:
    """Which face cache to train on and how batches are made. With ``images`` (identity folders) the cache is
    prepared on first use, at ``cache`` or else ``<user cache>/faces/<folder name>-folders``."""

    cache: str = ""
    images: str = ""
    batch_size: int = 64
    m_per_class: int = 4
    singletons_per_batch: int = 16
    include_no_face: bool = True


@dataclass
class AugmentConfig:
    """Batch augmentation on the training device; probabilities and ranges (0 switches one off). The
    ``camera*`` and ``motion*`` keys are :mod:`~faceverify.train.camera`'s: ``camera`` is the probability that a
    view goes through it, ``camera_grey`` that it turns infrared-like grey there; gamma, gain and downscale (the
    fraction of the side kept) are ranges, ``camera_noise`` the largest Gaussian sigma in grey levels,
    ``camera_jpeg`` a quality range, ``motion_length`` the longest blur in pixels. ``light`` is the probability of
    light from one side: one side of a soft edge through the face (tilted up to 20 degrees, placed in the middle
    half, 5-30% of the crop wide) keeps ``light_gain`` of its brightness."""

    flip: float = 0.5
    scale: float = 0.08
    shift: float = 0.05
    rotate: float = 8.0
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    grayscale: float = 0.1
    blur: float = 0.15
    blur_sigma: float = 1.5
    erase: float = 0.2
    erase_area: tuple[float, float] = (0.02, 0.15)
    light: float = 0.0
    light_gain: tuple[float, float] = (0.2, 0.6)
    camera: float = 0.0
    camera_grey: float = 0.7
    camera_gamma: tuple[float, float] = (0.7, 2.0)
    camera_gain: tuple[float, float] = (0.35, 1.0)
    camera_downscale: tuple[float, float] = (0.25, 1.0)
    camera_noise: float = 8.0
    camera_jpeg: tuple[float, float] = (25.0, 90.0)
    motion_blur: float = 0.2
    motion_length: float = 7.0


@dataclass
class ModelConfig:
    """The network; with ``init`` (a model name) its weights, input size, normalisation and template start from
    that model's card, otherwise ``input_size``, ``mean`` and ``std`` are used and the template comes from the
    face cache."""

    architecture: str = "mobilefacenet"
    embedding_size: int = 128
    init: str = ""
    input_size: int = 112
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)


@dataclass
class LossConfig:
    """One weighted term: ``triplet`` (cosine margin, fed by the miner), ``supcon`` (all pairs, temperature) or
    ``distill`` (contrastive distillation from ``objective.teacher``: InfoNCE at ``temperature`` where each
    image's positive is the teacher's embedding of it and the other images' teacher embeddings are negatives,
    plus the mean cosine distance to it) or ``relation`` (similarity-preserving distillation: the mean absolute
    difference between the cosines of every two images of the batch and the teacher's cosines of them, so that
    scores, not only embeddings, stay the teacher's) or ``ntxent`` (NT-Xent at ``temperature``: same-label pairs are the
    positives, the rest of the batch and memory the negatives, less those at ``objective.false_negative_cos``)."""

    type: str = "triplet"
    weight: float = 1.0
    margin: float = 0.2
    temperature: float = 0.1


@dataclass
class ObjectiveConfig:
    """Loss terms, the miner for the triplet term, an optional cross-batch memory (0 = none), and the teacher
    model (a shipped model name) that ``distill`` terms learn from. ``false_negative_cos``: an ``ntxent``
    negative pair at or above this cosine is left out (1.0: none is)."""

    losses: list[LossConfig] = field(default_factory=lambda: [LossConfig()])
    teacher: str = ""
    miner: str = "semihard"
    miner_margin: float = 0.2
    ms_epsilon: float = 0.1
    memory_size: int = 0
    false_negative_cos: float = 1.0


@dataclass
class OptimConfig:
    """Optimiser and schedule. ``body_lr_scale`` multiplies the learning rate of every stage group but the last
    (the embedding head); the first ``freeze_stages`` groups are not trained at all, and with ``train_stages``
    only the first that many are (the input side: the rest, the head included, stay as they are)."""

    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 5e-4
    momentum: float = 0.9
    body_lr_scale: float = 1.0
    freeze_stages: int = 0
    train_stages: int = 0
    warmup_steps: int = 100
    min_lr_ratio: float = 0.01
    grad_clip: float = 5.0


@dataclass
class RunConfig:
    """Where and how long to train. ``device`` "auto" takes CUDA when present; bf16 autocast and ``compile``
    apply on CUDA only; ``channels_last`` is "cuda" (only there), "always" (also on CPU, where it speeds up
    depthwise networks such as MobileFaceNet) or "never". ``steps_per_epoch`` 0 means one pass over the images."""

    out: str = "runs/train"
    epochs: int = 10
    steps_per_epoch: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: str = "cuda"
    compile: bool = False
    log_every: int = 10
    checkpoint_every: int = 0
    threads: int = 0


@dataclass
class ValidationConfig:
    """Checkpoint selection: accuracy on LFW pairsDevTrain (``lfw_root`` "" finds LFW as `faceverify evaluate`
    does, "none" disables it), or on a pair file with a fold column (``pairs``); without either, the last
    epoch is the best."""

    lfw_root: str = ""
    pairs: str = ""
    extra_caches: list[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    name: str = "faceverify-model"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    def validate(self) -> None:
        def fail(reason: str) -> None:
            raise FaceverifyError(f"training config: {reason}")

        d, o = self.data, self.objective
        if not d.cache and not d.images:
            fail("data.cache (a directory written by `faceverify prepare`) or data.images (identity folders) is required")
        if d.m_per_class < 2:
            fail("data.m_per_class must be at least 2 (positives are needed)")
        multi = d.batch_size - d.singletons_per_batch
        if d.singletons_per_batch < 0 or multi < d.m_per_class or multi % d.m_per_class:
            fail("data.batch_size - data.singletons_per_batch must be a positive multiple of data.m_per_class")
        if o.miner not in MINERS:
            fail(f"objective.miner must be one of {', '.join(MINERS)}")
        if not o.losses:
            fail("objective.losses is empty")
        for loss in o.losses:
            if loss.type not in LOSSES:
                fail(f"loss type {loss.type!r} is not one of {', '.join(LOSSES)}")
        if any(loss.type in TEACHER_LOSSES for loss in o.losses) != bool(o.teacher):
            fail("a distill or relation loss needs objective.teacher (a model name), and objective.teacher needs one")
        if self.run.channels_last not in ("cuda", "always", "never"):
            fail("run.channels_last must be cuda, always or never")
        if self.optim.optimizer not in ("adamw", "sgd"):
            fail("optim.optimizer must be adamw or sgd")
        if self.optim.freeze_stages < 0 or self.optim.train_stages < 0:
            fail("optim.freeze_stages and optim.train_stages must be >= 0")
        if self.run.epochs < 1:
            fail("run.epochs must be at least 1")


def _build(cls: type, data: Any, where: str) -> Any:
    """A dataclass from a dict, recursively; unknown keys and wrong shapes raise FaceverifyError."""
    if not isinstance(data, dict):
        raise FaceverifyError(f"training config: [{where}] must be a table")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise FaceverifyError(f"training config: unknown key(s) {unknown} in [{where or 'top level'}]")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        default = getattr(cls(), key)
        path = f"{where}.{key}" if where else key
        if is_dataclass(default):
            kwargs[key] = _build(type(default), value, path)
        elif key == "losses":
            if not isinstance(value, list):
                raise FaceverifyError(f"training config: {path} must be a list of tables")
            kwargs[key] = [_build(LossConfig, v, f"{path}[{i}]") for i, v in enumerate(value)]
        elif isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or len(value) != len(default):
                raise FaceverifyError(f"training config: {path} must be a list of {len(default)} numbers")
            kwargs[key] = tuple(float(v) for v in value)
        else:
            kwargs[key] = _coerce(default, value, path)
    return cls(**kwargs)


def _coerce(default: Any, value: Any, path: str) -> Any:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise FaceverifyError(f"training config: {path} must be {type(default).__name__}, got {value!r}")
    return value


def _override(data: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise FaceverifyError(f"override {item!r} is not KEY=VALUE")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    *parents, leaf = key.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise FaceverifyError(f"override {item!r}: {p} is not a table")
    node[leaf] = value


def config_from_dict(data: dict[str, Any], overrides: Sequence[str] = ()) -> TrainConfig:
    data = json.loads(json.dumps(data))
    for item in overrides:
        _override(data, item)
    cfg = _build(TrainConfig, data, "")
    cfg.validate()
    return cfg


def stored_config(data: dict[str, Any]) -> TrainConfig:
    """The config recorded in a checkpoint: like :func:`config_from_dict`, but keys retired since older
    checkpoints were written are dropped first, so their runs still resume and export."""
    data = json.loads(json.dumps(data))
    for section, keys in RETIRED_KEYS.items():
        if isinstance(data.get(section), dict):
            for key in keys:
                data[section].pop(key, None)
    return config_from_dict(data)


def bundled_configs() -> dict[str, Path]:
    """The example configs installed with the package (name without .toml -> file)."""
    import faceverify.configs as shipped

    return {f.stem: f for f in sorted(Path(shipped.__file__).parent.glob("*.toml"))}


def resolve_config(path: str | Path) -> Path:
    """``path`` if it is a file, else a bundled config of that name (with or without .toml)."""
    p = Path(path)
    if p.is_file() or len(p.parts) > 1:
        return p
    bundled = bundled_configs()
    name = p.name[:-5] if p.name.endswith(".toml") else p.name
    if name in bundled:
        return bundled[name]
    raise FaceverifyError(f"{p}: no such config file, nor a bundled config (bundled: {', '.join(bundled)})")


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a ``.toml`` or ``.json`` training config (a path, or the name of a bundled one) and apply ``overrides``."""
    p = resolve_config(path)
    try:
        text = p.read_text()
        data = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise FaceverifyError(f"{p}: unreadable training config ({exc})") from None
    return config_from_dict(data, overrides)


def expand(path: str) -> Path:
    return Path(path).expanduser()
