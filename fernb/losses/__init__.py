"""Loss terms of every method (one module per method) behind one interface: :class:`FERLoss`."""

from ._base import FERLoss, LossOutput, StepInfo, register_loss
from .factory import create_loss, list_losses

__all__ = ["FERLoss", "LossOutput", "StepInfo", "create_loss", "list_losses", "register_loss"]
