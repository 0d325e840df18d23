"""The generated set (:class:`SyntheticFaces`) and its generation, in chunks and in worker processes."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ...labels import LabelSpace
from ..base import FERDataset
from .actions import _MIRROR, OCCLUSION_TYPES, _proto_matrix
from .config import GENERATOR_VERSION, SyntheticConfig
from .identities import FaceIdentity
from .render import _identity_table, _render_batch
from .sampling import _SPLITS, _confusable_index, _identity_splits, _plan_batch


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
            "synthetic",
            split,
            self.label_space,
            self.labels[idx],
            pixels=self.pixels[idx],
            dists=self.dists[idx],
            subjects=self.subjects[idx],
            meta={k: v[idx] for k, v in self.meta.items()},
            transform=transform,
            mode=mode,
            source=f"synthetic config {self.config.fingerprint()}",
        )

    # -- cache files -----------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write an ``.npz`` atomically (temp file in the same folder, then ``os.replace``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            "pixels": self.pixels,
            "labels": self.labels,
            "dists": self.dists,
            "subjects": self.subjects,
            "config": np.array(json.dumps(self.config.to_dict(), sort_keys=True)),
            "version": np.array(GENERATOR_VERSION),
            "start": np.array(self.start),
        }
        arrays.update({f"meta_{k}": v for k, v in self.meta.items()})
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.npz")
        try:
            with open(tmp, "xb") as fh:  # a fresh file with the usual permissions (umask), unlike mkstemp's 0600
                np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy stubs: **kwds also meets allow_pickle: bool
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
            raise ValueError(
                f"{path}: not a readable synthetic cache ({type(exc).__name__}: {exc}); delete the file "
                f"and it will be regenerated"
            ) from None
        missing = {"pixels", "labels", "dists", "subjects", "config", "version"} - set(data)
        if missing:
            raise ValueError(f"{path}: not a synthetic cache (missing {sorted(missing)}); delete it to regenerate")
        if int(data["version"]) != GENERATOR_VERSION:
            raise ValueError(
                f"{path}: written by generator version {int(data['version'])}, this is "
                f"{GENERATOR_VERSION}; delete it to regenerate"
            )
        cfg_dict = json.loads(str(data["config"]))
        cfg = SyntheticConfig(**cfg_dict)
        meta = {k[5:]: v for k, v in data.items() if k.startswith("meta_")}
        return cls(
            cfg, data["pixels"], data["labels"], data["dists"], data["subjects"], meta, int(data.get("start", 0))
        )


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
        pixels[b0 - start : b1 - start] = _render_batch(table, acts, nz, cfg.size, cfg.color, rngs)

        dists = np.full((b1 - b0, c), cfg.label_smoothing / c, np.float64)
        dists[np.arange(b1 - b0), label] += 1 - cfg.label_smoothing
        if blend.any():
            pw = np.stack([1 - weight[blend], weight[blend]], 1) ** (1.0 / cfg.blend_temperature)
            pw /= pw.sum(1, keepdims=True)
            rows = np.flatnonzero(blend)
            dists[rows] = 0.0
            dists[rows, label[blend]] = pw[:, 0]
            dists[rows, second[blend]] = pw[:, 1]
        for key, val in (
            ("labels", plan["given"]),
            ("dists", dists),
            ("true_label", label),
            ("is_noisy", plan["noisy"]),
            ("second_label", second),
            ("blend_weight", weight),
            ("intensity", plan["intensity"]),
            ("identity", ids),
            ("occlusion", nz["occlusion"]),
            ("yaw", nz["yaw"]),
            ("roll", nz["roll"]),
        ):
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
    return SyntheticFaces(
        cfg, pixels, cat["labels"].astype(np.int64), cat["dists"].astype(np.float32), subjects, meta, start
    )


def _concat(parts: Sequence[SyntheticFaces]) -> SyntheticFaces:
    first = parts[0]
    return SyntheticFaces(
        first.config,
        np.concatenate([p.pixels for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.dists for p in parts]),
        np.concatenate([p.subjects for p in parts]),
        {k: np.concatenate([p.meta[k] for p in parts]) for k in first.meta},
        first.start,
    )


def generate(
    config: SyntheticConfig | None = None,
    *,
    start: int = 0,
    stop: int | None = None,
    workers: int = 1,
    **overrides: Any,
) -> SyntheticFaces:
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
