"""Label planning: the split of each identity, the expression, blend, noise and nuisances of each sample."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .actions import _CONFUSABLE_FALLBACK, ACTIONS, CONFUSABLE, OCCLUSION_TYPES
from .config import SyntheticConfig
from .identities import _STREAM_LABELS, _STREAM_SPLIT


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
    codes[perm[n_tr : n_tr + n_va]] = 1
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
    return lab[start - blocks[0] * c : stop - blocks[0] * c].astype(np.int64)


def _other_class(label: np.ndarray, u: np.ndarray, c: int) -> np.ndarray:
    """A class other than ``label``, uniform over the C - 1 others (u in [0, 1))."""
    k = np.minimum((u * (c - 1)).astype(np.int64), c - 2)
    return k + (k >= label)


def _plan_batch(
    cfg: SyntheticConfig, start: int, stop: int, split_codes: np.ndarray, protos: np.ndarray, confusable: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[np.random.Generator]]:
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
    plan = {
        "label": label,
        "identity": identity,
        "second": second,
        "weight": weight,
        "intensity": intensity,
        "noisy": noisy,
        "given": given,
        "mirror": u[:, 6] < 0.5,
        "jitter": jitter,
    }

    types = np.array([OCCLUSION_TYPES.index(t) for t in cfg.occlusion_types] or [-1])
    occ = np.where(
        u[:, 9] < cfg.occlusion_p, types[np.minimum((u[:, 10] * len(types)).astype(int), len(types) - 1)], -1
    )
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
