"""The dataset type every reader returns, and the registry behind :func:`fernb.data.load_dataset`."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..labels import LabelSpace
from ..registry import Registry
from .errors import CorruptImageError, DataRootError, EmptySplitError

if TYPE_CHECKING:
    from .arrays import BatchTransform

__all__ = [
    "FERDataset",
    "DatasetInfo",
    "DATASETS",
    "register_dataset",
    "resolve_root",
    "read_image",
    "restrict_label_space",
]


_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _to_8bit(im: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float image as 8-bit grey, scaled (not clipped): 16-bit by 1/257 (65535 -> 255),
    ``I`` by its bit depth (16-bit when its values fit, else 32-bit), float images in [0, 1] by 255 (else clipped)."""
    arr = np.asarray(im)
    out: np.ndarray
    if im.mode.startswith("I;16"):
        out = arr.astype(np.uint32) // 257
    elif im.mode == "I":
        top = int(arr.max()) if arr.size else 0
        out = np.clip(arr, 0, None).astype(np.uint64) // (257 if top <= 65535 else 16843009)
    else:
        a = np.nan_to_num(arr.astype(np.float32))
        out = a * 255.0 if a.size and float(a.max()) <= 1.0 + 1e-6 else a
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "L")


def read_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """Open an image fully (so truncation is caught here) and convert it to ``mode``. Images of more than 8 bits per
    channel (16-bit PNG or TIFF, 32-bit, float) are scaled to 8 bits first, not clipped to white.

    Raises:
        CorruptImageError: naming the file when it is missing, empty, truncated or not an image.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in _WIDE_MODES:
                return _to_8bit(im).convert(mode)
            return im.convert(mode)
    except FileNotFoundError:
        raise CorruptImageError(path, "file not found; the label file lists it but it is not on disk") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CorruptImageError(path, f"{type(exc).__name__}: {exc}") from None


class FERDataset(Dataset):
    """A facial-expression dataset in fernb's canonical label order.

    Each item is a dict::

        {"image": PIL.Image or transformed tensor, "label": int, "index": int,
         "dist": FloatTensor (C,)     # only when the dataset has label distributions
         "subject": str}              # only when subjects are known

    Attributes:
        name: dataset name (``"ferplus"``, ``"rafdb"``, ...).
        split: split name.
        label_space: the classes; ``targets`` index ``label_space.names`` (canonical order).
        class_names: ``label_space.names`` as a list.
        targets: (N,) int64 label indices.
        dists: (N, C) float32 label distributions (rows sum to 1) or None.
        subjects: (N,) subject ids (str) or None.
        paths: image paths (None for in-memory datasets).
        meta: per-sample extra columns (e.g. ``true_label`` of the synthetic data), each (N,).
        batch_transform: a whole-batch transform of ``pixels`` (:class:`fernb.data.arrays.BatchTransform`) or None;
            when set, the engine batches the pixels directly and ``transform`` serves single-item access only.
    """

    def __init__(
        self,
        name: str,
        split: str,
        label_space: LabelSpace,
        targets: Sequence[int] | np.ndarray,
        *,
        paths: Sequence[str | Path] | None = None,
        pixels: np.ndarray | None = None,
        dists: np.ndarray | None = None,
        subjects: Sequence[str] | np.ndarray | None = None,
        meta: dict[str, np.ndarray] | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        mode: str = "RGB",
        root: str | Path | None = None,
        source: str | Path | None = None,
        batch_transform: BatchTransform | None = None,
    ) -> None:
        if (paths is None) == (pixels is None):
            raise ValueError("give exactly one of paths= or pixels=")
        self.name, self.split, self.label_space = name, split, label_space
        self.targets = np.asarray(targets, dtype=np.int64)
        n = len(self.targets)
        if n == 0:
            raise EmptySplitError(name, split, source or root or "(memory)")
        if self.targets.min() < 0 or self.targets.max() >= len(label_space):
            raise ValueError(f"{name}/{split}: targets outside 0..{len(label_space) - 1}")
        self.paths = [Path(p) for p in paths] if paths is not None else None
        self.pixels = pixels
        self.dists = None if dists is None else np.asarray(dists, dtype=np.float32)
        self.subjects = None if subjects is None else np.asarray([str(s) for s in subjects])
        self.meta = {k: np.asarray(v) for k, v in (meta or {}).items()}
        for key, arr in [
            ("paths", self.paths),
            ("pixels", pixels),
            ("dists", self.dists),
            ("subjects", self.subjects),
            *self.meta.items(),
        ]:
            if arr is not None and len(arr) != n:
                raise ValueError(f"{name}/{split}: {key} has {len(arr)} rows, targets {n}")
        if self.dists is not None and self.dists.shape[1] != len(label_space):
            raise ValueError(
                f"{name}/{split}: dists have {self.dists.shape[1]} columns, label space {len(label_space)}"
            )
        self.transform, self.mode = transform, mode
        self.batch_transform = batch_transform
        # set by fernb.data.arrays.materialize: decoded pixels keep the identity of the samples they came from
        self.source_fingerprint: str | None = None
        self.root = Path(root) if root is not None else None

    # -- the torch Dataset protocol -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict[str, Any]:
        img = self.load_image(i)
        item: dict[str, Any] = {
            "image": self.transform(img) if self.transform else img,
            "label": int(self.targets[i]),
            "index": int(i),
        }
        if self.dists is not None:
            item["dist"] = torch.from_numpy(self.dists[i])
        if self.subjects is not None:
            item["subject"] = str(self.subjects[i])
        return item

    def load_image(self, i: int) -> Image.Image:
        """The untransformed image of sample ``i`` in ``self.mode``."""
        if self.pixels is not None:
            arr = self.pixels[i]
            img = Image.fromarray(arr, "L" if arr.ndim == 2 else "RGB")
            return img.convert(self.mode) if img.mode != self.mode else img
        assert self.paths is not None
        return read_image(self.paths[i], self.mode)

    # -- conveniences ----------------------------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return list(self.label_space.names)

    @property
    def num_classes(self) -> int:
        return len(self.label_space)

    @property
    def canonical_targets(self) -> np.ndarray:
        """Targets as indices of :data:`fernb.labels.CANONICAL`."""
        return self.label_space.to_canonical[self.targets]

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.targets, minlength=len(self.label_space))
        return {n: int(c) for n, c in zip(self.label_space.names, counts, strict=True)}

    def subset(self, indices: Sequence[int] | np.ndarray, split: str | None = None) -> FERDataset:
        """A new dataset holding the given rows (keeps labels, distributions, subjects and meta)."""
        idx = np.asarray(indices, dtype=np.int64)
        whole = len(idx) == len(self) and bool((idx == np.arange(len(self))).all())
        out = self._like(
            split or self.split,
            self.label_space,
            self.targets[idx],
            paths=[self.paths[i] for i in idx] if self.paths is not None else None,
            pixels=(self.pixels if whole else self.pixels[idx]) if self.pixels is not None else None,
            dists=self.dists[idx] if self.dists is not None else None,
            subjects=self.subjects[idx] if self.subjects is not None else None,
            meta={k: v[idx] for k, v in self.meta.items()},
        )
        if whole:
            out.source_fingerprint = self.source_fingerprint
        return out

    def _like(self, split: str, label_space: LabelSpace, targets: np.ndarray, **arrays: Any) -> FERDataset:
        """A dataset of the same (sub)class, transform, mode and root, holding other rows."""
        out = FERDataset(
            self.name,
            split,
            label_space,
            targets,
            transform=self.transform,
            mode=self.mode,
            root=self.root,
            batch_transform=self.batch_transform,
            **arrays,
        )
        out.__class__ = type(self)  # keeps a reader's subclass (e.g. one that crops face boxes) working
        return out

    def with_pixels(
        self, pixels: np.ndarray, *, meta: dict[str, np.ndarray] | None = None, fingerprint: str | None = None
    ) -> FERDataset:
        """The same samples as decoded ``pixels`` (N, H, W[, C]) uint8, in a plain :class:`FERDataset` (a reader's
        subclass may read its images from paths, which the pixels replace); labels, distributions, subjects,
        transforms, mode and root are kept, ``meta`` replaces the meta when given. The new split reports
        ``fingerprint`` as its own (default: this split's, the files the pixels were decoded from)."""
        out = FERDataset(
            self.name,
            self.split,
            self.label_space,
            self.targets,
            pixels=pixels,
            dists=self.dists,
            subjects=self.subjects,
            meta=dict(self.meta) if meta is None else meta,
            transform=self.transform,
            mode=self.mode,
            root=self.root,
            batch_transform=self.batch_transform,
        )
        out.source_fingerprint = fingerprint or self.fingerprint()
        return out

    def with_transform(self, transform: Callable[[Image.Image], Any] | None) -> FERDataset:
        """The same samples with another transform (shares the underlying arrays)."""
        new = self.subset(np.arange(len(self)))
        new.transform = transform
        return new

    def with_batch_transform(self, batch_transform: BatchTransform | None) -> FERDataset:
        """The same samples with a whole-batch transform (:class:`fernb.data.arrays.BatchTransform`); the engine
        then batches its ``pixels`` directly instead of transforming image by image."""
        if batch_transform is not None and self.pixels is None:
            raise ValueError(
                f"{self.name}/{self.split}: a batch transform needs decoded pixels; use "
                "fernb.data.arrays.materialize(ds, img_size) first"
            )
        new = self.subset(np.arange(len(self)))
        new.batch_transform = batch_transform
        return new

    def fingerprint(self) -> str:
        """A short hash of the sample list and labels (recorded in run records); a split decoded into an array at
        some size keeps the fingerprint of the files it was decoded from."""
        if self.source_fingerprint is not None:
            return self.source_fingerprint
        h = hashlib.sha256()
        h.update(f"{self.name}|{self.split}|{','.join(self.label_space.names)}|{len(self)}".encode())
        h.update(self.targets.tobytes())
        if self.paths is not None:
            for p in self.paths:
                h.update(p.name.encode())
        else:
            h.update(hashlib.sha256(np.ascontiguousarray(self.pixels).tobytes()).digest())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        extra = []
        if self.dists is not None:
            extra.append("dists")
        if self.subjects is not None:
            extra.append(f"{len(set(self.subjects))} subjects")
        counts = ", ".join(f"{k} {v}" for k, v in self.class_counts().items())
        return (
            f"FERDataset({self.name!r}, split={self.split!r}, n={len(self)}, classes=[{counts}]"
            + (f", {', '.join(extra)}" if extra else "")
            + ")"
        )


# -- registry ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetInfo:
    """What a reader reads and how its data root must look."""

    name: str
    loader: Callable[..., FERDataset]
    layout: str
    splits: tuple[str, ...]
    default_label_space: str
    dirname: str
    description: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def env_var(self) -> str:
        return f"FERNB_{self.name.upper()}_ROOT"


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register_dataset(
    name: str,
    *,
    layout: str,
    splits: Sequence[str],
    default_label_space: str,
    dirname: str | None = None,
    description: str = "",
    aliases: Sequence[str] = (),
) -> Callable[[Callable[..., FERDataset]], Callable[..., FERDataset]]:
    """Decorator registering a reader ``fn(root: Path, split: str, **options) -> FERDataset``."""

    def deco(fn: Callable[..., FERDataset]) -> Callable[..., FERDataset]:
        DATASETS.add(
            name,
            DatasetInfo(
                name, fn, layout, tuple(splits), default_label_space, dirname or name, description, tuple(aliases)
            ),
            aliases=tuple(aliases),
        )
        return fn

    return deco


def resolve_root(info: DatasetInfo, root: str | os.PathLike | None) -> Path:
    """The data root for a dataset: ``root``, else ``$FERNB_<NAME>_ROOT``, else ``$FERNB_DATA_ROOT/<dirname>``.

    Raises:
        DataRootError: printing the expected layout when none is given or the folder does not exist.
    """
    if root is None:
        if os.environ.get(info.env_var):
            root = os.environ[info.env_var]
        elif os.environ.get("FERNB_DATA_ROOT"):
            root = Path(os.environ["FERNB_DATA_ROOT"]) / info.dirname
    if root is None:
        raise DataRootError(info.name, None, "no data root given", info.layout, info.env_var)
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataRootError(
            info.name, path, "the data root does not exist or is not a folder", info.layout, info.env_var
        )
    return path


def restrict_label_space(ds: FERDataset, space: LabelSpace) -> FERDataset:
    """Re-express a dataset in another label space, dropping samples whose class the space lacks."""
    table = space.map_from(ds.label_space)
    new_targets = table[ds.targets]
    keep = np.flatnonzero(new_targets >= 0)
    sub = ds.subset(keep)
    dists = None
    if ds.dists is not None:
        assert sub.dists is not None
        cols = [int(np.flatnonzero(table == j)[0]) if (table == j).any() else -1 for j in range(len(space))]
        d = np.stack([sub.dists[:, c] if c >= 0 else np.zeros(len(sub), np.float32) for c in cols], axis=1)
        s = d.sum(1, keepdims=True)
        dists = np.where(s > 0, d / np.maximum(s, 1e-12), 0).astype(np.float32)
    meta = {k: _remap_label_column(v, table) if k.endswith("_label") else v for k, v in sub.meta.items()}
    return sub._like(
        ds.split,
        space,
        new_targets[keep],
        paths=sub.paths,
        pixels=sub.pixels,
        dists=dists,
        subjects=sub.subjects,
        meta=meta,
    )


def _remap_label_column(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Class indices of a ``*_label`` meta column (e.g. the synthetic ``true_label``) in the new space; -1 stays -1
    and marks classes the new space lacks."""
    if not np.issubdtype(values.dtype, np.integer):
        return values
    return np.where(values >= 0, table[np.clip(values, 0, len(table) - 1)], -1).astype(values.dtype)
