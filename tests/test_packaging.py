"""`pip install .` (a real wheel, not the editable checkout) ships the models and the example training configs,
needs nothing from tools/, and runs (the library and the CLI) from any directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_models_and_loads_them(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("faceverify-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        uses_tools = [n for n in names if n.endswith(".py") and re.search(rb"^\s*(from|import) tools\b", zf.read(n), re.M)]
    assert not uses_tools, f"the package imports tools/, which is not installed: {uses_tools}"
    default = (REPO / "faceverify" / "models" / "DEFAULT").read_text().strip()
    assert f"faceverify/models/{default}.safetensors" in names and f"faceverify/models/{default}.json" in names
    assert f"faceverify/models/{default}.onnx" in names
    for card_path in (REPO / "faceverify" / "models").glob("*.json"):  # every shipped model, with all its files
        card = json.loads(card_path.read_text())
        files = [card_path.name, card["weights"], *([card["onnx"]] if card["onnx"] else [])]
        assert all(f"faceverify/models/{f}" in names for f in files), (card_path.name, files)
    assert "faceverify/models/detectors/yunet.onnx" in names and "faceverify/models/detectors/yunet.json" in names
    configs = sorted(p.name for p in (REPO / "faceverify" / "configs").glob("*.toml"))
    assert configs and all(f"faceverify/configs/{c}" in names for c in configs)
    assert "faceverify/service/page.html" in names  # the web page of `faceverify serve`
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True, capture_output=True,
    )
    code = (
        "import json, faceverify\n"
        "from faceverify.embed import Embedder, load_embedder, models_dir\n"
        "from faceverify.detect import make_detector\n"
        "from faceverify.train.config import load_config\n"
        "e = Embedder.load(device='cpu')\n"
        "cfg = load_config('mobilefacenet-folders', ['data.images=people'])\n"
        "fast = [load_embedder().backend, make_detector().kind]\n"
        "print(json.dumps([faceverify.__file__, str(models_dir()), e.card.name, cfg.model.architecture, fast]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FACEVERIFY_MODELS"}
    env["PYTHONPATH"] = str(target)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    module_file, models, name, architecture, fast = json.loads(out.stdout)
    assert fast == ["onnx", "yunet"]
    assert module_file.startswith(str(target)) and models.startswith(str(target)) and name == default
    assert architecture == "mobilefacenet"
    help_text = subprocess.run([sys.executable, "-m", "faceverify.cli", "--help"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, check=True).stdout
    assert "demo" in help_text and "evaluate" in help_text and "export-model" in help_text
