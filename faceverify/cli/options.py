"""What every `faceverify` command shares: the typer app, exit codes, the common options, the error line and
the progress bar. Imports nothing heavy, so that `faceverify --help` stays fast."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Iterator

import typer
from typer.core import TyperCommand

if TYPE_CHECKING:
    from ..eval.evaluate import StartProgress

EXIT_DIFFERENT = 1
EXIT_ERROR = 2
EXIT_PARTIAL = 3

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Face verification and identification with calibrated thresholds.",
)


class ListOptions(TyperCommand):
    """A command whose repeatable options also take several values after one flag: ``--from a b c`` is read as
    ``--from a --from b --from c``. The values run up to the next word that starts with ``-`` (or ``--``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        repeatable = {flag for p in self.params if p.param_type_name == "option" and p.multiple
                      and not getattr(p, "is_flag", False) for flag in p.opts}
        spread: list[str] = []
        flag, values = None, 0
        for i, word in enumerate(args):
            if word == "--":
                spread += args[i:]
                break
            if word.startswith("-"):
                name = word.split("=", 1)[0]
                flag, values = (name, int("=" in word)) if name in repeatable else (None, 0)
                spread.append(word)
            elif flag is not None:
                spread += [flag, word] if values else [word]
                values += 1
            else:
                spread.append(word)
        return super().parse_args(ctx, spread)


class FaceOpt(str, Enum):
    """Which faces count in an image holding several."""

    largest = "largest"
    center = "center"
    all = "all"


ModelOpt = typer.Option(None, "--model", "-m", help="Model name, as `faceverify models` lists them (default: the default model).")
DeviceOpt = typer.Option(None, "--device", help="torch device, e.g. cpu or cuda (default: CUDA when available).")
GalleryOpt = typer.Option(None, "--gallery", "-g", help="Gallery file, or postgresql://user@host/db "
                         "(default: $FACEVERIFY_GALLERY, else the user data dir).")
FarOpt = typer.Option(None, "--far", help="False-accept rate of one comparison whose calibrated threshold decides "
                      "(verify: default 1e-3; identify: default from --fpir).")
ThresholdOpt = typer.Option(None, "--threshold", help="Cosine similarity threshold; overrides --far.")
JsonOpt = typer.Option(False, "--json", help="Machine-readable JSON output.")
FaceChoiceOpt = typer.Option(FaceOpt.largest, "--face", help="Which faces count in an image holding several.")


class BackendOpt(str, Enum):
    """Which runtime runs the embedding network."""

    torch = "torch"
    onnx = "onnx"


class DetectorOpt(str, Enum):
    """Which face detector finds faces and their landmarks."""

    yunet = "yunet"
    yunet_onet = "yunet-onet"
    mtcnn = "mtcnn"
    mtcnn_onnx = "mtcnn-onnx"


class MatchOpt(str, Enum):
    """What identification compares a face with (faceverify.decision.MATCHES)."""

    template = "template"
    best = "best"


MatchChoiceOpt = typer.Option(None, "--match", help="Compare each face with one template per identity (stills' "
                              "default) or with every stored embedding, the best one counting (best; video's "
                              "default, where the templates must also rank the same person first).")
FlipOpt = typer.Option(False, "--flip", help="Embed each face together with its mirror image (averaged): more "
                       "accurate, twice the network's work (BENCHMARKS.md). Galleries enrolled with and without it "
                       "are kept apart; the card's thresholds were calibrated without it.")
BackendChoiceOpt = typer.Option(None, "--backend", help="Embedding runtime (default: onnx on CPU when onnxruntime "
                                "is installed and the model has an ONNX export, else torch; --device cuda: torch).")
DetectorChoiceOpt = typer.Option(None, "--detector", help="Face detector (default on CPU: yunet-onet, YuNet's faces "
                                 "with MTCNN's landmarks; --device cuda: mtcnn). yunet: YuNet's own landmarks; "
                                 "mtcnn: facenet-pytorch's (torch); mtcnn-onnx: the same cascade and weights on ONNX "
                                 "Runtime (CPU, no torch).")
LivenessOpt = typer.Option(False, "--liveness", help="Judge each face live or a presentation attack (a print, a "
                           "screen; MiniFASNet): a face judged not live is never named (verify: image B, the probe).")
LivenessThresholdOpt = typer.Option(None, "--liveness-threshold", help="Live when the live probability reaches "
                                    "this (default: when live is the most probable class, the authors' rule).")
ThreadsOpt = typer.Option(1, "--threads", min=1, max=256, help="CPU threads for the detector and the network "
                          "(default 1: small jobs on shared machines run fastest so).")


def err(message: str) -> None:
    """One error line on stderr."""
    typer.echo(f"faceverify: error: {message}", err=True)


@contextmanager
def progress_bar(quiet: bool = False) -> Iterator[StartProgress]:
    """Yield ``start(label, total) -> advance(n, note=None)``, drawing transient rich progress bars on stderr
    (``note``, e.g. a running loss, is shown beside the count); nothing is drawn when ``quiet`` or when stderr
    is not a terminal, and the callbacks still work."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
               TimeRemainingColumn())
    hidden = quiet or not sys.stderr.isatty()
    with Progress(*columns, console=Console(stderr=True), transient=True, disable=hidden) as bar:

        def start(label: str, total: int) -> Callable[..., None]:
            task = bar.add_task(label, total=total, note="")

            def advance(n: int, note: str | None = None) -> None:
                bar.update(task, advance=n, **({} if note is None else dict(note=note)))

            return advance

        yield start
