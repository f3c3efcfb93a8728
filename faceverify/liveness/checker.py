"""Is a detected face a live person or a presentation attack (a print, a screen)? MiniFASNetV2 and V1SE on ONNX
Runtime, each on its own context crop of the face, their softmax outputs averaged (the authors' fusion)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._util import onnx_session, read_card, sha256_bytes
from ..detect import Face
from ..errors import ModelError, OperatingPointError
from ..modelcard import MAX_CARD_BYTES, model_folders, shipped_models_dir
from .crop import context_crop, xywh

CARD_NAME = "minifasnet"


@dataclass
class LivenessCard:
    """``models/liveness/<name>.json``: the networks (each: ``model`` ONNX file, its ``sha256``, the crop
    ``scale`` about the face box, ``input_size``), the class names with the live one, the rule (``threshold`` on
    the averaged live probability, or None: live when it is the most probable class), the smallest face judged
    (``min_face``, px of the box's shorter side), licence, source, the importer's parity record, what was
    measured."""

    name: str
    networks: list[dict[str, Any]]
    classes: list[str]
    live_class: int
    threshold: float | None
    min_face: int
    licence: str
    input: str = "BGR, float32 0..255, N x 3 x S x S"
    provenance: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)
    schema: int = 1

    @classmethod
    def load(cls, path: str | Path) -> "LivenessCard":
        card = read_card(cls, path, "liveness", MAX_CARD_BYTES)
        nets = card.networks if isinstance(card.networks, list) else []
        problems = [
            not nets or not all(isinstance(n, dict) and set(n) >= {"model", "sha256", "scale", "input_size"}
                                for n in nets),
            not all(_finite(n.get("scale")) and 1 <= n["scale"] <= 8 and n.get("input_size") in range(16, 513)
                    for n in nets if isinstance(n, dict)),
            not isinstance(card.classes, list) or card.live_class not in range(len(card.classes)),
            card.threshold is not None and not (_finite(card.threshold) and 0 < card.threshold < 1),
            not isinstance(card.min_face, int) or not 1 <= card.min_face <= 1024,
            card.schema != 1,
        ]
        if any(problems):
            raise ModelError(f"{path}: invalid liveness card (networks with model, sha256, scale in [1, 8] and "
                             "input_size; live_class among classes; threshold in (0, 1) or null; min_face)")
        return card

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, in float64."""
    e = np.exp(logits.astype(np.float64) - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def network_input(image: np.ndarray, boxes_xywh: Sequence[Sequence[float]], net: dict) -> np.ndarray:
    """N x 3 x size x size float32: each face's crop by the card entry ``net``'s rule, BGR in 0..255 as the
    networks were trained on."""
    crops = np.stack([context_crop(image, b, float(net["scale"]), int(net["input_size"])) for b in boxes_xywh])
    return np.ascontiguousarray(crops[..., ::-1].transpose(0, 3, 1, 2), np.float32)


def liveness_card_path(name: str = CARD_NAME) -> Path:
    """``liveness/<name>.json`` in the first model folder that has one (else where the shipped one belongs)."""
    for folder in model_folders():
        path = folder.path / "liveness" / f"{name}.json"
        if path.is_file():
            return path
    return shipped_models_dir() / "liveness" / f"{name}.json"


@dataclass(frozen=True)
class Liveness:
    """The verdict on one face: ``live``, ``score`` (the live class's averaged probability; None when the face
    could not be judged, ``reason`` says why, and it is not live), and the averaged class probabilities."""

    live: bool
    score: float | None
    probabilities: tuple[float, ...] = ()
    reason: str | None = None

    def to_dict(self) -> dict:
        out: dict[str, Any] = dict(live=self.live, score=None if self.score is None else round(self.score, 6))
        if self.reason is not None:
            out["reason"] = self.reason
        return out


class LivenessChecker:
    """Judges faces live or not: every network of the card on its crop of each face, softmax averaged, then the
    card's rule or ``threshold`` (on the live probability) when given."""

    def __init__(self, card: LivenessCard, models: Sequence[bytes], threshold: float | None = None,
                 threads: int | None = None):
        if threshold is not None and not (_finite(threshold) and 0 < threshold < 1):
            raise OperatingPointError(f"liveness threshold {threshold}: not a probability in (0, 1)")
        self.card = card
        self.threshold = card.threshold if threshold is None else float(threshold)
        self._sessions = [onnx_session(m, threads) for m in models]
        self._inputs = [s.get_inputs()[0].name for s in self._sessions]

    @classmethod
    def load(cls, threshold: float | None = None, threads: int | None = None) -> "LivenessChecker":
        """The shipped (or a model folder's) card and networks, each ONNX file checked against its sha256."""
        path = liveness_card_path()
        if not path.is_file():
            raise ModelError(f"{path}: the liveness networks are not installed (tools/import_minifasnet.py)")
        card = LivenessCard.load(path)
        models = []
        for net in card.networks:
            file = path.parent / str(net["model"])
            try:
                models.append(file.read_bytes())
            except OSError:
                raise ModelError(f"{file}: liveness network named by {path.name} is missing") from None
            if sha256_bytes(models[-1]) != net["sha256"]:
                raise ModelError(f"{file}: liveness network does not match the sha256 recorded in {path.name}")
        return cls(card, models, threshold, threads)

    def per_network(self, image: np.ndarray, boxes_xywh: Sequence[Sequence[float]]) -> list[np.ndarray]:
        """Each network's softmax (N x classes, in the card's order) for face boxes (x, y, w, h) in an RGB image."""
        return [softmax(session.run(None, {name: network_input(image, boxes_xywh, net)})[0])
                for net, session, name in zip(self.card.networks, self._sessions, self._inputs)]

    def probabilities(self, image: np.ndarray, boxes_xywh: Sequence[Sequence[float]]) -> np.ndarray:
        """N x classes: the networks' softmax outputs averaged (the authors' fusion)."""
        if not len(boxes_xywh):
            return np.zeros((0, len(self.card.classes)), np.float64)
        return np.mean(self.per_network(image, boxes_xywh), axis=0)

    def verdict(self, probabilities: np.ndarray, threshold: float | None = None) -> Liveness:
        """The verdict on averaged class probabilities (one face's, or a track's pooled): live when the live
        probability reaches ``threshold``, else by the checker's rule."""
        p = [float(v) for v in probabilities]
        score = p[self.card.live_class]
        threshold = self.threshold if threshold is None else threshold
        live = score >= threshold if threshold is not None else int(np.argmax(p)) == self.card.live_class
        return Liveness(bool(live), score, tuple(round(v, 6) for v in p))

    def unjudged(self, face: Face) -> str | None:
        """Why a face cannot be judged (an empty box, or one smaller than the card's ``min_face``), or None."""
        w, h = (float(v) for v in face.box[2:] - face.box[:2])
        if not (w > 0 and h > 0):
            return "empty face box"
        if min(w, h) < self.card.min_face:
            return f"face {min(w, h):.0f} px, below the {self.card.min_face} px liveness judges"
        return None

    def face_probabilities(self, image: np.ndarray, faces: Sequence[Face]) -> list[np.ndarray | None]:
        """The averaged class probabilities of each face found in an RGB image (boxes in its pixels); None for a
        face that cannot be judged (:meth:`unjudged`)."""
        judgeable = [self.unjudged(f) is None for f in faces]
        probs = iter(self.probabilities(image, [xywh(f.box) for f, ok in zip(faces, judgeable) if ok]))
        return [next(probs) if ok else None for ok in judgeable]

    def judge(self, image: np.ndarray, faces: Sequence[Face]) -> list[Liveness]:
        """A verdict per face found in an RGB image (boxes in its pixels); faces too small are not live."""
        return [self.verdict(p) if p is not None else Liveness(False, None, reason=self.unjudged(f))
                for f, p in zip(faces, self.face_probabilities(image, faces))]
