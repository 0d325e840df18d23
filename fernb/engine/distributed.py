"""The distributed runtime: PyTorch's own DDP, started by ``torchrun`` (or nothing, on one process).

``torchrun --nproc_per_node N -m fernb.train <preset> ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them, picks the backend (NCCL on CUDA, gloo on
CPU) and the device. Everything else in the engine asks :class:`DistEnv` whether it is the main process, and reduces
metrics with ``all_reduce``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar, cast

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["DistEnv", "init_distributed", "resolve_device", "shard_indices"]

T = TypeVar("T")


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``; other strings as given."""
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"run.device={device!r} but CUDA is not available here; use run.device=cpu or auto")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


@dataclass
class DistEnv:
    """Where this process stands: ``rank`` of ``world_size`` processes, on ``device``.

    ``owns_group`` is True when :func:`init_distributed` created the process group (and so destroys it in
    :meth:`close`).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, values: np.ndarray | list[float]) -> np.ndarray:
        """Sum a float vector over processes (float64 on CPU tensors for gloo, on the device for NCCL)."""
        arr = np.asarray(values, dtype=np.float64)
        if not self.distributed:
            return arr
        dev = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
        t = torch.from_numpy(arr.copy()).to(dev)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu().numpy()

    def all_gather_array(self, arr: np.ndarray) -> np.ndarray:
        """Concatenate per-process arrays (first dimension may differ between processes) in rank order."""
        if not self.distributed:
            return arr
        out: list[object] = [None] * self.world_size
        dist.all_gather_object(out, arr)
        return np.concatenate(cast("list[np.ndarray]", out), axis=0)

    def broadcast_object(self, obj: T) -> T:
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def any_true(self, flag: bool) -> bool:
        """True on every process when ``flag`` is True on any process (e.g. a time budget reached on one rank)."""
        if not self.distributed:
            return flag
        return bool(self.all_reduce_sum([1.0 if flag else 0.0])[0] > 0)

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def init_distributed(device: str = "auto") -> DistEnv:
    """Join the process group that ``torchrun`` describes in the environment, or return a single-process env.

    An already initialised group (e.g. set up by a notebook launcher) is reused and left open.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not dist.is_initialized():
        return DistEnv(device=resolve_device(device))
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
        return DistEnv(rank, world, local, resolve_device(device, local), owns_group=False)
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = resolve_device(device, local)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistEnv(rank, world, local, dev, owns_group=True)


def shard_indices(indices: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's share of an epoch's index order, padded (by wrapping) so every rank gets the same count.

    Same rule as :class:`torch.utils.data.DistributedSampler`: pad to a multiple of ``world_size`` and take every
    ``world_size``-th index starting at ``rank``.
    """
    if world_size <= 1:
        return indices
    n = len(indices)
    total = -(-n // world_size) * world_size
    if total > n:
        reps = -(-total // n)
        indices = np.concatenate([indices] * reps)[:total]
    return indices[rank:total:world_size]
