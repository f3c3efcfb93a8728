"""`pip install .` (a real wheel, not the editable checkout) ships the models and the example training configs,
and runs from any directory."""

from __future__ import annotations

import json
import os
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
    names = zipfile.ZipFile(wheel).namelist()
    default = (REPO / "models" / "DEFAULT").read_text().strip()
    assert f"faceverify/models/{default}.safetensors" in names and f"faceverify/models/{default}.json" in names
    configs = sorted(p.name for p in (REPO / "configs").glob("*.toml"))
    assert configs and all(f"faceverify/configs/{c}" in names for c in configs)
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True, capture_output=True,
    )
    code = (
        "import json, faceverify\n"
        "from faceverify.embed import Embedder, models_dir\n"
        "from faceverify.train.config import load_config\n"
        "e = Embedder.load(device='cpu')\n"
        "cfg = load_config('mobilefacenet-folders', ['data.images=people'])\n"
        "print(json.dumps([faceverify.__file__, str(models_dir()), e.card.name, cfg.model.architecture]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FACEVERIFY_MODELS"}
    env["PYTHONPATH"] = str(target)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    module_file, models, name, architecture = json.loads(out.stdout)
    assert module_file.startswith(str(target)) and models.startswith(str(target)) and name == default
    assert architecture == "mobilefacenet"
