"""Real footage, speed and names: `identify --source`'s pipeline on the two real clips beside face_recognition's way
of naming faces in video (dlib, every frame), in the same run on the same frames.

    python tools/bench_real_video.py [--root ../shared/datasets/real-video] [--threads 1] [--model NAME]

Both sides enrol the same reference photos (tools/real_video.py: nine people, none of them a frame of the clips). Ours is
:class:`faceverify.video.VideoIdentifier` on the default settings, reading the file as fast as it can. The peer
is face_recognition's documented recipe done with dlib directly (its package needs pkg_resources): on every frame
HOG detection upsampled once (`face_locations`' default), the 5-point shape, one jittered ResNet descriptor
(`face_encodings`' default) and the nearest reference within Euclidean 0.6 (`compare_faces`' tolerance). What each
side names is reported per clip, and a name given where its person is not on screen (tools/real_video.py ON_SCREEN:
on the stage clip the singer in his two scenes, his pianist in profile, the president in the audience; on the street
nobody) is marked WRONG.
The peer must have described at least one face in each clip, else the tool stops with an error.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from faceverify.api import FaceVerifier
from faceverify.images import load_image
from faceverify.video import VideoIdentifier
from tools.common import PeerFailed
from tools.dlib_peer import dlib_models_dir
from tools.real_video import REFERENCES, STAGE, STREET, real_video_root, wrong_name

CLIPS = {"stage (640x360)": STAGE, "street (1920x1080)": STREET}
TOLERANCE = 0.6


class FaceRecognitionWay:
    """face_recognition's video recipe on dlib: every face of every frame described and matched to references."""

    def __init__(self, root: Path):
        import dlib

        models = dlib_models_dir()
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.recognizer = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        names, vectors = [], []
        for name, photos in REFERENCES.items():
            for photo in photos:
                found = self.describe(load_image(root / photo))
                if len(found):
                    names.append(name)
                    vectors.append(found[0])
        if len(set(names)) < len(REFERENCES) - 2:
            raise PeerFailed("face_recognition (dlib)", f"found faces in the photos of only {sorted(set(names))}")
        self.names, self.references = names, np.stack(vectors)

    def describe(self, rgb: np.ndarray) -> np.ndarray:
        rects = self.detector(rgb, 1)
        shapes = [self.predictor(rgb, r) for r in rects]
        return np.array([np.asarray(self.recognizer.compute_face_descriptor(rgb, s, 1)) for s in shapes])

    def run(self, root: Path, clip: str) -> dict:
        video = root / clip
        capture = cv2.VideoCapture(str(video))
        frames, faces, names, wrong = 0, 0, Counter(), Counter()
        start = time.perf_counter()
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames += 1
            for vector in self.describe(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)):
                faces += 1
                distance = np.linalg.norm(self.references - vector, axis=1)
                if distance.min() <= TOLERANCE:
                    name = self.names[int(distance.argmin())]
                    names[name] += 1
                    wrong[name] += wrong_name(clip, name, frames - 1)
        seconds = time.perf_counter() - start
        if faces == 0:
            raise PeerFailed("face_recognition (dlib)", f"described no face in {video.name}")
        return dict(frames=frames, fps=frames / seconds, faces=faces, names=dict(names), wrong=+wrong)


def ours(verifier: FaceVerifier, gallery: Path, root: Path, clip: str) -> dict:
    with verifier.open_gallery(gallery) as store:
        identifier = VideoIdentifier(verifier, store)
        start = time.perf_counter()
        with identifier.run(str(root / clip)) as run:
            events = [e.to_dict() for result in run for e in result.events]
        seconds = time.perf_counter() - start
        summary = run.summary().to_dict()
    names = Counter(e["name"] for e in events if e["name"])
    wrong = Counter(e["name"] for e in events if e["name"] and wrong_name(clip, e["name"], e["frame"]))
    return dict(frames=summary["frames"], fps=summary["frames"] / seconds, detections=summary["detections"],
                tracks=len(summary["tracks"]), names=dict(names), wrong=wrong)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=None, help="the real-video folder (default: $FACEVERIFY_REAL_VIDEO "
                        "or ../shared/datasets/real-video)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)
    args.root = args.root or real_video_root()
    cv2.setNumThreads(args.threads)
    verifier = FaceVerifier(args.model, "cpu", threads=args.threads)
    peer = FaceRecognitionWay(args.root)
    with tempfile.TemporaryDirectory() as tmp:
        gallery = Path(tmp) / "gallery.sqlite"
        with verifier.open_gallery(gallery) as store:
            for name, photos in REFERENCES.items():
                verifier.enroll(store, name, [args.root / p for p in photos])
        print(f"model {verifier.card.name}, {args.threads} thread(s); names shown as name: face-frames")
        for clip, rel in CLIPS.items():
            mine, theirs = ours(verifier, gallery, args.root, rel), peer.run(args.root, rel)
            for side, row in (("faceverify", mine), ("face_recognition (dlib)", theirs)):
                wrong = ", ".join(f"{n}: {k}" for n, k in sorted(row["wrong"].items()))
                print(f"{clip:<20} {side:<24} {row['fps']:7.1f} fps  named {row['names'] or 'nobody'}"
                      f"{'  WRONG (not on screen): ' + wrong if wrong else ''}")
            print(f"{clip:<20} ratio faceverify / dlib: {mine['fps'] / theirs['fps']:.1f}x the frame rate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
