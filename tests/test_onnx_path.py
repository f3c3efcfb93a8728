"""The torch-free inference path: ONNX Runtime embeddings equal torch's, YuNet's landmarks are in MTCNN's order,
shipped ONNX files are checked against their cards, and verify / enroll / identify / gallery run without torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from faceverify.detect import Detector, YuNetDetector, choose_detector, select_faces
from faceverify.embed import Embedder, OnnxEmbedder, choose_backend
from faceverify.errors import ModelError
from faceverify.eval.pairs import read_lfw_pairs
from faceverify.images import load_image
from faceverify.modelcard import ModelCard, available_models, resolve_card, shipped_models_dir
from faceverify.pipeline import FacePipeline


@pytest.fixture(scope="module")
def lfw_faces(lfw_root, lfw_images):
    """200 LFW images of pairsDevTest (RGB arrays), in a fixed order."""
    pairs = read_lfw_pairs(lfw_root / "pairsDevTest.txt")
    rels = sorted({p.path_a for p in pairs} | {p.path_b for p in pairs})[:200]
    return [load_image(lfw_images / rel) for rel in rels]


@pytest.fixture(scope="module")
def yunet_faces(lfw_faces):
    """(image, YuNet's face nearest the centre) for each of the 200 images where it finds one."""
    detector = YuNetDetector(threads=1)
    found = [(img, select_faces(detector.detect_one(img), img.shape, "center")) for img in lfw_faces]
    return [(img, faces[0]) for img, faces in found if faces]


@pytest.fixture()
def one_torch_thread():
    """torch at one thread for the test (as the CLI runs it), restored after: two contend on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("model", available_models())
def test_onnx_embeddings_equal_torch_on_200_lfw_faces(model, yunet_faces, one_torch_thread):
    pipeline = FacePipeline(model, backend="onnx", detector="yunet", threads=1)
    assert isinstance(pipeline.embedder, OnnxEmbedder)
    crops = np.concatenate([pipeline.align(image, [face]) for image, face in yunet_faces])
    assert len(crops) == 200
    onnx = pipeline.embed_crops(crops)
    torch_vectors = Embedder.load(model, "cpu").embed(crops)
    cos = (onnx * torch_vectors).sum(1)
    assert cos.mean() >= 0.99999 and cos.min() >= 0.9999, (cos.mean(), cos.min())
    assert np.allclose(np.linalg.norm(onnx, axis=1), 1, atol=1e-5)


def test_pairs_devtest_accuracy_is_the_same_on_onnx_and_torch(lfw_root, lfw_images, one_torch_thread):
    """All 1000 pairsDevTest pairs through the default model, the same YuNet detections, each runtime: the number
    of pairs decided right at the card's FAR 1e-3 threshold, and at each runtime's own best threshold, differ by at
    most one pair."""
    pairs = read_lfw_pairs(lfw_root / "pairsDevTest.txt")
    rels = sorted({p.path_a for p in pairs} | {p.path_b for p in pairs})
    pipeline = FacePipeline(backend="onnx", detector="yunet", threads=1)
    crops = []
    for rel in rels:
        image = load_image(lfw_images / rel)
        faces = select_faces(pipeline.detector.detect_one(image), image.shape, "center")
        assert faces, rel
        crops.append(pipeline.align(image, faces[:1]))
    crops = np.concatenate(crops)
    index = {rel: i for i, rel in enumerate(rels)}
    a = np.array([index[p.path_a] for p in pairs])
    b = np.array([index[p.path_b] for p in pairs])
    same = np.array([p.same for p in pairs])
    threshold = pipeline.card.threshold_for(1e-3)

    def right(vectors: np.ndarray) -> tuple[int, int]:
        scores = (vectors[a] * vectors[b]).sum(1)
        best = max(int(((scores >= t) == same).sum()) for t in scores)
        return int(((scores >= threshold) == same).sum()), best

    onnx = right(pipeline.embed_crops(crops))
    torch_path = right(Embedder.load(pipeline.card.name, "cpu").embed(crops))
    assert abs(onnx[0] - torch_path[0]) <= 1 and abs(onnx[1] - torch_path[1]) <= 1, (onnx, torch_path)
    assert onnx[1] >= 970  # the figure is real: LFW accuracy of the default model, about 98%


def test_yunet_landmarks_come_in_mtcnn_order(lfw_faces, one_torch_thread):
    yunet, mtcnn = YuNetDetector(threads=1), Detector("cpu")
    offsets = []
    for image in lfw_faces[:20]:
        a = select_faces(yunet.detect_one(image), image.shape, "center")
        b = select_faces(mtcnn.detect_one(image), image.shape, "center")
        if a and b:
            distances = np.linalg.norm(a[0].landmarks[:, None] - b[0].landmarks[None], axis=2)  # yunet x mtcnn
            assert list(distances.argmin(1)) == [0, 1, 2, 3, 4]
            offsets.append(distances.diagonal())
    assert len(offsets) == 20
    assert float(np.median(offsets)) < 6.0  # pixels, on 250 x 250 images with ~110 px faces (about 4 measured)


def test_yunet_on_onnx_runtime_finds_opencvs_faces(lfw_faces):
    """The same network on ONNX Runtime with OpenCV's decoding in numpy: every face of every image, to 1e-3 px,
    on 200 LFW images, on 640x480 mosaics of them (several faces, a 480-row input) and on larger ones (shrunk)."""
    opencv, onnx = YuNetDetector(threads=1, runtime="opencv"), YuNetDetector(threads=1)
    assert onnx.runtime == "onnxruntime"  # the default where ONNX Runtime is installed
    assert onnx._session.get_inputs()[0].shape == [1, 3, "h", "w"]
    tiles = [np.concatenate([np.concatenate(lfw_faces[i:i + 2], 1)[:240]] * 2)[:, :500] for i in range(0, 40, 2)]
    mosaics = [np.pad(t, ((0, 0), (0, 140), (0, 0))) for t in tiles]
    images = lfw_faces + mosaics + [np.kron(m, np.ones((2, 2, 1), np.uint8)) for m in mosaics[:3]]
    counted = 0
    for image in images:
        a, b = (sorted(d.detect_one(image), key=lambda f: -f.score) for d in (opencv, onnx))
        assert len(a) == len(b)
        for fa, fb in zip(a, b):
            assert np.abs(fa.box - fb.box).max() < 1e-3 and np.abs(fa.landmarks - fb.landmarks).max() < 1e-3
            assert abs(fa.score - fb.score) < 1e-5
        counted += len(a)
    assert counted >= len(lfw_faces) + 2 * len(mosaics)
    assert onnx.like(30, 0.7).runtime == "onnxruntime" and opencv.like(30, 0.7).runtime == "opencv"
    with pytest.raises(ModelError, match="unknown YuNet runtime"):
        YuNetDetector(runtime="tensorrt")  # type: ignore[arg-type]


def test_defaults_pick_onnx_and_yunet_with_onet_landmarks_on_cpu_torch_and_mtcnn_on_cuda():
    card, _ = resolve_card()
    assert choose_backend(card) == "onnx" and choose_backend(card, "cpu") == "onnx"
    assert choose_backend(card, "cuda") == "torch" and choose_backend(card, "cpu", "torch") == "torch"
    assert choose_detector() == "yunet-onet" and choose_detector(None, "cuda") == "mtcnn"
    with pytest.raises(ModelError, match="runs on cpu"):
        choose_backend(card, "cuda", "onnx")
    with pytest.raises(ModelError, match="unknown detector"):
        choose_detector("haar")


@pytest.fixture()
def models_copy(tmp_path, monkeypatch):
    copy = tmp_path / "models"
    shutil.copytree(shipped_models_dir(), copy, ignore=shutil.ignore_patterns("*.safetensors", "__pycache__"))
    monkeypatch.setenv("FACEVERIFY_MODELS", str(copy))
    return copy


def test_a_tampered_onnx_file_is_refused_before_onnx_runtime_reads_it(models_copy):
    card, _ = resolve_card()
    path = models_copy / card.onnx
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the sha256"):
        OnnxEmbedder.load()
    (models_copy / "detectors" / "yunet.onnx").write_bytes(b"not a detector")
    with pytest.raises(ModelError, match="does not match the sha256"):
        YuNetDetector()


def test_card_onnx_field_must_be_a_plain_onnx_name_with_its_sha256():
    card, card_path = resolve_card()
    data = json.loads(card_path.read_text())
    for bad in ({"onnx": "../x.onnx"}, {"onnx": "x.bin"}, {"onnx_sha256": "ABC"}):
        with pytest.raises(ModelError, match="onnx"):
            ModelCard.from_dict({**data, **bad})
    with pytest.raises(ModelError, match="or the card's 'onnx' file"):  # its weights are in the ONNX file it drops
        ModelCard.from_dict({**data, "onnx": "", "onnx_sha256": ""})
    alone = ModelCard.from_dict({**data, "onnx": "", "onnx_sha256": "", "weights": "w.safetensors"})
    assert alone.onnx == "" and not alone.weights_in_onnx and card.weights_in_onnx


NO_TORCH = """\
import json, sys
from faceverify.cli import run
a, b, gallery = sys.argv[1:4]
codes = [run(["verify", a, b]), run(["enroll", "Colin", a, "--gallery", gallery]),
         run(["identify", b, "--gallery", gallery]), run(["gallery", "list", "--gallery", gallery])]
heavy = sorted(m for m in ("torch", "torchvision", "facenet_pytorch") if m in sys.modules)
print(json.dumps(dict(codes=codes, heavy=heavy)))
"""


def test_verify_enroll_identify_gallery_run_without_importing_torch(lfw_image, tmp_path):
    a, b = lfw_image("Colin_Powell", 1), lfw_image("Colin_Powell", 2)
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, str(a), str(b), str(tmp_path / "g.sqlite")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result == dict(codes=[0, 0, 0, 0], heavy=[]), proc.stdout + proc.stderr
    assert lines[0].startswith("same person") and any("\tColin\t" in line for line in lines)


NO_TORCH_VIDEO = """\
import json, sys
from faceverify.cli import run
image, video, gallery = sys.argv[1:4]
codes = [run(["enroll", "Colin", image, "--gallery", gallery]),
         run(["identify", "--source", video, "--gallery", gallery, "--json"])]
heavy = sorted(m for m in ("torch", "torchvision", "facenet_pytorch") if m in sys.modules)
print(json.dumps(dict(codes=codes, heavy=heavy)))
"""


def test_identify_source_runs_without_importing_torch(lfw_image, drifting_face_video, tmp_path):
    """Video's default detector on CPU is MTCNN's ONNX cascade: `identify --source` names the enrolled face in a
    short video (the LFW photo drifting across a 640x480 frame) without importing torch."""
    video = drifting_face_video
    proc = subprocess.run([sys.executable, "-c", NO_TORCH_VIDEO, str(lfw_image("Colin_Powell", 1)), str(video),
                           str(tmp_path / "g.sqlite")], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == dict(codes=[0, 0], heavy=[]), proc.stdout + proc.stderr
    events = [json.loads(line) for line in lines if line.startswith("{") and '"frame"' in line]
    assert any(e.get("name") == "Colin" for e in events), proc.stdout


NO_TORCH_SERVICE = """\
import json, sys
from fastapi.testclient import TestClient
from faceverify.service import ServiceConfig, create_app
a, b, gallery = sys.argv[1:4]
with TestClient(create_app(ServiceConfig(gallery=gallery)), base_url="http://127.0.0.1") as client:
    added = client.post("/v1/identities/Colin/faces", files=[("images", ("a.jpg", open(a, "rb").read()))])
    found = client.post("/v1/identify", files=[("image", ("b.jpg", open(b, "rb").read()))])
heavy = sorted(m for m in ("torch", "torchvision", "facenet_pytorch") if m in sys.modules)
print(json.dumps(dict(codes=[added.status_code, found.status_code], names=[f["name"] for f in found.json()["faces"]],
                      heavy=heavy)))
"""


def test_the_service_runs_without_importing_torch(lfw_image, tmp_path):
    """`faceverify serve`'s app enrols and identifies on the CPU defaults without importing torch."""
    pytest.importorskip("fastapi")
    proc = subprocess.run([sys.executable, "-c", NO_TORCH_SERVICE, str(lfw_image("Colin_Powell", 1)),
                           str(lfw_image("Colin_Powell", 2)), str(tmp_path / "g.sqlite")],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == dict(codes=[200, 200], names=["Colin"], heavy=[])


def test_onnx_and_torch_paths_agree_on_a_verification(lfw_image, one_torch_thread):
    from faceverify.api import FaceVerifier

    a, b = lfw_image("Colin_Powell", 1), lfw_image("George_W_Bush", 1)
    onnx = FaceVerifier(backend="onnx", detector="yunet", threads=1).verify(a, b)
    torch_path = FaceVerifier(device="cpu", backend="torch", detector="yunet").verify(a, b)
    assert not onnx.same and not torch_path.same
    assert abs(onnx.similarity - torch_path.similarity) < 1e-4 and onnx.boxes == torch_path.boxes


def test_cli_backend_errors_are_one_line_exit_2(lfw_image):
    a = lfw_image("Colin_Powell", 1)
    proc = subprocess.run([sys.executable, "-m", "faceverify.cli", "verify", str(a), str(a), "--backend", "onnx",
                           "--device", "cuda"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "runs on cpu" in proc.stderr


def test_video_detects_with_mtcnn_unless_a_detector_is_chosen():
    default = FacePipeline(threads=1)
    assert default.detector.kind == "yunet-onet" and default.frame_detector(24, 0.6).kind == "mtcnn"
    chosen = FacePipeline(detector="yunet", threads=1).frame_detector(24, 0.6)
    assert chosen.kind == "yunet" and chosen.min_face_size == 24


def test_flip_fusion_is_mirror_invariant_and_keyed_apart_in_the_cache(yunet_faces):
    from faceverify.eval.cache import front_end_tag

    plain = FacePipeline(backend="onnx", detector="yunet", threads=1)
    flip = FacePipeline(backend="onnx", detector="yunet", threads=1, flip=True)
    crops = np.concatenate([plain.align(image, [face]) for image, face in yunet_faces[:8]])
    fused, mirrored = flip.embed_crops(crops), flip.embed_crops(crops[:, :, ::-1])
    assert np.allclose(fused, mirrored, atol=1e-5)  # a face and its mirror get one embedding
    assert np.allclose(np.linalg.norm(fused, axis=1), 1, atol=1e-5)
    cos = (fused * plain.embed_crops(crops)).sum(1)
    assert 0.9 < cos.min() and cos.max() < 0.99999  # near the plain embedding, not it
    assert front_end_tag(flip) == front_end_tag(plain) + "+flip"
