"""Figures of embedding maps: samples coloured by label, prediction or confidence, ARBEx's anchors as stars, a
sample's neighbours, anchors moving over epochs, and ARBEx beside a baseline.

The functions take projected :class:`fernb.explore.embeddings.EmbeddingSet` objects (arrays plus their 2-D map
coordinates ``xy`` / ``anchor_xy``, see :func:`fernb.explore.embeddings.project`) and return Figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..explore.embeddings import COLOURINGS, EmbeddingSet, Neighbours

__all__ = [
    "class_colours",
    "plot_embedding_map",
    "plot_embedding_epochs",
    "plot_embedding_comparison",
    "plot_anchor_summary",
]

ANCHOR_STYLE: dict[str, Any] = {"marker": "*", "s": 340, "edgecolors": "black", "linewidths": 1.3, "zorder": 5}
CONFIDENCE_CMAP = "viridis"


def class_colours(num_classes: int) -> np.ndarray:
    """(C, 4) RGBA: one fixed colour per class index (tab10 up to 10 classes, then tab20)."""
    cmap = colormaps["tab10" if num_classes <= 10 else "tab20"]
    return np.asarray([cmap(i % cmap.N) for i in range(num_classes)])


def _need_xy(es: EmbeddingSet) -> np.ndarray:
    """``es.xy``; raises when the set has not been projected."""
    if es.xy is None:
        raise ValueError(f"{es!r} has no map coordinates; pass it through fernb.explore.embeddings.project first")
    return es.xy


def _class_mask(es: EmbeddingSet, classes: Sequence[str | int] | None) -> np.ndarray:
    """(C,) bool: the classes to show (names or indices; None = all)."""
    keep = np.ones(es.num_classes, bool)
    if classes is not None:
        keep[:] = False
        for c in classes:
            idx = es.class_names.index(c) if isinstance(c, str) else int(c)
            keep[idx] = True
    return keep


def _draw(
    ax: Axes,
    es: EmbeddingSet,
    *,
    colour: str = "label",
    classes: Sequence[str | int] | None = None,
    anchors: bool = True,
    anchor_labels: bool = True,
    point_size: float | None = None,
    adjustable: Literal["box", "datalim"] = "datalim",
) -> Any:
    """Draw one map on ``ax``; returns the confidence scatter (for a colour bar) or None."""
    es_xy = _need_xy(es)
    if colour not in COLOURINGS and colour not in es.extra:
        raise ValueError(f"colour={colour!r}; expected one of {', '.join(COLOURINGS)}")
    keep_cls = _class_mask(es, classes)
    shown = keep_cls[es.labels]
    cols = class_colours(es.num_classes)
    size = point_size or float(np.clip(2400 / max(len(es), 1), 6, 36))
    mappable = None
    if (~shown).any():  # context: the hidden classes as faint grey
        hidden = es_xy[~shown]
        ax.scatter(hidden[:, 0], hidden[:, 1], s=size * 0.6, c="0.85", linewidths=0, zorder=1)
    xy = es_xy[shown]
    if colour in ("label", "prediction"):
        values = es.colour_values(colour)[shown]
        ax.scatter(xy[:, 0], xy[:, 1], s=size, c=cols[values], linewidths=0, alpha=0.85, zorder=2)
        if colour == "prediction":  # ring the mistakes so the errors stand out
            wrong = (es.preds != es.labels)[shown]
            ax.scatter(
                xy[wrong, 0],
                xy[wrong, 1],
                s=size * 2.2,
                facecolors="none",
                edgecolors="black",
                linewidths=0.5,
                zorder=3,
            )
    else:
        values = es.colour_values(colour)[shown]
        mappable = ax.scatter(
            xy[:, 0],
            xy[:, 1],
            s=size,
            c=values,
            cmap=CONFIDENCE_CMAP,
            norm=Normalize(0, 1),
            linewidths=0,
            alpha=0.9,
            zorder=2,
        )
    if anchors and es.has_anchors and es.anchor_xy is not None:
        anchor_classes = es.anchor_classes
        assert anchor_classes is not None
        a_keep = keep_cls[anchor_classes]
        axy = es.anchor_xy[a_keep]
        ax.scatter(axy[:, 0], axy[:, 1], c=cols[anchor_classes[a_keep]], **ANCHOR_STYLE)
        if anchor_labels:
            for (x, y), c in zip(axy, anchor_classes[a_keep], strict=True):
                ax.annotate(
                    es.class_names[c],
                    (x, y),
                    xytext=(6, 6),
                    textcoords="offset points",
                    fontsize=7,
                    zorder=6,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": cols[c], "lw": 0.8, "alpha": 0.85},
                )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable=adjustable)
    return mappable


def _legend(
    fig: Figure, es: EmbeddingSet, colour: str, classes: Sequence[str | int] | None, mappable: Any, axes: Any
) -> None:
    cols = class_colours(es.num_classes)
    keep = _class_mask(es, classes)
    if colour in ("label", "prediction"):
        handles = [
            Line2D([], [], ls="", marker="o", ms=6, color=cols[c], label=n)
            for c, n in enumerate(es.class_names)
            if keep[c]
        ]
        if colour == "prediction":
            handles.append(Line2D([], [], ls="", marker="o", ms=8, mfc="none", mec="black", label="wrong"))
    else:
        fig.colorbar(
            mappable, ax=axes, shrink=0.7, label=f"{colour} (1 - H(p)/log C)" if colour == "confidence" else colour
        )
        handles = []
    if es.has_anchors:
        handles.append(Line2D([], [], ls="", marker="*", ms=12, mfc="white", mec="black", label="anchor"))
    if handles:
        fig.legend(
            handles=handles,
            loc="outside right center",
            fontsize=8,
            frameon=False,
            title=colour if colour != "confidence" else None,
            title_fontsize=8,
        )


def plot_embedding_map(
    es: EmbeddingSet,
    colour: str = "label",
    *,
    classes: Sequence[str | int] | None = None,
    neighbours: Neighbours | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (7.0, 5.6),
) -> Figure:
    """One map: samples coloured by ``"label"``, ``"prediction"`` (mistakes ringed) or ``"confidence"`` (viridis,
    0-1), anchors as black-edged stars labelled with their class.

    Args:
        es: a projected set.
        colour: the colouring (:data:`fernb.explore.embeddings.COLOURINGS`).
        classes: show only these classes (names or indices; the others stay as grey context), anchors included.
        neighbours: highlight a sample (red ring), its nearest samples (black rings, joined to it) and its nearest
            anchor (dashed line), from :func:`fernb.explore.embeddings.neighbours`.
    """
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    mappable = _draw(ax, es, colour=colour, classes=classes)
    if neighbours is not None:
        _draw_neighbours(ax, es, neighbours)
    ax.set_title(title or f"{es.title}: {len(es)} {es.split} samples by {colour}", fontsize=10)
    _legend(fig, es, colour, classes, mappable, ax)
    return fig


def _draw_neighbours(ax: Axes, es: EmbeddingSet, nb: Neighbours) -> None:
    xy = _need_xy(es)
    p = xy[nb.index]
    for j in nb.samples:
        q = xy[j]
        ax.plot([p[0], q[0]], [p[1], q[1]], color="black", lw=0.7, alpha=0.6, zorder=3)
    if len(nb.samples):
        ax.scatter(
            xy[nb.samples, 0], xy[nb.samples, 1], s=70, facecolors="none", edgecolors="black", linewidths=1.2, zorder=4
        )
    if nb.anchor is not None and es.anchor_xy is not None:
        q = es.anchor_xy[nb.anchor]
        ax.plot([p[0], q[0]], [p[1], q[1]], color="crimson", lw=1.2, ls="--", zorder=4)
    ax.scatter([p[0]], [p[1]], s=150, facecolors="none", edgecolors="crimson", linewidths=2.2, zorder=6)


def plot_embedding_epochs(
    sets: Sequence[EmbeddingSet],
    colour: str = "label",
    *,
    classes: Sequence[str | int] | None = None,
    trajectories: bool = True,
    ncols: int = 3,
    titles: Sequence[str] | None = None,
    panel_size: float = 3.2,
) -> Figure:
    """Small multiples of one run's checkpoints in ONE map (project them in one call), with anchor trajectories.

    Each panel shows one checkpoint's samples and anchors; with ``trajectories`` an anchor's earlier positions are
    joined by a line in its class's colour (dots at earlier checkpoints), so the path an anchor took ends at its star.
    All panels share their axis limits.

    Args:
        sets: projected sets of one run, in training order.
        titles: panel titles (default: the epoch).
    """
    if not sets:
        raise ValueError("no sets to plot")
    xys = [_need_xy(s) for s in sets]
    n = len(sets)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(panel_size * ncols + 1.6, panel_size * nrows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    pts = np.concatenate(xys + [s.anchor_xy for s in sets if s.anchor_xy is not None])
    lo, hi = pts.min(0), pts.max(0)
    pad = 0.05 * np.maximum(hi - lo, 1e-6)
    cols = class_colours(sets[0].num_classes)
    keep = _class_mask(sets[0], classes)
    mappable = None
    for i, (ax, es) in enumerate(zip(axes, sets, strict=False)):
        m = _draw(ax, es, colour=colour, classes=classes, anchor_labels=False, point_size=8, adjustable="box")
        mappable = mappable or m
        if trajectories and es.anchor_xy is not None and i > 0:
            path = np.stack(
                [
                    s.anchor_xy
                    for s in sets[: i + 1]
                    if s.anchor_xy is not None and s.anchor_xy.shape == es.anchor_xy.shape
                ]
            )  # (T, A, 2)
            anchor_classes = es.anchor_classes
            assert anchor_classes is not None
            for a in range(path.shape[1]):
                if not keep[anchor_classes[a]]:
                    continue
                c = cols[anchor_classes[a]]
                ax.plot(path[:, a, 0], path[:, a, 1], color=c, lw=1.4, alpha=0.9, zorder=4)
                ax.scatter(
                    path[:-1, a, 0], path[:-1, a, 1], s=12, color=c, edgecolors="black", linewidths=0.4, zorder=4
                )
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_title(
            titles[i] if titles is not None else (f"epoch {es.epoch}" if es.epoch is not None else es.checkpoint),
            fontsize=9,
        )
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(f"{sets[0].run}: samples and anchors over training (one shared map)", fontsize=10)
    _legend(fig, sets[0], colour, classes, mappable, list(axes[:n]))
    return fig


def plot_embedding_comparison(
    sets: Sequence[EmbeddingSet],
    colour: str = "label",
    *,
    classes: Sequence[str | int] | None = None,
    titles: Sequence[str] | None = None,
    panel_size: float = 4.2,
) -> Figure:
    """Maps side by side (e.g. ARBEx and a baseline), each from its own projection; anchors where a model has them.

    The maps are separate fits of separate embedding spaces: compare the arrangement of classes (how compact, how
    mixed), not coordinates or sizes across panels.
    """
    if not sets:
        raise ValueError("no sets to plot")
    fig = Figure(figsize=(panel_size * len(sets) + 1.6, panel_size + 0.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(sets), squeeze=False)).ravel()
    mappable = None
    for i, (ax, es) in enumerate(zip(axes, sets, strict=True)):
        m = _draw(ax, es, colour=colour, classes=classes)
        mappable = mappable or m
        ax.set_title(titles[i] if titles is not None else es.title, fontsize=10)
    with_anchors = next((s for s in sets if s.has_anchors), sets[0])
    _legend(fig, with_anchors, colour, classes, mappable, list(axes))
    return fig


def plot_anchor_summary(frame: Any, title: str | None = None) -> Figure:
    """Curves over epochs from :func:`fernb.explore.embeddings.anchor_summary`: colour = quantity, line style = run.

    Left: accuracy, nearest-anchor and nearest-centroid accuracy and silhouette; right: how far the anchors moved
    since the previous checkpoint and how far apart the classes' anchors are, both divided by the embedding scale.
    """
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11.0, 3.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    panels = {
        left: ("accuracy", "nearest_anchor_accuracy", "nearest_centroid_accuracy", "silhouette"),
        right: ("anchor_drift", "anchor_separation"),
    }
    colours = {k: colormaps["tab10"](i) for i, k in enumerate((*panels[left], *panels[right]))}
    styles = ["-", "--", ":", "-."]
    runs = list(dict.fromkeys(frame["run"]))
    for r, run in enumerate(runs):
        sub = frame[frame["run"] == run]
        x = sub["epoch"].to_numpy(dtype=float) if sub["epoch"].notna().all() else np.arange(1, len(sub) + 1)
        scale = sub["embedding_scale"].to_numpy(dtype=float)
        for ax, cols in panels.items():
            for col in cols:
                y = sub[col].to_numpy(dtype=float)
                if ax is right:
                    y = y / scale
                if np.isfinite(y).any():
                    ax.plot(
                        x,
                        y,
                        ls=styles[r % len(styles)],
                        marker="o",
                        ms=3.5,
                        color=colours[col],
                        label=f"{col} · {run}" if len(runs) > 1 else col,
                    )
    left.set_title("how well the embedding separates the classes", fontsize=9)
    right.set_title("anchors: movement since the last checkpoint, spacing (÷ embedding scale)", fontsize=9)
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.spines[["top", "right"]].set_visible(False)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6.5, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
