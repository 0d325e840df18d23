"""Diversity terms of the Diversified ESR / MA-Net (Heidari and Iosifidis, arXiv 2210.09381).

Official code: ``negarhdr/Diversified-Facial-Expression-Recognition``, classes ``BranchDiversity`` (``esr_*.py``,
``manet_*.py``) and ``FeatDiversity`` (``manet_*.py``); the same kernel is in OpenDR. Spec:
``shared/specs/baselines.md`` §4.1, §4.7.

Given M heads X_1..X_M, each a batch of B tensors (attention maps, gates or pooled features), the similarity matrix is

    S_ab = (1/B) sum_i exp(-gamma * ||X_a^(i) - X_b^(i)||^2),        gamma = 10,

and the term added to the training loss is a function of det(S). Three forms (``form=``):

``"official"``
    The published code: the diagonal of S is **zero** (its loop skips a = b) and the loss is -det(S). Its other values,
    ``direct_div = sum(S)`` and ``logdet_div = -logdet(S)``, are computed but unused (``logdet`` is NaN whenever
    det(S) < 0, e.g. always for two heads, and +inf when det(S) = 0). With a zero diagonal -det(S) is not a diversity
    measure for odd M: with equal similarities s, -det(s (J - I)) = -(M - 1) (-1)^(M-1) s^M, which *decreases* as the
    heads become more alike when M is odd. For M = 3 and symmetric S, -det(S) = -2 s12 s13 s23: minimising it makes
    the heads *more similar*. ESR-9 has 9 branches, so the published ESR term rewards similar branches. For M = 2 and
    M = 4 (MA-Net's feature and patch terms) the sign happens to be right.
``"fixed"`` (default)
    The determinantal (DPP) form the method describes: S gets a **unit** diagonal, the similarity of a head with
    itself, so S is a positive semi-definite kernel matrix with det(S) in [0, 1], 1 for mutually dissimilar heads and 0
    when two heads coincide; the loss is -det(S), minimised by diverse heads for every M. For M = 2 it equals the
    official term minus 1 (same gradient); it changes only the diagonal.
``"logdet"``
    Unit diagonal and loss -logdet(S + 1e-5 I), a sharper variant whose gradient does not vanish when several heads
    are nearly identical (det(S) and its gradient are ~0 there for M >= 3); the 1e-5 ridge keeps it finite.

Which form the paper writes could not be read (only the abstract is available); the unit diagonal is the standard
determinantal diversity and the zero diagonal is what the loop in the code produces.

Note: with gamma = 10 and un-normalised features (MA-Net's 512-d pooled features) most S_ab underflow to 0, so the
terms are ~0 with ~0 gradient for random features, in every form; they matter once heads come close.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = ["DiversityForm", "DiversityResult", "similarity_matrix", "diversity", "manet_local_heads"]

DiversityForm = Literal["official", "fixed", "logdet"]
_FORMS = ("official", "fixed", "logdet")


def similarity_matrix(heads: Tensor, gamma: float = 10.0, diagonal: float = 0.0) -> Tensor:
    """Pairwise head similarity S (M, M).

    Args:
        heads: (M, B, ...) M heads, each a batch of B tensors of any shape.
        gamma: kernel width (10 in the official code).
        diagonal: value of S_aa (0 in the official code, 1 in the ``fixed`` and ``logdet`` forms).

    Returns:
        S with S_ab = mean_i exp(-gamma * sum((heads[a, i] - heads[b, i]) ** 2)), in float32.
    """
    x = heads.float()
    m, b = x.shape[:2]
    diff = (x[:, None] - x[None, :]).reshape(m, m, b, -1)
    s = torch.exp(-gamma * diff.square().sum(dim=-1)).mean(dim=-1)
    eye = torch.eye(m, dtype=torch.bool, device=s.device)
    return torch.where(eye, torch.full_like(s, diagonal), s)


@dataclass
class DiversityResult:
    """One diversity term.

    Attributes:
        loss: () what training adds (``-det(S)`` or ``-logdet(S)``, see the module docstring).
        snm: (M, M) the similarity matrix used.
        det_div: () -det(S).
        direct_div: () sum(S).
        logdet_div: () -logdet(S) (NaN for det(S) < 0, +inf for det(S) = 0, as ``torch.logdet``).
    """

    loss: Tensor
    snm: Tensor
    det_div: Tensor
    direct_div: Tensor
    logdet_div: Tensor


def diversity(heads: Tensor, form: DiversityForm = "fixed", gamma: float = 10.0) -> DiversityResult:
    """The diversity term of M heads (M, B, ...) in the given ``form`` (``"official"``, ``"fixed"``, ``"logdet"``)."""
    if form not in _FORMS:
        raise ValueError(f"diversity form must be one of {_FORMS}, got {form!r}")
    snm = similarity_matrix(heads, gamma, diagonal=0.0 if form == "official" else 1.0)
    det = torch.det(snm)
    logdet = torch.logdet(snm)
    if form == "logdet":
        loss = -torch.logdet(snm + 1e-5 * torch.eye(snm.shape[0], device=snm.device))
    else:
        loss = -det
    return DiversityResult(loss=loss, snm=snm, det_div=-det, direct_div=snm.sum(), logdet_div=-logdet)


def manet_local_heads(local_maps: Tensor) -> tuple[Tensor, Tensor]:
    """MA-Net local patch maps (4, B, D, h, w) -> the heads of the official ``BranchDiversity``: ``spatial`` = mean over
    channels (4, B, h, w), ``channel`` = global average pool (4, B, D)."""
    return local_maps.mean(dim=2), local_maps.mean(dim=(3, 4))
