"""What the developer tools share: the repository root, the development LFW and MiniFASNet locations, a progress bar, and the
error a benchmark stops with when its peer did not really run."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from faceverify.errors import FaceverifyError
from faceverify.eval.pairs import LFW_ENV, find_lfw_root

REPO_ROOT = Path(__file__).resolve().parents[1]
DEV_LFW = REPO_ROOT.parent / "shared" / "datasets" / "lfw"
"""Where a development checkout keeps LFW; the tools fall back to it, the package never does."""
DEV_MINIFASNET = REPO_ROOT.parent / "shared" / "weights" / "minifasnet"
"""Where a development checkout keeps MiniFASNet's state dicts, samples and reference outputs."""


def lfw_root(explicit: Path | None = None, option: str = "--lfw") -> Path:
    """The LFW root: ``explicit``, else ``$FACEVERIFY_LFW``, else :data:`DEV_LFW`; exits with a one-line message
    naming ``option`` (the tool's flag) when none is a directory."""
    try:
        found = find_lfw_root(explicit)
    except FaceverifyError as exc:
        raise SystemExit(f"error: {exc}") from None
    if found is not None:
        return found
    if DEV_LFW.is_dir():
        return DEV_LFW
    raise SystemExit(f"error: LFW not found: pass {option} DIR, set {LFW_ENV}, or place it at {DEV_LFW}")


class PeerFailed(SystemExit):
    """A peer that did not run or did not produce what it should: the benchmark stops (exit status 1) with this
    message instead of printing figures that compare against nothing."""

    def __init__(self, peer: str, reason: str):
        super().__init__(f"error: peer {peer} did not run properly: {reason}")


@contextmanager
def progress_bar() -> Iterator[Callable[[str, int], Callable[[int], Any]] | None]:
    """A ``start(label, total) -> advance(n)`` callback drawing rich progress bars on stderr, or None when
    stderr is not a terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:

        def start(label: str, total: int) -> Callable[[int], Any]:
            task = bar.add_task(label, total=total)
            return lambda n: bar.advance(task, n)

        yield start
