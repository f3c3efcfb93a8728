"""Video identification: tracking, stable labels, the JSON events and annotated output, dropped frames, Ctrl-C and
bad sources, on a short video generated from LFW DevTest stills (never committed)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceverify import cli
from faceverify.detect import Face
from faceverify.tracking import DetectionSchedule, Tracker, iou_matrix
from faceverify.verify import OperatingPoint
from faceverify.video import (
    FrameSource,
    TrackIdentity,
    VideoIdentifier,
    VideoSettings,
    identify_stream,
    open_video_writer,
)
from faceverify.video_synth import choose_cast, make_test_video

EVENT_KEYS = {"frame", "time", "track", "name", "score", "box"}


# -- pieces that need no faces ------------------------------------------------------------------------------


def _texture(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 255, (480, 640), dtype=np.uint8), (0, 0), 2.0)


def _face(box: list[float]) -> Face:
    return Face(np.array(box, np.float32), 0.99, np.zeros((5, 2), np.float32))


def test_flow_follows_a_moving_box():
    a = _texture()
    b = np.roll(a, (4, 7), axis=(0, 1))  # content moves 7 px right, 4 px down
    tracker = Tracker()
    tracker.associate([_face([200, 150, 300, 270])], frame=0)
    tracker.propagate(a, b, frame=1)
    assert tracker.tracks[0].flow_ok
    np.testing.assert_allclose(tracker.tracks[0].box, [207, 154, 307, 274], atol=1.0)


def test_association_keeps_ids_starts_and_ends_tracks():
    tracker = Tracker(max_misses=1)
    first = tracker.associate([_face([0, 0, 100, 100]), _face([300, 300, 400, 400])], frame=0)
    assert [t.id for t in first.started] == [1, 2]
    second = tracker.associate([_face([10, 5, 110, 105])], frame=5)  # one moved a little, the other unseen
    assert [t.id for t, _ in second.matched] == [1] and not second.started and not second.ended
    third = tracker.associate([_face([10, 5, 110, 105]), _face([500, 0, 600, 100])], frame=10)
    assert [t.id for t in third.ended] == [2] and [t.id for t in third.started] == [3]
    assert iou_matrix(np.array([0, 0, 10, 10]), np.array([[5, 0, 15, 10]]))[0, 0] == pytest.approx(1 / 3)


def test_schedule_stretches_while_stable_and_resets_on_change():
    schedule = DetectionSchedule(min_interval=2, max_interval=8)
    assert schedule.due()
    schedule.detected(stable=True)
    assert schedule.interval == 4
    schedule.detected(stable=True)
    schedule.detected(stable=True)
    assert schedule.interval == 8
    schedule.detected(stable=False)
    assert schedule.interval == 2 and not schedule.due() and schedule.due()
    schedule.request()
    assert schedule.due()


def test_label_needs_agreement_and_does_not_flicker():
    point = OperatingPoint(0.9, 1e-3)
    ident = TrackIdentity(VideoSettings(min_samples=2, good_quality=0.3, confirm=2, margin=0.03))
    vec = np.ones(4, np.float32) / 2
    ident.add(0.5, vec)
    assert not ident.decide("Ada", 0.95, point) and ident.status == "pending"  # one sample is not enough
    ident.add(0.5, vec)
    assert not ident.decide("Ada", 0.95, point)  # first agreeing decision
    assert ident.decide("Ada", 0.95, point) and (ident.status, ident.name) == ("known", "Ada")
    for name, score in [(None, 0.89), ("Bob", 0.95), (None, 0.88), ("Ada", 0.93)]:  # dips inside the margin
        assert not ident.decide(name, score, point)
    assert ident.name == "Ada"
    assert not ident.decide(None, 0.80, point) and ident.decide(None, 0.80, point)  # clear and repeated: switch
    assert (ident.status, ident.name) == ("unknown", None)


def test_live_reading_drops_frames_instead_of_queueing(tmp_path):
    video = tmp_path / "noise.avi"
    writer = open_video_writer(video, 25.0, 320, 240)
    for i in range(40):
        writer.write(cv2.cvtColor(np.roll(_texture(1)[:240, :320], i, axis=1), cv2.COLOR_GRAY2BGR))
    writer.release()
    with FrameSource(str(video), realtime=True) as source:
        frames = []
        while (item := source.read()) is not None:
            frames.append(item[0])
            time.sleep(0.12)  # a consumer slower than the 25 fps stream
    assert frames == sorted(frames) and frames[-1] >= 35
    assert source.dropped > 10 and source.dropped + len(frames) == 40 and source.end_reason == "end of file"
    with FrameSource(str(video)) as source:  # a file without --realtime: every frame, none dropped
        count = 0
        while source.read() is not None:
            count += 1
    assert count == 40 and source.dropped == 0


# -- on a generated video with LFW faces ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene(tmp_path_factory, lfw_root, verifier):
    """A 4 s 640x480 video: two enrolled DevTest people and one never enrolled, and their gallery."""
    work = tmp_path_factory.mktemp("video")
    actors, cast = choose_cast(lfw_root, enrolled=2, strangers=1, distractors=4, seed=3)
    truth_path = make_test_video(actors, work / "scene.mp4", seconds=4.0, seed=3, gallery=cast,
                                 detector=verifier.pipeline.detector)
    truth = json.loads(truth_path.read_text())
    gallery_path = work / "gallery.sqlite"
    with verifier.open_gallery(gallery_path) as gallery:
        for name, paths in truth["gallery"].items():
            verifier.enroll(gallery, name, paths)
    return dict(video=work / "scene.mp4", truth=truth, gallery=gallery_path, work=work)


def _person_of(truth: dict, event: dict) -> dict | None:
    """The ground-truth person whose box in the event's frame overlaps the event's box the most."""
    best, best_iou = None, 0.3
    for p in truth["people"]:
        box = p["boxes"].get(str(event["frame"]))
        if box is not None:
            v = iou_matrix(np.array(event["box"]), np.array(box))[0, 0]
            if v >= best_iou:
                best, best_iou = p, v
    return best


def _check_tracks(truth: dict, events: list[dict], tracks: list[dict]) -> None:
    """Each person is followed by one track (short fragments allowed), enrolled people are named right,
    the stranger stays unknown, and a decided label never changes."""
    by_track: dict[int, list[dict]] = {}
    for e in events:
        by_track.setdefault(e["track"], []).append(e)
    named: dict[str, set] = {p["name"]: set() for p in truth["people"]}
    for t in tracks:
        evs = by_track[t["id"]]
        owners = [p["name"] for p in (_person_of(truth, e) for e in evs) if p is not None]
        assert owners, f"track {t['id']} follows no one: {t}"
        owner = max(set(owners), key=owners.count)
        person = next(p for p in truth["people"] if p["name"] == owner)
        if t["status"] != "pending":
            named[owner].add(t["name"])
            assert t["name"] == (owner if person["enrolled"] else None), (t, owner)
        labels = [(e["status"], e["name"]) for e in evs if e["status"] != "pending"]
        assert len(set(labels)) <= 1, f"track {t['id']} changed its label: {sorted(set(labels))}"
    for p in truth["people"]:
        assert named[p["name"]] == ({p["name"]} if p["enrolled"] else {None}), (p["name"], named[p["name"]])


def test_people_are_named_and_strangers_stay_unknown(scene, verifier):
    with verifier.open_gallery(scene["gallery"]) as gallery:
        identifier = VideoIdentifier(verifier, gallery)
        run = identifier.run(str(scene["video"]))
        with run:
            events = [e.to_dict() for result in run for e in result.events]
        summary = run.summary().to_dict()
        comparisons = gallery.embedding_count() * identifier.settings.max_samples
    assert summary["frames"] == scene["truth"]["frames"] and summary["dropped"] == 0
    # open-set default: every sample of a track against every gallery embedding, FPIR held at 1%
    assert summary["ended"] == "end of file" and summary["far"] == pytest.approx(min(1e-3, 1e-2 / comparisons))
    assert summary["fpir"] == pytest.approx(min(1e-2, comparisons * 1e-3))
    assert summary["detections"] < summary["frames"] / 2  # detection is not per frame
    _check_tracks(scene["truth"], events, summary["tracks"])


def test_cli_json_events_and_annotated_output(scene, verifier, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_verifier", lambda model, device: verifier)
    out = scene["work"] / "annotated.mp4"
    code = cli.run(["identify", "--source", str(scene["video"]), "--gallery", str(scene["gallery"]),
                    "--json", "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = [json.loads(line) for line in captured.out.splitlines()]
    events, last = lines[:-1], lines[-1]
    assert events and all(EVENT_KEYS <= set(e) for e in events)
    summary = last["summary"]
    assert {"frames", "fps", "dropped", "tracks"} <= set(summary)
    assert summary["frames"] == scene["truth"]["frames"] and summary["dropped"] == 0 and summary["fps"] > 0
    assert all({"id", "name", "first_frame", "last_frame"} <= set(t) for t in summary["tracks"])
    _check_tracks(scene["truth"], events, summary["tracks"])
    cap = cv2.VideoCapture(str(out))
    assert cap.isOpened()
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (640, 480)
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    assert frames == scene["truth"]["frames"]


def test_ctrl_c_ends_cleanly_with_a_summary(scene, verifier):
    lines: list[str] = []
    handler = signal.getsignal(signal.SIGINT)

    def echo(line: str) -> None:
        lines.append(line)
        if len(lines) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with verifier.open_gallery(scene["gallery"]) as gallery:
        summary = identify_stream(verifier, gallery, str(scene["video"]), as_json=True, echo=echo)
    assert summary.ended == "interrupted" and 0 < summary.frames < scene["truth"]["frames"]
    assert "summary" in json.loads(lines[-1])
    assert signal.getsignal(signal.SIGINT) is handler


@pytest.mark.parametrize("source, reason", [
    ("missing.mp4", "no such file"),
    ("not-a-video.mp4", "cannot open as a video"),
    ("97", "cannot open this camera"),
])
def test_bad_source_is_one_line_and_exit_2(scene, verifier, capsys, monkeypatch, source, reason):
    monkeypatch.setattr(cli, "_verifier", lambda model, device: verifier)
    monkeypatch.chdir(scene["work"])
    Path("not-a-video.mp4").write_text("hello")
    code = cli.run(["identify", "--source", source, "--gallery", str(scene["gallery"])])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and reason in err and "Traceback" not in err, err
    label = f"camera {source}" if source.isdigit() else source
    assert err.startswith(f"faceverify: error: {label}: ")


def test_show_without_a_gui_is_a_clear_error(scene, verifier, capsys, monkeypatch):
    try:
        cv2.namedWindow("probe")
        cv2.destroyWindow("probe")
        pytest.skip("this OpenCV has a GUI backend")
    except cv2.error:
        pass
    monkeypatch.setattr(cli, "_verifier", lambda model, device: verifier)
    code = cli.run(["identify", "--source", str(scene["video"]), "--gallery", str(scene["gallery"]), "--show"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--output" in err
