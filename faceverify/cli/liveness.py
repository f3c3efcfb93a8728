"""`faceverify liveness`: is each face in an image a live person or a presentation attack (a print, a screen)?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from .options import EXIT_DIFFERENT, EXIT_ERROR, FaceOpt, JsonOpt, ThreadsOpt, app, err


@app.command()
def liveness(
    images: List[Path] = typer.Argument(..., help="Images and/or directories."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Live when the live probability reaches "
                                              "this (default: when live is the most probable class)."),
    face: FaceOpt = typer.Option(FaceOpt.all, "--face", help="Which faces to judge in an image holding several."),
    as_json: bool = JsonOpt,
    threads: int = ThreadsOpt,
) -> None:
    """One line per face: image, live or spoof, live probability, box. Exit 0 = all live, 1 = any face not live,
    2 = error (an image unreadable or without a face)."""
    from ..detect import make_detector, select_faces
    from ..errors import BadInputError, NoFaceError
    from ..images import list_images, load_image
    from ..liveness import LivenessChecker

    checker = LivenessChecker.load(threshold, threads)
    detector = make_detector("yunet", "cpu", threads=threads)
    failed = spoof = 0
    for path in list_images([str(p) for p in images]):
        try:
            image = load_image(path)
            faces = select_faces(detector.detect_one(image), image.shape, face.value)
            if not faces:
                raise NoFaceError(path)
        except BadInputError as exc:
            failed += 1
            err(str(exc))
            if as_json:
                typer.echo(json.dumps(dict(image=str(path), error=exc.reason)))
            continue
        for f, verdict in zip(faces, checker.judge(image, faces)):
            spoof += not verdict.live
            box = [round(float(v), 1) for v in f.box]
            if as_json:
                typer.echo(json.dumps(dict(image=str(path), **verdict.to_dict(), box=box)))
                continue
            label = "live" if verdict.live else "spoof" if verdict.score is not None else "not judged"
            score = "-" if verdict.score is None else f"{verdict.score:.4f}"
            note = f"\t({verdict.reason})" if verdict.reason else ""
            typer.echo(f"{path}\t{label}\t{score}\t{','.join(f'{v:.0f}' for v in box)}{note}")
    raise typer.Exit(EXIT_ERROR if failed else EXIT_DIFFERENT if spoof else 0)
