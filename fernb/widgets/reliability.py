"""Step through the samples of a reliability table: a filter, a sort key, previous / next, and one sample's figure."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..explore.reliability import ReliabilityTable
from ..viz.reliability import plot_reliability_sample
from ._common import show

__all__ = ["FILTERS", "SORTS", "ReliabilityExplorerState", "reliability_explorer"]

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


@dataclass
class ReliabilityExplorerState:
    """The explorer's selection and its latest figure; the widget callbacks call these methods.

    Attributes:
        table: the :class:`~fernb.explore.reliability.ReliabilityTable` explored.
        filter, sort: the current filter and sort names (keys of :data:`FILTERS` and :data:`SORTS`).
        order: the split positions (``table.frame.index`` values) passing the filter, in sort order.
        position: the shown entry of ``order``.
        figure: the figure of the shown sample (None when no sample passes the filter).
        seconds: how long the last re-plot took.
        on_change: called after every update (the widget redraws from it).
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


def reliability_explorer(
    table: ReliabilityTable, filter: str = "all", sort: str = "index", image: bool = True
) -> tuple[Any, ReliabilityExplorerState]:
    """An explorer of ``table``: filter and sort dropdowns, previous / next buttons, a position box, the figure.

    Returns:
        ``(widget, state)``: display the widget; ``state`` holds the selection and ``state.figure``.
    """
    import ipywidgets as w

    state = ReliabilityExplorerState(table=table, image=image)
    if filter not in state.filters:
        raise ValueError(f"unknown filter {filter!r}; choose from {state.filters}")
    if sort not in state.sorts:
        raise ValueError(f"unknown sort key {sort!r}; choose from {state.sorts}")
    state.filter, state.sort = filter, sort
    state._reorder()

    flt = w.Dropdown(options=state.filters, value=filter, description="filter", layout=w.Layout(width="190px"))
    srt = w.Dropdown(options=state.sorts, value=sort, description="sort", layout=w.Layout(width="290px"))
    prev_b = w.Button(description="previous", icon="arrow-left", layout=w.Layout(width="100px"))
    next_b = w.Button(description="next", icon="arrow-right", layout=w.Layout(width="100px"))
    pos = w.BoundedIntText(
        value=1, min=1, max=max(1, len(state.order)), description="#", layout=w.Layout(width="130px")
    )
    info = w.HTML()
    out = w.Output()
    syncing = {"on": False}

    def redraw(s: ReliabilityExplorerState) -> None:
        syncing["on"] = True
        try:
            pos.max = max(1, len(s.order))
            pos.value = s.position + 1
        finally:
            syncing["on"] = False
        info.value = f"{len(s.order)} of {len(s.table)} samples pass '{s.filter}'" + (
            f"; showing split position {s.index} (re-plot {s.seconds:.2f} s)" if s.index is not None else ""
        )
        show(out, s.figure if s.figure is not None else "no sample passes this filter")

    state.on_change = redraw
    flt.observe(lambda ch: state.set_filter(ch["new"]), names="value")
    srt.observe(lambda ch: state.set_sort(ch["new"]), names="value")
    prev_b.on_click(lambda _: state.prev())
    next_b.on_click(lambda _: state.next())
    pos.observe(lambda ch: None if syncing["on"] else state.go(ch["new"] - 1), names="value")
    state.go(0)
    widget = w.VBox([w.HBox([flt, srt]), w.HBox([prev_b, next_b, pos]), info, out])
    return widget, state
