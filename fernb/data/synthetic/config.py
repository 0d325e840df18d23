"""Every knob of the synthetic face generator."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ...labels import LabelSpace, get_label_space
from .actions import OCCLUSION_TYPES

# Bump when the rendering or the sampling changes, so that stale caches are not reused.
GENERATOR_VERSION = 2


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
        need(
            self.label_space in ("basic7", "ferplus8"),
            f"label_space must be 'basic7' or 'ferplus8', got {self.label_space!r}",
        )
        need(
            int(self.n_identities) >= 3, f"n_identities must be >= 3 (one per split at least), got {self.n_identities}"
        )
        need(
            len(self.split_fractions) == 3
            and all(f >= 0 for f in self.split_fractions)
            and abs(sum(self.split_fractions) - 1) < 1e-6,
            f"split_fractions must be three non-negative numbers summing to 1, got {self.split_fractions}",
        )
        need(
            0 <= self.intensity[0] <= self.intensity[1] <= 1,
            f"intensity must be 0 <= low <= high <= 1, got {self.intensity}",
        )
        need(0 <= self.blend_fraction <= 1, f"blend_fraction must be in [0, 1], got {self.blend_fraction}")
        need(
            0 <= self.blend_weight[0] <= self.blend_weight[1] < 0.5,
            f"blend_weight must be 0 <= low <= high < 0.5 (the first class stays the majority), "
            f"got {self.blend_weight}",
        )
        need(self.blend_temperature > 0, f"blend_temperature must be > 0, got {self.blend_temperature}")
        need(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        need(0 <= self.noise_rate <= 1, f"noise_rate must be in [0, 1], got {self.noise_rate}")
        need(
            self.noise_mode in ("symmetric", "asymmetric"),
            f"noise_mode must be 'symmetric' or 'asymmetric', got {self.noise_mode!r}",
        )
        need(
            set(self.noisy_splits) <= {"train", "valid", "test"},
            f"noisy_splits must name splits among train, valid, test, got {self.noisy_splits}",
        )
        need(
            set(self.occlusion_types) <= set(OCCLUSION_TYPES)
            and (len(self.occlusion_types) > 0 or self.occlusion_p == 0),
            f"occlusion_types must be a non-empty subset of {OCCLUSION_TYPES}, got {self.occlusion_types}",
        )
        for name in (
            "action_jitter",
            "identity_rest",
            "pose_deg",
            "yaw_deg",
            "scale_jitter",
            "shift_jitter",
            "blur_sigma",
            "noise_std",
        ):
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
