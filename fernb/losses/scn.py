"""SCN's training rules: cross-entropy on the importance-weighted logits, rank regularisation of the importance
weights, and relabelling of training samples (official ``src/train.py::run_training``; spec ``docs/specs/scn.md``).

Per batch of B samples with importance weights alpha_i (:class:`fernb.models.scn.SCNOutput`), logits alpha_i z_i and
labels y_i::

    L    = CE(alpha * z, y) + lambda_RR * L_RR
    L_RR = max(0, delta_1 - (mean of the k highest alpha - mean of the B - k others)),   k = int(B * beta)

From the relabel epoch on, after the loss of a batch is computed, every sample whose highest softmax probability
(of the weighted logits) exceeds the probability of its current label by more than delta_2 takes the predicted class
as its label: the official code writes it into the training set's label array, so it holds from the next time the
sample is drawn. Here the loss keeps that table itself, a per-sample buffer ``relabels`` indexed by the batch's
dataset indices (``index=``; -1: the given label holds) and saved in the loss's ``state_dict``, so that a run killed
and resumed from its last checkpoint relabels exactly as an uninterrupted one.

Defaults are the official ``train.py`` arguments: beta 0.7, delta_1 (``margin_rank``) 0.15, delta_2
(``margin_relabel``) 0.2, relabelling from the 10th epoch (1-based, as the official ``i >= relabel_epoch``),
lambda_RR 1 (the code adds the two terms; the paper weighs them gamma and 1 - gamma). Options beyond the official
code: ``relabel_progress`` starts relabelling at a fraction of training instead of an epoch (budget recipes, whose
epoch count is not known in advance); ``relabel_scope="low"`` relabels only samples of the low-importance group, as
the paper describes it (the official code considers every sample of the batch); ``label_smoothing`` and
``class_weights`` for the cross-entropy.

Edge cases follow the official code: with k = 0 or k = B (batches of 1 sample) one group is empty, the official mean
is NaN, its ``diff > 0`` test is False and L_RR is 0; here L_RR is 0 there too.

Under DDP the relabel decisions of every process are gathered each step, so each process holds the same table (and
resuming from the main process's checkpoint gives every process the full table).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch import Tensor

from ._base import FERLoss, LossOutput, StepInfo, register_loss

__all__ = ["SCNLoss", "rank_regularisation"]

Scope = Literal["batch", "low"]


def _split(alpha: Tensor, beta: float) -> tuple[Tensor, int]:
    """alpha flattened to (B,) and the size k = int(B * beta) of the high-importance group."""
    a = alpha.reshape(-1)
    return a, int(a.numel() * beta)


def rank_regularisation(alpha: Tensor, beta: float = 0.7, margin: float = 0.15) -> tuple[Tensor, Tensor]:
    """SCN's rank regularisation of the importance weights.

    Args:
        alpha: (B, 1) or (B,) importance weights.
        beta: share of the batch in the high-importance group (k = int(B * beta) samples).
        margin: delta_1, the margin the two group means should keep.

    Returns:
        ``(loss, gap)``: max(0, margin - gap) and gap = mean of the k highest weights - mean of the others (scalars;
        both 0 when a group is empty).
    """
    a, k = _split(alpha.float(), beta)
    if k == 0 or k == a.numel():
        zero = a.sum() * 0.0  # keeps the graph, as the official 0.0 keeps the total differentiable
        return zero, zero.detach()
    s = torch.sort(a, descending=True).values
    gap = s[:k].mean() - s[k:].mean()
    return F.relu(margin - gap), gap.detach()


class SCNLoss(FERLoss):
    """L = CE(weighted logits, current labels) + rank_weight * L_RR, with relabelling (see the module docstring).

    Args:
        beta: share of the batch in the high-importance group (0.7 official).
        margin_rank: delta_1 of the rank regularisation (0.15 official default; the README's training command
            uses 0.07 at batch 64).
        margin_relabel: delta_2 of the relabelling (0.2 official).
        relabel_epoch: 1-based epoch from which samples are relabelled (10 official); None: never (unless
            ``relabel_progress`` is set).
        relabel_progress: relabel from this fraction of training on (``StepInfo.progress``); overrides
            ``relabel_epoch``.
        relabel_scope: ``"batch"`` (official code: any sample of the batch) or ``"low"`` (the paper: samples of the
            low-importance group only).
        rank_weight: lambda_RR (1 official).
        label_smoothing: label smoothing of the cross-entropy (0 official).
        class_weights: (C,) cross-entropy class weights, or None (official).

    Attributes:
        relabels: (N,) int64 buffer, the label each training sample has been given by relabelling, -1 where the
            dataset's label holds; N grows to the largest index seen + 1. Saved in ``state_dict``.
        needs_index: the loss wants the batch's dataset indices (``index=``) to relabel.
    """

    needs_index: ClassVar[bool] = True
    relabels: Tensor
    class_weights: Tensor | None

    def __init__(
        self,
        beta: float = 0.7,
        margin_rank: float = 0.15,
        margin_relabel: float = 0.2,
        relabel_epoch: int | None = 10,
        relabel_progress: float | None = None,
        relabel_scope: Scope = "batch",
        rank_weight: float = 1.0,
        label_smoothing: float = 0.0,
        class_weights: Sequence[float] | Tensor | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 < beta < 1.0:
            raise ValueError(f"SCN beta (share of the high-importance group) must be in (0, 1), got {beta}")
        if margin_rank < 0 or margin_relabel < 0:
            raise ValueError(
                f"SCN margins must be >= 0, got margin_rank={margin_rank}, margin_relabel={margin_relabel}"
            )
        if relabel_epoch is not None and (isinstance(relabel_epoch, bool) or int(relabel_epoch) != relabel_epoch):
            raise ValueError(f"SCN relabel_epoch must be a whole (1-based) epoch or None, got {relabel_epoch!r}")
        if relabel_epoch is not None and relabel_epoch < 1:
            raise ValueError(f"SCN relabel_epoch is 1-based (10: from the 10th epoch on), got {relabel_epoch}")
        if relabel_progress is not None and not 0.0 <= relabel_progress <= 1.0:
            raise ValueError(f"SCN relabel_progress must be a fraction of training in [0, 1], got {relabel_progress}")
        if relabel_scope not in ("batch", "low"):
            raise ValueError(
                f"SCN relabel_scope must be 'batch' (official code) or 'low' (paper), got {relabel_scope!r}"
            )
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.beta, self.margin_rank, self.margin_relabel = float(beta), float(margin_rank), float(margin_relabel)
        self.relabel_epoch = None if relabel_epoch is None else int(relabel_epoch)
        self.relabel_progress = None if relabel_progress is None else float(relabel_progress)
        self.relabel_scope: Scope = relabel_scope
        self.rank_weight, self.label_smoothing = float(rank_weight), float(label_smoothing)
        w = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", w, persistent=False)
        self.register_buffer("relabels", torch.full((0,), -1, dtype=torch.long))
        self._warned_no_index = False

    # -- the relabel table ------------------------------------------------------------------------------------------
    def relabel_active(self, info: StepInfo | None) -> bool:
        """Whether samples are relabelled at this point of training."""
        info = info or StepInfo()
        if self.relabel_progress is not None:
            return info.progress >= self.relabel_progress
        return self.relabel_epoch is not None and info.epoch + 1 >= self.relabel_epoch

    def current_labels(self, given: Tensor, index: Tensor | None = None) -> Tensor:
        """The labels training uses now: the relabelled one where the table has one, else ``given``.

        Args:
            given: (B,) the dataset's labels of the samples (or (N,) of the whole training set when ``index`` is None).
            index: (B,) their dataset indices; None: ``given`` is indexed 0..N-1.
        """
        idx = torch.arange(given.numel()) if index is None else index.reshape(-1)
        n = self.relabels.numel()
        if n == 0:
            return given
        idx = idx.to(self.relabels.device, torch.long)
        stored = torch.where(idx < n, self.relabels[idx.clamp(max=n - 1)], -1).to(given.device)
        return torch.where(stored >= 0, stored, given)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # the table's length is the training set's, unknown at construction: take the checkpoint's
        saved = state_dict.get(prefix + "relabels")
        if isinstance(saved, Tensor) and saved.shape != self.relabels.shape:
            self.relabels = torch.full(saved.shape, -1, dtype=torch.long, device=self.relabels.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def _store(self, index: Tensor, labels: Tensor) -> None:
        """Write ``labels`` for the samples ``index`` (gathered over DDP processes first; the last write of an index
        wins, in process order, so every process ends with the same table)."""
        dev = self.relabels.device
        index, labels = _gather_updates(index.to(dev, torch.long), labels.to(dev, torch.long))
        if index.numel() == 0:
            return
        need = int(index.max()) + 1
        if need > self.relabels.numel():
            grown = torch.full((need,), -1, dtype=torch.long, device=dev)
            grown[: self.relabels.numel()] = self.relabels
            self.relabels = grown
        uniq, inverse = torch.unique(index, return_inverse=True)
        order = torch.arange(index.numel(), device=dev)
        last = torch.full_like(uniq, -1).scatter_reduce(0, inverse, order, reduce="amax")
        self.relabels[uniq] = labels[last]

    # -- the loss ---------------------------------------------------------------------------------------------------
    def forward(
        self,
        output,
        target: Tensor,
        dist: Tensor | None = None,
        info: StepInfo | None = None,
        index: Tensor | None = None,
    ) -> LossOutput:
        """``output``: :class:`fernb.models.scn.SCNOutput` (``logits`` (B, C), ``alpha`` (B, 1)); ``target`` (B,) the
        dataset's labels; ``index`` (B,) the samples' dataset indices (needed for relabelling). ``dist`` is unused.

        Terms: ``ce``, ``rank`` (L_RR), ``alpha_gap`` (high - low group mean of alpha) and ``relabelled`` (share of
        the batch relabelled by this step).
        """
        logits = output.logits.float()
        alpha = output.alpha
        if alpha is None:
            raise ValueError("SCNLoss needs the model's importance weights (output.alpha): train it with the scn model")
        y = target if index is None else self.current_labels(target, index)
        w = self.class_weights
        if w is not None:
            w = w.to(logits.device, logits.dtype)
        ce = F.cross_entropy(logits, y, weight=w, label_smoothing=self.label_smoothing)
        rank, gap = rank_regularisation(alpha, self.beta, self.margin_rank)
        relabelled = torch.zeros((), device=logits.device)
        if self.relabel_active(info):
            if index is None:
                self._warn_no_index()
            else:
                relabelled = self._relabel(logits.detach(), y, alpha.detach(), index)
        total = ce + self.rank_weight * rank
        return LossOutput(total=total, terms={"ce": ce, "rank": rank, "alpha_gap": gap, "relabelled": relabelled})

    @torch.no_grad()
    def _relabel(self, logits: Tensor, y: Tensor, alpha: Tensor, index: Tensor) -> Tensor:
        """The official rule: max_c p_c - p_y > delta_2 -> y := argmax_c p_c. Returns the share relabelled."""
        p = torch.softmax(logits, dim=1)
        p_max, pred = p.max(dim=1)
        p_given = p.gather(1, y.reshape(-1, 1)).squeeze(1)
        flip = (p_max - p_given) > self.margin_relabel
        if self.relabel_scope == "low":
            a, k = _split(alpha, self.beta)
            low = torch.zeros_like(flip)
            low[torch.sort(a, descending=True).indices[k:]] = True
            flip &= low
        index = index.reshape(-1).to(flip.device)
        self._store(index[flip], pred[flip])
        return flip.float().mean()

    def _warn_no_index(self) -> None:
        if not self._warned_no_index:
            self._warned_no_index = True
            warnings.warn(
                "SCN relabelling is due, but the loss got no sample indices (index=): labels stay as given. "
                "Relabelling needs the batch's dataset indices (batch['index']) passed to the loss; the importance "
                "weighting and the rank regularisation train without them. Said once per loss.",
                UserWarning,
                stacklevel=3,
            )


def _gather_updates(index: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Every DDP process's (index, label) updates, in process order; the inputs as they are without DDP."""
    if not (torch_dist.is_available() and torch_dist.is_initialized()) or torch_dist.get_world_size() == 1:
        return index, labels
    world = torch_dist.get_world_size()
    count = torch.tensor([index.numel()], device=index.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    torch_dist.all_gather(counts, count)
    width = max(int(c) for c in counts)
    packed = torch.full((2, width), -1, dtype=torch.long, device=index.device)
    packed[0, : index.numel()], packed[1, : index.numel()] = index, labels
    parts = [torch.empty_like(packed) for _ in range(world)]
    torch_dist.all_gather(parts, packed)
    both = torch.cat([part[:, : int(c)] for part, c in zip(parts, counts)], dim=1)
    return both[0], both[1]


@register_loss("scn")
def scn(**kwargs) -> SCNLoss:
    return SCNLoss(**kwargs)
