"""Export each embedding network to ONNX beside its card, and store its weights once: in that ONNX file.

    python tools/export_onnx.py [MODEL ...]      # default: every card in models/

The network is built from the card (``networks`` registry) and loaded from its checked weights by
:meth:`faceverify.embed.Embedder.load`, then exported with ``torch.onnx.export`` (input ``crops``: N x 3 x S x S
float, already normalised as the card says; output ``embedding``: N x D, not yet L2-normalised) with a dynamic
batch axis and without graph rewriting, so that every tensor of the network's state dict is an initialiser under
its own name (ONNX Runtime folds the transposes and batch norms when it loads the file). Tensors the graph does
not use (batch-norm counters) are added as initialisers too, and the file records the metadata of the safetensors
file they came from: :func:`faceverify.embed.state_from_onnx` gives the torch weights back.

Before anything is written, two checks must hold, else the tool stops with exit 1 and the model is left as it was:
ONNX Runtime's output matches torch's on random crops at batch 1 and 5 (cosine >= 0.99999), and the weights read
back from the file, written as safetensors, hash to the card's ``weights_sha256`` (the same tensors, bit for bit,
so the model keeps its ``model_id``). Then the card names the ONNX file for both runtimes and the safetensors file
is removed.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from faceverify._util import sha256_bytes, write_atomic
from faceverify.embed import Embedder, OnnxEmbedder
from faceverify.modelcard import ModelCard, available_models, resolve_card, shipped_models_dir
from faceverify.embed import SAFETENSORS_METADATA, state_from_onnx

OPSET = 18


def safetensors_metadata(card: ModelCard, card_path: Path) -> dict | None:
    """The ``__metadata__`` of the card's weights as a safetensors file (None when it has none)."""
    path = card_path.parent / card.weights
    if card.weights_in_onnx:
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        return json.loads(props.get(SAFETENSORS_METADATA, "null"))
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(length)).get("__metadata__")


def weights_once(network: torch.nn.Module, size: int, metadata: dict | None) -> bytes:
    """The ONNX file of ``network``: its graph, every state-dict tensor as a named initialiser, no export metadata."""
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "model.onnx"
        torch.onnx.export(
            network, (torch.zeros(2, 3, size, size),), str(staged), input_names=["crops"], output_names=["embedding"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},), verbose=False, opset_version=OPSET,
            dynamo=True, external_data=False, optimize=False,
        )
        proto = onnx.load(str(staged))
    for node in proto.graph.node:  # the exporter's stack traces and names of Python classes: a third of the file
        del node.metadata_props[:]
        node.doc_string = ""
    del proto.graph.value_info[:]
    present = {i.name for i in proto.graph.initializer}
    for key, tensor in network.state_dict().items():
        if key not in present:
            proto.graph.initializer.append(numpy_helper.from_array(tensor.detach().cpu().numpy(), key))
    proto.metadata_props.add(key=SAFETENSORS_METADATA, value=json.dumps(metadata))
    return proto.SerializeToString()


def export(name: str) -> str:
    """Export model ``name``; returns a one-line summary. Raises SystemExit when a check fails."""
    torch.set_num_threads(1)
    embedder = Embedder.load(name, "cpu")
    card, card_path = resolve_card(name)
    old_weights = card_path.parent / card.weights
    data = weights_once(embedder.network, card.input_size, safetensors_metadata(card, card_path))
    crops = np.random.default_rng(0).integers(0, 256, (5, card.input_size, card.input_size, 3), dtype=np.uint8)
    runtime = OnnxEmbedder(card, data, threads=1)
    for batch in (crops[:1], crops):
        cos = (runtime.embed(batch) * embedder.embed(batch)).sum(1)
        if cos.min() < 0.99999:
            raise SystemExit(f"error: {name}: ONNX Runtime disagrees with torch (cosine {cos.min():.6f}); model unchanged")
    state, as_safetensors = state_from_onnx(data)
    if sha256_bytes(as_safetensors) != card.weights_sha256 or set(state) != set(embedder.network.state_dict()):
        raise SystemExit(f"error: {name}: the weights read back from the ONNX file are not the card's; model unchanged")
    target = card_path.parent / f"{card.name}.onnx"
    write_atomic(target, data)
    card.onnx = card.weights = target.name
    card.onnx_sha256 = sha256_bytes(data)
    write_atomic(card_path, card.to_json())
    if old_weights != target:
        old_weights.unlink()
    return (f"{name}: {target.name} ({len(data) / 1e6:.1f} MB, sha256 {card.onnx_sha256[:12]}) holds the weights for "
            "both runtimes; cosine to torch >= 0.99999")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help=f"model names (default: all in {shipped_models_dir()})")
    args = parser.parse_args(argv)
    for name in args.models or available_models(shipped_models_dir()):
        print(export(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
