"""What :func:`~fernb.engine.faces.predict_faces` gives back: one :class:`FacePrediction` per face (or per frame
without a face, or unreadable), :class:`FacePredictions` for a whole call, and their tables (CSV, JSON, JSONL)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...data.faces import FaceBox, Landmarks

__all__ = [
    "ARBEX_EXTRAS",
    "ARBEX_CONFIDENCES",
    "POINT_NAMES",
    "FacePrediction",
    "FacePredictions",
    "write_table",
]

# ARBEx's per-face outputs kept in a prediction, by our name (fernb.explore.reliability.DISTRIBUTIONS' names).
ARBEX_EXTRAS: dict[str, str] = {
    "primary": "primary_dist",
    "anchor": "anchor_dist",
    "attention": "attention_dist",
    "correction": "correction",
    "corrected": "mixed_dist",
}
# ARBEx's per-branch confidences, kept as ``c_<branch>``
ARBEX_CONFIDENCES: dict[str, str] = {
    "primary": "confidence_primary",
    "anchor": "confidence_anchor",
    "attention": "confidence_attention",
}
# The landmarks written per face
POINT_NAMES = ("left_eye", "right_eye", "nose", "mouth")


@dataclass
class FacePrediction:
    """One face of one frame, or a frame without a face (``status="no face"``) or that could not be read (``"error"``).

    Attributes:
        source, frame, time_s: where it comes from (see :class:`Frame`).
        face: index of the face in its frame (largest first), -1 on a row without a face.
        status: ``"ok"``, ``"no face"`` or ``"error"``.
        box: the detected box in frame pixels; landmarks: eyes, nose and mouth in frame pixels.
        detected: False when the box was carried over from an earlier frame (``detect_every > 1``).
        probs: (C,) the model's probabilities (ARBEx: its prediction distribution).
        class_names: the C classes.
        extras: ARBEx's ``{"primary": (C,), "anchor", "attention", "correction", "corrected"}`` distributions and
            ``{"c_primary", "c_anchor", "c_attention"}`` confidences (floats); empty for other models.
        crop: (S, S, 3) uint8 aligned face as the model saw it before normalisation (kept on request).
        error: why the frame could not be read.
    """

    source: str
    frame: int = 0
    face: int = -1
    status: str = "ok"
    box: FaceBox | None = None
    landmarks: Landmarks | None = None
    detected: bool = True
    probs: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    crop: np.ndarray | None = None
    error: str | None = None
    time_s: float | None = None

    @property
    def label(self) -> str | None:
        """The predicted class, or None on a row without a face."""
        return None if self.probs is None else self.class_names[int(np.argmax(self.probs))]

    @property
    def confidence(self) -> float | None:
        """The probability of the predicted class."""
        return None if self.probs is None else float(np.max(self.probs))

    def record(self) -> dict[str, Any]:
        """A nested JSON-able dict: ``source, frame, time_s, face, status, box{x,y,w,h,angle,score}, points{name:
        [x, y]}, probs{class: p}, label, confidence`` and, for ARBEx, ``arbex{primary{...}, ..., confidences{...}}``."""
        rec: dict[str, Any] = {
            "source": self.source,
            "frame": self.frame,
            "time_s": self.time_s,
            "face": self.face,
            "status": self.status,
        }
        if self.error:
            rec["error"] = self.error
        if self.box is not None:
            b = self.box
            rec["box"] = {"x": b.x, "y": b.y, "w": b.w, "h": b.h, "angle": b.angle, "score": b.score}
            rec["detected"] = self.detected
        if self.landmarks is not None:
            rec["points"] = {n: list(getattr(self.landmarks, n)) for n in POINT_NAMES}
        if self.probs is not None:
            rec["probs"] = dict(zip(self.class_names, map(float, self.probs), strict=True))
            rec["label"], rec["confidence"] = self.label, self.confidence
        if self.extras:
            arbex: dict[str, Any] = {
                k: dict(zip(self.class_names, map(float, v), strict=True))
                for k, v in self.extras.items()
                if k in ARBEX_EXTRAS
            }
            arbex["labels"] = {k: self.class_names[int(np.argmax(v))] for k, v in self.extras.items() if k in arbex}
            arbex["confidences"] = {
                k: float(self.extras[f"c_{k}"]) for k in ARBEX_CONFIDENCES if f"c_{k}" in self.extras
            }
            rec["arbex"] = arbex
        return rec

    def flat(self) -> dict[str, Any]:
        """One CSV row: ``source, frame, time_s, face, status, detected, x, y, w, h, angle, score, <point>_x/_y,
        label, confidence, p_<class>`` and, for ARBEx, ``<dist>_<class>``, ``label_<dist>``, ``c_<branch>``;
        ``error``."""
        row: dict[str, Any] = {
            "source": self.source,
            "frame": self.frame,
            "time_s": self.time_s,
            "face": self.face,
            "status": self.status,
            "detected": self.detected if self.box is not None else None,
        }
        b = self.box
        for k in ("x", "y", "w", "h", "angle", "score"):
            row[k] = None if b is None else float(getattr(b, k))
        for n in POINT_NAMES:
            pt = None if self.landmarks is None else getattr(self.landmarks, n)
            row[f"{n}_x"], row[f"{n}_y"] = (None, None) if pt is None else (float(pt[0]), float(pt[1]))
        row["label"], row["confidence"] = self.label, self.confidence
        for i, c in enumerate(self.class_names):
            row[f"p_{c}"] = None if self.probs is None else float(self.probs[i])
        for k in ARBEX_EXTRAS:
            if k in self.extras:
                row[f"label_{k}"] = self.class_names[int(np.argmax(self.extras[k]))]
                for i, c in enumerate(self.class_names):
                    row[f"{k}_{c}"] = float(self.extras[k][i])
        for k in ARBEX_CONFIDENCES:
            if f"c_{k}" in self.extras:
                row[f"c_{k}"] = float(self.extras[f"c_{k}"])
        row["error"] = self.error
        return row


@dataclass
class FacePredictions:
    """Every row of a :func:`predict_faces` call, with the time spent per stage.

    Attributes:
        rows: one :class:`FacePrediction` per face, or per frame without a face or in error.
        class_names: the classes.
        timings: seconds spent in ``decode``, ``detect``, ``align`` and ``model``, and ``frames`` counted.
        outputs: files written (the table, annotated images or videos).
    """

    rows: list[FacePrediction]
    class_names: list[str]
    timings: dict[str, float] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[FacePrediction]:
        return iter(self.rows)

    def __getitem__(self, i: int) -> FacePrediction:
        return self.rows[i]

    @property
    def faces(self) -> list[FacePrediction]:
        """The rows with a face (``status == "ok"``)."""
        return [r for r in self.rows if r.status == "ok"]

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame (the CSV's columns)."""
        return pd.DataFrame([r.flat() for r in self.rows])

    def records(self) -> list[dict[str, Any]]:
        """The rows as nested dicts (the JSON's)."""
        return [r.record() for r in self.rows]


def write_table(path: Path, rows: Sequence[FacePrediction]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        flat = [r.flat() for r in rows]
        columns: list[str] = []
        for row in flat:
            columns.extend(k for k in row if k not in columns)
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=columns)
            w.writeheader()
            w.writerows({k: "" if v is None else v for k, v in row.items()} for row in flat)
    elif suffix == ".jsonl":
        with open(path, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r.record()) + "\n")
    elif suffix == ".json":
        path.write_text(json.dumps([r.record() for r in rows], indent=1) + "\n", encoding="utf-8")
    else:
        raise ValueError(f"{path}: output table must end in .csv, .json or .jsonl")
