"""An interactive scatter map for Jupyter: hover a point to see its face, click to select it, drag a lasso or a box
to select many; anchors drawn as stars.

:class:`ScatterMap` is an `anywidget <https://anywidget.dev>`_ whose front end is fernb's own canvas code
(``scatter.js`` and ``scatter.css`` beside this module, shipped in the package): nothing is fetched from a CDN, and
the faces travel as ``data:`` URIs inside the widget's state. The kernel sends positions, colours and tooltips as
traits; the browser sends back ``selected`` (a click) and ``selection`` (a lasso or box).

Chosen over plotly's FigureWidget (a 9.7 MB wheel, 64 MB installed, 3.5 s to build a 5,000-point widget on 2 cores;
a face on hover needs a kernel round trip) and ipympl (a PNG per re-draw from the kernel): see
``benchmarks/bench_explorer.py``.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from pathlib import Path

import anywidget
import numpy as np
import traitlets as t
from PIL import Image

__all__ = ["ScatterMap", "face_uri", "to_hex"]

_HERE = Path(__file__).parent


class ScatterMap(anywidget.AnyWidget):
    """The map's front end. Per-point lists are indexed by the point's row; set them together in ``hold_sync()``.

    Traits (kernel -> browser): ``x``, ``y`` map coordinates; ``colours`` CSS colours; ``faded`` points drawn as
    grey context (not hoverable or selectable); ``ring`` points ringed (mistakes); ``tips`` tooltip text, one line
    per ``\\n``; ``thumbs`` face ``data:`` URIs (or ``""``); ``anchors`` ``{"x", "y", "colour", "text"}`` stars;
    ``bounds`` ``[x0, x1, y0, y1]``, the frame (shared by every checkpoint of a map, so the view does not jump);
    ``links`` rows joined to the selected point; ``anchor_link`` the anchor joined to it (-1: none); ``title``;
    ``animate_ms`` how long a change of positions glides; ``width``, ``height`` in pixels; ``xlabel``, ``ylabel``
    axis names: when either is set the map is drawn as a plot, with margins, a grid, ticks and the names (default
    ``""``: a bare map); ``aspect`` ``"equal"`` (one scale for both axes, a map's) or ``"free"`` (each axis fills the
    frame, for columns of different ranges).

    Traits (browser -> kernel): ``selected`` the clicked row (-1: none); ``selection`` the rows in the last lasso or
    box; ``mode`` ``"lasso"`` or ``"box"`` (shift-drag draws a box in either); ``draw_ms`` the browser's latest
    re-draw time.
    """

    _esm = (_HERE / "scatter.js").read_text(encoding="utf-8")
    _css = (_HERE / "scatter.css").read_text(encoding="utf-8")

    x = t.List(t.Float()).tag(sync=True)
    y = t.List(t.Float()).tag(sync=True)
    colours = t.List(t.Unicode()).tag(sync=True)
    faded = t.List(t.Bool()).tag(sync=True)
    ring = t.List(t.Bool()).tag(sync=True)
    tips = t.List(t.Unicode()).tag(sync=True)
    thumbs = t.List(t.Unicode()).tag(sync=True)
    anchors = t.List(t.Dict()).tag(sync=True)
    bounds = t.List(t.Float(), default_value=[0.0, 1.0, 0.0, 1.0]).tag(sync=True)
    links = t.List(t.Int()).tag(sync=True)
    anchor_link = t.Int(-1).tag(sync=True)
    title = t.Unicode("").tag(sync=True)
    animate_ms = t.Int(450).tag(sync=True)
    width = t.Int(640).tag(sync=True)
    height = t.Int(480).tag(sync=True)
    xlabel = t.Unicode("").tag(sync=True)
    ylabel = t.Unicode("").tag(sync=True)
    aspect = t.Unicode("equal").tag(sync=True)
    selected = t.Int(-1).tag(sync=True)
    selection = t.List(t.Int()).tag(sync=True)
    mode = t.Unicode("lasso").tag(sync=True)
    draw_ms = t.Float(0.0).tag(sync=True)


def to_hex(rgba: np.ndarray) -> list[str]:
    """(N, 3 or 4) floats in [0, 1] -> N ``"#rrggbb"`` strings."""
    rgb = np.clip(np.round(np.asarray(rgba, dtype=np.float64)[:, :3] * 255), 0, 255).astype(np.int64)
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    return [f"#{v:06x}" for v in packed.tolist()]


def face_uri(image: Image.Image | np.ndarray, size: int = 64, quality: int = 85) -> str:
    """A face as a ``data:image/jpeg;base64`` URI, its longer side resized to ``size`` pixels."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    img = img.convert("RGB")
    scale = size / max(img.size)
    if scale < 1:
        img = img.resize(
            (max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BILINEAR
        )
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def face_uris(images: Iterable[Image.Image | np.ndarray], size: int = 64) -> list[str]:
    """:func:`face_uri` of each image."""
    return [face_uri(im, size) for im in images]
