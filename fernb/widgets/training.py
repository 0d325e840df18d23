"""Live views of a training run in a notebook."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from IPython import get_ipython
from IPython.display import display

from ..engine.callbacks import Callback
from ..viz.training import plot_history

__all__ = ["LiveCurves"]


class LiveCurves(Callback):
    """A training callback that redraws the learning curves in a notebook after every epoch.

    Pass it to ``fit(config, callbacks=[LiveCurves()])``; outside IPython it only collects the rows.
    """

    def __init__(self, panels: Mapping[str, Sequence[str]] | None = None, title: str | None = None) -> None:
        self.rows: list[dict[str, Any]] = []
        self.panels, self.title = panels, title
        self._handle = None

    def on_epoch_end(self, metrics: Mapping[str, Any]) -> None:
        self.rows.append(dict(metrics))
        fig = plot_history(self.rows, self.panels, self.title)
        if get_ipython() is None:
            return
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
