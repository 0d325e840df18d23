"""Identities: the resting face, colours and proportions of each synthetic person."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .actions import _A, ACTIONS

_SKIN_LIGHT = np.array([0.96, 0.82, 0.72])
_SKIN_DARK = np.array([0.36, 0.23, 0.16])
_HAIR = np.array(
    [
        [0.07, 0.06, 0.05],
        [0.22, 0.14, 0.08],
        [0.42, 0.28, 0.16],
        [0.78, 0.66, 0.42],
        [0.62, 0.62, 0.60],
        [0.55, 0.25, 0.12],
    ]
)
_HAIR_P = np.array([0.35, 0.25, 0.15, 0.1, 0.08, 0.07])
_IRIS = np.array([[0.28, 0.16, 0.08], [0.12, 0.08, 0.05], [0.28, 0.42, 0.62], [0.32, 0.42, 0.28]])
_REST_ACTIONS = (
    "inner_brow_raise",
    "brow_lower",
    "lip_corner_pull_left",
    "lip_corner_pull_right",
    "lip_corner_depress",
    "lid_tighten",
    "lid_droop",
    "upper_lid_raise",
)
_STREAM_IDENTITY, _STREAM_LABELS, _STREAM_SPLIT = 1_000_001, 1_000_002, 1_000_003


def _rgb(c: np.ndarray) -> tuple[float, float, float]:
    """A (3,) colour as a tuple of floats."""
    r, g, b = (float(x) for x in c)
    return r, g, b


@dataclass(frozen=True)
class FaceIdentity:
    """One person's face: geometry in *face units* (the face ellipse spans [-1, 1] in x and y), colours, resting face.

    Create one with :meth:`sample`; all fields are plain numbers so a notebook can tweak them with ``replace``.
    """

    face_w: float = 0.75  # half-width of the face, canvas units (the canvas spans [-1, 1])
    face_h: float = 0.95  # half-height of the face
    center_y: float = 0.08  # face centre, canvas units
    jaw_taper: float = 0.25  # narrowing of the lower face
    eye_x: float = 0.38
    eye_y: float = -0.1
    eye_w: float = 0.17  # half-width of an eye
    eye_open: float = 0.085  # upper-lid height above the eye line
    eye_low: float = 0.05  # lower-lid depth below the eye line
    iris_r: float = 0.075
    brow_gap: float = 0.17  # eye line to brow centre line
    brow_in_x: float = 0.12
    brow_out_x: float = 0.6
    brow_thick: float = 0.055
    brow_arch: float = 0.04
    nose_y: float = 0.25  # nose tip
    nose_w: float = 0.15
    mouth_y: float = 0.52
    mouth_w: float = 0.34  # half-width of the mouth
    lip_upper: float = 0.05
    lip_lower: float = 0.065
    hairline: float = -0.62
    hair_style: int = 1  # 0 bald, 1 short, 2 long, 3 fringe
    glasses: bool = False
    fold_base: float = 0.25  # visibility of the nasolabial folds at rest (age)
    skin: tuple[float, float, float] = (0.8, 0.65, 0.55)
    hair: tuple[float, float, float] = (0.1, 0.08, 0.06)
    iris: tuple[float, float, float] = (0.28, 0.16, 0.08)
    rest: tuple[float, ...] = tuple(0.0 for _ in ACTIONS)

    @classmethod
    def sample(cls, seed: int, identity: int, rest_strength: float = 0.15) -> FaceIdentity:
        """Identity number ``identity`` of master seed ``seed`` (independent of everything else)."""
        rng = np.random.default_rng([int(seed), _STREAM_IDENTITY, int(identity)])
        u = rng.random(40)

        def span(i: int, lo: float, hi: float) -> float:
            return float(lo + (hi - lo) * u[i])

        tone = u[0] ** 0.9
        skin = _SKIN_LIGHT * (1 - tone) + _SKIN_DARK * tone
        hair_idx = int(np.searchsorted(np.cumsum(_HAIR_P), u[1] * _HAIR_P.sum()))
        hair = _HAIR[min(hair_idx, len(_HAIR) - 1)] * span(2, 0.85, 1.15)
        iris = _IRIS[int(u[3] * len(_IRIS)) if tone < 0.5 else int(u[3] * 2)]
        rest = np.zeros(len(ACTIONS))
        rest_vals = rng.normal(0.0, 1.0, len(_REST_ACTIONS))
        for name, v in zip(_REST_ACTIONS, rest_vals):
            rest[_A[name]] = max(0.0, v) * rest_strength
        style = int(np.searchsorted([0.1, 0.55, 0.85, 1.0], u[4]))
        return cls(
            face_w=span(5, 0.68, 0.82),
            face_h=span(6, 0.88, 1.02),
            center_y=span(7, 0.04, 0.12),
            jaw_taper=span(8, 0.12, 0.38),
            eye_x=span(9, 0.33, 0.43),
            eye_y=span(10, -0.15, -0.05),
            eye_w=span(11, 0.15, 0.19),
            eye_open=span(12, 0.07, 0.1),
            eye_low=span(13, 0.04, 0.06),
            iris_r=span(14, 0.065, 0.085),
            brow_gap=span(15, 0.14, 0.2),
            brow_in_x=span(16, 0.09, 0.15),
            brow_out_x=span(17, 0.54, 0.66),
            brow_thick=span(18, 0.04, 0.075),
            brow_arch=span(19, 0.0, 0.07),
            nose_y=span(20, 0.2, 0.3),
            nose_w=span(21, 0.12, 0.18),
            mouth_y=span(22, 0.47, 0.57),
            mouth_w=span(23, 0.3, 0.38),
            lip_upper=span(24, 0.035, 0.06),
            lip_lower=span(25, 0.05, 0.08),
            hairline=span(26, -0.72, -0.52),
            hair_style=style,
            glasses=bool(u[27] < 0.12),
            fold_base=span(28, 0.1, 0.45),
            skin=_rgb(skin),
            hair=_rgb(hair),
            iris=_rgb(iris),
            rest=tuple(float(x) for x in rest),
        )
