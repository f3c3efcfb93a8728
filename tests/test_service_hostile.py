"""A hostile network against a real `faceverify serve` process on loopback: well over 60 kinds of request built
to break it (keys, caps, bombs, broken multipart, names, parameters, routes, stream sources, slow clients,
other web sites), each of which must get its status and a one-line JSON error and store nothing; at the end the
gallery holds exactly what it held, and the server's log holds no key and no traceback. And its memory: eight
49-Mpixel PNGs at once keep it under 1.5 GiB, and it returns near its idle size."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote

import httpx
import numpy as np
import pytest
from PIL import Image

from faceverify.gallery import Gallery
from tests.servers import KEY, READ_KEY, ProcessServer, files
from tests.test_hostile_inputs import bomb

MiB = 1024 * 1024
READ_TIMEOUT = 2.0
Hostile = tuple[str, str, str, dict, tuple[int, ...]]  # kind, method, path, httpx arguments, statuses allowed


def _start(work: Path, *args: str) -> SimpleNamespace:
    log = work / "serve.log"
    server = ProcessServer(work / "g.sqlite", log, "--read-timeout", str(READ_TIMEOUT), "--max-body-mb", "4",
                           "--max-image-mb", "2", "--max-pixels", "20000000", *args).wait_ready()
    return SimpleNamespace(server=server, url=server.url, log=log, gallery=work / "g.sqlite")


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, lfw_image):
    """A server with a full and a read key, Colin Powell enrolled."""
    s = _start(tmp_path_factory.mktemp("hostile-keyed"), "--api-key", KEY, "--read-key", READ_KEY)
    s.client = httpx.Client(base_url=s.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert s.client.post("/v1/identities/Colin Powell/faces",
                         files=files("images", [lfw_image("Colin_Powell", 1)])).status_code == 200
    yield s
    s.client.close()
    s.server.stop()


@pytest.fixture(scope="module")
def open_server(tmp_path_factory, lfw_image):
    """A server without a key (loopback only), that also answers to the name faces.local."""
    s = _start(tmp_path_factory.mktemp("hostile-open"), "--allow-host", "faces.local")
    s.client = httpx.Client(base_url=s.url, timeout=60)
    assert s.client.post("/v1/identities/Colin Powell/faces",
                         files=files("images", [lfw_image("Colin_Powell", 1)])).status_code == 200
    yield s
    s.client.close()
    s.server.stop()


def _error(resp: httpx.Response, statuses: tuple[int, ...]) -> str:
    """The one-line error of a refused request, checked for its status and shape."""
    assert resp.status_code in statuses, (resp.status_code, resp.text[:300])
    body = resp.json()
    assert set(body) <= {"error", "failed"} and isinstance(body["error"], str), body
    assert "\n" not in body["error"] and "Traceback" not in body["error"], body
    return body["error"]


def _snapshot(gallery: Path) -> tuple:
    """Everything stored: each embedding's identity, source hash and box, and the thumbnails kept."""
    with Gallery(gallery) as g:
        rows = sorted((name, meta["source_sha256"], meta["box"]) for name, _, meta in g.iter_vectors())
    faces = gallery.with_name(gallery.name + ".faces")
    return rows, sorted(p.name for p in faces.glob("*")) if faces.exists() else []


def _multipart(body: bytes, boundary: str = "xyz") -> dict:
    return dict(content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})


def _silent_server() -> tuple[socket.socket, int]:
    """A TCP server that accepts connections and never says anything (a dead camera, a tar pit)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept())
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return listener, listener.getsockname()[1]


def _requests(lfw_image, silent_port: int) -> list[Hostile]:
    """The hostile requests sent with the full key: their kind, and the statuses each may get."""
    good = lfw_image("Colin_Powell", 5).read_bytes()
    noise = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((200, 200, 3)) * 255).astype(np.uint8)).save(noise, "PNG")
    bad_files = {
        "garbage": (b"\x00\x01 not an image at all" * 10, 400), "empty file": (b"", 400),
        "truncated JPEG": (good[: len(good) // 3], 400), "text as PNG": (b"hello, world\n" * 50, 400),
        "no face": (noise.getvalue(), 400), "file over the image cap": (b"\xff\xd8" + b"\0" * (2 * MiB + 10), 413),
    }
    bad_files.update({f"{fmt} bomb": (bomb(fmt, 30_000, 30_000), 413) for fmt in ("JPEG", "PNG", "GIF", "BMP", "TIFF",
                                                                                  "WEBP")})
    out: list[Hostile] = []
    for kind, (data, status) in bad_files.items():
        up = ("bad.jpg", data, "image/jpeg")
        out.append((kind, "POST", "/v1/identify", dict(files=[("image", up)]), (status,)))
        out.append((kind, "POST", "/v1/verify", dict(files=[("a", ("ok.jpg", good)), ("b", up)]), (status,)))
        out.append((kind, "POST", "/v1/identities/Hostile Person/faces",
                    dict(files=[("images", ("ok.jpg", good)), ("images", up)]), (status,)))
    big = b"\0" * (4 * MiB + 1)
    for path in ("/v1/identify", "/v1/verify", "/v1/identities/Hostile Person/faces"):
        out += [
            ("body over the cap", "POST", path, dict(files=[("image", ("big.jpg", big))]), (413,)),
            ("chunked body over the cap", "POST", path, dict(content=iter(
                [b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'] + [b"\0" * MiB] * 6),
                headers={"Content-Type": "multipart/form-data; boundary=x"}), (413,)),
            ("JSON instead of a form", "POST", path, dict(json={"image": "Colin_Powell_0001.jpg"}), (422,)),
            ("text fields instead of files", "POST", path, dict(data={"image": "abc", "a": "x", "b": "y", "images": "z"}),
             (422,)),
            ("a raw JPEG body", "POST", path, dict(content=good, headers={"Content-Type": "image/jpeg"}), (422,)),
            ("a text body", "POST", path, dict(content=b"just text", headers={"Content-Type": "text/plain"}), (422,)),
            ("multipart never terminated", "POST", path, _multipart(
                b"--xyz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n\r\n" + good[:1000]),
             (422, 400)),
            ("multipart with another boundary", "POST", path, _multipart(b"--other\r\n\r\nnothing here\r\n--other--\r\n"),
             (422,)),
            ("multipart without a boundary", "POST", path, dict(content=b"--xyz\r\n",
                                                                 headers={"Content-Type": "multipart/form-data"}),
             (422, 400)),
            ("multipart garbage", "POST", path, _multipart(b"\xff\xfe garbage \r\n\r\n--xyz--"), (422,)),
            ("the wrong field", "POST", path, dict(files=[("file", ("a.jpg", good))]), (422,)),
            ("too many form fields", "POST", path, dict(data={f"f{i}": "x" for i in range(1100)}), (422,)),
        ]
    names = {"NUL in a name": "a%00b", "control character in a name": "a%01b", "tab in a name": "tab%09name",
             "newline in a name": "line%0Abreak", "escape sequence in a name": "esc%1B[31m", "DEL in a name": "del%7F",
             "bidi override in a name": "bidi%E2%80%AEevil", "zero-width space in a name": "zero%E2%80%8Bwidth",
             "slash in a name": "a%2Fb", "backslash in a name": "a%5Cb", "full-width slash in a name": "full%EF%BC%8Fwidth",
             "dots for a name": "..", "blank name": "%20%20", "name of 10,000 characters": "a" * 10_000,
             "name of 129 characters": "b" * 129, "mixed scripts in a name": "%D0%90lice",
             "private-use character in a name": "%EE%80%80private"}
    for kind, name in names.items():
        out.append((kind, "POST", f"/v1/identities/{name}/faces", dict(files=[("images", ("ok.jpg", good))]),
                    (422, 404) if name == ".." else (422,)))  # the client itself resolves /identities/../faces
        out.append((f"rename: {kind}", "PATCH", "/v1/identities/Colin Powell",
                    dict(content=json.dumps({"name": unquote(name)}), headers={"Content-Type": "application/json"}),
                    (422,)))
    lookalikes = {"lookalike: case": "COLIN POWELL", "lookalike: spaces": "colin%20%20powell",
                  "lookalike: full-width letter": "%EF%BD%83olin Powell", "lookalike: maths letter": "%F0%9D%90%82olin Powell",
                  "lookalike: capital I for l": "CoIin PowelI", "lookalike: digits for letters": "C0lin Powe11",
                  "lookalike: underscore for space": "Colin_Powell"}
    for kind, name in lookalikes.items():
        out.append((kind, "POST", f"/v1/identities/{name}/faces", dict(files=[("images", ("ok.jpg", good))]), (409,)))
    ok = dict(files=[("image", ("ok.jpg", good))])
    for kind, query, status in (("FAR above 1", "far=2", 422), ("negative FAR", "far=-1", 422),
                                ("threshold above 1", "threshold=5", 422), ("FPIR 0", "fpir=0", 422),
                                ("FPIR 1", "fpir=1", 422), ("FPIR not a number", "fpir=abc", 422),
                                ("FPIR the calibration cannot promise", "fpir=1e-300", 422),
                                ("FAR the card has no threshold for", "far=0.37", 422),
                                ("unknown face choice", "face=everyone", 422), ("unknown match", "match=everything", 422),
                                ("a key in the query string", f"api_key={KEY}&far=2", 422)):
        out.append((kind, "POST", f"/v1/identify?{query}", ok, (status,)))
    out.append(("verify at a FAR the card has no threshold for", "POST", "/v1/verify?far=0.37",
                dict(files=[("a", ("ok.jpg", good)), ("b", ("ok.jpg", good))]), (422,)))
    out += [
        ("unknown identity", "GET", "/v1/identities/Nobody Here", {}, (404,)),
        ("delete an unknown identity", "DELETE", "/v1/identities/Nobody Here", {}, (404,)),
        ("rename an unknown identity", "PATCH", "/v1/identities/Nobody Here", dict(json={"name": "X"}), (404,)),
        ("rename with broken JSON", "PATCH", "/v1/identities/Colin Powell",
         dict(content=b"{not json", headers={"Content-Type": "application/json"}), (422,)),
        ("rename with the wrong field", "PATCH", "/v1/identities/Colin Powell", dict(json={"nom": "X"}), (422,)),
        ("rename to a number", "PATCH", "/v1/identities/Colin Powell", dict(json={"name": 12}), (422,)),
        ("too many files", "POST", "/v1/identities/Hostile Person/faces",
         dict(files=[("images", ("ok.jpg", good))] * 65), (413,)),
        ("stream of a missing file", "POST", "/v1/streams", dict(json={"source": "/no/such/video.mp4"}), (400,)),
        ("stream of a folder", "POST", "/v1/streams", dict(json={"source": "/"}), (400,)),
        ("stream of camera 10**30", "POST", "/v1/streams", dict(json={"source": 10 ** 30}), (400,)),
        ("stream of camera '99999999999999999999'", "POST", "/v1/streams",
         dict(json={"source": "99999999999999999999"}), (400,)),
        ("stream of camera 64", "POST", "/v1/streams", dict(json={"source": 64}), (400,)),
        ("stream of a silent server", "POST", "/v1/streams",
         dict(json={"source": f"http://127.0.0.1:{silent_port}/video"}), (400,)),
        ("stream of a silent RTSP server with a password", "POST", "/v1/streams",
         dict(json={"source": f"rtsp://admin:hunter2secret@127.0.0.1:{silent_port}/live"}), (400,)),
        ("stream without a source", "POST", "/v1/streams", dict(json={}), (422,)),
        ("stream with an unknown field", "POST", "/v1/streams", dict(json={"source": "x", "y": 1}), (422,)),
        ("stream source a list", "POST", "/v1/streams", dict(json={"source": [1, 2]}), (422,)),
        ("unknown stream", "GET", "/v1/streams/999", {}, (404,)),
        ("stop an unknown stream", "DELETE", "/v1/streams/999", {}, (404,)),
        ("stream id not a number", "GET", "/v1/streams/abc/events", {}, (422,)),
        ("video of an unknown stream", "GET", "/v1/streams/999/video", {}, (404,)),
        ("unknown face image", "GET", "/v1/unknown/999/image", {}, (404,)),
        ("name an unknown face", "POST", "/v1/unknown/999/enroll", dict(json={"name": "X"}), (404,)),
        ("dismiss an unknown face", "DELETE", "/v1/unknown/5", {}, (404,)),
        ("unknown route", "GET", "/v1/no/such/route", {}, (404,)),
        ("wrong method", "PUT", "/v1/identities", {}, (405,)),
    ]
    return out


def _raw(url: str, data: bytes, wait: float) -> tuple[bytes, float]:
    """Send ``data`` on a fresh connection and read until the server closes it (or ``wait`` s): (answer, time)."""
    host, port = url.rsplit("//", 1)[1].split(":")
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=wait) as s:
        s.sendall(data)
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except socket.timeout:
            pass
    return answer, time.monotonic() - start


def _slow_clients(url: str) -> list[tuple[str, bytes, float]]:
    """(kind, answer, seconds) of clients that never finish their request."""
    out = []
    answer, took = _raw(url, b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n", READ_TIMEOUT + 8)
    out.append(("headers never finished", answer, took))
    answer, took = _raw(url, b"POST /v1/identify HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + KEY.encode()
                        + b"\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: 100000\r\n\r\n--x\r\n",
                        READ_TIMEOUT + 8)
    out.append(("body stalled", answer, took))
    host, port = url.rsplit("//", 1)[1].split(":")
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=READ_TIMEOUT + 8) as s:  # one header byte a second
        closed = False
        for byte in b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 30:
            try:
                s.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            s.settimeout(0.5)
            try:
                if s.recv(65536) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
        out.append(("headers dripped a byte at a time", b"closed" if closed else b"", time.monotonic() - start))
    return out


def test_hostile_requests_get_their_status_store_nothing_and_leave_no_key_in_the_log(keyed, lfw_image):
    c = keyed.client
    before = _snapshot(keyed.gallery)
    listener, port = _silent_server()
    try:
        requests = _requests(lfw_image, port)
        wrong = []
        errors = {}
        for kind, method, path, kwargs, statuses in requests:
            try:
                errors[kind] = _error(c.request(method, path, timeout=30, **kwargs), statuses)
            except (AssertionError, ValueError, httpx.HTTPError) as exc:
                wrong.append(f"{kind}: {method} {path[:60]}: {exc}"[:300])
        assert not wrong, "\n".join(wrong)
    finally:
        listener.close()
    kinds = {kind for kind, *_ in requests}
    assert "hunter2secret" not in errors["stream of a silent RTSP server with a password"]
    assert "no answer within" in errors["stream of a silent server"]
    assert "cannot be promised" in errors["FPIR the calibration cannot promise"]
    assert "looks like the existing identity" in errors["lookalike: capital I for l"]

    auth = [  # keys, wherever a client puts them
        ("no key", dict(), 401), ("wrong key", dict(headers={"Authorization": "Bearer wrong-key-xxxxxxxx"}), 401),
        ("Basic instead of Bearer", dict(headers={"Authorization": f"Basic {KEY}"}), 401),
        ("key in the query string only", dict(params={"api_key": KEY}), 401),
        ("key one character short", dict(headers={"Authorization": f"Bearer {KEY[:-1]}"}), 401),
    ]
    for kind, kwargs, status in auth:
        _error(httpx.get(keyed.url + "/v1/identities", timeout=10, **kwargs), (status,))
        kinds.add(kind)
    reader = {"Authorization": f"Bearer {READ_KEY}"}
    upload = files("images", [lfw_image("Colin_Powell", 2)])
    for kind, method, path, kwargs, status in (
            ("read key enrols", "POST", "/v1/identities/Reader Person/faces", dict(headers=reader, files=upload), 403),
            ("read key deletes", "DELETE", "/v1/identities/Colin Powell", dict(headers=reader), 403),
            ("read key renames", "PATCH", "/v1/identities/Colin Powell", dict(headers=reader, json={"name": "R"}), 403),
            ("read key starts a stream", "POST", "/v1/streams", dict(headers=reader, json={"source": "0"}), 403),
            ("the page's cookie for a write", "DELETE", "/v1/identities/Colin Powell",
             dict(cookies={"faceverify_key": KEY}), 401)):
        _error(httpx.request(method, keyed.url + path, timeout=30, **kwargs), (status,))
        kinds.add(kind)
    # what a read key is for: identify and verify change nothing stored
    probe = files("image", [lfw_image("Colin_Powell", 3)])
    named = httpx.post(keyed.url + "/v1/identify", headers=reader, files=probe, timeout=60)
    assert named.status_code == 200 and named.json()["faces"][0]["name"] == "Colin Powell"
    pair = files("a", [lfw_image("Colin_Powell", 3)]) + files("b", [lfw_image("Colin_Powell", 4)])
    assert httpx.post(keyed.url + "/v1/verify", headers=reader, files=pair, timeout=60).json()["same"] is True

    for kind, answer, took in _slow_clients(keyed.url):
        assert took < READ_TIMEOUT + 6, (kind, took)  # cut off, not held
        assert answer == b"closed" or answer.startswith(b"HTTP/1.1 408"), (kind, answer[:200])
        kinds.add(kind)
    assert httpx.get(keyed.url + "/v1/health", timeout=5).json()["status"] == "ok"
    assert c.get("/v1/streams").json() == []  # refused sources hold no stream slot

    assert len(kinds) >= 60, len(kinds)
    assert _snapshot(keyed.gallery) == before  # nothing stored, nothing removed
    assert c.post("/v1/identify", files=probe).json()["faces"][0]["name"] == "Colin Powell"  # still right
    log = keyed.log.read_text()
    assert KEY not in log and READ_KEY not in log and "hunter2secret" not in log
    assert "Traceback" not in log and "api_key" not in log
    assert '"POST /v1/identify?… HTTP/1.1" 422' in log  # logged, without its query string


def test_without_a_key_other_sites_and_other_host_names_are_refused(open_server, lfw_image):
    c, url = open_server.client, open_server.url
    before = _snapshot(open_server.gallery)
    port = url.rsplit(":", 1)[1]
    upload = files("images", [lfw_image("Colin_Powell", 2)])
    refused = [
        ("DNS rebinding: another Host", "GET", "/v1/identities", dict(headers={"Host": f"attacker.example:{port}"}), 421),
        ("another Host for a thumbnail", "GET", "/v1/identities/Colin Powell/thumbnail",
         dict(headers={"Host": "attacker.example"}), 421),
        ("another Host for the page", "GET", "/", dict(headers={"Host": "attacker.example"}), 421),
        ("another Host for identify", "POST", "/v1/identify",
         dict(headers={"Host": "attacker.example"}, files=files("image", [lfw_image("Colin_Powell", 3)])), 421),
        ("a lookalike of localhost", "GET", "/v1/identities", dict(headers={"Host": "localhost.attacker.example"}), 421),
        ("cross-site form post", "POST", "/v1/identities/Web Page/faces",
         dict(headers={"Origin": "https://evil.example"}, files=upload), 403),
        ("cross-site by Sec-Fetch-Site", "POST", "/v1/identities/Web Page/faces",
         dict(headers={"Sec-Fetch-Site": "cross-site"}, files=upload), 403),
        ("same-site but another origin", "POST", "/v1/identities/Web Page/faces",
         dict(headers={"Sec-Fetch-Site": "same-site", "Origin": "http://localhost:3000"}, files=upload), 403),
        ("a sandboxed page (Origin null)", "POST", "/v1/identities/Web Page/faces",
         dict(headers={"Origin": "null"}, files=upload), 403),
        ("cross-site delete", "DELETE", "/v1/identities/Colin Powell", dict(headers={"Origin": "https://evil.example"}), 403),
        ("cross-site rename", "PATCH", "/v1/identities/Colin Powell",
         dict(headers={"Sec-Fetch-Site": "cross-site"}, json={"name": "Evil"}), 403),
        ("cross-site stream start", "POST", "/v1/streams",
         dict(headers={"Origin": "http://evil.example"}, json={"source": "0"}), 403),
    ]
    wrong = []
    for kind, method, path, kwargs, status in refused:
        try:
            _error(c.request(method, path, **kwargs), (status,))
        except (AssertionError, ValueError) as exc:
            wrong.append(f"{kind}: {exc}"[:300])
    assert not wrong, "\n".join(wrong)
    assert _snapshot(open_server.gallery) == before
    # what must still work: this server's own names, its own page's requests, programs that send no Origin
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "faces.local", f"faces.local:{port}"):
        assert c.get("/v1/identities", headers={"Host": host}).status_code == 200, host
    own = c.post("/v1/identities/Page User/faces", headers={"Origin": url, "Sec-Fetch-Site": "same-origin"},
                 files=upload)
    assert own.status_code == 200, own.text
    assert c.delete("/v1/identities/Page User", headers={"Origin": url}).status_code == 200
    assert _snapshot(open_server.gallery) == before
    assert "Traceback" not in open_server.log.read_text()


def test_eight_49_mpixel_pngs_at_once_stay_under_1_5_gib(tmp_path, lfw_root):
    from faceverify.eval.pairs import lfw_image_dir
    from tools.serve_memory import big_png, measure

    face = lfw_image_dir(lfw_root) / "Colin_Powell" / "Colin_Powell_0001.jpg"
    server = ProcessServer(tmp_path / "g.sqlite", tmp_path / "serve.log", "--log-level", "warning").wait_ready()
    try:
        enrol = httpx.post(server.url + "/v1/identities/Colin Powell/faces", timeout=60,
                           files=[("images", ("b.jpg", face.with_name("Colin_Powell_0002.jpg").read_bytes()))])
        assert enrol.status_code == 200
        figures = measure(server.url, server.proc.pid, big_png(face, 7000), clients=8, rounds=1)
    finally:
        server.stop()
    assert figures["peak_concurrent_mib"] <= 1536, figures
    assert figures["after_mib"] <= figures["idle_mib"] + 256, figures  # memory handed back after the burst
