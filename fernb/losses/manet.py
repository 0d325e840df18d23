"""MA-Net's loss, and the Diversified MA-Net's (``shared/specs/baselines.md`` §4.4, §5.2).

MA-Net (``main.py``): L = beta * CE(logits_local, y) + (1 - beta) * CE(logits_global, y), beta = 0.6.
Diversified MA-Net (``manet_*.py``) adds three diversity terms (weight 1 each in the code,
:func:`fernb.losses.diversity.diversity`): the four local patch maps averaged over channels (``spatial``), the four
patch maps average-pooled (``channel``), and the two pooled global features (``feat``, the official
``FeatDiversity``). ``diversity_form`` defaults to ``"fixed"``; ``"official"`` reproduces the published term.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ._base import FERLoss, LossOutput, StepInfo, register_loss
from .diversity import DiversityForm, diversity, manet_local_heads

__all__ = ["MANetLoss"]


class MANetLoss(FERLoss):
    """beta-weighted CE of the two branches [+ the three diversity terms].

    Args:
        beta: weight of the local branch (0.6; keep it equal to the model's ``beta``).
        diversity: add the diversity terms; None (default): when the output carries the local patch maps (a model
            built with ``diversity=True``).
        diversity_form: ``"fixed"`` (default), ``"official"`` or ``"logdet"``.
        diversity_weight: weight of each diversity term (1 officially).
        gamma: diversity kernel width (10).
        label_smoothing: CE label smoothing (0 officially).
    """

    def __init__(
        self,
        beta: float = 0.6,
        diversity: bool | None = None,
        diversity_form: DiversityForm = "fixed",
        diversity_weight: float = 1.0,
        gamma: float = 10.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.beta, self.diversity, self.diversity_form = beta, diversity, diversity_form
        self.diversity_weight, self.gamma, self.label_smoothing = diversity_weight, gamma, label_smoothing

    def forward(self, output, target: Tensor, dist: Tensor | None = None, info: StepInfo | None = None) -> LossOutput:
        """``output``: :class:`fernb.models.manet.MANetOutput`; ``target`` (B,).

        Terms: ``ce_local``, ``ce_global``, ``ce`` (their beta mix), and ``div_spatial``, ``div_channel``,
        ``div_feat`` with diversity.
        """
        ce_local = F.cross_entropy(output.logits_local.float(), target, label_smoothing=self.label_smoothing)
        ce_global = F.cross_entropy(output.logits_global.float(), target, label_smoothing=self.label_smoothing)
        ce = self.beta * ce_local + (1 - self.beta) * ce_global
        terms: dict[str, Tensor] = {"ce": ce, "ce_local": ce_local, "ce_global": ce_global}
        total = ce
        use_div = self.diversity if self.diversity is not None else output.local_maps is not None
        if use_div:
            if output.local_maps is None or output.global_feats is None:
                raise ValueError(
                    "MANetLoss(diversity=True) needs the local patch maps of a Diversified MA-Net: build "
                    "the model with create_model('manet', ..., diversity=True)"
                )
            spatial, channel = manet_local_heads(output.local_maps)
            div = {
                "div_spatial": diversity(spatial, self.diversity_form, self.gamma).loss,
                "div_channel": diversity(channel, self.diversity_form, self.gamma).loss,
                "div_feat": diversity(output.global_feats, self.diversity_form, self.gamma).loss,
            }
            total = total + self.diversity_weight * sum(div.values())
            terms.update(div)
        return LossOutput(total=total, terms=terms)


@register_loss("manet")
def manet(**kwargs) -> MANetLoss:
    return MANetLoss(**kwargs)
