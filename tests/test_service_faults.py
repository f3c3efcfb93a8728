"""A real `faceverify serve` process: SIGKILLed in the middle of enrolment requests it must leave a gallery that
opens and holds, for every request, the state before it or after it (never half an identity), with every
acknowledged enrolment kept; restarted, it serves that state. Also: it refuses to listen beyond loopback without
a key, and never writes a key to its log."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import httpx

from faceverify.gallery import Gallery
from tests.servers import KEY, ProcessServer, files


def _people(lfw_images, n: int) -> list[tuple[str, list]]:
    out = []
    for folder in sorted(p for p in lfw_images.iterdir() if p.is_dir()):
        images = sorted(folder.glob("*.jpg"))[:2]
        if len(images) == 2:
            out.append((folder.name.replace("_", " "), images))
        if len(out) == n:
            return out
    return out


def test_killed_during_enrolment_keeps_before_or_after_and_restarts(tmp_path, lfw_images):
    gallery = tmp_path / "g.sqlite"
    log = tmp_path / "serve.log"
    people = _people(lfw_images, 60)
    server = ProcessServer(gallery, log, env={"FACEVERIFY_API_KEY": KEY}).wait_ready()
    acknowledged: list[str] = []
    sent: list[str] = []
    headers = {"Authorization": f"Bearer {KEY}"}

    def client(share: list) -> None:
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
            for name, paths in share:
                sent.append(name)
                try:
                    r = c.post(f"/v1/identities/{name}/faces", files=files("images", paths))
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 200:
                    acknowledged.append(name)

    threads = [threading.Thread(target=client, args=(people[k::3],)) for k in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.kill() == -9
    for t in threads:
        t.join(30)
    assert 6 <= len(acknowledged) < len(people), "the kill did not land in the middle of the enrolments"

    with Gallery(gallery) as g:  # opens (any model), and every identity is whole
        state = {p.name: p.embeddings for p in g.identities()}
    assert set(acknowledged) <= set(state) <= set(sent)
    assert all(n == 2 for n in state.values()), state

    again = ProcessServer(gallery, log, env={"FACEVERIFY_API_KEY": KEY}).wait_ready()
    try:
        with httpx.Client(base_url=again.url, headers=headers, timeout=30) as c:
            assert {p["name"]: p["embeddings"] for p in c.get("/v1/identities").json()} == state
            name, paths = people[-1]
            assert c.post(f"/v1/identities/{name}/faces", files=files("images", paths)).status_code == 200
            probe = sorted((lfw_images / people[0][0].replace(" ", "_")).glob("*.jpg"))
            found = c.post("/v1/identify", files=files("image", probe[:1])).json()
            assert found["faces"][0]["name"] in (people[0][0], None)
    finally:
        again.stop()
    text = log.read_text()
    assert "POST /v1/identities" in text  # the access log is there ...
    assert KEY not in text  # ... and holds no key


def test_refuses_to_listen_beyond_loopback_without_a_key(tmp_path):
    r = subprocess.run([sys.executable, "-m", "faceverify.cli", "serve", "--gallery", str(tmp_path / "g.sqlite"),
                        "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert r.returncode == 2 and "refusing to listen on 0.0.0.0 without an API key" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
