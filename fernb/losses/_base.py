"""The loss interface the training engine calls for every method, and the loss registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor, nn

__all__ = ["StepInfo", "LossOutput", "FERLoss", "register_loss", "create_loss", "list_losses"]


@dataclass(frozen=True)
class StepInfo:
    """Where training is, for losses whose weights change over time (ARBEx's trust ramp, ESR's branch schedule).

    Attributes:
        epoch: 0-based epoch.
        step: global optimisation step.
        num_epochs: planned epochs.
        progress: fraction of training done, in [0, 1].
    """

    epoch: int = 0
    step: int = 0
    num_epochs: int = 1
    progress: float = 0.0


@dataclass
class LossOutput:
    """``total`` is what the engine back-propagates; ``terms`` are the named parts it logs (detached by the engine)."""

    total: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


class FERLoss(nn.Module):
    """A method's loss: ``loss(output, target, dist=None, info=StepInfo()) -> LossOutput``.

    ``output`` is the model's output dataclass, ``target`` (B,) label indices, ``dist`` (B, C) label distributions
    when the data has them.
    """

    def forward(self, output, target: Tensor, dist: Tensor | None = None, info: StepInfo | None = None) -> LossOutput:
        raise NotImplementedError


_LOSSES: dict[str, Callable[..., FERLoss]] = {}


def register_loss(name: str) -> Callable[[Callable[..., FERLoss]], Callable[..., FERLoss]]:
    """Register a loss factory under the name of the model it trains (``"arbex"``, ``"arm"``, ...)."""

    def deco(fn: Callable[..., FERLoss]) -> Callable[..., FERLoss]:
        if name in _LOSSES:
            raise ValueError(f"loss {name!r} is registered twice")
        _LOSSES[name] = fn
        return fn

    return deco


def _ensure_losses() -> None:
    from ..models import _families  # noqa: F401  (model families import their losses)
    from . import _families as _lf  # noqa: F401


def list_losses() -> list[str]:
    _ensure_losses()
    return sorted(_LOSSES)


def create_loss(name: str, **kwargs) -> FERLoss:
    """Build the loss registered for a method, e.g. ``create_loss("arbex", class_weights=w)``."""
    _ensure_losses()
    try:
        return _LOSSES[name](**kwargs)
    except KeyError:
        raise KeyError(f"no loss registered for {name!r}; known: {', '.join(sorted(_LOSSES))}") from None
