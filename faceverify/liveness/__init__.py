"""Liveness (presentation-attack detection): whether a detected face is a live person or a print or screen held
up to the camera. :class:`LivenessChecker` runs the shipped MiniFASNet pair (``models/liveness/``) on ONNX
Runtime; :mod:`.crop` is the crop they were trained on."""

from .checker import Liveness, LivenessCard, LivenessChecker, liveness_card_path

__all__ = ["Liveness", "LivenessCard", "LivenessChecker", "liveness_card_path"]
