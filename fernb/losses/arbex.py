"""ARBEx's training loss: class-weighted NLL on the trust-ramped corrected distribution, anchor loss, center loss.

Reference: ``shared/specs/arbex.md`` §2-3 (``arbex/loss.py`` and ``arbex/train.py`` of takihasan/ARBEx)::

    final_t = (1 - t) p + t (c_p p + (1 - c_p) l_corr)
    L = lambda_ce NLL_w(log final_t, y) + t lambda_a L_anchor(A) + t lambda_c L_center(d, y, c_p)

**The trust ramp.** ``train.py`` sets t = n_iter / num_iters: a linear ramp from 0 at the first step to 1 at the last,
over the whole run. Here t = min(1, progress / ramp_end) with ``progress`` from :class:`~fernb.losses.StepInfo`
(fraction of training done); ``ramp_end=1.0`` (the default) is exactly the official schedule, a smaller value
reaches full trust earlier. ``ramp_start`` (0 officially) holds t at 0 for that first fraction of training:
t = clip((progress - ramp_start) / (ramp_end - ramp_start), 0, 1). At t = 0 the loss is the class-weighted NLL of
the primary distribution alone. Why a from-scratch run wants a late start: the corrected distribution weighs the
primary one by its confidence c_p (1 - normalised entropy), so once t is high the head's gradient is scaled by c_p;
a head that is still near uniform when trust arrives (c_p ~ 0.01, as an untrained backbone gives) hardly learns
after that. The official code starts from pretrained backbones, whose heads are confident within few steps.

Terms (B samples, C classes, k anchors per class, D embedding width):

- NLL: ``nn.NLLLoss(weight=w)``: sum_b w_{y_b} (-log final_{b,y_b}) / sum_b w_{y_b}; w from
  :func:`arbex_class_weights` (inverse class frequency, 1 on a balanced set). ``official`` takes the log unguarded.
- anchor loss, ``official``: -(1/(k^2 sqrt(D))) sum_{i,j} ||a_i - a_j||^2 over ordered class pairs of the flattened
  (k*D) anchors, i.e. only same-index anchors are compared; unbounded below (it only grows the anchors apart).
  ``fixed``: mean over pairs of anchors of different classes of relu(margin - ||a_i - a_j|| / sqrt(D))^2, in
  [0, margin^2]: zero once every pair is ``margin`` apart in RMS-per-dimension units.
- center loss: (1/B) sum_b c_{p,b} min_j ||e_b - A_{y_b,j}|| / sqrt(D) (not squared); ``fixed`` uses c_p as a constant
  so a less confident head cannot lower it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ._base import FERLoss, LossOutput, StepInfo, register_loss

__all__ = ["ARBExLoss", "arbex_class_weights", "anchor_loss_official", "anchor_loss_bounded", "center_loss"]


def arbex_class_weights(targets: Sequence[int] | np.ndarray | Tensor, num_classes: int) -> Tensor:
    """Inverse-frequency class weights as ``AffWildDataset.get_weights``: w_c = (N / C_present) / n_c.

    Classes absent from ``targets`` get weight 0 (the official code returns a shorter vector, which misaligns the
    weights whenever a class is missing).

    Returns:
        (num_classes,) float32.
    """
    y = torch.as_tensor(np.asarray(targets), dtype=torch.int64).reshape(-1)
    counts = torch.bincount(y, minlength=num_classes).double()
    present = counts > 0
    w = torch.zeros(num_classes, dtype=torch.float64)
    w[present] = (len(y) / int(present.sum())) / counts[present]
    return w.float()


def anchor_loss_official(anchors: Tensor) -> Tensor:
    """``loss.AnchorLoss``: -(sum over class pairs of ||a_i - a_j||^2) / (k^2 sqrt(D)); anchors (C, k, D) -> ()."""
    c, k, d = anchors.shape
    flat = anchors.reshape(c, -1)
    return -((flat.unsqueeze(0) - flat.unsqueeze(1)).pow(2) / d**0.5).sum() / k / k


def anchor_loss_bounded(anchors: Tensor, margin: float = 1.0, eps: float = 1e-8) -> Tensor:
    """Hinge on the distances of anchors of different classes: mean relu(margin - ||a_i - a_j|| / sqrt(D))^2.

    Args:
        anchors: (C, k, D).
        margin: wanted separation in RMS-per-dimension units (``||a_i - a_j|| / sqrt(D)``).

    Returns:
        () in [0, margin^2].
    """
    c, k, d = anchors.shape
    a = anchors.reshape(c * k, d)
    cls = torch.arange(c, device=a.device).repeat_interleave(k)
    other = cls[:, None] != cls[None, :]
    sq = (a.unsqueeze(0) - a.unsqueeze(1)).pow(2).sum(-1)
    dist = sq[other].clamp_min(eps).sqrt() / d**0.5
    return F.relu(margin - dist).pow(2).mean()


def center_loss(distances: Tensor, target: Tensor, confidence: Tensor, dim: int) -> Tensor:
    """``loss.CenterLoss``: mean_b c_b min_j d[b, y_b, j] / sqrt(D).

    Args:
        distances: (B, C, k) Euclidean distances to the anchors.
        target: (B,) labels.
        confidence: (B, 1) or (B,) weights (c_p).
        dim: the embedding width D.

    Returns:
        () loss.
    """
    picked = distances[torch.arange(len(target), device=distances.device), target].min(1).values
    return (picked * confidence.reshape(-1) / dim**0.5).sum() / len(picked)


class ARBExLoss(FERLoss):
    """The ARBEx objective on an :class:`~fernb.models.arbex.ARBExOutput` (see the module docstring).

    Args:
        class_weights: (C,) NLL class weights (:func:`arbex_class_weights` of the training labels), or None for 1.
        lambda_ce, lambda_anchor, lambda_center: term weights (1, 1, 1 in ``train.py``).
        behaviour: ``"official"`` or ``"fixed"``; None follows the model output's ``behaviour``.
        ramp_end: the trust reaches 1 at this fraction of training (1.0: the official linear ramp).
        ramp_start: the trust stays 0 until this fraction of training (0.0: the official ramp).
        anchor_margin: margin of the bounded (``fixed``) anchor loss.
        eps: clamp of the ``fixed`` logs.
        use_dist: with label distributions (``dist``, e.g. FER+ votes), use the soft-target NLL
            sum_c w_c q_c (-log final_c) / sum_c w_c q_c instead of the hard labels.
        label_smoothing: epsilon: the NLL becomes (1 - eps) NLL + eps mean_c(-log final_c) (0 officially; the budget
            recipes use 0.1).
        lambda_branch: weight of a fernb addition (0 = off, as in ``train.py``): the same (smoothed, class-weighted)
            NLL on the anchor distribution l_g and on the attention distribution l_a, at full weight from the first
            step. Why: with confidences used as constants (``fixed``) a branch reaches the loss only through its
            share c / (c_g + c_a) of the correction, times (1 - c_p); a branch that starts uniform (c ~ 0) gets
            neither weight nor gradient and stays uniform (measured: median c_a 0.0004 after a from-scratch run).
        reliability_weighting: exponent q of a fernb addition (0 = off, as in ``train.py``): every label-fitted term
            (the NLLs and the center loss) weighs sample b by (1 - t) + t r_b^q / mean_batch(r^q), with r_b = m_b[y_b]
            the corrected distribution's probability of the given label (a constant) and t the trust. A label that
            the corrected distribution doubts (ARBEx's noisy-label score, ``fernb.engine.noise_detection``) then
            teaches less, increasingly as the trust grows.
    """

    class_weights: Tensor | None

    def __init__(
        self,
        class_weights: Sequence[float] | Tensor | None = None,
        lambda_ce: float = 1.0,
        lambda_anchor: float = 1.0,
        lambda_center: float = 1.0,
        behaviour: str | None = None,
        ramp_end: float = 1.0,
        anchor_margin: float = 1.0,
        eps: float = 1e-8,
        use_dist: bool = False,
        ramp_start: float = 0.0,
        label_smoothing: float = 0.0,
        lambda_branch: float = 0.0,
        reliability_weighting: float = 0.0,
    ) -> None:
        super().__init__()
        if behaviour not in (None, "official", "fixed"):
            raise ValueError(f"behaviour must be None, 'official' or 'fixed', got {behaviour!r}")
        if not 0 <= ramp_start < ramp_end <= 1:
            raise ValueError(f"need 0 <= ramp_start < ramp_end <= 1, got ramp_start={ramp_start}, ramp_end={ramp_end}")
        w = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", w, persistent=False)
        self.lambda_ce, self.lambda_anchor, self.lambda_center = lambda_ce, lambda_anchor, lambda_center
        self.behaviour, self.anchor_margin = behaviour, anchor_margin
        self.ramp_start, self.ramp_end = ramp_start, ramp_end
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.eps, self.use_dist, self.label_smoothing = eps, use_dist, float(label_smoothing)
        self.lambda_branch = float(lambda_branch)
        if reliability_weighting < 0:
            raise ValueError(f"reliability_weighting must be >= 0, got {reliability_weighting}")
        self.reliability_weighting = float(reliability_weighting)

    def trust(self, info: StepInfo | None) -> float:
        """t = clip((progress - ramp_start) / (ramp_end - ramp_start), 0, 1); 1 when no StepInfo is given (a trained
        model)."""
        if info is None:
            return 1.0
        return float(min(1.0, max(0.0, (info.progress - self.ramp_start) / (self.ramp_end - self.ramp_start))))

    def forward(self, output, target: Tensor, dist: Tensor | None = None, info: StepInfo | None = None) -> LossOutput:
        """``output``: ARBExOutput; ``target`` (B,); ``dist`` (B, C) or None; ``info`` gives the trust."""
        behaviour = self.behaviour or output.behaviour
        official = behaviour == "official"
        t = self.trust(info)
        final = (1 - t) * output.primary_dist + t * output.mixed_dist
        sw = self.sample_weights(output.mixed_dist, target, t)
        ce = self._nll(final, target, dist, official, sw)
        anchors = output.anchors
        if official:
            anchor = anchor_loss_official(anchors)
            conf = output.confidence_primary
        else:
            anchor = anchor_loss_bounded(anchors, self.anchor_margin, self.eps)
            conf = output.confidence_primary.detach()
        center = center_loss(output.distances, target, conf if sw is None else conf.reshape(-1) * sw, anchors.shape[-1])
        total = self.lambda_ce * ce + t * self.lambda_anchor * anchor + t * self.lambda_center * center
        terms = {"ce": ce, "anchor": anchor, "center": center}
        if self.lambda_branch:
            terms["ce_anchor"] = self._nll(output.anchor_dist, target, dist, official, sw)
            terms["ce_attention"] = self._nll(output.attention_dist, target, dist, official, sw)
            total = total + self.lambda_branch * (terms["ce_anchor"] + terms["ce_attention"])
        terms["trust"] = torch.tensor(t, device=total.device)
        return LossOutput(total=total, terms=terms)

    def sample_weights(self, mixed: Tensor, target: Tensor, t: float) -> Tensor | None:
        """(B,) weights of ``reliability_weighting`` (mean 1), or None when it is off or the trust is 0."""
        if not self.reliability_weighting or t == 0:
            return None
        r = mixed.detach().gather(1, target[:, None]).squeeze(1).clamp_min(self.eps).pow(self.reliability_weighting)
        return (1 - t) + t * r / r.mean()

    def _nll(
        self, probs: Tensor, target: Tensor, dist: Tensor | None, official: bool, sw: Tensor | None = None
    ) -> Tensor:
        """The (class-weighted, optionally smoothed, optionally soft-target) NLL of a distribution (B, C); ``sw``:
        per-sample weights (B,) or None."""
        logp = probs.log() if official else probs.clamp_min(self.eps).log()
        w = self.class_weights
        if w is not None:
            w = w.to(logp.device, logp.dtype)
        if dist is not None and self.use_dist:
            q = dist.to(logp.dtype)
            q = q / q.sum(-1, keepdim=True)
            wq = q * (w if w is not None else 1.0)
            ce = -(wq * logp if sw is None else sw[:, None] * wq * logp).sum() / wq.sum()
        elif sw is None:
            ce = F.nll_loss(logp, target, weight=w)
        else:
            cw = w[target] if w is not None else torch.ones_like(sw)
            ce = -(sw * cw * logp.gather(1, target[:, None]).squeeze(1)).sum() / cw.sum()
        if self.label_smoothing:
            smooth = logp.mean(-1) if sw is None else sw * logp.mean(-1)
            ce = (1 - self.label_smoothing) * ce - self.label_smoothing * smooth.mean()
        return ce


@register_loss("arbex")
def arbex_loss(**kwargs) -> ARBExLoss:
    """``create_loss("arbex", class_weights=arbex_class_weights(train_labels, C), ...)``: see :class:`ARBExLoss`."""
    return ARBExLoss(**kwargs)
