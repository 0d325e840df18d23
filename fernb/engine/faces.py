"""Predict expressions on your own photographs, folders, videos and cameras: every face found, aligned as the run's
training data was, classified in batches.

Pipeline per frame::

    decode     an image file (PIL), a video frame or a camera frame (``cv2.VideoCapture``), as (H, W, 3) uint8 RGB
    detect     every face with its landmarks (the detector named by the run's ``data.align``, else ``"auto"``)
    align      each face on its own: the similarity transform taking its eyes onto the alignment template, warped
               to the run's input size (``data.img_size``); gray for runs trained on gray datasets (FER2013, FER+,
               CK+, JAFFE), whose models never saw colour
    model      the run's evaluation transform (``fernb.engine.data.run_transform``: its channels, normalisation
               and channel order) and the model in eval mode, crops of several frames in one batch

A model only recognises what looks like its training input: a crop of another size, framing or colour is a shift
of distribution that costs accuracy silently, so the crops are made exactly as the run's own split was.

One :class:`FacePrediction` per face, or one row with ``status="no face"`` (nothing detected) or ``"error"`` (an
unreadable file) per frame, so a folder with a bad file still finishes. ARBEx runs add their primary, anchor,
attention, correction and corrected distributions and the three confidences (:mod:`fernb.models.arbex`).

Example::

    from fernb.engine.faces import predict_faces
    result = predict_faces("photos/", "runs/arbex-synthetic-s0", out="faces.csv", annotate="annotated/")
    result.frame()          # one row per face: box, landmarks, probabilities, label

Command line: ``python -m fernb predict photos/ clip.mp4 --run runs/arbex-synthetic-s0 --out faces.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from PIL import Image

from ..data.base import read_image
from ..data.errors import CorruptImageError
from ..data.faces import IMAGE_SUFFIXES, FaceBox, FaceTemplate, Landmarks, detect_landmarks
from ..data.faces.align import alignment_matrix
from ..data.faces.detectors import Detection, create_detector, detector_name
from ..data.faces.types import TEMPLATES
from ..data.transforms import build_transforms
from ..labels import LABEL_SPACES, get_label_space
from ..models import FERModel, create_model
from .config import TrainConfig
from .data import run_transform
from .distributed import resolve_device
from .factory import load_run
from .predict import autocast_context
from .rundir import RunDir, read_json

__all__ = [
    "VIDEO_SUFFIXES",
    "GRAY_DATASETS",
    "ARBEX_EXTRAS",
    "Frame",
    "FacePrediction",
    "FacePredictions",
    "FacePredictor",
    "iter_frames",
    "side_by_side",
    "annotate_frame",
    "predict_faces",
    "predict_main",
]

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
# Datasets of gray faces: a model trained on them saw R = G = B, so colour crops are made gray first.
GRAY_DATASETS: frozenset[str] = frozenset({"fer2013", "ferplus", "ckplus", "jaffe"})
# ARBEx's per-face outputs kept in a prediction, by our name (fernb.explore.reliability.DISTRIBUTIONS' names).
ARBEX_EXTRAS: dict[str, str] = {
    "primary": "primary_dist",
    "anchor": "anchor_dist",
    "attention": "attention_dist",
    "correction": "correction",
    "corrected": "mixed_dist",
}
_CONFIDENCES: dict[str, str] = {
    "primary": "confidence_primary",
    "anchor": "confidence_anchor",
    "attention": "confidence_attention",
}
_POINTS = ("left_eye", "right_eye", "nose", "mouth")
_BORDERS = {"constant": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE, "reflect": cv2.BORDER_REFLECT_101}

Detector = Callable[[np.ndarray], list[Detection]]


# ---------------------------------------------------------------------------------------------------- inputs


@dataclass
class Frame:
    """One decoded frame of a source.

    Attributes:
        source: the file (or ``"camera:0"``, or the name given to an array).
        frame: frame index in a video (0 for a still image).
        image: (H, W, 3) uint8 RGB, or None when it could not be read.
        error: why it could not be read.
        time_s: position in a video (seconds), None for stills.
        decode_s: seconds spent decoding it.
    """

    source: str
    frame: int = 0
    image: np.ndarray | None = None
    error: str | None = None
    time_s: float | None = None
    decode_s: float = 0.0


def _rgb(image: Any) -> np.ndarray:
    """A PIL image or array (gray, RGB, RGBA; uint8) as (H, W, 3) uint8 RGB."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return np.ascontiguousarray(arr[:, :, :3])
    raise ValueError(f"expected an image (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")


def _is_camera(source: Any) -> bool:
    return isinstance(source, (int, np.integer)) or (isinstance(source, str) and source.isdigit())


def _video_frames(path: str | int, every: int, name: str) -> Iterator[Frame]:
    cap = cv2.VideoCapture(int(path) if _is_camera(path) else str(path))
    if not cap.isOpened():
        what = "camera" if _is_camera(path) else "video"
        yield Frame(name, error=f"cannot open {what} {path!r} (not a video OpenCV can decode, or no such device)")
        return
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    index, produced = 0, 0
    try:
        while True:
            t0 = time.perf_counter()
            if index % every:
                if not cap.grab():
                    break
                index += 1
                continue
            ok, bgr = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            yield Frame(name, index, rgb, time_s=index / fps if fps > 0 else None, decode_s=time.perf_counter() - t0)
            produced += 1
            index += 1
    finally:
        cap.release()
    if produced == 0:
        yield Frame(name, error=f"{path}: no frame could be decoded (empty or corrupt video)")


def _still(path: Path, name: str) -> Frame:
    t0 = time.perf_counter()
    try:
        img = np.asarray(read_image(path, "RGB"))
    except CorruptImageError as exc:
        return Frame(name, error=str(exc).splitlines()[0])
    return Frame(name, 0, img, decode_s=time.perf_counter() - t0)


def _files(folder: Path, recursive: bool) -> list[Path]:
    ok = {s.lower() for s in (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES)}
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in ok)


def iter_frames(source: Any, *, every: int = 1, recursive: bool = False) -> Iterator[Frame]:
    """The frames of a source, in order.

    Args:
        source: an image file, a video file (by suffix, :data:`VIDEO_SUFFIXES`), a folder (its images and videos,
            sorted), a camera index (``0`` or ``"0"``), an array or PIL image, a ``(name, image)`` pair (as
            :func:`fernb.data.faces.example_images` gives them) or a list of any of these.
        every: keep every ``every``-th frame of a video or camera (stills are always kept).
        recursive: search sub-folders of a folder too.

    Raises:
        FileNotFoundError: a path that does not exist (files inside a folder that cannot be read give an error
            frame instead).
    """
    if every < 1:
        raise ValueError(f"every={every}; expected a frame stride >= 1")
    if isinstance(source, (list, tuple)) and not (
        len(source) == 2 and isinstance(source[0], str) and isinstance(source[1], (np.ndarray, Image.Image))
    ):
        for item in source:
            yield from iter_frames(item, every=every, recursive=recursive)
        return
    if isinstance(source, tuple):  # (name, image)
        yield Frame(source[0], 0, _rgb(source[1]))
        return
    if isinstance(source, (np.ndarray, Image.Image)):
        yield Frame("image", 0, _rgb(source))
        return
    if _is_camera(source):
        yield from _video_frames(source, every, f"camera:{int(source)}")
        return
    path = Path(source).expanduser()
    if path.is_dir():
        files = _files(path, recursive)
        if not files:
            raise FileNotFoundError(
                f"{path}: no image or video in this folder (suffixes {sorted(IMAGE_SUFFIXES + VIDEO_SUFFIXES)})"
                f"{'' if recursive else '; pass recursive=True (--recursive) to search sub-folders'}"
            )
        for f in files:
            yield from iter_frames(f, every=every)
        return
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder (expected an image, a video, a folder or a camera)")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        yield from _video_frames(str(path), every, str(path))
    else:
        yield _still(path, str(path))


def side_by_side(images: Sequence[np.ndarray], height: int = 400, gap: int = 0) -> np.ndarray:
    """Photographs scaled to one ``height`` and pasted left to right into one (height, W, 3) uint8 RGB image (a
    test picture with several faces)."""
    parts = []
    for img in images:
        rgb = _rgb(img)
        w = max(1, round(rgb.shape[1] * height / rgb.shape[0]))
        parts.append(cv2.resize(rgb, (w, height), interpolation=cv2.INTER_AREA))
        if gap:
            parts.append(np.zeros((height, gap, 3), np.uint8))
    return np.ascontiguousarray(np.concatenate(parts[: len(parts) - (1 if gap else 0)], axis=1))


def _count_frames(source: Any, every: int) -> int | None:
    """How many frames :func:`iter_frames` will give, when cheap to know (None for cameras)."""
    if isinstance(source, (list, tuple)) and not (len(source) == 2 and isinstance(source[0], str)):
        counts = [_count_frames(s, every) for s in source]
        return None if any(c is None for c in counts) else sum(c for c in counts if c is not None)
    if isinstance(source, (tuple, np.ndarray, Image.Image)):
        return 1
    if _is_camera(source):
        return None
    path = Path(source).expanduser()
    if path.is_dir():
        return _count_frames(_files(path, False), every)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        cap = cv2.VideoCapture(str(path))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        cap.release()
        return max(1, math.ceil(n / every)) if n > 0 else None
    return 1


# ---------------------------------------------------------------------------------------------------- detection


def _resolve_detector(detector: str | Detector | None) -> tuple[Detector, str]:
    """A detector by name (:func:`fernb.data.faces.create_detector`: ``"auto"``, ``"haar"``, ``"mtcnn"``,
    ``"mediapipe"``) or a callable, and its name."""
    det = create_detector(detector or "auto") if detector is None or isinstance(detector, str) else detector
    return det, detector_name(det)


def _template(template: str | FaceTemplate | None) -> FaceTemplate:
    if isinstance(template, FaceTemplate):
        return template
    name = template or "fer"
    if name not in TEMPLATES:
        raise KeyError(f"template: unknown {name!r}; expected one of {sorted(TEMPLATES)} or a FaceTemplate")
    return TEMPLATES[name]


# ---------------------------------------------------------------------------------------------------- predictions


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
            rec["points"] = {n: list(getattr(self.landmarks, n)) for n in _POINTS}
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
            arbex["confidences"] = {k: float(self.extras[f"c_{k}"]) for k in _CONFIDENCES if f"c_{k}" in self.extras}
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
        for n in _POINTS:
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
        for k in _CONFIDENCES:
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


# ---------------------------------------------------------------------------------------------------- the predictor


def _run_align(rd: RunDir) -> dict[str, Any]:
    """The run's ``data.align`` as ``{"detector": ..., "template": ..., "use_mouth": ..., "border": ...}``: the
    resolved spec of its run record, else its config's; empty when the run trained on unaligned data."""
    raw = (rd.read_record().get("data") or {}).get("align") if rd.record_path.exists() else None
    if raw is None:
        raw = (read_json(rd.config_path).get("data") or {}).get("align")
    spec = {"detector": raw} if isinstance(raw, str) else dict(raw) if isinstance(raw, dict) else {}
    if spec.get("template") == "auto":  # unresolved (a config without its record): fernb's default template
        spec.pop("template")
    return spec


def _dataset_of(rd: RunDir, cfg: TrainConfig) -> str:
    """The dataset the run really read (a smoke run may have fallen back to the synthetic data)."""
    if rd.record_path.exists():
        source = (rd.read_record().get("data") or {}).get("source")
        if source:
            return str(source)
    return cfg.data.dataset


@dataclass
class _Pending:
    """A frame waiting for the model: its detections, landmarks and aligned crops."""

    frame: Frame
    detections: list[Detection] = field(default_factory=list)
    landmarks: list[Landmarks] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    fresh: bool = True


class FacePredictor:
    """A model with the crop, transform and detector its run was trained for; see :func:`predict_faces`.

    Build it with :meth:`from_run` (a run folder) or :meth:`from_checkpoint` (a registered model and a weight file).

    Args:
        model: the model (eval mode is set).
        class_names: its classes in output order.
        img_size: side of the aligned crops.
        transform: PIL image -> (C, S, S) tensor, the run's evaluation transform.
        gray: make crops gray first (models trained on gray datasets).
        template: alignment template (name or :class:`FaceTemplate`).
        use_mouth: fit the detected mouth too (as the run's ``data.align`` did).
        border: fill outside the frame: ``"constant"`` (black), ``"replicate"`` or ``"reflect"``.
        detector: ``"auto"``, ``"haar"`` or a callable ``(H, W, 3) uint8 RGB -> [(FaceBox, Landmarks | None)]``.
        device: ``"cpu"``, ``"cuda"``, ``"auto"``.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast).
        batch_size: crops per forward pass.
        name: what the model is (for tables and titles).
    """

    def __init__(
        self,
        model: FERModel,
        class_names: Sequence[str],
        img_size: int,
        transform: Callable[[Any], torch.Tensor],
        *,
        gray: bool = False,
        template: str | FaceTemplate | None = None,
        use_mouth: bool = False,
        border: str = "constant",
        detector: str | Detector | None = None,
        device: str = "cpu",
        precision: str = "fp32",
        batch_size: int = 32,
        name: str = "model",
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.class_names = list(class_names)
        self.img_size = int(img_size)
        self.transform = transform
        self.gray = bool(gray)
        self.template = _template(template)
        self.use_mouth = bool(use_mouth)
        if border not in _BORDERS:
            raise ValueError(f"border={border!r}; expected one of {sorted(_BORDERS)}")
        self.border = border
        self.detect, self.detector_name = _resolve_detector(detector)
        self.precision = precision
        self.batch_size = int(batch_size)
        self.name = name
        self.timings: dict[str, float] = {"decode": 0.0, "detect": 0.0, "align": 0.0, "model": 0.0, "frames": 0}

    def __repr__(self) -> str:
        return (
            f"FacePredictor({self.name!r}, {len(self.class_names)} classes, {self.img_size} px"
            f"{' gray' if self.gray else ''}, template={self.template.name!r}, detector={self.detector_name!r})"
        )

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        checkpoint: str | int = "best",
        *,
        detector: str | Detector | None = None,
        template: str | FaceTemplate | None = None,
        **kwargs: Any,
    ) -> FacePredictor:
        """A run folder's model and checkpoint, with its input size, evaluation transform and (from its
        ``data.align``, else ``"auto"`` and ``"fer"``) detector and template; ``detector``/``template`` override."""
        rd = RunDir(run_dir)
        cfg, model, meta = load_run(rd.path, checkpoint, device="cpu")
        align = _run_align(rd)
        transform = (
            run_transform(cfg, False)
            if cfg.data.transform != "keep"
            else build_transforms("default", False, cfg.data.img_size)
        )
        return cls(
            model,
            meta["class_names"],
            cfg.data.img_size,
            transform,
            gray=_dataset_of(rd, cfg) in GRAY_DATASETS,
            template=template or align.get("template"),
            use_mouth=bool(align.get("use_mouth", False)),
            border=str(align.get("border") or "constant"),
            detector=detector or align.get("detector"),
            name=f"{rd.path.name} ({checkpoint})",
            **kwargs,
        )

    @classmethod
    def from_checkpoint(
        cls,
        model: str,
        checkpoint: str | Path,
        *,
        preset: str = "official",
        classes: str | Sequence[str] | None = None,
        gray: bool = False,
        detector: str | Detector | None = None,
        template: str | FaceTemplate | None = None,
        **kwargs: Any,
    ) -> FacePredictor:
        """A registered model (``"poster_v2"``, ``"arbex"``, ...) with a weight file (fernb's or the official naming,
        :func:`fernb.models.create_model`); the input size, normalisation and channel order come from the preset's
        pretrained cfg. ``classes``: a label space name or the class names (default by count: 7 ``basic7``,
        8 ``ferplus8``)."""
        net = create_model(model, preset, checkpoint=checkpoint)
        pcfg = net.pretrained_cfg
        n = int(pcfg.num_classes)
        if classes is None:
            spaces = [s for s in ("basic7", "ferplus8") if len(LABEL_SPACES[s].names) == n]
            if not spaces:
                raise ValueError(f"{model}: {n} classes; pass classes= (a label space name or the class names)")
            classes = spaces[0]
        names = list(get_label_space(classes).names)
        if len(names) != n:
            raise ValueError(f"classes {names} ({len(names)}) do not match the model's {n} outputs")
        transform = build_transforms(
            "default", False, pcfg.img_size, mean=pcfg.mean, std=pcfg.std, bgr=pcfg.channel_order == "BGR"
        )
        return cls(
            net,
            names,
            pcfg.img_size,
            transform,
            gray=gray,
            template=template,
            detector=detector,
            name=f"{model}.{preset} ({Path(checkpoint).name})",
            **kwargs,
        )

    # -- the stages --------------------------------------------------------------------------------------------------
    def landmarks(self, image: np.ndarray, detections: Sequence[Detection]) -> list[Landmarks]:
        """Each detection's landmarks: the detector's, else the Haar eye search in its box."""
        return [
            d.landmarks if d.landmarks is not None else detect_landmarks(image, d.box, find_mouth=False)
            for d in detections
        ]

    def align(self, image: np.ndarray, landmarks: Sequence[Landmarks]) -> list[np.ndarray]:
        """One (S, S, 3) uint8 crop per face, each aligned on its own landmarks (gray for gray runs)."""
        crops = []
        s = self.img_size
        for lm in landmarks:
            m = alignment_matrix(lm, s, self.template, use_mouth=self.use_mouth)
            crop = cv2.warpAffine(image, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=_BORDERS[self.border])
            if self.gray:
                crop = np.repeat(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)
            crops.append(crop)
        return crops

    def inputs(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """(B, C, S, S) model inputs of aligned crops, through the run's evaluation transform."""
        if not len(crops):
            return torch.zeros(0, 3, self.img_size, self.img_size)
        return torch.stack([self.transform(Image.fromarray(c)) for c in crops])

    @torch.no_grad()
    def classify(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Probabilities (B, C) of aligned crops and ARBEx's extras (``{"primary": (B, C), ..., "c_primary": (B,)}``;
        empty for other models), in batches of ``batch_size``."""
        probs: list[np.ndarray] = []
        kept: dict[str, list[np.ndarray]] = {}
        for i in range(0, len(crops), self.batch_size):
            x = self.inputs(crops[i : i + self.batch_size]).to(self.device)
            with autocast_context(self.device, self.precision):
                out = self.model(x)
            logits = out if isinstance(out, torch.Tensor) else out.logits
            probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
            extras = out.extras() if hasattr(out, "extras") else {}
            for ours, field_name in (*ARBEX_EXTRAS.items(), *((f"c_{k}", v) for k, v in _CONFIDENCES.items())):
                if field_name in extras:
                    kept.setdefault(ours, []).append(extras[field_name].float().cpu().numpy().reshape(len(x), -1))
        c = len(self.class_names)
        p = np.concatenate(probs) if probs else np.zeros((0, c), np.float32)
        ex = {k: np.concatenate(v) for k, v in kept.items()}
        return p, {k: v[:, 0] if k.startswith("c_") else v for k, v in ex.items()}

    # -- frames ------------------------------------------------------------------------------------------------------
    def iter_predict(
        self, frames: Iterable[Frame], *, detect_every: int = 1, keep_crops: bool = False
    ) -> Iterator[tuple[Frame, list[FacePrediction]]]:
        """``(frame, rows)`` for each frame in order; the crops of several frames share a batch.

        ``detect_every=k`` runs the detector on every k-th frame of a video and reuses its boxes and landmarks for
        the frames between (a crude tracker for speed: rows say ``detected=False``); 1 detects on every frame.
        """
        if detect_every < 1:
            raise ValueError(f"detect_every={detect_every}; expected >= 1")
        pending: list[_Pending] = []
        last: tuple[str, list[Detection], list[Landmarks]] | None = None
        since = 0  # kept frames since the last detection
        t = self.timings
        for fr in frames:
            t["decode"] += fr.decode_s
            t["frames"] += 1
            if fr.image is None:
                pending.append(_Pending(fr))
            else:
                t0 = time.perf_counter()
                if last is not None and last[0] == fr.source and since < detect_every:
                    (_, dets, lms), fresh = last, False
                    since += 1
                else:
                    dets, fresh = self.detect(fr.image), True
                    lms = self.landmarks(fr.image, dets)
                    last, since = (fr.source, dets, lms), 1
                t1 = time.perf_counter()
                crops = self.align(fr.image, lms)
                t["detect"] += t1 - t0
                t["align"] += time.perf_counter() - t1
                pending.append(_Pending(fr, dets, lms, crops, fresh))
            if sum(len(p.crops) for p in pending) >= self.batch_size:
                yield from self._flush(pending, keep_crops)
                pending = []
        if pending:
            yield from self._flush(pending, keep_crops)

    def _flush(self, pending: list[_Pending], keep_crops: bool) -> Iterator[tuple[Frame, list[FacePrediction]]]:
        crops = [c for p in pending for c in p.crops]
        t0 = time.perf_counter()
        probs, extras = self.classify(crops)
        self.timings["model"] += time.perf_counter() - t0
        k = 0
        for p in pending:
            fr = p.frame
            base: dict[str, Any] = {"source": fr.source, "frame": fr.frame, "time_s": fr.time_s}
            base["class_names"] = self.class_names
            if fr.image is None:
                yield fr, [FacePrediction(**base, status="error", error=fr.error)]
                continue
            if not p.detections:
                yield fr, [FacePrediction(**base, status="no face")]
                continue
            rows = []
            for j, (d, lm) in enumerate(zip(p.detections, p.landmarks, strict=True)):
                rows.append(
                    FacePrediction(
                        **base,
                        face=j,
                        box=d.box,
                        landmarks=lm,
                        detected=p.fresh,
                        probs=probs[k],
                        extras={name: v[k] for name, v in extras.items()},
                        crop=p.crops[j] if keep_crops else None,
                    )
                )
                k += 1
            yield fr, rows


# ---------------------------------------------------------------------------------------------------- drawing


def _colour(i: int, n: int) -> tuple[int, int, int]:
    hue = int(180 * i / max(1, n))
    bgr = cv2.cvtColor(np.array([[[hue, 200, 255]]], np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
    return (int(bgr[0]), int(bgr[1]), int(bgr[2]))


def annotate_frame(image: np.ndarray, rows: Sequence[FacePrediction]) -> np.ndarray:
    """A copy of an (H, W, 3) RGB frame with each face's box, landmarks, label and probability drawn (ARBEx: also
    the primary label and its confidence); a frame without a face says so."""
    out = np.ascontiguousarray(_rgb(image).copy())
    scale = max(0.4, min(out.shape[:2]) / 600)
    thick = max(1, round(2 * scale))
    for r in rows:
        if r.box is None:
            if r.status != "ok":
                cv2.putText(
                    out, r.status, (8, round(24 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 64, 64), thick
                )
            continue
        colour = _colour(int(np.argmax(r.probs)) if r.probs is not None else 0, len(r.class_names))
        pts = np.round(r.box.corners()).astype(np.int32)
        cv2.polylines(out, [pts], True, colour, thick, cv2.LINE_AA)
        if r.landmarks is not None:
            for n in _POINTS:
                x, y = getattr(r.landmarks, n)
                cv2.circle(out, (round(x), round(y)), thick + 1, (0, 255, 0), -1, cv2.LINE_AA)
        text = f"{r.label} {r.confidence:.2f}" if r.probs is not None else r.status
        if "c_primary" in r.extras:
            text += f" (c_p {float(r.extras['c_primary']):.2f})"
        x0, y0 = int(pts[:, 0].min()), int(pts[:, 1].min())
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        y0 = max(th + base, y0)
        cv2.rectangle(out, (x0, y0 - th - base), (x0 + tw, y0), colour, -1)
        cv2.putText(out, text, (x0, y0 - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return out


class _Annotator:
    """Writes annotated stills as PNG files and annotated videos as MP4 files into a folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.writers: dict[str, tuple[cv2.VideoWriter, Path]] = {}
        self.outputs: list[Path] = []
        self.names: set[str] = set()

    def _name(self, source: str, suffix: str) -> Path:
        stem = Path(source).stem if source else "image"
        name, k = stem, 1
        while name + suffix in self.names:
            k += 1
            name = f"{stem}-{k}"
        self.names.add(name + suffix)
        return self.folder / (name + suffix)

    def add(self, fr: Frame, rows: Sequence[FacePrediction], fps: float | None) -> None:
        if fr.image is None:
            return
        img = annotate_frame(fr.image, rows)
        is_video = Path(fr.source).suffix.lower() in VIDEO_SUFFIXES or fr.source.startswith("camera:")
        if not is_video:
            path = self._name(fr.source, ".png")
            Image.fromarray(img).save(path)
            self.outputs.append(path)
            return
        if fr.source not in self.writers:
            path = self._name(fr.source, ".mp4")
            h, w = img.shape[:2]
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps or 25.0, (w, h))
            if not writer.isOpened():
                raise OSError(f"{path}: OpenCV cannot write an MP4 video here")
            self.writers[fr.source] = (writer, path)
            self.outputs.append(path)
        self.writers[fr.source][0].write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        for writer, _ in self.writers.values():
            writer.release()
        self.writers.clear()


def _fps(source: str, every: int) -> float | None:
    if Path(source).suffix.lower() not in VIDEO_SUFFIXES:
        return None
    cap = cv2.VideoCapture(source)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return fps / every if fps and fps > 0 else None


# ---------------------------------------------------------------------------------------------------- entry points


def _predictor(
    model: str | Path | FacePredictor | None,
    checkpoint: str | int | Path | None,
    preset: str | None,
    **kwargs: Any,
) -> FacePredictor:
    if isinstance(model, FacePredictor):
        return model
    if model is None:
        raise ValueError("predict: give a run folder (model=runs/...), or a model name and a checkpoint file")
    path = Path(model)
    if (path / RunDir.CONFIG).is_file():
        tag = "best" if checkpoint is None else checkpoint
        return FacePredictor.from_run(path, str(tag) if isinstance(tag, Path) else tag, **kwargs)
    if path.is_dir():
        raise FileNotFoundError(f"{path}: no config.json; is this a fernb run folder?")
    if checkpoint is None:
        raise ValueError(f"model={model!r} is not a run folder; a registered model name needs checkpoint=<file>")
    if not Path(str(checkpoint)).exists():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint file")
    return FacePredictor.from_checkpoint(str(model), str(checkpoint), preset=preset or "official", **kwargs)


def _write_table(path: Path, rows: Sequence[FacePrediction]) -> None:
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


def predict_faces(
    source: Any,
    model: str | Path | FacePredictor | None = None,
    *,
    checkpoint: str | int | Path | None = None,
    preset: str | None = None,
    out: str | Path | None = None,
    annotate: str | Path | None = None,
    every: int = 1,
    detect_every: int = 1,
    recursive: bool = False,
    detector: str | Detector | None = None,
    template: str | FaceTemplate | None = None,
    batch_size: int = 32,
    device: str = "cpu",
    precision: str = "fp32",
    keep_crops: bool = False,
    progress: bool | None = None,
) -> FacePredictions:
    """Detect, align and classify every face of images, folders, videos or a camera.

    Args:
        source: see :func:`iter_frames` (a file, folder, video, camera index, array or a list of them).
        model: a run folder, a registered model name (with ``checkpoint`` a weight file) or a :class:`FacePredictor`.
        checkpoint: for a run, ``"best"`` (default), ``"last"`` or an epoch; for a model name, the weight file.
        preset: the model preset of a weight file (default ``"official"``).
        out: write the rows to a ``.csv`` (one flat row per face), ``.json`` (a list of nested records) or ``.jsonl``.
        annotate: folder for annotated copies: a PNG per still, an MP4 per video or camera.
        every: keep every ``every``-th video frame; detect_every: detect on every k-th kept frame, reusing boxes.
        recursive: search sub-folders.
        detector, template: override the run's (``"auto"``, ``"haar"``; ``"fer"``, ``"arcface"``).
        batch_size: crops per forward pass; device, precision: where and how the model runs.
        keep_crops: keep each aligned crop in its row (for figures).
        progress: a tqdm bar; None shows one for more than 50 frames (or a camera).

    Returns:
        :class:`FacePredictions`: the rows, the seconds per stage and the files written.
    """
    pred = _predictor(
        model, checkpoint, preset, detector=detector, template=template, batch_size=batch_size, device=device,
        precision=precision,
    )  # fmt: skip
    total = _count_frames(source, every)
    frames: Iterable[Frame] = iter_frames(source, every=every, recursive=recursive)
    if progress or (progress is None and (total is None or total > 50)):
        from tqdm.auto import tqdm

        frames = tqdm(frames, total=total, unit="frame", desc="predict", leave=False)
    before = dict(pred.timings)
    annotator = _Annotator(Path(annotate)) if annotate is not None else None
    rows: list[FacePrediction] = []
    fps: dict[str, float | None] = {}
    try:
        for fr, frame_rows in pred.iter_predict(frames, detect_every=detect_every, keep_crops=keep_crops):
            rows.extend(frame_rows)
            if annotator is not None:
                if fr.source not in fps:
                    fps[fr.source] = _fps(fr.source, every)
                annotator.add(fr, frame_rows, fps[fr.source])
    finally:
        if annotator is not None:
            annotator.close()
    outputs = list(annotator.outputs) if annotator is not None else []
    if out is not None:
        _write_table(Path(out), rows)
        outputs.insert(0, Path(out))
    timings = {k: pred.timings[k] - before.get(k, 0.0) for k in pred.timings}
    return FacePredictions(rows, list(pred.class_names), timings, outputs)


_EPILOG = """examples:
  python -m fernb predict photos/ --run runs/arbex-synthetic-s0 --out faces.csv --annotate annotated/
  python -m fernb predict clip.mp4 --run runs/arbex-synthetic-s0 --every 2 --out clip.json --annotate out/
  python -m fernb predict 0 --run runs/resnet18-synthetic-s0 --annotate out/      # camera 0; Ctrl-C stops
  python -m fernb predict face.jpg --model poster_v2 --checkpoint raf-db-model_best.pth --out faces.csv
"""


def predict_main(argv: Sequence[str] | None = None) -> int:
    """``python -m fernb predict SOURCE ... (--run DIR | --model NAME --checkpoint FILE)``; returns the exit code."""
    p = argparse.ArgumentParser(
        prog="python -m fernb predict",
        description="Detect, align and classify every face of images, folders, videos or a camera.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sources", nargs="+", help="image files, folders, video files or a camera index (0)")
    p.add_argument("--run", help="a training run folder (its model, input size, transform and alignment)")
    p.add_argument("--model", help="a registered model name, with --checkpoint a weight file (official or fernb's)")
    p.add_argument("--checkpoint", help="with --run: best (default), last or an epoch; with --model: the weight file")
    p.add_argument("--preset", default="official", help="with --model: the model preset (default official)")
    p.add_argument("--classes", help="with --model: label space (basic7, ferplus8, ...) or comma-separated classes")
    p.add_argument("--gray", action="store_true", help="with --model: weights trained on gray faces")
    p.add_argument("--out", help="table of predictions: .csv, .json or .jsonl (default: print a summary only)")
    p.add_argument("--annotate", metavar="DIR", help="write annotated images (PNG) and videos (MP4) into DIR")
    p.add_argument("--every", type=int, default=1, help="keep every N-th video frame (default 1)")
    p.add_argument("--detect-every", type=int, default=1, help="detect on every K-th kept frame, reusing boxes between")
    p.add_argument("--detector", help="face detector (default: the run's data.align, else auto)")
    p.add_argument("--template", help="alignment template: fer, arcface (default: the run's, else fer)")
    p.add_argument("--recursive", action="store_true", help="search folders recursively")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    if (a.run is None) == (a.model is None):
        p.error("give exactly one of --run DIR or --model NAME (with --checkpoint FILE)")
    common: dict[str, Any] = {"detector": a.detector, "template": a.template, "batch_size": a.batch_size}
    common["device"] = a.device
    try:
        if a.run is not None:
            ckpt: str | int = a.checkpoint or "best"
            predictor = FacePredictor.from_run(a.run, int(ckpt) if str(ckpt).isdigit() else ckpt, **common)
        else:
            if not a.checkpoint:
                p.error("--model needs --checkpoint FILE")
            classes = a.classes.split(",") if a.classes and "," in a.classes else a.classes
            predictor = FacePredictor.from_checkpoint(
                a.model, a.checkpoint, preset=a.preset, classes=classes, gray=a.gray, **common
            )
        sources = [int(s) if s.isdigit() and not Path(s).exists() else s for s in a.sources]
        result = predict_faces(
            sources,
            predictor,
            out=a.out,
            annotate=a.annotate,
            every=a.every,
            detect_every=a.detect_every,
            recursive=a.recursive,
            progress=False if a.quiet else None,
        )
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(f"fernb predict: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fernb predict: interrupted", file=sys.stderr)
        return 130
    ok = result.faces
    t = result.timings
    n = int(t.get("frames", 0))
    print(
        f"{predictor}: {n} frame(s), {len(ok)} face(s), "
        f"{sum(r.status == 'no face' for r in result)} without a face, {sum(r.status == 'error' for r in result)} "
        f"unreadable"
    )
    for r in result:
        if r.status == "error":
            print(f"  error: {r.error}")
    if n and len(result) <= 40:
        for r in result:
            if r.status == "ok":
                print(f"  {r.source} frame {r.frame} face {r.face}: {r.label} {r.confidence:.3f}")
    for path in result.outputs[:20]:
        print(f"wrote {path}")
    return 0
