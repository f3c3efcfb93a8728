"""`faceverify serve` over real HTTP: a real uvicorn server with the session's loaded model, real LFW images, a
real gallery. Every endpoint, every error status, auth, batching and the full queue, streams with their events,
video, webhooks and unknown faces; and 100+ hostile requests that must each get the right 4xx, store nothing
and leave the server up."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from faceverify.modelcard import default_model_name
from faceverify.gallery import Gallery
from faceverify.service import ServiceConfig, create_app
from faceverify.service.config import MiB
from faceverify.service.engine import Engine
from faceverify.service.errors import ApiError
from tests.servers import KEY, READ_KEY, Receiver, ThreadServer, files, sse_events
from tests.test_hostile_inputs import encode

EVENT_KEYS = {"frame", "time", "track", "name", "score", "box", "status"}


@pytest.fixture(scope="module")
def service(tmp_path_factory, verifier, lfw_root):
    work = tmp_path_factory.mktemp("service")
    config = ServiceConfig(gallery=work / "gallery.sqlite", api_keys=[KEY], read_keys=[READ_KEY], max_body=4 * MiB,
                           max_image_bytes=2 * MiB, max_pixels=20_000_000, max_files=8)
    with ThreadServer(create_app(config, verifier)) as server:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
            yield SimpleNamespace(url=server.url, client=client, config=config, work=work)


def _error(resp: httpx.Response, status: int | tuple[int, ...]) -> str:
    """The one-line error of a refused request, checked for its status and shape."""
    wanted = status if isinstance(status, tuple) else (status,)
    assert resp.status_code in wanted, (resp.status_code, resp.text[:300])
    body = resp.json()
    assert set(body) <= {"error", "failed"} and isinstance(body["error"], str), body
    assert "\n" not in body["error"] and "Traceback" not in body["error"], body
    return body["error"]


def test_health_is_open_and_everything_else_needs_the_key(service, lfw_image):
    health = httpx.get(service.url + "/v1/health").json()
    assert health == dict(status="ok", model=default_model_name(), gallery="gallery.sqlite",  # its name, not where
                          identities=health["identities"], keep_unknown=0, liveness=False)
    url = service.url
    assert "API key" in _error(httpx.get(url + "/v1/identities"), 401)
    assert _error(httpx.get(url + "/v1/identities", headers={"Authorization": "Bearer wrong-key-xxxxxxx"}), 401)
    assert _error(httpx.get(url + "/v1/identities", headers={"Authorization": f"Basic {KEY}"}), 401)
    assert httpx.get(url + "/v1/identities", headers={"Authorization": f"Bearer {KEY[:-1]}"}).status_code == 401
    reader = {"Authorization": f"Bearer {READ_KEY}"}
    assert httpx.get(url + "/v1/identities", headers=reader).status_code == 200
    image = files("images", [lfw_image("Colin_Powell", 1)])
    assert "only read" in _error(httpx.post(url + "/v1/identities/Someone/faces", headers=reader, files=image), 403)
    assert _error(httpx.post(url + "/v1/identify", files=files("image", [lfw_image("Colin_Powell", 1)])), 401)
    # the page's cookie authenticates reads (<img>, EventSource), never writes
    assert httpx.get(url + "/v1/identities", cookies={"faceverify_key": KEY}).status_code == 200
    assert _error(httpx.delete(url + "/v1/identities/Someone", cookies={"faceverify_key": KEY}), 401)
    page = httpx.get(url + "/")
    assert page.status_code == 200 and "<title>faceverify</title>" in page.text and "http" not in page.text.split(
        "<script>")[0].replace("http-equiv", "")  # no external asset
    assert "default-src 'self'" in page.headers["content-security-policy"]
    spec = httpx.get(url + "/openapi.json").json()
    assert spec["info"]["title"] == "faceverify" and "/v1/identities/{name}/faces" in spec["paths"]
    assert httpx.get(url + "/docs").status_code == 200


def test_enrol_identify_verify_and_manage_the_gallery(service, lfw_image):
    c = service.client
    r = c.post("/v1/identities/Colin Powell/faces", files=files("images", [lfw_image("Colin_Powell", i) for i in (1, 2)]))
    assert r.status_code == 200, r.text
    assert r.json() == {"added": {"Colin Powell": 2}, "failed": [], "gallery": "gallery.sqlite"}
    again = c.post("/v1/identities/Colin Powell/faces", files=files("images", [lfw_image("Colin_Powell", 1)]))
    assert again.json()["added"] == {"Colin Powell": 0}  # the same face of the same file is stored once
    assert {"name": "Colin Powell", "embeddings": 2} in c.get("/v1/identities").json()
    shown = c.get("/v1/identities/Colin Powell").json()
    assert shown["name"] == "Colin Powell" and [e["source"] for e in shown["embeddings"]] == [
        "upload:Colin_Powell_0001.jpg", "upload:Colin_Powell_0002.jpg"]
    assert set(shown["embeddings"][0]) == {"id", "source", "source_sha256", "box", "model_id", "created_at", "face"}
    thumb = c.get("/v1/identities/Colin Powell/thumbnail")
    assert thumb.headers["content-type"] == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(thumb.content, np.uint8), cv2.IMREAD_COLOR).shape[2] == 3

    found = c.post("/v1/identify", files=files("image", [lfw_image("Colin_Powell", 3)])).json()
    assert found["image"] == "Colin_Powell_0003.jpg" and len(found["faces"]) == 1
    face = found["faces"][0]
    assert set(face) == {"name", "score", "box", "nearest", "quality"} and face["name"] == "Colin Powell"
    assert all(isinstance(e["box"], list) and len(e["box"]) == 4 for e in shown["embeddings"])  # as identify's
    assert isinstance(face["box"], list) and len(face["box"]) == 4
    assert found["decision"]["by"] == "fpir" and found["decision"]["fpir_target"] == 0.01  # what decided, and how
    assert face["score"] >= found["decision"]["threshold"]
    best = c.post("/v1/identify?match=best", files=files("image", [lfw_image("Colin_Powell", 3)])).json()
    assert best["faces"][0]["name"] == "Colin Powell"  # against every stored embedding, as `--match best`
    stranger = c.post("/v1/identify", files=files("image", [lfw_image("Tony_Blair", 1)])).json()["faces"][0]
    assert stranger["name"] is None and stranger["nearest"] == "Colin Powell"
    assert c.post("/v1/identify?threshold=-1", files=files("image", [lfw_image("Tony_Blair", 1)])).json()[
        "faces"][0]["name"] == "Colin Powell"  # an explicit threshold wins

    pair = files("a", [lfw_image("Colin_Powell", 3)]) + files("b", [lfw_image("Colin_Powell", 4)])
    same = c.post("/v1/verify", files=pair).json()
    assert set(same) == {"same", "similarity", "threshold", "far", "model", "box_a", "box_b", "calibrated_front_end"}
    assert same["calibrated_front_end"] is True  # the default model carries the default detector's calibration
    assert same["same"] is True and same["far"] == 1e-3 and same["model"] == default_model_name()
    other = files("a", [lfw_image("Colin_Powell", 3)]) + files("b", [lfw_image("Tony_Blair", 1)])
    assert c.post("/v1/verify?far=0.0001", files=other).json()["same"] is False

    assert c.patch("/v1/identities/Colin Powell", json={"name": "General Powell"}).json()["name"] == "General Powell"
    _error(c.get("/v1/identities/Colin Powell"), 404)
    c.post("/v1/identities/Tony Blair/faces", files=files("images", [lfw_image("Tony_Blair", 1)]))
    assert "already exists" in _error(c.patch("/v1/identities/Tony Blair", json={"name": "General Powell"}), 409)
    assert "looks like" in _error(c.patch("/v1/identities/Tony Blair", json={"name": "GENERAL POWELL"}), 409)
    assert c.delete("/v1/identities/Tony Blair").json() == {"name": "Tony Blair", "removed": 1}
    _error(c.delete("/v1/identities/Tony Blair"), 404)
    _error(c.get("/v1/identities/Tony Blair/thumbnail"), 404)
    assert c.get("/v1/health").json()["identities"] == 1
    assert c.patch("/v1/identities/General Powell", json={"name": "Colin Powell"}).status_code == 200


def test_the_cli_and_the_service_share_one_gallery(service, verifier, lfw_image, monkeypatch, capsys):
    from faceverify import cli
    from faceverify.cli import core as cli_core

    monkeypatch.setattr(cli_core, "_verifier", lambda *args, **kwargs: verifier)
    where = ["--gallery", str(service.config.gallery)]
    assert cli.run(["enroll", "Tony Blair", str(lfw_image("Tony_Blair", 1)), str(lfw_image("Tony_Blair", 2)), *where]) == 0
    c = service.client
    assert {"name": "Tony Blair", "embeddings": 2} in c.get("/v1/identities").json()  # written by another connection
    found = c.post("/v1/identify", files=files("image", [lfw_image("Tony_Blair", 3)])).json()
    assert found["faces"][0]["name"] == "Tony Blair"  # the service's index caught up with the CLI's write
    assert c.get("/v1/identities/Tony Blair/thumbnail").status_code == 200  # cut from the CLI's source file
    assert c.delete("/v1/identities/Tony Blair").json()["removed"] == 2
    capsys.readouterr()
    assert cli.run(["gallery", "list", "--json", *where]) == 0
    assert "Tony Blair" not in {p["name"] for p in json.loads(capsys.readouterr().out)}


def test_identities_enrolled_from_one_photo_keep_their_own_thumbnails(service, lfw_image):
    c = service.client
    photo = files("images", [lfw_image("Gerhard_Schroeder", 2)])
    for name in ("Photo Twin A", "Photo Twin B"):
        assert c.post(f"/v1/identities/{name}/faces", files=photo).status_code == 200
    assert c.delete("/v1/identities/Photo Twin B").json()["removed"] == 1
    kept = c.get("/v1/identities/Photo Twin A/thumbnail")
    assert kept.status_code == 200 and kept.headers["content-type"] == "image/jpeg"  # B's removal left A's crop
    _error(c.get("/v1/identities/Photo Twin B/thumbnail"), 404)
    c.delete("/v1/identities/Photo Twin A")


def test_bad_input_messages_name_the_file(service, lfw_image):
    c = service.client
    pair = [("a", ("mine.png", encode("PNG", 64, 64)))] + files("b", [lfw_image("Colin_Powell", 1)])
    assert _error(c.post("/v1/verify", files=pair), 400) == "mine.png: no face found"
    pair = files("a", [lfw_image("Colin_Powell", 1)]) + [("b", ("broken.jpg", b"\xff\xd8\xff\xe0 trunc"))]
    assert _error(c.post("/v1/verify", files=pair), 400).startswith("broken.jpg: corrupt or truncated image")
    msg = _error(c.post("/v1/identify", files=[("image", ("../../etc/passwd", b"root:x:0:0"))]), 400)
    assert msg == "passwd: not an image file (unrecognised format)"
    failed = c.post("/v1/identities/Someone New/faces",
                    files=files("images", [lfw_image("Colin_Powell", 1)]) + [("images", ("x.gif", b"GIF89a"))])
    assert "x.gif: " in _error(failed, 400) and "nothing was enrolled" in failed.json()["error"]
    _error(c.get("/v1/identities/Someone New"), 404)
    skipped = c.post("/v1/identities/Someone New/faces?skip_bad=true",
                     files=files("images", [lfw_image("Colin_Powell", 1)]) + [("images", ("x.gif", b"GIF89a"))])
    assert skipped.status_code == 200 and skipped.json()["added"] == {"Someone New": 1}
    assert skipped.json()["failed"][0].startswith("x.gif: ")
    c.delete("/v1/identities/Someone New")


def test_requests_arriving_together_are_batched_and_a_full_queue_is_refused(verifier, lfw_image, tmp_path):
    images = [np.asarray(Image.open(lfw_image("Colin_Powell", i)).convert("RGB")) for i in range(1, 9)]
    engine = Engine(verifier, tmp_path / "g.sqlite", queue_size=2, batch_images=8)

    async def together(e: Engine) -> list:
        return await asyncio.wait_for(asyncio.gather(*(e.embed([img]) for img in images), return_exceptions=True), 60)

    try:
        first = asyncio.run(together(engine))
        refused = [r for r in first if isinstance(r, ApiError)]
        assert refused and all(r.status == 503 for r in refused)
        answered = [r for r in first if not isinstance(r, BaseException)]
        assert answered and all(len(faces) == 1 for faces in answered)
        big = Engine(verifier, tmp_path / "g.sqlite", queue_size=16, batch_images=8)
        try:
            results = asyncio.run(together(big))
            assert all(len(r) == 1 and len(r[0]) == 1 for r in results)
            assert big.batched_images == 8 and big.batches < 8  # shared forward passes
            alone = verifier.pipeline.process_images(images[:1])[0][0].embedding
            np.testing.assert_allclose(results[0][0][0].embedding, alone, atol=1e-5)
        finally:
            big.close()
    finally:
        engine.close()


# -- streams ---------------------------------------------------------------------------------------------


def test_streams_events_video_webhooks_and_unknown_faces(service_scene, verifier, tmp_path):
    scene = service_scene
    hooks = Receiver()
    config = ServiceConfig(gallery=tmp_path / "g.sqlite", keep_unknown=4, webhooks=[hooks.url])
    try:
        app = create_app(config, verifier)
        with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=120) as c:
            for name, paths in scene["truth"]["gallery"].items():
                assert c.post(f"/v1/identities/{name}/faces", files=files("images", paths)).status_code == 200
            started = c.post("/v1/streams", json={"source": str(scene["video"]), "realtime": False})
            assert started.status_code == 201, started.text
            sid = started.json()["id"]
            assert started.json()["status"] == "running"
            events = sse_events(c, f"/v1/streams/{sid}/events?since=0")
            summary = events[-1]["summary"]
            tracks = [e for e in events if "ended" not in e and "summary" not in e]
            assert tracks and all(set(e) == EVENT_KEYS for e in tracks)
            assert any("ended" in e for e in events)
            assert summary["frames"] == scene["truth"]["frames"] and summary["ended"] == "end of file"
            people = scene["truth"]["people"]
            enrolled = {p["name"] for p in people if p["enrolled"]}
            named = {t["name"] for t in summary["tracks"] if t["name"]}
            assert named == enrolled, (named, enrolled)  # each enrolled person named, the stranger never
            assert any(t["status"] == "unknown" for t in summary["tracks"]), summary["tracks"]

            with c.stream("GET", f"/v1/streams/{sid}/video") as resp:
                assert resp.headers["content-type"].startswith("multipart/x-mixed-replace")
                data = b"".join(resp.iter_bytes())
            jpeg = data[data.index(b"\xff\xd8"): data.index(b"\xff\xd9") + 2]
            assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (480, 640, 3)
            frame = c.get(f"/v1/streams/{sid}/frame")
            assert frame.headers["content-type"] == "image/jpeg"
            assert cv2.imdecode(np.frombuffer(frame.content, np.uint8), cv2.IMREAD_COLOR).shape == (480, 640, 3)
            listed = c.get("/v1/streams").json()
            assert [(s["id"], s["status"], s["frames"]) for s in listed] == [(sid, "ended", summary["frames"])]

            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(b["event"] == "ended" for b in hooks.bodies):
                time.sleep(0.1)
            decided = [b for b in hooks.bodies if b["event"] == "decided"]
            assert {b["name"] for b in decided if b["status"] == "known"} == enrolled
            assert any(b["status"] == "unknown" for b in decided)
            assert all(b["stream"] == sid for b in hooks.bodies) and any(b["event"] == "ended" for b in hooks.bodies)

            kept = c.get("/v1/unknown").json()
            assert kept and set(kept[0]) == {"id", "stream", "track", "time", "score", "seen"}
            crop = c.get(f"/v1/unknown/{kept[0]['id']}/image")
            assert cv2.imdecode(np.frombuffer(crop.content, np.uint8), cv2.IMREAD_COLOR) is not None
            named_now = c.post(f"/v1/unknown/{kept[0]['id']}/enroll", json={"name": "Visitor One"})
            assert named_now.status_code == 200, named_now.text
            assert named_now.json()["added"] == {"Visitor One": 1}
            assert any(p["name"] == "Visitor One" for p in c.get("/v1/identities").json())
            assert c.get(f"/v1/unknown/{kept[0]['id']}/image").status_code == 404
            for face in kept[1:]:
                assert c.delete(f"/v1/unknown/{face['id']}").status_code == 200
            assert c.get("/v1/unknown").json() == []

            stopped = c.delete(f"/v1/streams/{sid}")
            assert stopped.json()["summary"]["frames"] == summary["frames"]
            assert c.get(f"/v1/streams/{sid}").status_code == 404
            live = c.post("/v1/streams", json={"source": str(scene["video"])})  # realtime: as a camera
            assert live.status_code == 201
            time.sleep(1.0)
            ended = c.delete(f"/v1/streams/{live.json()['id']}").json()
            assert ended["status"] == "ended" and ended["summary"]["ended"] == "stopped by request"
            assert 0 < ended["frames"] < summary["frames"]

            again = c.post("/v1/streams", json={"source": str(scene["video"]), "realtime": False}).json()["id"]
            sse_events(c, f"/v1/streams/{again}/events?since=0")
            deadline = time.monotonic() + 10
            while c.get(f"/v1/streams/{again}").json()["status"] != "ended" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert [s["status"] for s in c.get("/v1/streams").json()] == ["ended"]  # listed, with its summary, a while
            app.state.service.streams.ended_kept = 0.0  # ... then forgotten (ENDED_KEPT: 10 minutes)
            assert c.get("/v1/streams").json() == [] and c.get(f"/v1/streams/{again}").status_code == 404
    finally:
        hooks.close()


def test_webhooks_retry_then_deliver_and_a_full_queue_drops():
    import http.server
    import threading

    from faceverify.service.observers import Webhooks

    got: list[dict] = []
    refusals = [2]

    class Flaky(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if refusals[0] > 0:
                refusals[0] -= 1
                self.send_response(500)
            else:
                got.append(body)
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    try:
        hooks = Webhooks([url], retries=3, backoff=0.05)
        hooks.post({"event": "decided", "name": "Ada"})
        hooks.close(drain=5)
        assert got == [{"event": "decided", "name": "Ada"}] and hooks.stats()["sent"] == 1  # after 2 refusals
        import socket

        hang = socket.socket()  # accepts connections (the kernel's backlog) and never answers
        hang.bind(("127.0.0.1", 0))
        hang.listen(8)
        got.clear()
        both = Webhooks([f"http://127.0.0.1:{hang.getsockname()[1]}/", url], retries=0, timeout=3)
        both.post({"event": "ended"})
        deadline = time.monotonic() + 2
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
        assert got == [{"event": "ended"}]  # delivered while the other receiver hangs
        both.close(drain=0)
        hang.close()
        dead = Webhooks(["http://127.0.0.1:9/nothing"], queue_size=2, retries=1, backoff=0.05)
        for i in range(50):
            dead.post({"i": i})
        dead.close(drain=3)
        stats = dead.stats()
        assert stats["dropped"] >= 40 and stats["failed"] >= 1 and stats["sent"] == 0
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_gallery_of_another_model_is_refused_before_listening(verifier, tmp_path):
    from faceverify.errors import ConflictError
    from faceverify.gallery import Enrolment

    path = tmp_path / "other.sqlite"
    with Gallery(path, "some-other-model@1:0123", 4) as g:
        g.enroll("Someone", [Enrolment(np.ones(4, np.float32) / 2, "x.jpg", "ab" * 32)])
    with pytest.raises(ConflictError, match="enrolled with model some-other-model"):
        create_app(ServiceConfig(gallery=path), verifier)
    with pytest.raises(Exception, match="refusing to listen on 192.168.1.2 without an API key"):
        ServiceConfig(gallery=path, host="192.168.1.2").check_listen()
    ServiceConfig(gallery=path, host="::1").check_listen()
    ServiceConfig(gallery=path, host="0.0.0.0", api_keys=[KEY]).check_listen()
    with pytest.raises(Exception, match="at least 8"):
        ServiceConfig(gallery=path, api_keys=["short"])


def test_model_work_does_not_stall_the_event_loop(service, lfw_image):
    import threading

    done: dict[str, list[int]] = {}

    def enrol() -> None:
        with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
            batches = [[lfw_image("George_W_Bush", i) for i in range(start, start + 8)]  # the fixture's max_files
                       for start in range(1, 33, 8)]
            url = "/v1/identities/Busy Person/faces?force=true"  # the gate is tested apart; here only the load
            done["enrol"] = [c.post(url, files=files("images", paths)).status_code for paths in batches]

    worker = threading.Thread(target=enrol)
    worker.start()
    time.sleep(0.05)  # the 32 images are being decoded and embedded
    answers = 0
    with httpx.Client(base_url=service.url, timeout=10) as health:
        while "enrol" not in done and answers < 1000:
            assert health.get("/v1/health").status_code == 200
            answers += 1
    worker.join(60)
    assert done.get("enrol") == [200] * 4  # the enrolments ran (and were not refused at once)
    assert answers >= 2  # the loop kept answering while the model worked
    service.client.delete("/v1/identities/Busy Person")


def test_a_face_below_the_quality_limits_is_422_with_the_reason_and_force_enrols_it(service, lfw_image):
    from tests.test_quality import degraded, encoded

    made = degraded(cv2.cvtColor(cv2.imread(str(lfw_image("Colin_Powell", 1))), cv2.COLOR_BGR2RGB),
                    cv2.cvtColor(cv2.imread(str(lfw_image("George_W_Bush", 1))), cv2.COLOR_BGR2RGB))
    upload = [("images", ("blurred.png", encoded(made["blurred"])))]
    c = service.client
    error = _error(c.post("/v1/identities/Blurred Person/faces", files=upload), 422)
    assert error.startswith("blurred.png: face too blurred") and "nothing was enrolled" in error
    _error(c.get("/v1/identities/Blurred Person"), 404)
    assert c.post("/v1/identities/Blurred Person/faces?force=true", files=upload).json()["added"] == {"Blurred Person": 1}
    c.delete("/v1/identities/Blurred Person")
