"""The embedded default data: a procedural generator of facial-expression images.

No FER dataset may be redistributed, so fernb's default data is *made*. Each sample is a face drawn from a vector of
facial-action parameters (loosely FACS action units: brow raise and lower, lid raise and tighten, cheek raise, nose
wrinkle, lip-corner pull and depress, lip stretch and press, jaw drop, ...). An expression class is a *prototype*
vector of those actions (:func:`expression_prototypes`); a sample scales its class prototype by an intensity, adds
the identity's resting face and a little jitter, and renders it over a per-person face geometry with pose, lighting,
occlusion, blur and sensor noise. Every nuisance has a knob in :class:`SyntheticConfig`.

What makes it a testbed rather than a toy:

* **subjects**: ``n_identities`` people with their own geometry, skin, hair and resting face; the train, valid and
  test splits are subject-disjoint (identities split ``split_fractions`` by a seeded permutation).
* **ambiguity**: a fraction ``blend_fraction`` of samples blend two expressions, ``(1 - w) * proto[a] + w * proto[b]``
  with ``w`` in ``blend_weight``; their ground-truth distribution is ``(1 - w, w)`` over ``(a, b)`` (sharpened or
  softened by ``blend_temperature``); pure samples are one-hot (or smoothed by ``label_smoothing``).
* **label noise**: ``noise_rate`` of the samples of ``noisy_splits`` get another *given* label, either uniformly
  (``"symmetric"``) or the most confusable class (``"asymmetric"``, see :data:`CONFUSABLE`). ``targets`` are the given
  labels; ``meta["true_label"]`` and ``meta["is_noisy"]`` keep the truth.

Determinism: sample ``i`` is drawn from a generator seeded by ``(seed, i)`` and identity ``k`` from ``(seed, k)``, and
labels are balanced in blocks of ``C`` consecutive samples, so a sample does not depend on ``n`` or on how the range is
chunked: generating ``[0, n)`` at once, in chunks, or in parallel gives bit-identical arrays.

Generated sets are cached as ``<cache_dir>/synthetic/<config-hash>.npz`` (default ``cache_dir``: the repository's
``data/`` folder, or ``$FERNB_CACHE_DIR``).

Example::

    from fernb.data import load_dataset
    train = load_dataset("synthetic", split="train", n=5000, size=64, seed=0)   # n counts all three splits
    test8 = load_dataset("synthetic", split="test", n=5000, classes="ferplus8")  # with contempt
    faces = generate(SyntheticConfig(n=500, noise_mode="asymmetric"))           # arrays, no cache
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import multiprocessing as mp
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ..labels import LabelSpace, get_label_space
from .base import FERDataset, register_dataset
from .cache import cache_root

__all__ = [
    "ACTIONS",
    "CONFUSABLE",
    "OCCLUSION_TYPES",
    "SyntheticConfig",
    "SyntheticFaces",
    "FaceIdentity",
    "expression_prototypes",
    "expression_actions",
    "render_face",
    "generate",
    "get_synthetic",
    "cache_path",
    "load_synthetic",
]

# Bump when the rendering or the sampling changes, so that stale caches are not reused.
GENERATOR_VERSION = 2

# -- facial actions and expression prototypes ------------------------------------------------------------------------
# Each action is a value in [0, 1]. "left"/"right" are the image's left and right (the viewer's).
ACTIONS: tuple[str, ...] = (
    "inner_brow_raise",       # AU1: inner brow ends up (oblique brows)
    "outer_brow_raise",       # AU2: outer brow ends up (arched brows)
    "brow_lower",             # AU4: brows down and drawn together, vertical glabella lines
    "upper_lid_raise",        # AU5: eyes wide, sclera above the iris
    "cheek_raise",            # AU6: lower lid pushed up, crow's feet, deeper nasolabial folds
    "lid_tighten",            # AU7: narrowed eyes, straight lower lid
    "nose_wrinkle",           # AU9: wrinkles across the nose bridge, nostrils up
    "upper_lip_raise",        # AU10: upper lip up, gap above the lower lip
    "lip_corner_pull_left",   # AU12 (left): corner up and out
    "lip_corner_pull_right",  # AU12 (right)
    "dimpler_left",           # AU14 (left): corner tightened, dimple crease
    "dimpler_right",          # AU14 (right)
    "lip_corner_depress",     # AU15: corners down
    "chin_raise",             # AU17: lower lip pushed up, chin boss crease
    "lip_stretch",            # AU20: mouth stretched sideways
    "lip_press",              # AU23/24: thin, pressed lips, narrower mouth
    "jaw_drop",               # AU25-27: mouth open, chin down
    "lid_droop",              # AU41/43: upper lids lowered
)
_A = {name: i for i, name in enumerate(ACTIONS)}
_MIRROR = np.array([_A[n.replace("_left", "_tmp").replace("_right", "_left").replace("_tmp", "_right")]
                    for n in ACTIONS])

_PROTOTYPES: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"cheek_raise": 0.9, "lid_tighten": 0.2, "lip_corner_pull_left": 1.0, "lip_corner_pull_right": 1.0,
              "upper_lip_raise": 0.2, "jaw_drop": 0.3},
    "sad": {"inner_brow_raise": 0.9, "brow_lower": 0.45, "lip_corner_depress": 0.9, "chin_raise": 0.6,
            "lid_droop": 0.45},
    "surprise": {"inner_brow_raise": 1.0, "outer_brow_raise": 1.0, "upper_lid_raise": 0.9, "jaw_drop": 0.9},
    "fear": {"inner_brow_raise": 0.9, "outer_brow_raise": 0.55, "brow_lower": 0.6, "upper_lid_raise": 1.0,
             "lid_tighten": 0.25, "lip_stretch": 1.0, "jaw_drop": 0.45},
    "disgust": {"brow_lower": 0.5, "cheek_raise": 0.45, "nose_wrinkle": 1.0, "upper_lip_raise": 0.9,
                "lip_corner_depress": 0.35, "chin_raise": 0.35},
    "angry": {"brow_lower": 1.0, "upper_lid_raise": 0.55, "lid_tighten": 0.75, "lip_press": 0.95, "chin_raise": 0.3},
    "contempt": {"lip_corner_pull_right": 1.0, "dimpler_right": 1.0, "lid_tighten": 0.2},
}

# The most confusable other class of each class (used by asymmetric label noise and confusable blends).
CONFUSABLE: dict[str, str] = {
    "neutral": "sad", "sad": "neutral", "surprise": "fear", "fear": "surprise", "disgust": "angry",
    "angry": "disgust", "happy": "contempt", "contempt": "happy",
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
        raise ValueError(f"unknown expression or action name(s) {unknown}; expressions: {', '.join(_PROTOTYPES)}; "
                         f"actions: {', '.join(ACTIONS)} (do not mix the two kinds in one mapping)")
    return {a: float(v) for a, v in zip(ACTIONS, np.clip(vec, 0.0, 1.0))}


# -- configuration -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SyntheticConfig:
    """Every knob of the synthetic face generator. Equal configs give bit-identical data.

    Attributes:
        n: number of samples over all splits (train + valid + test).
        size: image side in pixels (48, 64, 96 and 112 are tested; any size >= 32 works).
        label_space: ``"basic7"`` (neutral happy sad surprise fear disgust angry) or ``"ferplus8"`` (+ contempt).
        seed: master seed.
        n_identities: number of distinct people.
        split_fractions: fractions of the identities in (train, valid, test).
        color: RGB images with skin-tone, hair and background colours; grayscale when False.
        intensity: (low, high) range of the expression intensity, a uniform scale of the prototype.
        action_jitter: std of the per-sample Gaussian jitter added to every action.
        identity_rest: strength of each identity's resting face (e.g. a slight frown or smile at rest).
        blend_fraction: fraction of samples that blend two expressions.
        blend_weight: (low, high) range of the weight ``w`` of the second expression (kept below 0.5).
        blend_confusable_p: probability that the second expression of a blend is the confusable class.
        blend_temperature: distribution of a blend is ``(1-w, w) ** (1/T)`` renormalised (T > 1 softens).
        label_smoothing: pure samples get ``(1 - eps) * one_hot + eps / C``.
        noise_rate: probability that a sample of ``noisy_splits`` gets a wrong given label.
        noise_mode: ``"symmetric"`` (uniform over the other classes) or ``"asymmetric"`` (the confusable class).
        noisy_splits: splits whose given labels are noisy (``("train",)``: valid and test labels stay clean).
        pose_deg: max in-plane rotation (roll), degrees.
        yaw_deg: max head yaw, degrees (features shift and foreshorten).
        scale_jitter: face scale varies by ``exp(U(-s, s))``.
        shift_jitter: translation up to this fraction of the image side.
        lighting: strength in [0, 1] of the lighting nuisances (gradient, side shadow, gamma, contrast, brightness).
        occlusion_p: probability of an occluder.
        occlusion_types: occluders to choose from: ``"rect"``, ``"sunglasses"``, ``"hand"``, ``"mask"``.
        blur_p: probability of a Gaussian blur.
        blur_sigma: max blur sigma in pixels at 64 px (scaled with ``size``).
        noise_std: typical std of the additive Gaussian sensor noise (intensity scale 0..1; varies 0.5x-1.5x).
    """

    n: int = 2000
    size: int = 64
    label_space: str = "basic7"
    seed: int = 0
    n_identities: int = 200
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    color: bool = False
    intensity: tuple[float, float] = (0.5, 1.0)
    action_jitter: float = 0.08
    identity_rest: float = 0.15
    blend_fraction: float = 0.2
    blend_weight: tuple[float, float] = (0.15, 0.45)
    blend_confusable_p: float = 0.5
    blend_temperature: float = 1.0
    label_smoothing: float = 0.0
    noise_rate: float = 0.1
    noise_mode: str = "symmetric"
    noisy_splits: tuple[str, ...] = ("train",)
    pose_deg: float = 10.0
    yaw_deg: float = 15.0
    scale_jitter: float = 0.08
    shift_jitter: float = 0.04
    lighting: float = 0.5
    occlusion_p: float = 0.15
    occlusion_types: tuple[str, ...] = OCCLUSION_TYPES
    blur_p: float = 0.3
    blur_sigma: float = 1.0
    noise_std: float = 0.03

    def __post_init__(self) -> None:
        for name in ("split_fractions", "intensity", "blend_weight", "noisy_splits", "occlusion_types"):
            object.__setattr__(self, name, tuple(getattr(self, name)))  # lists from JSON or kwargs -> tuples

        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ValueError(f"SyntheticConfig: {what}")

        need(int(self.n) >= 1, f"n must be >= 1, got {self.n}")
        need(int(self.size) >= 32, f"size must be >= 32 pixels, got {self.size}")
        need(self.label_space in ("basic7", "ferplus8"),
             f"label_space must be 'basic7' or 'ferplus8', got {self.label_space!r}")
        need(int(self.n_identities) >= 3,
             f"n_identities must be >= 3 (one per split at least), got {self.n_identities}")
        need(len(self.split_fractions) == 3 and all(f >= 0 for f in self.split_fractions)
             and abs(sum(self.split_fractions) - 1) < 1e-6,
             f"split_fractions must be three non-negative numbers summing to 1, got {self.split_fractions}")
        need(0 <= self.intensity[0] <= self.intensity[1] <= 1,
             f"intensity must be 0 <= low <= high <= 1, got {self.intensity}")
        need(0 <= self.blend_fraction <= 1, f"blend_fraction must be in [0, 1], got {self.blend_fraction}")
        need(0 <= self.blend_weight[0] <= self.blend_weight[1] < 0.5,
             f"blend_weight must be 0 <= low <= high < 0.5 (the first class stays the majority), "
             f"got {self.blend_weight}")
        need(self.blend_temperature > 0, f"blend_temperature must be > 0, got {self.blend_temperature}")
        need(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        need(0 <= self.noise_rate <= 1, f"noise_rate must be in [0, 1], got {self.noise_rate}")
        need(self.noise_mode in ("symmetric", "asymmetric"),
             f"noise_mode must be 'symmetric' or 'asymmetric', got {self.noise_mode!r}")
        need(set(self.noisy_splits) <= {"train", "valid", "test"},
             f"noisy_splits must name splits among train, valid, test, got {self.noisy_splits}")
        need(set(self.occlusion_types) <= set(OCCLUSION_TYPES)
             and (len(self.occlusion_types) > 0 or self.occlusion_p == 0),
             f"occlusion_types must be a non-empty subset of {OCCLUSION_TYPES}, got {self.occlusion_types}")
        for name in ("action_jitter", "identity_rest", "pose_deg", "yaw_deg", "scale_jitter", "shift_jitter",
                     "blur_sigma", "noise_std"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("blend_confusable_p", "lighting", "occlusion_p", "blur_p"):
            need(0 <= getattr(self, name) <= 1, f"{name} must be in [0, 1], got {getattr(self, name)}")

    @property
    def space(self) -> LabelSpace:
        return get_label_space(self.label_space)

    def replace(self, **overrides: Any) -> SyntheticConfig:
        """A copy with some fields changed (unknown names raise a ``TypeError`` that lists the fields)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"SyntheticConfig has no field(s) {unknown}; fields: {', '.join(sorted(names))}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def fingerprint(self) -> str:
        """16 hex digits identifying the data this config produces (includes :data:`GENERATOR_VERSION`)."""
        blob = json.dumps({"version": GENERATOR_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# -- identities ----------------------------------------------------------------------------------------------------
_SKIN_LIGHT = np.array([0.96, 0.82, 0.72])
_SKIN_DARK = np.array([0.36, 0.23, 0.16])
_HAIR = np.array([[0.07, 0.06, 0.05], [0.22, 0.14, 0.08], [0.42, 0.28, 0.16], [0.78, 0.66, 0.42],
                  [0.62, 0.62, 0.60], [0.55, 0.25, 0.12]])
_HAIR_P = np.array([0.35, 0.25, 0.15, 0.1, 0.08, 0.07])
_IRIS = np.array([[0.28, 0.16, 0.08], [0.12, 0.08, 0.05], [0.28, 0.42, 0.62], [0.32, 0.42, 0.28]])
_REST_ACTIONS = ("inner_brow_raise", "brow_lower", "lip_corner_pull_left", "lip_corner_pull_right",
                 "lip_corner_depress", "lid_tighten", "lid_droop", "upper_lid_raise")
_STREAM_IDENTITY, _STREAM_LABELS, _STREAM_SPLIT = 1_000_001, 1_000_002, 1_000_003


@dataclass(frozen=True)
class FaceIdentity:
    """One person's face: geometry in *face units* (the face ellipse spans [-1, 1] in x and y), colours, resting face.

    Create one with :meth:`sample`; all fields are plain numbers so a notebook can tweak them with ``replace``.
    """

    face_w: float = 0.75          # half-width of the face, canvas units (the canvas spans [-1, 1])
    face_h: float = 0.95          # half-height of the face
    center_y: float = 0.08        # face centre, canvas units
    jaw_taper: float = 0.25       # narrowing of the lower face
    eye_x: float = 0.38
    eye_y: float = -0.1
    eye_w: float = 0.17           # half-width of an eye
    eye_open: float = 0.085       # upper-lid height above the eye line
    eye_low: float = 0.05         # lower-lid depth below the eye line
    iris_r: float = 0.075
    brow_gap: float = 0.17        # eye line to brow centre line
    brow_in_x: float = 0.12
    brow_out_x: float = 0.6
    brow_thick: float = 0.055
    brow_arch: float = 0.04
    nose_y: float = 0.25          # nose tip
    nose_w: float = 0.15
    mouth_y: float = 0.52
    mouth_w: float = 0.34         # half-width of the mouth
    lip_upper: float = 0.05
    lip_lower: float = 0.065
    hairline: float = -0.62
    hair_style: int = 1           # 0 bald, 1 short, 2 long, 3 fringe
    glasses: bool = False
    fold_base: float = 0.25       # visibility of the nasolabial folds at rest (age)
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
            face_w=span(5, 0.68, 0.82), face_h=span(6, 0.88, 1.02), center_y=span(7, 0.04, 0.12),
            jaw_taper=span(8, 0.12, 0.38), eye_x=span(9, 0.33, 0.43), eye_y=span(10, -0.15, -0.05),
            eye_w=span(11, 0.15, 0.19), eye_open=span(12, 0.07, 0.1), eye_low=span(13, 0.04, 0.06),
            iris_r=span(14, 0.065, 0.085), brow_gap=span(15, 0.14, 0.2), brow_in_x=span(16, 0.09, 0.15),
            brow_out_x=span(17, 0.54, 0.66), brow_thick=span(18, 0.04, 0.075), brow_arch=span(19, 0.0, 0.07),
            nose_y=span(20, 0.2, 0.3), nose_w=span(21, 0.12, 0.18), mouth_y=span(22, 0.47, 0.57),
            mouth_w=span(23, 0.3, 0.38), lip_upper=span(24, 0.035, 0.06), lip_lower=span(25, 0.05, 0.08),
            hairline=span(26, -0.72, -0.52), hair_style=style, glasses=bool(u[27] < 0.12),
            fold_base=span(28, 0.1, 0.45), skin=tuple(float(x) for x in skin), hair=tuple(float(x) for x in hair),
            iris=tuple(float(x) for x in iris), rest=tuple(float(x) for x in rest),
        )


# -- batched rendering -------------------------------------------------------------------------------------------------
# A batch of B faces is drawn in two steps: the geometry of every shape is computed for all faces at once (numpy,
# face units -> fixed-point pixels), then one loop issues the anti-aliased OpenCV calls face by face.
_ID_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(FaceIdentity)
                                    if f.name not in ("skin", "hair", "iris", "rest"))
_COLOR_FIELDS = ("skin", "hair", "iris")
_LUMA = np.array([0.299, 0.587, 0.114])
_SHIFT = 4  # fixed-point bits of the coordinates handed to OpenCV
_SCLERA = (0.93, 0.92, 0.9)


def _identity_table(idents: Sequence[FaceIdentity]) -> dict[str, np.ndarray]:
    """Stack identities into columns: scalar fields (B,), colours (B, 3), ``rest`` (B, A)."""
    table = {f: np.array([float(getattr(i, f)) for i in idents]) for f in _ID_FIELDS}
    for f in (*_COLOR_FIELDS, "rest"):
        table[f] = np.array([getattr(i, f) for i in idents], np.float64)
    return table


@functools.cache
def _curve_weights(k: int) -> np.ndarray:
    """(k, 3) weights of (start, middle, end) for the quadratic curve through the three points (middle at t=0.5)."""
    t = np.linspace(0.0, 1.0, k)
    return np.stack([(1 - t) ** 2 - t * (1 - t), 4 * t * (1 - t), t**2 - t * (1 - t)], 1)


def _curve(p0: np.ndarray, mid: np.ndarray, p1: np.ndarray, k: int = 9) -> np.ndarray:
    """(B, k, 2) quadratic curves from ``p0`` through ``mid`` to ``p1`` (each (B, 2))."""
    return _curve_weights(k) @ np.stack([p0, mid, p1], 1)


class _Ops:
    """Records the draw calls of a batch of faces (geometry vectorised over the batch), then replays them per face."""

    def __init__(self, ident: dict[str, np.ndarray], nz: dict[str, np.ndarray], m: int, color: bool) -> None:
        self.b = len(nz["yaw"])
        yaw = np.radians(nz["yaw"])
        # in-plane pose (roll, scale, shift) applied to canvas coordinates, OpenCV's convention (positive roll turns
        # the face counter-clockwise on screen)
        roll = np.radians(nz["roll"])
        self.scale, self.roll_deg = np.asarray(nz["scale"], np.float64), np.asarray(nz["roll"], np.float64)
        self.rot = np.stack([np.stack([np.cos(roll), np.sin(roll)], -1), np.stack([-np.sin(roll), np.cos(roll)], -1)],
                            -2) * self.scale[:, None, None]  # (B, 2, 2), rows map (x, y) -> x', y'
        self.offset = 2.0 * np.asarray(nz["shift"], np.float64)  # image fractions -> canvas units
        self.cosy, self.siny = np.cos(yaw), np.sin(yaw)
        self.fw, self.fh = ident["face_w"], ident["face_h"]
        self.cx = 0.16 * self.fw * self.siny  # the head turns about the neck: its centre shifts a little
        self.cy = ident["center_y"]
        self.m, self.half, self.color = m, m / 2.0, color
        self.depth = 0.8  # depth of the head ellipsoid in face units (sets how features move with yaw)
        self.ops: list[tuple[str, Any, list[tuple[float, ...]], int, list[bool] | None]] = []

    def pt(self, x: float | np.ndarray, y: float | np.ndarray) -> np.ndarray:
        """(B, 2) points from scalars or (B,) arrays."""
        return np.stack([np.broadcast_to(x, (self.b,)), np.broadcast_to(y, (self.b,))], -1).astype(np.float64)

    def const(self, q: np.ndarray) -> np.ndarray:
        """A (K, 2) constant shape repeated for the batch: (B, K, 2)."""
        return np.broadcast_to(np.asarray(q, np.float64), (self.b, *np.shape(q)))

    def col(self, rgb: Sequence[float] | np.ndarray, f: float | np.ndarray = 1.0) -> np.ndarray:
        """(B, 3) or (3,) RGB in [0, 1], times ``f`` (scalar or (B,)) -> (B, channels) colours in 0..255."""
        f = np.asarray(f, np.float64)
        c = np.asarray(rgb, np.float64) * (f[:, None] if f.ndim else f)
        c = np.clip(np.broadcast_to(c, (self.b, 3)), 0.0, 1.0) * 255.0
        return c if self.color else (c @ _LUMA)[:, None]

    def proj(self, q: np.ndarray, dz: float | np.ndarray = 0.0) -> np.ndarray:
        """Face units (B, K, 2) -> canvas units: points on the head ellipsoid, turned by the yaw."""
        qx, qy = q[..., 0], q[..., 1]
        z = self.depth * np.sqrt(np.clip(1.0 - qx**2 - qy**2, 0.0, None)) + dz
        x = self.cx[:, None] + self.fw[:, None] * (qx * self.cosy[:, None] + z * self.siny[:, None])
        y = self.cy[:, None] + self.fh[:, None] * qy
        return np.stack([x, y], -1)

    def raw(self, q: np.ndarray) -> np.ndarray:
        """Face units -> canvas units without depth (outline, hair, neck): (B, K, 2)."""
        unit = np.stack([self.fw, self.fh], -1)[:, None]
        return q * unit + np.stack([self.cx, self.cy], -1)[:, None]

    def fix(self, c: np.ndarray) -> np.ndarray:
        """Canvas units (B, K, 2) or (B, 2) -> posed fixed-point pixel coordinates (int32)."""
        flat = c.reshape(self.b, -1, 2)
        r, x, y = self.rot[:, None], flat[..., 0], flat[..., 1]
        posed = np.stack([r[..., 0, 0] * x + r[..., 0, 1] * y, r[..., 1, 0] * x + r[..., 1, 1] * y], -1)
        posed += self.offset[:, None]
        pix = np.round(((posed + 1.0) * self.half - 0.5) * (1 << _SHIFT)).reshape(c.shape)
        return np.ascontiguousarray(pix, dtype=np.int32)

    def px(self, length: float) -> int:
        """A line width in canvas units -> whole pixels (>= 1)."""
        return max(1, int(round(length * self.half)))

    def _add(self, kind: str, geom: Any, col: np.ndarray, t: int, on: np.ndarray | None) -> None:
        cols = [tuple(c) for c in col.tolist()]
        self.ops.append((kind, geom, cols, t, None if on is None else np.asarray(on, bool).tolist()))

    def poly(self, q: np.ndarray, col: np.ndarray, dz: float | np.ndarray = 0.0, raw: bool = False,
             on: np.ndarray | None = None) -> None:
        self._add("poly", self.fix(q if raw else self.proj(q, dz)), col, 0, on)

    def line(self, q: np.ndarray, col: np.ndarray, width: float, dz: float | np.ndarray = 0.0, raw: bool = False,
             on: np.ndarray | None = None) -> None:
        self._add("line", self.fix(q if raw else self.proj(q, dz)), col, self.px(width), on)

    def ellipse(self, c: np.ndarray, ax: float | np.ndarray, ay: float | np.ndarray, col: np.ndarray,
                thickness: float = -1, angle: float | np.ndarray = 0.0, dz: float = 0.0, raw: bool = False,
                on: np.ndarray | None = None) -> None:
        """Ellipses centred at (B, 2) points with half-axes in canvas units (``ax`` foreshortened by the yaw)."""
        centre = self.fix(c if raw else self.proj(c[:, None], dz)[:, 0])
        ax = np.broadcast_to(ax, (self.b,)) * (1.0 if raw else np.abs(self.cosy))
        axes = np.stack([ax, np.broadcast_to(ay, (self.b,))], -1) * (self.scale * self.half * (1 << _SHIFT))[:, None]
        geom = ([tuple(x) for x in centre.tolist()], [tuple(x) for x in np.round(axes).astype(int).tolist()],
                (np.broadcast_to(angle, (self.b,)) - self.roll_deg).tolist())
        self._add("ellipse", geom, col, -1 if thickness < 0 else self.px(thickness), on)

    def replay(self, b: int, img: np.ndarray) -> None:
        """Draw face ``b`` of the batch onto ``img`` (the supersampled canvas)."""
        aa = cv2.LINE_AA
        for kind, geom, cols, t, on in self.ops:
            if on is not None and not on[b]:
                continue
            if kind == "poly":
                cv2.fillPoly(img, [geom[b]], cols[b], aa, _SHIFT)
            elif kind == "line":
                cv2.polylines(img, [geom[b]], False, cols[b], t, aa, _SHIFT)
            else:
                cv2.ellipse(img, geom[0][b], geom[1][b], geom[2][b], 0, 360, cols[b], t, aa, _SHIFT)


def _face_ops(I: dict[str, np.ndarray], a: np.ndarray, nz: dict[str, np.ndarray], m: int, color: bool) -> _Ops:
    """Geometry of B faces. I: identity columns; a: (B, A) actions; nz: nuisance columns (see :func:`_render_batch`)."""
    g = {name: a[:, i] for name, i in _A.items()}
    p = _Ops(I, nz, m, color)
    b = p.b
    skin, hair = I["skin"], I["hair"]
    fw, fh = I["face_w"], I["face_h"]
    style = I["hair_style"].astype(int)
    eye_x, eye_y, eye_w = I["eye_x"], I["eye_y"], I["eye_w"]

    # clothing, long hair behind the head, neck, ears
    p.ellipse(p.pt(p.cx, 1.28), 1.05, 0.42, p.col(nz["clothing"]), raw=True)
    back = np.array([[-1.18, -0.2], [-1.22, 0.95], [1.22, 0.95], [1.18, -0.2]])
    p.poly(p.raw(p.const(back)), p.col(hair, 0.85), raw=True, on=style == 2)
    neck = np.array([[-0.42, 0.4], [-0.46, 1.6], [0.46, 1.6], [0.42, 0.4]])
    p.poly(p.raw(p.const(neck)), p.col(skin, 0.82), raw=True)
    ear_y = p.cy + fh * (eye_y + 0.12)
    for s in (-1.0, 1.0):
        ex = p.cx + s * fw * 0.97 * np.abs(p.cosy) - 0.25 * fw * p.siny
        p.ellipse(p.pt(ex, ear_y), 0.1 * fw, 0.16 * fh, p.col(skin, 0.9), raw=True)

    # face, then the hair over the forehead
    t = np.linspace(0.0, 2 * np.pi, 48, endpoint=False)
    st, ct = np.sin(t), np.cos(t)
    ox = ct * (1.0 - I["jaw_taper"][:, None] * np.clip(st, 0.0, None) ** 2)
    oy = st * np.where(st > 0, 1.0 + 0.1 * g["jaw_drop"][:, None], 1.0)
    p.poly(p.raw(np.stack([ox, oy], -1)), p.col(skin), raw=True)
    t = np.linspace(np.pi * 1.06, np.pi * 1.94, 15)
    cap = np.stack([1.07 * np.cos(t), 1.1 * np.sin(t) - 0.02], 1)
    fringe = (style == 3).astype(np.float64)
    hairline = _curve(p.pt(1.0, -0.28), p.pt(0.0, I["hairline"] + 0.17 * fringe), p.pt(-1.0, -0.28), 13)
    hairline[:, 1:-1:2, 1] += 0.06 * fringe[:, None]  # a ragged fringe
    pts = np.concatenate([p.const([[-1.02, -0.25], *cap, [1.02, -0.25]]), hairline], 1)
    p.poly(p.raw(pts), p.col(hair), raw=True, on=style > 0)

    # eyes and brows
    ink = p.col((0.08, 0.06, 0.05))
    brow_col = p.col(np.minimum(hair * 0.6 + 0.04, skin * 0.45))
    cheek = g["cheek_raise"]
    for s in (-1.0, 1.0):
        pull = g["lip_corner_pull_left" if s < 0 else "lip_corner_pull_right"]
        ex = s * eye_x
        hu = I["eye_open"] * (1 + 0.95 * g["upper_lid_raise"]) * (1 - 0.35 * g["lid_tighten"] - 0.25 * cheek
                                                                  - 0.5 * g["lid_droop"])
        hl = I["eye_low"] * (1 - 0.55 * g["lid_tighten"] - 0.65 * cheek - 0.15 * pull)
        hu, hl = np.maximum(hu, 0.012), np.maximum(hl, 0.006)
        inner, outer = p.pt(ex - s * eye_w, eye_y + 0.008), p.pt(ex + s * eye_w, eye_y - 0.01)
        upper = _curve(inner, p.pt(ex - s * 0.01, eye_y - hu), outer, 9)
        lower = _curve(outer, p.pt(ex + s * 0.01, eye_y + hl), inner, 7)
        p.poly(np.concatenate([upper, lower[:, 1:-1]], 1), p.col(_SCLERA))
        ic = p.pt(ex + nz["gaze"][:, 0] * 0.05, eye_y + 0.01 + nz["gaze"][:, 1] * 0.02)
        r = I["iris_r"] * fw
        p.ellipse(ic, r, r, p.col(I["iris"]), dz=0.05)
        p.ellipse(ic, 0.45 * r, 0.45 * r, p.col((0.03, 0.03, 0.03)), dz=0.05)
        # skin above the upper lid and below the lower lid hides the rest of the iris
        top = np.minimum(eye_y - hu, ic[:, 1] - I["iris_r"] * fw / fh) - 0.03
        bot = np.maximum(eye_y + hl, ic[:, 1] + I["iris_r"] * fw / fh) + 0.03
        p.poly(np.concatenate([upper, np.stack([p.pt(outer[:, 0], top), p.pt(inner[:, 0], top)], 1)], 1), p.col(skin))
        p.poly(np.concatenate([lower, np.stack([p.pt(inner[:, 0], bot), p.pt(outer[:, 0], bot)], 1)], 1), p.col(skin))
        p.line(upper, ink, 0.022)
        p.line(lower, p.col(skin, 0.7), 0.01)
        crease = _curve(inner + [0, -0.03], p.pt(ex, eye_y - hu - 0.05 - 0.03 * g["upper_lid_raise"]),
                        outer + [0, -0.04])
        p.line(crease, p.col(skin, 0.82), 0.01)
        on = cheek > 0.05  # crow's feet and the lower-lid bulge
        c = p.col(skin, 1 - 0.3 * cheek)
        x0 = ex + s * (eye_w + 0.04)
        for dy in (-0.03, 0.02, 0.07):
            p.line(np.stack([p.pt(x0, eye_y + dy * 0.5), p.pt(x0 + s * 0.08, eye_y + dy)], 1), c, 0.009, on=on)
        p.line(_curve(inner + [0, 0.06], p.pt(ex, eye_y + hl + 0.07), outer + [0, 0.06]), c, 0.01, on=on)

        bx_in = s * (I["brow_in_x"] - 0.05 * g["brow_lower"] + 0.01 * g["inner_brow_raise"])
        bx_out = s * I["brow_out_x"]
        base = eye_y - I["brow_gap"]
        by_in = base - 0.14 * g["inner_brow_raise"] + 0.09 * g["brow_lower"] + 0.05 * g["nose_wrinkle"] + 0.03
        by_out = (base - 0.12 * g["outer_brow_raise"] - 0.03 * g["inner_brow_raise"] + 0.05 * g["brow_lower"]
                  - 0.03 * g["upper_lid_raise"] + 0.01)
        arch = I["brow_arch"] + 0.05 * g["outer_brow_raise"] - 0.02 * g["brow_lower"]
        centre = _curve(p.pt(bx_in, by_in), p.pt(0.5 * (bx_in + bx_out), 0.5 * (by_in + by_out) - arch),
                        p.pt(bx_out, by_out), 9)
        th = I["brow_thick"][:, None, None] * np.linspace(1.25, 0.55, 9)[None, :, None] * np.array([0.0, 0.5])
        p.poly(np.concatenate([centre - th, (centre + th)[:, ::-1]], 1), brow_col)

    # forehead lines (brows raised) and glabella lines (brows lowered)
    raise_ = 0.5 * (g["inner_brow_raise"] + g["outer_brow_raise"])
    c = p.col(skin, 1 - 0.22 * np.minimum(1.0, raise_))
    width = 0.12 + 0.3 * g["outer_brow_raise"]
    y0 = eye_y - I["brow_gap"] - 0.13 - 0.1 * raise_
    for k in range(3):
        y = y0 - 0.08 * k
        on = (raise_ > 0.15) & ~((y < I["hairline"] + 0.06) & (style > 0))
        p.line(_curve(p.pt(-width, y + 0.015), p.pt(0.0, y - 0.01), p.pt(width, y + 0.015), 7), c, 0.01, on=on)
    c = p.col(skin, 1 - 0.3 * g["brow_lower"])
    y = eye_y - I["brow_gap"] + 0.05
    for s in (-1.0, 1.0):
        p.line(np.stack([p.pt(s * 0.035, y - 0.02), p.pt(s * 0.045, y + 0.1)], 1), c, 0.01, on=g["brow_lower"] > 0.15)

    # nose
    ny = I["nose_y"] - 0.04 * g["nose_wrinkle"] - 0.02 * g["upper_lip_raise"]
    nw = I["nose_w"] * (1 + 0.25 * g["nose_wrinkle"] + 0.1 * g["upper_lip_raise"])
    bridge = np.stack([p.pt(-0.07, eye_y + 0.04), p.pt(-0.075, 0.08), p.pt(-0.09, ny - 0.06)], 1)
    p.line(bridge, p.col(skin, 0.9), 0.012, dz=np.array([0.1, 0.2, 0.25]))
    for s in (-1.0, 1.0):
        wing = _curve(p.pt(s * nw * 0.75, ny - 0.08), p.pt(s * nw, ny - 0.01), p.pt(s * 0.05, ny + 0.045), 7)
        p.line(wing, p.col(skin, 0.72), 0.014, dz=0.12)
        p.ellipse(p.pt(s * 0.065, ny + 0.025), 0.032 * fw, 0.016 * fh, p.col(skin, 0.35), dz=0.2)
    p.line(_curve(p.pt(-0.05, ny + 0.045), p.pt(0.0, ny + 0.06), p.pt(0.05, ny + 0.045), 5), p.col(skin, 0.82),
           0.01, dz=0.22)
    c = p.col(skin, 1 - 0.4 * g["nose_wrinkle"])
    for k in range(3):
        y = eye_y + 0.07 + 0.055 * k
        p.line(_curve(p.pt(-0.1, y + 0.012), p.pt(0.0, y - 0.008), p.pt(0.1, y + 0.012), 5), c, 0.011, dz=0.15,
               on=g["nose_wrinkle"] > 0.1)

    # mouth: corners, then the inner and outer lip curves through the centre line
    my = I["mouth_y"] - 0.025 * g["chin_raise"]
    half = I["mouth_w"] * (1 + 0.3 * g["lip_stretch"] - 0.18 * g["lip_press"] - 0.15 * g["jaw_drop"])
    corners = []
    for s, side in ((-1.0, "left"), (1.0, "right")):
        pull, dimp = g[f"lip_corner_pull_{side}"], g[f"dimpler_{side}"]
        corners.append(p.pt(s * (half + 0.08 * pull - 0.03 * dimp),
                            my - 0.13 * pull + 0.11 * g["lip_corner_depress"] + 0.03 * g["lip_stretch"] - 0.04 * dimp
                            + 0.02 * g["chin_raise"]))
    left, right = corners
    gap = 0.27 * g["jaw_drop"]
    ju = my - 0.3 * gap - 0.05 * g["upper_lip_raise"]
    jl = my + 0.7 * gap
    tu = I["lip_upper"] * (1 - 0.7 * g["lip_press"]) * (1 - 0.3 * g["lip_stretch"])
    tl = I["lip_lower"] * (1 - 0.65 * g["lip_press"] + 0.3 * g["chin_raise"]) * (1 - 0.3 * g["lip_stretch"])
    up_in = _curve(left, p.pt(0.0, ju), right, 11)
    lo_in = _curve(left, p.pt(0.0, jl), right, 11)
    up_out = _curve(left, p.pt(0.0, ju - tu - 0.01), right, 11)
    up_out[:, 4:7, 1] += 0.012  # Cupid's bow
    lo_out = _curve(left, p.pt(0.0, jl + tl), right, 11)
    lips = skin * (np.array([0.78, 0.52, 0.52]) if color else 0.66)
    dz = 0.08
    is_open = jl - ju > 0.012
    p.poly(np.concatenate([up_in, lo_in[:, ::-1]], 1), p.col((0.18, 0.06, 0.06)), dz=dz, on=is_open)
    teeth_bot = up_in[:, ::-1] * [0.9, 1.0] + np.stack([np.zeros(b), np.minimum(0.6 * (jl - ju), 0.07)], -1)[:, None]
    p.poly(np.concatenate([up_in, teeth_bot], 1), p.col((0.92, 0.9, 0.86)), dz=dz, on=is_open)
    p.poly(np.concatenate([up_out, up_in[:, ::-1]], 1), p.col(lips), dz=dz)
    p.poly(np.concatenate([lo_in, lo_out[:, ::-1]], 1), p.col(lips, 1.05), dz=dz)
    p.line(up_in, p.col(lips, 0.55), 0.012, dz=dz, on=~is_open)
    for s, corner, dimp in ((-1.0, left, g["dimpler_left"]), (1.0, right, g["dimpler_right"])):
        crease = np.stack([corner + [s * 0.03, -0.07], corner + [s * 0.07, -0.01], corner + [s * 0.05, 0.06]], 1)
        p.line(crease, p.col(skin, 1 - 0.45 * dimp), 0.014, on=dimp > 0.1)

    # nasolabial folds and the chin crease
    shared = np.maximum.reduce([cheek, g["upper_lip_raise"], g["nose_wrinkle"], 0.6 * g["lip_stretch"]])
    for s, corner, side in ((-1.0, left, "left"), (1.0, right, "right")):
        fold = I["fold_base"] + 0.75 * np.maximum.reduce([shared, 0.8 * g[f"lip_corner_pull_{side}"],
                                                          0.8 * g[f"dimpler_{side}"]])
        top = p.pt(s * (nw + 0.03), ny - 0.03)
        end = corner + [s * 0.07, 0.05]
        p.line(_curve(top, p.pt(s * (np.abs(end[:, 0]) + 0.04), 0.5 * (top[:, 1] + end[:, 1])), end, 7),
               p.col(skin, 1 - 0.3 * np.minimum(fold, 1.0)), 0.012)
    y = jl + tl + 0.09
    p.line(_curve(p.pt(-0.13, y + 0.02), p.pt(0.0, y - 0.012), p.pt(0.13, y + 0.02), 5),
           p.col(skin, 1 - 0.3 * g["chin_raise"]), 0.012, on=g["chin_raise"] > 0.15)

    # glasses (an identity trait), then occluders that move with the head
    frame = p.col((0.12, 0.1, 0.1))
    glasses = I["glasses"] > 0.5
    for s in (-1.0, 1.0):
        p.ellipse(p.pt(s * eye_x, eye_y + 0.01), (eye_w + 0.08) * fw, 0.13 * fh, frame, 0.014, dz=0.1, on=glasses)
    bx = eye_x - eye_w - 0.06
    p.line(np.stack([p.pt(-bx, eye_y - 0.02), p.pt(bx, eye_y - 0.02)], 1), frame, 0.012, dz=0.2, on=glasses)
    _occluder_ops(p, I, nz, ny)
    return p


def _occluder_ops(p: _Ops, I: dict[str, np.ndarray], nz: dict[str, np.ndarray], ny: np.ndarray) -> None:
    """Sunglasses, a face mask and a hand: occluders attached to the head (``"rect"`` is added after the pose)."""
    occ, u = nz["occlusion"], nz["occlusion_u"]
    fw, fh, eye_x, eye_y, eye_w = I["face_w"], I["face_h"], I["eye_x"], I["eye_y"], I["eye_w"]

    on = occ == OCCLUSION_TYPES.index("sunglasses")
    tint = p.col(0.05 + 0.12 * u[:, :3])
    for s in (-1.0, 1.0):
        p.ellipse(p.pt(s * eye_x, eye_y + 0.02), (eye_w + 0.1) * fw, 0.15 * fh, tint, dz=0.12, on=on)
        arm = np.stack([p.pt(s * (eye_x + eye_w + 0.08), eye_y - 0.02), p.pt(s * 0.98, eye_y - 0.05)], 1)
        p.line(arm, tint, 0.02, on=on)
    p.line(np.stack([p.pt(-0.2, eye_y - 0.03), p.pt(0.2, eye_y - 0.03)], 1), tint, 0.02, dz=0.25, on=on)

    on = occ == OCCLUSION_TYPES.index("mask")
    base = np.where(u[:, :1] < 0.5, [0.78, 0.85, 0.92], [0.92, 0.92, 0.9]) * (0.85 + 0.15 * u[:, 1:2])
    top = ny - 0.12 - 0.1 * u[:, 2]
    xs = np.array([-0.97, -0.3, 0.0, 0.3, 0.97, 0.9, 0.45, 0.0, -0.45, -0.9])
    ys = np.stack([top + 0.12, top, top - 0.03, top, top + 0.12] + [np.full(p.b, v) for v in
                                                                    (0.62, 0.92, 1.02, 0.92, 0.62)], 1)
    p.poly(np.stack([np.broadcast_to(xs, ys.shape), ys], -1), p.col(base), on=on)
    for dy in (0.2, 0.45):
        p.line(np.stack([p.pt(-0.9, top + dy), p.pt(0.9, top + dy)], 1), p.col(base, 0.85), 0.01, on=on)

    on = occ == OCCLUSION_TYPES.index("hand")  # a palm over the mouth, an eye or a cheek, fingers pointing away
    side = np.where(u[:, 1] < 0.5, 1.0, -1.0)
    where = np.minimum((u[:, 0] * 3).astype(int), 2)
    tx = np.choose(where, [np.zeros(p.b), side * eye_x, side * 0.55]) + 0.2 * (u[:, 2] - 0.5)
    ty = np.choose(where, [I["mouth_y"], eye_y, I["nose_y"] + 0.15]) + 0.2 * (u[:, 3] - 0.5)
    c = p.proj(p.pt(tx, ty)[:, None], 0.3)[:, 0]
    angle = 360.0 * u[:, 4]
    skin = I["skin"] * (0.9 + 0.15 * u[:, 5:6])
    col = p.col(skin)
    pw, ph = 0.3 * fw, 0.24 * fh
    theta = np.radians(angle)
    d = np.stack([np.cos(theta), np.sin(theta)], -1)
    nrm = np.stack([-d[:, 1], d[:, 0]], -1)
    for k, length in enumerate((0.5, 0.6, 0.55, 0.42)):
        a0 = c + nrm * ((k - 1.5) * 0.34 * ph)[:, None]
        a1 = a0 + d * (pw + length * fw)[:, None]
        p.line(np.stack([a0, a1], 1), col, 0.1, raw=True, on=on)
    p.ellipse(c, pw, ph, col, angle=angle, raw=True, on=on)
    a0 = c + nrm * (0.3 * ph)[:, None] + d * (0.2 * pw)[:, None]
    p.line(np.stack([a0, a0 + d * (0.8 * pw)[:, None]], 1), p.col(skin, 0.8), 0.008, raw=True, on=on)


def _supersample(size: int) -> int:
    return max(2, math.ceil(128 / size))


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    v = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    return v[None, :], v[:, None]


@functools.lru_cache(maxsize=1)
def _log_levels() -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(np.linspace(0.0, 1.0, 1024, dtype=np.float32))


def _render_batch(I: dict[str, np.ndarray], actions: np.ndarray, nz: dict[str, np.ndarray], size: int, color: bool,
                  rngs: Sequence[np.random.Generator] | None) -> np.ndarray:
    """Render B faces.

    Args:
        I: identity columns (see :func:`_identity_table`), one row per face.
        actions: (B, A) action values in [0, 1].
        nz: nuisance columns: ``yaw``, ``roll`` (degrees), ``scale``, ``shift`` (B, 2) in image fractions, ``gaze``
            (B, 2), ``background``, ``clothing`` (B, 3) RGB, ``occlusion`` (B,) index into :data:`OCCLUSION_TYPES`
            or -1, ``occlusion_u`` (B, 6) placement, ``light_dir`` (radians), ``light_strength``, ``shadow``,
            ``contrast``, ``brightness``, ``gamma``, ``blur`` (sigma, pixels), ``noise_std``.
        size: output side. color: RGB or grayscale.
        rngs: one generator per face for the sensor noise (None: no noise).

    Returns:
        (B, size, size) uint8, or (B, size, size, 3) uint8 RGB.
    """
    ss = _supersample(size)
    m = size * ss
    ch = 3 if color else 1
    ops = _face_ops(I, actions, nz, m, color)
    bg = np.clip(nz["background"], 0.0, 1.0) * 255.0
    bg = bg if color else (bg @ _LUMA)[:, None]
    n = len(actions)
    out = np.empty((n, size, size, ch), np.float32)
    canvas = np.empty((m, m, ch) if color else (m, m), np.uint8)
    fill = np.round(bg).astype(np.uint8)
    for b in range(n):
        canvas[:] = fill[b]
        ops.replay(b, canvas)
        out[b] = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA).reshape(size, size, ch)
    out *= np.float32(1 / 255)

    rect = OCCLUSION_TYPES.index("rect")
    for b in np.flatnonzero(nz["occlusion"] == rect):  # an object between camera and face, not attached to the head
        u = nz["occlusion_u"][b]
        w, h = (0.25 + 0.25 * u[0]) * size, (0.2 + 0.25 * u[1]) * size
        x0, y0 = (0.1 + 0.8 * u[2]) * size - w / 2, (0.15 + 0.75 * u[3]) * size - h / 2
        rgb = np.array([u[4], u[5], 1 - u[4]]) * 0.9 + 0.05
        out[b, max(0, int(y0)):max(0, int(y0 + h)), max(0, int(x0)):max(0, int(x0 + w))] = \
            rgb if color else rgb @ _LUMA

    # lighting: directional gradient and a soft side shadow, then contrast about mid-grey, brightness and gamma
    def col32(key: str) -> np.ndarray:
        return np.asarray(nz[key], np.float32)[:, None, None]

    gx, gy = _grid(size)
    proj = gx * np.cos(col32("light_dir")) + gy * np.sin(col32("light_dir"))
    shade = np.clip(np.float32(0.5) - np.float32(1.5) * proj, 0.0, 1.0)  # 1 on the far side, soft edge
    field = (1.0 + col32("light_strength") * proj) * (1.0 - col32("shadow") * shade)
    out *= field[..., None]
    out -= np.float32(0.5)
    out *= col32("contrast")[..., None]
    out += (np.float32(0.5) + col32("brightness"))[..., None]
    np.clip(out, 0.0, 1.0, out=out)
    log_levels = _log_levels()
    for b in np.flatnonzero(nz["gamma"] != 1.0):  # gamma through a 1024-level table (np.power is slow)
        lut = np.exp(log_levels * np.float32(nz["gamma"][b]))
        out[b] = np.take(lut, (out[b] * np.float32(1023.0) + np.float32(0.5)).astype(np.int32))
    for b in np.flatnonzero(nz["blur"] > 0.05):
        out[b] = cv2.GaussianBlur(out[b], (0, 0), float(nz["blur"][b])).reshape(size, size, ch)
    if rngs is not None:
        for b, rng in enumerate(rngs):
            if nz["noise_std"][b] > 0:
                out[b] += rng.standard_normal((size, size, ch), dtype=np.float32) * np.float32(nz["noise_std"][b])
    img = np.clip(out * np.float32(255.0) + np.float32(0.5), 0, 255).astype(np.uint8)
    return img if color else img[..., 0]


def render_face(
    expression: str | Mapping[str, float] = "neutral",
    *,
    intensity: float = 1.0,
    identity: int | FaceIdentity = 0,
    seed: int = 0,
    size: int = 64,
    color: bool = False,
    roll: float = 0.0,
    yaw: float = 0.0,
    scale: float = 1.0,
    shift: tuple[float, float] = (0.0, 0.0),
    gaze: tuple[float, float] = (0.0, 0.0),
    occlusion: str | None = None,
    occlusion_u: Sequence[float] = (0.5, 0.5, 0.5, 0.5, 0.5, 0.5),
    lighting: float = 0.0,
    light_dir: float = 0.0,
    blur: float = 0.0,
    noise_std: float = 0.0,
    background: tuple[float, float, float] = (0.55, 0.55, 0.58),
    clothing: tuple[float, float, float] = (0.3, 0.35, 0.45),
    rest: bool = True,
) -> np.ndarray:
    """Render one face with explicit settings (for demos of each knob).

    Args:
        expression: class name, blend ``{"fear": 0.7, "surprise": 0.3}``, or explicit actions (see
            :func:`expression_actions`).
        intensity: expression intensity in [0, 1].
        identity: identity number (drawn from ``seed``) or a :class:`FaceIdentity`.
        seed: master seed the identity number refers to (and the sensor-noise seed).
        size: image side in pixels. color: RGB (True) or grayscale.
        roll: in-plane rotation, degrees. yaw: head yaw, degrees. scale: zoom. shift: (dx, dy) fraction of the side.
        gaze: iris offset (x, y) in [-1, 1].
        occlusion: None or one of :data:`OCCLUSION_TYPES`; ``occlusion_u`` (6 numbers in [0, 1]) places it.
        lighting: side-light strength in [0, 1] from direction ``light_dir`` (radians; 0 = lit from the right).
        blur: Gaussian blur sigma in pixels. noise_std: sensor noise std (0..1 intensity scale).
        background, clothing: RGB in [0, 1].
        rest: add the identity's resting face to the actions.

    Returns:
        (size, size) uint8, or (size, size, 3) uint8 RGB when ``color``.
    """
    ident = identity if isinstance(identity, FaceIdentity) else FaceIdentity.sample(seed, identity)
    acts = np.array(list(expression_actions(expression, intensity).values()))
    if rest:
        acts = np.clip(acts + np.asarray(ident.rest), 0.0, 1.0)
    if occlusion is not None and occlusion not in OCCLUSION_TYPES:
        raise ValueError(f"occlusion must be None or one of {OCCLUSION_TYPES}, got {occlusion!r}")
    nz = {
        "yaw": [yaw], "roll": [roll], "scale": [scale], "shift": [shift], "gaze": [gaze], "background": [background],
        "clothing": [clothing], "occlusion": [-1 if occlusion is None else OCCLUSION_TYPES.index(occlusion)],
        "occlusion_u": [occlusion_u], "light_dir": [light_dir], "light_strength": [0.7 * lighting],
        "shadow": [0.5 * lighting], "contrast": [1.0], "brightness": [0.0], "gamma": [1.0], "blur": [blur],
        "noise_std": [noise_std],
    }
    nz = {k: np.asarray(v, np.float64) if k != "occlusion" else np.asarray(v, np.int64) for k, v in nz.items()}
    rngs = [np.random.default_rng([int(seed), 7])] if noise_std > 0 else None
    return _render_batch(_identity_table([ident]), acts[None], nz, int(size), bool(color), rngs)[0]


# -- sampling ---------------------------------------------------------------------------------------------------------
def _confusable_index(names: Sequence[str]) -> np.ndarray:
    """(C,) index of each class's confusable class inside ``names``."""
    out = []
    for n in names:
        partner = CONFUSABLE[n]
        if partner not in names:
            partner = _CONFUSABLE_FALLBACK[n]
        out.append(names.index(partner))
    return np.array(out, np.int64)


def _identity_splits(cfg: SyntheticConfig) -> np.ndarray:
    """(n_identities,) split code of each identity: 0 train, 1 valid, 2 test (seeded permutation)."""
    n_id = cfg.n_identities
    perm = np.random.default_rng([cfg.seed, _STREAM_SPLIT]).permutation(n_id)
    f_tr, f_va, f_te = cfg.split_fractions
    n_tr = int(round(f_tr * n_id))
    n_va = int(round(f_va * n_id))
    if f_te > 0 and n_tr + n_va >= n_id:  # keep at least one test identity
        n_tr = max(0, n_id - n_va - 1)
    codes = np.full(n_id, 2, np.int64)
    codes[perm[:n_tr]] = 0
    codes[perm[n_tr:n_tr + n_va]] = 1
    return codes


_SPLITS = ("train", "valid", "test")
_N_UNIFORM = 40


def _primary_labels(cfg: SyntheticConfig, start: int, stop: int) -> np.ndarray:
    """Class of samples [start, stop): a seeded permutation of the C classes in each block of C samples."""
    c = len(cfg.space)
    if stop <= start:
        return np.zeros(0, np.int64)
    blocks = range(start // c, (stop - 1) // c + 1)
    lab = np.concatenate([np.random.default_rng([cfg.seed, _STREAM_LABELS, k]).permutation(c) for k in blocks])
    return lab[start - blocks[0] * c: stop - blocks[0] * c].astype(np.int64)


def _other_class(label: np.ndarray, u: np.ndarray, c: int) -> np.ndarray:
    """A class other than ``label``, uniform over the C - 1 others (u in [0, 1))."""
    k = np.minimum((u * (c - 1)).astype(np.int64), c - 2)
    return k + (k >= label)


def _plan_batch(cfg: SyntheticConfig, start: int, stop: int, split_codes: np.ndarray, protos: np.ndarray,
                confusable: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                                 list[np.random.Generator]]:
    """Per-sample draws of [start, stop) from generators seeded by (seed, index), then the plan, vectorised.

    Returns:
        (plan columns, nuisance columns, the per-sample generators, positioned for the sensor noise).
    """
    n = stop - start
    c = protos.shape[0]
    u = np.empty((n, _N_UNIFORM))
    jitter = np.empty((n, len(ACTIONS)))
    occ_u = np.empty((n, 6))
    rngs = []
    for j in range(n):  # a fixed sequence of draws per sample: knobs change values, never which draw feeds what
        rng = np.random.default_rng([cfg.seed, start + j])
        u[j] = rng.random(_N_UNIFORM)
        jitter[j] = rng.standard_normal(len(ACTIONS))
        occ_u[j] = rng.random(6)
        rngs.append(rng)

    label = _primary_labels(cfg, start, stop)
    identity = np.minimum((u[:, 0] * cfg.n_identities).astype(np.int64), cfg.n_identities - 1)
    blend = u[:, 1] < cfg.blend_fraction
    second = np.where(u[:, 2] < cfg.blend_confusable_p, confusable[label], _other_class(label, u[:, 3], c))
    second = np.where(blend, second, -1)
    lo, hi = cfg.blend_weight
    weight = np.where(blend, lo + (hi - lo) * u[:, 4], 0.0)
    lo, hi = cfg.intensity
    intensity = lo + (hi - lo) * u[:, 5]
    noisy_split = np.array([s in cfg.noisy_splits for s in _SPLITS])[split_codes[identity]]
    noisy = noisy_split & (u[:, 7] < cfg.noise_rate) & (c > 1)
    wrong = confusable[label] if cfg.noise_mode == "asymmetric" else _other_class(label, u[:, 8], c)
    given = np.where(noisy, wrong, label)
    plan = {"label": label, "identity": identity, "second": second, "weight": weight, "intensity": intensity,
            "noisy": noisy, "given": given, "mirror": u[:, 6] < 0.5, "jitter": jitter}

    types = np.array([OCCLUSION_TYPES.index(t) for t in cfg.occlusion_types] or [-1])
    occ = np.where(u[:, 9] < cfg.occlusion_p, types[np.minimum((u[:, 10] * len(types)).astype(int), len(types) - 1)],
                   -1)
    light = cfg.lighting
    bg_level = 0.15 + 0.75 * u[:, 18:19]
    bg = np.clip(bg_level * (1 + 0.35 * (u[:, 19:22] - 0.5)), 0, 1) if cfg.color else np.repeat(bg_level, 3, 1)
    nz = {
        "yaw": cfg.yaw_deg * (2 * u[:, 11] - 1),
        "roll": cfg.pose_deg * (2 * u[:, 12] - 1),
        "scale": np.exp(cfg.scale_jitter * (2 * u[:, 13] - 1)),
        "shift": cfg.shift_jitter * (2 * u[:, 14:16] - 1),
        "gaze": 2 * u[:, 16:18] - 1,
        "background": bg,
        "clothing": u[:, 22:25] * 0.7 + 0.1,
        "occlusion": occ,
        "occlusion_u": occ_u,
        "light_dir": 2 * np.pi * u[:, 25],
        "light_strength": light * 0.7 * u[:, 26],
        "shadow": np.where(u[:, 28] < 0.5, light * 0.6 * u[:, 27], 0.0),
        "contrast": np.exp(light * (0.8 * u[:, 29] - 0.55)),
        "brightness": light * 0.3 * (u[:, 30] - 0.5),
        "gamma": np.exp(light * 0.7 * (u[:, 31] - 0.5)),
        "blur": np.where(u[:, 32] < cfg.blur_p, cfg.blur_sigma * cfg.size / 64.0 * u[:, 33], 0.0),
        "noise_std": cfg.noise_std * (0.5 + u[:, 34]),
    }
    return plan, nz, rngs


# -- the generated set ------------------------------------------------------------------------------------------------
@dataclass
class SyntheticFaces:
    """A generated synthetic set: images, given labels, ground-truth distributions, subjects and metadata.

    Attributes:
        config: the config that made it.
        pixels: (N, H, W) uint8 grayscale or (N, H, W, 3) uint8 RGB.
        labels: (N,) int64 *given* (observed, possibly noisy) labels in ``config.label_space``.
        dists: (N, C) float32 ground-truth label distributions (rows sum to 1).
        subjects: (N,) str subject ids (``"s0042"``).
        meta: (N,) columns: ``true_label``, ``is_noisy``, ``second_label`` (-1 for pure samples), ``blend_weight``,
            ``intensity``, ``identity``, ``split`` (``"train"``/``"valid"``/``"test"``), ``occlusion`` (``""`` for
            none), ``yaw``, ``roll``.
        start: index of the first sample (non-zero for a chunk).
    """

    config: SyntheticConfig
    pixels: np.ndarray
    labels: np.ndarray
    dists: np.ndarray
    subjects: np.ndarray
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    start: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def label_space(self) -> LabelSpace:
        return self.config.space

    @property
    def class_names(self) -> list[str]:
        return list(self.label_space.names)

    def split_indices(self, split: str) -> np.ndarray:
        """Row indices of ``split`` (``"train"``, ``"valid"``, ``"test"`` or ``"all"``)."""
        if split == "all":
            return np.arange(len(self))
        if split not in _SPLITS:
            raise ValueError(f"synthetic: unknown split {split!r}; expected one of train, valid, test, all")
        return np.flatnonzero(self.meta["split"] == split)

    def to_dataset(self, split: str = "all", transform: Callable[[Image.Image], Any] | None = None) -> FERDataset:
        """A :class:`FERDataset` of one split; items carry ``dist`` and ``subject``."""
        idx = self.split_indices(split)
        mode = "RGB" if self.pixels.ndim == 4 else "L"
        return FERDataset(
            "synthetic", split, self.label_space, self.labels[idx], pixels=self.pixels[idx], dists=self.dists[idx],
            subjects=self.subjects[idx], meta={k: v[idx] for k, v in self.meta.items()}, transform=transform,
            mode=mode, source=f"synthetic config {self.config.fingerprint()}",
        )

    # -- cache files -----------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write an ``.npz`` atomically (temp file in the same folder, then ``os.replace``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"pixels": self.pixels, "labels": self.labels, "dists": self.dists, "subjects": self.subjects,
                  "config": np.array(json.dumps(self.config.to_dict(), sort_keys=True)),
                  "version": np.array(GENERATOR_VERSION), "start": np.array(self.start)}
        arrays.update({f"meta_{k}": v for k, v in self.meta.items()})
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.npz")
        try:
            with open(tmp, "xb") as fh:  # a fresh file with the usual permissions (umask), unlike mkstemp's 0600
                np.savez(fh, **arrays)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> SyntheticFaces:
        """Read a file written by :meth:`save`.

        Raises:
            ValueError: naming the file when it is not a synthetic cache or was written by another generator version.
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as exc:
            raise ValueError(f"{path}: not a readable synthetic cache ({type(exc).__name__}: {exc}); delete the file "
                             f"and it will be regenerated") from None
        missing = {"pixels", "labels", "dists", "subjects", "config", "version"} - set(data)
        if missing:
            raise ValueError(f"{path}: not a synthetic cache (missing {sorted(missing)}); delete it to regenerate")
        if int(data["version"]) != GENERATOR_VERSION:
            raise ValueError(f"{path}: written by generator version {int(data['version'])}, this is "
                             f"{GENERATOR_VERSION}; delete it to regenerate")
        cfg_dict = json.loads(str(data["config"]))
        cfg = SyntheticConfig(**cfg_dict)
        meta = {k[5:]: v for k, v in data.items() if k.startswith("meta_")}
        return cls(cfg, data["pixels"], data["labels"], data["dists"], data["subjects"], meta,
                   int(data.get("start", 0)))


_BATCH = 256


def _generate_range(cfg: SyntheticConfig, start: int, stop: int) -> SyntheticFaces:
    """Samples [start, stop) of ``cfg``, rendered in batches of :data:`_BATCH`."""
    names = cfg.space.names
    c = len(names)
    protos = _proto_matrix(names)
    confusable = _confusable_index(names)
    split_codes = _identity_splits(cfg)
    n = stop - start
    shape = (n, cfg.size, cfg.size, 3) if cfg.color else (n, cfg.size, cfg.size)
    pixels = np.empty(shape, np.uint8)
    idents: dict[int, FaceIdentity] = {}
    cols: dict[str, list[np.ndarray]] = {}
    for b0 in range(start, stop, _BATCH):
        b1 = min(stop, b0 + _BATCH)
        plan, nz, rngs = _plan_batch(cfg, b0, b1, split_codes, protos, confusable)
        ids = plan["identity"]
        for k in np.unique(ids).tolist():
            if k not in idents:
                idents[k] = FaceIdentity.sample(cfg.seed, k, cfg.identity_rest)
        table = _identity_table([idents[k] for k in ids.tolist()])
        label, second, weight = plan["label"], plan["second"], plan["weight"]
        mix = protos[label]
        blend = second >= 0
        mix[blend] = (1 - weight[blend, None]) * mix[blend] + weight[blend, None] * protos[second[blend]]
        acts = plan["intensity"][:, None] * mix + table["rest"] + cfg.action_jitter * plan["jitter"]
        acts[plan["mirror"]] = acts[plan["mirror"]][:, _MIRROR]
        acts = np.clip(acts, 0.0, 1.0)
        pixels[b0 - start:b1 - start] = _render_batch(table, acts, nz, cfg.size, cfg.color, rngs)

        dists = np.full((b1 - b0, c), cfg.label_smoothing / c, np.float64)
        dists[np.arange(b1 - b0), label] += 1 - cfg.label_smoothing
        if blend.any():
            pw = np.stack([1 - weight[blend], weight[blend]], 1) ** (1.0 / cfg.blend_temperature)
            pw /= pw.sum(1, keepdims=True)
            rows = np.flatnonzero(blend)
            dists[rows] = 0.0
            dists[rows, label[blend]] = pw[:, 0]
            dists[rows, second[blend]] = pw[:, 1]
        for key, val in (("labels", plan["given"]), ("dists", dists), ("true_label", label),
                         ("is_noisy", plan["noisy"]), ("second_label", second), ("blend_weight", weight),
                         ("intensity", plan["intensity"]), ("identity", ids), ("occlusion", nz["occlusion"]),
                         ("yaw", nz["yaw"]), ("roll", nz["roll"])):
            cols.setdefault(key, []).append(val)
    cat = {k: np.concatenate(v) for k, v in cols.items()}
    identity = cat["identity"].astype(np.int64)
    meta = {
        "true_label": cat["true_label"].astype(np.int64),
        "is_noisy": cat["is_noisy"].astype(bool),
        "second_label": cat["second_label"].astype(np.int64),
        "blend_weight": cat["blend_weight"].astype(np.float32),
        "intensity": cat["intensity"].astype(np.float32),
        "identity": identity,
        "split": np.asarray(_SPLITS, dtype="<U5")[split_codes[identity]],
        "occlusion": np.asarray(("",) + OCCLUSION_TYPES, dtype="<U10")[cat["occlusion"] + 1],
        "yaw": cat["yaw"].astype(np.float32),
        "roll": cat["roll"].astype(np.float32),
    }
    subjects = np.char.add("s", np.char.zfill(identity.astype(str), 4)).astype("<U8")
    return SyntheticFaces(cfg, pixels, cat["labels"].astype(np.int64), cat["dists"].astype(np.float32), subjects,
                          meta, start)


def _concat(parts: Sequence[SyntheticFaces]) -> SyntheticFaces:
    first = parts[0]
    return SyntheticFaces(
        first.config, np.concatenate([p.pixels for p in parts]), np.concatenate([p.labels for p in parts]),
        np.concatenate([p.dists for p in parts]), np.concatenate([p.subjects for p in parts]),
        {k: np.concatenate([p.meta[k] for p in parts]) for k in first.meta}, first.start,
    )


def generate(config: SyntheticConfig | None = None, *, start: int = 0, stop: int | None = None, workers: int = 1,
             **overrides: Any) -> SyntheticFaces:
    """Generate samples ``[start, stop)`` of a config (default: all ``config.n``), without touching the cache.

    Args:
        config: the config (default ``SyntheticConfig()``), updated by ``overrides``.
        start, stop: a chunk of the sample range; chunks concatenate to exactly the full set.
        workers: processes to render with (fresh "spawn" processes: forking a process whose OpenMP/OpenCV thread
            pools already ran can deadlock); results are identical for any value.

    Returns:
        A :class:`SyntheticFaces`.
    """
    cfg = (config or SyntheticConfig()).replace(**overrides) if overrides else (config or SyntheticConfig())
    stop = cfg.n if stop is None else stop
    if not 0 <= start <= stop <= cfg.n:
        raise ValueError(f"generate: need 0 <= start <= stop <= n={cfg.n}, got start={start}, stop={stop}")
    if stop == start:
        raise ValueError(f"generate: empty range start={start}, stop={stop}")
    workers = max(1, int(workers))
    if workers == 1 or stop - start < 256 or mp.current_process().daemon:
        return _generate_range(cfg, start, stop)
    edges = np.linspace(start, stop, workers * 4 + 1).astype(int)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init) as ex:
        parts = list(ex.map(_generate_range, [cfg] * (len(edges) - 1), edges[:-1], edges[1:]))
    return _concat(parts)


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one process per core already; OpenCV's own pool would only oversubscribe


# -- cache ------------------------------------------------------------------------------------------------------------
def cache_path(config: SyntheticConfig, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache_dir>/synthetic/<config fingerprint>.npz``.

    ``cache_dir`` defaults to ``$FERNB_CACHE_DIR``, else the repository's ``data/`` folder (``~/.cache/fernb`` when
    fernb is not run from a checkout).
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    return root / "synthetic" / f"{config.fingerprint()}.npz"


def get_synthetic(config: SyntheticConfig | None = None, *, cache: bool = True,
                  cache_dir: str | os.PathLike | None = None, workers: int | None = None,
                  **overrides: Any) -> SyntheticFaces:
    """The full generated set of a config, read from the cache when present, else generated (and cached).

    Args:
        config: the config (default ``SyntheticConfig()``), updated by ``overrides``.
        cache: read and write the cache file.
        cache_dir: cache root (see :func:`cache_path`).
        workers: rendering processes (default 1; see :func:`generate`).
    """
    cfg = (config or SyntheticConfig()).replace(**overrides) if overrides else (config or SyntheticConfig())
    path = cache_path(cfg, cache_dir)
    if cache and path.is_file():
        try:
            got = SyntheticFaces.load(path)
            if got.config == cfg and len(got) == cfg.n:
                return got
        except ValueError:
            pass  # stale or broken: regenerate and overwrite
    if workers is None:
        workers = 1  # measured: 2 processes gain nothing on 2 shared cores (rendering is ~0.7 ms per 64 px face)
    faces = generate(cfg, workers=workers)
    if cache:
        faces.save(path)
    return faces


_LAYOUT = """\
(nothing to download: the images are generated and cached)
<cache_dir>/synthetic/<config-hash>.npz   cache_dir = root=..., else $FERNB_CACHE_DIR, else the repo's data/
options: any SyntheticConfig field, e.g. n=2000 (all splits together), size=64, seed=0, classes="basic7" | "ferplus8",
         noise_rate=0.1, noise_mode="symmetric" | "asymmetric", noisy_splits=("train",), blend_fraction=0.2"""


@register_dataset("synthetic", layout=_LAYOUT, splits=("train", "valid", "test", "all"),
                  default_label_space="basic7", description="procedural faces with the basic expressions, "
                  "subject-disjoint splits, label distributions and controlled label noise", aliases=("synth",))
def load_synthetic(root: str | os.PathLike | None = None, split: str = "train", *, classes: str | None = None,
                   cache: bool = True, workers: int | None = None, **overrides: Any) -> FERDataset:
    """The synthetic data as a :class:`FERDataset` (registered as ``"synthetic"``).

    Args:
        root: cache root (default ``$FERNB_CACHE_DIR`` or the repo's ``data/``); files go to ``root/synthetic/``.
        split: ``"train"``, ``"valid"``, ``"test"`` (subject-disjoint) or ``"all"``.
        classes: the generated label space, ``"basic7"`` or ``"ferplus8"`` (the ``label_space`` field of
            :class:`SyntheticConfig`; named differently because :func:`~fernb.data.load_dataset` keeps
            ``label_space=`` for restricting any dataset to a label space afterwards).
        cache: read/write the cache.
        workers: rendering processes on a cache miss.
        **overrides: :class:`SyntheticConfig` fields (``n`` counts all splits together).
    """
    if classes is not None:
        overrides["label_space"] = classes
    faces = get_synthetic(SyntheticConfig().replace(**overrides), cache=cache, cache_dir=root, workers=workers)
    return faces.to_dataset(split)

