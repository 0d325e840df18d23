"""The loss interface the training engine calls for every method, and the loss registry (filled by each loss
module; :mod:`.factory` imports them all)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor, nn

from ..registry import Registry

__all__ = ["StepInfo", "LossOutput", "FERLoss", "LOSSES", "register_loss"]


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


LOSSES: Registry[Callable[..., FERLoss]] = Registry("loss")


def register_loss(name: str) -> Callable[[Callable[..., FERLoss]], Callable[..., FERLoss]]:
    """Register a loss factory under the name of the model it trains (``"arbex"``, ``"arm"``, ...); once: a name
    registered twice raises ``ValueError``."""
    return LOSSES.register(name)
