"""The registry of embedding architectures, by the name that model cards use in their 'architecture' field."""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..errors import ModelError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Class decorator: make an architecture constructible from a model card."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = builder
        return builder

    return wrap


def build(name: str, embedding_size: int) -> nn.Module:
    """Instantiate a registered architecture (weights not loaded)."""
    if name not in _REGISTRY:
        raise ModelError(f"unknown architecture '{name}' (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name](embedding_size=embedding_size)
