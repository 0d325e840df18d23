"""Upload your own photographs and see every face the run finds in them: the annotated photograph, each aligned face
with its probabilities (and, for ARBEx, the reliability breakdown of the first face)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError

from ..engine.faces import FacePrediction, FacePredictor, predict_faces
from ..viz.faces import plot_annotated, plot_face_predictions
from ._common import show

__all__ = ["FaceUploadState", "face_upload"]


@dataclass
class FaceUploadState:
    """The uploaded photographs, their predictions and the figures shown; the upload callback calls :meth:`add`.

    Attributes:
        predictor: the :class:`~fernb.engine.faces.FacePredictor` (a run's model, crop and detector).
        images: ``(name, (H, W, 3) uint8 RGB)`` of every readable upload so far.
        rows: their predictions (one row per face, or a ``"no face"`` row).
        errors: ``{name: why}`` for uploads that are not images.
        annotated, faces: the figures (photographs with boxes; aligned faces with probabilities), or None.
        seconds: how long the last upload took.
        on_change: called after every update (the widget redraws from it).
    """

    predictor: FacePredictor
    images: list[tuple[str, np.ndarray]] = field(default_factory=list)
    rows: list[FacePrediction] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    annotated: Figure | None = None
    faces: Figure | None = None
    seconds: float = 0.0
    on_change: Callable[[FaceUploadState], Any] | None = None

    def add(self, name: str, data: bytes) -> list[FacePrediction]:
        """Decode one uploaded file, predict its faces and re-plot; returns its rows (none for a non-image)."""
        t0 = time.perf_counter()
        try:
            with Image.open(io.BytesIO(data)) as im:
                rgb = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            self.errors[name] = f"{name}: not an image ({type(exc).__name__})"
            new: list[FacePrediction] = []
        else:
            self.images.append((name, rgb))
            new = predict_faces((name, rgb), self.predictor, keep_crops=True, progress=False).rows
            self.rows.extend(new)
        self.render()
        self.seconds = time.perf_counter() - t0
        return new

    def render(self) -> None:
        self.annotated = plot_annotated(self.images, self.rows) if self.images else None
        self.faces = plot_face_predictions(self.rows) if any(r.status == "ok" for r in self.rows) else None
        if self.on_change is not None:
            self.on_change(self)


def face_upload(predictor: FacePredictor) -> tuple[Any, FaceUploadState]:
    """A file-upload button (JPEG / PNG, several at once) and two figure areas; returns ``(widget, state)``.

    ``state.add(name, bytes)`` does what an upload does, from code (tests, a headless run).
    """
    import ipywidgets as w

    upload = w.FileUpload(accept="image/*", multiple=True, description="photographs")
    status = w.Output()
    annotated, faces = w.Output(), w.Output()
    state = FaceUploadState(predictor)

    def redraw(s: FaceUploadState) -> None:
        ok = sum(r.status == "ok" for r in s.rows)
        text = f"{len(s.images)} photograph(s), {ok} face(s)" + "".join(f"\n{e}" for e in s.errors.values())
        show(status, text)
        show(annotated, s.annotated)
        show(faces, s.faces)

    state.on_change = redraw

    def on_upload(change: dict[str, Any]) -> None:
        for item in change["new"]:
            state.add(str(item["name"]), bytes(item["content"]))

    upload.observe(on_upload, names="value")
    return w.VBox([upload, status, annotated, faces]), state
