"""The `faceverify` command: a thin typer layer over faceverify.api.

Exit codes: 0 success (verify: same person), 1 verify: different people, 2 error (nothing changed),
3 partial: some inputs failed and were reported, the rest were processed.

The app, exit codes, shared options, error line and progress bar live in :mod:`.options`; the commands in
:mod:`.core` (verify, enroll, identify, gallery, models, calibrate), :mod:`.liveness`, :mod:`.reembed` (gallery reembed),
:mod:`.demo`, :mod:`.evaluate` and :mod:`.train` register themselves on the app when imported below. Nothing here
imports torch.
"""

from __future__ import annotations

import os
import sys
import warnings

import typer

from ..errors import FaceverifyError
from ..errors import extra_for_module, missing_message
from .options import EXIT_DIFFERENT, EXIT_ERROR, EXIT_PARTIAL, app, err
from . import core, liveness, reembed, demo, evaluate, train, serve  # noqa: F401  (register the commands, in --help order)

__all__ = ["EXIT_DIFFERENT", "EXIT_ERROR", "EXIT_PARTIAL", "app", "main", "run"]


def _warn_one_line(message, *_args, **_kwargs) -> None:
    """``warnings.showwarning`` for the CLI: one line on stderr."""
    typer.echo(f"faceverify: warning: {message}", err=True)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` and return its exit code: errors become one line on stderr, never a traceback."""
    warnings.showwarning = _warn_one_line
    try:
        code = app(args=argv, standalone_mode=False, prog_name="faceverify")
        return int(code or 0)
    except typer.Exit as exc:
        return exc.exit_code
    except FaceverifyError as exc:
        err(str(exc))
        return EXIT_ERROR
    except ModuleNotFoundError as exc:  # a module of an extra that is not installed, reached past the checks
        extra = extra_for_module(exc.name)
        if extra is None:
            return _internal_error(exc)
        err(missing_message(extra, _command(argv)))
        return EXIT_ERROR
    except (KeyboardInterrupt, typer.Abort):
        err("interrupted")
        return 130
    except typer.TyperException as exc:  # usage errors: typer prints them as click does
        exc.show()  # type: ignore[attr-defined]
        return int(getattr(exc, "exit_code", EXIT_ERROR))
    except Exception as exc:  # noqa: BLE001 - the CLI promises no traceback
        return _internal_error(exc)


def _internal_error(exc: Exception) -> int:
    """One line for an error nobody foresaw (the traceback with ``FACEVERIFY_DEBUG=1``)."""
    if os.environ.get("FACEVERIFY_DEBUG"):
        raise exc
    err(f"internal error: {type(exc).__name__}: {exc} (set FACEVERIFY_DEBUG=1 for the traceback)")
    return EXIT_ERROR


def _command(argv: list[str] | None) -> str:
    """The command as typed (with its subcommand for the groups), for messages."""
    words = []
    for word in sys.argv[1:] if argv is None else argv:
        if word.startswith("-"):
            break
        words.append(word)
    return " ".join(words[: 2 if words[:1] in (["gallery"], ["evaluate"]) else 1]) or "faceverify"


def main() -> None:
    """Console entry point."""
    sys.exit(run())
