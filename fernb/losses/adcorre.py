"""Ad-Corre's loss: cross-entropy plus the Feature, Mean and Embedding Discriminators, all differentiable.

Fard and Mahoor, IEEE Access 2022; official code ``aliprf/Ad-Corre`` (``custom_loss.py``, ``train.py::train_step``).
Spec: ``shared/specs/baselines.md`` §3.2.

Notation: a batch of n samples with labels y, k embeddings E^m (n, d) with unit rows, C classes, p = softmax(logits).
corr(X) is the Pearson correlation between the *rows* of X (``np.corrcoef``).

* CE: -(1 / (n C)) sum_i log clip(p_i,y_i, 1e-7, 1), the usual CE divided by C (the Keras code averages the one-hot
  product over the C columns too); weight 50.
* Embedding Discriminator (ED): R_i = corr of sample i's k embeddings (k, k);
  L_ED = mean_{i,a,b} (1 - delta_ab)(1 + R_i[a, b]) (the mean includes the zeroed diagonal). Decorrelates the k
  embeddings of an image.
* Mean Discriminator (MD): mu_{m,c} = sum_i w_ic E^m_i / sum_i w_ic with w_ic = 1 if y_i = c else 1e-7 (a class absent
  from the batch gets ~ the batch mean); S_m = corr(mu_{m,1..C}) (C, C); L_MD = mean_{m,c,c'} (1 - delta)(1 + S_m).
  Decorrelates the class means.
* Feature Discriminator (FD): Phi_m = corr(E^m) (n, n); Omega_ij = 1 if y_i = y_j else -1;
  L_FD = mean_{m,i,j} |Omega_ij - Phi_m[i, j]|. With ``adaptive=True`` (the repo's older ``correlation_loss``):
  L_FD = mean W * |Omega - Phi| with W_ij = (1 - delta_ij)(1 + (1 - CM[y_i, y_i]) + (1 - CM[y_j, y_j])), CM the
  row-normalised confusion matrix of the last ``history`` (label, prediction) pairs seen in training.
* Total: L = 50 * CE + ED + MD + FD.

**Why this differs from the official training.** The TensorFlow code computes ED, MD and FD with NumPy
(``np.corrcoef``, ``np.average``) on eager tensors and wraps the result with ``tf.cast``; gradients cannot flow through
NumPy, so inside the ``GradientTape`` these three terms are constants and the released training updates the network
with the cross-entropy alone. Here every term is computed with torch ops and carries gradient, which is the method the
paper describes. The adaptive FD weight is off by default, as in the active code path.
"""

from __future__ import annotations

from collections import deque

import torch
import torch.nn.functional as F
from torch import Tensor

from ._base import FERLoss, LossOutput, StepInfo, register_loss

__all__ = ["AdCorreLoss", "row_correlation", "embedding_discriminator", "mean_discriminator", "feature_discriminator"]

_KERAS_EPS = 1e-7


def row_correlation(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Pearson correlation between the rows of x: (..., r, d) -> (..., r, r), clipped to [-1, 1] as ``np.corrcoef``."""
    xc = x - x.mean(dim=-1, keepdim=True)
    xn = xc / xc.norm(dim=-1, keepdim=True).clamp_min(eps)
    return (xn @ xn.transpose(-1, -2)).clamp(-1.0, 1.0)


def _off_diagonal_mean(corr: Tensor) -> Tensor:
    """mean over every entry of (1 - I) * (1 + corr) for a stack (..., r, r)."""
    r = corr.shape[-1]
    off = 1.0 - torch.eye(r, dtype=corr.dtype, device=corr.device)
    return (off * (1.0 + corr)).mean()


def embedding_discriminator(embeddings: Tensor) -> Tensor:
    """L_ED for embeddings (k, n, d)."""
    return _off_diagonal_mean(row_correlation(embeddings.transpose(0, 1)))


def mean_discriminator(embeddings: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """L_MD for embeddings (k, n, d), labels (n,)."""
    onehot = F.one_hot(target, num_classes).to(embeddings.dtype).T  # (C, n)
    w = torch.where(onehot > 0, onehot, torch.full_like(onehot, _KERAS_EPS))
    means = torch.einsum("cn,knd->kcd", w, embeddings) / w.sum(dim=1)[None, :, None]
    return _off_diagonal_mean(row_correlation(means))


def feature_discriminator(embeddings: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """L_FD for embeddings (k, n, d), labels (n,); ``weight`` (n, n) for the adaptive form."""
    phi = row_correlation(embeddings)  # (k, n, n)
    same = target[:, None] == target[None, :]
    omega = torch.where(same, 1.0, -1.0).to(phi.dtype)
    diff = (omega - phi).abs()
    if weight is not None:
        diff = diff * weight
    return diff.mean()


class AdCorreLoss(FERLoss):
    """L = ce_weight * CE / C + ed_weight * ED + md_weight * MD + fd_weight * FD (every term differentiable).

    Args:
        ce_weight: weight of the cross-entropy (50).
        ce_per_class: divide the CE by C as the Keras code does (True).
        ed_weight, md_weight, fd_weight: weights of the discriminators (1 each).
        adaptive: adaptive FD weights from a running confusion matrix (off in the official active path).
        history: how many recent (label, prediction) pairs the adaptive confusion matrix uses (~1000).
        label_smoothing: mix the one-hot target with the uniform distribution (0 officially; the budget recipe).
    """

    def __init__(
        self,
        ce_weight: float = 50.0,
        ce_per_class: bool = True,
        ed_weight: float = 1.0,
        md_weight: float = 1.0,
        fd_weight: float = 1.0,
        adaptive: bool = False,
        history: int = 1000,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self.ce_weight, self.ce_per_class = ce_weight, ce_per_class
        self.ed_weight, self.md_weight, self.fd_weight = ed_weight, md_weight, fd_weight
        self.adaptive = adaptive
        self.history: deque[tuple[int, int]] = deque(maxlen=history)

    def observe(self, target: Tensor, pred: Tensor) -> None:
        """Add (label, prediction) pairs (B,), (B,) to the history of the adaptive confusion matrix."""
        self.history.extend(zip(target.tolist(), pred.tolist()))

    def confusion(self, num_classes: int) -> Tensor:
        """Row-normalised confusion matrix (C, C) of the stored history; rows without samples are 0 (as sklearn)."""
        cm = torch.zeros(num_classes, num_classes)
        for t, p in self.history:
            cm[t, p] += 1
        return cm / cm.sum(dim=1, keepdim=True).clamp_min(1)

    def _adaptive_weight(self, target: Tensor, pred: Tensor, num_classes: int) -> Tensor:
        miss = 1.0 - self.confusion(num_classes).diagonal().to(target.device)[target]  # (n,)
        w = 1.0 + miss[:, None] + miss[None, :]
        w = w * (1.0 - torch.eye(len(target), device=target.device))
        if self.training:
            self.observe(target, pred)
        return w

    def forward(self, output, target: Tensor, dist: Tensor | None = None, info: StepInfo | None = None) -> LossOutput:
        """``output``: :class:`fernb.models.adcorre.AdCorreOutput` (logits (B, C), embeddings (k, B, d)).

        Terms: ``ce`` (CE / C, unweighted), ``ed``, ``md``, ``fd``.
        """
        logits = output.logits.float()
        emb = output.embeddings.float()
        c = logits.shape[1]
        log_p = F.log_softmax(logits, dim=1).clamp_min(torch.log(torch.tensor(_KERAS_EPS)).item())
        ce = -log_p.gather(1, target[:, None]).mean()
        if self.label_smoothing:
            ce = (1 - self.label_smoothing) * ce - self.label_smoothing * log_p.mean(1).mean()
        if self.ce_per_class:
            ce = ce / c
        ed = embedding_discriminator(emb)
        md = mean_discriminator(emb, target, c)
        weight = self._adaptive_weight(target, logits.argmax(1), c) if self.adaptive else None
        fd = feature_discriminator(emb, target, weight)
        total = self.ce_weight * ce + self.ed_weight * ed + self.md_weight * md + self.fd_weight * fd
        return LossOutput(total=total, terms={"ce": ce, "ed": ed, "md": md, "fd": fd})


@register_loss("adcorre")
def adcorre(**kwargs) -> AdCorreLoss:
    return AdCorreLoss(**kwargs)
