"""Batched inference over a dataset, shared by validation inside ``fit`` and by ``evaluate``."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn

from ..data.base import FERDataset
from .config import TTA_MODES
from .data import make_loader
from .distributed import DistEnv
from .metrics import softmax

if TYPE_CHECKING:
    from ..models import ModelOutput

__all__ = ["Predictions", "predict", "autocast_context", "float_output"]


@dataclass
class Predictions:
    """Model outputs over a dataset, in dataset order.

    Attributes:
        logits: (N, C) float32.
        targets: (N,) int64 labels.
        indices: (N,) int64 dataset positions.
        dists: (N, C) reference label distributions, or None.
        extras: the named per-sample outputs asked for with ``predict(..., extras=...)`` (``embedding``,
            ARBEx's ``primary_dist``, ...), each (N, ...) float32.
    """

    logits: np.ndarray
    targets: np.ndarray
    indices: np.ndarray
    dists: np.ndarray | None = None
    extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def probs(self) -> np.ndarray:
        return softmax(self.logits, axis=1)

    @property
    def preds(self) -> np.ndarray:
        return self.logits.argmax(1)

    def __len__(self) -> int:
        return len(self.targets)


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``bf16``/``fp16``, a no-op for ``fp32``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def float_output(out: object) -> object:
    """The model output with half-precision floating tensors cast to float32 (losses run in fp32)."""
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        changes = {
            f.name: getattr(out, f.name).float()
            for f in dataclasses.fields(out)
            if isinstance(getattr(out, f.name), torch.Tensor)
            and getattr(out, f.name).dtype in (torch.float16, torch.bfloat16)
        }
        return dataclasses.replace(out, **changes) if changes else out
    if isinstance(out, torch.Tensor) and out.dtype in (torch.float16, torch.bfloat16):
        return out.float()
    return out


def _logits(out: torch.Tensor | ModelOutput) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.logits


def _extras(out: torch.Tensor | ModelOutput, names: Sequence[str] | Literal[True]) -> dict[str, torch.Tensor]:
    available = out.extras() if hasattr(out, "extras") else {}
    if names is True:
        return available
    missing = [n for n in names if n not in available]
    if missing:
        raise KeyError(f"{type(out).__name__} has no per-sample output(s) {missing}; it has {sorted(available)}")
    return {n: available[n] for n in names}


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: FERDataset,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    env: DistEnv | None = None,
    num_workers: int = 0,
    order: str = "shuffled",
    seed: int = 0,
    extras: Sequence[str] | bool = (),
    channels_last: bool = False,
    tta: str = "none",
) -> Predictions:
    """Run ``model`` in eval mode over ``dataset``; the predictions come back in dataset order.

    Args:
        order: ``"shuffled"`` batches the samples in a seeded random order, ``"sequential"`` in dataset order. It
            matters only for models whose prediction depends on the rest of the batch (ARM's batch mean, ARBEx's
            batch attention): readers list samples class by class, so sequential batches are nearly single-class
            and leak the label through the batch statistics (baselines.md §2.6).
        seed: seed of the shuffled order.
        extras: names of the output's per-sample extras to keep (``True``: all of them).
        channels_last: feed the images in channels-last memory (for a model placed so, ``run.channels_last``).
        tta: ``"flip"`` averages the logits of each image and of its mirror image (the mirrored batch is the same
            samples, so batch-dependent models see the same company); the extras come from the unflipped pass.

    Under DDP each process predicts every ``world_size``-th sample and the results are gathered, so every process
    returns the full predictions. The model's mode is restored afterwards.
    """
    if order not in ("shuffled", "sequential"):
        raise ValueError(f"order={order!r}; expected shuffled or sequential")
    if tta not in TTA_MODES:
        raise ValueError(f"tta={tta!r}; expected one of {', '.join(TTA_MODES)}")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    idx = (
        np.arange(len(dataset)) if order == "sequential" else np.random.default_rng([seed, 5]).permutation(len(dataset))
    )
    if env is not None and env.distributed:
        idx = idx[env.rank :: env.world_size]
    loader = make_loader(dataset, idx, batch_size, num_workers=num_workers)
    logits, targets, indices, dists = [], [], [], []
    kept: dict[str, list[np.ndarray]] = {}
    try:
        for batch in loader:
            x = batch["image"].to(device, non_blocking=True)
            if channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, precision):
                out = model(x)
                mirrored = model(x.flip(-1)) if tta == "flip" else None
            lg_batch = _logits(out).float()
            if mirrored is not None:
                lg_batch = (lg_batch + _logits(mirrored).float()) / 2
            logits.append(lg_batch.cpu().numpy())
            if extras:
                for name, value in _extras(out, extras).items():
                    kept.setdefault(name, []).append(value.float().cpu().numpy())
            targets.append(batch["label"].numpy())
            indices.append(batch["index"].numpy())
            if "dist" in batch:
                dists.append(batch["dist"].float().numpy())
    finally:
        model.train(was_training)
    num_classes = dataset.num_classes
    lg = np.concatenate(logits) if logits else np.zeros((0, num_classes), np.float32)
    tg = np.concatenate(targets) if targets else np.zeros(0, np.int64)
    ix = np.concatenate(indices) if indices else np.zeros(0, np.int64)
    ds = None
    if dataset.dists is not None:  # decided by the dataset, so that every process takes part in the gather
        ds = np.concatenate(dists) if dists else np.zeros((0, num_classes), np.float32)
    ex = {k: np.concatenate(v) for k, v in kept.items()}
    if env is not None and env.distributed:
        lg, tg, ix = env.all_gather_array(lg), env.all_gather_array(tg), env.all_gather_array(ix)
        ds = env.all_gather_array(ds) if ds is not None else None
        ex = {k: env.all_gather_array(v) for k, v in ex.items()}
    perm = np.argsort(ix, kind="stable")
    return Predictions(
        lg[perm].astype(np.float32),
        tg[perm].astype(np.int64),
        ix[perm].astype(np.int64),
        None if ds is None else ds[perm],
        {k: v[perm].astype(np.float32) for k, v in ex.items()},
    )
