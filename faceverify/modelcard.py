"""Model cards: the JSON that travels with every weights file and says how to use it, and the folders cards are
found in (the search path, below).

Nothing downstream hard-codes input size, alignment template, pixel normalisation, embedding size or
thresholds: all of them are read from the card.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ._util import read_card
from .errors import ModelError, OperatingPointError

CARD_SCHEMA = 1
MAX_CARD_BYTES = 4 << 20  # the largest model card file read (a card is some kB; far bigger is not a card)


@dataclass
class ModelCard:
    """Everything needed to run a model, plus where it came from and how it scores.

    ``template`` holds the 5 facial points (left eye, right eye, nose tip, left and right mouth corner, as seen
    in the image) in pixel coordinates of the ``input_size`` crop. ``mean`` and ``std`` normalise RGB pixels
    on the 0..255 scale: ``x = (pixel - mean) / std``. ``thresholds`` maps a false-accept rate written as a
    string ("1e-3") to the cosine similarity that yields it. ``onnx`` optionally names an ONNX export of the
    same network (``tools/export_onnx.py``), checked against ``onnx_sha256``: what the ONNX Runtime backend runs.
    ``weights`` names a safetensors file, or the ONNX file itself when the weights are stored once, as its
    initialisers; ``weights_sha256`` is then the sha256 of those tensors written as safetensors (``faceverify.embed``).
    """

    name: str
    architecture: str
    input_size: int
    template: list[list[float]]
    mean: list[float]
    std: list[float]
    embedding_size: int
    weights: str
    weights_sha256: str
    version: str = "1"
    thresholds: dict[str, float] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    onnx: str = ""
    onnx_sha256: str = ""
    front_end: dict[str, Any] = field(default_factory=dict)
    calibrations: dict[str, dict[str, Any]] = field(default_factory=dict)
    schema: int = CARD_SCHEMA

    @property
    def model_id(self) -> str:
        """The identity stored beside every embedding: embeddings of different ids are never mixed.

        It covers everything that changes an embedding: the weights and the front end (template, size,
        normalisation), so a refitted template cannot silently mix with older embeddings.
        """
        functional = json.dumps(
            [self.architecture, self.weights_sha256, self.input_size, self.template, self.mean, self.std],
            sort_keys=True,
        )
        return f"{self.name}@{self.version}:{hashlib.sha256(functional.encode()).hexdigest()[:12]}"

    @property
    def weights_in_onnx(self) -> bool:
        """Whether the torch weights are the ONNX export's initialisers (stored once) rather than a safetensors file."""
        return bool(self.onnx) and self.weights == self.onnx

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "ModelCard":
        path = Path(path)
        try:
            if path.stat().st_size > MAX_CARD_BYTES:
                raise ModelError(f"{path}: model card is larger than {MAX_CARD_BYTES >> 20} MiB")
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{path}: unreadable model card ({exc})") from None
        except RecursionError:
            raise ModelError(f"{path}: unreadable model card (nested too deeply)") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "model card") -> "ModelCard":
        if not isinstance(data, dict):
            raise ModelError(f"{source}: model card is not a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ModelError(f"{source}: unknown model card fields {sorted(unknown)}")
        try:
            card = cls(**data)
        except TypeError as exc:
            raise ModelError(f"{source}: {exc}") from None
        card.validate(source)
        return card

    def validate(self, source: str = "model card") -> None:
        """Check types and ranges so that a tampered card fails here, not half-way through a run."""

        def fail(reason: str) -> None:
            raise ModelError(f"{source}: {reason}")

        if self.schema != CARD_SCHEMA or isinstance(self.schema, bool):
            fail(f"card schema {self.schema!r} is not supported (expected {CARD_SCHEMA})")
        for key in ("name", "architecture", "weights", "weights_sha256", "version"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                fail(f"'{key}' must be a non-empty string")
        if not _is_plain_name(self.weights) or not (self.weights.endswith(".safetensors") or self.weights_in_onnx):
            fail("'weights' must be a plain .safetensors file name beside the card, or the card's 'onnx' file")
        if not _is_sha256(self.weights_sha256):
            fail("'weights_sha256' must be 64 lowercase hex digits")
        if not isinstance(self.onnx, str) or not isinstance(self.onnx_sha256, str):
            fail("'onnx' and 'onnx_sha256' must be strings")
        if self.onnx and (not _is_plain_name(self.onnx) or not self.onnx.endswith(".onnx")):
            fail("'onnx' must be a plain .onnx file name beside the card")
        if self.onnx and not _is_sha256(self.onnx_sha256):
            fail("'onnx_sha256' must be 64 lowercase hex digits when 'onnx' is set")
        if not isinstance(self.input_size, int) or not 16 <= self.input_size <= 1024:
            fail("'input_size' must be an integer between 16 and 1024")
        if not isinstance(self.embedding_size, int) or not 2 <= self.embedding_size <= 8192:
            fail("'embedding_size' must be an integer between 2 and 8192")
        pts = self.template
        if not (isinstance(pts, list) and len(pts) == 5 and all(_is_point(p) for p in pts)):
            fail("'template' must be 5 [x, y] points")
        if not all(0 <= v <= self.input_size for p in pts for v in p):
            fail("'template' points must lie inside the input_size crop")
        for key in ("mean", "std"):
            vals = getattr(self, key)
            if not (isinstance(vals, list) and len(vals) == 3 and all(_is_finite(v) for v in vals)):
                fail(f"'{key}' must be 3 finite numbers")
        if any(v <= 0 for v in self.std):
            fail("'std' must be positive")
        for key in ("calibration", "provenance", "evaluation", "front_end", "calibrations"):
            if not isinstance(getattr(self, key), dict):
                fail(f"'{key}' must be a JSON object")
        for kind, o in self.calibrations.items():
            if not (isinstance(o, dict) and set(o) == {"front_end", "thresholds", "calibration"}
                    and isinstance(o["front_end"], dict) and o["front_end"].get("detector") == kind):
                fail(f"'calibrations.{kind}' must hold front_end (detector {kind!r}), thresholds and calibration")
            replace(self, thresholds=o["thresholds"], calibration=o["calibration"], calibrations={},
                    front_end={}).validate(f"{source}: calibrations.{kind}")
        if not isinstance(self.notes, str):
            fail("'notes' must be a string")
        curve = self.calibration.get("far_curve", [])
        if not (isinstance(curve, list) and all(_is_point(p) and -1 <= p[0] <= 1 and 0 <= p[1] <= 1 for p in curve)):
            fail("'calibration.far_curve' must be [threshold, FAR] pairs with threshold in [-1, 1] and FAR in [0, 1]")
        bounds = self.calibration.get("bounds", {})
        bound_curve = bounds.get("far_bound_curve", []) if isinstance(bounds, dict) else None
        if not (isinstance(bound_curve, list) and all(_is_point(p) and -1 <= p[0] <= 1 and 0 < p[1] <= 1 for p in bound_curve)):
            fail("'calibration.bounds.far_bound_curve' must be [threshold, FAR bound] pairs with FAR in (0, 1]")
        if not isinstance(self.thresholds, dict):
            fail("'thresholds' must be a map from FAR to similarity")
        for far, thr in self.thresholds.items():
            try:
                far_value = float(far)
            except ValueError:
                fail(f"threshold key {far!r} is not a number")
            if not 0 < far_value < 1 or not _is_finite(thr) or not -1 <= thr <= 1:
                fail(f"threshold {far!r}: {thr!r} is out of range")

    @property
    def calibrated_detector(self) -> str | None:
        """The detector kind the thresholds were calibrated with (None: not recorded, or no thresholds)."""
        calibrated = self.front_end.get("calibrated")
        return calibrated.get("detector") if isinstance(calibrated, dict) and self.thresholds else None

    def for_detector(self, detector: str) -> tuple["ModelCard", bool]:
        """This card through ``detector`` (its calibration made the main one when carried), and if calibrated so."""
        kind, other = detector_kind(detector), self.calibrations.get(detector_kind(detector))
        if self.calibrated_detector == kind or other is None:
            return self, self.calibrated_detector == kind
        return self.with_calibration(other["front_end"], other["thresholds"], other["calibration"], main=True), True

    def with_calibration(self, front_end: dict[str, Any], thresholds: dict[str, float], calibration: dict[str, Any],
                         main: bool = False) -> "ModelCard":
        """With a calibration through ``front_end``: the main one if none, the same detector's or ``main``, else beside."""
        kind, old = front_end["detector"], self.calibrated_detector
        rest = {k: v for k, v in self.calibrations.items() if k != kind}
        if old not in (None, kind) and not main:
            return replace(self, calibrations=dict(rest, **{kind: dict(front_end=front_end, thresholds=thresholds,
                                                                       calibration=calibration)}))
        if old not in (None, kind):  # the old main calibration is kept beside the new one
            rest[old] = dict(front_end=self.front_end["calibrated"], thresholds=self.thresholds, calibration=self.calibration)
        return replace(self, thresholds=thresholds, calibration=calibration, calibrations=rest,
                       front_end=dict(self.front_end, calibrated=front_end))

    def threshold_for(self, far: float) -> float:
        """The calibrated similarity threshold for a false-accept rate the card was calibrated at."""
        for key, thr in self.thresholds.items():
            if math.isclose(float(key), far, rel_tol=1e-6):
                return float(thr)
        have = ", ".join(sorted(self.thresholds, key=float)) or "none"
        raise OperatingPointError(f"model '{self.name}' has no threshold calibrated for FAR={far:g} (has: {have})")


def detector_kind(detector: str) -> str:
    """What a calibration holds for: ``mtcnn-onnx`` finds MTCNN's faces (``mtcnn``); others are their own kind."""
    return "mtcnn" if detector == "mtcnn-onnx" else detector


@dataclass
class DetectorCard:
    """A shipped detector's card (``models/detectors/<name>.json``): ONNX file and sha256, thresholds, the longest
    image side it sees (``max_side``, 0: full resolution), licence and source. ``mean_shapes``: the mean 5 points
    of MTCNN's (``mtcnn``) and its own (``own``) landmarks on the same faces (``YuNetDetector.template_for``). A
    cascade names its networks in ``stages`` (stage -> ``{"model", "sha256"}``, in order), ``model`` left empty."""

    name: str
    kind: str
    model: str
    model_sha256: str
    score_threshold: float
    nms_threshold: float
    max_side: int
    licence: str
    mean_shapes: dict[str, list[list[float]]] = field(default_factory=dict)
    stages: dict[str, dict[str, str]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    schema: int = CARD_SCHEMA

    @classmethod
    def load(cls, path: str | Path) -> "DetectorCard":
        card = read_card(cls, path, "detector", MAX_CARD_BYTES)
        problems = [
            not isinstance(card.stages, dict) or not all(map(_is_model_file, card.files().items())),
            bool(card.stages) == bool(card.model or card.model_sha256),
            not _is_finite(card.score_threshold) or not 0 < card.score_threshold < 1,
            not _is_finite(card.nms_threshold) or not 0 < card.nms_threshold < 1,
            not isinstance(card.max_side, int) or not (32 <= card.max_side <= 8192 or card.max_side == 0),
            card.schema != CARD_SCHEMA,
            not isinstance(card.mean_shapes, dict) or set(card.mean_shapes) not in (set(), {"mtcnn", "own"}),
            not all(isinstance(s, list) and len(s) == 5 and all(map(_is_point, s)) for s in card.mean_shapes.values()),
        ]
        if any(problems):
            raise ModelError(f"{path}: invalid detector card (model and model_sha256 or stages, thresholds in (0, 1), "
                             "max_side, mean_shapes)")
        return card

    def files(self) -> dict[str, str]:
        """The ONNX files this detector runs, each with the sha256 it must have (stages in order)."""
        if not self.stages:
            return {self.model: self.model_sha256}
        entries = [s if isinstance(s, dict) else {} for s in self.stages.values()]
        return {str(e.get("model", "")): e.get("sha256", "") for e in entries}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")


def _is_finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_point(p: Any) -> bool:
    return isinstance(p, list) and len(p) == 2 and all(_is_finite(v) for v in p)


def _is_sha256(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _is_model_file(entry: tuple[Any, Any]) -> bool:
    """(file name, sha256) of an ONNX file beside the card."""
    name, sha = entry
    return isinstance(name, str) and _is_plain_name(name) and name.endswith(".onnx") and _is_sha256(sha)


def _is_plain_name(name: str) -> bool:
    """A file name beside the card: no folders, drive letters, leading dot or control characters."""
    return not any(c in name for c in "/\\:") and not name.startswith(".") and name.isprintable()


# -- Where models live, searched in order: ``$FACEVERIFY_MODELS`` (``os.pathsep``-separated), the user models folder
# (``<user data dir>/models``: adapt and export-model write there), the shipped models (the wheel's, or a checkout's
# ``models/``). The first folder holding a name wins; one hiding another model_id of that name is warned about once.

MODELS_ENV = "FACEVERIFY_MODELS"
SHIPPED, USER, ENV = "shipped", "user", MODELS_ENV
"""The kinds of model folder, as ``faceverify models`` names them."""

_warned: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class ModelFolder:
    """One folder of the search path and what kind it is (``SHIPPED``, ``USER`` or ``ENV``)."""

    path: Path
    kind: str


def shipped_models_dir() -> Path:
    """The models that came with faceverify: inside the installed package, or beside it in a source checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "models", package.parent / "models"):
        if (candidate / "DEFAULT").is_file():
            return candidate
    raise ModelError(f"the shipped models are missing (neither {package / 'models'} nor {package.parent / 'models'})")


def user_models_dir() -> Path:
    """Where new models are written: the first ``$FACEVERIFY_MODELS`` folder when set, else the user models folder."""
    env = _env_dirs()
    return env[0] if env else _user_folder()


def _user_folder() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("faceverify")) / "models"


def _env_dirs() -> list[Path]:
    return [Path(p) for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p.strip()]


def model_folders() -> list[ModelFolder]:
    """The search path, first folder first; a folder named twice counts once."""
    folders = [*(ModelFolder(p, ENV) for p in _env_dirs()), ModelFolder(_user_folder(), USER),
               ModelFolder(shipped_models_dir(), SHIPPED)]
    seen: set[Path] = set()
    unique = []
    for folder in folders:
        key = folder.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(folder)
    return unique


def _folders(directory: Path | None) -> list[ModelFolder]:
    return [ModelFolder(directory, ENV)] if directory is not None else model_folders()


def default_model_name(directory: Path | None = None) -> str:
    """The model named in the first ``DEFAULT`` file along the search path (or in ``directory``)."""
    for folder in _folders(directory):
        path = folder.path / "DEFAULT"
        if path.is_file():
            try:
                return path.read_text().strip()
            except OSError:
                break
    raise ModelError(f"{_folders(directory)[0].path / 'DEFAULT'}: no default model is set")


def available_models(directory: Path | None = None) -> list[str]:
    """Names of the model cards along the search path (or in ``directory``)."""
    return sorted({p.stem for folder in _folders(directory) for p in folder.path.glob("*.json")})


def card_paths(name: str) -> list[tuple[Path, str]]:
    """Every card of model ``name`` along the search path, first (the one used) first, with its folder's kind."""
    return [(f.path / f"{name}.json", f.kind) for f in model_folders() if (f.path / f"{name}.json").is_file()]


def resolve_card(name: str | None = None, directory: Path | None = None) -> tuple[ModelCard, Path]:
    """Find and validate the card for ``name`` (or the default model); returns the card and its path. ``name`` may
    also be the path of a card file; ``directory`` searches that folder alone."""
    if name is None:
        name = default_model_name(directory)
    as_path = Path(name)
    if as_path.suffix == ".json" and as_path.exists():
        return ModelCard.load(as_path), as_path
    if "/" in name or "\\" in name or name.startswith("."):
        raise ModelError(f"{name}: not a model name")
    if directory is not None:
        found = [(directory / f"{name}.json", ENV)] if (directory / f"{name}.json").is_file() else []
    else:
        found = card_paths(name)
    if not found:
        where = directory or ", ".join(str(f.path) for f in model_folders())
        known = ", ".join(available_models(directory)) or "none"
        raise ModelError(f"model '{name}' not found in {where} (available: {known})")
    card = ModelCard.load(found[0][0])
    _warn_if_hiding(card, found)
    return card, found[0][0]


def hidden_by(found: list[tuple[Path, str]], first_id: str | None = None) -> list[tuple[Path, str]]:
    """The cards among ``found`` (as :func:`card_paths` lists them) that the first one (whose ``model_id`` may be
    given) hides: another model under the same name."""
    first_id = first_id or _model_id(found[0][0])
    return [(path, kind) for path, kind in found[1:] if _model_id(path) != first_id]


def _model_id(path: Path) -> str:
    try:
        return ModelCard.load(path).model_id
    except ModelError:
        return f"unreadable:{path}"


def _warn_if_hiding(card: ModelCard, found: list[tuple[Path, str]]) -> None:
    """One warning per process for a card that hides another model of the same name further down the path."""
    for path, kind in hidden_by(found, card.model_id) if len(found) > 1 else []:
        key = (str(found[0][0]), str(path))
        if key not in _warned:
            _warned.add(key)
            warnings.warn(f"model '{card.name}': using {found[0][0]}, which hides the {kind} model of that name at "
                          f"{path} (rename one of them to use both)", stacklevel=3)


def user_copy(card: ModelCard, card_path: Path) -> Path:
    """Where a changed ``card`` (read from ``card_path``) is saved: its own path, unless it is a shipped card,
    which is never changed in place: its files are copied into :func:`user_models_dir` and the copy's path is
    returned (a file of that name already there must be the same file)."""
    if card_path.parent.resolve() != shipped_models_dir().resolve():
        return card_path
    target = user_models_dir()
    target.mkdir(parents=True, exist_ok=True)
    for name in sorted({card.weights, card.onnx} - {""}):
        source, copy = card_path.parent / name, target / name
        if not copy.exists():
            shutil.copyfile(source, copy)
        elif copy.read_bytes() != source.read_bytes():
            raise ModelError(f"{copy}: another file of that name is in the user models folder; move it away to "
                             f"save a changed copy of the shipped model '{card.name}'")
    return target / card_path.name


def detector_card_path(name: str) -> Path:
    """The card of detector ``name``: ``detectors/<name>.json`` in the first model folder that has one (the shipped
    folder's path when none has, so that errors name where it belongs)."""
    for folder in model_folders():
        path = folder.path / "detectors" / f"{name}.json"
        if path.is_file():
            return path
    return shipped_models_dir() / "detectors" / f"{name}.json"
