"""Alignment: the similarity transform onto a template, one face at a time or with :class:`FaceAligner`."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .detect import detect_faces
from .detectors import Detection, create_detector, detector_name, to_rgb_u8
from .geometry import (
    _BORDERS,
    ImageLike,
    _as_array,
    _like_input,
    _resize_matrix,
    _warp,
    center_crop_matrix,
    similarity_transform,
)
from .landmarks import detect_landmarks
from .types import TEMPLATES, AlignmentResult, FaceBox, FaceTemplate, Landmarks


def _template(template: str | FaceTemplate) -> FaceTemplate:
    if isinstance(template, FaceTemplate):
        return template
    if template not in TEMPLATES:
        raise KeyError(f"template: unknown {template!r}; expected one of {sorted(TEMPLATES)} or a FaceTemplate")
    return TEMPLATES[template]


def alignment_matrix(
    landmarks: Landmarks | np.ndarray | Sequence[Sequence[float]],
    size: int | tuple[int, int] = 112,
    template: str | FaceTemplate = "fer",
    *,
    use_mouth: bool = False,
) -> np.ndarray:
    """(2, 3) similarity matrix taking the landmarks onto the template in a ``size`` output.

    Args:
        landmarks: :class:`Landmarks`, or (2, 2) eye centres ``[left_eye, right_eye]``.
        size: output side (``int``) or ``(width, height)``.
        template: preset name in :data:`TEMPLATES` or a :class:`FaceTemplate`.
        use_mouth: also fit the mouth when it was detected, and the nose when a detector located it (least squares
            over three or four points; the Haar cascades never detect the nose).
    """
    tpl = _template(template)
    names: tuple[str, ...] = ("left_eye", "right_eye")
    if isinstance(landmarks, Landmarks):
        if use_mouth:
            names = (*names, *(n for n in ("nose", "mouth") if landmarks.is_detected(n)))
        src = landmarks.as_array(names)
    else:
        src = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)[:2]
    return similarity_transform(src, tpl.points(size, names))


def align_face(
    image: ImageLike,
    landmarks: Landmarks | np.ndarray | Sequence[Sequence[float]],
    size: int | tuple[int, int] = 112,
    template: str | FaceTemplate = "fer",
    *,
    use_mouth: bool = False,
    border: str = "constant",
) -> ImageLike:
    """Rotate, scale and crop so the eyes land on the template's eye positions.

    Args:
        image: PIL image or numpy (H, W) / (H, W, C).
        landmarks: :class:`Landmarks` or (2, 2) eye centres ``[left_eye, right_eye]`` in image pixels.
        size: output side or ``(width, height)``; 48, 64 and 112 are the sizes fernb's models use.
        template: ``"fer"`` (FER2013/FER+-like crop, default), ``"arcface"`` (tight recognition crop) or a
            :class:`FaceTemplate`.
        use_mouth: fit the detected mouth too (least squares), which also fixes vertical scale.
        border: how pixels outside the input are filled: ``"constant"`` (black), ``"replicate"`` or ``"reflect"``.

    Returns:
        The aligned image, (size, size) of the input's kind and channels.
    """
    matrix = alignment_matrix(landmarks, size, template, use_mouth=use_mouth)
    return _like_input(_warp(_as_array(image), matrix, size, border), image)


class FaceAligner:
    """Detect, find landmarks and align: a callable that works as a torchvision transform on PIL images.

    ``aligner(img)`` returns the aligned image (same kind as the input); ``aligner.align(img)`` returns the full
    :class:`AlignmentResult`. When no face is found, the largest centred square (times ``fallback_fraction``) is
    resized instead; such images are counted in :attr:`stats` and the first one raises a ``UserWarning``. With
    ``skip_detection=True`` the image is only resized (the synthetic faces, CK+48 and FER2013/FER+ crops are
    aligned by construction). In DataLoader workers each worker counts its own images.

    The detector is OpenCV's Haar cascades by default; ``detector="mtcnn"``, ``"mediapipe"``, ``"auto"`` or any
    callable of the :class:`~fernb.data.faces.detectors.Detector` protocol replaces it
    (:func:`~fernb.data.faces.detectors.create_detector`). When the detector returns landmarks they are used as they
    are; otherwise the Haar eye search runs inside the box.

    Args:
        size: output side (or ``(width, height)``).
        template: template name or :class:`FaceTemplate` (see :data:`TEMPLATES`).
        skip_detection: only resize.
        use_mouth: fit the detected mouth as well as the eyes.
        find_mouth: search the smile cascade (off: faster, mouth estimated).
        border: fill outside the input: ``"constant"``, ``"replicate"`` or ``"reflect"``.
        fallback_fraction: side of the fallback centre crop as a fraction of the shorter image side.
        warn: warn on the first fallback.
        detector: ``"haar"`` (default), ``"mtcnn"``, ``"mediapipe"``, ``"auto"`` or a detector callable.
        detect_kwargs: options of the named detector: for ``"haar"`` those of :func:`detect_faces` (e.g.
            ``upsample_to``, ``rotations``, ``min_score``); see :func:`create_detector` for the others.
    """

    def __init__(
        self,
        size: int | tuple[int, int] = 112,
        template: str | FaceTemplate = "fer",
        *,
        skip_detection: bool = False,
        use_mouth: bool = False,
        find_mouth: bool = True,
        border: str = "constant",
        fallback_fraction: float = 1.0,
        warn: bool = True,
        detector: str | Callable[[np.ndarray], list[Detection]] = "haar",
        **detect_kwargs: Any,
    ) -> None:
        if border not in _BORDERS:
            raise ValueError(f"border: expected one of {sorted(_BORDERS)}, got {border!r}")
        if isinstance(detector, str):
            # Haar keeps its direct path (the same faces as before detectors became pluggable)
            self._detect = None if detector.lower() == "haar" else create_detector(detector, **detect_kwargs)
        elif callable(detector):
            if detect_kwargs:
                raise TypeError(f"FaceAligner: options {sorted(detect_kwargs)} need a detector name, not a callable")
            self._detect = detector
        else:
            raise TypeError(f"detector: expected a name or a callable, got {type(detector).__name__}")
        self.detector = "haar" if self._detect is None else detector_name(self._detect)
        self.size = size
        self.template = _template(template)
        self.skip_detection = skip_detection
        self.use_mouth = use_mouth
        self.find_mouth = find_mouth
        self.border = border
        self.fallback_fraction = fallback_fraction
        self.warn = warn
        self.detect_kwargs = detect_kwargs
        self.counts: dict[str, int] = {"images": 0, "aligned": 0, "center_crop": 0, "skipped": 0, "eyes_detected": 0}

    def align(self, image: ImageLike) -> AlignmentResult:
        """Align one image; see :class:`AlignmentResult`."""
        arr = _as_array(image)
        h, w = arr.shape[:2]
        self.counts["images"] += 1
        faces: list[FaceBox] = []
        box = landmarks = None
        if self.skip_detection:
            mode, matrix = "skipped", _resize_matrix(w, h, self.size)
        else:
            if self._detect is None:
                dets = [Detection(b) for b in detect_faces(arr, **self.detect_kwargs)]
            else:
                dets = list(self._detect(to_rgb_u8(arr)))
            faces = [d.box for d in dets]
            if faces:
                box = faces[0]
                landmarks = dets[0].landmarks
                if landmarks is None:
                    landmarks = detect_landmarks(arr, box, find_mouth=self.find_mouth)
                mode = "aligned"
                matrix = alignment_matrix(landmarks, self.size, self.template, use_mouth=self.use_mouth)
                self.counts["eyes_detected"] += int(landmarks.eyes_detected == 2)
            else:
                mode = "center_crop"
                matrix = center_crop_matrix(w, h, self.size, self.fallback_fraction)
                if self.warn and self.counts["center_crop"] == 0:
                    warnings.warn(
                        "FaceAligner: no face found; using a centre crop instead (counted in FaceAligner.stats). "
                        "If many images fall back, try detector='mtcnn' (make detectors) or detect_kwargs such as "
                        "upsample_to=, pad= or min_size=.",
                        UserWarning,
                        stacklevel=2,
                    )
        self.counts[mode] += 1
        out = _like_input(_warp(arr, matrix, self.size, self.border), image)
        return AlignmentResult(
            image=out,
            matrix=matrix,
            mode=mode,
            box=box,
            landmarks=landmarks,
            faces=faces,
            template=self.template,
            input_size=(w, h),
        )

    def __call__(self, image: ImageLike) -> ImageLike:
        return self.align(image).image

    @property
    def stats(self) -> dict[str, float]:
        """Counts so far, plus the detection rate (aligned / images) and the fallback rate."""
        c = dict(self.counts)
        n = max(1, c["images"])
        return {**c, "detection_rate": c["aligned"] / n, "fallback_rate": c["center_crop"] / n}

    def reset_stats(self) -> None:
        for k in self.counts:
            self.counts[k] = 0

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, template={self.template.name!r}, detector={self.detector!r}, "
            f"skip_detection={self.skip_detection}, use_mouth={self.use_mouth})"
        )
