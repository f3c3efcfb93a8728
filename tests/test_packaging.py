"""Packaging: the wheel holds what answering needs (and is small enough to publish), the models live at the top of
the repository, an installed wheel runs from any directory, and the default install (a fresh venv, no torch)
verifies, enrolls, identifies, evaluates and serves, while the training commands name the extra they need."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WHEEL_LIMIT = 60 * 2**20
LIGHT_LIMIT = 700 * 2**20
IN_THE_WHEEL = {"edgeface-xs", "edgeface-xxs", "dlib-resnet-v1"}
"""The models whose cards and files the wheel carries; the others document the training wing (docs/install.md)."""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True, capture_output=True,
    )
    (built,) = out.glob("faceverify-*.whl")
    return built


def test_models_live_at_the_top_of_the_repository_with_their_weights_once():
    assert (REPO / "models" / "DEFAULT").is_file() and not (REPO / "faceverify" / "models").exists()
    cards = [json.loads(p.read_text()) for p in (REPO / "models").glob("*.json")]
    assert cards and all(c["weights"] == c["onnx"] for c in cards)  # one file holds each model's weights
    assert not list((REPO / "models").glob("*.safetensors"))


def test_wheel_holds_what_answering_needs(wheel):
    size = wheel.stat().st_size
    assert size <= WHEEL_LIMIT, f"wheel is {size / 2**20:.1f} MiB"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        uses_tools = [n for n in names if n.endswith(".py") and re.search(rb"^\s*(from|import) tools\b", zf.read(n), re.M)]
    assert not uses_tools, f"the package imports tools/, which is not installed: {uses_tools}"
    packages = {str(p.parent.relative_to(REPO)) for p in (REPO / "faceverify").rglob("__init__.py")}
    assert all(f"{p}/__init__.py" in names for p in packages), sorted(p for p in packages if f"{p}/__init__.py" not in names)
    default = (REPO / "models" / "DEFAULT").read_text().strip()
    assert default in IN_THE_WHEEL and "faceverify/models/DEFAULT" in names
    for card_path in (REPO / "models").glob("*.json"):
        card = json.loads(card_path.read_text())
        files = {f"faceverify/models/{f}" for f in (card_path.name, card["weights"], card["onnx"])}
        assert files <= names if card_path.stem in IN_THE_WHEEL else not files & names, card_path.name
    assert not [n for n in names if n.endswith(".safetensors")]
    assert "faceverify/models/detectors/yunet.onnx" in names and "faceverify/models/detectors/mtcnn.json" in names
    configs = sorted(p.name for p in (REPO / "faceverify" / "configs").glob("*.toml"))
    assert configs and all(f"faceverify/configs/{c}" in names for c in configs)
    assert "faceverify/service/page.html" in names  # the web page of `faceverify serve`


def test_installed_wheel_runs_from_anywhere(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True, capture_output=True,
    )
    code = (
        "import json, faceverify\n"
        "from faceverify.embed import Embedder, load_embedder\n"
        "from faceverify.modelcard import shipped_models_dir\n"
        "from faceverify.detect import make_detector\n"
        "from faceverify.train.config import load_config\n"
        "e = Embedder.load(device='cpu')\n"  # torch weights read from the ONNX file
        "cfg = load_config('mobilefacenet-folders', ['data.images=people'])\n"
        "fast = [load_embedder().backend, make_detector().kind]\n"
        "print(json.dumps([faceverify.__file__, str(shipped_models_dir()), e.card.name, cfg.model.architecture, fast]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FACEVERIFY_MODELS"}
    env["PYTHONPATH"] = str(target)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    module_file, models, name, architecture, fast = json.loads(out.stdout)
    assert fast == ["onnx", "yunet-onet"]
    assert module_file.startswith(str(target)) and models.startswith(str(target))
    assert name == (REPO / "models" / "DEFAULT").read_text().strip() and architecture == "mobilefacenet"
    help_text = subprocess.run([sys.executable, "-m", "faceverify.cli", "--help"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, check=True).stdout
    assert "demo" in help_text and "evaluate" in help_text and "export-model" in help_text


# -- the default install: a fresh venv with the wheel and its default dependencies, no torch ----------------------


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


@pytest.fixture(scope="module")
def light(wheel, tmp_path_factory) -> dict:
    """A venv made by `python -m venv` holding `pip install faceverify-*.whl` (the default dependencies from the
    package index), and the environment its commands run in (their own data folder and gallery)."""
    root = tmp_path_factory.mktemp("light")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    start = time.monotonic()
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if k not in ("FACEVERIFY_MODELS", "PYTHONPATH", "VIRTUAL_ENV")}
    env.update(XDG_DATA_HOME=str(root / "data"), XDG_CACHE_HOME=str(root / "cache"),
               FACEVERIFY_GALLERY=str(root / "gallery.sqlite"), PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")
    return dict(venv=venv, env=env, root=root, install_s=time.monotonic() - start, wheel=wheel)


def _run(light: dict, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([str(light["venv"] / "bin" / "faceverify"), *map(str, args)], cwd=light["root"],
                          env=light["env"], capture_output=True, text=True, timeout=timeout)


def test_the_default_install_holds_no_torch_and_fits(light):
    python = str(light["venv"] / "bin" / "python")
    probe = ("import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None for m in "
             "('torch', 'torchvision', 'facenet_pytorch', 'timm', 'fastapi', 'matplotlib', 'onnxruntime', 'cv2')}))")
    found = json.loads(subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout)
    assert found == dict(torch=False, torchvision=False, facenet_pytorch=False, timm=False, fastapi=False,
                         matplotlib=False, onnxruntime=True, cv2=True)
    size = _tree_size(light["venv"])
    assert size <= LIGHT_LIMIT, f"the default install is {size / 2**20:.0f} MiB"


def test_the_default_install_answers(light, lfw_image, drifting_face_video, tmp_path):
    a, b, other = lfw_image("Colin_Powell", 1), lfw_image("Colin_Powell", 2), lfw_image("George_W_Bush", 1)
    assert _run(light, "verify", a, b).returncode == 0
    assert _run(light, "verify", a, other).returncode == 1
    enrolled = _run(light, "enroll", "Colin Powell", a)
    assert enrolled.returncode == 0, enrolled.stderr
    found = _run(light, "identify", b, other, "--json")
    assert found.returncode == 0, found.stderr
    names = [json.loads(line)["faces"][0]["name"] for line in found.stdout.splitlines()]
    assert names == ["Colin Powell", None]
    listed = _run(light, "gallery", "list", "--json")
    assert json.loads(listed.stdout) == [dict(name="Colin Powell", embeddings=1)]

    streamed = _run(light, "identify", "--source", drifting_face_video, "--json")
    assert streamed.returncode == 0, streamed.stderr
    events = [json.loads(line) for line in streamed.stdout.splitlines() if line.startswith("{")]
    assert any(e.get("name") == "Colin Powell" for e in events), streamed.stdout

    pairs = tmp_path / "pairs.txt"
    pairs.write_text(f"{a}\t{b}\t1\n{a}\t{other}\t0\n{b}\t{other}\t0\n"
                     f"{other}\t{lfw_image('George_W_Bush', 2)}\t1\n")
    evaluated = _run(light, "evaluate", "pairs", pairs, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["pairs"] == 4


@pytest.mark.parametrize("args, extra", [
    (["train", "--config", "mobilefacenet-folders"], "train"),
    (["adapt", "--from", "a", "b", "--out", "x"], "train"),
    (["export-model", "runs/x"], "train"),
    (["verify", "a.jpg", "b.jpg", "--backend", "torch"], "train"),
    (["verify", "a.jpg", "b.jpg", "--detector", "mtcnn"], "train"),
    (["evaluate", "pairs", "pairs.txt", "--plot", "roc.png"], "plots"),
    (["serve"], "serve"),
])
def test_a_command_whose_extra_is_missing_names_it(light, args, extra, lfw_image):
    if args[0] == "verify":
        args = ["verify", lfw_image("Colin_Powell", 1), lfw_image("Colin_Powell", 2), *args[3:]]
    proc = _run(light, *args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and f"pip install 'faceverify[{extra}]'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_default_install_serves_with_the_serve_extra(light, lfw_image):
    venv, wheel = light["venv"], light["wheel"]
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel}[serve]"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = light["root"] / "serve.log"
    with open(log, "w") as out:
        server = subprocess.Popen([str(venv / "bin" / "faceverify"), "serve", "--port", str(port)], cwd=light["root"],
                                  env=light["env"], stdout=out, stderr=subprocess.STDOUT)
    try:
        health = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2) as reply:
                    health = json.loads(reply.read())
                break
            except OSError:
                time.sleep(0.3)
        assert health is not None, log.read_text()[-2000:]
        assert health["model"] == (REPO / "models" / "DEFAULT").read_text().strip()
        import httpx

        files = {side: (f"{side}.jpg", lfw_image("Colin_Powell", i).read_bytes()) for side, i in (("a", 1), ("b", 2))}
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/verify", files=files, timeout=60)
        assert answer.status_code == 200 and answer.json()["same"] is True, answer.text
    finally:
        server.terminate()
        server.wait(timeout=30)
    shutil.rmtree(light["root"] / "cache", ignore_errors=True)
