"""Reading what a user points :func:`~fernb.engine.faces.predict_faces` at: image files, folders, video files,
cameras, arrays and PIL images, as a stream of :class:`Frame` (``(H, W, 3)`` uint8 RGB, or the reason a frame could
not be read)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ...data.base import read_image
from ...data.errors import CorruptImageError
from ...data.faces import IMAGE_SUFFIXES

__all__ = ["VIDEO_SUFFIXES", "Frame", "as_rgb", "iter_frames", "side_by_side", "count_frames", "video_fps"]

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


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


def as_rgb(image: Any) -> np.ndarray:
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
        yield Frame(source[0], 0, as_rgb(source[1]))
        return
    if isinstance(source, (np.ndarray, Image.Image)):
        yield Frame("image", 0, as_rgb(source))
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
        rgb = as_rgb(img)
        w = max(1, round(rgb.shape[1] * height / rgb.shape[0]))
        parts.append(cv2.resize(rgb, (w, height), interpolation=cv2.INTER_AREA))
        if gap:
            parts.append(np.zeros((height, gap, 3), np.uint8))
    return np.ascontiguousarray(np.concatenate(parts[: len(parts) - (1 if gap else 0)], axis=1))


def count_frames(source: Any, every: int) -> int | None:
    """How many frames :func:`iter_frames` will give, when cheap to know (None for cameras)."""
    if isinstance(source, (list, tuple)) and not (len(source) == 2 and isinstance(source[0], str)):
        counts = [count_frames(s, every) for s in source]
        return None if any(c is None for c in counts) else sum(c for c in counts if c is not None)
    if isinstance(source, (tuple, np.ndarray, Image.Image)):
        return 1
    if _is_camera(source):
        return None
    path = Path(source).expanduser()
    if path.is_dir():
        return count_frames(_files(path, False), every)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        cap = cv2.VideoCapture(str(path))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        cap.release()
        return max(1, math.ceil(n / every)) if n > 0 else None
    return 1


def video_fps(source: str, every: int) -> float | None:
    """The frame rate of a video file after keeping every ``every``-th frame; None for a still or an unknown rate."""
    if Path(source).suffix.lower() not in VIDEO_SUFFIXES:
        return None
    cap = cv2.VideoCapture(source)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return fps / every if fps and fps > 0 else None
