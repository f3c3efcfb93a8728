"""Export MTCNN's three stages (facenet-pytorch's PNet, RNet and ONet weights) to ONNX with their detector card.

    python tools/export_mtcnn.py        # writes models/detectors/mtcnn-{pnet,rnet,onet}.onnx + mtcnn.json

The weights are the state dicts facenet-pytorch 2.5.3 ships (``facenet_pytorch/data/{pnet,rnet,onet}.pt``, MIT),
read with ``torch.load(weights_only=True)`` into its modules and exported with ``torch.onnx.export``: input
``image`` (N x 3 x H x W float, already normalised as ``(pixel - 127.5) / 128``), batch axis dynamic, and for
PNet height and width too. Before anything is written, ONNX Runtime runs each file on random inputs at two
batch sizes (and PNet at two image sizes) and its outputs must equal torch's to 1e-4, else exit 1 and nothing
changes. The card records each file's sha256 (checked by ``OnnxMtcnnDetector`` before loading), the
weights' sha256, licence and provenance.
"""

from __future__ import annotations

import importlib.metadata
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from facenet_pytorch.models import mtcnn as facenet_mtcnn

from faceverify._util import sha256_bytes, sha256_file, write_atomic
from faceverify.modelcard import DetectorCard, shipped_models_dir

OPSET = 18
STAGES = {  # stage: (module, output names, example input size, input sizes checked)
    "pnet": (facenet_mtcnn.PNet, ["regression", "probability"], (31, 37), [(12, 12), (97, 130)]),
    "rnet": (facenet_mtcnn.RNet, ["regression", "probability"], (24, 24), [(24, 24)]),
    "onet": (facenet_mtcnn.ONet, ["regression", "landmarks", "probability"], (48, 48), [(48, 48)]),
}


def weights_path(stage: str) -> Path:
    """The state dict facenet-pytorch ships for ``stage``."""
    return Path(facenet_mtcnn.__file__).parents[1] / "data" / f"{stage}.pt"


def export_stage(stage: str) -> bytes:
    """The ONNX bytes of one stage, checked against torch; SystemExit when ONNX Runtime disagrees."""
    module, outputs, (h, w), checked = STAGES[stage]
    network = module(pretrained=False).eval()
    network.load_state_dict(torch.load(weights_path(stage), map_location="cpu", weights_only=True), strict=True)
    axes = {"image": {0: "batch"} | ({2: "height", 3: "width"} if stage == "pnet" else {})}
    axes |= {name: {0: "batch"} | ({2: "rows", 3: "cols"} if stage == "pnet" else {}) for name in outputs}
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / f"{stage}.onnx"
        torch.onnx.export(network, (torch.zeros(2, 3, h, w),), str(staged), input_names=["image"],
                          output_names=outputs, dynamic_axes=axes, opset_version=OPSET, dynamo=False)
        data = staged.read_bytes()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for size in checked:
        for batch in (1, 7):
            x = rng.uniform(-1, 1, (batch, 3, *size)).astype(np.float32)
            with torch.inference_mode():
                expected = [t.numpy() for t in network(torch.from_numpy(x))]
            got = session.run(outputs, {"image": x})
            worst = max(float(np.abs(a - b).max()) for a, b in zip(got, expected))
            if worst > 1e-4:
                raise SystemExit(f"error: {stage}: ONNX Runtime differs from torch by {worst:.2e} at {size}; nothing written")
    return data


def main() -> int:
    torch.set_num_threads(1)
    files = {stage: export_stage(stage) for stage in STAGES}
    out = shipped_models_dir() / "detectors"
    stages = {}
    for stage, data in files.items():
        target = out / f"mtcnn-{stage}.onnx"
        write_atomic(target, data)
        stages[stage] = {"model": target.name, "sha256": sha256_bytes(data)}
    card = DetectorCard(
        name="mtcnn", kind="mtcnn", model="", model_sha256="", stages=stages, score_threshold=0.9,
        nms_threshold=0.7, max_side=0, licence="MIT",
        provenance=dict(
            source="facenet-pytorch 2.5.3 (github.com/timesler/facenet-pytorch), facenet_pytorch/data/*.pt, "
            "converted by its author from the MTCNN authors' Caffe models (Zhang et al. 2016)",
            weights_sha256={stage: sha256_file(weights_path(stage)) for stage in STAGES},
            exported_by="tools/export_mtcnn.py", torch=torch.__version__, opset=OPSET,
            licence_text=importlib.metadata.distribution("facenet-pytorch").read_text("LICENSE.md").strip(),
        ),
        notes="MTCNN (Zhang et al. 2016) as three ONNX graphs (input 'image', N x 3 x H x W, (pixel - 127.5) / "
        "128; PNet any H, W >= 12), run by faceverify.detect.OnnxMtcnnDetector with facenet-pytorch's cascade: "
        "stage thresholds 0.6 / 0.7 / 0.7, pyramid factor 0.709, NMS 0.5 / 0.7 / 0.7 / 0.7 (last by the smaller "
        "box). score_threshold is the final score a face needs (as faceverify.detect.Detector); max_side 0: the "
        "image is searched at full resolution. Parity with facenet-pytorch: tests/test_mtcnn_onnx.py.",
    )
    card.save(out / "mtcnn.json")
    for stage, entry in stages.items():
        print(f"{stage}: {entry['model']} ({len(files[stage]) / 1e3:.0f} kB, sha256 {entry['sha256'][:12]})")
    print(f"card {out / 'mtcnn.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
