"""Helpers for the service tests: a real uvicorn server in a thread (sharing the session's loaded model) or a
real `faceverify serve` process, a webhook receiver, and a generated video with its gallery."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

KEY = "test-key-0123456789"
READ_KEY = "read-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """``app`` served by uvicorn on a free loopback port in a daemon thread; ``url`` once started."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ThreadServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)


class ProcessServer:
    """A `faceverify serve` subprocess on a free port; its output goes to ``log``."""

    def __init__(self, gallery: Path, log: Path, *args: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "faceverify.cli", "serve", "--gallery", str(gallery), "--port", str(self.port),
               "--log-level", "info", *args]
        self._out = open(log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    def wait_ready(self, timeout: float = 90) -> "ProcessServer":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"faceverify serve exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"faceverify serve did not answer in {timeout} s: {self.log.read_text()[-2000:]}")

    def kill(self) -> int:
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()
        return self.proc.returncode


class Receiver:
    """A local HTTP server collecting the JSON bodies POSTed to it (a webhook's far end)."""

    def __init__(self):
        self.bodies: list[dict] = []
        received = self.bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(n)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def files(field: str, paths) -> list:
    """httpx multipart ``files=`` for ``paths`` under one field name."""
    return [(field, (Path(p).name, Path(p).read_bytes(), "image/jpeg")) for p in paths]


def make_scene(work: Path, lfw_root: Path, detector) -> dict:
    """The video tests' 4 s scene (two enrolled DevTest people, one never enrolled, four distractors)."""
    from tools.video_synth import choose_cast, make_test_video

    actors, cast = choose_cast(lfw_root, enrolled=2, strangers=1, distractors=4, seed=3)
    truth_path = make_test_video(actors, work / "scene.mp4", seconds=4.0, seed=3, gallery=cast, detector=detector)
    return dict(video=work / "scene.mp4", truth=json.loads(truth_path.read_text()))


def sse_events(client: httpx.Client, path: str, timeout: float = 60) -> list[dict]:
    """Every ``data:`` object of a Server-Sent Events response until the summary (or the stream closes)."""
    out = []
    deadline = time.monotonic() + timeout
    with client.stream("GET", path, timeout=timeout) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))
                if "summary" in out[-1]:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"no summary event within {timeout} s")
    return out
