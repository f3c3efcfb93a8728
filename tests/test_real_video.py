"""Real footage (``../shared/datasets/real-video``, its README says who is where): on the default model, a known
singer on stage is named in both of his scenes, and no name is ever given where its person is not on screen (his
pianist is seen in profile, the president in the audience, his face half behind his hand: naming them there is
right, naming anyone elsewhere is not); on a street of strangers, with nine people enrolled, every face stays
unknown; and with liveness judged, every one of them is live."""

from __future__ import annotations

from pathlib import Path

import pytest

from faceverify.video import VideoIdentifier
from tools.real_video import REAL_VIDEO_ENV, REFERENCES, SINGER, STAGE, STREET, real_video_root, wrong_name

from conftest import require_data


@pytest.fixture(scope="module")
def real_video() -> Path:
    root = real_video_root()
    if not (root / STAGE).is_file() or not (root / STREET).is_file():
        require_data(f"the real clips are not at {root}: set {REAL_VIDEO_ENV}")
    return root


@pytest.fixture(scope="module")
def gallery(real_video, verifier, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("real-video") / "gallery.sqlite"
    with verifier.open_gallery(path) as store:
        for name, photos in REFERENCES.items():
            report = verifier.enroll(store, name, [real_video / p for p in photos])
            assert report.added == {name: len(photos)} and not report.failures, (name, report.failures)
    return path


@pytest.fixture(scope="module")
def live_verifier():
    """The default verifier judging liveness too."""
    from faceverify.api import FaceVerifier
    from faceverify.liveness import LivenessChecker

    return FaceVerifier(device="cpu", liveness=LivenessChecker.load(threads=1))


def _identify(verifier, gallery: Path, video: Path) -> tuple[list[dict], dict]:
    with verifier.open_gallery(gallery) as store:
        with VideoIdentifier(verifier, store).run(str(video)) as run:
            events = [e.to_dict() for result in run for e in result.events]
        return events, run.summary().to_dict()


def test_the_singer_is_named_in_both_scenes_and_nobody_where_they_are_not(verifier, gallery, real_video):
    events, summary = _identify(verifier, gallery, real_video / STAGE)
    assert summary["frames"] == 275 and summary["ended"] == "end of file"
    wrong = [(e["frame"], e["name"]) for e in events if e["name"] and wrong_name(STAGE, e["name"], e["frame"])]
    assert not wrong, wrong
    assert SINGER in {t["name"] for t in summary["tracks"]}  # the singer's tracks end named
    named_at = [e["frame"] for e in events if e["name"] == SINGER]
    assert any(f <= 20 for f in named_at) and any(85 <= f <= 215 for f in named_at), named_at  # before and after the cut


def test_every_face_in_the_street_stays_unknown(verifier, gallery, real_video):
    events, summary = _identify(verifier, gallery, real_video / STREET)
    assert summary["frames"] == 105 and summary["ended"] == "end of file"
    assert {e["name"] for e in events} == {None}
    judged = [t for t in summary["tracks"] if t["status"] == "unknown"]
    assert len(judged) >= 3 and all(t["name"] is None for t in summary["tracks"])  # faces were seen and judged


def test_real_people_are_judged_live(live_verifier, gallery, real_video):
    """With liveness judged, real people on real footage are live: the singer is still named in both scenes,
    and every track that had faces judged, on stage and in the street, is live."""
    events, summary = _identify(live_verifier, gallery, real_video / STAGE)
    named_at = [e["frame"] for e in events if e["name"] == SINGER]
    assert any(f <= 20 for f in named_at) and any(85 <= f <= 215 for f in named_at), named_at
    street_events, street = _identify(live_verifier, gallery, real_video / STREET)
    assert {e["name"] for e in street_events} == {None}
    judged = [t for t in summary["tracks"] + street["tracks"] if t["liveness"]["score"] is not None]
    assert len(judged) >= 8 and all(t["liveness"]["live"] for t in judged), [t["liveness"] for t in judged]
