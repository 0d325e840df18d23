"""ESR's loss, and the Diversified ESR's (``shared/specs/baselines.md`` §4.3, §5.1).

ESR (paper Eq. 1): L = sum over the active branches of CE(branch logits, y). The Diversified ESR adds, once two or more
branches are active, the diversity of the branches' last spatial attention maps and of their last channel gates:
L += w * (L_div(spatial) + L_div(channel)) (:func:`fernb.losses.diversity.diversity`; weight 1 in the code).

Differences from the official scripts: the channel term uses the channel gates (``esr_ferplus.py`` / ``esr_rafdb.py``
feed it the spatial maps, a bug fixed only in ``esr_affectnet.py``); the diversity covers the active branches (the
official fine-tuning scripts keep all 9 branches in it while the CE sum covers the trained ones); ``diversity_form``
defaults to ``"fixed"`` (``"official"`` reproduces the published zero-diagonal term, which rewards similar branches
for an odd branch count, see :mod:`fernb.losses.diversity`).
"""

from __future__ import annotations

from typing import cast

import torch.nn.functional as F
from torch import Tensor

from ._base import FERLoss, LossOutput, StepInfo, register_loss
from .diversity import DiversityForm, diversity

__all__ = ["ESRLoss"]


class ESRLoss(FERLoss):
    """Sum of branch CEs [+ diversity of the attention heads].

    Args:
        diversity: add the diversity terms; None (default): when the model output carries attention heads (a model
            built with ``diversity=True``). True with an output that has none raises.
        diversity_form: ``"fixed"`` (unit-diagonal, default), ``"official"`` (published code) or ``"logdet"``.
        diversity_weight: weight of each diversity term (1 officially).
        gamma: diversity kernel width (10).
        label_smoothing: CE label smoothing (0 officially).
    """

    def __init__(
        self,
        diversity: bool | None = None,
        diversity_form: DiversityForm = "fixed",
        diversity_weight: float = 1.0,
        gamma: float = 10.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.diversity, self.diversity_form = diversity, diversity_form
        self.diversity_weight, self.gamma, self.label_smoothing = diversity_weight, gamma, label_smoothing

    def forward(self, output, target: Tensor, dist: Tensor | None = None, info: StepInfo | None = None) -> LossOutput:
        """``output``: :class:`fernb.models.esr.ESROutput` (``branch_logits`` (n, B, C)); ``target`` (B,).

        Terms: ``ce`` (the sum), ``ce_branch{i}`` per branch, and ``div_spatial``, ``div_channel`` with diversity.
        """
        branch_logits = output.branch_logits.float()
        ces = [F.cross_entropy(lg, target, label_smoothing=self.label_smoothing) for lg in branch_logits]
        ce = cast(Tensor, sum(ces))  # n >= 1 branches: a tensor, never the empty sum 0
        terms: dict[str, Tensor] = {"ce": ce}
        terms.update({f"ce_branch{i}": c for i, c in enumerate(ces)})
        use_div = self.diversity if self.diversity is not None else output.attn_spatial is not None
        total = ce
        if use_div:
            if output.attn_spatial is None or output.attn_channel is None:
                raise ValueError(
                    "ESRLoss(diversity=True) needs the attention heads of a Diversified ESR: build the "
                    "model with create_model('esr', ..., diversity=True)"
                )
            if branch_logits.shape[0] >= 2:
                sp = diversity(output.attn_spatial, self.diversity_form, self.gamma).loss
                ch = diversity(output.attn_channel, self.diversity_form, self.gamma).loss
                total = total + self.diversity_weight * (sp + ch)
                terms.update(div_spatial=sp, div_channel=ch)
        return LossOutput(total=total, terms=terms)


@register_loss("esr")
def esr(**kwargs) -> ESRLoss:
    return ESRLoss(**kwargs)
