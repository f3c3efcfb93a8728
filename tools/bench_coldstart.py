"""Cold start of one verification, whole process: `faceverify verify A B` beside face_recognition's CLI (dlib).

face_recognition's CLI compares "known" images against an unknown one; with one known image it is one pair.
Its model package imports pkg_resources (gone in setuptools>=81), so the peer runs behind a tiny shim that
provides ``pkg_resources.resource_filename`` (files located with importlib.util.find_spec) and nothing else.
Ours runs on the default path (ONNX Runtime + YuNet on CPU, no torch) and, in the same interleaved rounds, on
the torch path (``--backend torch --detector mtcnn``). Runs are interleaved; medians are reported, then the peak resident memory of one more run of each. Every run of either side must exit 0 and print the expected
answer (both say "same person" for two images of Colin Powell), else the benchmark stops with an error.

    python tools/bench_coldstart.py --rounds 7 [--lfw ROOT] [--peer-python PYTHON] [--light FACEVERIFY]

``--light`` names the ``faceverify`` of a default install (a venv with the wheel and no torch, e.g. the one
``tests/test_packaging.py`` builds, or ``pip install dist/faceverify-*.whl`` in a fresh venv): its default
command joins the same interleaved rounds, so the two installs' cold starts are compared on one machine state.

The peer needs ``pip install --no-deps face_recognition`` beside the ``peer`` extra (``make env`` does both).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from faceverify.eval.pairs import lfw_image_dir
from tools.common import PeerFailed, lfw_root

PEER = "face_recognition (dlib)"
KNOWN_NAME = "Colin_Powell"
PEER_SHIM = """\
import importlib.util, os, sys, types
shim = types.ModuleType("pkg_resources")
shim.resource_filename = lambda package, name: os.path.join(
    os.path.dirname(importlib.util.find_spec(package).origin), name)
sys.modules["pkg_resources"] = shim
from face_recognition.face_recognition_cli import main
sys.argv = ["face_recognition"] + sys.argv[1:]
main()
"""


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall time of one run of ``cmd`` and its completed process (output captured as text); a command that
    cannot be started comes back with exit status 127 and the reason as its stderr."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        proc = subprocess.CompletedProcess(cmd, 127, "", f"cannot run {cmd[0]}: {exc.strerror or exc}")
    return time.perf_counter() - start, proc


def peak_rss_mb(cmd: list[str]) -> float:
    """Peak resident memory (MiB) of one more run of ``cmd``, from the kernel's accounting of that process."""
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode not in (0, 1):
        raise SystemExit(f"error: {cmd[0]} exited {child.returncode} when measuring its memory")
    return usage.ru_maxrss / 1024  # kilobytes on Linux


def _failure(proc: subprocess.CompletedProcess[str]) -> str:
    """What a run printed, for an error message: its exit status and the last lines of its output."""
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:]) or "(no output)"
    return f"exit status {proc.returncode}, output:\n{tail}"


def check_ours(proc: subprocess.CompletedProcess[str]) -> str:
    """Our answer line; exits unless `faceverify verify` succeeded and called the pair the same person."""
    out = proc.stdout.strip()
    if proc.returncode != 0 or not out.startswith("same person"):
        raise SystemExit(f"error: faceverify verify did not say 'same person': {_failure(proc)}")
    return out


def check_peer(proc: subprocess.CompletedProcess[str], probe: Path) -> str:
    """The peer's answer line; raises PeerFailed unless face_recognition's CLI exited 0 and printed
    ``<probe>,Colin_Powell`` (one line per checked image: its path, then the matched name)."""
    answers = [line for line in proc.stdout.splitlines() if line.startswith(f"{probe},")]
    if proc.returncode != 0 or not answers:
        raise PeerFailed(PEER, f"no answer for {probe.name}; {_failure(proc)}")
    name = answers[0].split(",")[1]
    if name != KNOWN_NAME:
        raise PeerFailed(PEER, f"answered {name!r} for {probe.name}, expected {KNOWN_NAME!r}")
    return answers[0]


def import_seconds(module: str) -> float:
    """Wall time of a process that only imports ``module``."""
    t, proc = timed([sys.executable, "-c", f"import {module}"])
    if proc.returncode != 0:
        raise SystemExit(f"error: importing {module} failed: {_failure(proc)}")
    return t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, default=None, help="LFW root (default: $FACEVERIFY_LFW or the shared copy)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--peer-python", default=sys.executable,
                        help="interpreter with face_recognition installed (default: this one)")
    parser.add_argument("--light", default=None, help="faceverify of a default install (no torch), timed too")
    args = parser.parse_args(argv)
    images = lfw_image_dir(lfw_root(args.lfw))
    a, b = images / KNOWN_NAME / f"{KNOWN_NAME}_0001.jpg", images / KNOWN_NAME / f"{KNOWN_NAME}_0002.jpg"
    exe = str(Path(sys.executable).with_name("faceverify"))
    with tempfile.TemporaryDirectory() as tmp:
        known = Path(tmp) / "known"
        known.mkdir()
        shutil.copy(a, known / f"{KNOWN_NAME}.jpg")
        ours_cmd = [exe, "verify", str(a), str(b), "--device", "cpu"]
        torch_cmd = ours_cmd + ["--backend", "torch", "--detector", "mtcnn"]
        peer_cmd = [args.peer_python, "-c", PEER_SHIM, str(known), str(b)]
        light_cmd = None if args.light is None else [args.light, *ours_cmd[1:]]
        light: list[float] = []
        ours: list[float] = []
        torch_path: list[float] = []
        peer: list[float] = []
        for _ in range(args.rounds):
            t, proc = timed(ours_cmd)
            out_ours = check_ours(proc)
            ours.append(t)
            if light_cmd is not None:
                t, proc = timed(light_cmd)
                check_ours(proc)
                light.append(t)
            t, proc = timed(torch_cmd)
            check_ours(proc)
            torch_path.append(t)
            t, proc = timed(peer_cmd)
            out_peer = check_peer(proc, b)
            peer.append(t)
        rss = [peak_rss_mb(cmd) for cmd in (ours_cmd, torch_cmd, peer_cmd, *([light_cmd] if light_cmd else []))]
    o, tp, p = statistics.median(ours), statistics.median(torch_path), statistics.median(peer)
    print(f"faceverify verify (default: onnx + yunet-onet): median {o:.2f} s over {args.rounds} runs  ({out_ours})")
    if light:
        li = statistics.median(light)
        print(f"faceverify verify, default install (no torch): median {li:.2f} s, ratio to dlib {li / p:.2f}, "
              f"to the full install's default {li / o:.2f}; peak RSS {rss[3]:.0f} MiB")
    print(f"faceverify verify --backend torch --detector mtcnn: median {tp:.2f} s")
    print(f"face_recognition (dlib): median {p:.2f} s over {args.rounds} runs  ({out_peer})")
    print(f"ratio faceverify / dlib: default {o / p:.2f}, torch path {tp / p:.2f}")
    print(f"peak RSS: default {rss[0]:.0f} MiB, torch path {rss[1]:.0f} MiB, face_recognition {rss[2]:.0f} MiB")
    for module in ("faceverify.api", "torch, facenet_pytorch"):
        print(f"importing {module}: {statistics.median(import_seconds(module) for _ in range(3)):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
