"""The data types of the face pipeline: boxes, landmarks, alignment templates and results."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .geometry import ImageLike, _rotation, _wh, transform_points


@dataclass(frozen=True)
class FaceBox:
    """A face: an upright square in a frame rotated by ``angle`` about its centre.

    Attributes:
        x, y, w, h: top-left corner and size (pixels of the input image) of the box before its rotation.
        score: detector confidence in [0, 1]: the mean over the frontal cascades of each one's saturated neighbour
            count (a cascade that does not fire contributes 0).
        angle: roll of the face (degrees, counter-clockwise positive); non-zero only when the face was found on a
            rotated copy of the image.
        votes: how many cascades fired on this face.
    """

    x: float
    y: float
    w: float
    h: float
    score: float
    angle: float = 0.0
    votes: int = 1

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + self.w / 2.0, self.y + self.h / 2.0)

    @property
    def area(self) -> float:
        return self.w * self.h

    def corners(self) -> np.ndarray:
        """(4, 2) corners (top-left, top-right, bottom-right, bottom-left of the face) in image pixels."""
        cx, cy = self.center
        local = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * [self.w / 2.0, self.h / 2.0]
        return local @ _rotation(self.angle).T + [cx, cy]

    def to_image(self, u: float, v: float) -> tuple[float, float]:
        """Map box fractions ``(u, v)`` (0..1 across, 0..1 down the upright face) to image pixels."""
        cx, cy = self.center
        p = _rotation(self.angle) @ np.array([(u - 0.5) * self.w, (v - 0.5) * self.h])
        return (float(cx + p[0]), float(cy + p[1]))

    def as_int(self) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` rounded, for axis-aligned boxes (``angle == 0``)."""
        return (round(self.x), round(self.y), round(self.w), round(self.h))


LANDMARK_NAMES: tuple[str, ...] = ("left_eye", "right_eye", "nose", "mouth")


@dataclass(frozen=True)
class Landmarks:
    """Eye centres, nose tip and mouth centre of one face, in image pixels.

    Attributes:
        left_eye, right_eye: eye centres, ``left_eye`` the one with the smaller x (the subject's right eye).
        nose: nose-tip estimate (no nose cascade ships with OpenCV: always estimated).
        mouth: mouth centre.
        sources: per landmark name, how it was obtained: ``"detected"`` (a Haar cascade found it), ``"mirrored"``
            (one eye found, the other mirrored across the face's mid-line), ``"from_eyes"`` (face proportions applied
            to the eyes) or ``"from_box"`` (face proportions applied to the face box).
    """

    left_eye: tuple[float, float]
    right_eye: tuple[float, float]
    nose: tuple[float, float]
    mouth: tuple[float, float]
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return LANDMARK_NAMES

    def as_array(self, names: Sequence[str] = LANDMARK_NAMES) -> np.ndarray:
        """(K, 2) float64 points in the order of ``names``."""
        return np.array([getattr(self, n) for n in names], dtype=np.float64)

    @classmethod
    def from_array(cls, pts: np.ndarray, sources: dict[str, str]) -> Landmarks:
        """Landmarks from (4, 2) points in field order (the inverse of :meth:`as_array`)."""
        left_eye, right_eye, nose, mouth = ((float(x), float(y)) for x, y in pts)
        return cls(left_eye, right_eye, nose, mouth, sources=sources)

    def is_detected(self, name: str) -> bool:
        return self.sources.get(name) == "detected"

    @property
    def eyes_detected(self) -> int:
        """How many of the two eyes a cascade found (0, 1 or 2)."""
        return int(self.is_detected("left_eye")) + int(self.is_detected("right_eye"))

    @property
    def detected(self) -> tuple[str, ...]:
        return tuple(n for n in LANDMARK_NAMES if self.is_detected(n))

    @property
    def estimated(self) -> tuple[str, ...]:
        return tuple(n for n in LANDMARK_NAMES if not self.is_detected(n))

    @property
    def eye_distance(self) -> float:
        return float(np.hypot(*np.subtract(self.right_eye, self.left_eye)))

    @property
    def roll_deg(self) -> float:
        """Roll of the eye line (degrees, counter-clockwise positive as displayed; 0 for level eyes)."""
        dx, dy = np.subtract(self.right_eye, self.left_eye)
        return float(-math.degrees(math.atan2(dy, dx)))

    def transformed(self, matrix: np.ndarray) -> Landmarks:
        """The same landmarks mapped through a (2, 3) affine matrix (sources kept)."""
        pts = transform_points(matrix, self.as_array())
        return Landmarks.from_array(pts, dict(self.sources))


@dataclass(frozen=True)
class FaceTemplate:
    """Where the landmarks go in the aligned image, as fractions ``(fx, fy)`` of its width and height.

    Attributes:
        name: preset name.
        left_eye, right_eye: eye centres (image-left first).
        nose, mouth: nose tip and mouth centre (``mouth`` is used only with ``use_mouth=True``).
        description: where the numbers come from.
    """

    name: str
    left_eye: tuple[float, float]
    right_eye: tuple[float, float]
    nose: tuple[float, float]
    mouth: tuple[float, float]
    description: str = ""

    def points(self, size: int | tuple[int, int], names: Sequence[str] = LANDMARK_NAMES) -> np.ndarray:
        """(K, 2) template points in pixels of an output of ``size`` (``int`` or ``(width, height)``)."""
        w, h = _wh(size)
        return np.array([getattr(self, n) for n in names], dtype=np.float64) * [w, h]


TEMPLATES: dict[str, FaceTemplate] = {
    # The five-point 112x112 template of ArcFace/InsightFace divided by 112 (mouth = mean of the two corners).
    "arcface": FaceTemplate(
        "arcface",
        left_eye=(0.3419, 0.4616),
        right_eye=(0.6565, 0.4598),
        nose=(0.5002, 0.6405),
        mouth=(0.5012, 0.8240),
        description="ArcFace 112x112 five-point template / 112: a tight crop, forehead and chin cut.",
    ),
    # Median landmark positions the cascades find on the 48x48 crops (400 FER+ train images: eyes (0.293, 0.366) and
    # (0.677, 0.362), mouth (0.496, 0.785); CK+48 agrees within 0.015), made left-right symmetric. The nose follows
    # from the ArcFace proportion (0.57 eye distances below the eye line).
    "fer": FaceTemplate(
        "fer",
        left_eye=(0.307, 0.366),
        right_eye=(0.693, 0.366),
        nose=(0.500, 0.586),
        mouth=(0.500, 0.785),
        description="Median landmarks on FER2013/FER+ and CK+48 crops: the whole face, as in the FER datasets.",
    ),
}


@dataclass
class AlignmentResult:
    """Everything one alignment produced, for figures (box and landmarks on the original, aligned crop beside it).

    Attributes:
        image: the aligned image, (size, size) of the input's kind (PIL in, PIL out; numpy in, numpy out).
        matrix: (2, 3) float64 affine map from input pixels to aligned pixels (``cv2.warpAffine`` convention).
        mode: ``"aligned"`` (a face was found), ``"center_crop"`` (no face: fallback) or ``"skipped"``
            (``skip_detection=True``: the input was only resized).
        box: the face used, or None.
        landmarks: its landmarks in input pixels, or None.
        faces: every face found (largest first).
        template: the template the landmarks were mapped to.
        input_size: (width, height) of the input.
    """

    image: ImageLike
    matrix: np.ndarray
    mode: str
    box: FaceBox | None = None
    landmarks: Landmarks | None = None
    faces: list[FaceBox] = field(default_factory=list)
    template: FaceTemplate | None = None
    input_size: tuple[int, int] = (0, 0)

    @property
    def face_found(self) -> bool:
        return self.box is not None

    @property
    def fallback(self) -> bool:
        return self.mode == "center_crop"

    @property
    def eyes_detected(self) -> int:
        return 0 if self.landmarks is None else self.landmarks.eyes_detected

    @property
    def roll_deg(self) -> float | None:
        """Roll of the face in the input (degrees, counter-clockwise positive), or None without landmarks."""
        return None if self.landmarks is None else self.landmarks.roll_deg

    @property
    def aligned_landmarks(self) -> Landmarks | None:
        """The landmarks in aligned-image pixels."""
        return None if self.landmarks is None else self.landmarks.transformed(self.matrix)

    @property
    def flags(self) -> dict[str, Any]:
        """A one-line summary for tables: mode, face found, eyes detected, landmark sources."""
        return {
            "mode": self.mode,
            "face_found": self.face_found,
            "n_faces": len(self.faces),
            "eyes_detected": self.eyes_detected,
            "sources": {} if self.landmarks is None else dict(self.landmarks.sources),
            "roll_deg": self.roll_deg,
        }
