"""A camera-domain copy of LFW: every image passed through one fixed, seeded transform that imitates a cheap
infrared night camera, written with LFW's layout and protocol files so that every command takes it as an LFW root.

    python tools/lfw_camera.py [--lfw DIR] [--out DIR] [--seed 0]

The transform (per image, parameters drawn from a generator seeded by the seed and the image's name):

1. infrared-like greyscale: a channel mix that weighs red most (skin is bright in near infrared), luma only;
2. low light: a gamma of 1.5-1.9, gain 0.40-0.55 and a black level of 8-16 (dark, low contrast);
3. downscale: the 250 px image shrunk by 0.38 (area averaging), so that an LFW face (about 105 px) is about 40;
4. sensor noise at that size: Gaussian, sigma 5-8 grey levels, plus shot noise growing with brightness;
5. JPEG quality 30, saved as a one-channel JPEG.

The copy goes under the user cache dir (``faces/../lfw-camera-s<seed>``) unless --out says otherwise. It is made
from LFW: never commit it. The default is written once; a rerun with the same seed skips images already there.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

import cv2
import numpy as np

from faceverify.eval.cache import default_cache_dir
from faceverify.eval.pairs import lfw_image_dir
from tools.common import lfw_root

SCALE = 0.38
JPEG_QUALITY = 30
PROTOCOL_FILES = ("pairs.txt", "pairsDevTest.txt", "pairsDevTrain.txt", "peopleDevTest.txt", "peopleDevTrain.txt")


def image_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of one image's draws: the same for a name and seed on every machine."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def camera(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The camera-domain version of an H x W x 3 uint8 RGB image: H*SCALE x W*SCALE uint8 grey, before JPEG."""
    red = rng.uniform(0.50, 0.65)
    mix = np.array([red, 0.85 * (1 - red), 0.15 * (1 - red)])
    grey = rgb.astype(np.float64) @ (mix / mix.sum()) / 255.0
    gamma, gain, black = rng.uniform(1.5, 1.9), rng.uniform(0.40, 0.55), rng.uniform(8, 16)
    dark = black + 255.0 * gain * grey**gamma
    h, w = dark.shape
    small = cv2.resize(dark, (round(w * SCALE), round(h * SCALE)), interpolation=cv2.INTER_AREA)
    sigma = rng.uniform(5, 8)
    noisy = small + rng.normal(0, 1, small.shape) * np.sqrt(sigma**2 + 0.6 * small)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def write_camera_copy(root: Path, out: Path, seed: int) -> int:
    """Write the camera-domain copy of every image below ``root``'s image folder; returns how many were new."""
    source = lfw_image_dir(root)
    written = 0
    for path in sorted(source.glob("*/*.jpg")):
        target = out / "lfw" / path.parent.name / path.name
        if target.exists():
            continue
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"error: {path}: unreadable")
        grey = camera(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), image_rng(seed, path.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        ok, data = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise SystemExit(f"error: {path}: JPEG encoding failed")
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(data.tobytes())
        tmp.replace(target)
        written += 1
    for name in PROTOCOL_FILES:
        if (root / name).exists():
            shutil.copyfile(root / name, out / name)
    return written


def default_out(seed: int) -> Path:
    return default_cache_dir() / f"lfw-camera-s{seed}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", type=Path, default=None, help="LFW root (default: $FACEVERIFY_LFW or the shared copy)")
    ap.add_argument("--out", type=Path, default=None, help="where the copy goes (default: under the user cache dir)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = args.out or default_out(args.seed)
    written = write_camera_copy(lfw_root(args.lfw), out, args.seed)
    print(f"{out}: {written} images written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
