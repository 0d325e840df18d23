"""Fast input for CPU budgets: a split decoded once into a uint8 array, augmented a whole batch at a time.

The per-sample PIL pipelines of :mod:`fernb.data.transforms` reproduce the official recipes, but on a 2-core CPU
decoding and augmenting image by image costs as much as the forward pass of a small network. Here instead:

- :func:`materialize` decodes every image of a split once, resized to the network input, into a ``(N, S, S)`` (gray)
  or ``(N, S, S, 3)`` uint8 array, cached on disk (``<cache_root>/arrays/``) and memory-mapped on later runs;
- :class:`BatchTransform` turns a ``(B, S, S[, 3])`` uint8 batch into the normalised ``(B, C, S, S)`` float input:
  on training batches one ``grid_sample`` applies a per-sample affine warp (flip, rotation, zoom, shift), then
  random erasing; every draw comes from a generator the caller passes, so a batch is a pure function of its seed;
- :class:`ArrayBatches` iterates a dataset's samples in a given order as the engine's batches
  (``{"image", "label", "index", "dist"}``), seeding batch ``b`` of epoch ``e`` from ``(seed, e, stream, b)``:
  a run resumed mid-epoch draws the same augmentation as one that was never interrupted.

A dataset takes part when it holds ``pixels`` and a ``batch_transform`` (:meth:`FERDataset.with_batch_transform`);
:func:`fernb.engine.data.make_loader` then hands out :class:`ArrayBatches` instead of a DataLoader.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .base import FERDataset
from .cache import cache_root

__all__ = ["BatchTransform", "ArrayBatches", "materialize", "array_cache_path", "batch_generator"]

_VERSION = 1  # bump when what is cached changes meaning


@dataclass(frozen=True)
class BatchTransform:
    """uint8 batch -> normalised float batch, with optional whole-batch augmentation.

    Attributes:
        channels: output channels (3 replicates a gray image; 1 keeps a single luminance channel).
        mean, std: per-channel normalisation of pixels in [0, 1]; None: pixels / 255 only.
        bgr: reverse the channel order after conversion (ESR's released weights expect BGR).
        hflip: probability of a horizontal flip.
        degrees: rotation drawn uniformly from [-degrees, degrees].
        scale: zoom factor range (1.1 = the face appears 10 % larger).
        translate: shift drawn uniformly from [-translate, translate] of the side, per axis.
        erase_p: probability of erasing one rectangle (after the warp, before normalisation: it is black).
        erase_scale: range of the erased area as a fraction of the image.
        erase_ratio: range of the rectangle's aspect ratio (drawn log-uniformly).
        padding: ``grid_sample`` padding of the warp (``"zeros"``: black, ``"border"``, ``"reflection"``).
        train: augment; False applies only conversion and normalisation (the evaluation path).
    """

    channels: int = 3
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    bgr: bool = False
    hflip: float = 0.5
    degrees: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.1
    erase_p: float = 0.5
    erase_scale: tuple[float, float] = (0.02, 0.25)
    erase_ratio: tuple[float, float] = (0.3, 3.3)
    padding: str = "zeros"
    train: bool = True

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"BatchTransform.channels={self.channels}; expected 1 or 3")
        if (self.mean is None) != (self.std is None):
            raise ValueError("BatchTransform: give both mean and std, or neither")
        if self.padding not in ("zeros", "border", "reflection"):
            raise ValueError(f"BatchTransform.padding={self.padding!r}; expected zeros, border or reflection")
        for name in ("hflip", "erase_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"BatchTransform.{name}={getattr(self, name)}; expected a probability in [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def eval_view(self) -> BatchTransform:
        """The same conversion and normalisation without augmentation."""
        return BatchTransform(channels=self.channels, mean=self.mean, std=self.std, bgr=self.bgr, train=False)

    def __call__(self, pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, H, W) or (B, H, W, 3) uint8 -> (B, channels, H, W) float32."""
        x = pixels.float().div_(255)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        if x.shape[1] == 3 and self.channels == 1:
            x = 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]
        if self.train and len(x):
            if generator is None:
                raise ValueError("a training BatchTransform needs the batch's generator")
            x = self._warp(x, generator)
            x = self._erase(x, generator)
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        if self.bgr and x.shape[1] == 3:
            x = x.flip(1)
        if self.mean is not None:
            mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x.contiguous()

    def _uniform(self, n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
        return torch.rand(n, generator=gen) * (hi - lo) + lo

    def _warp(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        flip = torch.where(torch.rand(b, generator=gen) < self.hflip, -1.0, 1.0)
        angle = self._uniform(b, -self.degrees, self.degrees, gen) * (math.pi / 180)
        zoom = self._uniform(b, self.scale[0], self.scale[1], gen)
        shift = self._uniform(2 * b, -2 * self.translate, 2 * self.translate, gen).view(2, b)  # [-1, 1] coordinates
        if self.degrees == 0 and self.scale == (1.0, 1.0) and self.translate == 0 and bool((flip > 0).all()):
            return x
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        # output -> input sampling: x_in = R(angle) / zoom @ (flip * x_out) + shift
        theta = torch.stack(
            [torch.stack([cos * flip, -sin, shift[0]], 1), torch.stack([sin * flip, cos, shift[1]], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=self.padding, align_corners=False)

    def _erase(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        area = self._uniform(b, self.erase_scale[0], self.erase_scale[1], gen) * (h * w)
        ratio = torch.exp(self._uniform(b, math.log(self.erase_ratio[0]), math.log(self.erase_ratio[1]), gen))
        eh = (area * ratio).sqrt().round().clamp(1, h).long()
        ew = (area / ratio).sqrt().round().clamp(1, w).long()
        top = (torch.rand(b, generator=gen) * (h - eh + 1).float()).long()
        left = (torch.rand(b, generator=gen) * (w - ew + 1).float()).long()
        on = torch.rand(b, generator=gen) < self.erase_p
        if self.erase_p == 0 or not bool(on.any()):
            return x
        rows = torch.arange(h).view(1, h, 1)
        cols = torch.arange(w).view(1, 1, w)
        box = (
            (rows >= top.view(-1, 1, 1))
            & (rows < (top + eh).view(-1, 1, 1))
            & (cols >= left.view(-1, 1, 1))
            & (cols < (left + ew).view(-1, 1, 1))
            & on.view(-1, 1, 1)
        )
        return x.masked_fill(box.unsqueeze(1), 0.0)


def batch_generator(seed: int, epoch: int, stream: int, batch: int) -> torch.Generator:
    """The generator of batch ``batch`` of ``epoch`` in ``stream`` (a DDP rank): a pure function of the four."""
    g = torch.Generator()
    g.manual_seed(int(np.random.default_rng([seed, epoch, stream, batch, 17]).integers(2**62)))
    return g


class ArrayBatches:
    """Batches of a dataset with ``pixels`` and a ``batch_transform``, visiting ``indices`` in order.

    Args:
        ds: the dataset.
        indices: sample positions in visiting order.
        batch_size: samples per batch.
        seed, epoch, stream: seed the per-batch generators (see :func:`batch_generator`).
        first_batch: number of the first batch (a run resumed at batch k of an epoch passes k, so that batch k gets
            the same augmentation as in an uninterrupted run).
        drop_last: drop the last incomplete batch.
    """

    def __init__(
        self,
        ds: FERDataset,
        indices: Sequence[int] | np.ndarray,
        batch_size: int,
        *,
        seed: int = 0,
        epoch: int = 0,
        stream: int = 0,
        first_batch: int = 0,
        drop_last: bool = False,
    ) -> None:
        if ds.pixels is None or ds.batch_transform is None:
            raise ValueError(
                f"{ds.name}/{ds.split}: ArrayBatches needs a dataset with pixels and a batch_transform "
                "(fernb.data.arrays.materialize, then with_batch_transform)"
            )
        self.ds, self.indices = ds, np.asarray(indices, dtype=np.int64)
        self.batch_size, self.seed, self.epoch, self.stream = int(batch_size), seed, epoch, stream
        self.first_batch, self.drop_last = first_batch, drop_last

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        ds, bt, pixels = self.ds, self.ds.batch_transform, self.ds.pixels
        assert bt is not None and pixels is not None
        for b in range(len(self)):
            idx = self.indices[b * self.batch_size : (b + 1) * self.batch_size]
            # sorted reads are faster on a memory map; the batch keeps its order
            order = np.argsort(idx, kind="stable")
            raw = np.empty((len(idx), *pixels.shape[1:]), dtype=np.uint8)
            raw[order] = pixels[idx[order]]
            gen = batch_generator(self.seed, self.epoch, self.stream, self.first_batch + b) if bt.train else None
            batch: dict[str, Any] = {
                "image": bt(torch.from_numpy(raw), gen),
                "label": torch.from_numpy(ds.targets[idx]),
                "index": torch.from_numpy(idx),
            }
            if ds.dists is not None:
                batch["dist"] = torch.from_numpy(ds.dists[idx])
            yield batch


# -- decoding once ----------------------------------------------------------------------------------------------------
def _source_key(ds: FERDataset, size: int) -> str:
    h = hashlib.sha256(f"v{_VERSION}|{ds.fingerprint()}|{size}|{ds.mode}|{type(ds).__name__}".encode())
    if ds.paths is not None:
        for p in ds.paths:
            st = p.stat() if p.exists() else None
            h.update(f"{p.resolve()}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}\n".encode())
    return h.hexdigest()[:20]


def array_cache_path(ds: FERDataset, size: int, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache_dir>/arrays/<name>-<split>-<size>px-<key>.npy``; the key hashes the sample list and the files'
    paths, sizes and modification times, so an edited dataset is decoded again."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    return root / "arrays" / f"{ds.name}-{ds.split}-{size}px-{_source_key(ds, size)}.npy"


def _decode(ds: FERDataset, size: int, progress: bool) -> np.ndarray:
    from tqdm.auto import tqdm

    first = np.asarray(ds.load_image(0).resize((size, size), Image.Resampling.BILINEAR))
    out = np.empty((len(ds), *first.shape), dtype=np.uint8)
    gray = first.ndim == 2 or bool((first[..., 0] == first[..., 1]).all() and (first[..., 1] == first[..., 2]).all())
    for i in tqdm(
        range(len(ds)),
        desc=f"decoding {ds.name}/{ds.split} at {size} px",
        disable=not progress,
        leave=False,
        mininterval=1.0,
    ):
        img = ds.load_image(i)
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        a = np.asarray(img)
        out[i] = a
        if gray and a.ndim == 3 and not ((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()):
            gray = False
    return out[..., 0].copy() if gray and out.ndim == 4 else out


def materialize(
    ds: FERDataset, size: int, *, cache: bool = True, cache_dir: str | os.PathLike | None = None, progress: bool = True
) -> FERDataset:
    """The dataset with every image decoded once at ``size`` x ``size`` into uint8 ``pixels``.

    Gray images (FER2013, FER+, CK+, JAFFE, also when stored as RGB) are kept as one channel ``(N, S, S)``; colour
    ones as ``(N, S, S, 3)``. The resize is PIL's bilinear one, the same as the per-sample pipelines' ``Resize``.
    With ``cache`` the array is written to :func:`array_cache_path` (atomically) and memory-mapped next time.
    A dataset that already holds pixels of that size comes back as it is.
    """
    if ds.pixels is not None and ds.pixels.shape[1:3] == (size, size):
        return ds
    path = array_cache_path(ds, size, cache_dir) if cache else None
    pixels = None
    if path is not None and path.is_file():
        try:
            pixels = np.load(path, mmap_mode="r")
            if len(pixels) != len(ds) or pixels.shape[1:3] != (size, size):
                pixels = None
        except (OSError, ValueError):
            pixels = None
    if pixels is None:
        pixels = _decode(ds, size, progress)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, pixels)
            os.replace(tmp, path)
            pixels = np.load(path, mmap_mode="r")
    return ds.with_pixels(pixels)  # a plain FERDataset that keeps the decoded files' fingerprint
