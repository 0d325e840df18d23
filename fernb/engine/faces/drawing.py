"""Drawing predictions onto frames: :func:`annotate_frame` (boxes, landmarks, labels) and the writer of annotated
stills (PNG) and videos (MP4) of :func:`~fernb.engine.faces.predict_faces`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .frames import VIDEO_SUFFIXES, Frame, as_rgb
from .results import POINT_NAMES, FacePrediction

__all__ = ["annotate_frame", "Annotator"]


def _colour(i: int, n: int) -> tuple[int, int, int]:
    hue = int(180 * i / max(1, n))
    bgr = cv2.cvtColor(np.array([[[hue, 200, 255]]], np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
    return (int(bgr[0]), int(bgr[1]), int(bgr[2]))


def annotate_frame(image: np.ndarray, rows: Sequence[FacePrediction]) -> np.ndarray:
    """A copy of an (H, W, 3) RGB frame with each face's box, landmarks, label and probability drawn (ARBEx: also
    the primary label and its confidence); a frame without a face says so."""
    out = np.ascontiguousarray(as_rgb(image).copy())
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
            for n in POINT_NAMES:
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


class Annotator:
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
