"""`faceverify prepare`, `faceverify train`, `faceverify export-model` and `faceverify adapt`: training.

A typer app whose commands join the main CLI at the top level (``app.add_typer(train_app)``, below). Heavy imports
happen inside the commands so that `faceverify --help` stays fast; errors are FaceverifyError for
:func:`faceverify.cli.run` to report as one line.
"""

from __future__ import annotations

import json
import os
from contextlib import ExitStack
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional

import typer

from ..adapt.settings import AdaptSettings
from ..errors import FaceverifyError
from ..errors import require
from .options import ListOptions, app, progress_bar

if TYPE_CHECKING:
    from ..train.loop import Progress

ModelsDirOpt = typer.Option(None, "--models-dir", help="Where to write (default: the first $FACEVERIFY_MODELS "
                            "folder, else the user models folder; `faceverify models` names both).")

train_app = typer.Typer(no_args_is_help=True, help="Prepare face caches, train embedding networks, export them.")


class PrepareFace(str, Enum):
    """The face an image stands for when it is prepared."""

    center = "center"
    largest = "largest"


class PrepareDetector(str, Enum):
    """The detector a cache is prepared with."""

    mtcnn = "mtcnn"
    yunet = "yunet"
    yunet_onet = "yunet-onet"


@train_app.command(cls=ListOptions)
def prepare(
    data: Path = typer.Argument(..., help="Identity folders (DATA/<identity>/*.jpg), or an LFW root with --people/--pairs."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Cache directory (default: <user cache>/faces/<DATA name>)."),
    people: Optional[Path] = typer.Option(None, "--people", help="LFW people file selecting identities (e.g. peopleDevTrain.txt)."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="LFW pairs file: cache the images it names (evaluation only)."),
    size: Optional[List[int]] = typer.Option(None, "--size", help="Crop size(s) to write (default: 150 and 112)."),
    reference: Optional[str] = typer.Option(None, "--template-from", help="Model whose template is scaled to each size (default: the default model)."),
    face: PrepareFace = typer.Option(PrepareFace.center, "--face", help="Face an image stands for: nearest the centre (as `evaluate lfw`) or largest."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Detector processes (0: in this process; default 0 with CUDA, else min(4, CPUs))."),
    chunk_size: int = typer.Option(256, "--chunk-size", help="Images per resumable chunk."),
    device: Optional[str] = typer.Option(None, "--device", help="Detector device (default: CUDA when available)."),
    detector: PrepareDetector = typer.Option(PrepareDetector.mtcnn, "--detector", help="mtcnn (facenet-pytorch's: the shipped fine-tunes' front end), yunet, or yunet-onet (YuNet's faces with MTCNN's landmarks: the stills default). The default --out is named by it (-yunet, -yunet-onet) and by --template-from."),
    as_json: bool = typer.Option(False, "--json", help="Print the cache summary as JSON."),
) -> None:
    """Detect and align every face once (the shipped front end) into a memory-mapped cache; resumable."""
    require("train", "prepare")
    from ..eval.pairs import lfw_image_dir
    from ..train.prepare import (
        DEFAULT_SIZES,
        NO_FACE,
        UNREADABLE,
        default_cache_root,
        default_workers,
        list_identity_folders,
        list_lfw_pairs,
        list_lfw_people,
        prepare as run_prepare,
        scaled_geometries,
    )

    if people is not None and pairs is not None:
        raise FaceverifyError("give --people or --pairs, not both")
    if people is not None:
        listing, selection, stem = list_lfw_people(lfw_image_dir(data), people), f"people:{people.name}", people.stem
    elif pairs is not None:
        listing, selection, stem = list_lfw_pairs(lfw_image_dir(data), pairs), f"pairs:{pairs.name}", pairs.stem
    else:
        listing, selection, stem = list_identity_folders(data), "identity folders", "folders"
    # the default folder names the front end (detector, and the model whose template is used when one is named)
    suffix = ("" if detector is PrepareDetector.mtcnn else f"-{detector.value}") + (f"-{reference}" if reference else "")
    out = out or default_cache_root() / f"{data.resolve().name}-{stem}{suffix}"
    geometries = scaled_geometries(size or DEFAULT_SIZES, reference)
    workers = default_workers() if workers is None else workers
    with progress_bar(as_json) as start:
        advance = start("preparing faces", len(listing.paths))
        cache = run_prepare(listing, out, geometries, face.value, workers, chunk_size, device, advance, selection,
                            detector_kind=detector.value)
    summary = dict(
        cache=str(out), images=len(cache.paths), identities=len(cache.names),
        no_face=int((cache.status == NO_FACE).sum()), unreadable=int((cache.status == UNREADABLE).sum()),
        sizes=sorted(cache.geometries),
    )
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(f"{summary['images']} images of {summary['identities']} identities in {out} "
                   f"({summary['no_face']} without a face: centre crop, flagged; {summary['unreadable']} unreadable)")


@train_app.command(cls=ListOptions)
def train(
    config: str = typer.Option(..., "--config", "-c", help="Training config (.toml or .json), or the name of a bundled one, e.g. mobilefacenet-folders."),
    overrides: Optional[List[str]] = typer.Option(None, "--set", help="Override one value, e.g. --set run.epochs=2 (several: --set a=1 b=2)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Identity folders to train on (sets data.images; prepared once, cached)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run's last checkpoint."),
) -> None:
    """Train an embedding network on a prepared face cache; several GPUs: torchrun --nproc_per_node N $(which faceverify) train ..."""
    require("train", "train")
    from ..train.config import load_config
    from ..train.loop import train as run_training

    extra = [f"data.images={json.dumps(str(data))}"] if data is not None else []
    cfg = load_config(config, [*(overrides or []), *extra])
    with ExitStack() as bars:
        result = run_training(cfg, resume=resume, echo=typer.echo, progress=_epoch_bars(bars))
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return
    best = result["best_score"]
    typer.echo(f"trained {result['epoch']} epoch(s), {result['global_step']} steps; best validation accuracy "
               f"{'n/a' if best is None else f'{best:.4f}'}; checkpoints in {result['out']}/checkpoints")


def _epoch_bars(stack: ExitStack) -> Progress:
    """The training loop's ``progress(done, total, info)`` drawn as one bar per epoch with its running loss;
    each bar closes when its epoch's steps are done (before the epoch's report), the last one with ``stack``."""
    state: dict[str, Any] = dict(epoch=None, done=0, advance=None)

    def progress(done: int, total: int, info: dict[str, Any]) -> None:
        if info["epoch"] != state["epoch"]:
            start = stack.enter_context(progress_bar())
            state.update(epoch=info["epoch"], done=0, advance=start(f"epoch {info['epoch']}/{info['epochs']}", total))
        loss = info["loss"]
        state["advance"](done - state["done"], "loss -" if loss is None else f"loss {loss:.4f}")
        state["done"] = done
        if done >= total:
            stack.close()

    return progress


@train_app.command("export-model", cls=ListOptions)
def export_model(
    run: Path = typer.Argument(..., help="A training run directory (run.out of its config)."),
    name: Optional[str] = typer.Option(None, "--name", help="Model name (default: the config's name)."),
    models: Optional[Path] = ModelsDirOpt,
    root: Optional[Path] = typer.Option(None, "--root", help="LFW root for DevTrain/DevTest figures (default: $FACEVERIFY_LFW or the shared copy)."),
    no_lfw: bool = typer.Option(False, "--no-lfw", help="Skip the LFW figures."),
    cache: Optional[List[Path]] = typer.Option(None, "--cache", help="Extra face caches for evaluation images (e.g. the pairsDevTest cache)."),
    notes: str = typer.Option("", "--notes", help="Text for the card's notes: what this model is and is not."),
    device: Optional[str] = typer.Option(None, "--device", help="torch device (default: CUDA when available)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing model of that name."),
) -> None:
    """Write the run's best checkpoint as <models>/<name>.safetensors with a calibrated, evaluated model card."""
    require("train", "export-model")
    from ..eval.pairs import find_lfw_root
    from ..train.export import export_run

    lfw = None if no_lfw else find_lfw_root(root)
    card_path = export_run(run, name, models, lfw, cache or [], device, force, notes, progress=typer.echo)
    typer.echo(f"exported {card_path} (not made the default: write its name into {card_path.parent / 'DEFAULT'} "
               "to choose it)")


@train_app.command(cls=ListOptions)
def adapt(
    sources: Optional[List[Path]] = typer.Option(None, "--from", help="Unlabelled face images, video files (each track's faces are one person) or folders of them (several: --from a b c)."),
    ordinary: Optional[List[Path]] = typer.Option(None, "--ordinary", help="Photos in ordinary light (e.g. enrolment photos; files or folders, several: --ordinary a b), learnt from too, on which the base model's embeddings are kept."),
    from_gallery: Optional[str] = typer.Option(None, "--from-gallery", help="Also the faces a gallery (file or postgresql:// URL) kept at enrolment, without their names."),
    out: str = typer.Option(..., "--out", help="Name of the adapted model (written to the user models folder, or --models-dir)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Base model (default: the shipped default)."),
    epochs: int = typer.Option(AdaptSettings.epochs, "--epochs", help="Passes over the faces."),
    batch_size: int = typer.Option(AdaptSettings.batch_size, "--batch-size", help="Faces per step (each seen in two views)."),
    lr: float = typer.Option(AdaptSettings.lr, "--lr", help="Learning rate (AdamW, warm-up then cosine decay)."),
    temperature: float = typer.Option(AdaptSettings.temperature, "--temperature", help="NT-Xent temperature."),
    memory: int = typer.Option(AdaptSettings.memory_size, "--memory", help="Memory bank of past embeddings used as negatives (0: none)."),
    anchor: float = typer.Option(AdaptSettings.anchor_weight, "--anchor-weight", help="Weight of the pull toward the base model's embeddings."),
    free_camera: bool = typer.Option(not AdaptSettings.anchor_camera, "--free-camera/--anchor-camera", help="Anchor only the --ordinary faces (the camera's answer to NT-Xent alone), or every face (when no --ordinary faces are given, every face is anchored either way)."),
    train_stages: int = typer.Option(AdaptSettings.train_stages, "--train-stages", min=0, help="Only this many stage groups of the network learn, input side first (0: all; EdgeFace: stem, four stages, head; the default 4 leaves its last stage and head as they are)."),
    keep: float = typer.Option(AdaptSettings.keep, "--keep", min=0.0, max=1.0, help="Share of the change in weights the model keeps (the rest interpolated back toward the base)."),
    run: Optional[Path] = typer.Option(None, "--run", help="Run directory for checkpoints (default: runs/adapt-<out>)."),
    models: Optional[Path] = ModelsDirOpt,
    device: str = typer.Option(AdaptSettings.device, "--device", help="torch device (auto: CUDA when available)."),
    threads: int = typer.Option(AdaptSettings.threads, "--threads", help="CPU threads for torch (0: torch's default)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run from its last checkpoint."),
    force: bool = typer.Option(False, "--force", help="Replace an existing model of that name."),
) -> None:
    """Adapt a model to a camera from faces nobody labelled (NT-Xent over augmented views, anchored to the base)."""
    require("train", "adapt")
    from ..adapt.adaptation import adapt as run_adapt
    from ..modelcard import resolve_card

    base = model or resolve_card(None)[0].name
    faces: list[Path] = list(sources or [])
    if from_gallery is not None:
        faces.append(_gallery_face_folder(from_gallery))
    if not faces and not ordinary:
        raise FaceverifyError("give the faces to adapt to: --from FILES/FOLDERS and/or --from-gallery GALLERY")
    settings = AdaptSettings(base=base, name=out, out=str(run or Path("runs") / f"adapt-{out}"), epochs=epochs,
                             batch_size=batch_size, lr=lr, temperature=temperature, memory_size=memory,
                             anchor_weight=anchor, anchor_camera=not free_camera, train_stages=train_stages,
                             keep=keep, device=device, threads=threads)
    with ExitStack() as bars:
        card = run_adapt(faces, settings, list(ordinary or []), models, resume, force, typer.echo, _epoch_bars(bars))
    typer.echo(f"wrote {card}: uncalibrated; run `faceverify calibrate --model {out}` on labelled faces from this "
               "camera before using it")


def _gallery_face_folder(location: str) -> Path:
    """The kept faces of the gallery at ``location``, written (once) under the user cache dir for `adapt`."""
    from ..adapt.faces import gallery_faces
    from ..train.prepare import keyed_cache_dir
    from .core import _open_existing_gallery

    folder = keyed_cache_dir("gallery-faces", location)
    with _open_existing_gallery(location) as gallery:
        if gallery_faces(gallery, folder) == 0:
            raise FaceverifyError(f"{location}: the gallery kept no faces (enrolled with --no-keep-faces)")
    return folder


app.add_typer(train_app)  # prepare, train, export-model at the top level
