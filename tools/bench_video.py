"""Benchmark identity-safe video identification on generated 640x480 videos of every hard case, against the same
run's per-frame baseline (detect and embed every frame).

    python tools/bench_video.py [--videos 63] [--first-seed 0] [--baseline-videos 2] [--no-recheck-videos 7]
                                [--threads 1] [--match template|best] [--detector mtcnn|mtcnn-onnx|yunet]

Videos cycle through tools.video_cases.CASES (walk, cuts, swap, cross, occlude, lighting, degrade) by seed,
seeds first-seed .. first-seed+N-1; each gallery holds the enrolled people shown plus distractors. Every
face-frame is scored: an event box is given to the ground-truth face it overlaps (IoU >= 0.3); a name on a face that is not that person's is a
wrong-name face-frame, the figure that must be 0. Per appearance: an enrolled one is named right when its own
name is shown on it and no other name ever is; a never-enrolled one must never be named. Time to a name counts
from the appearance's first visible frame. ``--no-recheck-videos`` reruns the first videos with identity
re-checking off (``VideoSettings(recheck=False)``) to show what it costs. Videos go to a temporary directory (or
--workdir) and are never committed: they are made from LFW.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch

from faceverify.api import FaceVerifier
from faceverify.detect import make_detector
from faceverify.video import VideoIdentifier, VideoSettings
from faceverify.video.tracking import iou_matrix
from tools.common import lfw_root
from tools.video_cases import CASES, make_case

IOU = 0.3


def _who(truth: dict, frame: int, box: list[float]) -> int | None:
    """Index of the appearance whose ground-truth box in ``frame`` best overlaps ``box`` (IoU >= 0.3)."""
    best, best_iou = None, IOU
    for i, p in enumerate(truth["people"]):
        tb = p["boxes"].get(str(frame))
        if tb is not None:
            v = float(iou_matrix(np.array(box), np.array(tb))[0, 0])
            if v >= best_iou:
                best, best_iou = i, v
    return best


def score(truth: dict, labels: list[tuple[int, list[float], str | None]]) -> dict:
    """Per-frame and per-appearance figures from (frame, box, shown name) labels."""
    people = truth["people"]
    shown: dict[int, list[tuple[int, str | None]]] = defaultdict(list)
    c = Counter()
    for frame, box, name in labels:
        who = _who(truth, frame, box)
        if who is None:
            c["named_off_face"] += name is not None
            continue
        shown[who].append((frame, name))
        c["face_frames_named"] += name is not None
        c["wrong_face_frames"] += name is not None and name != people[who]["name"]
    delays = []
    for i, p in enumerate(people):
        names = {n for _, n in shown[i] if n is not None}
        kind = "enrolled" if p["enrolled"] else "stranger"
        c[f"{kind}_appearances"] += 1
        if p["enrolled"]:
            right = names == {p["name"]}
            c["enrolled_named_right"] += right
            if right:
                delays.append((min(f for f, n in shown[i] if n == p["name"]) - p["first_frame"]) / truth["fps"])
        else:
            c["strangers_named"] += bool(names)
        c["face_frames"] += len(p["boxes"])
    return dict(c, delays=delays)


def run_tracked(fv: FaceVerifier, gallery, video: Path, settings: VideoSettings) -> tuple[dict, list, list]:
    identifier = VideoIdentifier(fv, gallery, settings=settings)
    labels, ends = [], []
    with identifier.run(str(video)) as run:
        for result in run:
            labels += [(e.frame, e.box, e.name) for e in result.events]
            ends += [e.ended for e in result.ended]
    return run.summary().to_dict(), labels, ends


def run_baseline(fv: FaceVerifier, gallery, video: Path, threshold: float) -> tuple[dict, list]:
    """Detect (full frame, the pipeline's detector) and embed every face of every frame; label each alone."""
    point = fv.identification_point(gallery, threshold=threshold)
    cap = cv2.VideoCapture(str(video))
    labels, frames = [], 0
    start = time.perf_counter()
    while True:
        ok, image = cap.read()
        if not ok:
            break
        faces = fv.pipeline.process_images([cv2.cvtColor(image, cv2.COLOR_BGR2RGB)], face="all")[0]
        if faces:
            decisions = fv.identify_embeddings(gallery, np.stack([f.embedding for f in faces]), point)
            labels += [(frames, f.box, name) for f, (name, _, _) in zip(faces, decisions)]
        frames += 1
    cap.release()
    return dict(frames=frames, seconds=time.perf_counter() - start), labels


def _total(rows: list[dict]) -> Counter:
    total = Counter()
    delays: list[float] = []
    for r in rows:
        total.update({k: v for k, v in r.items() if isinstance(v, (int, float))})
        delays += r.get("delays", [])
    total["median_delay"] = float(np.median(delays)) if delays else float("nan")
    return total


def _pct(a: float, b: float) -> str:
    return f"{a:.0f}/{b:.0f} ({100 * a / b:.1f}%)" if b else "-"


def table(rows: list[tuple[str, Counter]]) -> str:
    out = ["| method | videos | frames | fps | wrong-name face-frames | never-enrolled appearances named | "
           "enrolled appearances named right | median s to a name | named boxes on no face |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, c in rows:
        out.append(f"| {label} | {c['videos']:.0f} | {c['frames']:.0f} | {c['frames'] / c['seconds']:.1f} | "
                   f"{c['wrong_face_frames']:.0f} of {c['face_frames_named']:.0f} named | "
                   f"{_pct(c['strangers_named'], c['stranger_appearances'])} | "
                   f"{_pct(c['enrolled_named_right'], c['enrolled_appearances'])} | {c['median_delay']:.2f} | "
                   f"{c['named_off_face']:.0f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", type=Path, default=None)
    ap.add_argument("--videos", type=int, default=63)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed+videos-1")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated cases to cycle through")
    ap.add_argument("--baseline-videos", type=int, default=2, help="videos the (slow) baseline also runs on")
    ap.add_argument("--no-recheck-videos", type=int, default=7, help="videos also run without re-checking")
    ap.add_argument("--match", default="best", choices=["best", "template"], help="VideoSettings.match")
    ap.add_argument("--detector", default="mtcnn", choices=["mtcnn", "mtcnn-onnx", "yunet"],
                    help="the video detector (the baseline uses it too)")
    ap.add_argument("--threads", type=int, default=1, help="threads (torch and ONNX Runtime) for every method")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the videos here (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="also print the raw figures as JSON")
    args = ap.parse_args(argv)
    root = lfw_root(args.lfw)
    cases = args.cases.split(",")
    torch.set_num_threads(args.threads)
    fv = FaceVerifier(device="cpu", detector=args.detector, threads=args.threads)
    maker = make_detector("yunet")  # the videos are the same whichever detector is measured
    load_before = os.getloadavg()
    rows: dict[str, list[dict]] = defaultdict(list)
    per_case: dict[str, list[dict]] = defaultdict(list)
    endings = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        for k, seed in enumerate(range(args.first_seed, args.first_seed + args.videos)):
            case = cases[seed % len(cases)]
            video = work / f"{case}-{seed}.mp4"
            truth = json.loads(make_case(case, root, video, seed, maker).read_text())
            with fv.open_gallery(work / f"{case}-{seed}.sqlite") as gallery:
                for name, paths in truth["gallery"].items():
                    for failure in fv.enroll(gallery, name, paths, skip_bad=True).failures:
                        print(f"{case} {seed}: not enrolled: {failure}", file=sys.stderr)
                summary, labels, ends = run_tracked(fv, gallery, video, VideoSettings(torch_threads=None, match=args.match))
                endings.update(ends)
                row = dict(score(truth, labels), frames=summary["frames"], seconds=summary["seconds"], videos=1)
                rows["tracked, identity re-checked (the product)"].append(row)
                per_case[case].append(row)
                print(f"{case} {seed}: {summary['fps']:.1f} fps, {summary['scene_changes']} scene changes, "
                      f"{summary['breaks']} breaks; {json.dumps({k: v for k, v in row.items() if k != 'delays'})}",
                      file=sys.stderr)
                if k < args.no_recheck_videos:
                    rows["  the same videos, re-checked"].append(row)
                    s2, l2, _ = run_tracked(fv, gallery, video, VideoSettings(torch_threads=None, recheck=False, match=args.match))
                    rows["  the same videos, re-checking off"].append(
                        dict(score(truth, l2), frames=s2["frames"], seconds=s2["seconds"], videos=1))
                if k < args.baseline_videos:
                    rows["  baseline's videos, tracked"].append(row)
                    b, bl = run_baseline(fv, gallery, video, summary["threshold"])  # the same threshold
                    rows["  baseline: detect + embed every frame"].append(dict(score(truth, bl), **b, videos=1))
    if args.baseline_videos and not rows.get("  baseline: detect + embed every frame"):
        raise SystemExit("the baseline did not run: no figures to compare against")
    load_after = os.getloadavg()
    print(f"torch threads {args.threads}; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, "
          f"on {os.cpu_count()} CPUs; track endings: {dict(endings)}\n")
    print(table([(k, _total(v)) for k, v in rows.items()]))
    print()
    print(table([(f"case: {k}", _total(v)) for k, v in per_case.items()]))
    if args.json:
        print(json.dumps({k: v for k, v in rows.items()}, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
