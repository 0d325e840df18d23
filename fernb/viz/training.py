"""Figures for training and comparison: learning curves, confusion matrices, per-class bars, leaderboards."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_history", "plot_confusion_matrix", "plot_per_class", "plot_leaderboard"]


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for i, row in enumerate(history):
        v = row.get(key)
        if v is None:
            continue
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        if np.isfinite(v):
            xs.append(float(row.get("epoch", i + 1)))
            ys.append(v)
    return np.asarray(xs), np.asarray(ys)


def plot_history(
    history: Sequence[Mapping[str, Any]],
    panels: Mapping[str, Sequence[str]] | None = None,
    title: str | None = None,
    best_epoch: int | None = None,
) -> Figure:
    """Learning curves from a run's per-epoch rows (``metrics.csv`` / ``FitResult.history``).

    Args:
        panels: ``{"loss": ["train_loss", "valid_loss"], ...}``; by default loss, accuracy and learning rate, each
            panel showing the columns that exist.
        best_epoch: marked with a dashed line (the epoch selected on validation).
    """
    keys = set().union(*(r.keys() for r in history)) if history else set()
    if panels is None:
        panels = {
            "loss": sorted(k for k in keys if k.endswith("loss") and not k.startswith("test")),
            "accuracy / F1": [
                k
                for k in ("train_accuracy", "valid_accuracy", "valid_mean_class_accuracy", "valid_macro_f1")
                if k in keys
            ],
            "learning rate": [k for k in ("lr",) if k in keys],
        }
        panels = {t: v for t, v in panels.items() if v}
    fig = Figure(figsize=(4.2 * max(1, len(panels)), 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(panels)), squeeze=False)).ravel()
    for ax, (name, cols) in zip(axes, panels.items(), strict=False):
        for col in cols:
            x, y = _series(history, col)
            if len(x):
                ax.plot(x, y, marker="o" if len(x) < 30 else None, ms=3, label=col)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="gray", ls="--", lw=1)
        ax.set_xlabel("epoch")
        ax.set_title(name, fontsize=10)
        if name == "learning rate":
            ax.set_yscale("log")
        ax.legend(fontsize=7, frameon=False)
        ax.spines[["top", "right"]].set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def plot_confusion_matrix(
    cm: np.ndarray, class_names: Sequence[str], normalize: bool = True, title: str | None = None, cmap: str = "Blues"
) -> Figure:
    """A confusion matrix (rows = true class, columns = prediction), row-normalised by default, with counts."""
    cm = np.asarray(cm, dtype=float)
    rows = cm.sum(1, keepdims=True)
    shown = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0) if normalize else cm
    n = len(class_names)
    fig = Figure(figsize=(0.62 * n + 2.2, 0.55 * n + 1.6), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(shown, cmap=cmap, vmin=0, vmax=1 if normalize else None)
    for i in range(n):
        for j in range(n):
            text = f"{shown[i, j]:.2f}\n({int(cm[i, j])})" if normalize else f"{int(cm[i, j])}"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=6.5,
                color="white" if shown[i, j] > (0.6 if normalize else 0.6 * shown.max()) else "black",
            )
    ax.set_xticks(range(n), class_names, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or ("Confusion matrix (row-normalised)" if normalize else "Confusion matrix"), fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def plot_per_class(
    values: Mapping[str, Sequence[float]],
    class_names: Sequence[str],
    ylabel: str = "recall",
    errors: Mapping[str, Sequence[float]] | None = None,
    title: str | None = None,
) -> Figure:
    """Grouped bars of a per-class metric for several methods (``{"arbex": [...], "resnet18": [...]}``)."""
    fig = Figure(figsize=(max(6.0, 0.9 * len(class_names) + 2), 3.4), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, len(values))
    x = np.arange(len(class_names))
    for j, (name, vals) in enumerate(values.items()):
        err = None if errors is None else errors.get(name)
        ax.bar(x + (j - (len(values) - 1) / 2) * width, vals, width, yerr=err, capsize=2, label=name)
    ax.set_xticks(x, class_names, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"Per-class {ylabel}")
    ax.legend(fontsize=8, frameon=False, ncols=min(4, len(values)))
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def plot_leaderboard(
    names: Sequence[str],
    means: Sequence[float],
    stds: Sequence[float] | None = None,
    ci: Sequence[tuple[float, float]] | None = None,
    reference: Mapping[str, float] | None = None,
    metric: str = "accuracy",
    chance: float | None = None,
) -> Figure:
    """Horizontal bars of a metric per method with std or CI whiskers; paper numbers as hollow diamonds."""
    n = len(names)
    fig = Figure(figsize=(6.5, 0.45 * n + 1.4), layout="constrained")
    ax = fig.subplots()
    y = np.arange(n)
    xerr = None
    if ci is not None:
        xerr = np.array(
            [
                [m - lo for m, (lo, _) in zip(means, ci, strict=True)],
                [hi - m for m, (_, hi) in zip(means, ci, strict=True)],
            ]
        )
    elif stds is not None:
        xerr = np.asarray(stds)
    ax.barh(y, means, xerr=xerr, capsize=3, color="steelblue", alpha=0.85, label="fernb (this run)")
    for yi, m in zip(y, means, strict=True):
        ax.text(m + 0.01, float(yi), f"{m:.3f}", va="center", fontsize=8)
    if reference:
        ref = [(yi, reference[nm]) for yi, nm in zip(y, names, strict=True) if nm in reference]
        if ref:
            ax.plot([r for _, r in ref], [yi for yi, _ in ref], "D", mfc="none", mec="crimson", ms=7, label="paper")
    if chance is not None:
        ax.axvline(chance, color="gray", ls=":", lw=1, label="chance")
    ax.set_yticks(y, names)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlim(0, 1.05)
    ax.set_xlabel(metric)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    return fig
