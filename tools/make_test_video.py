"""Build a synthetic test video from LFW DevTest stills, with its ground truth beside it.

    python tools/make_test_video.py OUT.mp4 [--enrolled 2] [--strangers 1] [--distractors 6] [--seconds 8]

People walk into a 640x480 scene, move, scale and walk out; OUT.json records, per person, the name, whether
enrolled, the frame span and per-frame face boxes, plus the gallery to enroll (name -> images). Never commit
the output: it is derived from LFW.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from faceverify.errors import FaceverifyError
from faceverify.eval.pairs import find_lfw_root
from tools.video_synth import choose_cast, make_test_video


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="video to write (.mp4: mp4v, .avi: MJPG)")
    ap.add_argument("--lfw", type=Path, default=None, help="LFW root (default: $FACEVERIFY_LFW, ../shared/datasets/lfw)")
    ap.add_argument("--enrolled", type=int, default=2, help="people shown and enrolled")
    ap.add_argument("--strangers", type=int, default=1, help="people shown but never enrolled")
    ap.add_argument("--distractors", type=int, default=6, help="people enrolled but never shown")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    root = find_lfw_root(args.lfw)
    if root is None:
        raise SystemExit("LFW not found: pass --lfw DIR or set FACEVERIFY_LFW")
    try:
        actors, gallery = choose_cast(root, args.enrolled, args.strangers, args.distractors, args.seed)
        truth = make_test_video(actors, args.out, args.seconds, args.fps, seed=args.seed, gallery=gallery)
    except FaceverifyError as exc:
        raise SystemExit(f"make_test_video: {exc}") from None
    print(f"{args.out}\n{truth}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
