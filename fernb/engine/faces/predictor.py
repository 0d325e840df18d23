"""The model side of :func:`~fernb.engine.faces.predict_faces`: :class:`FacePredictor` detects every face of a frame,
aligns each one as the run's training data was, and classifies the crops of several frames in one batch."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from ...data.faces import FaceTemplate, Landmarks, detect_landmarks
from ...data.faces.align import alignment_matrix
from ...data.faces.detectors import Detection, create_detector, detector_name
from ...data.faces.types import TEMPLATES
from ...data.transforms import build_transforms
from ...labels import LABEL_SPACES, get_label_space
from ...models import FERModel, create_model
from ..config import TrainConfig
from ..data import run_transform
from ..distributed import resolve_device
from ..factory import load_run
from ..predict import autocast_context
from ..rundir import RunDir, read_json
from .frames import Frame
from .results import ARBEX_CONFIDENCES, ARBEX_EXTRAS, FacePrediction

__all__ = ["GRAY_DATASETS", "Detector", "FacePredictor"]

# Datasets of gray faces: a model trained on them saw R = G = B, so colour crops are made gray first.
GRAY_DATASETS: frozenset[str] = frozenset({"fer2013", "ferplus", "ckplus", "jaffe"})
_BORDERS = {"constant": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE, "reflect": cv2.BORDER_REFLECT_101}

Detector = Callable[[np.ndarray], list[Detection]]


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
            for ours, field_name in (*ARBEX_EXTRAS.items(), *((f"c_{k}", v) for k, v in ARBEX_CONFIDENCES.items())):
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
