"""The embedding explorer: an interactive map of a run's embeddings (hover a point to see its face, click it to
list its neighbours, lasso a cluster to list its samples), with a run, a checkpoint, the classes and the colouring.

Each run's checkpoints are embedded and projected into one shared map the first time the run is shown (see
:func:`fernb.explore.embeddings.run_maps`; cached on disk too), so moving along the checkpoints keeps the coordinates
(the points glide to their new places) and changing the colouring, the classes or the sample only sends new colours
or links to the map (:class:`~fernb.widgets.scatter.ScatterMap`). Displayed where no widget can run (an executed
notebook, a static HTML export), the explorer shows a PNG of the same map instead.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ipywidgets as w
import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from ..engine.config import load_config
from ..engine.data import run_split
from ..engine.rundir import RunDir
from ..explore.embeddings import (
    COLOURINGS,
    EmbeddingSet,
    Neighbours,
    checkpoint_epoch,
    list_checkpoints,
    nearest_anchor,
    neighbours,
    pick_checkpoints,
    run_maps,
)
from ..viz.embeddings import CONFIDENCE_CMAP, class_colours, plot_embedding_map
from ._common import guard
from .scatter import ScatterMap, face_uri, to_hex

__all__ = [
    "EmbeddingExplorer",
    "EmbeddingExplorerState",
    "embedding_explorer",
    "find_runs",
    "map_traits",
    "map_bounds",
    "run_faces",
]


def find_runs(folder: str | os.PathLike) -> dict[str, Path]:
    """Run folders (with a config and at least one checkpoint) directly under ``folder``, by name."""
    root = Path(folder)
    if not root.is_dir():
        return {}
    return {
        p.name: p
        for p in sorted(root.iterdir())
        if p.is_dir() and (p / "config.json").is_file() and list_checkpoints(p)
    }


def run_faces(run_dir: str | os.PathLike, split: str, indices: Sequence[int] | np.ndarray, size: int = 64) -> list[str]:
    """The faces of a run's ``split`` at ``indices`` (an :class:`EmbeddingSet`'s ``indices``) as ``data:`` URIs,
    read where the run read them (:func:`fernb.engine.data.run_split`, untransformed)."""
    ds = run_split(load_config(RunDir(run_dir).config_path), split)
    return [face_uri(ds.load_image(int(i)), size) for i in indices]


def map_bounds(sets: Sequence[EmbeddingSet]) -> list[float]:
    """``[x0, x1, y0, y1]`` around the samples and anchors of every set: one frame for all checkpoints of a map."""
    pts = [s.xy for s in sets if s.xy is not None] + [s.anchor_xy for s in sets if s.anchor_xy is not None]
    if not pts or not sum(len(p) for p in pts):
        return [0.0, 1.0, 0.0, 1.0]
    xy = np.concatenate(pts).astype(np.float64)
    lo, hi = xy.min(0), xy.max(0)
    return [float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])]


def map_tips(es: EmbeddingSet) -> list[str]:
    """One tooltip per sample: row, label, prediction, confidence and nearest anchor (lines joined by ``\\n``)."""
    names = es.class_names
    near: list[str] = [""] * len(es)
    if es.has_anchors and es.anchor_classes is not None and es.anchors is not None:
        j, _ = nearest_anchor(es.embeddings, es.anchors)
        near = [f"\nnearest anchor: {names[c]}" for c in es.anchor_classes[j].tolist()]
    out = []
    for i, (y, p, c) in enumerate(zip(es.labels.tolist(), es.preds.tolist(), es.confidence.tolist(), strict=True)):
        verdict = "" if y == p else "  (wrong)"
        out.append(f"#{i}  label: {names[y]}\npredicted: {names[p]}{verdict}\nconfidence: {c:.2f}{near[i]}")
    return out


def map_traits(
    es: EmbeddingSet,
    colour: str = "label",
    *,
    classes: Sequence[str] | None = None,
    neighbours: Neighbours | None = None,
) -> dict[str, Any]:
    """What :class:`~fernb.widgets.scatter.ScatterMap` draws for one projected set (everything but the faces, the
    tooltips and the frame): positions, colours (the figures' class colours, or viridis for a score), the hidden
    classes faded, mistakes ringed under ``"prediction"``, anchors as stars, and a sample's neighbour links."""
    if es.xy is None:
        raise ValueError(f"{es!r} has no map coordinates; pass it through fernb.explore.embeddings.project first")
    names = es.class_names
    keep = np.ones(es.num_classes, bool)
    if classes is not None:
        keep[:] = False
        keep[[names.index(c) for c in classes]] = True
    cols = class_colours(es.num_classes)
    values = es.colour_values(colour)
    if colour in ("label", "prediction"):
        colours = np.asarray(to_hex(cols))[values].tolist()
    else:
        colours = to_hex(colormaps[CONFIDENCE_CMAP](np.clip(values, 0.0, 1.0)))
    anchors: list[dict[str, Any]] = []
    if es.has_anchors and es.anchor_xy is not None and es.anchor_classes is not None:
        hexes = to_hex(cols)
        for (ax, ay), c in zip(es.anchor_xy.tolist(), es.anchor_classes.tolist(), strict=True):
            if keep[c]:
                anchors.append({"x": ax, "y": ay, "colour": hexes[c], "text": names[c]})
    anchor_link = -1
    if neighbours is not None and neighbours.anchor is not None and es.anchor_classes is not None:
        shown = np.flatnonzero(keep[es.anchor_classes])  # the anchors list holds only the shown classes' anchors
        hit = np.flatnonzero(shown == neighbours.anchor)
        anchor_link = int(hit[0]) if len(hit) else -1
    return {
        "x": es.xy[:, 0].astype(np.float64).round(5).tolist(),
        "y": es.xy[:, 1].astype(np.float64).round(5).tolist(),
        "colours": colours,
        "faded": (~keep[es.labels]).tolist(),
        "ring": (es.preds != es.labels).tolist() if colour == "prediction" else [False] * len(es),
        "anchors": anchors,
        "selected": -1 if neighbours is None else int(neighbours.index),
        "links": [] if neighbours is None else neighbours.samples.astype(int).tolist(),
        "anchor_link": anchor_link,
        "title": f"{es.title}: {len(es)} {es.split} samples by {colour}",
    }


@dataclass
class EmbeddingExplorerState:
    """What the explorer shows, the maps computed so far and what the map draws.

    Attributes:
        runs: run name -> run folder.
        run, checkpoint: the selection. colour: one of :data:`~fernb.explore.embeddings.COLOURINGS`.
        classes: class names to show (None: all; empty: none, every sample grey).
        sample: the selected row (a click on the map), whose neighbours are drawn and listed (None: none). k: how many.
        selection: rows in the latest lasso or box on the map (or given to :meth:`set_selection`).
        map_kwargs: passed to :func:`~fernb.explore.embeddings.run_maps` (limit, seed, split, method, ...).
        max_checkpoints: checkpoints per run offered (spread over training by
            :func:`~fernb.explore.embeddings.pick_checkpoints`).
        view: what the map draws now (:func:`map_traits`). neighbours: the latest :class:`Neighbours` (or None).
        replot_seconds: time of the latest re-draw (the map's traits built; the widget adds sending them).
        listeners: called with the state after every re-draw (the widget updates the map there).
        selection_listeners: called with the state after the selection changed.
        face_size: pixels of the faces' longer side in tooltips and tables.
    """

    runs: dict[str, Path]
    run: str
    checkpoint: str = ""
    colour: str = "label"
    classes: tuple[str, ...] | None = None
    sample: int | None = None
    k: int = 8
    selection: tuple[int, ...] = ()
    map_kwargs: dict[str, Any] = field(default_factory=dict)
    max_checkpoints: int = 6
    figsize: tuple[float, float] = (7.6, 5.8)
    face_size: int = 64
    view: dict[str, Any] = field(default_factory=dict)
    neighbours: Neighbours | None = None
    replot_seconds: float = math.nan
    map_seconds: dict[str, float] = field(default_factory=dict)
    listeners: list[Callable[[EmbeddingExplorerState], None]] = field(default_factory=list)
    selection_listeners: list[Callable[[EmbeddingExplorerState], None]] = field(default_factory=list)
    _maps: dict[str, dict[str, EmbeddingSet]] = field(default_factory=dict, repr=False)
    _tags: dict[str, list[str]] = field(default_factory=dict, repr=False)
    _faces: dict[str, list[str]] = field(default_factory=dict, repr=False)
    _tips: dict[tuple[str, str], list[str]] = field(default_factory=dict, repr=False)
    _figure: Figure | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.run not in self.runs:
            raise KeyError(f"run {self.run!r} is not among {', '.join(self.runs)}")
        tags = self.checkpoints()
        if self.checkpoint not in tags:
            self.checkpoint = self._default_checkpoint(self.run)

    # -- data ---------------------------------------------------------------------------------------------------------
    def checkpoints(self, run: str | None = None) -> list[str]:
        """The checkpoints offered for ``run`` (default: the current one), in training order."""
        run = run or self.run
        if run not in self._tags:
            self._tags[run] = pick_checkpoints(self.runs[run], self.max_checkpoints)
        return self._tags[run]

    def checkpoint_label(self, tag: str, run: str | None = None) -> str:
        """``"epoch 3 (best)"`` for the slider."""
        run = run or self.run
        if not tag.startswith("epoch-"):
            return tag
        epoch = int(tag.split("-")[1])
        return f"epoch {epoch}" + (" (best)" if checkpoint_epoch(self.runs[run], "best") == epoch else "")

    def _default_checkpoint(self, run: str) -> str:
        tags = self.checkpoints(run)
        best = checkpoint_epoch(self.runs[run], "best")
        tag = f"epoch-{best:03d}" if best is not None else ""
        return tag if tag in tags else tags[-1]

    def maps(self, run: str | None = None) -> dict[str, EmbeddingSet]:
        """checkpoint -> projected set of ``run``; computed once (the run's checkpoints in one map), then kept."""
        run = run or self.run
        if run not in self._maps:
            t0 = time.perf_counter()
            sets = run_maps(self.runs[run], self.checkpoints(run), **self.map_kwargs)
            self._maps[run] = {s.checkpoint: s for s in sets}
            self.map_seconds[run] = time.perf_counter() - t0
        return self._maps[run]

    @property
    def current(self) -> EmbeddingSet:
        """The projected set on show."""
        return self.maps()[self.checkpoint]

    def faces(self, run: str | None = None) -> list[str]:
        """The faces of ``run``'s samples as ``data:`` URIs, in the map's row order (the same for every checkpoint);
        read once, then kept. Empty strings where the images cannot be read (the data moved)."""
        run = run or self.run
        if run not in self._faces:
            es = next(iter(self.maps(run).values()))
            try:
                self._faces[run] = run_faces(self.runs[run], es.split, es.indices, self.face_size)
            except (OSError, ValueError, KeyError):
                self._faces[run] = [""] * len(es)
        return self._faces[run]

    def tips(self) -> list[str]:
        """The current set's tooltips (:func:`map_tips`), kept per checkpoint."""
        key = (self.run, self.checkpoint)
        if key not in self._tips:
            self._tips[key] = map_tips(self.current)
        return self._tips[key]

    def bounds(self) -> list[float]:
        """The frame shared by the run's checkpoints (:func:`map_bounds`)."""
        return map_bounds(list(self.maps().values()))

    @property
    def figure(self) -> Figure:
        """A matplotlib Figure of what the map shows (built on first use after a re-draw): the static image."""
        if self._figure is None:
            self._figure = plot_embedding_map(
                self.current, self.colour, classes=self.classes, neighbours=self.neighbours, figsize=self.figsize
            )
        return self._figure

    # -- the controls' actions ----------------------------------------------------------------------------------------
    def set_run(self, run: str) -> dict[str, Any]:
        if run not in self.runs:
            raise KeyError(f"run {run!r} is not among {', '.join(self.runs)}")
        self.run = run
        self.checkpoint = self._default_checkpoint(run)
        names = self.current.class_names
        if self.classes is not None:
            self.classes = tuple(c for c in self.classes if c in names) or None
        if self.sample is not None and self.sample >= len(self.current):
            self.sample = None
        if self.selection:
            self.set_selection(())
        return self.render()

    def set_checkpoint(self, checkpoint: str | int) -> dict[str, Any]:
        tag = f"epoch-{int(checkpoint):03d}" if isinstance(checkpoint, int) else str(checkpoint)
        if tag in ("best", "last") and tag not in self.checkpoints():
            epoch = checkpoint_epoch(self.runs[self.run], tag)
            tag = f"epoch-{epoch:03d}" if epoch is not None else tag
        if tag not in self.checkpoints():
            raise KeyError(f"checkpoint {checkpoint!r} is not among {', '.join(self.checkpoints())}")
        self.checkpoint = tag
        return self.render()

    def set_colour(self, colour: str) -> dict[str, Any]:
        if colour not in COLOURINGS:
            raise ValueError(f"colour={colour!r}; expected one of {', '.join(COLOURINGS)}")
        self.colour = colour
        return self.render()

    def set_classes(self, classes: Sequence[str] | None) -> dict[str, Any]:
        names = self.current.class_names
        if classes is not None:
            unknown = [c for c in classes if c not in names]
            if unknown:
                raise ValueError(f"unknown class(es) {unknown}; the run's classes are {names}")
            classes = tuple(c for c in names if c in classes)  # canonical order
            if len(classes) == len(names):
                classes = None
        self.classes = classes
        return self.render()

    def set_sample(self, sample: int | None) -> dict[str, Any]:
        if sample is not None and sample < 0:
            sample = None
        if sample is not None and sample >= len(self.current):
            raise IndexError(f"sample {sample} is outside 0..{len(self.current) - 1}")
        self.sample = sample
        return self.render()

    def set_k(self, k: int) -> dict[str, Any]:
        self.k = max(1, int(k))
        return self.render()

    def set_selection(self, rows: Sequence[int]) -> tuple[int, ...]:
        """Select samples (rows of the current set), as a lasso on the map does; returns them sorted."""
        n = len(self.current)
        bad = [int(r) for r in rows if not 0 <= int(r) < n]
        if bad:
            raise IndexError(f"rows {bad[:5]} are outside 0..{n - 1}")
        self.selection = tuple(sorted({int(r) for r in rows}))
        for fn in self.selection_listeners:
            fn(self)
        return self.selection

    def selection_frame(self) -> Any:
        """The selected samples as a pandas DataFrame (index: row): position in the split, label, prediction,
        confidence, and whether the prediction is wrong."""
        import pandas as pd

        es, rows = self.current, np.asarray(self.selection, dtype=np.int64)
        names = np.asarray(es.class_names)
        return pd.DataFrame(
            {
                "index": es.indices[rows],
                "label": names[es.labels[rows]],
                "prediction": names[es.preds[rows]],
                "confidence": es.confidence[rows].round(3),
                "wrong": es.preds[rows] != es.labels[rows],
            },
            index=pd.Index(rows, name="row"),
        )

    # -- drawing ------------------------------------------------------------------------------------------------------
    def render(self) -> dict[str, Any]:
        """Re-draw from the cached map: updates ``view``, ``neighbours`` and ``replot_seconds``; returns ``view``."""
        es = self.current
        t0 = time.perf_counter()
        self.neighbours = neighbours(es, self.sample, self.k) if self.sample is not None else None
        self.view = map_traits(es, self.colour, classes=self.classes, neighbours=self.neighbours)
        self._figure = None
        self.replot_seconds = time.perf_counter() - t0
        for fn in self.listeners:
            fn(self)
        return self.view

    def _face(self, i: int, size: int = 48) -> str:
        faces = self.faces()
        uri = faces[i] if i < len(faces) else ""
        return f"<img src='{uri}' width='{size}' height='{size}' style='vertical-align:middle'>" if uri else ""

    def describe(self, faces: bool = True) -> str:
        """An HTML note on the selected sample and its neighbours (what the map cannot show: true distances)."""
        es, nb = self.current, self.neighbours
        if nb is None:
            return (
                f"<i>{html.escape(es.title)}: {len(es)} samples. Hover a point to see its face; click one (or type its "
                f"number, 0..{len(es) - 1}) to list its nearest neighbours in the embedding space; drag a lasso or "
                "a box (shift-drag) to list many.</i>"
            )
        names = es.class_names

        def who(i: int) -> str:
            ok = "" if es.preds[i] == es.labels[i] else f" &rarr; predicted <b>{html.escape(names[es.preds[i]])}</b>"
            return f"#{i} {html.escape(names[es.labels[i]])}{ok} (conf {es.confidence[i]:.2f})"

        face = self._face if faces else (lambda i, size=48: "")
        rows = "".join(
            f"<li>{face(int(j), 32)} {who(int(j))}, distance {d:.3g}</li>"
            for j, d in zip(nb.samples, nb.distances, strict=True)
        )
        anchor = ""
        if nb.anchor is not None:
            assert nb.anchor_class is not None
            anchor = (
                f"<br>nearest anchor: <b>{html.escape(names[nb.anchor_class])}</b> (distance {nb.anchor_distance:.3g})"
            )
        return (
            f"<div class='fernb-sample' data-sample='{nb.index}'>{face(nb.index, 96)}<br><b>sample {who(nb.index)}</b>"
            f"{anchor}<br>{len(nb.samples)} nearest samples:<ol>{rows}</ol></div>"
        )

    def selection_html(self, limit: int = 60) -> str:
        """The selected samples as an HTML table with their faces (the first ``limit`` rows)."""
        rows = self.selection
        if not rows:
            return "<i>No selection: drag a lasso (or shift-drag a box) around points on the map.</i>"
        es, names = self.current, self.current.class_names
        body = "".join(
            f"<tr><td>{self._face(i, 40)}</td><td>#{i}</td><td>{html.escape(names[es.labels[i]])}</td>"
            f"<td>{html.escape(names[es.preds[i]])}{' &#10007;' if es.preds[i] != es.labels[i] else ''}</td>"
            f"<td>{es.confidence[i]:.2f}</td></tr>"
            for i in rows[:limit]
        )
        wrong = int((es.preds[list(rows)] != es.labels[list(rows)]).sum())
        more = f"<br><i>... and {len(rows) - limit} more (explorer.selection_frame())</i>" if len(rows) > limit else ""
        return (
            f"<b>{len(rows)} selected</b>, {wrong} predicted wrong (<code>explorer.selection</code>)"
            f"<table class='fernb-selection' data-count='{len(rows)}' style='border-collapse:collapse'>"
            "<tr><th>face</th><th>row</th><th>label</th><th>prediction</th><th>confidence</th></tr>"
            f"{body}</table>{more}"
        )


class EmbeddingExplorer(w.VBox):
    """The explorer's widget: a VBox that shows a PNG of its map where no widget can run (an executed notebook)."""

    def __init__(self, state: EmbeddingExplorerState, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state = state

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        data = super()._repr_mimebundle_(**kwargs)
        if isinstance(data, dict):
            buf = io.BytesIO()
            self.state.figure.savefig(buf, format="png", dpi=72)
            data["image/png"] = base64.b64encode(buf.getvalue()).decode("ascii")
        return data


def embedding_explorer(
    runs: str | os.PathLike | Mapping[str, str | os.PathLike] | Sequence[str | os.PathLike],
    run: str | None = None,
    *,
    colour: str = "label",
    k: int = 8,
    max_checkpoints: int = 6,
    limit: int | None = 300,
    seed: int = 0,
    split: str = "valid",
    method: str = "umap",
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    device: str = "cpu",
    figsize: tuple[float, float] = (7.6, 5.8),
    size: tuple[int, int] = (640, 500),
) -> tuple[EmbeddingExplorer, EmbeddingExplorerState]:
    """An interactive explorer of embedding maps; returns ``(widget, state)``.

    Args:
        runs: a folder of runs (every run folder in it), a list of run folders, or ``{name: folder}``.
        run: the run shown first (default: the first).
        colour: the first colouring. k: neighbours listed for a picked sample.
        max_checkpoints: checkpoints per run on the slider.
        limit, seed, split, method, n_neighbors, min_dist, device: see :func:`fernb.explore.embeddings.run_maps`.
        figsize: the static image's size (inches). size: the map's (width, height) in pixels.

    The map: hover a point for its face, label, prediction, confidence and nearest anchor; click it to draw its
    nearest samples and anchor and describe them beside the map; drag a lasso (or a box: the "Box" button, or
    shift-drag) to list the samples inside in a table with their faces (``state.selection``,
    ``state.selection_frame()``). Controls: run, checkpoint (the points glide between checkpoints of one shared
    map), "Colour by" (label / prediction / confidence), classes to show, the sample (-1: none) and the neighbours.
    """
    if isinstance(runs, (str, os.PathLike)):
        found = find_runs(runs)
    elif isinstance(runs, Mapping):
        found = {str(n): Path(p) for n, p in runs.items()}
    else:
        found = {Path(p).name: Path(p) for p in runs}
    if not found:
        raise FileNotFoundError(f"no run folders with checkpoints in {runs!r}; train a run first")
    state = EmbeddingExplorerState(
        runs=found,
        run=run or next(iter(found)),
        colour=colour,
        k=k,
        max_checkpoints=max_checkpoints,
        figsize=figsize,
        map_kwargs={
            "limit": limit,
            "seed": seed,
            "split": split,
            "method": method,
            "n_neighbors": n_neighbors,
            "min_dist": min_dist,
            "device": device,
        },
    )
    style = {"description_width": "initial"}
    run_dd = w.Dropdown(
        options=list(found), value=state.run, description="Run", style=style, layout=w.Layout(width="340px")
    )
    ckpt = w.SelectionSlider(
        options=[("-", "-")],
        description="Checkpoint",
        continuous_update=False,
        style=style,
        layout=w.Layout(width="420px"),
    )
    colour_dd = w.Dropdown(
        options=list(COLOURINGS), value=colour, description="Colour by", style=style, layout=w.Layout(width="220px")
    )
    classes_sel = w.SelectMultiple(
        options=[], description="Classes", rows=7, style=style, layout=w.Layout(width="240px")
    )
    sample_box = w.BoundedIntText(
        value=-1, min=-1, max=0, description="Sample (-1: none)", style=style, layout=w.Layout(width="220px")
    )
    k_box = w.BoundedIntText(
        value=k, min=1, max=50, description="Neighbours", style=style, layout=w.Layout(width="160px")
    )
    scatter = ScatterMap(width=size[0], height=size[1])
    status = w.HTML()
    note = w.HTML(layout=w.Layout(width="340px", max_height=f"{size[1] + 40}px", overflow="auto"))
    table = w.HTML(layout=w.Layout(max_height="360px", overflow="auto"))
    syncing = [False]
    shown_run = [""]

    def sync_controls() -> None:
        """Set the controls' options and values from the state, without firing their callbacks."""
        syncing[0] = True
        try:
            es = state.current
            ckpt.options = [(state.checkpoint_label(t), t) for t in state.checkpoints()]
            ckpt.value = state.checkpoint
            classes_sel.options = list(es.class_names)
            classes_sel.value = tuple(es.class_names) if state.classes is None else state.classes
            sample_box.max = len(es) - 1
            sample_box.value = -1 if state.sample is None else state.sample
            colour_dd.value = state.colour
        finally:
            syncing[0] = False

    def redraw(s: EmbeddingExplorerState) -> None:
        t0 = time.perf_counter()
        syncing[0] = True
        try:
            with scatter.hold_sync():
                if shown_run[0] != s.run:  # a new run: its faces and its frame
                    scatter.thumbs = s.faces()
                    scatter.bounds = s.bounds()
                    shown_run[0] = s.run
                scatter.tips = s.tips()
                for key, value in s.view.items():
                    setattr(scatter, key, value)
                scatter.selection = list(s.selection)
            sample_box.value = -1 if s.sample is None else s.sample
        finally:
            syncing[0] = False
        s.replot_seconds += time.perf_counter() - t0
        note.value = s.describe()
        status.value = (
            f"<small>{html.escape(s.run)} · {html.escape(s.checkpoint)} · map of "
            f"{len(s.checkpoints())} checkpoint(s) computed in {s.map_seconds.get(s.run, 0):.1f} s · "
            f"re-drawn in {s.replot_seconds * 1000:.0f} ms</small>"
        )

    def show_selection(s: EmbeddingExplorerState) -> None:
        table.value = s.selection_html()
        if list(s.selection) != scatter.selection:
            syncing[0] = True
            try:
                scatter.selection = list(s.selection)
            finally:
                syncing[0] = False

    state.listeners.append(redraw)
    state.selection_listeners.append(show_selection)

    guarded = guard(status, lambda: syncing[0])

    def on_run(name: str) -> None:
        if name not in state._maps:
            status.value = f"<small>embedding and projecting {html.escape(name)} ...</small>"
        state.run = name  # set_run re-draws only after the controls follow the new run
        state.checkpoint = state._default_checkpoint(name)
        state.classes = None
        state.sample = None
        state.set_selection(())
        sync_controls()
        state.render()

    run_dd.observe(guarded(on_run), names="value")
    ckpt.observe(guarded(state.set_checkpoint), names="value")
    colour_dd.observe(guarded(state.set_colour), names="value")
    classes_sel.observe(guarded(lambda v: state.set_classes(list(v))), names="value")
    sample_box.observe(guarded(state.set_sample), names="value")
    k_box.observe(guarded(state.set_k), names="value")
    scatter.observe(guarded(state.set_sample), names="selected")
    scatter.observe(guarded(state.set_selection), names="selection")

    status.value = f"<small>embedding and projecting {html.escape(state.run)} ...</small>"
    sync_controls()
    state.render()
    show_selection(state)
    widget = EmbeddingExplorer(
        state,
        children=[
            w.HBox([run_dd, ckpt]),
            w.HBox([w.VBox([colour_dd, sample_box, k_box]), classes_sel]),
            status,
            w.HBox([scatter, note]),
            table,
        ],
    )
    return widget, state
