"""Cold start of one verification, whole process: `faceverify verify A B` beside face_recognition's CLI (dlib).

face_recognition's CLI compares "known" images against an unknown one; with one known image it is one pair.
Its model package imports pkg_resources (gone in setuptools>=81), so the peer runs behind a tiny shim that
provides ``pkg_resources.resource_filename`` and nothing else. Runs are interleaved; medians are reported.

    python tools/bench_coldstart.py --rounds 7
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from faceverify.pairs import find_lfw_root, lfw_image_dir

PEER_SHIM = (
    "import sys, types, os\n"
    "m = types.ModuleType('pkg_resources')\n"
    "m.resource_filename = lambda pkg, name: os.path.join("
    "os.path.dirname(__import__('importlib').util.find_spec(pkg).origin), name)\n"
    "sys.modules['pkg_resources'] = m\n"
    "from face_recognition.face_recognition_cli import main\n"
    "sys.argv = ['face_recognition'] + sys.argv[1:]\n"
    "main()\n"
)


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return time.perf_counter() - start, proc.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    root = find_lfw_root(args.lfw)
    if root is None:
        sys.exit("LFW not found: pass --lfw or set FACEVERIFY_LFW")
    images = lfw_image_dir(root)
    a, b = images / "Colin_Powell" / "Colin_Powell_0001.jpg", images / "Colin_Powell" / "Colin_Powell_0002.jpg"
    exe = str(Path(sys.executable).with_name("faceverify"))
    with tempfile.TemporaryDirectory() as tmp:
        known = Path(tmp) / "known"
        known.mkdir()
        shutil.copy(a, known / "Colin_Powell.jpg")
        ours_cmd = [exe, "verify", str(a), str(b), "--device", "cpu"]
        peer_cmd = [sys.executable, "-c", PEER_SHIM, str(known), str(b)]
        ours, peer = [], []
        for _ in range(args.rounds):
            t, out_ours = timed(ours_cmd)
            ours.append(t)
            t, out_peer = timed(peer_cmd)
            peer.append(t)
    import_cmd = [sys.executable, "-c", "import faceverify.api"]
    imports = statistics.median(timed(import_cmd)[0] for _ in range(3))
    o, p = statistics.median(ours), statistics.median(peer)
    print(f"faceverify verify:      median {o:.2f} s over {args.rounds} runs  ({out_ours})")
    print(f"face_recognition (dlib): median {p:.2f} s over {args.rounds} runs  ({out_peer})")
    print(f"ratio faceverify / dlib: {o / p:.2f}")
    print(f"of which importing faceverify.api (torch, torchvision via facenet-pytorch): {imports:.2f} s")


if __name__ == "__main__":
    main()
