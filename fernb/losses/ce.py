"""Plain cross-entropy on ``output.logits``: the loss of POSTER_V2 (``main.py``: ``nn.CrossEntropyLoss()``) and of the
ResNet-18 baseline.

With hard labels it is ``F.cross_entropy(logits, target, weight, label_smoothing)``: with class weights the mean
divides by sum_b w_{y_b}. With label distributions ``dist`` (B, C) (FER+ votes) and ``use_dist=True`` it is the
soft-target cross-entropy -sum_c w_c q_c log softmax(logits)_c, averaged over the batch (PyTorch's semantics for
probability targets; without class weights this is the KL divergence to q up to q's entropy); label smoothing then mixes
q with the uniform distribution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._base import FERLoss, LossOutput, StepInfo, register_loss

__all__ = ["CrossEntropyLoss"]


class CrossEntropyLoss(FERLoss):
    """Cross-entropy on ``output.logits`` (B, C).

    Args:
        class_weights: (C,) weights, or None.
        label_smoothing: epsilon in [0, 1).
        use_dist: train on ``dist`` (B, C) when the batch has it (off by default: POSTER_V2 trains on hard labels).
    """

    class_weights: Tensor | None

    def __init__(
        self,
        class_weights: Sequence[float] | Tensor | None = None,
        label_smoothing: float = 0.0,
        use_dist: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        w = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", w, persistent=False)
        self.label_smoothing, self.use_dist = float(label_smoothing), use_dist

    def forward(self, output, target: Tensor, dist: Tensor | None = None, info: StepInfo | None = None) -> LossOutput:
        logits = output.logits
        w = self.class_weights
        if w is not None:
            w = w.to(logits.device, logits.dtype)
        if dist is not None and self.use_dist:
            q = dist.to(logits.dtype)
            ce = F.cross_entropy(logits, q / q.sum(-1, keepdim=True), weight=w, label_smoothing=self.label_smoothing)
        else:
            ce = F.cross_entropy(logits, target, weight=w, label_smoothing=self.label_smoothing)
        return LossOutput(total=ce, terms={"ce": ce})


def _factory(**kwargs) -> CrossEntropyLoss:
    return CrossEntropyLoss(**kwargs)


register_loss("poster_v2")(_factory)
register_loss("resnet18")(_factory)
