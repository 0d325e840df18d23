"""Pick a face, a class, the methods and a CAM method (Grad-CAM, HiResCAM, ...), and see each method's map of that
face side by side."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..explore.gradcam import CAM_METHODS, CamModel, CamResult, FaceBatch, check_cam_method, compute_cams, resolve_class
from ..viz.gradcam import cam_titles, plot_gradcam_grid
from ._common import show

__all__ = ["GradCamExplorerState", "gradcam_explorer"]

PREDICTED = "predicted"


@dataclass
class GradCamExplorerState:
    """The explorer's selection, its map cache and its latest figure; the widget callbacks call these methods.

    Attributes:
        models: the runs explored, by method name.
        faces: per method, the candidate samples through that run's own transform (same dataset indices).
        sample: the shown dataset index (one of ``faces[m].indices``).
        cls: ``"predicted"`` or a class name.
        methods: the methods shown, in order.
        layers: per method, the target layers to use (indices into ``cam_target_layers()``; missing: all).
        cam_method: the CAM method (a key of :data:`fernb.explore.gradcam.CAM_METHODS`).
        score_channels: ScoreCAM's channel limit (None: every channel).
        cache: ``(method, sample, class index, cam method) -> CamResult`` of one image; a map is computed once.
        predicted: ``(method, sample) -> class index`` of the prediction, once known.
        passes: Grad-CAM passes (forward + backward) the last update needed (0 when every map was cached).
        figure: the latest figure; seconds: how long the last update took.
        on_change: called after every update (the widget redraws from it).
    """

    models: dict[str, CamModel]
    faces: dict[str, FaceBatch]
    sample: int
    cls: str = PREDICTED
    methods: list[str] = field(default_factory=list)
    layers: dict[str, Any] = field(default_factory=dict)
    alpha: float = 0.45
    cam_method: str = "gradcam"
    score_channels: int | None = None
    cache: dict[tuple[str, int, int, str], CamResult] = field(default_factory=dict)
    predicted: dict[tuple[str, int], int] = field(default_factory=dict)
    passes: int = 0
    figure: Figure | None = None
    seconds: float = 0.0
    on_change: Callable[[GradCamExplorerState], Any] | None = None

    @property
    def class_names(self) -> list[str]:
        return list(next(iter(self.models.values())).class_names)

    @property
    def samples(self) -> list[int]:
        """The candidate dataset indices."""
        return [int(i) for i in next(iter(self.faces.values())).indices]

    def _row(self, method: str, sample: int) -> int:
        hits = np.flatnonzero(self.faces[method].indices == sample)
        if not len(hits):
            raise ValueError(f"sample {sample} is not one of the explorer's faces {self.samples}")
        return int(hits[0])

    def add(self, method: str, faces: FaceBatch, result: CamResult) -> None:
        """Put maps computed elsewhere (e.g. a notebook's grid over the same faces) into the cache."""
        for row, idx in enumerate(faces.indices):
            one = result.select([row])
            c = int(one.targets[0])
            self.cache[method, int(idx), c, one.cam_method] = one
            self.predicted[method, int(idx)] = int(one.predicted[0])

    def cam(self, method: str, sample: int, cls: str | int | None) -> CamResult:
        """One image's map for ``method`` and class (``"predicted"``, a name or an index), cached."""
        c = resolve_class(cls, self.models[method].class_names)
        if c is None and (method, sample) in self.predicted:
            c = self.predicted[method, sample]
        if c is not None and (method, sample, c, self.cam_method) in self.cache:
            return self.cache[method, sample, c, self.cam_method]
        row = self._row(method, sample)
        res = compute_cams(
            self.models[method].model,
            self.faces[method].images[row : row + 1],
            c,
            layers=self.layers.get(method),
            cam_method=self.cam_method,
            score_channels=self.score_channels,
        )
        self.passes += 1
        self.add(method, self.faces[method].select([row]), res)
        return res

    def render(self) -> Figure | None:
        """Re-plot the shown sample for every selected method into ``figure``."""
        t0 = time.perf_counter()
        self.passes = 0
        methods = [m for m in self.methods if m in self.models]
        faces, maps, titles, notes = {}, {}, {}, {}
        for m in methods:
            res = self.cam(m, self.sample, self.cls)
            faces[m] = self.faces[m].faces[self._row(m, self.sample)][None]
            maps[m] = res.maps
            titles[m] = cam_titles(res, self.models[m].class_names, m)
            notes[m] = [None if r == "ok" else r for r in res.reasons]
        if methods:
            fb = self.faces[methods[0]]
            label = fb.class_names[int(fb.labels[self._row(methods[0], self.sample)])]
            what = f"the {PREDICTED} class" if self.cls == PREDICTED else f"'{self.cls}'"
            self.figure = plot_gradcam_grid(
                faces,
                maps,
                titles,
                notes,
                row_labels=[f"#{self.sample} {label}"],
                alpha=self.alpha,
                cell=2.0,
                title=f"{CAM_METHODS[self.cam_method]} for {what}",
            )
        else:
            self.figure = None
        self.seconds = time.perf_counter() - t0
        if self.on_change is not None:
            self.on_change(self)
        return self.figure

    def set_sample(self, sample: int) -> Figure | None:
        """Show dataset index ``sample`` (one of :attr:`samples`)."""
        self._row(next(iter(self.faces)), int(sample))
        self.sample = int(sample)
        return self.render()

    def set_class(self, cls: str) -> Figure | None:
        """Explain ``"predicted"`` or the class named ``cls``."""
        self.cls = PREDICTED if resolve_class(cls, self.class_names) is None else str(cls)  # raises if unknown
        return self.render()

    def set_cam_method(self, cam_method: str) -> Figure | None:
        """Explain with another CAM method (``"gradcam"``, ``"hirescam"``, ``"scorecam"``, ...)."""
        self.cam_method = check_cam_method(cam_method)
        return self.render()

    def set_method(self, methods: str | Sequence[str]) -> Figure | None:
        """Show one method or several (in the given order)."""
        names = [methods] if isinstance(methods, str) else list(methods)
        unknown = [m for m in names if m not in self.models]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {list(self.models)}")
        self.methods = names
        return self.render()


def gradcam_explorer(
    models: Mapping[str, CamModel],
    indices: Sequence[int] | np.ndarray,
    *,
    cls: str = PREDICTED,
    methods: Sequence[str] | None = None,
    layers: Mapping[str, Any] | None = None,
    precomputed: Mapping[str, Sequence[tuple[FaceBatch, CamResult]]] | None = None,
    alpha: float = 0.45,
    cam_method: str = "gradcam",
    cam_methods: Sequence[str] | None = None,
    score_channels: int | None = None,
) -> tuple[Any, GradCamExplorerState]:
    """An explorer of CAM maps: sample, class and CAM-method dropdowns, a method list, the figure.

    Args:
        models: loaded runs (:func:`fernb.explore.gradcam.load_cam_model`) by method name; one label space.
        indices: the candidate samples (dataset indices of the runs' evaluation split).
        cls: the first class shown (``"predicted"`` or a class name).
        methods: the methods shown first (default all).
        layers: per method, target layers to use (default all, averaged).
        precomputed: per method, ``(faces, cams)`` pairs already computed on these samples (cached, not recomputed;
            each result's ``cam_method`` says which method made it).
        cam_method: the CAM method shown first.
        cam_methods: the CAM methods offered (default every one of :data:`fernb.explore.gradcam.CAM_METHODS`).
        score_channels: ScoreCAM's channel limit (None: every channel; a small number keeps it interactive).

    Returns:
        ``(widget, state)``: display the widget; ``state`` holds the selection, the cache and ``state.figure``.
    """
    import ipywidgets as w

    if not models:
        raise ValueError("no model to explore")
    spaces = {tuple(m.class_names) for m in models.values()}
    if len(spaces) > 1:
        raise ValueError(f"the runs predict different classes: {sorted(spaces)}")
    idx = np.asarray(indices, dtype=np.int64)
    faces = {name: m.faces(idx) for name, m in models.items()}
    state = GradCamExplorerState(
        models=dict(models),
        faces=faces,
        sample=int(idx[0]),
        methods=list(methods or models),
        layers=dict(layers or {}),
        alpha=alpha,
        cam_method=check_cam_method(cam_method),
        score_channels=score_channels,
    )
    for name, pairs in (precomputed or {}).items():
        for f, r in pairs:
            if name in state.models:
                state.add(name, f, r)
    state.cls = PREDICTED if resolve_class(cls, state.class_names) is None else cls

    first = faces[next(iter(faces))]
    sample = w.Dropdown(
        options=[
            (f"#{int(i)} ({first.class_names[int(y)]})", int(i))
            for i, y in zip(first.indices, first.labels, strict=True)
        ],
        value=state.sample,
        description="sample",
        layout=w.Layout(width="230px"),
    )
    klass = w.Dropdown(
        options=[PREDICTED, *state.class_names], value=state.cls, description="class", layout=w.Layout(width="230px")
    )
    meth = w.SelectMultiple(
        options=list(models),
        value=tuple(state.methods),
        description="methods",
        rows=min(7, len(models)),
        layout=w.Layout(width="230px"),
    )
    offered = [check_cam_method(c) for c in (cam_methods or CAM_METHODS)]
    if state.cam_method not in offered:
        offered.insert(0, state.cam_method)
    cam = w.Dropdown(
        options=[(CAM_METHODS[c], c) for c in offered],
        value=state.cam_method,
        description="CAM",
        layout=w.Layout(width="230px"),
    )
    info = w.HTML()
    out = w.Output()

    def redraw(s: GradCamExplorerState) -> None:
        info.value = (
            f"sample #{s.sample}, class {s.cls}, {CAM_METHODS[s.cam_method]}: {len(s.methods)} method(s), "
            f"{s.passes} new pass(es), {s.seconds:.2f} s"
        )
        show(out, s.figure if s.figure is not None else "select at least one method")

    state.on_change = redraw
    sample.observe(lambda ch: state.set_sample(ch["new"]), names="value")
    klass.observe(lambda ch: state.set_class(ch["new"]), names="value")
    meth.observe(lambda ch: state.set_method(list(ch["new"])), names="value")
    cam.observe(lambda ch: state.set_cam_method(ch["new"]), names="value")
    state.render()
    widget = w.VBox([w.HBox([sample, klass, cam, meth]), info, out])
    return widget, state
