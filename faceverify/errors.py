"""Errors that the CLI turns into a one-line message and exit code 2, and the check that a command's optional part
(a pip extra) is installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path


class FaceverifyError(Exception):
    """A problem the user can act on: bad input, missing model, bad gallery state."""


class BadInputError(FaceverifyError):
    """An input file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class NoFaceError(BadInputError):
    """An image in which the detector found no face."""

    def __init__(self, path: str | Path):
        super().__init__(path, "no face found")


class ImageTooLargeError(BadInputError):
    """An image over the pixel limit (or too large to decode in memory): refused before or while decoding."""


class ModelError(FaceverifyError):
    """A model card or weights file that is missing, malformed or inconsistent."""


class OperatingPointError(FaceverifyError):
    """A threshold, false-accept rate or FPIR out of range, or one the model's calibration cannot give."""


class GalleryError(FaceverifyError):
    """A gallery that cannot be opened or an operation it refuses."""


class UnknownIdentityError(GalleryError):
    """No identity of that name in the gallery."""


class InvalidNameError(GalleryError):
    """An identity name the gallery refuses (empty, too long, control or invisible characters, separators...)."""


class ConflictError(GalleryError):
    """An operation that conflicts with what the gallery holds: a name taken (or a lookalike of one), a gallery
    enrolled with another model or embedding size, nothing enrolled yet to search."""


class LowQualityError(BadInputError):
    """An image whose face is below the enrolment quality limits (faceverify.quality.limits): the reason names the
    measure, its value and the limit."""


# -- The optional parts (pip extras): what each needs importable, and the one-line error when it is missing. The
# default install answers (verify, enroll, identify, gallery, evaluate) with ONNX Runtime and OpenCV alone.

EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "train": ("training", ("torch", "torchvision", "facenet_pytorch", "pytorch_metric_learning", "timm", "safetensors",
                           "onnx")),
    "serve": ("service", ("fastapi", "uvicorn", "multipart")),
    "postgres": ("PostgreSQL", ("psycopg", "psycopg_pool", "pgvector")),
    "plots": ("plotting", ("matplotlib",)),
}
"""extra -> (what it is called in messages, the top-level modules it provides)."""


class MissingExtraError(FaceverifyError):
    """A command or option needs an extra that is not installed."""


def extra_for_module(module: str | None) -> str | None:
    """The extra that provides top-level module ``module`` (of ``a.b.c``, ``a``), or None."""
    top = (module or "").split(".")[0]
    return next((extra for extra, (_label, modules) in EXTRAS.items() if top in modules), None)


def missing_message(extra: str, what: str) -> str:
    """``<what> needs the <label> extra: pip install 'faceverify[<extra>]'``."""
    return f"{what} needs the {EXTRAS[extra][0]} extra: pip install 'faceverify[{extra}]'"


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` naming ``what`` (a command or option) unless ``extra`` is installed."""
    if any(importlib.util.find_spec(module) is None for module in EXTRAS[extra][1]):
        raise MissingExtraError(missing_message(extra, what))
