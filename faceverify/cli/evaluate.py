"""`faceverify evaluate ...`: accuracy on LFW protocols and pair lists, and open-set identification on LFW or folders.

A typer sub-app over :mod:`faceverify.eval.evaluate`; heavy imports happen inside the commands so that
`faceverify --help` stays fast. Errors are raised as FaceverifyError for :func:`faceverify.cli.run` to report;
the reports' text lines come from :mod:`faceverify.eval.report`.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from ..errors import require
from .options import DeviceOpt, FlipOpt, MatchOpt, ModelOpt, app, progress_bar

if TYPE_CHECKING:
    from ..eval.cache import EmbeddingCache
    from ..pipeline import FacePipeline

evaluate_app = typer.Typer(
    name="evaluate",
    no_args_is_help=True,
    help="Measure accuracy on LFW or a pair list, with thresholds never chosen on the pairs they are scored on.",
)


class Protocol(str, Enum):
    """LFW pairs protocols: DevTest (threshold from DevTrain), DevTrain, or View 2's ten folds."""

    devtest = "devtest"
    devtrain = "devtrain"
    view2 = "view2"


class EvalFace(str, Enum):
    """Which detected face an evaluation image stands for."""

    center = "center"
    largest = "largest"


class EnrolBy(str, Enum):
    """Which images of an identity an identification protocol enrols (faceverify.eval.identify.ENROL_BY)."""

    first = "first"
    quality = "quality"


RootOpt = typer.Option(None, "--root", help="LFW root with the protocol files (default: $FACEVERIFY_LFW; make sets it to ../shared/datasets/lfw when that exists).")
ReportJsonOpt = typer.Option(False, "--json", help="One JSON object with every figure.")
ScoresOpt = typer.Option(None, "--scores", help="Write one CSV row per pair with its similarity.")


def _plots_installed(path: Optional[Path]) -> Optional[Path]:
    """--plot's check, as the command line is read: matplotlib is the plots extra."""
    if path is not None:
        require("plots", "--plot")
    return path


PlotOpt = typer.Option(None, "--plot", callback=_plots_installed, help="Write the ROC curve (FAR on a log axis) as a "
                       "PNG (needs the plots extra).")


def _face_opt(default: EvalFace) -> Any:
    """The --face option with a per-command default."""
    return typer.Option(default, "--face", help="Which detected face an image stands for; no face: centre crop (counted).")


def _emit(report: dict[str, Any], lines: list[str], as_json: bool) -> None:
    """The report as one JSON object, or as its text lines."""
    typer.echo(json.dumps(report) if as_json else "\n".join(lines))


def _pipeline(model: Optional[str], device: Optional[str], flip: bool = False) -> tuple[FacePipeline, EmbeddingCache]:
    """The product's pipeline for ``model`` and the embedding cache of its model id."""
    from ..eval.cache import EmbeddingCache
    from ..pipeline import FacePipeline

    pipeline = FacePipeline(model, device, flip=flip)
    return pipeline, EmbeddingCache(pipeline.card.model_id)


@evaluate_app.command("lfw")
def lfw(
    root: Optional[Path] = RootOpt,
    protocol: Protocol = typer.Option(Protocol.devtest, "--protocol", help="devtest (threshold from DevTrain), "
                                      "devtrain, or view2 (10-fold; only for models never trained on LFW)."),
    model: Optional[str] = ModelOpt,
    device: Optional[str] = DeviceOpt,
    as_json: bool = ReportJsonOpt,
    scores: Optional[Path] = ScoresOpt,
    plot: Optional[Path] = PlotOpt,
    face: EvalFace = _face_opt(EvalFace.center),
    flip: bool = FlipOpt,
) -> None:
    """Verification accuracy, AUC, EER and TAR at FAR 1e-2/1e-3 on an LFW pairs protocol."""
    from ..eval.evaluate import evaluate_lfw
    from ..eval.pairs import require_lfw_root
    from ..eval.report import verification_lines

    lfw_dir = require_lfw_root(root)
    pipeline, cache = _pipeline(model, device, flip)
    with progress_bar() as start:
        report = evaluate_lfw(pipeline, lfw_dir, protocol.value, face.value, cache, progress=start,
                              scores_path=scores, plot_path=plot)
    _emit(report, verification_lines(report), as_json)


@evaluate_app.command("pairs")
def pairs(
    pair_file: Path = typer.Argument(..., help="Lines 'path1<TAB>path2<TAB>1|0[<TAB>fold]'; relative paths "
                                                "are read from the file's directory."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Decide at this similarity (default: the "
                                              "card's FAR=1e-3 threshold; with a fold column: the k-fold rule)."),
    model: Optional[str] = ModelOpt,
    device: Optional[str] = DeviceOpt,
    as_json: bool = ReportJsonOpt,
    scores: Optional[Path] = ScoresOpt,
    plot: Optional[Path] = PlotOpt,
    face: EvalFace = _face_opt(EvalFace.largest),
    flip: bool = FlipOpt,
) -> None:
    """Verification figures on your own pair list."""
    from ..eval.evaluate import evaluate_pairs
    from ..eval.report import verification_lines

    pipeline, cache = _pipeline(model, device, flip)
    with progress_bar() as start:
        report = evaluate_pairs(pipeline, pair_file, threshold, face.value, cache, progress=start,
                                scores_path=scores, plot_path=plot)
    _emit(report, verification_lines(report), as_json)


@evaluate_app.command("identify")
def identify(
    data: Optional[Path] = typer.Argument(None, help="DIR/<identity>/*.jpg to split into enrolled and never-enrolled "
                                          "identities (default: LFW DevTest's protocol)."),
    root: Optional[Path] = RootOpt,
    people: Optional[Path] = typer.Option(None, "--people", help="With DIR: only the identities named in this LFW "
                                          "people file (e.g. peopleDevTest.txt)."),
    enrol: int = typer.Option(1, "--enrol", help="With DIR: images enrolled per enrolled identity (its first ones)."),
    share: float = typer.Option(0.5, "--enrolled-share", help="With DIR: share of the identities with more than "
                                "--enrol images that are enrolled (seeded); the rest are never enrolled."),
    seeds: int = typer.Option(1, "--seeds", help="With DIR: pool this many splits (seeds 0, 1, ...)."),
    match: MatchOpt = typer.Option(MatchOpt.template, "--match", help="template: one template per identity (mean of its "
                                "embeddings); best: the identity's best stored embedding."),
    model: Optional[str] = ModelOpt,
    device: Optional[str] = DeviceOpt,
    as_json: bool = ReportJsonOpt,
    face: Optional[EvalFace] = typer.Option(None, "--face", help="Which detected face an image stands for (default: "
                                            "center on LFW, largest on DIR); no face: centre crop (counted)."),
    flip: bool = FlipOpt,
    enrol_by: EnrolBy = typer.Option(EnrolBy.first, "--enrol-by", help="Which images of an identity are enrolled: "
                                     "its first ones, or those whose face has the best quality score."),
) -> None:
    """Open-set identification: rank-1, DIR at FPIR 1% and 10%, and FPIR at identify's default."""
    from ..eval.report import identification_lines

    pipeline, cache = _pipeline(model, device, flip)
    if data is None:
        from ..eval.evaluate import evaluate_identification
        from ..eval.pairs import require_lfw_root

        lfw_dir = require_lfw_root(root)
        with progress_bar() as start:
            report = evaluate_identification(pipeline, lfw_dir, (face or EvalFace.center).value, cache, progress=start,
                                             match=match.value, enrol_by=enrol_by.value)
    else:
        from ..eval.identify import evaluate_folder_identification
        from ..eval.pairs import read_lfw_people

        chosen = dict(read_lfw_people(people)) if people is not None else None
        with progress_bar() as start:
            report = evaluate_folder_identification(
                pipeline, data, chosen, enrol, share, tuple(range(seeds)), (face or EvalFace.largest).value, cache,
                progress=start, match=match.value, enrol_by=enrol_by.value,
            )
    _emit(report, identification_lines(report), as_json)


app.add_typer(evaluate_app, name="evaluate")
