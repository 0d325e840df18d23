"""Facial actions (named 0-1 values of a face's muscles) and the expression prototypes built from them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# Each action is a value in [0, 1]. "left"/"right" are the image's left and right (the viewer's).
ACTIONS: tuple[str, ...] = (
    "inner_brow_raise",  # AU1: inner brow ends up (oblique brows)
    "outer_brow_raise",  # AU2: outer brow ends up (arched brows)
    "brow_lower",  # AU4: brows down and drawn together, vertical glabella lines
    "upper_lid_raise",  # AU5: eyes wide, sclera above the iris
    "cheek_raise",  # AU6: lower lid pushed up, crow's feet, deeper nasolabial folds
    "lid_tighten",  # AU7: narrowed eyes, straight lower lid
    "nose_wrinkle",  # AU9: wrinkles across the nose bridge, nostrils up
    "upper_lip_raise",  # AU10: upper lip up, gap above the lower lip
    "lip_corner_pull_left",  # AU12 (left): corner up and out
    "lip_corner_pull_right",  # AU12 (right)
    "dimpler_left",  # AU14 (left): corner tightened, dimple crease
    "dimpler_right",  # AU14 (right)
    "lip_corner_depress",  # AU15: corners down
    "chin_raise",  # AU17: lower lip pushed up, chin boss crease
    "lip_stretch",  # AU20: mouth stretched sideways
    "lip_press",  # AU23/24: thin, pressed lips, narrower mouth
    "jaw_drop",  # AU25-27: mouth open, chin down
    "lid_droop",  # AU41/43: upper lids lowered
)
_A = {name: i for i, name in enumerate(ACTIONS)}
_MIRROR = np.array(
    [_A[n.replace("_left", "_tmp").replace("_right", "_left").replace("_tmp", "_right")] for n in ACTIONS]
)

_PROTOTYPES: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {
        "cheek_raise": 0.9,
        "lid_tighten": 0.2,
        "lip_corner_pull_left": 1.0,
        "lip_corner_pull_right": 1.0,
        "upper_lip_raise": 0.2,
        "jaw_drop": 0.3,
    },
    "sad": {
        "inner_brow_raise": 0.9,
        "brow_lower": 0.45,
        "lip_corner_depress": 0.9,
        "chin_raise": 0.6,
        "lid_droop": 0.45,
    },
    "surprise": {"inner_brow_raise": 1.0, "outer_brow_raise": 1.0, "upper_lid_raise": 0.9, "jaw_drop": 0.9},
    "fear": {
        "inner_brow_raise": 0.9,
        "outer_brow_raise": 0.55,
        "brow_lower": 0.6,
        "upper_lid_raise": 1.0,
        "lid_tighten": 0.25,
        "lip_stretch": 1.0,
        "jaw_drop": 0.45,
    },
    "disgust": {
        "brow_lower": 0.5,
        "cheek_raise": 0.45,
        "nose_wrinkle": 1.0,
        "upper_lip_raise": 0.9,
        "lip_corner_depress": 0.35,
        "chin_raise": 0.35,
    },
    "angry": {"brow_lower": 1.0, "upper_lid_raise": 0.55, "lid_tighten": 0.75, "lip_press": 0.95, "chin_raise": 0.3},
    "contempt": {"lip_corner_pull_right": 1.0, "dimpler_right": 1.0, "lid_tighten": 0.2},
}

# The most confusable other class of each class (used by asymmetric label noise and confusable blends).
CONFUSABLE: dict[str, str] = {
    "neutral": "sad",
    "sad": "neutral",
    "surprise": "fear",
    "fear": "surprise",
    "disgust": "angry",
    "angry": "disgust",
    "happy": "contempt",
    "contempt": "happy",
}
_CONFUSABLE_FALLBACK: dict[str, str] = {"happy": "neutral", "contempt": "neutral"}

OCCLUSION_TYPES: tuple[str, ...] = ("rect", "sunglasses", "hand", "mask")


def expression_prototypes() -> dict[str, dict[str, float]]:
    """The action-unit prototype of each expression class, as ``{class: {action: value in [0, 1]}}``.

    Absent actions are 0. The prototypes follow the EMFACS descriptions of the basic emotions:

    * neutral: no action.
    * happy: cheek raise + lip-corner pull (AU6 + AU12), lips slightly parted.
    * sad: inner brow raise + brow lower + lip-corner depress + chin raise (AU1 + AU4 + AU15 + AU17), drooping lids.
    * surprise: inner and outer brow raise + upper lid raise + jaw drop (AU1 + AU2 + AU5 + AU26).
    * fear: AU1 + AU2 + AU4 + AU5 + AU7 + lip stretch (AU20) + jaw drop.
    * disgust: nose wrinkle + upper lip raise (AU9 + AU10) with AU15, AU17 and lowered brows.
    * angry: brow lower + upper lid raise + lid tighten + lip press (AU4 + AU5 + AU7 + AU23/24).
    * contempt: a unilateral lip-corner pull and dimpler (AU12R + AU14R); the side is mirrored at random per sample.

    Returns:
        A fresh copy (editing it does not change the generator). See :data:`ACTIONS` for the action names.
    """
    return {k: dict(v) for k, v in _PROTOTYPES.items()}


def _proto_matrix(names: Sequence[str]) -> np.ndarray:
    """(C, A) prototype matrix for the classes ``names``."""
    mat = np.zeros((len(names), len(ACTIONS)), np.float64)
    for c, name in enumerate(names):
        for act, v in _PROTOTYPES[name].items():
            mat[c, _A[act]] = v
    return mat


def expression_actions(expression: str | Mapping[str, float], intensity: float = 1.0) -> dict[str, float]:
    """The action vector of an expression, a blend of expressions, or explicit actions.

    Args:
        expression: a class name (``"happy"``), a blend ``{"fear": 0.7, "surprise": 0.3}`` (weights normalised), or
            explicit actions ``{"brow_lower": 1.0, "lip_press": 0.8}``.
        intensity: scales the expression (not explicit actions) in [0, 1].

    Returns:
        ``{action: value}`` over all :data:`ACTIONS`.
    """
    if isinstance(expression, str):
        expression = {expression: 1.0}
    keys = set(expression)
    if keys <= set(ACTIONS):
        vec = np.array([float(expression.get(a, 0.0)) for a in ACTIONS])
    elif keys <= set(_PROTOTYPES):
        total = sum(expression.values())
        if total <= 0:
            raise ValueError(f"blend weights must sum to a positive number, got {dict(expression)}")
        mat = _proto_matrix(list(expression))
        w = np.array(list(expression.values()), np.float64) / total
        vec = intensity * (w @ mat)
    else:
        unknown = sorted(keys - set(ACTIONS) - set(_PROTOTYPES))
        raise ValueError(
            f"unknown expression or action name(s) {unknown}; expressions: {', '.join(_PROTOTYPES)}; "
            f"actions: {', '.join(ACTIONS)} (do not mix the two kinds in one mapping)"
        )
    return {a: float(v) for a, v in zip(ACTIONS, np.clip(vec, 0.0, 1.0))}
