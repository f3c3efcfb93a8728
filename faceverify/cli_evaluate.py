"""`faceverify evaluate ...`: accuracy on LFW protocols and pair lists, and open-set identification on LFW.

A typer sub-app over :mod:`faceverify.evaluate`; heavy imports happen inside the commands so that
`faceverify --help` stays fast. Errors are raised as FaceverifyError for :func:`faceverify.cli.run` to report.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any, Iterator, Optional

import typer

from .errors import FaceverifyError

evaluate_app = typer.Typer(
    name="evaluate",
    no_args_is_help=True,
    help="Measure accuracy on LFW or a pair list, with thresholds never chosen on the pairs they are scored on.",
)


class Protocol(str, Enum):
    devtest = "devtest"
    devtrain = "devtrain"
    view2 = "view2"


class EvalFace(str, Enum):
    center = "center"
    largest = "largest"


RootOpt = typer.Option(None, "--root", help="LFW root with the protocol files (default: $FACEVERIFY_LFW or ../shared/datasets/lfw).")
ModelOpt = typer.Option(None, "--model", "-m", help="Model name in the models directory (default: the shipped default).")
DeviceOpt = typer.Option(None, "--device", help="torch device, e.g. cpu or cuda (default: CUDA when available).")
JsonOpt = typer.Option(False, "--json", help="One JSON object with every figure.")
ScoresOpt = typer.Option(None, "--scores", help="Write one CSV row per pair with its similarity.")
PlotOpt = typer.Option(None, "--plot", help="Write the ROC curve (FAR on a log axis) as a PNG.")


def _face_opt(default: EvalFace) -> Any:
    return typer.Option(default, "--face", help="Which detected face an image stands for; no face: centre crop (counted).")


@contextmanager
def progress_bar() -> Iterator[Any]:
    """A ``start(label, total) -> advance(n)`` callback drawing rich progress bars on stderr, or None when
    stderr is not a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:

        def start(label: str, total: int):
            task = bar.add_task(label, total=total)
            return lambda n: bar.advance(task, n)

        yield start


def _aligned(head: str, rows: list[tuple[str, str]]) -> list[str]:
    width = max(len(k) for k, _ in rows) + 2
    return [head] + [f"{k:<{width}}{v}" for k, v in rows]


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def verification_lines(report: dict[str, Any]) -> list[str]:
    """A verification report as a heading and aligned ``name  value`` lines."""
    accuracy = _pct(report["accuracy"])
    if report["accuracy_std"] is not None:
        accuracy += f" ± {_pct(report['accuracy_std'])} over {len(report['fold_thresholds'])} folds"
    rows = [
        ("model", f"{report['model']} ({report['model_id']})"),
        ("accuracy", f"{accuracy} at threshold {report['threshold']:.4f} ({report['threshold_source']})"),
    ]
    card = report.get("at_card_threshold")
    if card is not None:
        rows.append((f"at card FAR={card['far']}", f"{_pct(card['accuracy'])} at threshold {card['threshold']:.4f} "
                                                   f"(TAR {_pct(card['tar'])}, measured FAR {_pct(card['achieved_far'])})"))
    rows += [("AUC", f"{report['auc']:.4f}"), ("EER", _pct(report["eer"]))]
    rows += [(f"TAR@FAR={k}", _pct(v)) for k, v in report["tar_at_far"].items()]
    head = (f"{report['protocol']}: {report['pairs']} pairs ({report['same']} same, {report['different']} different), "
            f"{report['images']} images, {report['no_face']} without a detected face (centre crop used)")
    return _aligned(head, rows)


def identification_lines(report: dict[str, Any]) -> list[str]:
    """An open-set identification report as a heading and aligned ``name  value`` lines."""
    rows = [("model", f"{report['model']} ({report['model_id']})"), ("rank-1", _pct(report["rank1"]))]
    for key, rate in report["dir_at_fpir"].items():
        thr = report["thresholds"][key]
        rows.append((f"DIR@FPIR={key}", "n/a" if thr is None else
                     f"{_pct(rate)} at threshold {thr:.4f} (measured FPIR {_pct(report['fpir'][key])})"))
    d = report.get("default_point")
    if d is not None:
        rows.append(("identify's default", f"threshold {d['threshold']:.4f} (FAR {d['far']:.1e}, FPIR bound "
                     f"{_pct(d['fpir_bound'])}): measured FPIR {_pct(d['fpir'])}, DIR {_pct(d['dir'])}"))
    head = (f"{report['protocol']}: {report['gallery']} enrolled identities, {report['mated']} mated and "
            f"{report['non_mated']} never-enrolled probes; {report['images']} images, "
            f"{report['no_face']} without a detected face (centre crop used)")
    return _aligned(head, rows)


def _emit(report: dict[str, Any], lines: list[str], as_json: bool) -> None:
    typer.echo(json.dumps(report) if as_json else "\n".join(lines))


def _pipeline(model: Optional[str], device: Optional[str]):
    """The product's pipeline for ``model`` and the embedding cache of its model id."""
    from .cache import EmbeddingCache
    from .pipeline import FacePipeline

    pipeline = FacePipeline(model, device)
    return pipeline, EmbeddingCache(pipeline.card.model_id)


def lfw_root_or_fail(root: Optional[Path]) -> Path:
    """The LFW root from ``--root``, ``$FACEVERIFY_LFW`` or the shared copy; FaceverifyError when none exists."""
    from .pairs import find_lfw_root

    found = find_lfw_root(root)
    if found is None:
        raise FaceverifyError("LFW not found: pass --root DIR or set FACEVERIFY_LFW")
    return found


@evaluate_app.command("lfw")
def lfw(
    root: Optional[Path] = RootOpt,
    protocol: Protocol = typer.Option(Protocol.devtest, "--protocol", help="devtest (threshold from DevTrain), "
                                      "devtrain, or view2 (10-fold; only for models never trained on LFW)."),
    model: Optional[str] = ModelOpt,
    device: Optional[str] = DeviceOpt,
    as_json: bool = JsonOpt,
    scores: Optional[Path] = ScoresOpt,
    plot: Optional[Path] = PlotOpt,
    face: EvalFace = _face_opt(EvalFace.center),
) -> None:
    """Verification accuracy, AUC, EER and TAR at FAR 1e-2/1e-3 on an LFW pairs protocol."""
    from .evaluate import evaluate_lfw

    lfw_dir = lfw_root_or_fail(root)
    pipeline, cache = _pipeline(model, device)
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
    as_json: bool = JsonOpt,
    scores: Optional[Path] = ScoresOpt,
    plot: Optional[Path] = PlotOpt,
    face: EvalFace = _face_opt(EvalFace.largest),
) -> None:
    """Verification figures on your own pair list."""
    from .evaluate import evaluate_pairs

    pipeline, cache = _pipeline(model, device)
    with progress_bar() as start:
        report = evaluate_pairs(pipeline, pair_file, threshold, face.value, cache, progress=start,
                                scores_path=scores, plot_path=plot)
    _emit(report, verification_lines(report), as_json)


@evaluate_app.command("identify")
def identify(
    root: Optional[Path] = RootOpt,
    model: Optional[str] = ModelOpt,
    device: Optional[str] = DeviceOpt,
    as_json: bool = JsonOpt,
    face: EvalFace = _face_opt(EvalFace.center),
) -> None:
    """Open-set identification on LFW DevTest: rank-1, and DIR at FPIR 1% and 10%."""
    from .evaluate import evaluate_identification

    lfw_dir = lfw_root_or_fail(root)
    pipeline, cache = _pipeline(model, device)
    with progress_bar() as start:
        report = evaluate_identification(pipeline, lfw_dir, face.value, cache, progress=start)
    _emit(report, identification_lines(report), as_json)
