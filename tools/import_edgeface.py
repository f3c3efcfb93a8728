"""Import the EdgeFace authors' int8 releases (EdgeFace-XS, EdgeFace-XXS; BSD-3-Clause) as float safetensors
plus model cards in faceverify/models/.

    python tools/import_edgeface.py [--weights DIR] [--lfw LFW] [MODEL ...]   # default: edgeface-xs edgeface-xxs

Each checkpoint (a state dict of timm's EdgeNeXt with a 512-d head whose ``nn.Linear`` layers were dynamically
quantised to int8) is checked against the sha256 that ``../shared/weights/README.md`` gives, read with
``torch.load(weights_only=True)`` (nothing is unpickled), and its int8 linear weights are dequantised into the
float network of :mod:`faceverify.networks.edgeface`. Parity: the float network and the authors' quantised model
(rebuilt with ``torch.ao.quantization.quantize_dynamic`` and loaded from the same checkpoint) embed 200 LFW faces
(pairsDevTest images, YuNet's centre face aligned onto the ArcFace template), one face per call. Each quantised
linear, fed the input ours gets, must agree with ours to a mean cosine >= 0.995, and the embeddings to >= 0.95:
the reference rounds every linear's input to int8 (7 bits on x86), which over 43 layers leaves XS at 0.972 on
x86 (0.994 on qnnpack), so the 0.999 first asked for cannot be met by any float import. Otherwise the tool
stops with exit 1 and writes nothing. The record goes into the card; a card already there for the same weights
keeps its calibration, evaluation and ONNX export.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import timm
import torch
from safetensors.torch import save
from torch import nn

from faceverify._util import sha256_bytes, sha256_file, write_atomic
from faceverify.align import align_face
from faceverify.detect import YuNetDetector, select_faces
from faceverify.embed import models_dir
from faceverify.eval.pairs import lfw_image_dir, read_lfw_pairs
from faceverify.images import load_image
from faceverify.modelcard import ModelCard
from faceverify.networks import build
from faceverify.networks.edgeface import ARCFACE_TEMPLATE, INPUT_SIZE, MEAN, STD
from tools.common import REPO_ROOT, lfw_root

SHARED_WEIGHTS = REPO_ROOT.parent / "shared" / "weights"
SOURCE_REPO = "GitHub iamfaith/edgeface (a copy of otroshi/edgeface, the authors' repository)"
SOURCE_COMMIT = "64c2413e"
MODELS = {
    # name: (checkpoint, its sha256 from ../shared/weights/README.md, architecture, timm model)
    "edgeface-xs": ("edgeface_xs_q.pt", "a31314377876ab9fa2a75e5638bc528efe79fd17d5c9c0a228fb7f846d7581a6",
                    "edgeface_xs", "edgenext_x_small"),
    "edgeface-xxs": ("edgeface_xxs_q.pt", "46be7cc7e8d6e23501c0627fe5fbef101922ee9b85ccbef476987ab1a320b053",
                     "edgeface_xxs", "edgenext_xx_small"),
}
PARITY_FACES = 200
LAYER_MIN_MEAN = 0.995
"""Each quantised linear, on the same input, against ours: what int8 rounding of its input alone leaves (measured
0.9978 at the lowest layer of XS on x86)."""
END_TO_END_MIN_MEAN = 0.95
"""Whole network: 43 layers of int8 activations add up (XS measured 0.972 on x86, 0.994 on qnnpack, which does
not halve the activation range); a wrong mapping or front end gives far less."""
EMBEDDING_SIZE = 512


def read_checkpoint(path: Path, sha256: str) -> dict[str, torch.Tensor]:
    """The checkpoint's state dict, after checking the file against ``sha256``."""
    actual = sha256_file(path)
    if actual != sha256:
        raise SystemExit(f"error: {path}: sha256 {actual} is not the README's {sha256}; nothing written")
    return torch.load(path, map_location="cpu", weights_only=True)


def dequantise(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A float state dict: each quantised linear's packed (int8 weight, bias) becomes ``weight`` and ``bias``; its
    ``_packed_params.dtype``, ``scale`` and ``zero_point`` (the dynamic module's bookkeeping) are dropped."""
    packed = "._packed_params._packed_params"
    linears = {k[: -len(packed)] for k in state if k.endswith(packed)}
    bookkeeping = {f"{p}.{s}" for p in linears for s in ("_packed_params.dtype", "scale", "zero_point")}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith(packed):
            weight, bias = value
            out[key[: -len(packed)] + ".weight"] = weight.dequantize().float().contiguous()
            if bias is not None:
                out[key[: -len(packed)] + ".bias"] = bias.float().contiguous()
        elif key not in bookkeeping:
            out[key] = value.contiguous()
    return out


def reference_model(architecture: str, state: dict[str, torch.Tensor]) -> nn.Module:
    """The authors' quantised model: the network, ``quantize_dynamic`` on its linears, the checkpoint loaded."""
    network = build(architecture, EMBEDDING_SIZE).eval()
    quantised = torch.ao.quantization.quantize_dynamic(network, {nn.Linear}, dtype=torch.qint8)
    quantised.load_state_dict(state, strict=True)
    return quantised.eval()


def parity_crops(root: Path, count: int = PARITY_FACES) -> np.ndarray:
    """``count`` aligned 112 x 112 RGB crops: YuNet's centre face of the first pairsDevTest images (sorted)."""
    rels = sorted({r for p in read_lfw_pairs(root / "pairsDevTest.txt") for r in (p.path_a, p.path_b)})
    detector, template, crops = YuNetDetector(threads=1), np.asarray(ARCFACE_TEMPLATE), []
    for rel in rels:
        image = load_image(lfw_image_dir(root) / rel)
        faces = select_faces(detector.detect_one(image), image.shape, "center")
        if faces:
            crops.append(align_face(image, faces[0].landmarks, template, INPUT_SIZE))
        if len(crops) == count:
            break
    return np.stack(crops)


def embed(network: nn.Module, crops: np.ndarray) -> np.ndarray:
    """L2-normalised embeddings of uint8 crops, normalised as the card says (``x / 127.5 - 1``), one face at a
    time (dynamic quantisation scales each batch's activations together: one face per batch is how it is used)."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float()
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        z = torch.cat([network(x[i : i + 1]) for i in range(len(x))])
    return torch.nn.functional.normalize(z, dim=1).numpy()


def layer_parity(float_net: nn.Module, reference: nn.Module, crops: np.ndarray) -> dict[str, float]:
    """Each quantised linear of ``reference`` against ours on the very input ours receives (forward hooks): the
    mean cosine of the two outputs per face, the lowest of the layers and the layer it is."""
    theirs = dict(reference.named_modules())
    cosines: dict[str, list[torch.Tensor]] = {}

    def hook(name: str):
        def compare(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
            other = theirs[name](inputs[0])
            cos = torch.nn.functional.cosine_similarity(output.flatten(1), other.flatten(1), dim=1)
            cosines.setdefault(name, []).append(cos)
        return compare

    handles = [m.register_forward_hook(hook(n)) for n, m in float_net.named_modules() if isinstance(m, nn.Linear)]
    try:
        embed(float_net, crops)
    finally:
        for h in handles:
            h.remove()
    means = {n: float(torch.cat(c).mean()) for n, c in cosines.items()}
    worst = min(means, key=means.__getitem__)
    return dict(layers=len(means), lowest_mean_cosine=round(means[worst], 6), lowest_layer=worst)


def parity(float_net: nn.Module, reference: nn.Module, crops: np.ndarray) -> dict:
    """Our float network against the authors' int8 one on the same crops: end to end (mean and lowest cosine
    of the embeddings) and layer by layer (:func:`layer_parity`), with the quantised engine used."""
    cos = (embed(float_net, crops) * embed(reference, crops)).sum(1)
    return dict(faces=len(crops), mean_cosine=round(float(cos.mean()), 6), min_cosine=round(float(cos.min()), 6),
                per_layer=layer_parity(float_net, reference, crops), engine=torch.backends.quantized.engine)


def parity_failures(check: dict) -> list[str]:
    """What of :func:`parity`'s record is below the required cosines (empty when it passes)."""
    failed = []
    if check["mean_cosine"] < END_TO_END_MIN_MEAN:
        failed.append(f"mean cosine to the int8 reference {check['mean_cosine']} < {END_TO_END_MIN_MEAN}")
    layer = check["per_layer"]
    if layer["lowest_mean_cosine"] < LAYER_MIN_MEAN:
        failed.append(f"layer {layer['lowest_layer']}: mean cosine {layer['lowest_mean_cosine']} < {LAYER_MIN_MEAN}")
    return failed


def card_for(name: str, checkpoint: str, sha256: str, architecture: str, timm_name: str, weights_sha: str,
             check: dict, old: ModelCard | None) -> ModelCard:
    """The model card; thresholds, calibration, evaluation and ONNX export kept from ``old`` for the same weights."""
    keep = old is not None and old.weights_sha256 == weights_sha
    return ModelCard(
        name=name, architecture=architecture, input_size=INPUT_SIZE, template=ARCFACE_TEMPLATE, mean=MEAN, std=STD,
        embedding_size=EMBEDDING_SIZE, weights=f"{name}.safetensors", weights_sha256=weights_sha,
        thresholds=old.thresholds if keep else {}, calibration=old.calibration if keep else {},
        evaluation=old.evaluation if keep else {}, onnx=old.onnx if keep else "",
        onnx_sha256=old.onnx_sha256 if keep else "",
        provenance=dict(
            source_repository=SOURCE_REPO, source_commit=SOURCE_COMMIT, source_commit_note="'add checkpoints' by an "
            "EdgeFace author, 2025-08-07", source_file=checkpoint, source_sha256=sha256,
            licence="BSD-3-Clause (EdgeFace, Idiap Research Institute; LICENSE-edgeface-BSD-3-Clause.txt)",
            training_data="collected for research use (the authors' face recognition training sets); the weights' "
                          "licence is BSD-3-Clause",
            paper="George et al., EdgeFace: Efficient Face Recognition Model for Edge Devices (IEEE T-BIOM 2024); "
                  "winner of the compact track of EFaR 2023",
            reported_lfw_accuracy_full_precision={"edgeface-xs": 0.9973, "edgeface-xxs": 0.9957}[name],
            network=f"timm {timm_name} (timm {timm.__version__}), num_classes={EMBEDDING_SIZE}",
            conversion="int8 dynamic-quantised nn.Linear weights dequantised (weight.dequantize()) to float32; every "
                       "other tensor as released",
            parity=dict(check, reference="the authors' int8 model: quantize_dynamic({nn.Linear}, qint8) + the "
                        "checkpoint", faces_from="LFW pairsDevTest images (sorted), YuNet centre face, ArcFace template",
                        required=dict(mean_cosine=END_TO_END_MIN_MEAN, per_layer_mean_cosine=LAYER_MIN_MEAN),
                        why_not_0_999="the reference quantises every linear's input to int8 on each call (x86/fbgemm: "
                        f"7 bits, reduce_range); our float32 network does not, and the difference adds up over "
                        f"{check['per_layer']['layers']} layers; the weights themselves are the int8 values exactly"),
            importer="python tools/import_edgeface.py",
        ),
        notes="EdgeFace (EdgeNeXt from timm with a 512-d head), the authors' int8 release dequantised to float32. "
              "Input: 112 x 112 RGB on the standard ArcFace 5-point template, pixels x / 127.5 - 1 (mean = std = "
              "127.5); output L2-normalised, decided by cosine at the calibrated thresholds.",
    )


def import_model(name: str, weights_dir: Path, crops: np.ndarray, out: Path) -> str:
    """Import one model; returns a one-line summary. Exits 1 (nothing written) when parity fails."""
    checkpoint, sha256, architecture, timm_name = MODELS[name]
    state = read_checkpoint(weights_dir / checkpoint, sha256)
    network = build(architecture, EMBEDDING_SIZE).eval()
    network.load_state_dict(dequantise(state), strict=True)
    check = parity(network, reference_model(architecture, state), crops)
    failed = parity_failures(check)
    if failed:
        raise SystemExit(f"error: {name}: {'; '.join(failed)}; nothing written")
    data = save({k: v.contiguous() for k, v in network.state_dict().items()})
    card_path = out / f"{name}.json"
    old = ModelCard.load(card_path) if card_path.exists() else None
    card = card_for(name, checkpoint, sha256, architecture, timm_name, sha256_bytes(data), check, old)
    write_atomic(out / card.weights, data)
    write_atomic(card_path, card.to_json())
    return f"{name}: {card.weights} ({len(data) / 1e6:.1f} MB), parity {check}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help=f"any of {', '.join(MODELS)} (default: both)")
    parser.add_argument("--weights", type=Path, default=SHARED_WEIGHTS)
    parser.add_argument("--lfw", type=Path, default=None, help="LFW root for the parity faces")
    parser.add_argument("--out", type=Path, default=None, help="models folder (default: faceverify/models)")
    args = parser.parse_args(argv)
    unknown = set(args.models) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)} (known: {', '.join(MODELS)})")
    torch.set_num_threads(1)
    crops = parity_crops(lfw_root(args.lfw))
    for name in args.models or MODELS:
        print(import_model(name, args.weights, crops, args.out or models_dir()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
