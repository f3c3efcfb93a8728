"""Small helpers every layer uses: hashing, atomic file writes, small JSON cards, device choice, ONNX Runtime
sessions, chunked SQL parameter lists.

Nothing here imports torch at module level: the inference path must be able to start without it.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, TypeVar

from .errors import ModelError

if TYPE_CHECKING:
    import onnxruntime
    import torch

T = TypeVar("T")

SQL_CHUNK = 500
"""Most parameters bound in one ``IN (?, ...)`` list (SQLite's limit is 999 on old builds)."""


def read_card(make: Callable[..., T], path: str | Path, kind: str, max_bytes: int) -> T:
    """``make(**fields)`` of the JSON object in ``path`` (at most ``max_bytes``); ModelError naming the file and the
    ``kind`` of card for anything unreadable, too large, or not the card's fields."""
    path = Path(path)
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8")) if path.stat().st_size <= max_bytes else None
        return make(**data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, TypeError) as exc:
        raise ModelError(f"{path}: unreadable {kind} card ({type(exc).__name__}: {exc})") from None


def sha256_bytes(data: bytes | memoryview) -> str:
    """Hex sha256 of bytes already in memory."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it atomically replaces ``path``, when it
    fails the temporary file is removed and ``path`` is untouched. For writers that want a file name."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: bytes | memoryview | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` so that readers see the old file or the new one, never half."""
    with replacing(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)


def pick_device(device: "str | torch.device | None" = None) -> "torch.device":
    """CUDA when available, else CPU, unless the caller names one."""
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def onnx_session(model: bytes, threads: int | None = None) -> "onnxruntime.InferenceSession":
    """A quiet ONNX Runtime CPU session of ``model``; ``threads`` caps its intra-op threads (None: its default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def chunked(items: Sequence[T], size: int = SQL_CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size`` (for SQL ``IN`` lists)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def placeholders(n: int) -> str:
    """``?,?,...`` with ``n`` marks, for an ``IN (...)`` clause."""
    return ",".join("?" * n)
