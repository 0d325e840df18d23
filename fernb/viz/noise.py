"""Figures for label noise: flipped-label detection over epochs, the ROC and precision-recall curves of a chosen
epoch's scores, the faces a score suspects most, and accuracy across noise rates (data from
:mod:`fernb.explore.noise_detection` and :mod:`fernb.explore.robustness`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = ["SCORE_COLOURS", "plot_detection_curves", "plot_detection_roc", "plot_suspects", "plot_robustness"]

# one colour per score, the reliability figures' colours for ARBEx's branches
SCORE_COLOURS: dict[str, str] = {
    "loss": "black",
    "disagreement": "tab:red",
    "uncertainty_primary": "tab:blue",
    "uncertainty_anchor": "tab:green",
    "uncertainty_attention": "tab:purple",
}
_LABELS = {
    "loss": "loss (small-loss)",
    "disagreement": "disagreement 1 - m[given]",
    "uncertainty_primary": "1 - c_p (primary)",
    "uncertainty_anchor": "1 - c_g (anchor)",
    "uncertainty_attention": "1 - c_a (attention)",
}


def _clean(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)


def _label(score: str) -> str:
    return _LABELS.get(score, score)


def plot_detection_curves(
    detection: pd.DataFrame,
    best_epoch: int | None = None,
    scores: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """How well each score finds the flipped training labels, epoch by epoch: AUROC (left) and precision at k = the
    number of flipped samples (right; equal to the recall at that k), one line per score.

    Args:
        detection: a :func:`~fernb.explore.load_noise_detection` frame (rows of a partial epoch are left out).
        best_epoch: the epoch selected on validation, marked with a dashed line.
        scores: the scores to draw (default all of the frame's).
    """
    rows = detection[detection["partial"] == 0] if "partial" in detection.columns else detection
    names = [str(s) for s in pd.unique(rows["score"].astype(str))] if scores is None else list(scores)
    fig = Figure(figsize=(10.0, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    share = float((rows["n_noisy"] / rows["n"]).iloc[-1]) if len(rows) else float("nan")
    chance = {"auroc": 0.5, "precision_at_k": share}
    titles = ("AUROC", "precision@k (k = number flipped)")
    for ax, metric, name in zip(axes, ("auroc", "precision_at_k"), titles, strict=True):
        for score in names:
            sub = rows[rows["score"].astype(str) == score].sort_values("epoch")
            if sub.empty:
                continue
            ax.plot(
                sub["epoch"],
                sub[metric],
                marker="o" if len(sub) < 30 else None,
                ms=3.5,
                lw=1.6,
                color=SCORE_COLOURS.get(score),
                label=_label(score),
            )
        chance_label = f"chance (AUROC 0.5; precision@k: the noisy share, {share:.2f})"
        ax.axhline(chance[metric], color="gray", lw=0.9, ls=":", label=chance_label)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="gray", ls="--", lw=1)
            ax.annotate(
                "selected epoch",
                (best_epoch, 1.0),
                xycoords=("data", "axes fraction"),
                textcoords="offset points",
                xytext=(3, -10),
                fontsize=7,
                color="gray",
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel(name.split(" ")[0])
        ax.set_ylim(0, 1.02)
        if len(rows):
            ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(name, fontsize=10)
        _clean(ax)
    handles, labels = axes[0].get_legend_handles_labels()
    ncols = min(3, max(1, len(labels)))
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=8, frameon=False)
    n = int(rows["n"].iloc[-1]) if len(rows) else 0
    n_noisy = int(rows["n_noisy"].iloc[-1]) if len(rows) else 0
    fig.suptitle(
        (title + "\n" if title else "") + f"flipped-label detection on the training split ({n_noisy} of {n} wrong)",
        fontsize=10,
    )
    return fig


def plot_detection_roc(curves: Mapping[str, Mapping[str, Any]], title: str | None = None) -> Figure:
    """ROC (left) and precision-recall (right) curves of several scores of one epoch, from
    :func:`~fernb.explore.robustness.detection_curves`; the legend gives each score's AUROC and average precision.
    """
    fig = Figure(figsize=(10.0, 4.0), layout="constrained")
    roc, pr = fig.subplots(1, 2)
    share = next((float(c["noisy_share"]) for c in curves.values()), float("nan"))
    for score, c in curves.items():
        colour = SCORE_COLOURS.get(score)
        roc.plot(c["fpr"], c["tpr"], color=colour, lw=1.6, label=f"{_label(score)}: AUROC {c['auroc']:.3f}")
        pr.plot(
            np.r_[0.0, c["recall"]],
            np.r_[c["precision"][:1], c["precision"]] if len(c["precision"]) else [],
            color=colour,
            lw=1.6,
            drawstyle="steps-post",
            label=f"{_label(score)}: AP {c['ap']:.3f}",
        )
    roc.plot([0, 1], [0, 1], color="gray", lw=0.9, ls=":", label="chance: AUROC 0.5")
    pr.axhline(share, color="gray", lw=0.9, ls=":", label=f"chance: noisy share {share:.2f}")
    roc.set_xlabel("false-positive rate (clean labels suspected)")
    roc.set_ylabel("true-positive rate (flips found)")
    roc.set_title("ROC", fontsize=10)
    pr.set_xlabel("recall (share of the flips found)")
    pr.set_ylabel("precision (share of suspects really flipped)")
    pr.set_title("precision-recall", fontsize=10)
    for ax in (roc, pr):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7, frameon=False, loc="lower right" if ax is roc else "upper right")
        _clean(ax)
    n = next((int(c["n"]) for c in curves.values()), 0)
    n_noisy = next((int(c["n_noisy"]) for c in curves.values()), 0)
    fig.suptitle((title + "\n" if title else "") + f"{n_noisy} flipped of {n} training labels", fontsize=10)
    return fig


def plot_suspects(
    suspects: pd.DataFrame,
    images: Sequence[Any],
    cols: int = 8,
    cell: float = 1.45,
    title: str | None = None,
) -> Figure:
    """The faces a score ranks most likely mislabelled, best first, each titled with its rank, given label, true
    label and score; green titles mark a label that really was flipped (a hit), grey ones a right label (a false
    alarm).

    Args:
        suspects: a :func:`~fernb.explore.robustness.top_suspects` frame (``rank``, ``given``, ``true``,
            ``is_noisy``, ``score``).
        images: one image per row of ``suspects`` (arrays or PIL images, gray or RGB).
    """
    n = len(suspects)
    rows = max(1, -(-n // cols))
    cols = max(1, min(cols, n))
    fig = Figure(figsize=(cols * cell + 0.2, rows * (cell + 0.62) + 0.55), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.set_axis_off()
    hits = 0
    for ax, (_, row), img in zip(axes, suspects.iterrows(), images, strict=False):
        a = np.asarray(img)
        if a.ndim == 3 and a.shape[-1] == 1:
            a = a[..., 0]
        ax.imshow(a, cmap="gray" if a.ndim == 2 else None)
        flipped = bool(row["is_noisy"])
        hits += flipped
        true = "?" if pd.isna(row["true"]) else str(row["true"])
        ax.set_title(
            f"#{int(row['rank'])}  {float(row['score']):.2f}\ngiven {row['given']}\ntrue {true}",
            fontsize=7.5,
            color="tab:green" if flipped else "dimgray",
            fontweight="bold" if flipped else "normal",
        )
    score = suspects.attrs.get("score", "score")
    head = f"top {n} suspects by {_label(str(score))}: {hits} really flipped (green), {n - hits} right labels (grey)"
    fig.suptitle((title + "\n" if title else "") + head, fontsize=9.5)
    return fig


def plot_robustness(
    table: pd.DataFrame, metrics: Sequence[str] = ("valid acc", "test acc"), title: str | None = None
) -> Figure:
    """Accuracy against the injected noise rate, one line per method, one panel per metric, with the standard
    deviation over seeds as error bars (where there are several seeds).

    Args:
        table: a :func:`~fernb.explore.robustness.robustness_table` frame (index ``(method, noise)``).
        metrics: columns to draw; a column that is all NaN (no test split) is left out.
    """
    metrics = [m for m in metrics if m in table.columns and table[m].notna().any()]
    fig = Figure(figsize=(4.4 * max(1, len(metrics)) + 0.6, 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(metrics)), squeeze=False)).ravel()
    methods = list(dict.fromkeys(table.index.get_level_values("method")))
    rates = sorted(set(table.index.get_level_values("noise")))
    for ax, metric in zip(axes, metrics, strict=False):
        for k, method in enumerate(methods):
            sub = table.xs(method, level="method").sort_index()
            x = 100 * sub.index.to_numpy(dtype=float)
            y = 100 * sub[metric].to_numpy(dtype=float)
            std_col = f"{metric} std"
            err = 100 * sub[std_col].to_numpy(dtype=float) if std_col in sub.columns else None
            if err is not None and not np.isfinite(err).any():
                err = None
            ax.errorbar(x, y, yerr=err, marker="o", ms=4, lw=1.6, capsize=3, label=method, color=f"C{k}")
        ax.set_xticks([100 * r for r in rates], [f"{100 * r:g}" for r in rates])
        ax.set_xlabel("injected label noise (%)")
        ax.set_ylabel(f"{metric} (%)")
        split = metric.split()[0]
        ax.set_title(f"{metric} on the clean {'validation' if split == 'valid' else split} split", fontsize=10)
        ax.legend(fontsize=8, frameon=False)
        _clean(ax)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
