"""Eyes, nose and mouth inside a detected face box."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from .detect import (
    _BOX_LEFT_EYE,
    _BOX_RIGHT_EYE,
    _EYE_ENOUGH,
    _EYE_ROWS,
    _EYE_SATURATION,
    _EYE_SCALE_FACTOR,
    _EYE_SIZES,
    _MIDLINE,
    _MOUTH_BELOW_EYES,
    _NOSE_BELOW_EYES,
    _PATCH,
    EYE_CASCADES,
    MOUTH_CASCADE,
)
from .geometry import ImageLike, _as_array, _cascade, _invert, _to_gray_u8, transform_points
from .types import FaceBox, Landmarks


def _face_patch(gray: np.ndarray, box: FaceBox, width: int = _PATCH) -> tuple[np.ndarray, np.ndarray]:
    """The box as an upright (width, width) gray patch and the (2, 3) map from image to patch pixels."""
    s = width / box.w
    cx, cy = box.center
    m: np.ndarray = cv2.getRotationMatrix2D((cx, cy), -box.angle, s)
    m[:, 2] += [width / 2.0 - cx, width / 2.0 - cy]
    patch = cv2.warpAffine(gray, m, (width, width), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return patch, m


def _eye_hits(patch: np.ndarray, cascade: str, index: int) -> list[tuple[float, float, float, int]]:
    """Raw eye detections ``(u, v, neighbours, cascade index)`` of one cascade, in patch fractions."""
    n = patch.shape[1]
    top, bottom = round(_EYE_ROWS[0] * n), round(_EYE_ROWS[1] * n)
    rects, counts = _cascade(cascade).detectMultiScale2(
        patch[top:bottom],
        scaleFactor=_EYE_SCALE_FACTOR,
        minNeighbors=3,
        minSize=(round(_EYE_SIZES[0] * n),) * 2,
        maxSize=(round(_EYE_SIZES[1] * n),) * 2,
    )
    return [
        ((x + w / 2) / n, (top + y + h / 2) / n, float(c), index)
        for (x, y, w, h), c in zip(np.asarray(rects).reshape(-1, 4), np.asarray(counts).ravel())
    ]


def _eye_candidates(hits: list[tuple[float, float, float, int]]) -> list[tuple[float, float, float]]:
    """Merge hits closer than 8% of the face width into candidates ``(u, v, support)``.

    ``support`` sums, over the cascades that hit, each one's neighbour count saturated at 1.
    """
    groups: list[list[tuple[float, float, float, int]]] = []
    for h_ in sorted(hits, key=lambda t: -t[2]):
        for g in groups:
            if math.hypot(h_[0] - g[0][0], h_[1] - g[0][1]) < 0.08:
                g.append(h_)
                break
        else:
            groups.append([h_])
    cands = []
    for g in groups:
        w = np.array([t[2] for t in g]) + 1.0
        u = float(np.average([t[0] for t in g], weights=w))
        v = float(np.average([t[1] for t in g], weights=w))
        best: dict[int, float] = {}
        for t in g:
            best[t[3]] = max(best.get(t[3], 0.0), t[2])
        cands.append((u, v, sum(min(1.0, c / _EYE_SATURATION) for c in best.values())))
    return cands


def _choose_eyes(cands: list[tuple[float, float, float]]) -> tuple[tuple[float, float, float] | None, ...]:
    """Best (left, right) eye candidates ``(u, v, support)``; either may be None."""

    def prior_cost(p: tuple[float, float, float], prior: tuple[float, float]) -> float:
        return math.hypot(p[0] - prior[0], p[1] - prior[1]) / 0.1

    lefts = [c for c in cands if 0.08 < c[0] < _MIDLINE / 2]
    rights = [c for c in cands if _MIDLINE / 2 <= c[0] < 0.92]
    best, best_score = None, -math.inf
    for lc in lefts:
        for rc in rights:
            d = math.hypot(rc[0] - lc[0], rc[1] - lc[1])
            tilt = abs(math.degrees(math.atan2(rc[1] - lc[1], rc[0] - lc[0])))
            if not (0.25 <= d <= 0.7) or tilt > 20:
                continue
            score = lc[2] + rc[2] - 0.25 * (prior_cost(lc, _BOX_LEFT_EYE) + prior_cost(rc, _BOX_RIGHT_EYE))
            if score > best_score:
                best, best_score = (lc, rc), score
    if best is not None:
        return best

    def prior(c: tuple[float, float, float]) -> tuple[float, float]:
        return _BOX_LEFT_EYE if c[0] < _MIDLINE / 2 else _BOX_RIGHT_EYE

    singles = [(c, c[2] - 0.25 * prior_cost(c, prior(c))) for c in cands if prior_cost(c, prior(c)) < 1.6]
    if not singles:
        return None, None
    c = max(singles, key=lambda s: s[1])[0]
    return (c, None) if c[0] < _MIDLINE / 2 else (None, c)


def _refine_eye(patch: np.ndarray, c: np.ndarray, radius: float = 0.05) -> np.ndarray:
    """Pull an eye centre towards the dark iris: darkness-weighted centroid in a small Gaussian window."""
    n = patch.shape[1]
    r = max(2, round(radius * n))
    x0, y0 = int(round(c[0])) - r, int(round(c[1])) - r
    if x0 < 0 or y0 < 0 or x0 + 2 * r + 1 > n or y0 + 2 * r + 1 > patch.shape[0]:
        return c
    win = cv2.GaussianBlur(patch, (0, 0), 0.01 * n + 0.5)[y0 : y0 + 2 * r + 1, x0 : x0 + 2 * r + 1].astype(np.float64)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    dark = np.clip(np.quantile(win, 0.3) - win, 0, None) * np.exp(-(xx**2 + yy**2) / (2 * (0.6 * r) ** 2))
    if dark.sum() <= 0:
        return c
    return np.array([x0 + r + (dark * xx).sum() / dark.sum(), y0 + r + (dark * yy).sum() / dark.sum()])


def _find_mouth(patch: np.ndarray, left: np.ndarray, right: np.ndarray, min_neighbors: int) -> np.ndarray | None:
    """Mouth centre (patch pixels) from the smile cascade, kept only where it sits where the eyes predict it."""
    n = patch.shape[1]
    mid, d = (left + right) / 2.0, float(np.hypot(*(right - left)))
    down = np.array([-(right - left)[1], (right - left)[0]]) / max(d, 1e-9)
    expected = mid + _MOUTH_BELOW_EYES * d * down
    top = round(max(0.0, min(expected[1] - 0.5 * d, 0.55 * n)))
    roi = patch[top:]
    rects, counts = _cascade(MOUTH_CASCADE).detectMultiScale2(
        roi, scaleFactor=1.05, minNeighbors=min_neighbors, minSize=(round(0.25 * n), round(0.12 * n))
    )
    best, best_err = None, math.inf
    for (x, y, w, h), _ in zip(np.asarray(rects).reshape(-1, 4), np.asarray(counts).ravel()):
        c = np.array([x + w / 2.0, top + y + h / 2.0])
        err = float(np.hypot(*(c - expected))) / d
        if err < 0.3 and 0.5 * d < w < 1.6 * d and err < best_err:
            best, best_err = c, err
    return best


def detect_landmarks(
    image: ImageLike,
    box: FaceBox,
    *,
    eye_cascades: Sequence[str] = EYE_CASCADES,
    refine_eyes: bool = True,
    find_mouth: bool = True,
    mouth_min_neighbors: int = 12,
) -> Landmarks:
    """Eye centres (cascades), mouth centre (smile cascade, checked against the eyes) and a nose estimate.

    The eyes are searched in the upper part of the box, on an upright 160 px patch (so rolled boxes and tiny faces
    work alike). Eyes that no cascade finds fall back to geometry: the other eye mirrored across the face's mid-line
    (``"mirrored"``) or the box's priors (``"from_box"``). The nose is always estimated.

    Args:
        image: the image :func:`detect_faces` ran on (PIL or numpy, any mode).
        box: one face from :func:`detect_faces`.
        eye_cascades: eye cascade files, tried in order until both eyes have one cascade's full support.
        refine_eyes: move each eye centre to the darkness-weighted centroid (the iris) within 5% of the face width;
            cascade boxes are coarse, this makes the eye line about 3x more stable under rotation.
        find_mouth: search the smile cascade for the mouth (else it is estimated from the eyes).
        mouth_min_neighbors: the smile cascade's ``minNeighbors`` (it fires on many textures; keep it high).

    Returns:
        :class:`Landmarks` in input pixels, with ``sources`` saying which were detected.
    """
    gray = _to_gray_u8(_as_array(image))
    patch, to_patch = _face_patch(gray, box)
    n = patch.shape[1]
    hits: list[tuple[float, float, float, int]] = []
    left3 = right3 = None
    for ci, name in enumerate(eye_cascades):
        hits += _eye_hits(patch, name, ci)
        left3, right3 = _choose_eyes(_eye_candidates(hits))
        if left3 is not None and right3 is not None and min(left3[2], right3[2]) >= _EYE_ENOUGH:
            break
    left = None if left3 is None else left3[:2]
    right = None if right3 is None else right3[:2]
    sources: dict[str, str] = {}
    if left is not None and right is not None:
        sources["left_eye"] = sources["right_eye"] = "detected"
    elif left is not None:
        right = (_MIDLINE - left[0], left[1])
        sources["left_eye"], sources["right_eye"] = "detected", "mirrored"
    elif right is not None:
        left = (_MIDLINE - right[0], right[1])
        sources["left_eye"], sources["right_eye"] = "mirrored", "detected"
    else:
        left, right = _BOX_LEFT_EYE, _BOX_RIGHT_EYE
        sources["left_eye"] = sources["right_eye"] = "from_box"
    le, re_ = np.array(left) * n, np.array(right) * n
    if refine_eyes and sources["left_eye"] != "from_box":
        le, re_ = _refine_eye(patch, le), _refine_eye(patch, re_)
    geometry = "from_eyes" if "detected" in (sources["left_eye"], sources["right_eye"]) else "from_box"
    mid, d = (le + re_) / 2.0, float(np.hypot(*(re_ - le)))
    down = np.array([-(re_ - le)[1], (re_ - le)[0]]) / max(d, 1e-9)
    nose = mid + _NOSE_BELOW_EYES * d * down
    mouth = _find_mouth(patch, le, re_, mouth_min_neighbors) if find_mouth and geometry == "from_eyes" else None
    if mouth is None:
        mouth = mid + _MOUTH_BELOW_EYES * d * down
        sources["mouth"] = geometry
    else:
        sources["mouth"] = "detected"
    sources["nose"] = geometry
    back = _invert(to_patch)
    pts = transform_points(back, np.stack([le, re_, nose, mouth]))
    return Landmarks.from_array(pts, sources)
