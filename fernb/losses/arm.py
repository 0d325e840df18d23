"""ARM's loss: plain cross-entropy on the logits (official ``train_raf-db.py``; ``shared/specs/baselines.md`` §2.2).

The learnable affinity weight alpha has no loss term of its own; the official code only logs it.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ._base import FERLoss, LossOutput, StepInfo, register_loss

__all__ = ["ARMLoss"]


class ARMLoss(FERLoss):
    """L = CE(logits, y).

    Args:
        label_smoothing: optional label smoothing (0 in the official code).
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, output, target: Tensor, dist: Tensor | None = None, info: StepInfo | None = None) -> LossOutput:
        """``output``: :class:`fernb.models.arm.ARMOutput` (logits (B, C)); ``target`` (B,). ``dist`` is unused."""
        ce = F.cross_entropy(output.logits.float(), target, label_smoothing=self.label_smoothing)
        return LossOutput(total=ce, terms={"ce": ce})


@register_loss("arm")
def arm(**kwargs) -> ARMLoss:
    return ARMLoss(**kwargs)
