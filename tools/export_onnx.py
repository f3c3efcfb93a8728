"""Export each shipped embedding network to ONNX beside its weights and record the file and its sha256 in the card.

    python tools/export_onnx.py [MODEL ...]      # default: every card in faceverify/models

The network is built from the card (``networks`` registry) and loaded from its checked safetensors by
:meth:`faceverify.embed.Embedder.load`, then exported with ``torch.onnx.export`` (input ``crops``: N x 3 x S x S
float, already normalised as the card says; output ``embedding``: N x D, not yet L2-normalised) with a dynamic
batch axis. Before the card is written, ONNX Runtime runs the file on random crops at batch 1 and 5 and its
output must match torch's (cosine >= 0.99999), else the tool stops with exit 1 and the card is left as it was.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from faceverify._util import sha256_file, write_atomic
from faceverify.embed import Embedder, OnnxEmbedder, available_models, models_dir, resolve_card

OPSET = 18


def export(name: str) -> str:
    """Export model ``name``; returns a one-line summary. Raises SystemExit when ONNX Runtime disagrees."""
    torch.set_num_threads(1)
    embedder = Embedder.load(name, "cpu")
    card, card_path = resolve_card(name)
    size = card.input_size
    target = card_path.parent / f"{card.name}.onnx"
    example = torch.zeros(2, 3, size, size)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / target.name
        torch.onnx.export(
            embedder.network, (example,), str(staged), input_names=["crops"], output_names=["embedding"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},), verbose=False, opset_version=OPSET,
            dynamo=True, external_data=False, optimize=True,
        )
        data = staged.read_bytes()
    crops = np.random.default_rng(0).integers(0, 256, (5, size, size, 3), dtype=np.uint8)
    runtime = OnnxEmbedder(card, data, threads=1)
    for batch in (crops[:1], crops):
        cos = (runtime.embed(batch) * embedder.embed(batch)).sum(1)
        if cos.min() < 0.99999:
            raise SystemExit(f"error: {name}: ONNX Runtime disagrees with torch (cosine {cos.min():.6f}); card unchanged")
    write_atomic(target, data)
    card.onnx, card.onnx_sha256 = target.name, sha256_file(target)
    write_atomic(card_path, card.to_json())
    return f"{name}: {target.name} ({len(data) / 1e6:.1f} MB, sha256 {card.onnx_sha256[:12]}), cosine to torch >= 0.99999"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help=f"model names (default: all in {models_dir()})")
    args = parser.parse_args(argv)
    for name in args.models or available_models():
        print(export(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
