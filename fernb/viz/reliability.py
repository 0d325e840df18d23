"""Figures for ARBEx's reliability balancing: one sample's distributions, confidence scatters, the noise-repair
summary and the per-class divergence from reference label distributions (data from :mod:`fernb.explore.reliability`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..explore.reliability import ReliabilitySample

__all__ = [
    "MAP_COLOURINGS",
    "plot_reliability_sample",
    "plot_confidence_scatter",
    "plot_reliability_map",
    "plot_noise_report",
    "plot_divergence_by_class",
    "reliability_groups",
]

_COLORS = {
    "primary": "tab:blue",
    "anchor": "tab:green",
    "attention": "tab:purple",
    "correction": "tab:olive",
    "corrected": "tab:red",
}
_SYMBOL = {"primary": "c_p", "anchor": "c_g", "attention": "c_a", "correction": "c", "corrected": "c"}
_HUE_NAMES = {
    "is_noisy": ("noisy", "clean"),
    "flagged": ("flagged", "kept"),
    "changed": ("changed", "unchanged"),
    "repaired": ("repaired", "other"),
    "broken": ("broken", "other"),
}


def _clean(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)


def plot_reliability_sample(
    sample: ReliabilitySample,
    names: Sequence[str] = ("primary", "anchor", "attention", "corrected"),
    title: str | None = None,
    panel: float = 2.1,
) -> Figure:
    """One sample: its image, then a horizontal bar chart per distribution with its confidence in the title.

    The classes are named once (shared axis; the given label in bold). The given label (if any) is marked by a black
    triangle at the right edge, the true label (when known) by a green star; the reference distribution (when known:
    FER+ votes, synthetic ground truth) is drawn as black outlines. The top class of each distribution is coloured.
    """
    names = [n for n in names if n in sample.dists]
    has_img = sample.image is not None
    c = len(sample.class_names)
    # a fixed layout in inches (no layout engine: the explorer re-plots this figure at every step)
    img_w, bar_w, gap, names_w, left, right, bottom = panel * 0.9, panel - 0.35, 0.45, 0.8, 0.1, 0.35, 0.3
    top = 0.75 if title else 0.6
    width = left + (img_w + 0.2 if has_img else 0) + names_w + len(names) * bar_w + (len(names) - 1) * gap + right
    height = max(2.2, 0.22 * c + 1.3)
    fig = Figure(figsize=(width, height))
    h = (height - top - bottom) / height
    axes, x0 = [], left
    if has_img:
        axes.append(fig.add_axes((x0 / width, bottom / height, img_w / width, h)))
        x0 += img_w + 0.2
    x0 += names_w
    for _ in names:
        axes.append(fig.add_axes((x0 / width, bottom / height, bar_w / width, h)))
        x0 += bar_w + gap
    if has_img:
        img = np.asarray(sample.image)
        axes[0].imshow(img, cmap="gray" if img.ndim == 2 else None)
        axes[0].set_axis_off()
        axes[0].set_title(f"#{sample.index}", fontsize=9)
    bars = axes[int(has_img) :]
    y = np.arange(c)
    for k, (ax, name) in enumerate(zip(bars, names, strict=True)):
        if k:
            ax.sharey(bars[0])
        d = np.asarray(sample.dists[name], dtype=float)
        colors = ["#b8c2cc"] * c
        colors[int(d.argmax())] = _COLORS.get(name, "tab:gray")
        ax.barh(y, d, color=colors, height=0.75)
        if sample.reference is not None:
            ax.barh(y, sample.reference, height=0.75, fill=False, edgecolor="black", lw=0.8)
        edge = ax.get_yaxis_transform()  # x in axes fractions, y in classes
        if sample.given is not None:
            ax.plot([1.04], [sample.given], "<", color="black", ms=6, transform=edge, clip_on=False)
        if sample.true is not None and sample.true >= 0:
            ax.plot([1.12], [sample.true], "*", color="tab:green", ms=8, transform=edge, clip_on=False)
        ax.set_xlim(0, 1)
        ax.set_xticks([0, 0.5, 1], ["0", ".5", "1"], fontsize=7)
        conf = sample.confidences.get(name)
        ax.set_title(name + (f"  {_SYMBOL.get(name, 'c')}={conf:.2f}" if conf is not None else ""), fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
        if k:
            ax.tick_params(axis="y", labelleft=False)
    bars[0].set_yticks(y, sample.class_names, fontsize=8)
    bars[0].set_ylim(c - 0.5, -0.5)
    cls = sample.class_names
    label = "no given label"
    if sample.given is not None:
        bars[0].get_yticklabels()[sample.given].set_fontweight("bold")
        label = f"given {cls[sample.given]}"
    if sample.true is not None:
        true = cls[sample.true] if sample.true >= 0 else "(outside the label space)"
        label += f", true {true}" + (" (noisy)" if sample.given is not None and sample.true != sample.given else "")
    if "primary" in sample.dists and "corrected" in sample.dists:
        p, q = int(np.argmax(sample.dists["primary"])), int(np.argmax(sample.dists["corrected"]))
        label += f"; primary -> {cls[p]}, corrected -> {cls[q]}" + (" (changed)" if p != q else "")
    key = (
        "triangle: given, star: true" if sample.given is not None else ("star: true" if sample.true is not None else "")
    )
    key += (", " if key else "") + "outline: reference" if sample.reference is not None else ""
    fig.suptitle(
        (title + "\n" if title else "") + label + (f"   [{key}]" if key else ""),
        fontsize=9,
        y=1 - 0.06 / height,
        va="top",
    )
    return fig


def _hue_groups(frame: pd.DataFrame, hue: str | None) -> list[tuple[str, np.ndarray]]:
    if hue is None:
        return [("samples", np.ones(len(frame), bool))]
    values = frame[hue]
    if values.dtype == bool:
        yes, no = _HUE_NAMES.get(hue, (hue, f"not {hue}"))
        v = values.to_numpy()
        return [(no, ~v), (yes, v)]
    return [(str(u), (values == u).to_numpy()) for u in pd.unique(values)]


def plot_confidence_scatter(
    frame: pd.DataFrame,
    x: str = "c_primary",
    ys: Sequence[str] = ("c_anchor", "c_attention"),
    hue: str | None = "auto",
    title: str | None = None,
) -> Figure:
    """Confidence of the primary distribution against the anchor and attention confidences, one dot per sample.

    Args:
        frame: a :class:`~fernb.explore.reliability.ReliabilityTable` frame.
        x, ys: confidence columns; one panel per ``ys`` entry.
        hue: a column to colour by (bool or categorical); ``"auto"``: ``is_noisy`` when known, else ``flagged``.
    """
    if hue == "auto":
        hue = "is_noisy" if "is_noisy" in frame.columns else "flagged"
    groups = _hue_groups(frame, hue)
    fig = Figure(figsize=(3.6 * len(ys) + 0.4, 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(ys), squeeze=False)).ravel()
    for ax, y in zip(axes, ys, strict=True):
        for k, (name, m) in enumerate(groups):
            emphasis = k > 0 and len(groups) == 2
            ax.scatter(
                frame[x].to_numpy()[m],
                frame[y].to_numpy()[m],
                s=14 if emphasis else 8,
                alpha=0.9 if emphasis else 0.45,
                color="tab:red" if emphasis else None,
                label=f"{name} ({int(m.sum())})",
                edgecolors="none",
            )
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.legend(fontsize=7, frameon=False)
        _clean(ax)
    fig.suptitle(title or "Confidences (1 - normalised entropy)", fontsize=10)
    return fig


# how the reliability map colours its points: name -> what it needs in the frame
MAP_COLOURINGS: dict[str, str] = {
    "outcome": "is_noisy",  # flipped or clean label x what the correction made of it (needs the true labels)
    "changed": "changed",  # the correction changed the prediction
    "flagged": "flagged",  # the corrected label differs from the given one
    "given": "given",  # the given label's class
    "corrected": "corrected",  # the corrected label's class
}
# outcome groups, drawn in this order (the rare, telling ones last, on top)
_OUTCOMES = (
    ("clean, kept", "#9ab8d8"),
    ("flipped, missed", "#8c6bb1"),
    ("flipped, flagged (wrong class)", "#f28e2b"),
    ("clean, broken", "#d62728"),
    ("flipped, repaired", "#2ca02c"),
)


def _class_colour(k: int) -> str:
    from matplotlib import colormaps

    r, g, b, _ = colormaps["tab10"](k % 10)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def reliability_groups(frame: pd.DataFrame, colour: str = "auto") -> list[tuple[str, np.ndarray, str]]:
    """The samples of a reliability frame split into coloured groups: ``[(name, (N,) bool mask, "#rrggbb"), ...]``,
    every sample in exactly one group, empty groups left out.

    Args:
        frame: a :class:`~fernb.explore.reliability.ReliabilityTable` frame.
        colour: a key of :data:`MAP_COLOURINGS`, or ``"auto"``: ``outcome`` when the true labels are known, else
            ``changed``. ``outcome`` splits the clean labels into kept / broken (flagged) and the flipped ones into
            repaired (corrected to the true label), flagged to a wrong class, and missed (corrected label = given).
    """
    if colour == "auto":
        colour = "outcome" if "is_noisy" in frame.columns else "changed"
    if colour not in MAP_COLOURINGS:
        raise ValueError(f"unknown colouring {colour!r}; choose from {['auto', *MAP_COLOURINGS]}")
    need = MAP_COLOURINGS[colour]
    if need not in frame.columns:
        raise ValueError(f"colouring {colour!r} needs the column {need!r}, which this table lacks (no true labels?)")
    if colour == "outcome":
        noisy = frame["is_noisy"].to_numpy(dtype=bool)
        flagged = frame["flagged"].to_numpy(dtype=bool)
        repaired = frame["repaired"].to_numpy(dtype=bool)
        masks = [~noisy & ~flagged, noisy & ~flagged, noisy & flagged & ~repaired, ~noisy & flagged, repaired]
        groups = [(name, m, c) for (name, c), m in zip(_OUTCOMES, masks, strict=True)]
    elif colour in ("changed", "flagged"):
        v = frame[colour].to_numpy(dtype=bool)
        no, yes = _HUE_NAMES[colour]
        groups = [(no, ~v, "#9ab8d8"), (yes, v, "#d62728")]
    else:
        codes = frame[colour].cat.codes.to_numpy()
        names = list(frame[colour].cat.categories)
        groups = [(f"{colour} {n}", codes == k, _class_colour(k)) for k, n in enumerate(names)]
    return [(name, m, c) for name, m, c in groups if m.any()]


def plot_reliability_map(
    frame: pd.DataFrame,
    x: str = "c_anchor",
    y: str = "c_attention",
    colour: str = "auto",
    title: str | None = None,
    ring: str | None = "changed",
) -> Figure:
    """One dot per sample at two columns of a reliability frame, coloured by :func:`reliability_groups`, the
    samples whose prediction the correction changed ringed: the static twin of the reliability explorer's map.

    Args:
        frame: a :class:`~fernb.explore.reliability.ReliabilityTable` frame.
        x, y: numeric columns (confidences ``c_*``, ``gain``, ``p_given``, ...).
        colour: see :func:`reliability_groups`. ring: a boolean column whose samples are ringed (None: none).
    """
    fig = Figure(figsize=(5.6, 4.4), layout="constrained")
    ax = fig.subplots()
    xs, ys = frame[x].to_numpy(dtype=float), frame[y].to_numpy(dtype=float)
    for name, m, c in reliability_groups(frame, colour):
        ax.scatter(xs[m], ys[m], s=12, color=c, alpha=0.85, label=f"{name} ({int(m.sum())})", edgecolors="none")
    if ring is not None and ring in frame.columns:
        r = frame[ring].to_numpy(dtype=bool)
        if r.any():
            ax.scatter(xs[r], ys[r], s=40, facecolors="none", edgecolors="black", lw=0.6, label=f"{ring} ({r.sum()})")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.legend(fontsize=7, frameon=False, loc="best")
    _clean(ax)
    ax.set_title(title or f"{len(frame)} samples: {y} against {x}", fontsize=10)
    return fig


_RATES = ("precision", "recall", "f1", "repair_rate", "break_rate", "accuracy")


def plot_noise_report(
    report: pd.DataFrame,
    accuracy: pd.DataFrame | None = None,
    title: str | None = None,
) -> Figure:
    """The noise-detection rates of each prediction (primary vs corrected), and accuracy with / without correction.

    Args:
        report: :func:`~fernb.explore.reliability.noise_report` output (rows: metrics, columns: predictions).
        accuracy: optional :func:`~fernb.explore.reliability.accuracy_table` output (rows: splits), drawn on the right.
    """
    ncols = 1 + int(accuracy is not None)
    fig = Figure(figsize=(6.2 + 3.4 * (ncols - 1), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, ncols, squeeze=False, width_ratios=[1.8, 1][:ncols])).ravel()
    rates = [r for r in _RATES if r in report.index]
    x = np.arange(len(rates))
    width = 0.8 / max(1, report.shape[1])
    ax = axes[0]
    for j, col in enumerate(report.columns):
        vals = report.loc[rates, col].astype(float).to_numpy()
        bars = ax.bar(
            x + (j - (report.shape[1] - 1) / 2) * width, np.nan_to_num(vals), width, label=col, color=_COLORS.get(col)
        )
        ax.bar_label(bars, labels=["n/a" if np.isnan(v) else f"{v:.2f}" for v in vals], fontsize=6.5, padding=1)
    ax.set_xticks(x, [r.replace("_", " ") for r in rates])
    _rate_axis(ax)
    first = report.iloc[:, 0]
    counts = ", ".join(f"{k} {int(first[k])}" for k in ("n", "noisy") if k in report.index)
    ax.set_title(f"Label-noise detection ({counts})", fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="upper left", ncols=report.shape[1])
    _clean(ax)
    if accuracy is not None:
        ax = axes[1]
        splits = list(accuracy.index)
        xs = np.arange(len(splits))
        for j, (col, name) in enumerate((("accuracy_primary", "primary"), ("accuracy_corrected", "corrected"))):
            vals = accuracy[col].astype(float).to_numpy()
            bars = ax.bar(xs + (j - 0.5) * 0.38, vals, 0.38, label=name, color=_COLORS[name])
            ax.bar_label(bars, labels=[f"{v:.2f}" for v in vals], fontsize=6.5, padding=1)
        ax.set_xticks(xs, [f"{s}\n(n={int(accuracy.loc[s, 'n'])})" for s in splits])
        _rate_axis(ax)
        ax.set_title("Accuracy without / with correction", fontsize=10)
        ax.legend(fontsize=8, frameon=False, loc="upper left", ncols=2)
        _clean(ax)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _rate_axis(ax: Axes) -> None:
    """A 0-1 axis with headroom above the bars' labels for a one-row legend."""
    ax.set_ylim(0, 1.22)
    ax.set_yticks(np.linspace(0, 1, 6))


def plot_divergence_by_class(frame: pd.DataFrame, title: str | None = None) -> Figure:
    """Per-class mean KL and JS divergence from the reference distributions, one bar per predicted distribution.

    Args:
        frame: :func:`~fernb.explore.reliability.divergence_by_class` output (rows: classes then ``all``).
    """
    metrics = [m for m in ("KL", "JS") if m in frame.columns.get_level_values(0)]
    fig = Figure(figsize=(max(6.0, 0.75 * len(frame) + 1.5) * len(metrics) / 1.4, 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics), squeeze=False)).ravel()
    n = frame[("n", "")] if ("n", "") in frame.columns else None
    labels = [f"{c}\n(n={int(n[c])})" if n is not None else str(c) for c in frame.index]
    x = np.arange(len(frame))
    for ax, metric in zip(axes, metrics, strict=True):
        sub = frame[metric]
        width = 0.8 / max(1, sub.shape[1])
        for j, col in enumerate(sub.columns):
            ax.bar(
                x + (j - (sub.shape[1] - 1) / 2) * width,
                np.nan_to_num(sub[col].to_numpy(dtype=float)),
                width,
                label=col,
                color=_COLORS.get(col),
            )
        if "all" in list(frame.index):
            ax.axvline(len(frame) - 1.5, color="gray", lw=0.8, ls=":")
        ax.set_xticks(x, labels, rotation=35, ha="right", fontsize=7.5)
        ax.set_ylabel(f"mean {metric}(reference || prediction)" if metric == "KL" else "mean JS divergence")
        ax.set_title(f"{metric} divergence per class (lower = closer)", fontsize=10)
        _clean(ax)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=len(names), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
