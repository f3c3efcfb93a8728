"""Hard test videos for identity-safe tracking, each with per-frame ground truth: hard cuts between groups of
people, a stranger taking an enrolled person's place, people crossing, brief occlusion (a hand, a passer-by),
lighting changes, and degraded faces (motion blur, in-plane rotation, perspective tilt, compression, tight crops
at the frame's edge). ``walk`` is the smooth walk-in/walk-out video of :mod:`tools.video_synth`.

The ground truth has the format of ``video_synth``: one entry per appearance of a person, with the frames in
which their face is visible (inside the frame and less than half covered) and its box in each.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from faceverify.detect import Detector
from faceverify.video import open_video_writer
from tools.video_synth import MIN_VISIBLE, Actor, Sprite, background, choose_cast, make_test_video, motion_blur, sprite

CASES = ("walk", "cuts", "swap", "cross", "occlude", "lighting", "degrade")
FPS = 25.0
W, H = 640, 480

Path2 = Callable[[int], tuple[float, float, float]]
"""frame -> (face centre x, face centre y, face width in pixels)."""


@dataclass
class Appearance:
    """One person on screen from ``first`` to ``last``; ``layer``: higher is drawn in front."""

    actor: Actor
    first: int
    last: int
    path: Path2
    rotate: float = 0.0
    tilt: float = 0.0
    layer: int = 0


@dataclass
class Script:
    """What a video shows: appearances, backgrounds from given frames on, a per-frame BGR gain, hands
    (frame -> box or None) held over faces, and JPEG quality (None: none)."""

    frames: int
    appearances: list[Appearance]
    backgrounds: list[tuple[int, np.ndarray]]
    gain: Callable[[int], np.ndarray] = lambda f: np.ones(3, np.float32)
    hands: list[Callable[[int], tuple[float, float, float, float] | None]] = field(default_factory=list)
    jpeg: int | None = None


def _steady(x: float, y: float, width: float, rng: random.Random) -> Path2:
    """Standing near (x, y) with a small sway and a slow change of distance."""
    phase = [rng.uniform(0, 6.28) for _ in range(3)]
    return lambda f: (x + 12 * np.sin(f / 17 + phase[0]), y + 8 * np.sin(f / 23 + phase[1]),
                      width * (1 + 0.12 * np.sin(f / 31 + phase[2])))


def _line(x0: float, x1: float, y: float, width: float, first: int, last: int) -> Path2:
    """Walking from x0 to x1 at height y between frames first and last."""
    return lambda f: (x0 + (x1 - x0) * (f - first) / max(last - first, 1), y, width)


def _place(spr: Sprite, app: Appearance, f: int) -> tuple[np.ndarray, np.ndarray, int, int, np.ndarray]:
    """(tile, alpha, left, top, face box in frame pixels) of an appearance at frame f."""
    cx, cy, face_w = app.path(f)
    scale = face_w / (spr.face[2] - spr.face[0])
    n = max(4, int(round(spr.tile.shape[0] * scale)))
    tile = cv2.resize(spr.tile, (n, n), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(spr.alpha, (n, n), interpolation=cv2.INTER_LINEAR)
    fx1, fy1, fx2, fy2 = spr.face * scale
    corners = np.array([[fx1, fy1], [fx2, fy1], [fx2, fy2], [fx1, fy2]], np.float32)
    if app.rotate or app.tilt:
        t = app.tilt * n
        src = np.float32([[0, 0], [n, 0], [n, n], [0, n]])
        persp = cv2.getPerspectiveTransform(src, np.float32([[t, 0], [n - t, 0], [n, n], [0, n]]))
        rot = np.vstack([cv2.getRotationMatrix2D(((fx1 + fx2) / 2, (fy1 + fy2) / 2), app.rotate, 1.0), [0, 0, 1]])
        m = rot @ persp
        tile = cv2.warpPerspective(tile, m, (n, n), borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpPerspective(alpha, m, (n, n))
        corners = cv2.perspectiveTransform(corners[None], m)[0]
    if f > app.first:
        px, py, _ = app.path(f - 1)
        tile = motion_blur(tile, cx - px, cy - py)
    left, top = int(round(cx - (fx1 + fx2) / 2)), int(round(cy - (fy1 + fy2) / 2))
    box = np.array([corners[:, 0].min() + left, corners[:, 1].min() + top,
                    corners[:, 0].max() + left, corners[:, 1].max() + top])
    return tile, alpha, left, top, box


def _paste(canvas: np.ndarray, cover: np.ndarray, tile: np.ndarray, alpha: np.ndarray, left: int, top: int) -> None:
    """Blend tile onto canvas where alpha says, and record the alpha in ``cover`` (what hides what is behind)."""
    n = tile.shape[0]
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + n, W), min(top + n, H)
    if x0 >= x1 or y0 >= y1:
        return
    a = alpha[y0 - top: y1 - top, x0 - left: x1 - left]
    region = canvas[y0:y1, x0:x1]
    region[:] = region * (1 - a[..., None]) + tile[y0 - top: y1 - top, x0 - left: x1 - left] * a[..., None]
    cover[y0:y1, x0:x1] = np.maximum(cover[y0:y1, x0:x1], a)


def _covered(layers: list[np.ndarray], box: np.ndarray) -> float:
    """Share of ``box`` hidden by the cover masks drawn after it."""
    x1, y1, x2, y2 = (int(round(v)) for v in np.clip(box, 0, [W, H, W, H]))
    if x2 <= x1 or y2 <= y1 or not layers:
        return 0.0
    hidden = np.max([c[y1:y2, x1:x2] for c in layers], axis=0)
    return float((hidden > 0.5).mean())


def render(script: Script, sprites: dict[str, Sprite], out: Path, gallery: dict[str, list[Path]], case: str,
           seed: int) -> Path:
    """Write the video and its ground truth (same name, .json); returns the ground-truth path."""
    boxes: list[dict[int, list[float]]] = [{} for _ in script.appearances]
    order = sorted(range(len(script.appearances)), key=lambda i: script.appearances[i].layer)
    noise = [np.random.default_rng(seed + k).normal(0, 2.5, (H, W, 3)).astype(np.float32) for k in range(4)]
    writer = open_video_writer(out, FPS, W, H)
    try:
        for f in range(script.frames):
            scene = [bg for start, bg in script.backgrounds if start <= f][-1]
            canvas = scene + noise[f % len(noise)]
            drawn: list[tuple[int, np.ndarray]] = []
            covers: list[np.ndarray] = []
            for i in order:
                app = script.appearances[i]
                if not app.first <= f <= app.last:
                    continue
                tile, alpha, left, top, box = _place(sprites[app.actor.name], app, f)
                cover = np.zeros((H, W), np.float32)
                _paste(canvas, cover, tile, alpha, left, top)
                drawn.append((i, box))
                covers.append(cover)
            for hand in script.hands:
                spot = hand(f)
                if spot is not None:
                    cover = np.zeros((H, W), np.float32)
                    cx, cy, rx, ry = spot
                    cv2.ellipse(cover, (int(cx), int(cy)), (int(rx), int(ry)), 0, 0, 360, 1.0, cv2.FILLED)
                    canvas[cover > 0] = (90, 130, 190)  # a skin-toned hand
                    covers.append(cover)
            for k, (i, box) in enumerate(drawn):
                inside = np.clip(box, 0, [W, H, W, H])
                area = max(box[2] - box[0], 1) * max(box[3] - box[1], 1)
                visible = (inside[2] - inside[0]) * (inside[3] - inside[1]) / area
                if visible >= MIN_VISIBLE and _covered(covers[k + 1:], box) < 0.5:
                    boxes[i][f] = [round(float(v), 1) for v in inside]
            frame = np.clip(canvas * script.gain(f), 0, 255).astype(np.uint8)
            if script.jpeg is not None:
                ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, script.jpeg])
                frame = cv2.imdecode(data, cv2.IMREAD_COLOR)
            writer.write(frame)
    finally:
        writer.release()
    people = []
    for app, b in zip(script.appearances, boxes):
        if b:
            people.append(dict(name=app.actor.name, enrolled=app.actor.enrolled, image=str(app.actor.image),
                               first_frame=min(b), last_frame=max(b), boxes={str(k): v for k, v in sorted(b.items())}))
    truth = dict(video=out.name, case=case, width=W, height=H, fps=FPS, frames=script.frames, seed=seed,
                 people=people, gallery={n: [str(p) for p in ps] for n, ps in gallery.items()})
    path = out.with_suffix(".json")
    path.write_text(json.dumps(truth, indent=1))
    return path


def _cuts(actors: list[Actor], rng: random.Random, bgs: list[np.ndarray]) -> Script:
    """Pairs of people, 60 frames each, then a hard cut to the next pair at about the same places; half of the
    cuts keep the room (only the faces change), half change it."""
    apps, backgrounds = [], [(0, bgs[0])]
    for g in range(len(actors) // 2):
        first, last = 60 * g, 60 * g + 59
        for side, actor in zip((0, 1), actors[2 * g: 2 * g + 2]):
            x = (200 if side == 0 else 440) + rng.uniform(-20, 20)
            apps.append(Appearance(actor, first, last, _steady(x, 230 + rng.uniform(-25, 25), rng.uniform(80, 105), rng)))
        if g and rng.random() < 0.5:
            backgrounds.append((first, bgs[g % len(bgs)]))
    return Script(60 * (len(actors) // 2), apps, backgrounds)


def _swap(actors: list[Actor], rng: random.Random, bgs: list[np.ndarray]) -> Script:
    """People taking turns at the same spot: one vanishes and the next appears there 0 to 3 frames later;
    another person stands beside them all the time."""
    apps, t = [], 0
    spot = (250 + rng.uniform(-20, 20), 230 + rng.uniform(-20, 20))
    width = rng.uniform(85, 105)
    for actor in actors[1:]:
        length = rng.randint(50, 70)
        apps.append(Appearance(actor, t, t + length - 1, _steady(*spot, width, rng)))
        t += length + rng.randint(0, 3)
    apps.append(Appearance(actors[0], 0, t, _steady(480, 220, rng.uniform(75, 95), rng)))
    return Script(t + 1, apps, [(0, bgs[0])])


def _cross(actors: list[Actor], rng: random.Random, bgs: list[np.ndarray]) -> Script:
    """Two people walking towards each other and crossing, one in front, at about the same height; twice."""
    apps, t = [], 0
    for k in range(0, len(actors) - 1, 2):
        length = rng.randint(100, 130)
        y = 230 + rng.uniform(-20, 20)
        a, b = actors[k], actors[k + 1]
        apps.append(Appearance(a, t, t + length, _line(60, 580, y, rng.uniform(85, 100), t, t + length), layer=1))
        apps.append(Appearance(b, t, t + length, _line(580, 60, y + rng.uniform(-15, 15), rng.uniform(70, 85), t, t + length)))
        t += length + 10
    return Script(t, apps, [(0, bgs[0])])


def _occlude(actors: list[Actor], rng: random.Random, bgs: list[np.ndarray]) -> Script:
    """Two enrolled people standing; a hand covers the first one's face for half a second, and a stranger walks
    in front of the second; another stranger stands at the side."""
    p1 = _steady(170, 240, rng.uniform(85, 100), rng)
    p2 = _steady(400, 240, rng.uniform(75, 90), rng)
    apps = [Appearance(actors[0], 0, 219, p1), Appearance(actors[2], 0, 219, p2),
            Appearance(actors[1], 110, 190, _line(700, 200, 250, 105, 110, 190), layer=1),
            Appearance(actors[3], 30, 219, _steady(580, 150, 60, rng))]

    def hand(f: int) -> tuple[float, float, float, float] | None:
        if not 50 <= f < 63:
            return None
        x, y, w = p1(f)
        return x, y + 0.1 * w, 0.6 * w, 0.7 * w

    return Script(220, apps, [(0, bgs[0])], hands=[hand])


def _lighting(actors: list[Actor], rng: random.Random, bgs: list[np.ndarray]) -> Script:
    """People moving about while the light changes: a sudden gain step, a colour-temperature shift, a slow ramp."""
    apps = [Appearance(a, 15 * i, 210, _steady(130 + 190 * i, 230 + rng.uniform(-30, 30), rng.uniform(80, 100), rng))
            for i, a in enumerate(actors[:3])]
    step, warm = rng.uniform(1.25, 1.45), rng.uniform(1.15, 1.3)

    def gain(f: int) -> np.ndarray:
        g = np.ones(3, np.float32)
        if 60 <= f < 110:
            g *= step
        if f >= 130:
            g *= np.array([1 / warm, 1.0, warm], np.float32)  # BGR: warmer light
        return g * (1 - 0.25 * max(0, min(1, (f - 170) / 40)))

    return Script(220, apps, [(0, bgs[0])], gain=gain)


def _degrade(actors: list[Actor], rng: random.Random, bgs: list[np.ndarray]) -> Script:
    """Hard faces: fast movement (motion blur), in-plane rotation, perspective tilt, heavy JPEG compression, and
    a face half out of the frame's edge."""
    apps = [
        Appearance(actors[0], 0, 200, lambda f: (320 + 200 * np.sin(f / 9), 240, 90.0), rotate=rng.uniform(-15, 15)),
        Appearance(actors[1], 20, 200, _steady(150, 200, 85, rng), tilt=rng.uniform(0.08, 0.18),
                   rotate=rng.uniform(-10, 10)),
        Appearance(actors[2], 40, 200, _steady(600, 300, 95, rng), layer=1),
    ]
    return Script(201, apps, [(0, bgs[0])], jpeg=rng.randint(15, 30))


_SCRIPTS = {"cuts": (_cuts, 4, 4), "swap": (_swap, 2, 3), "cross": (_cross, 2, 2), "occlude": (_occlude, 2, 2),
            "lighting": (_lighting, 1, 2), "degrade": (_degrade, 1, 2)}
"""case -> (script, enrolled people shown, strangers shown)."""


def make_case(case: str, lfw_root: Path, out: Path, seed: int, detector: Detector, distractors: int = 6,
              frames: int | None = None) -> Path:
    """Generate video ``out`` of the given case (deterministic per seed) and its ground truth; returns the
    ground-truth path. The gallery in the ground truth holds the enrolled people shown plus distractors.
    ``frames``: stop the video there (for short tests)."""
    if case == "walk":
        actors, gallery = choose_cast(lfw_root, 2, 2, distractors, seed)
        return make_test_video(actors, out, 9.0, seed=seed, gallery=gallery, detector=detector)
    build, enrolled, strangers = _SCRIPTS[case]
    actors, gallery = choose_cast(lfw_root, enrolled, strangers, distractors, seed)
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    bgs = [background(W, H, np_rng) for _ in range(3)]
    script = build(actors, rng, bgs)
    if frames is not None:
        script.frames = min(script.frames, frames)
        script.appearances = [a for a in script.appearances if a.first < script.frames]
    sprites = {a.actor.name: sprite(a.actor.image, detector) for a in script.appearances}
    return render(script, sprites, out, gallery, case, seed)
