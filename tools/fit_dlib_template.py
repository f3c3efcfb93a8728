"""Fit the alignment template that puts MTCNN's 5 landmarks where dlib's face chips put those facial points.

    python tools/fit_dlib_template.py [--lfw ROOT] [--limit 1000] [--check 50] [--card models/dlib-resnet-v1.json]

The imported dlib ResNet was trained on dlib's chips (5-point shape, get_face_chip size 150, padding 0.25), so
its template must map MTCNN's landmarks onto where those chips show the eyes, nose tip and mouth corners. For
the first image of each LFW DevTrain person (peopleDevTrain.txt order) where dlib and MTCNN find the same
face, dlib's exact image -> chip transform is recovered by running get_face_chip on two float64 "coordinate
images" (pixel value = its x, resp. y) and fitting an affine map chip -> image by least squares (bilinear
interpolation of a linear ramp is exact), then inverting it. MTCNN's landmarks mapped through it give one
sample of the template per image; the template is their mean.

A sanity check on the next ``--check`` usable DevTrain people (not used in the fit) aligns with
faceverify.align.align_face and compares with dlib's chip: geometry, pixels, and descriptors (dlib's network,
and ours when the card's weights load). The template and a ``template_fit`` provenance entry are then written
into the model card, waiting for the card to appear if needed.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np

from faceverify.align import align_face, similarity_transform
from faceverify.detect import Detector, select_faces
from faceverify.embed import Embedder
from faceverify.eval.pairs import lfw_image_dir, lfw_image_path, read_lfw_people
from faceverify.images import load_image
from faceverify.modelcard import ModelCard
from tools.common import REPO_ROOT, lfw_root
from tools.dlib_peer import CHIP_PADDING, CHIP_SIZE, DlibPipeline, cosine

DEFAULT_CARD = REPO_ROOT / "models" / "dlib-resnet-v1.json"
POINTS = ("left eye", "right eye", "nose", "left mouth", "right mouth")
MAX_CENTRE_OFFSET = 0.35
"""Largest distance between dlib's and MTCNN's box centres, as a fraction of dlib's box width, for one face."""
MAX_CHIP_FIT_ERROR = 1e-3
"""Largest residual (image pixels) of the chip -> image affine fit; anything larger is not dlib's plain warp."""
BATCH = 32


@dataclass
class Sample:
    """One image where dlib and MTCNN agree: dlib's shape, MTCNN's landmarks and dlib's image -> chip map."""

    path: Path
    shape: dlib.full_object_detection
    landmarks: np.ndarray
    to_chip: np.ndarray

    @property
    def in_chip(self) -> np.ndarray:
        """MTCNN's landmarks in dlib chip coordinates."""
        return apply_affine(self.to_chip, self.landmarks)


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def invert_affine(m: np.ndarray) -> np.ndarray:
    inv = np.linalg.inv(m[:, :2])
    return np.hstack([inv, -inv @ m[:, 2:]])


def chip_to_image(image_shape: tuple[int, ...], shape: dlib.full_object_detection) -> tuple[np.ndarray, float]:
    """dlib's chip -> image affine map for ``shape`` (2 x 3) and the largest fit residual in image pixels.

    Chip pixels whose source lies within 2 pixels of the image border are left out: dlib paints samples that
    need pixels outside the image black.
    """
    h, w = image_shape[:2]
    xs = np.broadcast_to(np.arange(w, dtype=np.float64), (h, w)).copy()
    ys = np.broadcast_to(np.arange(h, dtype=np.float64)[:, None], (h, w)).copy()
    cx = dlib.get_face_chip(xs, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
    cy = dlib.get_face_chip(ys, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
    v, u = np.mgrid[0:CHIP_SIZE, 0:CHIP_SIZE]
    inside = (cx >= 2) & (cx <= w - 3) & (cy >= 2) & (cy <= h - 3)
    if inside.sum() < 100:
        return np.full((2, 3), np.nan), np.inf
    a = np.stack([u[inside], v[inside], np.ones(int(inside.sum()))], 1).astype(np.float64)
    b = np.stack([cx[inside], cy[inside]], 1)
    sol = np.linalg.lstsq(a, b, rcond=None)[0]
    return sol.T, float(np.abs(a @ sol - b).max())


def collect(
    paths: list[Path], pipeline: DlibPipeline, detector: Detector, wanted: int | None, skipped: Counter
) -> list[Sample]:
    """Samples from ``paths`` in order (up to ``wanted``); reasons for skipping an image are counted."""
    samples: list[Sample] = []
    for start in range(0, len(paths), BATCH):
        chunk = paths[start : start + BATCH]
        images = [load_image(p) for p in chunk]
        for path, img, faces in zip(chunk, images, detector.detect(images)):
            if wanted is not None and len(samples) >= wanted:
                return samples
            shape = pipeline.shape(img)
            if shape is None:
                skipped["dlib found no face"] += 1
                continue
            if not faces:
                skipped["MTCNN found no face"] += 1
                continue
            face = select_faces(faces, img.shape, "largest")[0]
            centre = shape.rect.dcenter()
            offset = np.hypot((face.box[0] + face.box[2]) / 2 - centre.x, (face.box[1] + face.box[3]) / 2 - centre.y)
            if offset > MAX_CENTRE_OFFSET * shape.rect.width():
                skipped["dlib and MTCNN chose different faces"] += 1
                continue
            to_image, error = chip_to_image(img.shape, shape)
            if error > MAX_CHIP_FIT_ERROR:
                skipped["chip transform not recovered"] += 1
                continue
            samples.append(Sample(path, shape, face.landmarks.astype(np.float64), invert_affine(to_image)))
    return samples


def misalignment(samples: list[Sample], template: np.ndarray) -> np.ndarray:
    """Per image: mean distance (chip pixels, over the chip grid) between align_face's warp and dlib's."""
    v, u = np.mgrid[0:CHIP_SIZE, 0:CHIP_SIZE]
    grid = np.stack([u.ravel(), v.ravel()], 1).astype(np.float64)
    out = []
    for s in samples:
        ours = similarity_transform(s.landmarks, template)
        moved = apply_affine(ours, apply_affine(invert_affine(s.to_chip), grid))
        out.append(np.linalg.norm(moved - grid, axis=1).mean())
    return np.array(out)


def fit_template(samples: list[Sample]) -> dict:
    """The template (mean of the mapped landmarks) and how tightly the samples gather around it."""
    pts = np.stack([s.in_chip for s in samples])  # N x 5 x 2
    mean, median = pts.mean(0), np.median(pts, 0)
    dist = np.linalg.norm(pts - mean, axis=2)  # N x 5
    return {
        "template": mean,
        "median": median,
        "std": pts.std(0),
        "residual": float(dist.mean()),
        "residual_per_point": dist.mean(0),
        "misalignment": misalignment(samples, mean),
    }


def check(
    samples: list[Sample], images: list[np.ndarray], template: np.ndarray, pipeline: DlibPipeline,
    chips: np.ndarray, reference: np.ndarray,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Compare align_face crops with dlib's chips (and their dlib descriptors); returns figures and the crops."""
    crops = np.stack([align_face(img, s.landmarks, template, CHIP_SIZE) for img, s in zip(images, samples)])
    ours = pipeline.descriptors(list(crops))
    figures = {
        "misalignment_px": misalignment(samples, template),
        "pixel_mad": np.abs(crops.astype(np.float64) - chips).mean(axis=(1, 2, 3)),
        "dlib_net_cosine": np.array([cosine(a, b) for a, b in zip(ours, reference)]),
        "dlib_net_distance": np.linalg.norm(ours - reference, axis=1),
    }
    return figures, crops


def interpolation_floor(samples: list[Sample], images: list[np.ndarray], chips: np.ndarray) -> np.ndarray:
    """Pixel MAD between dlib's chips and dlib's own transform rendered by OpenCV: only interpolation differs."""
    size = (CHIP_SIZE, CHIP_SIZE)
    warped = np.stack([cv2.warpAffine(img, s.to_chip, size, flags=cv2.INTER_LINEAR) for img, s in zip(images, samples)])
    return np.abs(warped.astype(np.float64) - chips).mean(axis=(1, 2, 3))


def embedder_check(card_path: Path, crops: np.ndarray, chips: np.ndarray, reference: np.ndarray) -> dict | None:
    """Cosine between our model's embeddings and dlib's descriptors of dlib's chips; None if the model won't load."""
    try:
        embedder = Embedder.load(str(card_path), device="cpu")
    except Exception as exc:  # the weights or the network may not be ready yet: this check is optional
        print(f"our model: skipped ({type(exc).__name__}: {exc})")
        return None
    ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    on_crops = (embedder.embed(crops) * ref).sum(1)
    on_chips = (embedder.embed(chips) * ref).sum(1)
    return {"our_model_on_our_crop": on_crops, "our_model_on_dlib_chip": on_chips}


def write_card(path: Path, template: np.ndarray, record: dict) -> None:
    """Set the card's template and its ``template_fit`` provenance; the card is re-read first, so that fields
    others changed meanwhile are kept."""
    card = ModelCard.load(path)
    card.template = [[round(float(x), 3), round(float(y), 3)] for x, y in template]
    card.provenance["template_fit"] = record
    card.validate(str(path))
    card.save(path)


def wait_for(path: Path, minutes: float, poll_s: float = 60.0) -> bool:
    deadline = time.monotonic() + minutes * 60
    while not path.exists():
        if time.monotonic() >= deadline:
            return False
        print(f"waiting for {path} ...", flush=True)
        time.sleep(poll_s)
    return True


def summary(values: np.ndarray) -> dict[str, float]:
    return {"mean": round(float(np.mean(values)), 4), "median": round(float(np.median(values)), 4),
            "min": round(float(np.min(values)), 4), "max": round(float(np.max(values)), 4)}


def fmt(values: np.ndarray) -> str:
    s = summary(values)
    return f"mean {s['mean']:.4f}  median {s['median']:.4f}  min {s['min']:.4f}  max {s['max']:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=Path, help="LFW root (default: $FACEVERIFY_LFW or the shared copy)")
    parser.add_argument("--limit", type=int, default=1000, help="DevTrain people (first images) tried for the fit")
    parser.add_argument("--check", type=int, default=50, help="held-out images for the sanity check")
    parser.add_argument("--card", type=Path, default=DEFAULT_CARD, help="model card to write the template into")
    parser.add_argument("--wait-minutes", type=float, default=40.0, help="how long to wait for the card to appear")
    args = parser.parse_args(argv)
    root = lfw_root(args.lfw)

    images = lfw_image_dir(root)
    people = read_lfw_people(root / "peopleDevTrain.txt")
    paths = [images / lfw_image_path(name, 1) for name, _ in people]
    pipeline, detector = DlibPipeline(), Detector(device="cpu")

    skipped: Counter = Counter()
    samples = collect(paths[: args.limit], pipeline, detector, None, skipped)
    held_out = collect(paths[args.limit :], pipeline, detector, args.check, Counter())
    fit = fit_template(samples)
    template = fit["template"]

    print(f"fit: {len(samples)} of {min(args.limit, len(paths))} DevTrain images; skipped: {dict(skipped) or 'none'}")
    print(f"{'point':<12} {'mean x':>8} {'mean y':>8} {'median x':>9} {'median y':>9} {'std x':>6} {'std y':>6} "
          f"{'resid':>6}")
    for k, name in enumerate(POINTS):
        (mx, my), (dx, dy), (sx, sy) = template[k], fit["median"][k], fit["std"][k]
        print(f"{name:<12} {mx:8.3f} {my:8.3f} {dx:9.3f} {dy:9.3f} {sx:6.2f} {sy:6.2f} {fit['residual_per_point'][k]:6.2f}")
    print(f"residual (mean distance of mapped MTCNN points to the template): {fit['residual']:.3f} chip px")
    print(f"mean minus median: max {np.abs(template - fit['median']).max():.3f} px")
    print(f"misalignment on the fit images (align_face's warp vs dlib's, chip px): {fmt(fit['misalignment'])}")

    have_card = wait_for(args.card, args.wait_minutes)
    card = ModelCard.load(args.card) if have_card else None
    templates = {"fitted": template}
    if card is not None:
        templates["card's previous"] = np.asarray(card.template, np.float64)
    held_images = [load_image(s.path) for s in held_out]
    chips = np.stack([pipeline.chip(img, s.shape) for img, s in zip(held_images, held_out)])
    reference = pipeline.descriptors(list(chips))
    print(f"sanity check on {len(held_out)} held-out DevTrain images (ours = align_face crop, dlib = dlib's chip):")
    figures: dict[str, dict[str, np.ndarray]] = {}
    crops: dict[str, np.ndarray] = {}
    for name, tmpl in templates.items():
        figures[name], crops[name] = check(held_out, held_images, tmpl, pipeline, chips, reference)
        for key, values in figures[name].items():
            print(f"  {name + ' template':<26} {key:<18} {fmt(values)}")
    floor = interpolation_floor(held_out, held_images, chips)
    print(f"  {'interpolation floor':<26} {'pixel_mad':<18} {fmt(floor)}")
    check_record = {
        "images": len(held_out),
        "misalignment_px": summary(figures["fitted"]["misalignment_px"]),
        "pixel_mad_vs_dlib_chip": summary(figures["fitted"]["pixel_mad"]),
        "pixel_mad_interpolation_floor": summary(floor),
        "dlib_net_cosine_our_crop_vs_dlib_chip": summary(figures["fitted"]["dlib_net_cosine"]),
        "dlib_net_distance_our_crop_vs_dlib_chip": summary(figures["fitted"]["dlib_net_distance"]),
    }
    if card is None:
        print(f"{args.card} did not appear within {args.wait_minutes:g} minutes: template not written")
        return 1

    ours = embedder_check(args.card, crops["fitted"], chips, reference)
    for key, values in (ours or {}).items():
        print(f"  {'our model, ' + key:<45} {fmt(values)}")
        check_record[f"cosine_to_dlib_descriptor_{key}"] = summary(values)

    record = {
        "command": shlex.join(["python", "tools/fit_dlib_template.py", *(sys.argv[1:] if argv is None else argv)]),
        "data": "LFW DevTrain: first image of each person in peopleDevTrain.txt order",
        "images": len(samples),
        "skipped": dict(skipped),
        "method": "mean of MTCNN landmarks mapped by dlib's exact image->chip transform "
                  f"(get_face_chip size {CHIP_SIZE}, padding {CHIP_PADDING}, 5-point shape, HOG detector)",
        "residual_px": round(fit["residual"], 3),
        "point_std_px": [[round(float(x), 3), round(float(y), 3)] for x, y in fit["std"]],
        "check": check_record,
    }
    write_card(args.card, template, record)
    print(f"template written to {args.card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
