"""The embedding explorer: pick a run, a checkpoint, the classes, the colouring and a sample whose neighbours to show.

Each run's checkpoints are embedded and projected into one shared map the first time the run is shown (see
:func:`fernb.explore.embeddings.run_maps`; cached on disk too), so moving along the checkpoints keeps the coordinates
and changing the colouring, the classes or the sample only re-draws from the cached map.
"""

from __future__ import annotations

import html
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..explore.embeddings import (
    COLOURINGS,
    EmbeddingSet,
    Neighbours,
    checkpoint_epoch,
    list_checkpoints,
    neighbours,
    pick_checkpoints,
    run_maps,
)
from ..viz.embeddings import plot_embedding_map
from ._common import show

__all__ = ["EmbeddingExplorerState", "embedding_explorer", "find_runs"]


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


@dataclass
class EmbeddingExplorerState:
    """What the explorer shows, the maps computed so far and the latest figure.

    Attributes:
        runs: run name -> run folder.
        run, checkpoint: the selection. colour: one of :data:`~fernb.explore.embeddings.COLOURINGS`.
        classes: class names to show (None: all; empty: none, every sample grey).
        sample: row whose neighbours are shown (None: none). k: how many.
        map_kwargs: passed to :func:`~fernb.explore.embeddings.run_maps` (limit, seed, split, method, ...).
        max_checkpoints: checkpoints per run offered (spread over training by
            :func:`~fernb.explore.embeddings.pick_checkpoints`).
        figure: the latest Figure. neighbours: the latest :class:`Neighbours` (or None).
        replot_seconds: time of the latest re-draw (figure built; the widget adds its display).
        listeners: called with the state after every re-draw (the widget displays the figure there).
    """

    runs: dict[str, Path]
    run: str
    checkpoint: str = ""
    colour: str = "label"
    classes: tuple[str, ...] | None = None
    sample: int | None = None
    k: int = 8
    map_kwargs: dict[str, Any] = field(default_factory=dict)
    max_checkpoints: int = 6
    figsize: tuple[float, float] = (7.6, 5.8)
    figure: Figure | None = None
    neighbours: Neighbours | None = None
    replot_seconds: float = math.nan
    map_seconds: dict[str, float] = field(default_factory=dict)
    listeners: list[Callable[[EmbeddingExplorerState], None]] = field(default_factory=list)
    _maps: dict[str, dict[str, EmbeddingSet]] = field(default_factory=dict, repr=False)
    _tags: dict[str, list[str]] = field(default_factory=dict, repr=False)

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

    # -- the controls' actions ----------------------------------------------------------------------------------------
    def set_run(self, run: str) -> Figure:
        if run not in self.runs:
            raise KeyError(f"run {run!r} is not among {', '.join(self.runs)}")
        self.run = run
        self.checkpoint = self._default_checkpoint(run)
        names = self.current.class_names
        if self.classes is not None:
            self.classes = tuple(c for c in self.classes if c in names) or None
        if self.sample is not None and self.sample >= len(self.current):
            self.sample = None
        return self.render()

    def set_checkpoint(self, checkpoint: str | int) -> Figure:
        tag = f"epoch-{int(checkpoint):03d}" if isinstance(checkpoint, int) else str(checkpoint)
        if tag in ("best", "last") and tag not in self.checkpoints():
            epoch = checkpoint_epoch(self.runs[self.run], tag)
            tag = f"epoch-{epoch:03d}" if epoch is not None else tag
        if tag not in self.checkpoints():
            raise KeyError(f"checkpoint {checkpoint!r} is not among {', '.join(self.checkpoints())}")
        self.checkpoint = tag
        return self.render()

    def set_colour(self, colour: str) -> Figure:
        if colour not in COLOURINGS:
            raise ValueError(f"colour={colour!r}; expected one of {', '.join(COLOURINGS)}")
        self.colour = colour
        return self.render()

    def set_classes(self, classes: Sequence[str] | None) -> Figure:
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

    def set_sample(self, sample: int | None) -> Figure:
        if sample is not None and sample < 0:
            sample = None
        if sample is not None and sample >= len(self.current):
            raise IndexError(f"sample {sample} is outside 0..{len(self.current) - 1}")
        self.sample = sample
        return self.render()

    def set_k(self, k: int) -> Figure:
        self.k = max(1, int(k))
        return self.render()

    # -- drawing ------------------------------------------------------------------------------------------------------
    def render(self) -> Figure:
        """Re-draw from the cached map; updates ``figure``, ``neighbours`` and ``replot_seconds``."""
        es = self.current
        t0 = time.perf_counter()
        self.neighbours = neighbours(es, self.sample, self.k) if self.sample is not None else None
        self.figure = plot_embedding_map(
            es, self.colour, classes=self.classes, neighbours=self.neighbours, figsize=self.figsize
        )
        self.replot_seconds = time.perf_counter() - t0
        for fn in self.listeners:
            fn(self)
        return self.figure

    def describe(self) -> str:
        """An HTML note on the selected sample and its neighbours (what the map cannot show: true distances)."""
        es, nb = self.current, self.neighbours
        if nb is None:
            return (
                f"<i>{html.escape(es.title)}: {len(es)} samples. Pick a sample (0..{len(es) - 1}) to list its "
                "nearest neighbours in the embedding space.</i>"
            )
        names = es.class_names

        def who(i: int) -> str:
            ok = "" if es.preds[i] == es.labels[i] else f" &rarr; predicted <b>{html.escape(names[es.preds[i]])}</b>"
            return f"#{i} {html.escape(names[es.labels[i]])}{ok} (conf {es.confidence[i]:.2f})"

        rows = "".join(
            f"<li>{who(int(j))}, distance {d:.3g}</li>" for j, d in zip(nb.samples, nb.distances, strict=True)
        )
        anchor = ""
        if nb.anchor is not None:
            assert nb.anchor_class is not None
            anchor = (
                f"<br>nearest anchor: <b>{html.escape(names[nb.anchor_class])}</b> (distance {nb.anchor_distance:.3g})"
            )
        return f"<b>sample {who(nb.index)}</b>{anchor}<br>{len(nb.samples)} nearest samples:<ol>{rows}</ol>"


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
) -> tuple[Any, EmbeddingExplorerState]:
    """An ipywidgets explorer of embedding maps; returns ``(widget, state)``.

    Args:
        runs: a folder of runs (every run folder in it), a list of run folders, or ``{name: folder}``.
        run: the run shown first (default: the first).
        colour: the first colouring. k: neighbours listed for a picked sample.
        max_checkpoints: checkpoints per run on the slider.
        limit, seed, split, method, n_neighbors, min_dist, device: see :func:`fernb.explore.embeddings.run_maps`.

    Controls: run, checkpoint (slider over the run's checkpoints), "Colour by" (label / prediction / confidence),
    classes to show, and a sample (-1: none) whose nearest samples and anchor are drawn and listed.
    """
    import ipywidgets as w

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
    status = w.HTML()
    note = w.HTML()
    out = w.Output()
    syncing = [False]

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
        show(out, s.figure)
        s.replot_seconds += time.perf_counter() - t0
        note.value = s.describe()
        status.value = (
            f"<small>{html.escape(s.run)} · {html.escape(s.checkpoint)} · map of "
            f"{len(s.checkpoints())} checkpoint(s) computed in {s.map_seconds.get(s.run, 0):.1f} s · "
            f"re-drawn in {s.replot_seconds:.2f} s</small>"
        )

    state.listeners.append(redraw)

    def guarded(action: Callable[[Any], Any]) -> Callable[[dict[str, Any]], None]:
        def handler(change: dict[str, Any]) -> None:
            if syncing[0]:
                return
            try:
                action(change["new"])
            except Exception as exc:  # noqa: BLE001 - show the problem next to the controls, keep the widget alive
                status.value = (
                    f"<span style='color:crimson'>{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</span>"
                )

        return handler

    def on_run(name: str) -> None:
        if name not in state._maps:
            status.value = f"<small>embedding and projecting {html.escape(name)} ...</small>"
        state.run = name  # set_run re-draws only after the controls follow the new run
        state.checkpoint = state._default_checkpoint(name)
        state.classes = None
        state.sample = None
        sync_controls()
        state.render()

    run_dd.observe(guarded(on_run), names="value")
    ckpt.observe(guarded(state.set_checkpoint), names="value")
    colour_dd.observe(guarded(state.set_colour), names="value")
    classes_sel.observe(guarded(lambda v: state.set_classes(list(v))), names="value")
    sample_box.observe(guarded(state.set_sample), names="value")
    k_box.observe(guarded(state.set_k), names="value")

    status.value = f"<small>embedding and projecting {html.escape(state.run)} ...</small>"
    sync_controls()
    state.render()
    widget = w.VBox(
        [
            w.HBox([run_dd, ckpt]),
            w.HBox([w.VBox([colour_dd, sample_box, k_box]), classes_sel]),
            status,
            out,
            note,
        ]
    )
    return widget, state
