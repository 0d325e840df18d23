"""Figures for Grad-CAM: maps over the faces they explain, samples in rows and methods in columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from ..explore.gradcam import CAM_METHODS, CamResult, FaceBatch

__all__ = [
    "to_gray",
    "plot_cam_overlay",
    "plot_gradcam_grid",
    "plot_method_cams",
    "plot_cam_methods",
    "plot_faithfulness",
    "cam_titles",
]


def to_gray(face: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 or (H, W) face -> (H, W) float luminance in [0, 1]."""
    a = np.asarray(face, dtype=np.float32)
    if a.ndim == 3:
        a = a[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return a / 255.0 if a.max() > 1.0 else a


def plot_cam_overlay(
    ax, face: np.ndarray, cam: np.ndarray | None, alpha: float = 0.45, title: str | None = None, note: str | None = None
) -> None:
    """Draw a face in gray and a (H, W) map in [0, 1] over it with the jet colormap on a matplotlib Axes.

    ``note`` is written across the image (e.g. why a map is flat); ``cam=None`` or a constant map shows the face
    alone (a constant map has nothing to locate).
    """
    gray = to_gray(face)
    ax.imshow(gray, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if cam is not None:
        cam = np.asarray(cam)
        if cam.shape != gray.shape:
            raise ValueError(f"map {cam.shape} and face {gray.shape} differ in size")
        if np.ptp(cam) > 0:
            ax.imshow(cam, cmap="jet", vmin=0, vmax=1, alpha=alpha, interpolation="bilinear")
    if note:
        ax.text(
            0.5,
            0.5,
            note,
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=7,
            color="white",
            bbox={"facecolor": "black", "alpha": 0.6, "pad": 2, "lw": 0},
        )
    if title:
        ax.set_title(title, fontsize=7.5)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_gradcam_grid(
    faces: Mapping[str, np.ndarray],
    maps: Mapping[str, np.ndarray],
    titles: Mapping[str, Sequence[str]] | None = None,
    notes: Mapping[str, Sequence[str | None]] | None = None,
    row_labels: Sequence[str] | None = None,
    alpha: float = 0.45,
    cell: float = 1.75,
    title: str | None = None,
) -> Figure:
    """A grid of overlays: one row per sample, one column per method.

    Args:
        faces: per method, (B, H, W, 3) uint8 faces as that method saw them (sizes may differ between methods).
        maps: per method, (B, H, W) maps in [0, 1] (same keys and order as ``faces``).
        titles: per method, B titles (e.g. ``"resnet18\\npred happy 0.81"``); default the method name.
        notes: per method, B texts written across the image (None for none).
        row_labels: B labels written left of each row (e.g. ``"#12 true: sad"``).
    """
    methods = list(maps)
    if not methods:
        raise ValueError("no method to plot")
    n = len(next(iter(maps.values())))
    if any(len(maps[m]) != n or len(faces[m]) != n for m in methods):
        raise ValueError("every method needs the same number of faces and maps")
    fig = Figure(
        figsize=(cell * len(methods) + (0.5 if row_labels else 0.2), (cell + 0.32) * n + 0.45), layout="constrained"
    )
    axes = fig.subplots(n, len(methods), squeeze=False)
    for j, m in enumerate(methods):
        for i in range(n):
            t = titles[m][i] if titles is not None else m
            note = notes[m][i] if notes is not None else None
            plot_cam_overlay(axes[i, j], faces[m][i], maps[m][i], alpha=alpha, title=t, note=note)
    if row_labels:
        for i, lab in enumerate(row_labels):
            axes[i, 0].set_ylabel(lab, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def cam_titles(result: CamResult, class_names: Sequence[str], method: str | None = None) -> list[str]:
    """Titles naming the prediction and its probability, and the map's class when it is another one."""
    probs, pred = result.probs, result.predicted
    out = []
    for i in range(len(result)):
        t = f"pred {class_names[pred[i]]} {probs[i, pred[i]]:.2f}"
        c = int(result.targets[i])
        if c != pred[i]:
            t += f"\nmap: {class_names[c]} {probs[i, c]:.2f}"
        out.append(f"{method}\n{t}" if method else t)
    return out


def _notes(result: CamResult) -> list[str | None]:
    return [None if r == "ok" else r for r in result.reasons]


def plot_method_cams(
    results: Mapping[str, tuple[FaceBatch, CamResult]],
    class_names: Sequence[str] | None = None,
    alpha: float = 0.45,
    cell: float = 1.75,
    title: str | None = None,
) -> Figure:
    """:func:`plot_gradcam_grid` for ``{method: (faces, cams)}`` from :mod:`fernb.explore.gradcam`.

    Rows are labelled by dataset index and label (from the first method's faces); each cell's title gives the
    method, its prediction and probability, and the map's class when it is not the prediction; flat maps say why.
    ``class_names`` are the models' classes (default the faces' dataset classes).
    """
    first_faces = next(iter(results.values()))[0]
    names = list(class_names or first_faces.class_names)
    rows = [
        f"#{int(i)} {first_faces.class_names[int(y)]}"
        for i, y in zip(first_faces.indices, first_faces.labels, strict=True)
    ]
    return plot_gradcam_grid(
        {m: f.faces for m, (f, _) in results.items()},
        {m: r.maps for m, (_, r) in results.items()},
        titles={m: cam_titles(r, names, m) for m, (_, r) in results.items()},
        notes={m: _notes(r) for m, (_, r) in results.items()},
        row_labels=rows,
        alpha=alpha,
        cell=cell,
        title=title,
    )


def plot_cam_methods(
    results: Mapping[str, Mapping[str, tuple[FaceBatch, CamResult]]],
    row: int = 0,
    class_names: Sequence[str] | None = None,
    alpha: float = 0.45,
    cell: float = 1.6,
    title: str | None = None,
) -> Figure:
    """One face, every model (rows) under every CAM method (columns): ``{model: {cam method: (faces, cams)}}``.

    ``row`` picks the face (a row of each ``faces``); a cell's title gives the prediction (first column) and flat
    maps say why.
    """
    models = list(results)
    if not models:
        raise ValueError("no model to plot")
    cams = list(next(iter(results.values())))
    if any(list(results[m]) != cams for m in models):
        raise ValueError("every model needs the same CAM methods, in the same order")
    first_faces = results[models[0]][cams[0]][0]
    names = list(class_names or first_faces.class_names)
    faces = {c: [results[m][c][0].faces[row] for m in models] for c in cams}
    maps = {c: [results[m][c][1].maps[row] for m in models] for c in cams}
    titles: dict[str, list[str]] = {c: [] for c in cams}
    notes: dict[str, list[str | None]] = {c: [] for c in cams}
    for m in models:
        for j, c in enumerate(cams):
            res = results[m][c][1].select([row])
            titles[c].append(CAM_METHODS.get(c, c) + ("\n" + cam_titles(res, names)[0] if j == 0 else ""))
            notes[c].append(_notes(res)[0])
    label = first_faces.class_names[int(first_faces.labels[row])]
    fig = plot_gradcam_grid(
        faces,  # type: ignore[arg-type]  # lists of (H, W, 3) faces: sizes differ between models
        maps,  # type: ignore[arg-type]
        titles=titles,
        notes=notes,
        row_labels=models,
        alpha=alpha,
        cell=cell,
        title=title or f"face #{int(first_faces.indices[row])} ({label}): every model under every CAM method",
    )
    return fig


def plot_faithfulness(
    rows: Sequence[Mapping[str, object]], column: str = "road", title: str | None = None, cell: float = 0.85
) -> Figure:
    """A models x CAM methods heat map of one faithfulness column (rows of
    :func:`fernb.explore.faithfulness.faithfulness_table`), each cell annotated with its value."""
    models = list(dict.fromkeys(str(r["model"]) for r in rows))
    cams = list(dict.fromkeys(str(r["cam"]) for r in rows))
    grid = np.full((len(models), len(cams)), np.nan)
    for r in rows:
        grid[models.index(str(r["model"])), cams.index(str(r["cam"]))] = float(r[column])  # type: ignore[arg-type]
    fig = Figure(figsize=(1.2 + cell * len(cams), 0.8 + 0.42 * len(models)), layout="constrained")
    ax = fig.subplots()
    lim = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
    im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for i in range(len(models)):
        for j in range(len(cams)):
            ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(cams)), [CAM_METHODS.get(c, c) for c in cams], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(models)), models, fontsize=8)
    fig.colorbar(im, ax=ax, shrink=0.8)
    better = "lower" if column == "morf" else "higher"
    ax.set_title(title or f"faithfulness: {column} ({better} is more faithful)", fontsize=9)
    return fig
