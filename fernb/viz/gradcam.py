"""Figures for Grad-CAM: maps over the faces they explain, samples in rows and methods in columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from ..explore.gradcam import CamResult, FaceBatch

__all__ = ["to_gray", "plot_cam_overlay", "plot_gradcam_grid", "plot_method_cams", "cam_titles"]


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
