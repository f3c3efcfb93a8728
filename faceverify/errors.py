"""Errors that the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations

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
