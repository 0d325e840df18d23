"""Subject-independent folds and validation splits.

FER benchmarks mix two kinds of protocol: lab datasets (CK+, JAFFE, Aff-Wild2) hold several images of each person, so a
fair split keeps every subject on one side (group k-fold); in-the-wild datasets (RAF-DB, AffectNet, FER2013) have no
subject ids and no public validation split, so a validation split is carved from train by a seeded stratified draw.
Every function here returns sorted index arrays and is deterministic for a given ``seed``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import FERDataset

__all__ = ["subject_kfold", "folds_from_column", "stratified_split", "train_valid_split", "group_holdout"]

Fold = tuple[np.ndarray, np.ndarray]


def _encode(values: Sequence | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique values (sorted) and the (N,) index of each sample's value."""
    arr = np.asarray([str(v) for v in values]) if not isinstance(values, np.ndarray) else values.astype(str)
    uniq, inv = np.unique(arr, return_inverse=True)
    return uniq, inv.reshape(-1)


def _group_counts(inv: np.ndarray, n_groups: int, labels: Sequence | np.ndarray | None) -> np.ndarray:
    """(G, C) samples per group and class (C = 1 when no labels are given)."""
    if labels is None:
        return np.bincount(inv, minlength=n_groups).astype(np.float64)[:, None]
    lab = np.asarray(labels)
    if len(lab) != len(inv):
        raise ValueError(f"stratify_labels has {len(lab)} entries, subjects {len(inv)}")
    _, yi = np.unique(lab.astype(str), return_inverse=True)
    counts = np.zeros((n_groups, int(yi.max()) + 1), dtype=np.float64)
    np.add.at(counts, (inv, yi.reshape(-1)), 1.0)
    return counts


def subject_kfold(
    subjects: Sequence[str] | np.ndarray,
    k: int,
    seed: int = 0,
    stratify_labels: Sequence[int] | np.ndarray | None = None,
) -> list[Fold]:
    """Group k-fold: every subject lands in exactly one test fold, never on both sides of a fold.

    Subjects are placed greedily, largest first (ties in seeded random order), into the fold that keeps the folds
    most even: even in size, and, with ``stratify_labels``, even in each class's share.

    Args:
        subjects: (N,) subject id of each sample.
        k: number of folds (2 <= k <= number of subjects).
        seed: seed of the tie-breaking order.
        stratify_labels: (N,) labels to balance across folds.

    Returns:
        ``k`` pairs ``(train_idx, test_idx)`` of sorted int64 arrays; the test folds partition ``range(N)``.
    """
    groups, inv = _encode(subjects)
    n_groups = len(groups)
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    if n_groups < k:
        raise ValueError(f"{n_groups} subjects cannot fill {k} subject-disjoint folds; use k <= {n_groups}")
    counts = _group_counts(inv, n_groups, stratify_labels)
    sizes = counts.sum(1)
    totals = np.maximum(counts.sum(0), 1.0)
    n_total = float(sizes.sum())
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_groups)
    order = order[np.argsort(-sizes[order], kind="stable")]

    fold_counts = np.zeros((k, counts.shape[1]))
    fold_of_group = np.empty(n_groups, dtype=np.int64)
    for g in order:
        empty = np.flatnonzero(fold_counts.sum(1) == 0)
        candidates = empty if len(empty) else np.arange(k)
        best, best_cost = -1, np.inf
        for f in candidates:
            trial = fold_counts.copy()
            trial[f] += counts[g]
            # Spread of each class's share over folds, plus spread of the fold sizes.
            cost = float((trial / totals).var(0).sum() + (trial.sum(1) / n_total).var())
            if cost < best_cost - 1e-12:
                best, best_cost = int(f), cost
        fold_of_group[g] = best
        fold_counts[best] += counts[g]

    sample_fold = fold_of_group[inv]
    return [(np.flatnonzero(sample_fold != f), np.flatnonzero(sample_fold == f)) for f in range(k)]


def folds_from_column(fold_ids: Sequence[int] | np.ndarray) -> list[Fold]:
    """Folds given by a per-sample fold column (e.g. the CK+48 manifest's ``subject_fold10``).

    Args:
        fold_ids: (N,) fold id of each sample.

    Returns:
        one ``(train_idx, test_idx)`` pair per distinct fold id, in sorted id order.
    """
    ids = np.asarray(fold_ids)
    values = np.unique(ids)
    if len(values) < 2:
        raise ValueError(f"a fold column needs at least 2 distinct values, got {values.tolist()}")
    return [(np.flatnonzero(ids != v), np.flatnonzero(ids == v)) for v in values]


def stratified_split(targets: Sequence[int] | np.ndarray, fraction: float, seed: int = 0) -> Fold:
    """Hold out ``fraction`` of each class at random (seeded), e.g. to carve a validation split from train.

    A class keeps at least one sample on the training side; each class with n samples holds out ``round(fraction * n)``.

    Args:
        targets: (N,) class labels.
        fraction: share held out, in (0, 1).
        seed: seed of the draw.

    Returns:
        ``(kept_idx, held_idx)``, sorted int64 arrays partitioning ``range(N)``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    y = np.asarray(targets)
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n_held = min(int(round(fraction * len(idx))), len(idx) - 1)
        if n_held > 0:
            held.append(rng.permutation(idx)[:n_held])
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(y), dtype=bool)
    mask[held_idx] = False
    return np.flatnonzero(mask), held_idx.astype(np.int64)


def group_holdout(
    subjects: Sequence[str] | np.ndarray,
    fraction: float,
    seed: int = 0,
    stratify_labels: Sequence[int] | np.ndarray | None = None,
) -> Fold:
    """Hold out whole subjects so that about ``fraction`` of the samples (and of each class) are held out.

    Subjects are visited in seeded random order; each one joins the held-out side when that brings the held-out
    class counts closer to ``fraction`` of the totals.

    Returns:
        ``(kept_idx, held_idx)``; no subject appears in both.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    groups, inv = _encode(subjects)
    n_groups = len(groups)
    if n_groups < 2:
        raise ValueError(f"a subject-disjoint split needs at least 2 subjects, got {n_groups}")
    counts = _group_counts(inv, n_groups, stratify_labels)
    totals = np.maximum(counts.sum(0), 1.0)
    target = fraction * counts.sum(0)
    n_total, n_target = counts.sum(), fraction * counts.sum()

    def cost(h: np.ndarray) -> float:
        return float((((h - target) / totals) ** 2).sum() + ((h.sum() - n_target) / n_total) ** 2)

    held = np.zeros(counts.shape[1])
    chosen = np.zeros(n_groups, dtype=bool)
    for g in np.random.default_rng(seed).permutation(n_groups):
        if cost(held + counts[g]) < cost(held):
            held += counts[g]
            chosen[g] = True
    if not chosen.any():  # every subject is bigger than the target: hold out the one closest to it
        chosen[int(np.argmin(np.abs(counts.sum(1) - n_target)))] = True
    if chosen.all():
        chosen[int(np.argmax(counts.sum(1)))] = False
    mask = chosen[inv]
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def train_valid_split(
    ds: FERDataset, fraction: float = 0.1, seed: int = 0, by_subject: bool = True
) -> tuple[FERDataset, FERDataset]:
    """Split a dataset into a training part and a validation part (split names ``"train"`` and ``"valid"``).

    Subject-disjoint (:func:`group_holdout`) when ``by_subject`` and the dataset knows its subjects; otherwise
    class-stratified (:func:`stratified_split`).

    Args:
        ds: the dataset to split.
        fraction: share of samples in the validation part.
        seed: seed of the draw.
        by_subject: keep each subject on one side when subjects are known.
    """
    if by_subject and ds.subjects is not None:
        kept, held = group_holdout(ds.subjects, fraction, seed, stratify_labels=ds.targets)
    else:
        kept, held = stratified_split(ds.targets, fraction, seed)
    if len(held) == 0:
        raise ValueError(f"{ds.name}/{ds.split}: fraction {fraction} of {len(ds)} samples holds out nothing")
    return ds.subset(kept, split="train"), ds.subset(held, split="valid")
