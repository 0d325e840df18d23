"""Geometry: similarity transforms, point mapping, crops and warps."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import cv2.data
import numpy as np
from PIL import Image

ImageLike = Image.Image | np.ndarray


@functools.cache
def _cascade(name: str) -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / name
    clf = cv2.CascadeClassifier(str(path))
    if clf.empty():
        raise FileNotFoundError(
            f"{path}: Haar cascade missing or unreadable (OpenCV {cv2.__version__}).\n"
            f"  expected: the cascades that opencv-python-headless 4.x ships under cv2.data.haarcascades.\n"
            f"  what to do: pip install 'opencv-python-headless>=4.8,<5' (OpenCV 5 wheels dropped the cascades)."
        )
    return clf


def _rotation(angle_deg: float) -> np.ndarray:
    """(2, 2) matrix rotating vectors counter-clockwise as displayed (y axis down)."""
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, s], [-s, c]])


def _wh(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    w, h = size
    return int(w), int(h)


def _as_array(image: ImageLike) -> np.ndarray:
    """PIL or numpy -> numpy (H, W) or (H, W, C), dtype kept for numpy input."""
    if isinstance(image, Image.Image):
        if image.mode in ("L", "RGB"):
            return np.asarray(image)
        if image.mode in ("I", "I;16", "F"):
            arr = np.asarray(image, dtype=np.float64)
            lo, hi = float(arr.min()), float(arr.max())
            return ((arr - lo) * (255.0 / max(hi - lo, 1e-12))).astype(np.uint8)
        return np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4)):
            return image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
        raise ValueError(
            f"image: expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) pixels, got shape {image.shape}.\n"
            f"  what to do: pass channels-last pixels (a torch (C, H, W) tensor: x.permute(1, 2, 0).numpy())."
        )
    raise TypeError(
        f"image: expected a PIL.Image or a numpy array, got {type(image).__name__}.\n"
        f"  what to do: put face alignment before ToTensor() in the transform, or convert the image first."
    )


def _to_u8(arr: np.ndarray) -> np.ndarray:
    """Any dtype -> uint8 of the same shape: uint16 scaled by 1/257, floats in [0, 1] by 255, the rest clipped."""
    if arr.dtype == np.uint16:
        return (arr // 257).astype(np.uint8)
    if arr.dtype != np.uint8:
        a = np.nan_to_num(arr.astype(np.float32))
        if a.size and float(a.max()) <= 1.0 + 1e-6:
            a = a * 255.0
        return np.clip(a, 0, 255).astype(np.uint8)
    return arr


def _to_gray_u8(arr: np.ndarray) -> np.ndarray:
    """(H, W[, C]) any dtype -> (H, W) uint8; float input in [0, 1] is scaled to [0, 255], uint16 by 1/257."""
    arr = _to_u8(arr)
    if arr.ndim == 3:
        arr = cv2.cvtColor(np.ascontiguousarray(arr[..., :3]), cv2.COLOR_RGB2GRAY) if arr.shape[2] >= 3 else arr[..., 0]
    return np.ascontiguousarray(arr)


def _like_input(arr: np.ndarray, image: ImageLike) -> ImageLike:
    if isinstance(image, Image.Image):
        return Image.fromarray(arr)
    return arr


def transform_points(matrix: np.ndarray, points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Apply a (2, 3) affine matrix to (K, 2) points; returns (K, 2) float64."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    m = np.asarray(matrix, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def _invert(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) taking ``src`` onto ``dst``.

    Exact for two distinct points. Closed form: with centred points and complex numbers, the best ``a + ib`` is
    ``sum(conj(s) * d) / sum(|s|^2)``.

    Args:
        src: (K, 2) points, K >= 2.
        dst: (K, 2) target points.

    Returns:
        (2, 3) float64 matrix ``[[a, -b, tx], [b, a, ty]]``.
    """
    s = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    d = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if len(s) != len(d) or len(s) < 2:
        raise ValueError(f"similarity_transform: need two or more matching points, got {len(s)} and {len(d)}")
    sc = s[:, 0] + 1j * s[:, 1]
    dc = d[:, 0] + 1j * d[:, 1]
    sm, dm = sc.mean(), dc.mean()
    denom = float(np.sum(np.abs(sc - sm) ** 2))
    if denom < 1e-12:
        raise ValueError("similarity_transform: the source points coincide; cannot fix rotation and scale")
    z = np.sum(np.conj(sc - sm) * (dc - dm)) / denom
    t = dm - z * sm
    return np.array([[z.real, -z.imag, t.real], [z.imag, z.real, t.imag]], dtype=np.float64)


def center_crop_matrix(width: int, height: int, size: int | tuple[int, int], fraction: float = 1.0) -> np.ndarray:
    """(2, 3) matrix cropping the largest centred square (times ``fraction``) of a ``width x height`` image to ``size``.

    Pixel centres are integer coordinates (OpenCV's convention), so the crop is centred to the sub-pixel.
    """
    ow, oh = _wh(size)
    side = min(width, height) * fraction
    sx, sy = ow / side, oh / side
    tx = ow / 2.0 - sx * width / 2.0 + 0.5 * sx - 0.5
    ty = oh / 2.0 - sy * height / 2.0 + 0.5 * sy - 0.5
    return np.array([[sx, 0.0, tx], [0.0, sy, ty]], dtype=np.float64)


def _resize_matrix(width: int, height: int, size: int | tuple[int, int]) -> np.ndarray:
    """(2, 3) matrix of a plain resize (pixel centres mapped like ``cv2.resize``)."""
    ow, oh = _wh(size)
    sx, sy = ow / width, oh / height
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]], dtype=np.float64)


_BORDERS = {"constant": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE, "reflect": cv2.BORDER_REFLECT_101}


def _warp(arr: np.ndarray, matrix: np.ndarray, size: int | tuple[int, int], border: str = "constant") -> np.ndarray:
    if border not in _BORDERS:
        raise ValueError(f"border: expected one of {sorted(_BORDERS)}, got {border!r}")
    ow, oh = _wh(size)
    m = np.asarray(matrix, dtype=np.float64)
    scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
    src = arr if arr.dtype in (np.uint8, np.uint16, np.int16, np.float32, np.float64) else arr.astype(np.float32)
    if scale < 0.7:
        # Downscaling: low-pass first so the warp does not alias.
        src = cv2.GaussianBlur(src, (0, 0), sigmaX=(1.0 / scale - 1.0) / 2.0)
    out = cv2.warpAffine(src, m, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=_BORDERS[border], borderValue=0)
    return out
