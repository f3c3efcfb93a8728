"""`faceverify demo`: enroll LFW identities into a throw-away gallery, verify pairs, identify known and unknown
people in stills and in a short generated video."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import typer

from ..errors import BadInputError, FaceverifyError
from .options import DeviceOpt, ModelOpt, app

if TYPE_CHECKING:
    from ..api import FaceVerifier
    from ..gallery import Gallery

CLIP_SIZE = (640, 480)
CLIP_FPS = 25.0
CLIP_SECONDS = 2.4
"""How long each person is on screen in the demo clip."""
CLIP_GAP_SECONDS = 0.6
"""How long the scene stays empty before each person (so that one person's track ends before the next's)."""


@app.command()
def demo(
    lfw: Optional[Path] = typer.Option(None, "--lfw", help="LFW root (default: $FACEVERIFY_LFW, or download)."),
    people: int = typer.Option(8, "--people", help="How many identities to enroll."),
    model: Optional[str] = ModelOpt,
    device: Optional[str] = DeviceOpt,
) -> None:
    """Enroll several LFW identities, verify pairs and identify people, printing what was found."""
    run_demo(lfw, people, model, device, echo=typer.echo)


def lfw_images_or_download(explicit: Path | None) -> tuple[Path, Path | None]:
    """(image directory, protocol-file directory or None): a local LFW, else scikit-learn's download (when
    scikit-learn is installed: it is not a dependency)."""
    from ..eval.pairs import find_lfw_root, lfw_image_dir

    root = find_lfw_root(explicit)
    if root is not None:
        return lfw_image_dir(root), root
    try:
        from sklearn.datasets import fetch_lfw_people, get_data_home
    except ImportError:
        raise FaceverifyError("LFW not found locally: pass --lfw DIR or set FACEVERIFY_LFW (with scikit-learn "
                              "installed, the demo downloads it)") from None
    try:
        fetch_lfw_people(funneled=False, min_faces_per_person=20, download_if_missing=True)
    except OSError as exc:
        raise FaceverifyError(
            f"LFW not found locally and the download failed ({exc}); pass --lfw DIR or set FACEVERIFY_LFW"
        ) from None
    return Path(get_data_home()) / "lfw_home" / "lfw", None


def _demo_people(images: Path, protocols: Path | None, wanted: int) -> tuple[list[str], list[str]]:
    """Deterministic choice: people with 4+ images to enroll, people never enrolled to stay unknown."""
    from ..eval.pairs import read_lfw_people

    if protocols is not None:
        listed = read_lfw_people(protocols / "peopleDevTest.txt")
        counts = {name: n for name, n in listed}
    else:
        counts = {p.name: len(list(p.glob("*.jpg"))) for p in images.iterdir() if p.is_dir()}
    names = sorted(counts)
    many = [n for n in names if counts[n] >= 4]
    few = [n for n in names if counts[n] == 1]
    if len(many) < wanted or len(few) < 3:
        raise FaceverifyError(f"{images}: not enough LFW identities for the demo")
    step = max(1, len(many) // wanted)
    return many[::step][:wanted], few[:: max(1, len(few) // 3)][:3]


def run_demo(
    lfw: Path | None, people: int, model: str | None, device: str | None, echo: Callable[[str], None] = print
) -> dict[str, float]:
    """Run the demo and return its tallies (also printed through ``echo``)."""
    from ..api import FaceVerifier

    images, protocols = lfw_images_or_download(lfw)

    def img(name: str, i: int) -> Path:
        return images / name / f"{name}_{i:04d}.jpg"

    enrolled, strangers = _demo_people(images, protocols, people)
    fv = FaceVerifier(model, device)
    point = fv.operating_point()
    echo(f"model {fv.card.name}: threshold {point.threshold:.4f} at FAR {point.far:.0e}; LFW images from {images}")
    tally = dict(enrolled=0, verified=0, verify_pairs=0, named=0, probes=0, strangers_unknown=0, strangers=0)
    with tempfile.TemporaryDirectory() as tmp:
        with fv.open_gallery(Path(tmp) / "demo-gallery.sqlite") as gallery:
            echo(f"\n== enroll {len(enrolled)} identities (images 1 and 2 of each)")
            for name in enrolled:
                report = fv.enroll(gallery, name, [img(name, 1), img(name, 2)], skip_bad=True)
                tally["enrolled"] += bool(report.added)
                echo(f"  {name}: {sum(report.added.values())} embeddings" + (f", {len(report.failures)} failed" if report.failures else ""))
                for failure in report.failures:  # refused by the quality gate or unreadable: said, never skipped silently
                    echo(f"    not enrolled: {failure}")

            echo("\n== verify pairs")
            pairs = [(img(n, 3), img(n, 4), True) for n in enrolled[:3]]
            pairs += [(img(a, 3), img(b, 3), False) for a, b in zip(enrolled[:3], enrolled[3:6])]
            for a, b, same in pairs:
                r = fv.verify(a, b)
                ok = r.same == same
                tally["verify_pairs"] += 1
                tally["verified"] += ok
                verdict = "same" if r.same else "different"
                echo(f"  {a.name} vs {b.name}: {verdict} (similarity {r.similarity:.3f}) {'ok' if ok else 'WRONG'}")

            ip = fv.identification_point(gallery)
            echo(f"\n== identify held-out images (image 3 of each enrolled person, plus people never enrolled)\n"
                 f"  threshold {ip.threshold:.4f}: FAR {ip.far:.1e} per comparison, so that with "
                 f"{gallery.embedding_count()} gallery embeddings a stranger is named with chance <= {ip.fpir:.0e}")
            probes = [img(n, 3) for n in enrolled] + [img(n, 1) for n in strangers]
            truth = {str(img(n, 3)): n for n in enrolled}
            for result in fv.identify(gallery, probes):
                expected = truth.get(result.image)
                if result.error is not None:
                    echo(f"  {Path(result.image).name}: {result.error}")
                    continue
                got = result.faces[0]
                label = got.name or "unknown"
                if expected is None:
                    tally["strangers"] += 1
                    tally["strangers_unknown"] += got.name is None
                    verdict = "ok (never enrolled)" if got.name is None else "WRONG (never enrolled)"
                else:
                    tally["probes"] += 1
                    tally["named"] += got.name == expected
                    verdict = "ok" if got.name == expected else ("honest unknown" if got.name is None else "WRONG")
                echo(f"  {Path(result.image).name}: {label} (score {got.score:.3f}) {verdict}")

            echo("\n== identify people in a generated video (two enrolled people and one never enrolled, one after another)")
            known = [(n, img(n, 4)) for n in enrolled[:2]]
            tally.update(_video_step(fv, gallery, Path(tmp), known, (strangers[0], img(strangers[0], 1)), echo))
    echo(
        f"\nsummary: {tally['verified']}/{tally['verify_pairs']} pairs decided right, "
        f"{tally['named']}/{tally['probes']} enrolled people named, "
        f"{tally['strangers_unknown']}/{tally['strangers']} strangers called unknown"
    )
    if "video_named" in tally:
        echo(f"video: {tally['video_named']}/2 enrolled people named, the stranger "
             f"{'called unknown' if tally['video_stranger_unknown'] else 'NOT called unknown'}, "
             f"at {tally['video_fps']:.1f} frames per second")
    return tally


def _video_step(
    fv: FaceVerifier,
    gallery: Gallery,
    tmp: Path,
    known: list[tuple[str, Path]],
    stranger: tuple[str, Path],
    echo: Callable[[str], None],
) -> dict[str, float]:
    """Make a short clip of two enrolled people with the stranger between them and identify its people as
    `faceverify identify --source VIDEO` does; returns the video tallies."""
    from ..video import identify_stream

    video = tmp / "demo-video.mp4"
    try:
        make_demo_clip([known[0][1], stranger[1], known[1][1]], video)
    except BadInputError as exc:
        echo(f"  video step skipped: {exc}")
        return {}
    summary = identify_stream(fv, gallery, str(video), echo=lambda line: echo(f"  {line}"))
    names = {t.name for t in summary.tracks}
    return dict(
        video_named=sum(name in names for name, _ in known),
        video_stranger_unknown=any(t.status == "unknown" for t in summary.tracks),
        video_fps=summary.fps,
    )


def make_demo_clip(stills: list[Path], out: Path) -> None:
    """Write a clip in which each still in turn drifts slowly across a plain 640x480 scene for
    ``CLIP_SECONDS``, with an empty scene for ``CLIP_GAP_SECONDS`` before each; BadInputError for a bad still."""
    import numpy as np

    from ..images import load_image
    from ..video import open_video_writer

    width, height = CLIP_SIZE
    shown, gap = round(CLIP_SECONDS * CLIP_FPS), round(CLIP_GAP_SECONDS * CLIP_FPS)
    scene = np.full((height, width, 3), 96, np.uint8)
    tiles = [load_image(p)[:, :, ::-1] for p in stills]  # BGR, as OpenCV writes
    writer = open_video_writer(out, CLIP_FPS, width, height)
    try:
        for tile in tiles:
            for _ in range(gap):
                writer.write(scene)
            th, tw = (min(n, limit) for n, limit in zip(tile.shape[:2], (height, width)))
            for f in range(shown):
                u = f / max(shown - 1, 1)
                x = round((width - tw) * (0.25 + 0.5 * u))
                y = round((height - th) * (0.5 + 0.1 * np.sin(2 * np.pi * u)))
                frame = scene.copy()
                frame[y : y + th, x : x + tw] = tile[:th, :tw]
                writer.write(frame)
    finally:
        writer.release()
