"""Synthetic test videos from still face images: people walk into a 640x480 scene, move, come closer and back,
and walk out; some are enrolled, some never. The ground truth (who, enrolled or not, the frames each is
visible, per-frame face boxes) is written as JSON beside the video, so accuracy and speed can be measured
without a camera. Used by ``tools/make_test_video.py``, the benchmark, the tests and the demo.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from faceverify.detect import Detector, select_faces
from faceverify.errors import FaceverifyError, NoFaceError
from faceverify.images import load_image
from faceverify.eval.pairs import lfw_image_dir, read_lfw_people
from faceverify.video.tracking import visible_fraction
from faceverify.video import open_video_writer

MIN_VISIBLE = 0.5
"""A face counts as in the scene (ground truth) in frames where at least this share of its box is visible."""


@dataclass
class Actor:
    """A person to put in the video: the still used, whether enrolled, and the images to enroll them from;
    ``held_up``: the whole still moves through the scene (a printed photo or a phone screen held to the camera, a
    presentation attack), not the head cut from it."""

    name: str
    image: Path
    enrolled: bool
    enroll_images: list[Path] = field(default_factory=list)
    held_up: bool = False


def choose_cast(
    lfw_root: Path, enrolled: int = 2, strangers: int = 1, distractors: int = 6, seed: int = 0
) -> tuple[list[Actor], dict[str, list[Path]]]:
    """Pick LFW DevTest people: ``enrolled`` shown and enrolled (image 1 in the video, images 2-4 enrolled),
    ``strangers`` shown but never enrolled, ``distractors`` enrolled but never shown. Returns the actors (in
    an order that interleaves enrolled and strangers) and the gallery to enroll (name -> images)."""
    images = lfw_image_dir(lfw_root)
    people = read_lfw_people(Path(lfw_root) / "peopleDevTest.txt")
    rng = random.Random(seed)
    many = sorted(n for n, c in people if c >= 4)
    others = sorted(n for n, c in people if c >= 1)
    if len(many) < enrolled:
        raise FaceverifyError(f"{lfw_root}: not enough DevTest people with 4+ images")
    shown = rng.sample(many, enrolled)
    rest = [n for n in others if n not in shown]
    strangers_names = rng.sample(rest, strangers)
    rest_set = set(rest) - set(strangers_names)
    distractor_names = rng.sample([n for n, c in people if c >= 2 and n in rest_set], distractors)

    def img(name: str, i: int) -> Path:
        return images / name / f"{name}_{i:04d}.jpg"

    known = [Actor(n, img(n, 1), True, [img(n, i) for i in (2, 3, 4)]) for n in shown]
    unknown = [Actor(n, img(n, 1), False) for n in strangers_names]
    actors = [a for pair in zip(known, unknown) for a in pair] + known[len(unknown):] + unknown[len(known):]
    gallery = {a.name: a.enroll_images for a in known}
    gallery.update({n: [img(n, 1), img(n, 2)] for n in distractor_names})
    return actors, gallery


def held_up_attacks(samples: Path) -> list[Actor]:
    """The two spoof samples of MiniFASNet's folder ``samples`` as presentation attacks: a printed photo
    ("poster") and a phone screen ("tablet") held up whole, each enrolled from its own image."""
    return [Actor(name, samples / image, True, [samples / image], held_up=True)
            for name, image in (("poster", "image_F1.jpg"), ("tablet", "image_F2.jpg"))]


@dataclass
class Sprite:
    """An actor's head cut from its still: BGR tile, soft alpha, and the face box within the tile."""

    tile: np.ndarray
    alpha: np.ndarray
    face: np.ndarray


def sprite(path: Path, detector: Detector, held_up: bool = False) -> Sprite:
    """The head of the face nearest the still's centre, with any other face in the still masked out (so the
    video holds no face missing from the ground truth); ``held_up``: the whole still, hard-edged, as a print or
    a screen shows it."""
    rgb = load_image(path)
    found = detector.detect_one(rgb)
    faces = select_faces(found, rgb.shape, "center")
    if not faces:
        raise NoFaceError(path)
    if held_up:
        h, w = rgb.shape[:2]
        return Sprite(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), np.ones((h, w), np.float32), faces[0].box.astype(np.float64))
    x1, y1, x2, y2 = faces[0].box
    cx, cy, side = (x1 + x2) / 2, (y1 + y2) / 2, 1.9 * max(x2 - x1, y2 - y1)
    ox, oy = int(round(cx - side / 2)), int(round(cy - side / 2))
    n = int(round(side))
    padded = cv2.copyMakeBorder(rgb, n, n, n, n, cv2.BORDER_REPLICATE)
    tile = cv2.cvtColor(padded[oy + n : oy + 2 * n, ox + n : ox + 2 * n], cv2.COLOR_RGB2BGR)
    alpha = np.zeros((n, n), np.float32)
    cv2.ellipse(alpha, (n // 2, n // 2), (int(n * 0.40), int(n * 0.47)), 0, 0, 360, 1.0, cv2.FILLED)
    for other in found:
        if other is not faces[0]:
            bx1, by1, bx2, by2 = other.box
            mx, my = 0.25 * (bx2 - bx1), 0.25 * (by2 - by1)
            corner1 = (int(bx1 - mx - ox), int(by1 - my - oy))
            corner2 = (int(bx2 + mx - ox), int(by2 + my - oy))
            cv2.rectangle(alpha, corner1, corner2, 0.0, cv2.FILLED)
    alpha = cv2.GaussianBlur(alpha, (0, 0), n * 0.04)
    return Sprite(tile, alpha, np.array([x1 - ox, y1 - oy, x2 - ox, y2 - oy], np.float64))


def background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A still 'room': a vertical gradient with a few soft-edged blocks of colour."""
    ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    top, bottom = rng.uniform(90, 200, 3), rng.uniform(40, 140, 3)
    img = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (height, width, 3)).copy()
    for _ in range(8):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(30, 200)), int(rng.integers(30, 200))
        cv2.rectangle(img, (x, y), (x + w, y + h), rng.uniform(30, 220, 3).tolist(), cv2.FILLED)
    return cv2.GaussianBlur(img, (0, 0), 2.0).astype(np.float32)


def _spans(count: int, frames: int, lanes: int) -> list[tuple[int, int, int]]:
    """(first, last, lane) of each actor: round-robin over lanes, one after another within a lane, lanes
    staggered so people enter and leave at different times."""
    out: list[tuple[int, int, int]] = [(0, 0, 0)] * count
    for lane in range(lanes):
        members = list(range(lane, count, lanes))
        if not members:
            continue
        start = int(frames * 0.08 * lane)
        stop = frames - 1 - int(frames * 0.06 * (lanes - 1 - lane))
        part = (stop - start) / len(members)
        for k, i in enumerate(members):
            first = int(start + k * part)
            out[i] = (first, int(first + part * (0.9 if k < len(members) - 1 else 1.0)), lane)
    return out


def motion_blur(tile: np.ndarray, dx: float, dy: float) -> np.ndarray:
    length = int(min(np.hypot(dx, dy), 15))
    if length < 3:
        return tile
    kernel = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    ux, uy = dx / np.hypot(dx, dy), dy / np.hypot(dx, dy)
    tail = (int(round(c - ux * c)), int(round(c - uy * c)))
    head = (int(round(c + ux * c)), int(round(c + uy * c)))
    cv2.line(kernel, tail, head, 1.0, 1)
    return cv2.filter2D(tile, -1, kernel / kernel.sum())


def make_test_video(
    actors: list[Actor],
    out: Path,
    seconds: float = 8.0,
    fps: float = 25.0,
    size: tuple[int, int] = (640, 480),
    seed: int = 0,
    gallery: dict[str, list[Path]] | None = None,
    detector: Detector | None = None,
) -> Path:
    """Render ``actors`` into the video ``out`` (.mp4: mp4v, .avi: MJPG) and write the ground truth beside it
    (same name, .json, with ``gallery``: who to enroll from which images); returns the ground-truth path.
    Deterministic for a given seed."""
    detector = detector or Detector("cpu")
    width, height = size
    frames = int(round(seconds * fps))
    rng = np.random.default_rng(seed)
    lanes = min(3, len(actors))
    sprites = [sprite(a.image, detector, a.held_up) for a in actors]
    scene = background(width, height, rng)
    noise = [rng.normal(0, 2.5, (height, width, 3)).astype(np.float32) for _ in range(6)]
    plans = []
    for (first, last, lane), spr in zip(_spans(len(actors), frames, lanes), sprites):
        face_w = spr.face[2] - spr.face[0]
        plans.append(dict(
            first=first, last=last, x=(lane + 0.5) * width / lanes, y=height / 2 + rng.uniform(-50, 50),
            from_top=bool(rng.integers(0, 2)), width=rng.uniform(75, 100) / face_w,
            phase=rng.uniform(0, 2 * np.pi, 3), period=rng.uniform(2.0, 4.0, 3) * fps,
        ))

    def place(p: dict, f: int) -> tuple[float, float, float]:
        """(face centre x, y, scale) of a plan at frame f: walk in, linger and sway, walk out."""
        u = (f - p["first"]) / max(p["last"] - p["first"], 1)
        t = f - p["first"]
        scale = p["width"] * (1 + 0.25 * np.sin(2 * np.pi * t / p["period"][0] + p["phase"][0]))
        x = p["x"] + 22 * np.sin(2 * np.pi * t / p["period"][1] + p["phase"][1])
        off_top, off_bottom = -0.2 * height, 1.2 * height
        start, end = (off_top, off_bottom) if p["from_top"] else (off_bottom, off_top)
        y = p["y"] + 18 * np.sin(2 * np.pi * t / p["period"][2] + p["phase"][2])
        if u < 0.25:
            y = start + (y - start) * (u / 0.25)
        elif u > 0.75:
            y = y + (end - y) * ((u - 0.75) / 0.25)
        return float(x), float(y), float(scale)

    truth_boxes: list[dict[int, list[float]]] = [{} for _ in actors]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    writer = open_video_writer(out, fps, width, height)
    try:
        for f in range(frames):
            canvas = scene * (1 + 0.03 * np.sin(2 * np.pi * f / (3 * fps))) + noise[f % len(noise)]
            for i, (p, spr) in enumerate(zip(plans, sprites)):
                if not p["first"] <= f <= p["last"]:
                    continue
                x, y, scale = place(p, f)
                px, py, _ = place(p, max(f - 1, p["first"]))
                fx1, fy1, fx2, fy2 = spr.face * scale
                nh, nw = (max(2, int(round(side * scale))) for side in spr.tile.shape[:2])
                ox = int(round(x - (fx1 + fx2) / 2))
                oy = int(round(y - (fy1 + fy2) / 2))
                tile = motion_blur(cv2.resize(spr.tile, (nw, nh), interpolation=cv2.INTER_AREA), x - px, y - py)
                alpha = cv2.resize(spr.alpha, (nw, nh), interpolation=cv2.INTER_LINEAR)[..., None]
                x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + nw, width), min(oy + nh, height)
                if x0 < x1 and y0 < y1:
                    region = canvas[y0:y1, x0:x1]
                    a = alpha[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
                    region[:] = region * (1 - a) + tile[y0 - oy : y1 - oy, x0 - ox : x1 - ox] * a
                box = np.array([ox + fx1, oy + fy1, ox + fx2, oy + fy2])
                if visible_fraction(box, width, height) >= MIN_VISIBLE:
                    clipped = np.clip(box, 0, [width, height, width, height])
                    truth_boxes[i][f] = [round(float(v), 1) for v in clipped]
            writer.write(np.clip(canvas, 0, 255).astype(np.uint8))
    finally:
        writer.release()
    people = []
    for a, boxes in zip(actors, truth_boxes):
        if not boxes:
            continue
        first, last = min(boxes), max(boxes)
        people.append(dict(
            name=a.name, enrolled=a.enrolled, held_up=a.held_up, image=str(a.image),
            enroll_images=[str(p) for p in a.enroll_images],
            first_frame=first, last_frame=last, boxes={str(k): v for k, v in sorted(boxes.items())},
        ))
    truth = dict(video=Path(out).name, width=width, height=height, fps=fps, frames=frames, seed=seed, people=people,
                 gallery={name: [str(p) for p in paths] for name, paths in (gallery or {}).items()})
    truth_path = Path(out).with_suffix(".json")
    truth_path.write_text(json.dumps(truth, indent=1))
    return truth_path
