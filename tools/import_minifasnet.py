"""Import Minivision's anti-spoofing networks (MiniFASNetV2 at 2.7x the face box, MiniFASNetV1SE at 4.0x;
Apache-2.0) as ONNX files plus a liveness card in models/liveness/.

    python tools/import_minifasnet.py [--weights DIR] [--out DIR]    # DIR default: ../shared/weights/minifasnet

Each state dict is checked against the sha256 that ``../shared/weights/README.md`` gives, read with
``torch.load(weights_only=True)`` (nothing is unpickled) and loaded strictly into our own network
(:mod:`faceverify.networks.minifasnet`, shaped by the weights). Before anything is written, three checks must hold,
else the tool stops with exit 1:

- torch: on the three samples, each network's softmax on our crop of the given face box is within 1e-4 of the
  reference implementation's (``reference.json``);
- ONNX Runtime: the exported file gives a softmax within 1e-5 of the torch network's on random crops at batch
  1 and 4. It is the same function in the form ONNX Runtime runs fastest (about half the time per face): the
  pruned widths padded by always-zero channels to a multiple of 16
  (:func:`~faceverify.networks.minifasnet.pad_channels`), BatchNorm folded, and each PReLU as two convolutions
  (:class:`~faceverify.networks.minifasnet.SplitPReLUConv`);
- the runtime path (:class:`faceverify.liveness.LivenessChecker` on the written files) reproduces the reference
  within 1e-4 again and judges each sample as its name says (T: live, F: spoof).

The ONNX files are inference graphs (the exporter's optimiser folds each BatchNorm into its convolution, which
ONNX Runtime then runs in its blocked layout): nothing but ONNX Runtime reads them, and the torch network is
rebuilt from the source state dicts by running this tool again. The card records the sources' sha256.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

from faceverify._util import onnx_session, sha256_bytes, sha256_file, write_atomic
from faceverify.images import load_image
from faceverify.liveness import LivenessCard, LivenessChecker
from faceverify.liveness.checker import network_input, softmax
from faceverify.modelcard import shipped_models_dir
from faceverify.networks.minifasnet import minifasnet_from_state, pad_channels, runtime_form
from tools.common import DEV_MINIFASNET
from tools.export_onnx import OPSET

SOURCE = "GitHub minivision-ai/Silent-Face-Anti-Spoofing, commit b6d5f04a, resources/anti_spoof_models/"
NETWORKS = [
    # (checkpoint, its sha256 from ../shared/weights/README.md, our name, crop scale)
    ("2.7_80x80_MiniFASNetV2.pth", "a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0",
     "minifasnet-v2", 2.7),
    ("4_0_0_80x80_MiniFASNetV1SE.pth", "84ee1d37d96894d5e82de5a57df044ef80a58be2b218b5ed7cdfd875ec2f5990",
     "minifasnet-v1se", 4.0),
]
INPUT_SIZE = 80
REFERENCE_TOLERANCE = 1e-4
RUNTIME_TOLERANCE = 1e-5
CHANNEL_BLOCK = 16
"""The exported networks' pruned widths are padded with always-zero channels to a multiple of this (AVX-512's
block; AVX2's 8 divides it), so that ONNX Runtime's blocked convolutions take every layer."""
MIN_FACE = 32
"""The smallest face box side judged: at 2.7x the box, a 32 px face fills the 80 px crop at its own resolution
(smaller faces are upscaled into it, a picture the networks were not trained on)."""
MEASURED = dict(
    data="600 labelled live / print / replay / mask images kept outside the project, YuNet face boxes, the authors' "
         "code and rule (argmax of the averaged softmax)",
    apcer=0.147, bpcer=0.063, acer=0.105, auc=0.941,
    source="../shared/weights/README.md (measured by the session that filed issue 33)",
)


def sample_crops(weights: Path, reference: dict, scale: float) -> tuple[list[str], np.ndarray]:
    """The samples' names and their BGR 0..255 crops (N x 3 x 80 x 80 float32) at ``scale`` of the given boxes."""
    names, net = sorted(reference), dict(scale=scale, input_size=INPUT_SIZE)
    return names, np.concatenate([network_input(load_image(weights / n), [reference[n]["bbox_xywh"]], net)
                                  for n in names])


def import_network(weights: Path, reference: dict, checkpoint: str, sha256: str, scale: float
                   ) -> tuple[bytes, dict, float]:
    """(ONNX bytes, the card's entry but file and sha256, the largest softmax gap to the reference)."""
    actual = sha256_file(weights / checkpoint)
    if actual != sha256:
        raise SystemExit(f"error: {weights / checkpoint}: sha256 {actual} is not the README's {sha256}; nothing written")
    state = torch.load(weights / checkpoint, map_location="cpu", weights_only=True)
    network = minifasnet_from_state(state)
    names, crops = sample_crops(weights, reference, scale)
    with torch.no_grad():
        ours = torch.softmax(network(torch.from_numpy(crops)), dim=1).numpy()
    gap = float(max(np.abs(ours[i] - reference[n][checkpoint]).max() for i, n in enumerate(names)))
    if gap > REFERENCE_TOLERANCE:
        raise SystemExit(f"error: {checkpoint}: softmax {gap:.2e} from the reference (most {REFERENCE_TOLERANCE:g}); "
                         "nothing written")
    data = inference_onnx(runtime_form(minifasnet_from_state(pad_channels(state, CHANNEL_BLOCK))))
    session = onnx_session(data, threads=1)
    rng = np.random.default_rng(0)
    for batch in (1, 4):
        x = rng.uniform(0, 255, (batch, 3, INPUT_SIZE, INPUT_SIZE)).astype(np.float32)
        with torch.no_grad():
            expected = torch.softmax(network(torch.from_numpy(x)), dim=1).numpy()
        got = softmax(session.run(None, {"crops": x})[0])
        if np.abs(got - expected).max() > RUNTIME_TOLERANCE:
            raise SystemExit(f"error: {checkpoint}: ONNX Runtime disagrees with torch; nothing written")
    entry = dict(scale=scale, input_size=INPUT_SIZE,
                 architecture="MiniFASNetV1SE" if "SE" in checkpoint else "MiniFASNetV2",
                 parameters=int(sum(p.numel() for p in network.parameters())), channels_padded_to=CHANNEL_BLOCK,
                 source_file=checkpoint, source_sha256=sha256)
    return data, entry, gap


def inference_onnx(network: torch.nn.Module) -> bytes:
    """``network`` as an ONNX inference graph: input ``crops`` (N x 3 x 80 x 80), output ``logits``, the
    exporter's optimiser run, its per-node metadata (stack traces, Python names) dropped."""
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "model.onnx"
        torch.onnx.export(
            network, (torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE),), str(staged), input_names=["crops"],
            output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
            opset_version=OPSET, dynamo=True, external_data=False, optimize=True, verbose=False,
        )
        proto = onnx.load(str(staged))
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del proto.graph.value_info[:]
    return proto.SerializeToString()


def runtime_check(weights: Path, reference: dict) -> dict:
    """The staged files (the first model folder) through LivenessChecker: the gap to the reference per network, and each sample's verdict
    (SystemExit unless within tolerance and judged as labelled)."""
    checker = LivenessChecker.load(threads=1)
    record: dict = dict(samples={})
    for name in sorted(reference):
        image, box = load_image(weights / name), reference[name]["bbox_xywh"]
        per_network = checker.per_network(image, [box])
        gaps = {net["model"]: float(np.abs(p[0] - reference[name][net["source_file"]]).max())
                for net, p in zip(checker.card.networks, per_network)}
        verdict = checker.verdict(checker.probabilities(image, [box])[0])
        if max(gaps.values()) > REFERENCE_TOLERANCE or verdict.live != name.startswith("image_T"):
            raise SystemExit(f"error: {name}: the installed networks do not reproduce the reference ({gaps}, "
                             f"live={verdict.live})")
        record["samples"][name] = dict(box_xywh=box, max_abs_gap=gaps, live=verdict.live,
                                       score=round(verdict.score, 6))
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=DEV_MINIFASNET, help="folder with the .pth files and reference.json")
    parser.add_argument("--out", type=Path, default=shipped_models_dir(), help="models folder to write liveness/ in")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    reference = json.loads((args.weights / "reference.json").read_text())["samples"]
    files: dict[str, bytes] = {}
    networks, torch_gaps = [], {}
    for checkpoint, sha256, name, scale in NETWORKS:
        data, entry, gap = import_network(args.weights, reference, checkpoint, sha256, scale)
        files[f"{name}.onnx"] = data
        networks.append(dict(model=f"{name}.onnx", sha256=sha256_bytes(data), **entry))
        torch_gaps[checkpoint] = gap
    card = LivenessCard(
        name="minifasnet", networks=networks, classes=["spoof (2-D: print, screen)", "live", "spoof (3-D)"],
        live_class=1, threshold=None, min_face=MIN_FACE, licence="Apache-2.0",
        provenance=dict(source=SOURCE, licence_file="LICENSE-minifasnet-Apache-2.0.txt",
                        imported_by="tools/import_minifasnet.py", crop="face box (x, y, w, h) scaled about its centre "
                        "by min(scale, (H-1)/h, (W-1)/w), moved back inside the image, truncated, inclusive, resized "
                        "bilinearly to input_size (faceverify.liveness.crop)"),
        parity=dict(torch_max_abs_gap=torch_gaps, tolerance=REFERENCE_TOLERANCE),
        measured=MEASURED,
    )
    # stage in a temporary models folder, check the runtime path there, then move into place
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "liveness"
        staged.mkdir()
        for file, data in files.items():
            (staged / file).write_bytes(data)
        card.save(staged / "minifasnet.json")
        os.environ["FACEVERIFY_MODELS"] = tmp  # the first model folder: the checker reads the staged card
        card.parity["runtime"] = runtime_check(args.weights, reference)
        target = args.out / "liveness"
        target.mkdir(parents=True, exist_ok=True)
        for file, data in files.items():
            write_atomic(target / file, data)
        write_atomic(target / "minifasnet.json", json.dumps(card.__dict__, indent=2) + "\n")
        shutil.copyfile(args.weights.parent / "LICENSE-minifasnet-Apache-2.0.txt", target / "LICENSE-Apache-2.0.txt")
    for net in networks:
        print(f"{net['model']}: {net['architecture']}, {net['parameters']} parameters, sha256 {net['sha256'][:12]}")
    print(f"parity with the reference: torch {max(torch_gaps.values()):.1e}, ONNX Runtime "
          f"{max(g for s in card.parity['runtime']['samples'].values() for g in s['max_abs_gap'].values()):.1e} "
          f"(most {REFERENCE_TOLERANCE:g}); written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
