"""Building a method's loss by name: importing this module imports every loss module, which registers itself."""

from __future__ import annotations

from . import adcorre, arbex, arm, ce, diversity, esr, manet, scn  # noqa: F401  (each registers its losses)
from ._base import LOSSES, FERLoss

__all__ = ["create_loss", "list_losses"]


def list_losses() -> list[str]:
    """Names of every registered loss (the methods they train)."""
    return LOSSES.names()


def create_loss(name: str, **kwargs) -> FERLoss:
    """Build the loss registered for a method, e.g. ``create_loss("arbex", class_weights=w)``."""
    if name not in LOSSES:
        raise KeyError(f"no loss registered for {name!r}; known: {', '.join(LOSSES.names())}")
    return LOSSES.get(name)(**kwargs)
