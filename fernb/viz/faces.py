"""Figures for face detection and alignment: the original with box and landmarks, the aligned crop beside it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Polygon

from ..data.faces import AlignmentResult

__all__ = ["plot_alignment"]

_SOURCE_STYLE = {
    "detected": ("o", "lime"),
    "mirrored": ("s", "gold"),
    "from_eyes": ("x", "orange"),
    "from_box": ("x", "red"),
}


def plot_alignment(
    originals: Sequence[np.ndarray],
    results: Sequence[AlignmentResult],
    names: Sequence[str] | None = None,
    cell: float = 2.4,
) -> Figure:
    """One row per image: the input with every detected face box (the used one thick), its landmarks marked by how
    they were obtained (green = detected, yellow = mirrored, orange/red = estimated), and the aligned crop with the
    template points.
    """
    n = len(results)
    fig = Figure(figsize=(2 * cell + 0.6, cell * n + 0.5), layout="constrained")
    axes = np.atleast_2d(fig.subplots(n, 2, squeeze=False))
    for r, (orig, res) in enumerate(zip(originals, results, strict=True)):
        img = np.asarray(orig)
        a0, a1 = axes[r]
        a0.imshow(img, cmap="gray" if img.ndim == 2 else None)
        for k, box in enumerate(res.faces):
            a0.add_patch(
                Polygon(
                    box.corners(),
                    closed=True,
                    fill=False,
                    lw=2.5 if k == 0 else 1,
                    ec="deepskyblue" if k == 0 else "white",
                    ls="-" if k == 0 else "--",
                )
            )
        if res.landmarks is not None:
            for name, (x, y) in zip(res.landmarks.names, res.landmarks.as_array(), strict=True):
                marker, color = _SOURCE_STYLE.get(res.landmarks.sources.get(name, ""), ("+", "white"))
                a0.plot(x, y, marker, color=color, ms=6, mec="black", mew=0.6)
        title = (names[r] + ": " if names else "") + res.mode
        if res.roll_deg is not None:
            title += f", roll {res.roll_deg:+.1f}°, eyes detected {res.eyes_detected}/2"
        a0.set_title(title, fontsize=8)
        aligned = np.asarray(res.image)
        a1.imshow(aligned, cmap="gray" if aligned.ndim == 2 else None)
        if res.template is not None and res.mode == "aligned":
            pts = res.template.points(aligned.shape[1::-1])
            a1.plot(pts[:, 0], pts[:, 1], "+", color="deepskyblue", ms=8, mew=1.5)
        a1.set_title(
            f"aligned {aligned.shape[1]}x{aligned.shape[0]}" + (" (template +)" if res.mode == "aligned" else ""),
            fontsize=8,
        )
        for ax in (a0, a1):
            ax.set_xticks([])
            ax.set_yticks([])
    return fig
