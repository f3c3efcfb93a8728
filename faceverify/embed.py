"""The embedding model: weights + model card, batched inference, L2-normalised output, on one of two backends:
torch (the network with its weights; CUDA and training) or ONNX Runtime (the card's ONNX export; CPU, no torch)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Union

import numpy as np

from ._util import onnx_session, pick_device, sha256_bytes
from .errors import ModelError, require
from .modelcard import ModelCard, resolve_card

if TYPE_CHECKING:
    import torch

Backend = Literal["torch", "onnx"]


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
        require("train", "the torch backend")
        import torch

        from . import networks

        card, card_path = resolve_card(name)
        state = torch_weights(card, card_path)
        weights_path = card_path.parent / card.weights
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
        if on_cpu and card.onnx and onnx_runtime_installed():
            return "onnx"
        why = f"device {device}" if not on_cpu else f"model '{card.name}' (no ONNX export)"
        require("train", f"{why} runs on torch, which")
        return "torch"
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
    require("train", "the torch backend")
    if threads:
        import torch

        torch.set_num_threads(threads)
    return Embedder.load(name, device)


# -- A model's torch weights, read from where its card says: a safetensors file, or (weights stored once) the
# initialisers of its ONNX export, which hold every tensor of the state dict under its own name. Either way they
# must hash to the card's ``weights_sha256``: for ONNX-stored weights, the sha256 of the same tensors written as
# safetensors (with the metadata the ONNX file records), so a model whose weights moved into its ONNX file keeps
# its ``model_id`` and the galleries enrolled with it.

SAFETENSORS_METADATA = "faceverify.safetensors_metadata"
"""ONNX metadata key: the JSON metadata of the safetensors file the weights were moved from (null for none)."""


def torch_weights(card: ModelCard, card_path: Path) -> dict[str, "torch.Tensor"]:
    """The state dict that the card names, checked against ``weights_sha256``."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = card_path.parent / card.weights
    try:
        data = path.read_bytes()
    except OSError:
        raise ModelError(f"{path}: weights file named by model card {card_path.name} is missing") from None
    if sha256_bytes(data) != (card.onnx_sha256 if card.weights_in_onnx else card.weights_sha256):  # before parsing
        raise ModelError(f"{path}: weights do not match the sha256 recorded in {card_path.name}")
    if not card.weights_in_onnx:
        try:
            return load(data)
        except (SafetensorError, ValueError) as exc:
            raise ModelError(f"{path}: unreadable safetensors file ({exc})") from None
    state, as_safetensors = state_from_onnx(data, path)
    if sha256_bytes(as_safetensors) != card.weights_sha256:
        raise ModelError(f"{path}: the weights in this ONNX file do not match the sha256 recorded in {card_path.name}")
    return state


def state_from_onnx(model: bytes, source: Path | str = "ONNX file") -> tuple[dict[str, "torch.Tensor"], bytes]:
    """Every initialiser of an ONNX model as a tensor, and those tensors written as safetensors (what
    ``weights_sha256`` hashes)."""
    import onnx
    import torch
    from onnx import numpy_helper
    from safetensors.torch import save

    try:
        proto = onnx.load_from_string(model)
        state = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in proto.graph.initializer}
        meta = json.loads({p.key: p.value for p in proto.metadata_props}.get(SAFETENSORS_METADATA, "null"))
    except Exception as exc:  # noqa: BLE001 - protobuf's and onnx's own error types
        raise ModelError(f"{source}: unreadable ONNX weights ({str(exc).splitlines()[0][:160]})") from None
    return state, save(state, metadata=meta)
