"""Figures for the data notebook: class balance, sample grids, label distributions, image galleries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from ..data.base import FERDataset

__all__ = ["plot_class_distribution", "plot_sample_grid", "plot_label_distributions", "plot_image_gallery"]


def _counts(obj: FERDataset | Mapping[str, int]) -> dict[str, int]:
    return obj.class_counts() if isinstance(obj, FERDataset) else dict(obj)


def plot_class_distribution(
    splits: Mapping[str, FERDataset | Mapping[str, int]], normalize: bool = False, title: str | None = None
) -> Figure:
    """Grouped bars of samples per class, one colour per split.

    Args:
        splits: ``{"train": dataset_or_counts, "valid": ...}``; classes are taken in the first split's order.
        normalize: show fractions of each split instead of counts.
    """
    counts = {name: _counts(v) for name, v in splits.items()}
    classes = list(next(iter(counts.values())))
    for c in counts.values():
        classes += [k for k in c if k not in classes]
    fig = Figure(figsize=(max(6.0, 0.9 * len(classes) + 2), 3.6), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, len(counts))
    x = np.arange(len(classes))
    for j, (name, c) in enumerate(counts.items()):
        vals = np.array([c.get(k, 0) for k in classes], dtype=float)
        total = vals.sum()
        if normalize and total > 0:
            vals = vals / total
        bars = ax.bar(x + (j - (len(counts) - 1) / 2) * width, vals, width, label=f"{name} (n={int(total)})")
        if not normalize:
            ax.bar_label(bars, labels=[f"{int(v)}" for v in vals], fontsize=7, padding=1)
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set_ylabel("fraction" if normalize else "images")
    ax.set_title(title or "Class distribution")
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def plot_sample_grid(
    dataset: FERDataset, per_class: int = 6, seed: int = 0, annotate: bool = True, cell: float = 1.1
) -> Figure:
    """One row per class with ``per_class`` random samples (untransformed images).

    With ``annotate``, a sample whose given label differs from ``meta["true_label"]`` (synthetic noise) is titled in
    red with its true class, and a blend is titled with its second class and weight.
    """
    rng = np.random.default_rng(seed)
    names = dataset.class_names
    fig = Figure(figsize=(cell * per_class + 1.4, cell * len(names) + 0.4), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(names), per_class, squeeze=False))
    true = dataset.meta.get("true_label")
    second = dataset.meta.get("second_label")
    weight = dataset.meta.get("blend_weight")
    for r, cname in enumerate(names):
        idx = np.flatnonzero(dataset.targets == r)
        pick: np.ndarray | list[int] = rng.choice(idx, size=min(per_class, len(idx)), replace=False) if len(idx) else []
        for c in range(per_class):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c == 0:
                ax.set_ylabel(cname, rotation=0, ha="right", va="center", fontsize=9)
            if c >= len(pick):
                continue
            i = int(pick[c])
            img = np.asarray(dataset.load_image(i))
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
            if annotate:
                label = ""
                color = "black"
                if true is not None and int(true[i]) != r:
                    label, color = f"true: {names[int(true[i])]}", "crimson"
                elif second is not None and weight is not None and float(weight[i]) > 0 and int(second[i]) >= 0:
                    label = f"+{names[int(second[i])]} {float(weight[i]):.2f}"
                if label:
                    ax.set_title(label, fontsize=6, color=color, pad=1)
    fig.suptitle(f"{dataset.name} / {dataset.split}: samples per class", fontsize=10)
    return fig


def plot_label_distributions(
    dists: np.ndarray, class_names: Sequence[str], labels: Sequence[int] | None = None, title: str | None = None
) -> Figure:
    """Stacked horizontal bars of per-sample label distributions (crowd votes, synthetic blends).

    Args:
        dists: (N, C) rows summing to 1.
        labels: optional (N,) given labels, marked with a black dot on their class segment.
    """
    dists = np.asarray(dists, dtype=float)
    n, c = dists.shape
    fig = Figure(figsize=(7.5, 0.28 * n + 1.2), layout="constrained")
    ax = fig.subplots()
    colors = _class_colors(c)
    left = np.zeros(n)
    for k in range(c):
        ax.barh(np.arange(n), dists[:, k], left=left, color=colors[k], label=class_names[k], height=0.8)
        left += dists[:, k]
    if labels is not None:
        starts = np.cumsum(np.c_[np.zeros(n), dists], axis=1)
        lab = np.asarray(labels)
        ax.plot(starts[np.arange(n), lab] + dists[np.arange(n), lab] / 2, np.arange(n), "k.", ms=4, label="label")
    ax.set_xlim(0, 1)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlabel("probability")
    ax.set_ylabel("sample")
    ax.set_title(title or "Label distributions")
    ax.legend(ncols=min(5, c + 1), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    return fig


def plot_image_gallery(
    images: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    cell: float = 1.3,
    suptitle: str | None = None,
) -> Figure:
    """A grid of images (H, W) gray or (H, W, 3) uint8 / float in [0, 1], with optional titles."""
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(cell * ncols, cell * nrows + (0.4 if suptitle else 0.1)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for k, ax in enumerate(axes):
        ax.axis("off")
        if k >= n:
            continue
        img = np.asarray(images[k])
        gray = img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1)
        ax.imshow(
            img.squeeze() if gray else img,
            cmap="gray" if gray else None,
            vmin=0,
            vmax=255 if img.dtype == np.uint8 else 1,
        )
        if titles is not None:
            ax.set_title(titles[k], fontsize=7, pad=2)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


def _class_colors(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i) for i in range(n)]
