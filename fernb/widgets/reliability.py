"""Explore the samples of a reliability table: an interactive map of the samples (two columns of the table, such as
the anchor and attention confidences, coloured by what the correction did to each label), and a stepper (a filter, a
sort key, previous / next) with one sample's figure.

The map is fernb's :class:`~fernb.widgets.scatter.ScatterMap`: hover a point for the face, the given (and true)
label, the primary and corrected predictions and the confidences; click it to show its per-branch distributions in
the side panel (and step the figure to it); drag a lasso (or shift-drag a box) to list the samples inside
(``state.selection``, ``explorer.selection``). Displayed where no widget can run (a notebook executed by papermill,
a static HTML export), the explorer shows a PNG of the same map.
"""

from __future__ import annotations

import base64
import html
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as w
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..explore.reliability import ReliabilityTable
from ..viz.reliability import MAP_COLOURINGS, plot_reliability_map, plot_reliability_sample, reliability_groups
from ._common import guard, show
from .scatter import ScatterMap, face_uri

__all__ = [
    "FILTERS",
    "MAP_COLUMNS",
    "SORTS",
    "ReliabilityExplorer",
    "ReliabilityExplorerState",
    "reliability_explorer",
]

# filter name -> boolean column (None: every sample); filters whose column is missing are not offered
FILTERS: dict[str, str | None] = {
    "all": None,
    "changed": "changed",
    "flagged": "flagged",
    "noisy": "is_noisy",
    "repaired": "repaired",
    "broken": "broken",
}
# sort name -> (column, ascending); "index" keeps split order
SORTS: dict[str, tuple[str | None, bool]] = {
    "index": (None, True),
    "confidence gain": ("gain", False),
    "primary confidence": ("c_primary", True),
    "anchor confidence": ("c_anchor", True),
    "attention confidence": ("c_attention", True),
    "corrected confidence": ("c_corrected", False),
    "given-label probability": ("p_given", True),
    "JS to reference (corrected)": ("js_corrected", False),
}
# columns the map's axes may show (those the table has are offered)
MAP_COLUMNS: dict[str, str] = {
    "c_primary": "primary confidence c_p",
    "c_anchor": "anchor confidence c_g",
    "c_attention": "attention confidence c_a",
    "c_corrected": "corrected confidence c(m)",
    "gain": "confidence gain c(m) - c_p",
    "p_given": "corrected probability of the given label",
    "p_primary": "top primary probability",
    "p_corrected": "top corrected probability",
    "js_corrected": "JS(reference, corrected)",
}
_BRANCHES = ("primary", "anchor", "attention", "corrected")
_BRANCH_COLOURS = {"primary": "#1f77b4", "anchor": "#2ca02c", "attention": "#9467bd", "corrected": "#d62728"}


@dataclass
class ReliabilityExplorerState:
    """The explorer's selection, its map and its latest figure; the widget callbacks call these methods.

    Attributes:
        table: the :class:`~fernb.explore.reliability.ReliabilityTable` explored.
        filter, sort: the current filter and sort names (keys of :data:`FILTERS` and :data:`SORTS`).
        order: the split positions (``table.frame.index`` values) passing the filter, in sort order.
        position: the shown entry of ``order``.
        figure: the figure of the shown sample (None when no sample passes the filter).
        seconds: how long the last re-plot took.
        on_change: called after every update (the widget redraws from it).
        map_x, map_y: the map's columns (keys of :data:`MAP_COLUMNS`); colour: the map's colouring (``"auto"`` or a
            key of :data:`fernb.viz.reliability.MAP_COLOURINGS`).
        map_index: the split positions drawn on the map, in frame order (every sample, or ``map_limit`` of them).
        selection: split positions in the latest lasso or box on the map (or given to :meth:`set_selection`).
        selection_listeners: called with the state after the selection changed.
        map_listeners: called with the state after the map's axes or colouring changed.
    """

    table: ReliabilityTable
    filter: str = "all"
    sort: str = "index"
    image: bool = True
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    position: int = 0
    figure: Figure | None = None
    seconds: float = 0.0
    on_change: Callable[[ReliabilityExplorerState], Any] | None = None
    map_x: str = "c_anchor"
    map_y: str = "c_attention"
    colour: str = "auto"
    map_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    selection: tuple[int, ...] = ()
    selection_listeners: list[Callable[[ReliabilityExplorerState], None]] = field(default_factory=list)
    map_listeners: list[Callable[[ReliabilityExplorerState], None]] = field(default_factory=list)
    _faces: list[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not len(self.map_index):
            self.map_index = self.table.frame.index.to_numpy(dtype=np.int64)

    @property
    def filters(self) -> list[str]:
        cols = self.table.frame.columns
        return [k for k, c in FILTERS.items() if c is None or c in cols]

    @property
    def sorts(self) -> list[str]:
        cols = self.table.frame.columns
        return [k for k, (c, _) in SORTS.items() if c is None or c in cols]

    @property
    def index(self) -> int | None:
        """The split position of the shown sample, or None."""
        return int(self.order[self.position]) if len(self.order) else None

    def _reorder(self) -> None:
        frame = self.table.frame
        col = FILTERS[self.filter]
        sel = frame if col is None else frame[frame[col].to_numpy(dtype=bool)]
        column, ascending = SORTS[self.sort]
        if column is not None:
            sel = sel.sort_values(column, ascending=ascending, kind="stable")
        self.order = sel.index.to_numpy(dtype=np.int64)

    def render(self) -> Figure | None:
        """Re-plot the shown sample into ``figure``."""
        t0 = time.perf_counter()
        idx = self.index
        if idx is None:
            self.figure = None
        else:
            row = self.table.frame.loc[idx]
            extra = f"{self.filter} {self.position + 1}/{len(self.order)}, by {self.sort}"
            if SORTS[self.sort][0] is not None:
                extra += f" = {row[SORTS[self.sort][0]]:.3f}"
            self.figure = plot_reliability_sample(
                self.table.sample(idx, image=self.image), title=f"{self.table.name}: sample {idx} ({extra})"
            )
        self.seconds = time.perf_counter() - t0
        if self.on_change is not None:
            self.on_change(self)
        return self.figure

    def go(self, position: int) -> Figure | None:
        """Show entry ``position`` of the filtered, sorted order (clipped to its range)."""
        self.position = int(np.clip(position, 0, max(0, len(self.order) - 1)))
        return self.render()

    def next(self) -> Figure | None:
        return self.go(self.position + 1)

    def prev(self) -> Figure | None:
        return self.go(self.position - 1)

    def show_index(self, index: int) -> Figure | None:
        """Show the sample at split position ``index`` (switching the filter to ``all`` if it is filtered out)."""
        if index not in set(self.order.tolist()):
            self.filter = "all"
            self._reorder()
        return self.go(int(np.flatnonzero(self.order == index)[0]))

    def set_filter(self, name: str) -> Figure | None:
        """Keep only the samples of filter ``name`` and show the first."""
        if name not in self.filters:
            raise ValueError(f"unknown filter {name!r} for this table; choose from {self.filters}")
        self.filter = name
        self._reorder()
        return self.go(0)

    def set_sort(self, name: str) -> Figure | None:
        """Sort by ``name`` and show the first sample."""
        if name not in self.sorts:
            raise ValueError(f"unknown sort key {name!r} for this table; choose from {self.sorts}")
        self.sort = name
        self._reorder()
        return self.go(0)

    # -- the map ------------------------------------------------------------------------------------------------------
    @property
    def map_columns(self) -> list[str]:
        """The columns the map's axes may show (those of :data:`MAP_COLUMNS` the table has)."""
        return [c for c in MAP_COLUMNS if c in self.table.frame.columns]

    @property
    def colourings(self) -> list[str]:
        """The map's colourings this table allows."""
        cols = self.table.frame.columns
        return [k for k, need in MAP_COLOURINGS.items() if need in cols]

    @property
    def map_frame(self) -> pd.DataFrame:
        """The rows of the frame drawn on the map, in map order (row ``r`` of the map is ``map_frame.iloc[r]``)."""
        return self.table.frame.loc[self.map_index]

    def map_row(self, index: int | None) -> int:
        """The map row of split position ``index`` (-1: None or not on the map)."""
        if index is None:
            return -1
        hits = np.flatnonzero(self.map_index == index)
        return int(hits[0]) if len(hits) else -1

    def set_axes(self, x: str | None = None, y: str | None = None) -> dict[str, Any]:
        """Put columns ``x`` and ``y`` (keys of :data:`MAP_COLUMNS`) on the map's axes; returns :meth:`map_traits`."""
        for col in (x, y):
            if col is not None and col not in self.map_columns:
                raise ValueError(f"unknown map column {col!r} for this table; choose from {self.map_columns}")
        self.map_x, self.map_y = x or self.map_x, y or self.map_y
        return self._map_changed()

    def set_colour(self, colour: str) -> dict[str, Any]:
        """Colour the map by ``colour`` (``"auto"`` or one of :attr:`colourings`); returns :meth:`map_traits`."""
        if colour != "auto" and colour not in self.colourings:
            raise ValueError(f"unknown colouring {colour!r} for this table; choose from {['auto', *self.colourings]}")
        self.colour = colour
        return self._map_changed()

    def _map_changed(self) -> dict[str, Any]:
        for fn in self.map_listeners:
            fn(self)
        return self.map_traits()

    def groups(self) -> list[tuple[str, np.ndarray, str]]:
        """The map's colour groups: ``(name, mask over the map's rows, colour)``."""
        return reliability_groups(self.map_frame, self.colour)

    def map_traits(self) -> dict[str, Any]:
        """What :class:`~fernb.widgets.scatter.ScatterMap` draws (everything but the faces and the tooltips)."""
        frame = self.map_frame
        xs = frame[self.map_x].to_numpy(dtype=float)
        ys = frame[self.map_y].to_numpy(dtype=float)
        colours = np.full(len(frame), "#777777", dtype=object)
        for _, mask, colour in self.groups():
            colours[mask] = colour
        finite = np.isfinite(xs) & np.isfinite(ys)
        bounds = (
            [float(xs[finite].min()), float(xs[finite].max()), float(ys[finite].min()), float(ys[finite].max())]
            if finite.any()
            else [0.0, 1.0, 0.0, 1.0]
        )
        return {
            "x": np.where(finite, xs, np.nan_to_num(xs)).tolist(),
            "y": np.where(finite, ys, np.nan_to_num(ys)).tolist(),
            "colours": colours.tolist(),
            "faded": (~finite).tolist(),
            "ring": frame["changed"].to_numpy(dtype=bool).tolist(),
            "bounds": bounds,
            "xlabel": MAP_COLUMNS.get(self.map_x, self.map_x),
            "ylabel": MAP_COLUMNS.get(self.map_y, self.map_y),
            "title": f"{self.table.name}: {len(frame)} samples (ringed: the correction changed the prediction)",
        }

    def _label(self, row: pd.Series, column: str) -> str:
        value = row[column]
        return "(outside the label space)" if pd.isna(value) else str(value)

    def tips(self) -> list[str]:
        """The map's tooltips, one per map row: given (and true) label, primary and corrected predictions, the
        confidences."""
        out = []
        truth = self.table.has_truth
        for idx, row in self.map_frame.iterrows():
            given = f"given: {self._label(row, 'given')}"
            if truth:
                given += f" · true: {self._label(row, 'true')}" + (" (flipped)" if row["is_noisy"] else "")
            changed = " (changed)" if row["changed"] else ""
            out.append(
                f"#{idx}\n{given}\n"
                f"primary: {row['primary']} (c_p {row['c_primary']:.2f})\n"
                f"corrected: {row['corrected']} (c {row['c_corrected']:.2f}){changed}\n"
                f"c_g {row['c_anchor']:.2f} · c_a {row['c_attention']:.2f}"
            )
        return out

    def faces(self, size: int = 64) -> list[str]:
        """The faces of the map's rows as ``data:`` URIs (``""`` without a dataset), made once."""
        if self._faces is None:
            ds = self.table.dataset
            self._faces = (
                [face_uri(ds.load_image(int(i)), size) for i in self.map_index]
                if ds is not None and self.image
                else [""] * len(self.map_index)
            )
        return self._faces

    def map_figure(self) -> Figure:
        """The map as a static figure (:func:`fernb.viz.reliability.plot_reliability_map`)."""
        return plot_reliability_map(self.map_frame, self.map_x, self.map_y, self.colour, title=self.table.name)

    def set_selection(self, indices: Sequence[int]) -> tuple[int, ...]:
        """Select the samples at split positions ``indices`` (what a lasso does); returns the selection."""
        known = set(self.table.frame.index.tolist())
        unknown = [int(i) for i in indices if int(i) not in known]
        if unknown:
            raise ValueError(f"split positions {unknown[:5]} are not in the table")
        self.selection = tuple(sorted({int(i) for i in indices}))
        for fn in self.selection_listeners:
            fn(self)
        return self.selection

    def select_rows(self, rows: Sequence[int]) -> tuple[int, ...]:
        """Select the samples of map rows ``rows`` (the map's lasso sends rows)."""
        return self.set_selection([int(self.map_index[int(r)]) for r in rows])

    def selection_frame(self) -> pd.DataFrame:
        """The selected samples' rows of the table's frame."""
        return self.table.frame.loc[list(self.selection)]

    def _face(self, index: int, size: int) -> str:
        row = self.map_row(index)
        uri = self.faces()[row] if row >= 0 else ""
        if not uri and self.table.dataset is not None and self.image:
            uri = face_uri(self.table.dataset.load_image(int(index)), 64)
        return f"<img src='{uri}' width='{size}' height='{size}' style='vertical-align:middle'>" if uri else ""

    def selection_html(self, limit: int = 60) -> str:
        """The selected samples as an HTML table with their faces (the first ``limit``)."""
        sel = list(self.selection)
        if not sel:
            return "<i>No selection: drag a lasso (or shift-drag a box) around points on the map.</i>"
        frame = self.table.frame.loc[sel]
        truth = self.table.has_truth
        body = "".join(
            f"<tr><td>{self._face(int(i), 36)}</td><td>#{int(i)}</td><td>{html.escape(self._label(r, 'given'))}</td>"
            + (f"<td>{html.escape(self._label(r, 'true'))}{' &#9873;' if r['is_noisy'] else ''}</td>" if truth else "")
            + f"<td>{html.escape(str(r['primary']))}</td><td>{html.escape(str(r['corrected']))}"
            f"{' &#8635;' if r['changed'] else ''}</td>"
            f"<td>{r['c_primary']:.2f}</td><td>{r['c_corrected']:.2f}</td></tr>"
            for i, r in frame.head(limit).iterrows()
        )
        counts = [f"{int(frame['changed'].sum())} changed", f"{int(frame['flagged'].sum())} flagged"]
        if truth:
            counts += [f"{int(frame['is_noisy'].sum())} flipped", f"{int(frame['repaired'].sum())} repaired"]
        more = f"<br><i>... and {len(sel) - limit} more (explorer.selection_frame())</i>" if len(sel) > limit else ""
        head = "<th>face</th><th>sample</th><th>given</th>" + ("<th>true</th>" if truth else "")
        return (
            f"<b>{len(sel)} selected</b>: {', '.join(counts)} (<code>explorer.selection</code>)"
            f"<table class='fernb-selection' data-count='{len(sel)}' style='border-collapse:collapse'>"
            f"<tr>{head}<th>primary</th><th>corrected</th><th>c_p</th><th>c(m)</th></tr>{body}</table>{more}"
        )

    def sample_html(self, index: int | None = None) -> str:
        """One sample's panel: its face, labels and the per-branch distributions as bars (default: the shown one)."""
        index = self.index if index is None else int(index)
        if index is None:
            return "<i>Hover a point for its face and numbers; click one to show its distributions here.</i>"
        smp = self.table.sample(index, image=False)
        row = self.table.frame.loc[index]
        names = smp.class_names
        truth = "" if smp.true is None else f", true <b>{html.escape(self._label(row, 'true'))}</b>"
        flipped = " (flipped)" if smp.is_noisy else ""
        given = "no given label" if smp.given is None else f"given <b>{html.escape(names[smp.given])}</b>"
        head = "".join(
            f"<th style='color:{_BRANCH_COLOURS[b]}'>{b}<br><small>c={smp.confidences[b]:.2f}</small></th>"
            for b in _BRANCHES
        )
        rows = []
        for c, name in enumerate(names):
            mark = (" &#9664;" if c == smp.given else "") + (" &#9733;" if c == smp.true else "")
            cells = []
            for b in _BRANCHES:
                d = np.asarray(smp.dists[b], dtype=float)
                top = int(d.argmax()) == c
                colour = _BRANCH_COLOURS[b] if top else "#b8c2cc"
                cells.append(
                    f"<td style='white-space:nowrap'><span style='display:inline-block;width:{round(48 * d[c])}px;"
                    f"height:9px;background:{colour}'></span> <small>{d[c]:.2f}</small></td>"
                )
            weight = "bold" if c == smp.given else "normal"
            rows.append(f"<tr><td style='font-weight:{weight}'>{html.escape(name)}{mark}</td>{''.join(cells)}</tr>")
        return (
            f"<div class='fernb-rel-sample' data-sample='{index}'>{self._face(index, 96)}<br>"
            f"<b>sample #{index}</b>: {given}{truth}{flipped}<br>primary &rarr; {html.escape(str(row['primary']))}, "
            f"corrected &rarr; {html.escape(str(row['corrected']))}{' (changed)' if row['changed'] else ''}"
            f"<table style='border-collapse:collapse;font-size:11px'><tr><th></th>{head}</tr>{''.join(rows)}</table>"
            "<small>&#9664; given, &#9733; true; coloured bar: the branch's top class</small></div>"
        )

    def legend_html(self) -> str:
        """The map's colours, with counts."""
        items = "".join(
            f"<span style='margin-right:10px'><span style='display:inline-block;width:10px;height:10px;"
            f"border-radius:5px;background:{c}'></span> {html.escape(n)} ({int(m.sum())})</span>"
            for n, m, c in self.groups()
        )
        ring = "ringed: the correction changed the prediction"
        return f"<div class='fernb-rel-legend' style='font-size:11px'>{items}<br>{ring}</div>"


class ReliabilityExplorer(w.VBox):
    """The explorer's widget: a VBox with the state's ``selection`` at hand, and a PNG of its map where no widget can
    run (a notebook executed by papermill)."""

    def __init__(self, state: ReliabilityExplorerState, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state = state

    @property
    def selection(self) -> tuple[int, ...]:
        """Split positions of the samples in the map's latest lasso or box."""
        return self.state.selection

    def selection_frame(self) -> pd.DataFrame:
        return self.state.selection_frame()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        data = super()._repr_mimebundle_(**kwargs)
        if isinstance(data, dict) and self.state.map_index.size:
            buf = io.BytesIO()
            self.state.map_figure().savefig(buf, format="png", dpi=72)
            data["image/png"] = base64.b64encode(buf.getvalue()).decode("ascii")
        return data


def reliability_explorer(
    table: ReliabilityTable,
    filter: str = "all",
    sort: str = "index",
    image: bool = True,
    *,
    x: str = "c_anchor",
    y: str = "c_attention",
    colour: str = "auto",
    map_limit: int | None = 2000,
    seed: int = 0,
    size: tuple[int, int] = (520, 420),
) -> tuple[ReliabilityExplorer, ReliabilityExplorerState]:
    """An explorer of ``table``: the map of its samples with a side panel, then filter and sort dropdowns,
    previous / next buttons, a position box and the shown sample's figure.

    Args:
        table: the reliability table.
        filter, sort: the stepper's first filter and sort (keys of :data:`FILTERS`, :data:`SORTS`).
        image: show the faces (the figure's image, the map's tooltips).
        x, y: the map's columns (keys of :data:`MAP_COLUMNS`); colour: its colouring (``"auto"``: what the correction
            did to flipped and clean labels when the true labels are known, else whether it changed the prediction).
        map_limit: at most this many samples on the map (drawn with ``seed``, kept in split order; None: all).
        size: the map's (width, height) in pixels.

    Returns:
        ``(widget, state)``: display the widget; ``state`` holds the shown sample, ``state.figure`` and the map's
        ``state.selection`` (also ``widget.selection``).
    """
    index = table.frame.index.to_numpy(dtype=np.int64)
    if map_limit is not None and len(index) > map_limit:
        index = np.sort(np.random.default_rng([seed, 17]).choice(index, map_limit, replace=False))
    state = ReliabilityExplorerState(table=table, image=image, map_index=index)
    if filter not in state.filters:
        raise ValueError(f"unknown filter {filter!r}; choose from {state.filters}")
    if sort not in state.sorts:
        raise ValueError(f"unknown sort key {sort!r}; choose from {state.sorts}")
    state.filter, state.sort = filter, sort
    state._reorder()
    state.set_axes(x, y)
    state.set_colour(colour)

    style = {"description_width": "initial"}
    flt = w.Dropdown(options=state.filters, value=filter, description="filter", layout=w.Layout(width="190px"))
    srt = w.Dropdown(options=state.sorts, value=sort, description="sort", layout=w.Layout(width="290px"))
    prev_b = w.Button(description="previous", icon="arrow-left", layout=w.Layout(width="100px"))
    next_b = w.Button(description="next", icon="arrow-right", layout=w.Layout(width="100px"))
    pos = w.BoundedIntText(
        value=1, min=1, max=max(1, len(state.order)), description="#", layout=w.Layout(width="130px")
    )
    x_dd = w.Dropdown(options=state.map_columns, value=x, description="x", style=style, layout=w.Layout(width="170px"))
    y_dd = w.Dropdown(options=state.map_columns, value=y, description="y", style=style, layout=w.Layout(width="170px"))
    colour_dd = w.Dropdown(
        options=["auto", *state.colourings],
        value=colour,
        description="Colour by",
        style=style,
        layout=w.Layout(width="200px"),
    )
    scatter = ScatterMap(width=size[0], height=size[1], aspect="free", animate_ms=300)
    legend = w.HTML()
    panel = w.HTML(layout=w.Layout(width="420px", max_height=f"{size[1] + 60}px", overflow="auto"))
    table_html = w.HTML(layout=w.Layout(max_height="320px", overflow="auto"))
    status = w.HTML()
    info = w.HTML()
    out = w.Output()
    syncing = {"on": False}

    def draw_map(s: ReliabilityExplorerState) -> None:
        t0 = time.perf_counter()
        syncing["on"] = True
        try:
            with scatter.hold_sync():
                for key, value in s.map_traits().items():
                    setattr(scatter, key, value)
        finally:
            syncing["on"] = False
        legend.value = s.legend_html()
        status.value = (
            f"<small>map of {len(s.map_index)} samples re-drawn in {(time.perf_counter() - t0) * 1000:.0f} ms</small>"
        )

    def redraw(s: ReliabilityExplorerState) -> None:
        syncing["on"] = True
        try:
            pos.max = max(1, len(s.order))
            pos.value = s.position + 1
            flt.value = s.filter
            scatter.selected = s.map_row(s.index)
        finally:
            syncing["on"] = False
        info.value = f"{len(s.order)} of {len(s.table)} samples pass '{s.filter}'" + (
            f"; showing split position {s.index} (re-plot {s.seconds:.2f} s)" if s.index is not None else ""
        )
        panel.value = s.sample_html()
        show(out, s.figure if s.figure is not None else "no sample passes this filter")

    def show_selection(s: ReliabilityExplorerState) -> None:
        table_html.value = s.selection_html()
        rows = [s.map_row(i) for i in s.selection]
        rows = [r for r in rows if r >= 0]
        if rows != list(scatter.selection):
            syncing["on"] = True
            try:
                scatter.selection = rows
            finally:
                syncing["on"] = False

    guarded = guard(status, lambda: syncing["on"])

    def on_click(row: int) -> None:
        if 0 <= row < len(state.map_index):
            state.show_index(int(state.map_index[row]))
            return
        syncing["on"] = True  # a click beside every point (-1) keeps the shown sample, ringed on the map
        try:
            scatter.selected = state.map_row(state.index)
        finally:
            syncing["on"] = False

    state.on_change = redraw
    state.map_listeners.append(draw_map)
    state.selection_listeners.append(show_selection)
    flt.observe(guarded(state.set_filter), names="value")
    srt.observe(guarded(state.set_sort), names="value")
    prev_b.on_click(lambda _: state.prev())
    next_b.on_click(lambda _: state.next())
    pos.observe(guarded(lambda v: state.go(v - 1)), names="value")
    x_dd.observe(guarded(lambda v: state.set_axes(x=v)), names="value")
    y_dd.observe(guarded(lambda v: state.set_axes(y=v)), names="value")
    colour_dd.observe(guarded(state.set_colour), names="value")
    scatter.observe(guarded(on_click), names="selected")
    scatter.observe(guarded(state.select_rows), names="selection")

    with scatter.hold_sync():
        scatter.thumbs = state.faces()
        scatter.tips = state.tips()
    draw_map(state)
    state.go(0)
    show_selection(state)
    widget = ReliabilityExplorer(
        state,
        children=[
            w.HBox([x_dd, y_dd, colour_dd]),
            status,
            w.HBox([w.VBox([scatter, legend]), panel]),
            table_html,
            w.HBox([flt, srt]),
            w.HBox([prev_b, next_b, pos]),
            info,
            out,
        ],
    )
    return widget, state
