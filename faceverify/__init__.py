"""faceverify: face verification and identification with calibrated thresholds.

The flow is image -> detect -> align -> embed -> decide; :class:`FaceVerifier` bundles it::

    from faceverify import FaceVerifier
    fv = FaceVerifier()                      # the shipped default model, CPU or CUDA
    result = fv.verify("a.jpg", "b.jpg")     # result.same, result.similarity, result.threshold, result.far
"""

from .errors import BadInputError, FaceverifyError, GalleryError, ModelError, NoFaceError

__version__ = "0.1.0"

__all__ = ["FaceVerifier", "BadInputError", "FaceverifyError", "GalleryError", "ModelError", "NoFaceError"]


def __getattr__(name: str):
    """Import the heavy API (torch) only when it is used, so `faceverify --help` starts fast."""
    if name == "FaceVerifier":
        from .api import FaceVerifier

        return FaceVerifier
    raise AttributeError(name)
