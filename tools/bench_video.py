"""Benchmark video identification: speed and per-track accuracy on generated 640x480 videos, against the same
run's per-frame baseline (detect and embed every frame).

    python tools/bench_video.py [--videos 6] [--seconds 16] [--enrolled 3] [--strangers 3] [--baseline-videos 1]

Each video (built by faceverify.video_synth from LFW DevTest stills, seeds 0..N-1) shows 1 to 3 faces at a
time; its gallery holds the enrolled people plus distractors. A track is credited to the person whose ground-
truth box it overlaps (IoU >= 0.3) in most of its frames; it is right when an enrolled person gets their name
and a never-enrolled person ends `unknown`. The baseline has no tracks: each person's label is the majority of
their per-frame labels. Prints a Markdown table (and --json the raw figures). Videos go to a temporary
directory (or --workdir) and are never committed.
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
from faceverify.pairs import find_lfw_root
from faceverify.tracking import iou_matrix
from faceverify.video import VideoIdentifier, VideoSettings
from faceverify.video_synth import choose_cast, make_test_video

IOU = 0.3


def _truth_box(person: dict, frame: int) -> list[float] | None:
    return person["boxes"].get(str(frame))


def _who(truth: dict, frame: int, box: list[float]) -> int | None:
    """Index of the ground-truth person whose box in ``frame`` best overlaps ``box`` (IoU >= 0.3)."""
    best, best_iou = None, IOU
    for i, p in enumerate(truth["people"]):
        tb = _truth_box(p, frame)
        if tb is not None:
            v = float(iou_matrix(np.array(box), np.array(tb))[0, 0])
            if v >= best_iou:
                best, best_iou = i, v
    return best


def _right(person: dict, name: str | None, unknown: bool) -> bool:
    return name == person["name"] if person["enrolled"] else (name is None and unknown)


def evaluate_tracks(truth: dict, events: list[dict], summary: dict) -> dict:
    """Per-track outcomes of a VideoIdentifier run (events and summary as JSON dicts)."""
    people = truth["people"]
    by_track: dict[int, list[dict]] = defaultdict(list)
    for e in events:
        by_track[e["track"]].append(e)
    counts = Counter()
    tracks_per_person = Counter()
    changes = 0
    first_label_delay = []
    for t in summary["tracks"]:
        evs = by_track[t["id"]]
        votes = Counter(w for w in (_who(truth, e["frame"], e["box"]) for e in evs) if w is not None)
        if not votes or votes.most_common(1)[0][1] < 0.3 * len(evs):
            counts["spurious"] += 1
            counts["spurious_named"] += t["name"] is not None
            continue
        who = votes.most_common(1)[0][0]
        person = people[who]
        tracks_per_person[who] += 1
        labels = [(e["status"], e["name"]) for e in evs if e["status"] != "pending"]
        changes += sum(a != b for a, b in zip(labels, labels[1:]))
        decided = [e["frame"] for e in evs if e["status"] != "pending"]
        if decided:
            first_label_delay.append(decided[0] - max(person["first_frame"], evs[0]["frame"]))
        kind = "enrolled" if person["enrolled"] else "stranger"
        counts[f"{kind}_tracks"] += 1
        if t["status"] == "pending":
            counts[f"{kind}_pending"] += 1
        elif _right(person, t["name"], t["status"] == "unknown"):
            counts[f"{kind}_right"] += 1
        elif person["enrolled"] and t["name"] is not None:
            counts["enrolled_wrong_name"] += 1
    at: dict[int, list[dict]] = defaultdict(list)
    for e in events:
        at[e["frame"]].append(e)
    frame_right = frame_total = 0
    for i, p in enumerate(people):
        for f in map(int, p["boxes"]):
            frame_total += 1
            frame_right += any(
                _who(truth, f, e["box"]) == i and _right(p, e["name"], e["status"] == "unknown") for e in at[f]
            )
    return dict(counts, persons=len(people), persons_tracked=len(tracks_per_person),
                tracks_on_people=sum(tracks_per_person.values()), label_changes=changes,
                frame_right=frame_right, frame_total=frame_total, label_delays=first_label_delay)


def run_tracked(fv: FaceVerifier, gallery, video: Path, point_kw: dict) -> tuple[list[dict], dict]:
    identifier = VideoIdentifier(fv, gallery, settings=VideoSettings(torch_threads=None), **point_kw)
    events: list[dict] = []
    with identifier.run(str(video)) as run:
        for result in run:
            events.extend(e.to_dict() for e in result.events)
    return events, run.summary().to_dict()


def run_baseline(fv: FaceVerifier, gallery, video: Path, truth: dict, threshold: float) -> dict:
    """Detect (full frame, the pipeline's detector) and embed every face of every frame; label each alone."""
    point = fv.identification_point(gallery, threshold=threshold)
    cap = cv2.VideoCapture(str(video))
    per_person: dict[int, list[str | None]] = defaultdict(list)
    frame_right = frames = 0
    start = time.perf_counter()
    while True:
        ok, image = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        faces = fv.pipeline.process_images([rgb], face="all")[0]
        labels = []
        if faces:
            decisions = fv.identify_embeddings(gallery, np.stack([f.embedding for f in faces]), point)
            labels = [(f.box, name) for f, (name, _, _) in zip(faces, decisions)]
        for box, name in labels:
            who = _who(truth, frames, box)
            if who is not None:
                per_person[who].append(name)
                frame_right += _right(truth["people"][who], name, True)
        frames += 1
    seconds = time.perf_counter() - start
    cap.release()
    counts = Counter()
    changes = 0
    for who, names in per_person.items():
        person = truth["people"][who]
        kind = "enrolled" if person["enrolled"] else "stranger"
        counts[f"{kind}_tracks"] += 1
        majority = Counter(names).most_common(1)[0][0]
        counts[f"{kind}_right"] += _right(person, majority, True)
        counts["enrolled_wrong_name"] += person["enrolled"] and majority not in (None, person["name"])
        changes += sum(a != b for a, b in zip(names, names[1:]))
    frame_total = sum(len(p["boxes"]) for p in truth["people"])
    return dict(counts, frames=frames, seconds=seconds, label_changes=changes, frame_right=frame_right,
                frame_total=frame_total, persons=len(truth["people"]), persons_tracked=len(per_person),
                tracks_on_people=len(per_person))


def _sum(rows: list[dict]) -> Counter:
    total = Counter()
    delays: list[int] = []
    for r in rows:
        total.update({k: v for k, v in r.items() if isinstance(v, (int, float))})
        delays.extend(r.get("label_delays", []))
    if delays:
        total["median_label_delay"] = float(np.median(delays))
    return total


def _pct(a: float, b: float) -> str:
    return f"{a:.0f}/{b:.0f} ({100 * a / b:.1f}%)" if b else "-"


def table(ours: Counter, base: Counter, ours_on_base: Counter) -> str:
    rows = [
        ("tracked (adaptive detection + flow)", ours),
        ("  the same, on the baseline's videos only", ours_on_base),
        ("baseline: detect + embed every frame", base),
    ]
    out = ["| method | frames | fps | enrolled tracks named right | never-enrolled tracks given a name | "
           "wrong-name tracks | undecided tracks | tracks per person | label changes | frames labelled right | "
           "frames to a label (median) |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, c in rows:
        if not c:
            continue
        fps = c["frames"] / c["seconds"]
        strangers_named = c["stranger_tracks"] - c["stranger_right"] - c["stranger_pending"]
        delay = f"{c['median_label_delay']:.0f}" if "median_label_delay" in c else "-"
        out.append(
            f"| {label} | {c['frames']:.0f} | {fps:.1f} | {_pct(c['enrolled_right'], c['enrolled_tracks'])} | "
            f"{_pct(strangers_named, c['stranger_tracks'])} | {c['enrolled_wrong_name']:.0f} | "
            f"{c['enrolled_pending'] + c['stranger_pending']:.0f} | "
            f"{c['tracks_on_people'] / max(c['persons_tracked'], 1):.2f} | {c['label_changes']:.0f} | "
            f"{_pct(c['frame_right'], c['frame_total'])} | {delay} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", type=Path, default=None)
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=16.0)
    ap.add_argument("--enrolled", type=int, default=3)
    ap.add_argument("--strangers", type=int, default=3)
    ap.add_argument("--distractors", type=int, default=6)
    ap.add_argument("--baseline-videos", type=int, default=1, help="videos the (slow) baseline also runs on")
    ap.add_argument("--far", type=float, default=None)
    ap.add_argument("--threshold", type=float, default=None)
    ap.add_argument("--fpir", type=float, default=None, help="open-set target (default: the product's, 1e-2)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both methods")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the videos here (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="also print the raw figures as JSON")
    args = ap.parse_args(argv)
    root = find_lfw_root(args.lfw)
    if root is None:
        raise SystemExit("LFW not found: pass --lfw DIR or set FACEVERIFY_LFW")
    torch.set_num_threads(args.threads)
    point_kw = dict(far=args.far, threshold=args.threshold, fpir=args.fpir)
    fv = FaceVerifier(device="cpu")
    points = set()
    load_before = os.getloadavg()
    ours, base, ours_on_base = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        for seed in range(args.videos):
            actors, cast = choose_cast(root, args.enrolled, args.strangers, args.distractors, seed)
            video = work / f"bench-{seed}.mp4"
            truth = json.loads(make_test_video(actors, video, args.seconds, seed=seed, gallery=cast,
                                               detector=fv.pipeline.detector).read_text())
            with fv.open_gallery(work / f"bench-{seed}.sqlite") as gallery:
                for name, paths in truth["gallery"].items():
                    fv.enroll(gallery, name, paths, skip_bad=True)
                events, summary = run_tracked(fv, gallery, video, point_kw)
                points.add((summary["threshold"], summary["far"], summary["fpir"]))
                row = evaluate_tracks(truth, events, summary)
                row.update(frames=summary["frames"], seconds=summary["seconds"], detections=summary["detections"],
                           embeddings=summary["embeddings"])
                ours.append(row)
                print(f"video {seed}: {summary['frames']} frames at {summary['fps']:.1f} fps, "
                      f"{summary['detections']} detections, {summary['embeddings']} embeddings; {dict(row)}",
                      file=sys.stderr)
                if seed < args.baseline_videos:
                    ours_on_base.append(row)
                    b = run_baseline(fv, gallery, video, truth, summary["threshold"])  # the same threshold
                    base.append(b)
                    print(f"  baseline: {b['frames']} frames at {b['frames'] / b['seconds']:.2f} fps; {dict(b)}",
                          file=sys.stderr)
    load_after = os.getloadavg()
    t_ours, t_base, t_ob = _sum(ours), _sum(base), _sum(ours_on_base)
    described = "; ".join(f"threshold {t:.4f} (FAR {f:.2g}, FPIR <= {b:.2g})" for t, f, b in sorted(points))
    print(f"{described}; torch threads {args.threads}; "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, on {os.cpu_count()} CPUs\n")
    print(table(t_ours, t_base, t_ob))
    if args.json:
        print(json.dumps(dict(ours=ours, baseline=base, points=[dict(threshold=t, far=f, fpir=b) for t, f, b in sorted(points)],
                              load=[load_before, load_after]), default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
