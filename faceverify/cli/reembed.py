"""`faceverify gallery reembed`: a new gallery for another model from the faces kept at enrolment. A thin layer
over :meth:`faceverify.api.FaceVerifier.reembed`."""

from __future__ import annotations

import json
from typing import Optional

import typer

from .core import _open_existing_gallery, _verifier, gallery_app
from .options import (EXIT_PARTIAL, BackendChoiceOpt, BackendOpt, DeviceOpt, FlipOpt, GalleryOpt, JsonOpt, ThreadsOpt,
                      progress_bar)


@gallery_app.command("reembed")
def gallery_reembed(
    model: str = typer.Option(..., "--model", "-m", help="The model to re-embed with (see `faceverify models`)."),
    out: str = typer.Option(..., "--out", help="The gallery to write: a file or postgresql://... , new or already "
                            "holding --model's embeddings (running again finishes an interrupted run)."),
    gallery: Optional[str] = GalleryOpt,
    device: Optional[str] = DeviceOpt,
    backend: Optional[BackendOpt] = BackendChoiceOpt,
    threads: int = ThreadsOpt,
    flip: bool = FlipOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Write a gallery for --model from the faces kept at enrolment (re-aligned for its template, re-embedded),
    leaving the source gallery as it is; lists the identities with no kept face, which need new images (exit 3)."""
    with _open_existing_gallery(gallery) as source:
        fv = _verifier(model, device, backend, threads=threads, flip=flip)
        with progress_bar(as_json) as start:
            advance = start("re-embedding", source.embedding_count())
            report = fv.reembed(source, out, progress=advance)
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
    else:
        faces = sum(report.reembedded.values())
        typer.echo(f"re-embedded {len(report.reembedded)} identities ({faces} faces) with {report.model} into "
                   f"{report.target}; the source gallery is unchanged")
        for name, missing in report.partial.items():
            typer.echo(f"partly re-embedded: {name} ({missing} enrolment(s) had no kept face)")
        for name in report.need_images:
            typer.echo(f"needs new images: {name} (no face kept)")
    if report.need_images:
        raise typer.Exit(EXIT_PARTIAL)
