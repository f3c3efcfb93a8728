"""The embedding model: weights + model card, batched inference, L2-normalised output, on one of two backends:
torch (the network from safetensors; CUDA and training) or ONNX Runtime (the card's ONNX export; CPU, no torch)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Union

import numpy as np

from ._util import onnx_session, pick_device, sha256_bytes, sha256_file
from .errors import ModelError
from .modelcard import ModelCard

if TYPE_CHECKING:
    import torch

Backend = Literal["torch", "onnx"]


def models_dir() -> Path:
    """Where model cards and weights live: ``$FACEVERIFY_MODELS`` or the ones shipped with the package."""
    env = os.environ.get("FACEVERIFY_MODELS")
    if env:
        return Path(env)
    import faceverify.models as shipped

    return Path(shipped.__file__).parent


def default_model_name(directory: Path | None = None) -> str:
    """The model named in ``models/DEFAULT``."""
    path = (directory or models_dir()) / "DEFAULT"
    try:
        return path.read_text().strip()
    except OSError:
        raise ModelError(f"{path}: no default model is set") from None


def available_models(directory: Path | None = None) -> list[str]:
    """Names of the model cards in the models directory."""
    return sorted(p.stem for p in (directory or models_dir()).glob("*.json"))


def resolve_card(name: str | None = None, directory: Path | None = None) -> tuple[ModelCard, Path]:
    """Find and validate the card for ``name`` (or the default model); returns the card and its path."""
    directory = directory or models_dir()
    if name is None:
        name = default_model_name(directory)
    as_path = Path(name)
    if as_path.suffix == ".json" and as_path.exists():
        card_path = as_path
    else:
        if "/" in name or "\\" in name or name.startswith("."):
            raise ModelError(f"{name}: not a model name")
        card_path = directory / f"{name}.json"
    if not card_path.exists():
        known = ", ".join(available_models(directory)) or "none"
        raise ModelError(f"model '{name}' not found in {directory} (available: {known})")
    return ModelCard.load(card_path), card_path


class Embedder:
    """An embedding network ready for inference, described by its model card."""

    backend: Backend = "torch"

    def __init__(self, card: ModelCard, network: torch.nn.Module, device: torch.device):
        import torch

        self.card = card
        self.device = device
        self.network = network.to(device).eval()
        self._mean = torch.tensor(card.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(card.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    @classmethod
    def load(cls, name: str | None = None, device: str | torch.device | None = None) -> "Embedder":
        """Load a model by name (default: the shipped default) after checking its weights against the card."""
        import torch
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from . import networks

        card, card_path = resolve_card(name)
        weights_path = card_path.parent / card.weights
        if not weights_path.is_file():
            raise ModelError(f"{weights_path}: weights file named by model card {card_path.name} is missing")
        if sha256_file(weights_path) != card.weights_sha256:
            raise ModelError(f"{weights_path}: weights do not match the sha256 recorded in {card_path.name}")
        try:
            state = load_file(str(weights_path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelError(f"{weights_path}: unreadable safetensors file ({exc})") from None
        try:
            network = networks.build(card.architecture, card.embedding_size)
        except ModelError as exc:
            raise ModelError(f"{card_path}: {exc}") from None
        expected = network.state_dict()
        for key, tensor in state.items():
            if key in expected and (tensor.dtype != expected[key].dtype or not bool(torch.isfinite(tensor).all())):
                raise ModelError(f"{weights_path}: tensor '{key}' is not finite {expected[key].dtype} as expected")
        try:
            network.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ModelError(f"{weights_path}: weights do not fit architecture '{card.architecture}' ({first})") from None
        return cls(card, network, pick_device(device))

    @property
    def input_size(self) -> int:
        return self.card.input_size

    def preprocess(self, crops: np.ndarray) -> torch.Tensor:
        """N x S x S x 3 uint8 RGB crops -> normalised N x 3 x S x S float tensor on the model's device."""
        import torch

        x = torch.from_numpy(crops.copy() if not crops.flags.writeable else np.ascontiguousarray(crops)).to(self.device)
        x = x.permute(0, 3, 1, 2).float()
        return (x - self._mean) / self._std

    def embed(self, crops: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """L2-normalised float32 embeddings (N x D) of aligned crops."""
        if len(crops) == 0:
            return np.zeros((0, self.card.embedding_size), np.float32)
        import torch

        out = []
        with torch.inference_mode():
            for start in range(0, len(crops), batch_size):
                z = self.network(self.preprocess(crops[start : start + batch_size]))
                out.append(torch.nn.functional.normalize(z.float(), dim=1).cpu().numpy())
        return np.concatenate(out).astype(np.float32)



class OnnxEmbedder:
    """The card's ONNX export on ONNX Runtime (CPU): the torch Embedder's preprocessing and output, no torch."""

    backend: Backend = "onnx"
    device = "cpu"

    def __init__(self, card: ModelCard, model: bytes, threads: int | None = None):
        self.card = card
        self._session = onnx_session(model, threads)
        self._input = self._session.get_inputs()[0].name
        self._mean = np.asarray(card.mean, np.float32).reshape(1, 3, 1, 1)
        self._std = np.asarray(card.std, np.float32).reshape(1, 3, 1, 1)

    @classmethod
    def load(cls, name: str | None = None, threads: int | None = None) -> "OnnxEmbedder":
        """Load the ONNX export named by the card after checking its bytes against the card's sha256."""
        card, card_path = resolve_card(name)
        if not card.onnx:
            raise ModelError(f"model '{card.name}' has no ONNX export (run tools/export_onnx.py, or use --backend torch)")
        path = card_path.parent / card.onnx
        try:
            model = path.read_bytes()
        except OSError:
            raise ModelError(f"{path}: ONNX file named by model card {card_path.name} is missing") from None
        if sha256_bytes(model) != card.onnx_sha256:
            raise ModelError(f"{path}: ONNX file does not match the sha256 recorded in {card_path.name}")
        try:
            return cls(card, model, threads)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for malformed graphs
            raise ModelError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:160]})") from None

    @property
    def input_size(self) -> int:
        return self.card.input_size

    def embed(self, crops: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """L2-normalised float32 embeddings (N x D) of aligned crops."""
        if len(crops) == 0:
            return np.zeros((0, self.card.embedding_size), np.float32)
        out = []
        for start in range(0, len(crops), batch_size):
            x = (crops[start : start + batch_size].transpose(0, 3, 1, 2).astype(np.float32) - self._mean) / self._std
            z = self._session.run(None, {self._input: np.ascontiguousarray(x)})[0].astype(np.float32)
            out.append(z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12))
        return np.concatenate(out)


AnyEmbedder = Union[Embedder, OnnxEmbedder]


def onnx_runtime_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def choose_backend(card: ModelCard, device: str | None = None, backend: str | None = None) -> Backend:
    """``backend`` when given (onnx runs on CPU only); else ONNX Runtime on CPU when it is installed and the card
    has an ONNX export, torch otherwise (and for any device other than cpu)."""
    on_cpu = device is None or str(device) == "cpu"
    if backend is None:
        return "onnx" if on_cpu and card.onnx and onnx_runtime_installed() else "torch"
    if backend not in ("torch", "onnx"):
        raise ModelError(f"unknown backend {backend!r} (torch or onnx)")
    if backend == "onnx" and not on_cpu:
        raise ModelError(f"the onnx backend runs on cpu, not {device} (use --backend torch)")
    if backend == "onnx" and not onnx_runtime_installed():
        raise ModelError("the onnx backend needs onnxruntime (pip install onnxruntime), or use --backend torch")
    return backend


def load_embedder(
    name: str | None = None, device: str | torch.device | None = None, backend: str | None = None,
    threads: int | None = None,
) -> AnyEmbedder:
    """The embedder for ``name`` on the chosen backend (see :func:`choose_backend`); ``threads`` caps the
    runtime's intra-op threads (torch: for the whole process)."""
    card, _ = resolve_card(name)
    if choose_backend(card, None if device is None else str(device), backend) == "onnx":
        return OnnxEmbedder.load(name, threads)
    if threads:
        import torch

        torch.set_num_threads(threads)
    return Embedder.load(name, device)
