"""What the explorers share."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

__all__ = ["show"]


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
