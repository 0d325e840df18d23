"""Face detection with OpenCV's Haar cascades (three frontal cascades vote; rotated retries)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .geometry import ImageLike, _as_array, _cascade, _invert, _to_gray_u8, transform_points
from .types import FaceBox

FACE_CASCADES: tuple[str, ...] = (
    "haarcascade_frontalface_default.xml",
    "haarcascade_frontalface_alt2.xml",
    "haarcascade_frontalface_alt.xml",
)
EYE_CASCADES: tuple[str, ...] = (
    "haarcascade_eye.xml",
    "haarcascade_lefteye_2splits.xml",
    "haarcascade_righteye_2splits.xml",
    "haarcascade_eye_tree_eyeglasses.xml",
)
MOUTH_CASCADE = "haarcascade_smile.xml"

# Eye centres as fractions (u, v) of a frontal cascade's box: medians over 400 CK+48 and 400 FER+ crops whose eyes
# were detected (the two example photographs agree within 0.02).
_BOX_LEFT_EYE = (0.295, 0.375)
_BOX_RIGHT_EYE = (0.675, 0.370)
_MIDLINE = _BOX_LEFT_EYE[0] + _BOX_RIGHT_EYE[0]  # a mirrored eye sits at u' = _MIDLINE - u
# Face proportions below the eye midpoint, in inter-ocular distances: the nose from the ArcFace 112x112 five-point
# template (0.57); the mouth centre as measured on FER+ and CK+48 crops (median 1.09; ArcFace's template says 1.15).
_NOSE_BELOW_EYES = 0.57
_MOUTH_BELOW_EYES = 1.1

# Neighbour counts at which one cascade's vote counts as full confidence.
_FACE_SATURATION = 20.0
_EYE_SATURATION = 10.0
# Width (px) of the upright face patch that eyes and mouth are searched in.
_PATCH = 160
# Eye search: rows of the patch (fractions), eye sizes (fractions of the face width), pyramid step; the cascades run
# in order and stop once both eyes have this much support (1 = one cascade with a saturated neighbour count).
_EYE_ROWS = (0.12, 0.62)
_EYE_SIZES = (0.12, 0.45)
_EYE_SCALE_FACTOR = 1.05
_EYE_ENOUGH = 1.0


def _prepare(
    gray: np.ndarray, upsample_to: int | None, max_side: int | None, pad: float
) -> tuple[np.ndarray, np.ndarray]:
    """Resize and pad a gray image for the cascades; returns it and the (2, 3) map from input to it."""
    h, w = gray.shape
    scale = 1.0
    if upsample_to and min(h, w) < upsample_to:
        scale = upsample_to / min(h, w)
    elif max_side and max(h, w) > max_side:
        scale = max_side / max(h, w)
    if scale != 1.0:
        interp = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)
    p = round(pad * min(gray.shape))
    if p > 0:
        gray = cv2.copyMakeBorder(gray, p, p, p, p, cv2.BORDER_REPLICATE)
    sx = gray.shape[1] - 2 * p
    sy = gray.shape[0] - 2 * p
    m = np.array([[sx / w, 0.0, p], [0.0, sy / h, p]], dtype=np.float64)
    return cv2.equalizeHist(gray), m


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter + 1e-12)


def _detect(gray: np.ndarray, cascade: str, scale_factor: float, min_neighbors: int, min_size: int) -> list[tuple]:
    rects, counts = _cascade(cascade).detectMultiScale2(
        gray, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(min_size, min_size)
    )
    return [
        (r.astype(np.float64), int(n)) for r, n in zip(np.asarray(rects).reshape(-1, 4), np.asarray(counts).ravel())
    ]


def _search(
    gray: np.ndarray, cascades: Sequence[str], scale_factor: float, min_neighbors: int, min_size: int, min_score: float
) -> list[tuple[np.ndarray, float, int]]:
    """Faces ``(box, score, votes)`` in ``gray``: one cascade proposes, every cascade votes.

    The cascades search the whole image in turn until one proposes a face that scores ``min_score``; every other
    cascade votes by searching only a window twice the proposal's size around it, so a vote costs a fraction of a
    full search.
    """
    h, w = gray.shape
    faces: list[tuple[np.ndarray, float, int]] = []
    for first, proposer in enumerate(cascades):
        for box, n in _detect(gray, proposer, scale_factor, min_neighbors, min_size):
            if any(_iou(box, f[0]) > 0.3 for f in faces):
                continue
            votes = {first: (box, n)}
            x0, y0 = int(max(0, box[0] - box[2] / 2)), int(max(0, box[1] - box[3] / 2))
            x1, y1 = int(min(w, box[0] + 1.5 * box[2])), int(min(h, box[1] + 1.5 * box[3]))
            window = gray[y0:y1, x0:x1]
            for ci, name in enumerate(cascades):
                if ci == first:
                    continue
                for r, c in _detect(window, name, scale_factor, min_neighbors, max(min_size, round(0.6 * box[2]))):
                    r = r + [x0, y0, 0, 0]
                    if _iou(r, box) > 0.3 and (ci not in votes or c > votes[ci][1]):
                        votes[ci] = (r, c)
            weights = np.array([c for _, c in votes.values()], dtype=np.float64) + 1.0
            merged = np.average(np.stack([r for r, _ in votes.values()]), axis=0, weights=weights)
            score = sum(min(1.0, c / _FACE_SATURATION) for _, c in votes.values()) / len(cascades)
            if score >= min_score:
                faces.append((merged, float(score), len(votes)))
        if faces:
            break
    return faces


def detect_faces(
    image: ImageLike,
    *,
    cascades: Sequence[str] = FACE_CASCADES,
    scale_factor: float = 1.1,
    min_neighbors: int = 4,
    min_size: float = 0.1,
    upsample_to: int | None = 96,
    max_side: int | None = 640,
    pad: float = 0.2,
    rotations: Sequence[float] = (15.0, -15.0),
    min_score: float = 0.2,
    max_faces: int | None = None,
) -> list[FaceBox]:
    """Find frontal faces with OpenCV's Haar cascades, largest first.

    Args:
        image: PIL image (any mode) or numpy (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA; uint8, or float
            in [0, 1] or [0, 255].
        cascades: frontal-face cascade files (names under ``cv2.data.haarcascades``); each one votes.
        scale_factor: image-pyramid step of ``detectMultiScale``.
        min_neighbors: overlapping raw detections a cascade needs to report a face.
        min_size: smallest face side, as a fraction of the shorter image side (< 1) or in working pixels (>= 1);
            never below the cascades' 24 px window.
        upsample_to: inputs whose shorter side is below this are upscaled to it first (the cascades cannot see
            faces under ~24 px; FER2013 and CK+48 crops are 48 px).
        max_side: larger inputs are downscaled so their longer side is this (speed; boxes come back in input pixels).
        pad: replicate-pad each side by this fraction of the shorter side, so faces that fill the frame (dataset
            crops) still fit the cascades' windows.
        rotations: roll angles (degrees) to retry at, in order, when nothing is found upright; a face found at
            angle ``a`` gets ``FaceBox.angle = a``.
        min_score: drop faces scoring below this; 0.2 drops most single-cascade false positives (on textures,
            backgrounds) and about 1 in 10 of the faces in FER2013 crops (half of those low scorers are misplaced).
        max_faces: keep at most this many (largest first).

    Returns:
        Faces in input pixels, sorted by decreasing area; empty when none is found.
    """
    gray0 = _to_gray_u8(_as_array(image))
    gray, to_work = _prepare(gray0, upsample_to, max_side, pad)
    from_work = _invert(to_work)
    min_side = min(gray0.shape) * to_work[0, 0]
    ms = max(24, round(min_size * min_side if min_size < 1 else min_size))
    hw, hh = gray.shape[1] / 2.0, gray.shape[0] / 2.0
    faces: list[FaceBox] = []
    for angle in (0.0, *rotations):
        if angle == 0.0:
            work, back = gray, np.eye(3)[:2]
        else:
            # Rotating the image clockwise by `angle` makes a face rolled by `angle` upright.
            rot = cv2.getRotationMatrix2D((hw, hh), -angle, 1.0)
            work = cv2.warpAffine(gray, rot, (gray.shape[1], gray.shape[0]), borderMode=cv2.BORDER_REPLICATE)
            back = _invert(rot)
        for box, score, votes in _search(work, cascades, scale_factor, min_neighbors, ms, min_score):
            c = transform_points(from_work, transform_points(back, [[box[0] + box[2] / 2, box[1] + box[3] / 2]]))[0]
            s = float(box[2] / to_work[0, 0])
            x, y = float(c[0] - s / 2), float(c[1] - s / 2)
            faces.append(FaceBox(x, y, s, s, score=score, angle=float(angle), votes=votes))
        if faces:
            break
    faces.sort(key=lambda f: -f.area)
    return faces[:max_faces] if max_faces else faces
