"""The everyday commands: verify, enroll, identify (stills, and --source for video), the gallery subcommands,
models and calibrate. Thin typer wrappers over :class:`faceverify.api.FaceVerifier`; heavy imports happen inside
the commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Sequence

import typer

from ..errors import FaceverifyError
from .options import (
    EXIT_DIFFERENT,
    EXIT_ERROR,
    EXIT_PARTIAL,
    BackendChoiceOpt,
    BackendOpt,
    DetectorChoiceOpt,
    DetectorOpt,
    DeviceOpt,
    FaceChoiceOpt,
    FaceOpt,
    FarOpt,
    FlipOpt,
    GalleryOpt,
    JsonOpt,
    LivenessOpt,
    LivenessThresholdOpt,
    MatchChoiceOpt,
    MatchOpt,
    ModelOpt,
    ThreadsOpt,
    ThresholdOpt,
    app,
    err,
    progress_bar,
)

if TYPE_CHECKING:
    from ..api import EnrollReport, FaceVerifier
    from ..gallery import Gallery

gallery_app = typer.Typer(no_args_is_help=True, help="Inspect and edit the gallery of enrolled identities.")


def _verifier(
    model: Optional[str], device: Optional[str], backend: Optional[BackendOpt] = None,
    detector: Optional[DetectorOpt] = None, threads: Optional[int] = None, flip: bool = False,
    gallery: Optional[str] = None, uses_gallery: bool = False, liveness: bool = False,
    liveness_threshold: Optional[float] = None,
) -> FaceVerifier:
    """The verifier for a command (``liveness``: judging every face); one that ``uses_gallery`` without ``--model``
    takes the model and flip fusion the gallery was enrolled with, so a changed default never locks it out."""
    from ..api import FaceVerifier, gallery_model
    from ..liveness import LivenessChecker

    if liveness_threshold is not None and not liveness:
        raise FaceverifyError("--liveness-threshold goes with --liveness")
    checker = LivenessChecker.load(liveness_threshold, threads) if liveness else None

    if model is None and uses_gallery:
        stored = gallery_model(gallery)
        if stored is not None:
            model, flip = stored[0], flip or stored[1]
    return FaceVerifier(model, device, backend=backend and backend.value, detector=detector and detector.value,
                        threads=threads, flip=flip, liveness=checker)


def _live_text(live) -> str:
    """``live 0.9871`` / ``spoof 0.0213`` / ``not judged (reason)`` for a Liveness."""
    return f"not judged ({live.reason})" if live.score is None else f"{'live' if live.live else 'spoof'} {live.score:.4f}"


def _far_text(far: Optional[float]) -> str:
    return "unknown FAR" if far is None else f"FAR {far:.0e}"


@app.command()
def verify(
    image_a: Path = typer.Argument(..., help="First image."),
    image_b: Path = typer.Argument(..., help="Second image."),
    model: Optional[str] = ModelOpt,
    device: Optional[str] = DeviceOpt,
    far: Optional[float] = FarOpt,
    threshold: Optional[float] = ThresholdOpt,
    face: FaceOpt = FaceChoiceOpt,
    as_json: bool = JsonOpt,
    backend: Optional[BackendOpt] = BackendChoiceOpt,
    detector: Optional[DetectorOpt] = DetectorChoiceOpt,
    threads: int = ThreadsOpt,
    flip: bool = FlipOpt,
    liveness: bool = LivenessOpt,
    liveness_threshold: Optional[float] = LivenessThresholdOpt,
) -> None:
    """Are two images the same person? Exit 0 = same, 1 = different (or B not live), 2 = error."""
    fv = _verifier(model, device, backend, detector, threads, flip, liveness=liveness,
                   liveness_threshold=liveness_threshold)
    result = fv.verify(image_a, image_b, far, threshold, face.value)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
    else:
        spoof = result.liveness is not None and not result.liveness.live
        verdict = f"not live ({image_b}: {_live_text(result.liveness)})" if spoof else \
            "same person" if result.same else "different people"
        typer.echo(
            f"{verdict}: similarity {result.similarity:.4f}, threshold {result.threshold:.4f} "
            f"({_far_text(result.far)}, model {result.model})"
        )
    raise typer.Exit(0 if result.same else EXIT_DIFFERENT)


@app.command()
def enroll(
    args: Optional[List[str]] = typer.Argument(None, help="NAME followed by images and/or directories."),
    from_folders: Optional[Path] = typer.Option(None, "--from-folders", help="Enroll one identity per sub-folder."),
    gallery: Optional[str] = GalleryOpt,
    model: Optional[str] = ModelOpt,
    device: Optional[str] = DeviceOpt,
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Enroll the good images even if some inputs fail."),
    force: bool = typer.Option(False, "--force", help="Enroll faces below the quality limits too (too small, "
                               "blurred, turned away, doubtful, or beside a face of similar size; docs/galleries.md)."),
    face: FaceOpt = typer.Option(FaceOpt.largest, "--face", help="Which face to enroll in an image holding several."),
    as_json: bool = JsonOpt,
    backend: Optional[BackendOpt] = BackendChoiceOpt,
    detector: Optional[DetectorOpt] = DetectorChoiceOpt,
    threads: int = ThreadsOpt,
    flip: bool = FlipOpt,
    keep_faces: bool = typer.Option(True, "--keep-faces/--no-keep-faces", help="Keep each enrolled face as a crop "
                                    "(a 20-35 kB JPEG with margin, and its landmarks) so that `gallery reembed` can "
                                    "move the gallery to another model; --no-keep-faces stores embeddings only."),
) -> None:
    """Enroll an identity from images (each image's face is stored), or many with --from-folders."""
    args = args or []
    if face is FaceOpt.all:
        raise FaceverifyError("--face all cannot enroll: one image gives one face of the identity")
    if from_folders is None and len(args) < 2:
        raise FaceverifyError("give NAME and at least one image or directory (or --from-folders DIR)")
    if from_folders is not None and args:
        raise FaceverifyError("--from-folders takes no NAME or images")
    fv = _verifier(model, device, backend, detector, threads, flip, gallery, uses_gallery=True)
    with fv.open_gallery(gallery) as store:
        if from_folders is not None:
            report = _enroll_folders(fv, store, from_folders, as_json, keep_faces, force)
        else:
            report = fv.enroll(store, args[0], args[1:], skip_bad=skip_bad, face=face.value, keep_faces=keep_faces,
                               force=force)
        for failure in report.failures:
            err(str(failure))
        if as_json:
            typer.echo(json.dumps(dict(added=report.added, failed=[str(f) for f in report.failures], gallery=str(store.path))))
        if report.failures and not report.added:
            if from_folders is None and not skip_bad:
                gate = " (or --force for faces below the quality limits)" if _low_quality(report) else ""
                err(f"nothing was enrolled (fix or drop the files above, or pass --skip-bad{gate})")
            raise typer.Exit(EXIT_ERROR)
        if not as_json:
            for name, n in report.added.items():
                typer.echo(f"enrolled {name}: {n} new embedding(s) in {store.path}")
    raise typer.Exit(EXIT_PARTIAL if report.failures else 0)


def _low_quality(report: EnrollReport) -> bool:
    """Whether any input was refused by the quality gate."""
    from ..errors import LowQualityError

    return any(isinstance(f, LowQualityError) for f in report.failures)


def _enroll_folders(fv: FaceVerifier, store: Gallery, root: Path, quiet: bool, keep_faces: bool, force: bool
                    ) -> EnrollReport:
    """``enroll --from-folders``, with a bar advancing once per sub-folder."""
    folders = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    with progress_bar(quiet) as start:
        advance = start("enrolling", len(folders))
        return fv.enroll_folders(store, root, progress=lambda _name: advance(1), keep_faces=keep_faces, force=force)


@app.command()
def identify(
    inputs: Optional[List[Path]] = typer.Argument(None, help="Images and/or directories (or --source)."),
    gallery: Optional[str] = GalleryOpt,
    model: Optional[str] = ModelOpt,
    device: Optional[str] = DeviceOpt,
    far: Optional[float] = FarOpt,
    threshold: Optional[float] = ThresholdOpt,
    fpir: Optional[float] = typer.Option(
        None, "--fpir", help="Chance that someone not enrolled is named, held under this (default 1e-2; the "
        "threshold then tightens as the gallery grows). --far or --threshold override it."),
    face: FaceOpt = FaceChoiceOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per image per line (--source: per event)."),
    source: Optional[str] = typer.Option(None, "--source", help="Camera index (0), video file or stream URL to identify people in."),
    show: bool = typer.Option(False, "--show", help="--source: show the annotated video in a window (q or Esc stops)."),
    output: Optional[Path] = typer.Option(None, "--output", help="--source: write the annotated video (.mp4 or .avi)."),
    realtime: bool = typer.Option(False, "--realtime", help="--source file: read at its frame rate, dropping frames as a camera would."),
    match: Optional[MatchOpt] = MatchChoiceOpt,
    backend: Optional[BackendOpt] = BackendChoiceOpt,
    detector: Optional[DetectorOpt] = DetectorChoiceOpt,
    threads: int = ThreadsOpt,
    flip: bool = FlipOpt,
    liveness: bool = LivenessOpt,
    liveness_threshold: Optional[float] = LivenessThresholdOpt,
) -> None:
    """Name each face against the gallery, or `unknown` below the calibrated threshold. With --source, follow
    each person in a camera, video file or stream and name them once confident (with --liveness: once judged
    live over the track's frames); Ctrl-C ends it cleanly."""
    if source is not None and inputs:
        raise FaceverifyError("give images or --source, not both")
    if source is None and not inputs:
        raise FaceverifyError("give images or directories to identify, or --source for a camera or video")
    if source is None and (show or output is not None or realtime):
        raise FaceverifyError("--show, --output and --realtime go with --source")
    fv = _verifier(model, device, backend, detector, threads, flip, gallery, True, liveness, liveness_threshold)
    from ..gallery import gallery_exists, gallery_location

    store_path = gallery_location(gallery)
    if not gallery_exists(store_path):
        raise FaceverifyError(f"{store_path}: no gallery here (enroll someone first)")
    if source is not None:
        from ..video import VideoSettings, identify_stream

        settings = VideoSettings() if match is None else VideoSettings(match=match.value)
        with fv.open_gallery(store_path) as store:
            _warn_fpir(fv, store, far, threshold, fpir, settings.match, looks=settings.max_samples)
            identify_stream(fv, store, source, far, threshold, realtime, show, output, as_json, typer.echo, fpir,
                            settings)
        return
    from ..decision import DEFAULT_MATCH

    chosen = DEFAULT_MATCH if match is None else match.value
    ok = failed = 0
    with fv.open_gallery(store_path) as store:
        _warn_fpir(fv, store, far, threshold, fpir, chosen)
        for result in fv.identify(store, inputs, far, threshold, face.value, fpir, chosen):
            if result.error is not None:
                failed += 1
                err(f"{result.image}: {result.error}")
                if as_json:
                    typer.echo(json.dumps(result.to_dict()))
                continue
            ok += 1
            if as_json:
                typer.echo(json.dumps(result.to_dict()))
                continue
            for f in result.faces:
                label = f.name if f.name is not None else f"unknown (nearest {f.nearest})"
                if f.liveness is not None:
                    label = label if f.liveness.live else "not live"
                    label += f" [{_live_text(f.liveness)}]"
                box = ",".join(f"{v:.0f}" for v in f.box) if f.box else "-"
                typer.echo(f"{result.image}\t{label}\t{f.score:.4f}\t{box}")
    if failed:
        raise typer.Exit(EXIT_ERROR if ok == 0 else EXIT_PARTIAL)


def _warn_fpir(
    fv: FaceVerifier, store: Gallery, far: Optional[float], threshold: Optional[float], fpir: Optional[float],
    match: str, looks: int = 1,
) -> None:
    """One line on stderr when the gallery is too large for the card's calibration to hold the FPIR target."""
    from ..decision import DEFAULT_FPIR

    if far is not None or threshold is not None or len(store) == 0:
        return
    target = DEFAULT_FPIR if fpir is None else fpir
    point = fv.identification_point(store, fpir=target, looks=looks, match=match)
    if point.fpir is not None and point.fpir > target * 1.001:
        compared = f"{len(store)} identities" if match == "template" else f"{store.embedding_count()} gallery embeddings"
        typer.echo(f"faceverify: warning: {compared}: the strictest calibrated "
                   f"threshold ({point.threshold:.4f}, FAR {point.far:.0e}) bounds FPIR only at {point.fpir:.1e}, "
                   f"above the {target:.0e} asked for", err=True)


def _open_existing_gallery(location: Optional[str]) -> Gallery:
    """The gallery at ``location`` (a file or a ``postgresql://`` URL; default location when None), opened for
    any model; it must exist."""
    from ..gallery import gallery_exists, gallery_location, open_gallery

    location = gallery_location(location)
    if not gallery_exists(location):
        raise FaceverifyError(f"{location}: no gallery here")
    return open_gallery(location, create=False)  # type: ignore[return-value]


@gallery_app.command("list")
def gallery_list(gallery: Optional[str] = GalleryOpt, as_json: bool = JsonOpt) -> None:
    """Enrolled identities and how many embeddings each has."""
    with _open_existing_gallery(gallery) as store:
        people = store.identities()
        if as_json:
            typer.echo(json.dumps([dict(name=p.name, embeddings=p.embeddings) for p in people]))
            return
        for p in people:
            typer.echo(f"{p.name}\t{p.embeddings}")


@gallery_app.command("show")
def gallery_show(name: str, gallery: Optional[str] = GalleryOpt, as_json: bool = JsonOpt) -> None:
    """One identity's stored embeddings: source file, its hash, face box, model, and whether its face is kept."""
    with _open_existing_gallery(gallery) as store:
        rows = store.embeddings_of(name)
        if as_json:
            typer.echo(json.dumps(dict(name=name, embeddings=rows)))
            return
        for r in rows:
            kept = "face kept" if r["face"] else "no face kept"
            box = ",".join(f"{v:g}" for v in r["box"]) if r["box"] else "-"
            typer.echo(f"{r['source']}\t{r['source_sha256'][:12]}\t{box}\t{r['model_id']}\t{kept}")


@gallery_app.command("remove")
def gallery_remove(name: str, gallery: Optional[str] = GalleryOpt) -> None:
    """Delete an identity and its embeddings."""
    with _open_existing_gallery(gallery) as store:
        n = store.remove(name)
    typer.echo(f"removed {name} ({n} embedding(s))")


@gallery_app.command("rename")
def gallery_rename(old: str, new: str, gallery: Optional[str] = GalleryOpt) -> None:
    """Rename an identity."""
    with _open_existing_gallery(gallery) as store:
        store.rename(old, new)
    typer.echo(f"renamed {old} -> {new}")


@gallery_app.command("export")
def gallery_export(out: Path, gallery: Optional[str] = GalleryOpt) -> None:
    """Write every identity and embedding (vectors and kept faces included) to a JSON file."""
    from .._util import write_atomic

    with _open_existing_gallery(gallery) as store:
        records = [_export_record(name, vec, meta) for name, vec, meta in store.iter_vectors(faces=True)]
        doc = dict(model_id=store.stored_model_id, embeddings=records)
    write_atomic(out, json.dumps(doc))
    typer.echo(f"exported {len(records)} embedding(s) to {out}")


def _export_record(name: str, vector: Sequence[float], meta: dict) -> dict:
    """One embedding as ``gallery export`` writes it (a kept face's JPEG in base64)."""
    face = meta.pop("face")
    return dict(name=name, vector=[float(v) for v in vector], **meta, face=None if face is None else face.to_dict())


@gallery_app.command("migrate")
def gallery_migrate(
    source: str = typer.Argument(..., help="Gallery to copy from: a file or postgresql://user@host/db."),
    target: str = typer.Argument(..., help="Gallery to copy into (created if new): a file or postgresql://..."),
    as_json: bool = JsonOpt,
) -> None:
    """Copy every identity and embedding into another gallery (SQLite <-> PostgreSQL), verified by counts and a
    checksum; a target enrolled with another model is refused; running it again finishes an interrupted copy."""
    from ..gallery import gallery_location, open_gallery
    from ..gallery.migrate import migrate

    if str(gallery_location(source)) == str(gallery_location(target)):
        raise FaceverifyError("migrate: the source and the target are the same gallery")
    with _open_existing_gallery(source) as src:
        report = migrate(src, lambda model_id, dim: open_gallery(target, model_id, dim))
    if as_json:
        typer.echo(json.dumps(dict(identities=report.identities, embeddings=report.embeddings, added=report.added,
                                   checksum=report.checksum)))
        return
    typer.echo(f"migrated {report.identities} identities, {report.embeddings} embeddings ({report.added} new in "
               f"the target); verified: sha256 {report.checksum[:16]} on both sides")


@app.command()
def models(as_json: bool = JsonOpt) -> None:
    """The models available, where each comes from (FACEVERIFY_MODELS, user, shipped) and its card's key facts,
    with the detectors its thresholds were calibrated through (the first: its main calibration)."""
    from ..errors import ModelError
    from ..modelcard import ModelCard, available_models, card_paths, default_model_name, hidden_by, model_folders

    default = default_model_name()
    rows = []
    for name in available_models():
        found = card_paths(name)
        path, kind = found[0]
        row = dict(name=name, default=name == default, source=kind, path=str(path),
                   hides=[dict(source=k, path=str(p)) for p, k in hidden_by(found)])
        try:
            card = ModelCard.load(path)
            calibrated = [card.calibrated_detector] if card.calibrated_detector else []
            row.update(architecture=card.architecture, input_size=card.input_size, embedding_size=card.embedding_size,
                       thresholds=card.thresholds, calibrated_for=calibrated + sorted(card.calibrations))
        except ModelError as exc:
            row["error"] = str(exc)
        rows.append(row)
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        mark = "*" if r["default"] else " "
        facts = (f"{r['architecture']}\t{r['input_size']}px\t{r['embedding_size']}-d\tcalibrated for "
                 f"{', '.join(r['calibrated_for']) or 'no detector'}" if "error" not in r
                 else f"unreadable card: {r['error']}")
        hides = "".join(f"\t(hides the {h['source']} model of that name)" for h in r["hides"])
        typer.echo(f"{mark} {r['name']}\t{facts}\t{r['source']}{hides}")
    folders = ", ".join(f"{f.path} ({f.kind})" for f in model_folders())
    typer.echo(f"searched in order: {folders}; * the default", err=True)


@app.command()
def calibrate(
    root: Optional[Path] = typer.Option(None, "--root", help="LFW root with peopleDevTrain.txt (default: $FACEVERIFY_LFW; make sets it to ../shared/datasets/lfw when that exists)."),
    model: Optional[str] = ModelOpt,
    device: Optional[str] = DeviceOpt,
    detector: Optional[DetectorOpt] = DetectorChoiceOpt,
    max_per_person: Optional[int] = typer.Option(None, "--max-per-person", help="Cap images per DevTrain identity."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the thresholds without writing the model card."),
    as_json: bool = JsonOpt,
) -> None:
    """Pick thresholds for FAR 1e-2, 1e-3, 1e-4 on LFW DevTrain through the chosen detector and write them into
    the model card (a shipped model's card into a copy in the user models folder): as its main calibration when
    it has none or names the same detector, else beside it, for that detector."""
    from ..modelcard import resolve_card, user_copy
    from ..eval.cache import EmbeddingCache
    from ..eval.calibrate import calibrate_on_lfw, devtrain_images
    from ..eval.pairs import require_lfw_root

    lfw_root = require_lfw_root(root)
    fv = _verifier(model, device, detector=detector)
    total = len(devtrain_images(lfw_root, max_per_person)[0])
    with progress_bar(as_json) as start:
        thresholds, record = calibrate_on_lfw(
            fv.pipeline, lfw_root, max_per_person=max_per_person, cache=EmbeddingCache(fv.card.model_id),
            progress=start("embedding DevTrain", total),
        )
    front_end = fv.pipeline.front_end()
    if not dry_run:
        card, card_path = resolve_card(model)
        card = card.with_calibration(front_end, thresholds, record)
        card_path = user_copy(card, card_path)  # a shipped card is copied to the user models folder, not changed
        card.save(card_path)
    if as_json:
        typer.echo(json.dumps(dict(thresholds=thresholds, calibration=record, front_end=front_end)))
        return
    for key, thr in thresholds.items():
        typer.echo(f"FAR {key}: threshold {thr:.4f} (TAR on DevTrain {record['tar_at_threshold'][key]:.4f})")
    typer.echo(f"{record['genuine_pairs']} genuine and {record['impostor_pairs']} impostor pairs through the "
               f"{front_end['detector']} detector; {record['no_face']} of {record['images']} images had no face "
               "(centre crop used)")
    if not dry_run:
        typer.echo(f"written to {card_path}")


app.add_typer(gallery_app, name="gallery")
