"""The web page in a real headless browser (Debian's chromium and chromedriver, driven by selenium) against a
real `faceverify serve` process: the page loads with no external asset, enrolment by upload adds identities to
the gallery list, identify on a held-out image shows the name, verify two images of one person says so, a
webcam capture (chromium's fake camera) reaches the enrolment and is refused for having no face, a generated video
stream shows labels live (a screenshot, checked not blank and showing a known label's colour), and an unknown face
is named from the page. Also: the key-needed message goes once a key works, identify draws each face's box on the
image (placed where the API says, scaled to the shown size) with the threshold that decided, the unknown panel
knows the server keeps unknown faces, "skip bad files" enrols the good files of a batch holding a bad one, a
thumbnail the server no longer has shows a placeholder, and at 400 px wide nothing overflows."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import require_data
from tests.servers import KEY, ProcessServer
from tools.common import DEV_MINIFASNET

KNOWN_RGB = (60, 200, 60)  # faceverify.video.render's colour for a known face (BGR, the same in RGB)


@pytest.fixture(scope="module")
def browser():
    chrome = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    driver_path = shutil.which("chromedriver")
    if chrome is None or driver_path is None:
        require_data("no chromium and chromedriver (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        require_data("selenium is not installed (pip install '.[dev]')")
    options = webdriver.ChromeOptions()
    options.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,2400",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _wait(predicate, timeout: float = 30, what: str = "the page"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _known_pixels(png: Path) -> int:
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int((np.abs(rgb - np.array(KNOWN_RGB)).sum(axis=2) < 40).sum())


def test_page_enrols_identifies_and_shows_a_live_stream(browser, tmp_path, service_scene):
    from selenium.webdriver.common.by import By

    scene = service_scene
    truth = scene["truth"]
    log = tmp_path / "serve.log"
    server = ProcessServer(tmp_path / "g.sqlite", log, "--api-key", KEY, "--keep-unknown", "4").wait_ready()
    try:
        d = browser
        d.get(server.url + "/")
        assert d.title == "faceverify"
        find = d.find_element
        _wait(lambda: "an API key is needed" in find(By.ID, "message").text, what="the key-needed message")
        find(By.ID, "key").send_keys(KEY)
        find(By.ID, "key-save").click()
        _wait(lambda: "identities" in find(By.ID, "health").text, what="the health line")
        _wait(lambda: find(By.ID, "gallery").text == "nobody enrolled yet", what="the gallery with the key")
        _wait(lambda: not find(By.ID, "message").text, what="the key-needed message to go")
        unknown_text = _wait(lambda: find(By.ID, "unknown").text, what="the unknown panel")
        assert "start the server with --keep-unknown" not in unknown_text and unknown_text == "none kept yet"

        for name, paths in truth["gallery"].items():
            field = find(By.ID, "enroll-name")
            field.clear()
            field.send_keys(name)
            find(By.ID, "enroll-files").send_keys("\n".join(str(Path(p).resolve()) for p in paths))
            find(By.ID, "enroll-btn").click()
            _wait(lambda: d.find_elements(By.CSS_SELECTOR, f'#gallery .identity[data-name="{name}"]'),
                  what=f"{name} in the gallery list")
        thumbs = d.find_elements(By.CSS_SELECTOR, "#gallery .identity img")
        assert len(thumbs) == len(truth["gallery"])
        _wait(lambda: all(d.execute_script("return arguments[0].naturalWidth", t) > 0 for t in thumbs),
              what="the thumbnails")

        enrolled = [p for p in truth["people"] if p["enrolled"]]
        held_out = next(Path(p) for p in [Path(truth["gallery"][enrolled[0]["name"]][0]).with_name(
            f"{enrolled[0]['name']}_0001.jpg")])
        big = tmp_path / "held-out-big.jpg"  # shown scaled down (at most 480 px high), so the boxes must scale
        Image.open(held_out).resize((1000, 1000)).save(big, quality=92)
        find(By.ID, "identify-file").send_keys(str(big.resolve()))
        find(By.ID, "identify-btn").click()
        result = _wait(lambda: [e.text for e in d.find_elements(By.CSS_SELECTOR, "#identify-result .face")],
                       what="the identify result")
        assert result[0].startswith(enrolled[0]["name"] + " ("), result
        assert find(By.ID, "identify-threshold").text.startswith("threshold "), find(By.ID, "identify-threshold").text
        assert "FPIR" in find(By.ID, "identify-threshold").text
        boxes = _wait(lambda: d.find_elements(By.CSS_SELECTOR, "#identify-image .box"), what="the drawn boxes")
        answer = httpx.post(server.url + "/v1/identify", headers={"Authorization": "Bearer " + KEY},
                            files={"image": (big.name, big.read_bytes(), "image/jpeg")}, timeout=60).json()
        assert len(boxes) == len(answer["faces"])
        assert boxes[0].text == enrolled[0]["name"] and "unknown" not in boxes[0].get_attribute("class")
        rect_js = "const r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom];"
        img = find(By.CSS_SELECTOR, "#identify-image img")
        left, top, right, _ = d.execute_script(rect_js, img)
        assert d.execute_script("return arguments[0].naturalWidth", img) == 1000 and right - left < 900  # scaled down
        scale = (right - left) / 1000
        rect = d.execute_script(rect_js, boxes[0])
        x1, y1, x2, y2 = answer["faces"][0]["box"]
        want = [left + x1 * scale, top + y1 * scale, left + x2 * scale, top + y2 * scale]
        assert np.allclose(rect, want, atol=1.5), (rect, want)

        find(By.ID, "verify-a").send_keys(str(held_out.resolve()))
        find(By.ID, "verify-b").send_keys(str(Path(truth["gallery"][enrolled[0]["name"]][0]).resolve()))
        find(By.ID, "verify-btn").click()
        assert _wait(lambda: find(By.ID, "verify-result").text, what="the verify result").startswith("same person")

        find(By.ID, "cam-start").click()  # chromium's fake camera: a moving test pattern, no face in it
        _wait(lambda: find(By.ID, "cam-enroll").is_enabled() and d.execute_script(
            "return document.getElementById('cam').videoWidth") > 0, what="the webcam")
        field = find(By.ID, "enroll-name")
        field.clear()
        field.send_keys("Webcam Person")
        find(By.ID, "cam-enroll").click()
        assert _wait(lambda: "webcam.jpg" in find(By.ID, "message").text and find(By.ID, "message").text,
                     what="the webcam enrolment's answer").startswith("webcam.jpg: no face found")

        find(By.ID, "stream-source").send_keys(str(scene["video"].resolve()))
        find(By.ID, "stream-start").click()
        video = _wait(lambda: d.find_element(By.ID, "stream-video") if find(By.ID, "stream-view").is_displayed()
                      else None, what="the stream view")
        _wait(lambda: d.execute_script("return arguments[0].naturalWidth", video) > 0, what="the first video frame")
        shot = tmp_path / "stream.png"
        best = 0
        deadline = time.monotonic() + 40
        names = {p["name"] for p in enrolled}
        while time.monotonic() < deadline:
            video.screenshot(str(shot))
            best = max(best, _known_pixels(shot))
            if best > 200 and set(find(By.ID, "stream-names").text.split(", ")) == names:
                break
            time.sleep(0.2)
        assert set(find(By.ID, "stream-names").text.split(", ")) == names
        assert best > 200, "no known label seen in the streamed video"
        rgb = np.asarray(Image.open(shot).convert("RGB"))
        assert rgb.shape[0] > 100 and rgb.std() > 10  # a real picture, not blank
        page = tmp_path / "page.png"
        d.save_screenshot(str(page))
        assert np.asarray(Image.open(page).convert("RGB")).std() > 10

        find(By.ID, "unknown-refresh").click()
        from selenium.common.exceptions import StaleElementReferenceException

        for attempt in range(5):  # the list is re-rendered when the stream's unknown faces change: take it afresh
            card = _wait(lambda: d.find_elements(By.CSS_SELECTOR, "#unknown .unknown-face"), 30, "an unknown face")[0]
            try:
                card.find_element(By.TAG_NAME, "input").send_keys("Door Visitor")
                card.find_element(By.TAG_NAME, "button").click()
                break
            except StaleElementReferenceException:
                if attempt == 4:
                    raise
                time.sleep(0.5)
        _wait(lambda: d.find_elements(By.CSS_SELECTOR, '#gallery .identity[data-name="Door Visitor"]'),
              what="the named unknown face in the gallery")
        errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"
                  and "status of 401" not in e["message"]  # the lists asked for before the key was typed
                  and "Webcam%20Person" not in e["message"]]  # the refused webcam capture
        assert not errors, errors

        # "skip bad files": one good image and one that is not an image
        notes = tmp_path / "notes.jpg"
        notes.write_text("not an image")
        both = f"{held_out.resolve()}\n{notes.resolve()}"
        field = find(By.ID, "enroll-name")
        field.clear()
        field.send_keys("Skip Bad")
        find(By.ID, "enroll-files").send_keys(both)
        find(By.ID, "enroll-btn").click()
        refused = _wait(lambda: "nothing was enrolled" in find(By.ID, "message").text and find(By.ID, "message"),
                        what="the refused enrolment")
        assert refused.text.startswith("notes.jpg") and "error" in refused.get_attribute("class"), refused.text
        assert "tick 'skip bad files'" in refused.text and "skip_bad=true" not in refused.text, refused.text
        assert not d.find_elements(By.CSS_SELECTOR, '#gallery .identity[data-name="Skip Bad"]')
        find(By.ID, "enroll-skip-bad").click()
        d.execute_script("document.getElementById('enroll-files').value = ''")
        find(By.ID, "enroll-files").send_keys(both)
        find(By.ID, "enroll-btn").click()
        _wait(lambda: d.find_elements(By.CSS_SELECTOR, '#gallery .identity[data-name="Skip Bad"]'),
              what="the enrolment with skip bad files")
        assert find(By.ID, "message").text.startswith("enrolled Skip Bad: 1 new face(s); skipped notes.jpg")

        # thumbnails the server no longer has: a placeholder with the initials, no broken image
        for f in (tmp_path / "g.sqlite.faces").iterdir():
            f.unlink()
        d.refresh()
        cards = _wait(lambda: d.find_elements(By.CSS_SELECTOR, "#gallery .identity"), what="the gallery list")
        _wait(lambda: len(d.find_elements(By.CSS_SELECTOR, "#gallery .identity .placeholder")) == len(cards),
              what="the thumbnail placeholders")
        assert not d.find_elements(By.CSS_SELECTOR, "#gallery .identity img")
        skip = d.find_element(By.CSS_SELECTOR, '#gallery .identity[data-name="Skip Bad"] .placeholder')
        assert skip.text == "SB" and skip.size["width"] == 128

        # 400 px wide: the header wraps, nothing overflows, every header control is in view
        d.set_window_size(400, 900)
        try:
            d.refresh()
            _wait(lambda: "identities" in find(By.ID, "health").text, what="the health line at 400 px")
            _wait(lambda: d.find_elements(By.CSS_SELECTOR, "#gallery .identity"), what="the gallery at 400 px")
            width = d.execute_script("return window.innerWidth")
            assert width <= 400
            assert d.execute_script("return document.documentElement.scrollWidth") <= width
            for control in ("key", "key-save", "health"):
                right = d.execute_script("return arguments[0].getBoundingClientRect().right", find(By.ID, control))
                assert 0 < right <= width, (control, right, width)
        finally:
            d.set_window_size(1280, 2400)
    finally:
        server.stop()
    assert KEY not in log.read_text()


def test_page_and_streams_mark_faces_not_live(browser, tmp_path, verifier):
    """`serve --liveness`: /v1/health says so; identify and verify answers carry each face's liveness; the page
    marks a print "not live" (its own colour, no name) and still names the live face; a stream of prints and
    screens held up to the camera never names them, and its tracks end "spoof"."""
    from selenium.webdriver.common.by import By
    from tests.servers import files, sse_events
    from tools.video_synth import held_up_attacks, make_test_video

    samples = DEV_MINIFASNET
    if not (samples / "image_F1.jpg").is_file():
        require_data(f"{samples}: the MiniFASNet samples are not here")
    held = held_up_attacks(samples)
    video = tmp_path / "held-up.mp4"
    make_test_video(held, video, seconds=4.0, seed=7, detector=verifier.pipeline.detector)
    server = ProcessServer(tmp_path / "g.sqlite", tmp_path / "serve.log", "--liveness").wait_ready()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            assert c.get("/v1/health").json()["liveness"] is True
            for name, image in (("poster", "image_F1.jpg"), ("tablet", "image_F2.jpg"), ("person", "image_T1.jpg")):
                assert c.post(f"/v1/identities/{name}/faces", files=files("images", [samples / image])).status_code == 200
            answer = c.post("/v1/identify", files=files("image", [samples / "image_F1.jpg"])).json()
            assert answer["faces"][0]["name"] is None and answer["faces"][0]["liveness"]["live"] is False
            started = c.post("/v1/streams", json={"source": str(video), "realtime": False})
            assert started.status_code == 201, started.text
            events = sse_events(c, f"/v1/streams/{started.json()['id']}/events?since=0")
        tracks = [e for e in events if "ended" not in e and "summary" not in e]
        assert tracks and all("liveness" in e for e in tracks) and {e["name"] for e in tracks} == {None}
        assert any(t["status"] == "spoof" for t in events[-1]["summary"]["tracks"])

        d = browser
        d.get(server.url + "/")
        find = d.find_element
        _wait(lambda: "identities" in find(By.ID, "health").text, what="the health line")
        for image, expect in (("image_F1.jpg", "not live ("), ("image_T1.jpg", "person (")):
            find(By.ID, "identify-file").send_keys(str((samples / image).resolve()))
            find(By.ID, "identify-btn").click()
            text = _wait(lambda: [e.text for e in d.find_elements(By.CSS_SELECTOR, "#identify-result .face")
                                  if e.text != "…"], what="the identify result")[0]
            assert text.startswith(expect), text
            box = _wait(lambda: d.find_elements(By.CSS_SELECTOR, "#identify-image .box"), what="the box")[0]
            assert ("spoof" in box.get_attribute("class")) == (expect == "not live ("), box.get_attribute("class")
            assert box.text == ("not live" if expect == "not live (" else "person")
        assert "live " in text  # the live face's score is shown beside its name
        find(By.ID, "verify-a").send_keys(str((samples / "image_F1.jpg").resolve()))
        find(By.ID, "verify-b").send_keys(str((samples / "image_F1.jpg").resolve()))
        find(By.ID, "verify-btn").click()
        assert _wait(lambda: find(By.ID, "verify-result").text, what="the verify result").startswith("not live")
    finally:
        server.stop()
