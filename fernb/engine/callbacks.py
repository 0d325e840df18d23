"""Hooks into the training loop: the :class:`Callback` base, and the callbacks the engine itself uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from ..losses import StepInfo

if TYPE_CHECKING:  # annotations only: the loop imports this module
    from .fit import FitResult, Trainer

__all__ = ["Callback", "FunctionCallback", "History", "TrustRamp"]


class Callback:
    """Hooks into the loop. Override what you need; every method is optional.

    ``on_epoch_end(metrics)`` receives the epoch's row (the one written to ``metrics.csv``), which is what a
    notebook needs to draw live curves. Under DDP callbacks run on every process (``trainer.env.is_main`` tells
    the main one). ``on_train_step_start`` also runs during the budget recipe's timing steps (on throw-away copies).
    """

    def on_fit_start(self, trainer: Trainer) -> None:
        pass

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        pass

    def on_train_step_start(self, trainer: Trainer, info: StepInfo) -> None:
        pass

    def on_step_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        pass

    def on_validation_start(self, trainer: Trainer) -> None:
        pass

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        pass

    def on_fit_end(self, result: FitResult) -> None:
        pass


class FunctionCallback(Callback):
    """A plain function called with every epoch's metrics row."""

    def __init__(self, fn: Callable[[dict[str, Any]], Any]) -> None:
        self.fn = fn

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        self.fn(metrics)


class History(Callback):
    """Collects the epoch rows (``history.rows``)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        self.rows.append(dict(metrics))


class _TrustingModel(Protocol):
    """A model that predicts at a settable trust (ARBEx)."""

    trust: float


class _TrustLoss(Protocol):
    """A loss that ramps the trust over training (ARBEx's)."""

    def trust(self, info: StepInfo | None) -> float: ...


class TrustRamp(Callback):
    """ARBEx's trust ramp: while training, a model with a ``trust`` attribute predicts at the trust its loss ramps
    (``loss.trust(info)``); for validation it goes back to its configured trust (``config.trust``, else 1), so that
    train accuracy and validation each read the distribution they train and select on. The engine adds it when the
    model and the loss both have a trust."""

    @staticmethod
    def applies(model: Any, loss: Any) -> bool:
        return hasattr(model, "trust") and callable(getattr(loss, "trust", None))

    def on_train_step_start(self, trainer: Trainer, info: StepInfo) -> None:
        cast(_TrustingModel, trainer.model).trust = cast(_TrustLoss, trainer.loss_fn).trust(info)

    def on_validation_start(self, trainer: Trainer) -> None:
        cast(_TrustingModel, trainer.model).trust = float(getattr(trainer.model.config, "trust", 1.0))
