"""Seeded, DDP-aware training samplers, including the class-imbalance schemes of the official FER methods.

Every sampler here takes the label array (``ds.targets``, (N,) int64), not the dataset, so it works for any
:class:`~fernb.data.FERDataset`. Each epoch's index list is a pure function of ``(seed, epoch)``: call
``set_epoch(e)`` before each epoch (as with ``DistributedSampler``); the same seed and epoch give the same order on
every machine. With ``num_replicas`` > 1 the epoch's list is padded (by wrapping around) to a multiple of
``num_replicas`` and rank ``r`` takes positions ``r, r + R, r + 2R, ...``: the shards are disjoint and of equal
length, and together they are the epoch. All ranks must use the same seed.

| name | class | what it draws per epoch | source |
|---|---|---|---|
| ``shuffle`` (``none``) | :class:`RandomShuffleSampler` | a permutation of all samples | ``shuffle=True`` |
| ``sequential`` | :class:`SequentialShardSampler` | 0..N-1 in order (evaluation) | |
| ``weighted`` | :class:`WeightedClassSampler` | N draws, replacement, weight (1/n_c)^power | inverse frequency |
| ``oversample`` | :class:`ImbalancedOversampler` | N draws, replacement, weight 1/n_c | POSTER_V2, MA-Net |
| ``mrr`` | :class:`MinimalRandomResampler` | M per class (C * M in all) | ARM, author's issue #12 |
| ``capped`` | :class:`ClassCapSampler` | min(n_c, M) per class, no replacement | ESR's <= 5,000 per class |

Sources: ``shared/specs/arbex.md`` §4.3; ``shared/specs/baselines.md`` §2.3, §4.3, §5.1, §5.2.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Sampler

from ..registry import Registry

__all__ = [
    "EpochSampler",
    "RandomShuffleSampler",
    "SequentialShardSampler",
    "WeightedClassSampler",
    "ImbalancedOversampler",
    "MinimalRandomResampler",
    "ClassCapSampler",
    "build_sampler",
    "list_samplers",
    "class_counts",
]


def _as_targets(targets: Sequence[int] | np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(targets, torch.Tensor):
        targets = targets.detach().cpu().numpy()
    arr = np.asarray(targets)
    if arr.ndim != 1:
        raise ValueError(f"targets must be a 1-D array of class indices (ds.targets), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("targets is empty: a sampler needs at least one sample")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"targets must hold integer class indices, got dtype {arr.dtype}; pass ds.targets")
    arr = arr.astype(np.int64, copy=False)
    if arr.min() < 0:
        raise ValueError(f"targets hold a negative class index ({int(arr.min())}); drop unlabelled samples first")
    return arr


def class_counts(targets: Sequence[int] | np.ndarray | torch.Tensor, num_classes: int | None = None) -> np.ndarray:
    """(C,) int64 number of samples per class index."""
    arr = _as_targets(targets)
    return np.bincount(arr, minlength=num_classes or 0).astype(np.int64)


def _epoch_generator(*keys: int) -> torch.Generator:
    # SeedSequence mixes the keys so that (seed 0, epoch 1) and (seed 1, epoch 0) differ.
    state = np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(2, np.uint32)
    g = torch.Generator()
    g.manual_seed(int(state[0]) << 32 | int(state[1]))
    return g


def _resolve_ddp(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    dist_on = torch.distributed.is_available() and torch.distributed.is_initialized()
    if num_replicas is None:
        num_replicas = torch.distributed.get_world_size() if dist_on else 1
    if rank is None:
        rank = torch.distributed.get_rank() if dist_on else 0
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank must lie in 0..{num_replicas - 1}, got {rank}")
    return int(num_replicas), int(rank)


class EpochSampler(Sampler[int]):
    """Base class: a seeded per-epoch index list, sharded over DDP ranks.

    Subclasses implement :meth:`_draw` (the whole epoch's index list from a generator) and :meth:`_epoch_length`.

    Args:
        targets: (N,) class index per sample (``ds.targets``).
        seed: base seed, identical on every rank.
        num_replicas: number of DDP ranks (default: the process group's world size, else 1).
        rank: this rank (default: the process group's rank, else 0).
        drop_last: drop the tail of the epoch so it divides evenly, instead of padding by wrapping around.
    """

    def __init__(
        self,
        targets: Sequence[int] | np.ndarray | torch.Tensor,
        *,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        self.targets = _as_targets(targets)
        self.seed = int(seed)
        self.epoch = 0
        self.num_replicas, self.rank = _resolve_ddp(num_replicas, rank)
        self.drop_last = bool(drop_last)

    # -- to implement ---------------------------------------------------------------------------------------------
    def _draw(self, g: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def _epoch_length(self) -> int:
        raise NotImplementedError

    # -- the protocol ----------------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draw :meth:`__iter__` yields (call before every epoch)."""
        self.epoch = int(epoch)

    @property
    def total_size(self) -> int:
        """Length of the padded (or truncated) epoch list, summed over ranks."""
        n = self._epoch_length()
        r = self.num_replicas
        return (n // r) * r if self.drop_last else -(-n // r) * r

    def epoch_indices(self) -> np.ndarray:
        """The whole epoch's index list (all ranks, before padding) for the current seed and epoch."""
        idx = self._draw(_epoch_generator(self.seed, self.epoch))
        return idx.numpy().astype(np.int64, copy=False)

    def shard_indices(self) -> np.ndarray:
        """This rank's part of the epoch: positions ``rank::num_replicas`` of the padded epoch list."""
        idx = self.epoch_indices()
        total = self.total_size
        if total > len(idx):
            reps = -(-(total - len(idx)) // len(idx))
            idx = np.concatenate([idx, np.tile(idx, reps)[: total - len(idx)]])
        else:
            idx = idx[:total]
        return idx[self.rank : total : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard_indices().tolist())

    def __len__(self) -> int:
        return self.total_size // self.num_replicas

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={len(self.targets)}, epoch_length={self._epoch_length()}, seed={self.seed}, "
            f"epoch={self.epoch}, rank={self.rank}/{self.num_replicas})"
        )


# name -> sampler class, each registered where it is defined; build_sampler builds by name
_SAMPLERS: Registry[type[EpochSampler]] = Registry("sampler")


@_SAMPLERS.register("shuffle", aliases=("none", "random"))
class RandomShuffleSampler(EpochSampler):
    """A fresh permutation of all N samples every epoch (``DataLoader(shuffle=True)``, made seeded and shardable)."""

    def _epoch_length(self) -> int:
        return len(self.targets)

    def _draw(self, g: torch.Generator) -> torch.Tensor:
        return torch.randperm(len(self.targets), generator=g)


@_SAMPLERS.register("sequential", aliases=("eval",))
class SequentialShardSampler(EpochSampler):
    """0..N-1 in order, sharded over ranks (evaluation; the epoch does not change the order)."""

    def _epoch_length(self) -> int:
        return len(self.targets)

    def _draw(self, g: torch.Generator) -> torch.Tensor:
        return torch.arange(len(self.targets))


@_SAMPLERS.register("weighted", aliases=("inverse_frequency",))
class WeightedClassSampler(EpochSampler):
    """Inverse-frequency weighted sampling: sample i has weight ``w[y_i]``, ``w_c = (1 / n_c) ** power``.

    With ``power=1`` every class has the same expected share of each epoch; ``power=0.5`` is the softer square-root
    rebalancing; ``class_weights`` sets ``w`` directly.

    Args:
        targets: (N,) class index per sample.
        num_samples: draws per epoch (default N).
        replacement: draw with replacement (the usual choice; without it ``num_samples`` must be <= N).
        power: exponent of the inverse frequency.
        class_weights: (C,) explicit per-class weights, overriding ``power``.
        seed, num_replicas, rank, drop_last: see :class:`EpochSampler`.
    """

    def __init__(
        self,
        targets: Sequence[int] | np.ndarray | torch.Tensor,
        num_samples: int | None = None,
        *,
        replacement: bool = True,
        power: float = 1.0,
        class_weights: Sequence[float] | np.ndarray | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__(targets, seed=seed, num_replicas=num_replicas, rank=rank, drop_last=drop_last)
        counts = np.bincount(self.targets).astype(np.float64)
        if class_weights is None:
            cw = np.zeros_like(counts)
            present = counts > 0
            cw[present] = (1.0 / counts[present]) ** float(power)
        else:
            cw = np.asarray(class_weights, dtype=np.float64)
            if cw.ndim != 1 or len(cw) < len(counts):
                raise ValueError(f"class_weights needs one weight per class (>= {len(counts)} values), got {cw.shape}")
            if (cw < 0).any():
                raise ValueError("class_weights must be >= 0")
        self.class_weights = cw
        self.weights = torch.as_tensor(cw[self.targets], dtype=torch.float64)
        if float(self.weights.sum()) <= 0:
            raise ValueError("every sample has weight 0; give at least one positive class weight for a present class")
        self.num_samples = len(self.targets) if num_samples is None else int(num_samples)
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        self.replacement = bool(replacement)
        if not self.replacement and self.num_samples > int((self.weights > 0).sum()):
            raise ValueError(
                f"cannot draw {self.num_samples} samples without replacement from "
                f"{int((self.weights > 0).sum())} samples of positive weight; use replacement=True"
            )

    def _epoch_length(self) -> int:
        return self.num_samples

    def _draw(self, g: torch.Generator) -> torch.Tensor:
        return torch.multinomial(self.weights, self.num_samples, self.replacement, generator=g)


@_SAMPLERS.register("oversample", aliases=("imbalanced", "imbalanced_dataset_sampler", "imbalanceddatasetsampler"))
class ImbalancedOversampler(EpochSampler):
    """The oversampler POSTER_V2 and MA-Net use on AffectNet (``ImbalancedDatasetSampler`` of the torchsampler
    package, ufoym/imbalanced-dataset-sampler), re-implemented.

    Behaviour reproduced: among ``indices`` (default all samples) class c occurs n_c times; each listed sample gets
    weight 1 / n_c; each epoch draws ``num_samples`` (default ``len(indices)``) positions by multinomial sampling
    *with replacement* and yields the dataset indices at those positions. Classes are thus equally likely per draw.
    Added here: the seeded ``(seed, epoch)`` draw and DDP sharding. Source: ``arbex.md`` §4.3, ``baselines.md`` §5.2.

    Args:
        targets: (N,) class index per sample of the whole dataset.
        indices: the dataset indices to sample from (e.g. a subset); class counts are taken over them only.
        num_samples: draws per epoch (default ``len(indices)``).
        seed, num_replicas, rank, drop_last: see :class:`EpochSampler`.
    """

    def __init__(
        self,
        targets: Sequence[int] | np.ndarray | torch.Tensor,
        indices: Sequence[int] | np.ndarray | None = None,
        num_samples: int | None = None,
        *,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__(targets, seed=seed, num_replicas=num_replicas, rank=rank, drop_last=drop_last)
        n = len(self.targets)
        idx = np.arange(n, dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise ValueError("indices is empty")
        if idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"indices must lie in 0..{n - 1} (the targets' range)")
        self.indices = idx
        labels = self.targets[idx]
        counts = np.bincount(labels)
        self.weights = torch.as_tensor(1.0 / counts[labels], dtype=torch.float64)
        self.num_samples = len(idx) if num_samples is None else int(num_samples)
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")

    def _epoch_length(self) -> int:
        return self.num_samples

    def _draw(self, g: torch.Generator) -> torch.Tensor:
        pos = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g)
        return torch.as_tensor(self.indices)[pos]


@_SAMPLERS.register("mrr", aliases=("minimal_random_resampling",))
class MinimalRandomResampler(EpochSampler):
    """ARM's minimal random resampling (MRR), **re-implemented from the author's issue description** (the official
    code has no sampler; SimKarras/ARM#12: "per-class sampling probabilities as in oversampling, plus a per-epoch upper
    limit of samples per class, so each epoch is class-balanced"). Source: ``baselines.md`` §2.3.

    Each epoch takes exactly M samples of every class present (C * M in all): without replacement when n_c >= M,
    otherwise with replacement (``fill="replacement"``, the spec's proposal) or every sample once plus a without-
    replacement top-up (``fill="repeat"``, which covers each sample of a rare class); then shuffles. A fresh subset
    of the large classes is drawn every epoch, so over epochs all their samples are seen.

    Args:
        targets: (N,) class index per sample.
        cap: M, samples per class per epoch (default: the smallest non-empty class count, so no sample repeats).
        fill: how classes with fewer than M samples are filled, ``"replacement"`` or ``"repeat"``.
        shuffle: shuffle the epoch (False: grouped by class, for inspection).
        seed, num_replicas, rank, drop_last: see :class:`EpochSampler`.
    """

    def __init__(
        self,
        targets: Sequence[int] | np.ndarray | torch.Tensor,
        cap: int | None = None,
        *,
        fill: Literal["replacement", "repeat"] = "replacement",
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__(targets, seed=seed, num_replicas=num_replicas, rank=rank, drop_last=drop_last)
        counts = np.bincount(self.targets)
        self.classes = np.flatnonzero(counts > 0)
        self.counts = counts
        self.cap = int(counts[self.classes].min()) if cap is None else int(cap)
        if self.cap < 1:
            raise ValueError(f"cap (samples per class per epoch) must be >= 1, got {cap}")
        if fill not in ("replacement", "repeat"):
            raise ValueError(f"fill must be 'replacement' or 'repeat', got {fill!r}")
        self.fill, self.shuffle = fill, bool(shuffle)
        self._members = [torch.as_tensor(np.flatnonzero(self.targets == c)) for c in self.classes]

    def _epoch_length(self) -> int:
        return len(self.classes) * self.cap

    def _draw_class(self, members: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, m = len(members), self.cap
        if n >= m:
            return members[torch.randperm(n, generator=g)[:m]]
        if self.fill == "replacement":
            return members[torch.randint(n, (m,), generator=g)]
        rest = m % n
        tiled = members.repeat(m // n)
        return torch.cat([tiled, members[torch.randperm(n, generator=g)[:rest]]])

    def _draw(self, g: torch.Generator) -> torch.Tensor:
        idx = torch.cat([self._draw_class(mem, g) for mem in self._members])
        return idx[torch.randperm(len(idx), generator=g)] if self.shuffle else idx


@_SAMPLERS.register("capped", aliases=("esr", "class_cap"))
class ClassCapSampler(EpochSampler):
    """A random class-capped subset, ESR's only imbalance measure: at most ``cap`` samples per class (5,000 in ESR and
    the Diversified AffectNet / FER+ scripts), all samples of smaller classes, no replacement; shuffled each epoch.

    ESR draws a new subset for every *branch*, not every epoch: call :meth:`set_subset` with the branch number to fix
    the subset while ``set_epoch`` keeps reshuffling it. Without ``set_subset`` the subset follows the epoch.
    Source: ``baselines.md`` §4.3, §5.1.

    Args:
        targets: (N,) class index per sample.
        cap: maximum samples per class (default 5,000).
        seed, num_replicas, rank, drop_last: see :class:`EpochSampler`.
    """

    def __init__(
        self,
        targets: Sequence[int] | np.ndarray | torch.Tensor,
        cap: int = 5000,
        *,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__(targets, seed=seed, num_replicas=num_replicas, rank=rank, drop_last=drop_last)
        if cap < 1:
            raise ValueError(f"cap must be >= 1, got {cap}")
        self.cap = int(cap)
        counts = np.bincount(self.targets)
        self.classes = np.flatnonzero(counts > 0)
        self._members = [torch.as_tensor(np.flatnonzero(self.targets == c)) for c in self.classes]
        self.subset_id: int | None = None

    def set_subset(self, subset_id: int | None) -> None:
        """Fix the subset to draw ``subset_id`` (e.g. the ESR branch); ``None`` lets it follow the epoch."""
        self.subset_id = None if subset_id is None else int(subset_id)

    def _epoch_length(self) -> int:
        return int(sum(min(len(m), self.cap) for m in self._members))

    def _draw(self, g: torch.Generator) -> torch.Tensor:
        key = self.epoch if self.subset_id is None else self.subset_id
        gs = _epoch_generator(self.seed, key, 1)  # a stream of its own, apart from the epoch's shuffle
        idx = torch.cat([m[torch.randperm(len(m), generator=gs)[: self.cap]] for m in self._members])
        return idx[torch.randperm(len(idx), generator=g)]


def list_samplers() -> list[str]:
    """Sampler names accepted by :func:`build_sampler` (aliases not listed)."""
    return _SAMPLERS.names()


def build_sampler(
    name: str,
    targets: Sequence[int] | np.ndarray | torch.Tensor,
    seed: int = 0,
    *,
    num_replicas: int | None = None,
    rank: int | None = None,
    drop_last: bool = False,
    **options: Any,
) -> EpochSampler:
    """Build a sampler by name from the label array (``ds.targets``).

    Args:
        name: ``"shuffle"`` (alias ``"none"``: no rebalancing), ``"sequential"``, ``"weighted"``, ``"oversample"``
            (POSTER_V2's ``ImbalancedDatasetSampler``), ``"mrr"`` (ARM), ``"capped"`` (ESR).
        targets: (N,) class index per sample.
        seed: base seed (the same on every DDP rank).
        num_replicas, rank, drop_last: DDP sharding (see :class:`EpochSampler`).
        **options: sampler-specific: ``num_samples``, ``power``, ``class_weights``, ``replacement`` (weighted);
            ``indices``, ``num_samples`` (oversample); ``cap``, ``fill``, ``shuffle`` (mrr); ``cap`` (capped).

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
        TypeError: for an option the chosen sampler does not take.
    """
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    if key not in _SAMPLERS:
        raise ValueError(
            f"unknown sampler {name!r}; known samplers: {', '.join(list_samplers())} "
            f"(aliases: {', '.join(_SAMPLERS.aliases())})"
        )
    key = _SAMPLERS.canonical(key)
    cls = _SAMPLERS.get(key)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "targets"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise TypeError(
            f"sampler {key!r} ({cls.__name__}) does not take {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(accepted))}"
        )
    return cls(targets, seed=seed, num_replicas=num_replicas, rank=rank, drop_last=drop_last, **options)
