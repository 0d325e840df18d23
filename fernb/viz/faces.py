"""Figures for face detection and alignment: the original with box and landmarks, the aligned crop beside it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Polygon

from ..data.faces import AlignmentResult
from ..engine.faces import ARBEX_EXTRAS, FacePrediction, annotate_frame
from ..explore.gradcam import CamResult
from ..explore.reliability import ReliabilitySample, confidence
from .gradcam import plot_cam_overlay

__all__ = ["plot_alignment", "plot_annotated", "plot_face_predictions", "face_reliability_sample"]

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


def plot_annotated(
    images: Sequence[tuple[str, np.ndarray]], rows: Sequence[FacePrediction], cols: int = 3, cell: float = 3.2
) -> Figure:
    """The frames with every detected face's box, landmarks, label and probability drawn
    (:func:`fernb.engine.faces.annotate_frame`); ``images`` are ``(source, image)`` pairs, ``rows`` the predictions
    of those sources (frame 0)."""
    n = len(images)
    cols = max(1, min(cols, n))
    nrows = -(-n // cols)
    fig = Figure(figsize=(cols * cell, nrows * cell * 0.85), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).ravel()
    for ax, (name, img) in zip(axes, images, strict=False):
        mine = [r for r in rows if r.source == name]
        ax.imshow(annotate_frame(img, mine))
        faces = sum(r.status == "ok" for r in mine)
        ax.set_title(f"{name}: {faces} face{'s' if faces != 1 else ''}", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    return fig


def plot_face_predictions(
    rows: Sequence[FacePrediction], cams: CamResult | None = None, cell: float = 2.0, top: int = 7
) -> Figure:
    """One row per face: the aligned crop the model saw (with its source and face number), its Grad-CAM map for the
    predicted class when ``cams`` is given (one map per row, in order), and its class probabilities (the predicted
    class coloured). Rows need their crops (``predict_faces(..., keep_crops=True)``)."""
    rows = [r for r in rows if r.status == "ok"]
    if not rows:
        raise ValueError("no face to show: every row is 'no face' or 'error'")
    if any(r.crop is None for r in rows):
        raise ValueError("rows carry no crops; predict with keep_crops=True")
    ncols = 3 if cams is not None else 2
    fig = Figure(figsize=(ncols * cell + cell, cell * len(rows) + 0.3), layout="constrained")
    axes = fig.subplots(len(rows), ncols, squeeze=False, width_ratios=[1] * (ncols - 1) + [2])
    for i, r in enumerate(rows):
        ax = axes[i, 0]
        assert r.crop is not None and r.probs is not None
        ax.imshow(r.crop)
        ax.set_title(f"{r.source} #{r.face}", fontsize=8)
        ax.set_axis_off()
        if cams is not None:
            plot_cam_overlay(axes[i, 1], r.crop, cams.maps[i], title=f"Grad-CAM: {r.class_names[cams.targets[i]]}")
        bar = axes[i, -1]
        order = np.argsort(-r.probs)[:top]
        colors = ["tab:red" if k == order[0] else "#b8c2cc" for k in order]
        bar.barh(np.arange(len(order)), r.probs[order], color=colors)
        bar.set_yticks(np.arange(len(order)), [r.class_names[k] for k in order], fontsize=7)
        bar.set_ylim(len(order) - 0.5, -0.5)
        bar.set_xlim(0, 1)
        bar.tick_params(axis="x", labelsize=7)
        bar.set_title(f"{r.label} {r.confidence:.2f}", fontsize=8)
        bar.spines[["top", "right"]].set_visible(False)
    return fig


def face_reliability_sample(row: FacePrediction, index: int = 0) -> ReliabilitySample:
    """An ARBEx face prediction as a :class:`~fernb.explore.reliability.ReliabilitySample` (no given label), for
    :func:`fernb.viz.reliability.plot_reliability_sample`.

    Raises:
        ValueError: the row has no ARBEx outputs (another model, or no face).
    """
    missing = [k for k in ARBEX_EXTRAS if k not in row.extras]
    if missing:
        raise ValueError(f"{row.source} #{row.face}: no ARBEx outputs {missing}; the reliability view needs ARBEx")
    dists = {k: np.asarray(row.extras[k], dtype=np.float32) for k in ARBEX_EXTRAS}
    conf = {k: float(row.extras[f"c_{k}"]) for k in ("primary", "anchor", "attention")}
    conf["corrected"] = float(confidence(dists["corrected"][None])[0])
    return ReliabilitySample(index, list(row.class_names), dists, conf, given=None, image=row.crop)
