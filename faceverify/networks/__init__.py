"""Embedding architectures, registered by the name that model cards use in their 'architecture' field: importing
the package registers the shipped ones (``dlib_resnet``, ``mobilefacenet``, ``edgeface_xs``, ``edgeface_xxs``);
``build`` makes one by name."""

from . import dlib_resnet, edgeface, mobilefacenet  # noqa: F401  (they register themselves)
from .registry import build, register

__all__ = ["build", "register"]
