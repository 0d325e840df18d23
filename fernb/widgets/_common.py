"""What the explorers share."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from matplotlib.figure import Figure

__all__ = ["show", "guard"]

Handler = Callable[[dict[str, Any]], None]


def show(out: Any, content: Figure | str | None) -> None:
    """Replace what an ``ipywidgets.Output`` shows (a Figure, or a line of text) by setting its ``outputs``: one trait
    update, no flicker.

    Not ``with out: display(...)``: that capture path makes a headless executor (nbclient, under papermill) mimic
    the front end and write to the kernel's shell channel while it reads from it, which now and then hangs the run
    (jupyter/nbclient#312).
    """
    if content is None:
        out.outputs = ()
        return
    if isinstance(content, str):
        out.outputs = ({"output_type": "stream", "name": "stdout", "text": content + "\n"},)
        return
    from IPython.core.interactiveshell import InteractiveShell

    formatter = InteractiveShell.instance().display_formatter
    assert formatter is not None
    data, metadata = formatter.format(content)
    out.outputs = ({"output_type": "display_data", "data": data, "metadata": metadata},)


def guard(status: Any, is_syncing: Callable[[], bool]) -> Callable[[Callable[[Any], Any]], Handler]:
    """A maker of trait observers: ``guard(status, busy)(action)`` calls ``action(change["new"])`` unless ``busy()``
    (the explorer is moving its own controls), and shows an error in the ``status`` HTML widget instead of raising it,
    so that the widget stays alive."""

    def wrap(action: Callable[[Any], Any]) -> Handler:
        def handler(change: dict[str, Any]) -> None:
            if is_syncing():
                return
            try:
                action(change["new"])
            except Exception as exc:  # noqa: BLE001 - show the problem next to the controls, keep the widget alive
                status.value = (
                    f"<span style='color:crimson'>{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</span>"
                )

        return handler

    return wrap
