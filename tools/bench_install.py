"""Install time and installed size: faceverify's default install and its extras beside face_recognition's and
insightface's, each into a fresh venv, in one run, on the same machine and pip cache.

    python tools/bench_install.py [--wheel dist/faceverify-*.whl] [--only NAME ...] [--json]

Each row is ``python -m venv`` then one ``pip install`` of what a user would type; the time is that pip command's
wall time, the size is the whole venv's files (a bare venv's pip and setuptools included; that bare size is its
own row). Every install is checked before it counts: its modules import in the new venv (and the default install
holds no torch), else the tool stops with an error. Downloads come from the package index through pip's cache:
run it once to fill the cache, then report a second run (a cold cache measures the network, not the install).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.common import REPO_ROOT, PeerFailed

# name -> (what pip installs, with {wheel} for our wheel; code the new venv must run without error; a peer?)
INSTALLS: dict[str, tuple[list[str], str, bool]] = {
    "bare venv": ([], "import pip", False),
    "faceverify (default)": (["{wheel}"], "import faceverify.api, onnxruntime, cv2, faiss\n"
                             "import importlib.util as u; assert u.find_spec('torch') is None, 'torch installed'", False),
    "faceverify[serve]": (["{wheel}[serve]"], "import faceverify.service, fastapi, uvicorn\n"
                          "import importlib.util as u; assert u.find_spec('torch') is None, 'torch installed'", False),
    "faceverify[train]": (["{wheel}[train]"], "import faceverify.train.loop, torch, timm, pytorch_metric_learning",
                          False),
    "faceverify[all]": (["{wheel}[all]"], "import faceverify.service, faceverify.train.loop, psycopg, matplotlib",
                        False),
    "face_recognition (dlib-bin + face_recognition_models)": (
        ["dlib-bin", "face-recognition-models", "click", "pillow", "numpy"],
        "import dlib, face_recognition_models; dlib.face_recognition_model_v1", True),
    "insightface (+ onnxruntime)": (["insightface", "onnxruntime"],
                                    "import insightface, onnxruntime; from insightface.app import FaceAnalysis", True),
}


def tree_size(path: Path) -> int:
    """Bytes in the files under ``path`` (links not followed)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def build_wheel(out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO_ROOT), "--no-deps", "-q", "-w", str(out)], check=True)
    return next(out.glob("faceverify-*.whl"))


def measure(name: str, wheel: Path, root: Path) -> dict:
    """One row: a fresh venv, the pip install timed, the venv's size, and the import check."""
    packages, check, peer = INSTALLS[name]
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    start = time.perf_counter()
    if packages:
        proc = subprocess.run([python, "-m", "pip", "install", "-q", *(p.format(wheel=wheel) for p in packages)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            fail(name, peer, f"pip install failed: {proc.stderr.strip().splitlines()[-1:]}")
    seconds = time.perf_counter() - start
    proc = subprocess.run([python, "-c", check], capture_output=True, text=True)
    if proc.returncode != 0:
        fail(name, peer, f"the installed modules do not import: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    return dict(install=name, seconds=round(seconds, 1), mib=round(tree_size(venv) / 2**20))


def fail(name: str, peer: bool, reason: str) -> None:
    if peer:
        raise PeerFailed(name, reason)
    raise SystemExit(f"error: {name}: {reason}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", type=Path, default=None, help="faceverify's wheel (default: built from this checkout)")
    parser.add_argument("--only", nargs="+", choices=sorted(INSTALLS), default=None, metavar="NAME")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or build_wheel(Path(tmp))
        for name in args.only or INSTALLS:
            with tempfile.TemporaryDirectory() as root:
                rows.append(measure(name, wheel.resolve(), Path(root)))
            row = rows[-1]
            if not args.json:
                print(f"{row['install']:<58} {row['seconds']:>6.1f} s {row['mib']:>6} MiB", flush=True)
        wheel_mib = wheel.stat().st_size / 2**20
    if args.json:
        print(json.dumps(dict(wheel_mib=round(wheel_mib, 1), rows=rows)))
    else:
        print(f"wheel: {wheel_mib:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
