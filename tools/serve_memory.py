"""Memory of a `faceverify serve` process fed very large images: its resident size idle, its peak (VmHWM) while
``--clients`` clients each post one PNG of ``--side`` x ``--side`` pixels (49 Mpixels by default: under the
default ``--max-pixels``) to ``/v1/identify`` at once, and its resident size a few seconds after they are answered.

    python tools/serve_memory.py [--clients 8] [--side 7000] [--rounds 2] [--lfw LFW]

The PNG is flat grey with an LFW face (Colin Powell's first image, scaled to a fifth of its side) in the middle, so that each request is a real
identification that finds a face, and small (about 1 MB) as a hostile one would be. Its peer is the same
request sent alone (one client) first: the concurrent peak is read against it. The run stops with an error unless
every request of every round was answered 200 with the face found (the service really decoded each image).
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from faceverify.eval.pairs import lfw_image_dir
from tools.common import PeerFailed, lfw_root

GiB = 1024 ** 3


def big_png(face_jpeg: Path, side: int) -> bytes:
    """A ``side`` x ``side`` RGB PNG, flat grey, with the face image scaled to ``side // 5`` in its middle."""
    canvas = Image.new("RGB", (side, side), (128, 128, 128))
    face = Image.open(face_jpeg).convert("RGB").resize((side // 5, side // 5), Image.BICUBIC)
    canvas.paste(face, ((side - face.width) // 2, (side - face.height) // 2))
    out = io.BytesIO()
    canvas.save(out, "PNG", compress_level=9)
    return out.getvalue()


def status_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, KiB (Linux /proc)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def post_all(url: str, data: bytes, clients: int, timeout: float = 300) -> list[tuple[int, dict]]:
    """``clients`` concurrent identify requests of ``data``; their (status, body)."""
    import httpx

    answers: list[tuple[int, dict]] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def one() -> None:
        start.wait()
        r = httpx.post(url + "/v1/identify", files=[("image", ("big.png", data, "image/png"))], timeout=timeout)
        with lock:
            answers.append((r.status_code, r.json()))

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def measure(url: str, pid: int, data: bytes, clients: int, rounds: int, settle: float = 3.0) -> dict:
    """Idle, alone and concurrent peaks and the resident size after, MiB; raises PeerFailed on a bad answer."""
    idle = status_kib(pid)["VmRSS"]
    result: dict = dict(idle_mib=round(idle / 1024))
    for label, n in (("alone", 1), ("concurrent", clients)):
        for _ in range(rounds if n > 1 else 1):
            answers = post_all(url, data, n)
            bad = [a for a in answers if a[0] != 200 or not a[1].get("faces")]
            if len(answers) != n or bad:
                raise PeerFailed(f"identify ({label})", f"{len(bad)} of {n} requests not answered with a face: {bad[:2]}")
        result[f"peak_{label}_mib"] = round(status_kib(pid)["VmHWM"] / 1024)
    time.sleep(settle)
    result["after_mib"] = round(status_kib(pid)["VmRSS"] / 1024)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lfw", type=Path, default=None)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--side", type=int, default=7000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import httpx

    from tests.servers import ProcessServer  # the tests' real-process server

    root = lfw_root(args.lfw)
    face = lfw_image_dir(root) / "Colin_Powell" / "Colin_Powell_0001.jpg"
    data = big_png(face, args.side)
    with tempfile.TemporaryDirectory() as tmp:
        server = ProcessServer(Path(tmp) / "g.sqlite", Path(tmp) / "serve.log", "--log-level", "warning").wait_ready()
        try:
            enrol = httpx.post(server.url + "/v1/identities/Colin Powell/faces", timeout=60,
                               files=[("images", (face.name, face.with_name("Colin_Powell_0002.jpg").read_bytes()))])
            if enrol.status_code != 200:
                raise PeerFailed("enrol", enrol.text)
            result = measure(server.url, server.proc.pid, data, args.clients, args.rounds)
        finally:
            server.stop()
    result.update(clients=args.clients, pixels=args.side * args.side, png_bytes=len(data))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
