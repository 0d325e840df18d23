"""From a :class:`DataConfig` to datasets, per-epoch index orders and DataLoaders.

The engine owns the data *order*: every epoch's order is a pure function of (seed, epoch, rank), so a run resumed
mid-epoch skips the batches it had already seen without drawing from any RNG, and a seed fixes the order.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data.aligned import AlignError, AlignSpec, align_split, align_summary
from ..data.arrays import ArrayBatches, BatchTransform, materialize
from ..data.audit import audit_splits
from ..data.base import FERDataset, restrict_label_space
from ..data.errors import DataRootError
from ..data.faces.detectors import MissingDetectorError
from ..data.factory import dataset_info, load_dataset
from ..data.noise import LabelNoiseError, LabelNoiseSpec, plan_label_noise
from ..data.samplers import build_sampler
from ..data.splits import subject_kfold
from ..data.synthetic import load_synthetic
from ..data.transforms import build_transforms, has_preset, transform_spec
from ..labels import get_label_space
from .config import ConfigError, DataConfig, TrainConfig
from .distributed import shard_indices

__all__ = [
    "DataBundle",
    "build_transform",
    "run_transform",
    "build_batch_transform",
    "transform_method",
    "load_split",
    "build_datasets",
    "label_noise_spec",
    "align_spec",
    "build_test_dataset",
    "run_split",
    "class_weights",
    "epoch_indices",
    "make_loader",
]


def build_transform(method: str, train: bool, img_size: int, *, strict: bool = False) -> Callable[[Any], torch.Tensor]:
    """The method's transforms from :func:`fernb.data.transforms.build_transforms`.

    A method without a transform preset of its own gets the data layer's ``"default"`` preset unless ``strict``.
    """
    return build_transforms(_preset_name(method, strict), train=train, img_size=img_size)


def _preset_name(method: str, strict: bool) -> str:
    """``method``, or ``"default"`` when it has no preset and ``strict`` is off (``data.transform="auto"``)."""
    return method if strict or has_preset(method) else "default"


def transform_method(cfg: TrainConfig) -> str | None:
    """The transform preset a run uses: the model's name for ``data.transform="auto"``, None for ``"keep"``, else
    the preset named (e.g. ``"poster_v2_affectnet"``, ``"arbex_heavy"``)."""
    t = cfg.data.transform
    if t == "keep":
        return None
    return cfg.model.name if t == "auto" else t


def run_transform(cfg: TrainConfig, train: bool) -> Callable[[Any], torch.Tensor]:
    """The per-sample transform a run applies (train or eval), from its ``data.transform``."""
    method = transform_method(cfg)
    assert method is not None, "data.transform='keep' has no per-sample transform"
    return build_transform(method, train, cfg.data.img_size, strict=cfg.data.transform != "auto")


PIPELINES = ("pil", "tensor")


class _BatchBase(TypedDict):
    """The :class:`BatchTransform` fields a transform preset fixes."""

    channels: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    bgr: bool


def build_batch_transform(cfg: TrainConfig, train: bool) -> BatchTransform:
    """The ``tensor`` pipeline's whole-batch transform: the method's channels, normalisation and channel order
    (from its transform preset, as the per-sample pipeline has them), plus ``data.batch_augment`` when training."""
    method = _preset_name(transform_method(cfg) or "default", strict=cfg.data.transform != "auto")
    spec = transform_spec(method, False, cfg.data.img_size)
    base: _BatchBase = {"channels": spec.channels, "mean": spec.mean, "std": spec.std, "bgr": spec.bgr}
    if not train:
        return BatchTransform(**base, train=False)
    known = {f.name for f in dataclasses.fields(BatchTransform)} - set(base) - {"train"}
    unknown = sorted(set(cfg.data.batch_augment) - known)
    if unknown:
        raise ConfigError(f"data.batch_augment has unknown key(s) {unknown}; BatchTransform takes {sorted(known)}")
    aug: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.data.batch_augment.items()}
    return BatchTransform(**base, **aug)


def align_spec(cfg: TrainConfig) -> AlignSpec | None:
    """``data.align`` resolved for this run (detector, the method's template, the input size), or None when off.

    Raises:
        ConfigError: a malformed option, or a detector whose package is missing (naming ``make detectors``).
    """
    try:
        spec = AlignSpec.parse(cfg.data.align, "data.align")
        return None if spec is None else spec.resolve(cfg.model.name, cfg.data.img_size)
    except (AlignError, MissingDetectorError) as exc:
        raise ConfigError(f"data.align={cfg.data.align!r}: {exc}") from None


def _attach_transforms(cfg: TrainConfig, ds: FERDataset, train: bool) -> FERDataset:
    """``ds`` with the run's transforms: the per-sample one always (single-item access, explorers), and under the
    ``tensor`` pipeline the decoded pixels with the whole-batch one. With ``data.align`` the images are aligned
    first (:func:`fernb.data.aligned.align_split`, cached)."""
    spec = align_spec(cfg)
    if spec is not None:
        ds = align_split(ds, spec, progress=not cfg.run.quiet)
    if transform_method(cfg) is None and cfg.data.pipeline == "pil":
        return ds
    if cfg.data.pipeline not in PIPELINES:
        raise ConfigError(f"data.pipeline={cfg.data.pipeline!r}; expected one of {', '.join(PIPELINES)}")
    if cfg.data.pipeline == "tensor":
        ds = materialize(ds, cfg.data.img_size, progress=not cfg.run.quiet)
        ds = ds.with_batch_transform(build_batch_transform(cfg, train))
    if transform_method(cfg) is not None:
        ds = ds.with_transform(run_transform(cfg, train))
    return ds


def _is_missing_root(exc: BaseException) -> bool:
    """True when the data root itself is absent (not when it exists but lacks a split or has another layout: a
    smoke run must not quietly swap a real dataset's missing test split for synthetic data)."""
    if not isinstance(exc, DataRootError):
        return False
    return exc.root is None or not Path(exc.root).is_dir()


_FROM_CONFIG = object()


def load_split(
    cfg: DataConfig,
    split: str,
    *,
    seed: int = 0,
    dataset: str | None = None,
    root: str | None = None,
    options: dict[str, Any] | None = None,
    label_space: Any = _FROM_CONFIG,
) -> tuple[FERDataset, str]:
    """Load one split as the config says; returns ``(dataset, source)`` where ``source`` names the dataset actually
    read (the fallback's name when the data root was missing and ``cfg.fallback`` is set).

    ``dataset``, ``root``, ``options`` and ``label_space`` replace the config's (``label_space=None``: the dataset's
    own classes).
    """
    name = dataset or cfg.dataset
    opts = dict(cfg.options if options is None else options)
    space = cfg.label_space if label_space is _FROM_CONFIG else label_space
    try:
        return load_dataset(name, root if root is not None else cfg.root, split, label_space=space, **opts), name
    except Exception as exc:
        # the fallback stands in for data that is not on this machine, never for a root the user named: a typo in
        # data.root must not train on synthetic faces and exit 0
        if not (cfg.fallback and _is_missing_root(exc) and dataset is None and root is None and cfg.root is None):
            raise
    fb_space = space or dataset_info(name).default_label_space
    fb_split = split if split in dataset_info(cfg.fallback).splits else "train"
    fb_opts: dict[str, Any] = {"n": 400, "size": max(32, min(cfg.img_size, 64)), "seed": seed}
    warnings.warn(
        f"{name}: data root not found; this smoke run uses the {cfg.fallback!r} data instead "
        f"(split {fb_split!r}, label space {fb_space!r})",
        stacklevel=2,
    )
    if cfg.fallback == "synthetic" and "contempt" in get_label_space(fb_space).names:
        # the synthetic generator's own label_space option cannot pass through load_dataset (same keyword)
        ds = restrict_label_space(
            load_synthetic(None, fb_split, label_space="ferplus8", **fb_opts), get_label_space(fb_space)
        )
    else:
        ds = load_dataset(cfg.fallback, None, fb_split, label_space=fb_space, **fb_opts)
    ds.split = split
    return ds, cfg.fallback


def _limit(ds: FERDataset, limit: int | None, seed: int) -> FERDataset:
    if limit is None or limit >= len(ds):
        return ds
    rng = np.random.default_rng([seed, 7])
    keep = np.sort(rng.permutation(len(ds))[:limit])
    return ds.subset(keep)


def _holdout(ds: FERDataset, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, valid_idx): a seeded, stratified (or subject-independent) share of ``ds`` held out."""
    if not 0 < fraction < 1:
        raise ValueError(f"data.valid_fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng([seed, 11])
    if ds.subjects is not None:
        uniq = np.unique(ds.subjects)
        n_valid = max(1, int(round(fraction * len(uniq))))
        held = set(rng.permutation(uniq)[:n_valid].tolist())
        mask = np.array([s in held for s in ds.subjects])
    else:
        mask = np.zeros(len(ds), dtype=bool)
        for c in np.unique(ds.targets):
            idx = np.flatnonzero(ds.targets == c)
            n = int(round(fraction * len(idx)))
            mask[rng.permutation(idx)[:n]] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


@dataclass
class DataBundle:
    """The datasets of a run and where they came from (``label_noise``: the record of the training labels' noise,
    :func:`fernb.data.noise.plan_label_noise`, or None)."""

    train: FERDataset
    valid: FERDataset
    source: str
    notes: list[str] = field(default_factory=list)
    label_noise: dict[str, Any] | None = None
    align: dict[str, Any] | None = None

    @property
    def label_space(self):
        return self.train.label_space

    def describe(self) -> dict[str, Any]:
        def one(ds: FERDataset) -> dict[str, Any]:
            return {
                "dataset": ds.name,
                "split": ds.split,
                "n": len(ds),
                "fingerprint": ds.fingerprint(),
                "class_counts": ds.class_counts(),
                "has_dists": ds.dists is not None,
            }

        out = {
            "source": self.source,
            "label_space": {"name": self.train.label_space.name, "names": list(self.train.label_space.names)},
            "train": one(self.train),
            "valid": one(self.valid),
            "notes": list(self.notes),
        }
        if self.label_noise is not None:
            out["label_noise"] = dict(self.label_noise)
        if self.align is not None:
            out["align"] = {**self.align, "train": align_summary(self.train), "valid": align_summary(self.valid)}
        return out


def _fold_parts(cfg: DataConfig, seed: int) -> tuple[FERDataset, np.ndarray, np.ndarray, np.ndarray, str]:
    full, source = load_split(cfg, cfg.fold_split, seed=seed)
    if full.subjects is None:
        raise ValueError(
            f"{full.name}/{cfg.fold_split}: subject-independent k-fold needs subject ids, and this "
            "split has none; use data.folds=0"
        )
    if not 0 <= cfg.fold < cfg.folds:
        raise ValueError(f"data.fold={cfg.fold} is outside 0..{cfg.folds - 1}")
    folds = subject_kfold(full.subjects, cfg.folds, seed=seed)
    test_idx = folds[cfg.fold][1]
    valid_idx = folds[(cfg.fold + 1) % cfg.folds][1]
    train_idx = np.setdiff1d(np.arange(len(full)), np.concatenate([test_idx, valid_idx]))
    return full, train_idx, valid_idx, test_idx, source


def label_noise_spec(d: DataConfig) -> LabelNoiseSpec | None:
    """``data.label_noise`` checked as a whole (kind, rate, seed, the file's existence), before any data is read.

    Raises:
        ConfigError: naming the field and what to give.
    """
    try:
        return LabelNoiseSpec.parse(d.label_noise, "data.label_noise")
    except LabelNoiseError as exc:
        raise ConfigError(str(exc)) from None


def build_datasets(
    cfg: TrainConfig, train_data: FERDataset | None = None, valid_data: FERDataset | None = None
) -> DataBundle:
    """The training and validation datasets of a run, with transforms attached. Never loads the test split.

    ``data.label_noise`` flips labels of the training samples only, after the validation share is held out and
    ``train_limit`` applied (:mod:`fernb.data.noise`).

    Args:
        cfg: the run's config.
        train_data: use this dataset instead of loading ``cfg.data.train_split`` (notebooks, tests).
        valid_data: the same for validation; None with ``train_data`` given holds out ``valid_fraction``.
    """
    d, seed = cfg.data, cfg.run.seed
    noise_spec = label_noise_spec(d)
    aligned = align_spec(cfg)  # checked before any data is read
    notes: list[str] = []
    if train_data is not None:
        train, source = train_data, train_data.name
        if d.label_space is not None and train.label_space != get_label_space(d.label_space):
            train = restrict_label_space(train, get_label_space(d.label_space))
        if valid_data is None:
            tr, va = _holdout(train, d.valid_fraction, seed)
            train, valid = train.subset(tr), train.subset(va, split="holdout")
            notes.append(f"validation = {len(va)} samples held out of the given training data")
        else:
            valid = valid_data
            if valid.label_space != train.label_space:
                valid = restrict_label_space(valid, train.label_space)
    elif d.folds:
        full, tr, va, _, source = _fold_parts(d, seed)
        train, valid = full.subset(tr, split=f"fold{d.fold}-train"), full.subset(va, split=f"fold{d.fold}-valid")
        notes.append(
            f"subject-independent {d.folds}-fold CV of {d.fold_split!r}: test fold {d.fold}, "
            f"validation fold {(d.fold + 1) % d.folds}"
        )
    else:
        train, source = load_split(d, d.train_split, seed=seed)
        if d.valid_split is None:
            tr, va = _holdout(train, d.valid_fraction, seed)
            train, valid = train.subset(tr), train.subset(va, split="holdout")
            notes.append(
                f"validation = {len(va)} samples held out of {d.train_split!r} (data.valid_split is null; "
                f"{d.valid_fraction:.0%} seeded holdout)"
            )
        else:
            if d.valid_split == d.test_split:
                raise ValueError(
                    f"data.valid_split={d.valid_split!r} is the test split: model selection must not see "
                    "the test data. Use a validation split, or data.valid_split=null to hold out part "
                    "of the training split."
                )
            valid, _ = load_split(d, d.valid_split, seed=seed)
            if valid.label_space != train.label_space:
                valid = restrict_label_space(valid, train.label_space)
    train = _limit(train, d.train_limit, seed)
    valid = _limit(valid, d.valid_limit, seed + 1)
    for message in audit_splits(train, valid).messages(train, valid):  # duplicates, leaks, tiny images: counted
        warnings.warn(message, stacklevel=3)
        notes.append(message)
    # planned on the split as read (a noise file matches file names), applied after decoding (the decoded-array
    # cache stays the clean split's)
    noise = plan_label_noise(train, noise_spec, seed, where="data.label_noise") if noise_spec is not None else None
    train = _attach_transforms(cfg, train, True)
    valid = _attach_transforms(cfg, valid, False)
    if noise is not None:
        train = noise.apply(train)
        notes.append(
            f"label noise ({noise.record['kind']}): {noise.record['flipped']} of {len(train)} training labels "
            "flipped; validation labels untouched"
        )
    if source != d.dataset and train_data is None:
        notes.append(f"data root of {d.dataset!r} missing: trained on {source!r} (fallback)")
    if aligned is not None:
        notes.append(f"faces aligned: {aligned.detector} detector, {aligned.template!r} template, {aligned.size} px")
    return DataBundle(
        train, valid, source, notes, noise.record if noise is not None else None, aligned.to_dict() if aligned else None
    )


def build_test_dataset(
    cfg: TrainConfig,
    split: str,
    *,
    dataset: str | None = None,
    root: str | None = None,
    options: dict[str, Any] | None = None,
) -> tuple[FERDataset, str]:
    """The evaluation split (test by default) of a run, or another dataset's split for cross-dataset evaluation.

    The returned dataset keeps its own label space; :func:`fernb.engine.evaluate` maps between spaces.
    """
    d = cfg.data
    if dataset is None and split == "test":
        split = d.test_split  # e.g. Aff-Wild2's reported set is its "valid" split
    if dataset is None and d.folds and split in ("test", d.test_split, "valid"):
        full, _, va, te, source = _fold_parts(d, cfg.run.seed)
        ds = (
            full.subset(va, split=f"fold{d.fold}-valid")
            if split == "valid"
            else full.subset(te, split=f"fold{d.fold}-test")
        )
    elif dataset is None:
        ds, source = load_split(d, split, seed=cfg.run.seed)
    else:
        ds, source = load_split(
            d,
            split,
            seed=cfg.run.seed,
            dataset=dataset,
            root=root,
            options=options if options is not None else {},
            label_space=None,
        )
    if dataset is None and d.label_space is not None and ds.label_space != get_label_space(d.label_space):
        ds = restrict_label_space(ds, get_label_space(d.label_space))
    return _attach_transforms(cfg, ds, False), source


def run_split(cfg: TrainConfig, split: str) -> FERDataset:
    """A run's samples of ``split`` with the evaluation-time transform, for looking inside a trained model.

    ``train`` and ``valid`` are exactly the samples the run trained and selected on (limits, holdout and folds
    applied; training images without augmentation); other splits load as :func:`build_test_dataset` loads them.
    """
    if split not in ("train", "valid"):
        return build_test_dataset(cfg, split)[0]
    bundle = build_datasets(cfg)
    if split == "valid":
        return bundle.valid
    train = bundle.train
    if train.batch_transform is not None:
        train = train.with_batch_transform(build_batch_transform(cfg, False))
    return train.with_transform(run_transform(cfg, False)) if transform_method(cfg) is not None else train


def class_weights(targets: np.ndarray, num_classes: int, power: float = 1.0) -> torch.Tensor:
    """w_c = ((N / C_present) / n_c) ** power for present classes, 0 for absent ones (a balanced set gives all ones);
    ``power=0.5`` weighs by the square root of the inverse frequency."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(num_classes)
    w[present] = ((counts.sum() / present.sum()) / counts[present]) ** power
    return torch.tensor(w, dtype=torch.float32)


def _data_sampler(cfg: DataConfig, targets: np.ndarray, seed: int, rank: int, world: int) -> tuple[Any, bool]:
    params = inspect.signature(build_sampler).parameters
    kwargs = dict(cfg.sampler_kwargs)
    shards_itself = "num_replicas" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    if shards_itself and world > 1:
        kwargs.update(num_replicas=world, rank=rank)
    return build_sampler(cfg.sampler, targets, seed, **kwargs), shards_itself


def epoch_indices(
    cfg: DataConfig, targets: np.ndarray, seed: int, epoch: int, rank: int = 0, world: int = 1
) -> np.ndarray:
    """This rank's sample order for ``epoch``: a pure function of its arguments.

    ``shuffle`` permutes with a generator seeded by (seed, epoch); ``sequential`` keeps the dataset order; any other
    name asks :func:`fernb.data.samplers.build_sampler` (``set_epoch`` is called before iterating).
    """
    n = len(targets)
    if cfg.sampler == "shuffle":
        order = np.random.default_rng([seed, epoch, 1]).permutation(n)
    elif cfg.sampler == "sequential":
        order = np.arange(n)
    else:
        sampler, sharded = _data_sampler(cfg, targets, seed, rank, world)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        order = np.fromiter((int(i) for i in sampler), dtype=np.int64)
        return order if sharded else shard_indices(order, rank, world)
    return shard_indices(order, rank, world)


def make_loader(
    ds: FERDataset,
    indices: np.ndarray,
    batch_size: int,
    *,
    num_workers: int = 0,
    seed: int = 0,
    epoch: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    stream: int = 0,
    first_batch: int = 0,
) -> DataLoader | ArrayBatches:
    """Batches that visit ``indices`` in order.

    A dataset with pixels and a ``batch_transform`` gets :class:`~fernb.data.arrays.ArrayBatches` (batch ``b`` of
    the epoch, counted from ``first_batch``, augmented by a generator seeded from seed, epoch, ``stream`` and b);
    any other a DataLoader whose own generator (seeded by seed and epoch) gives the workers' base seed, so creating
    it never draws from the global torch RNG.
    """
    if ds.batch_transform is not None and ds.pixels is not None:
        return ArrayBatches(
            ds, indices, batch_size, seed=seed, epoch=epoch, stream=stream, first_batch=first_batch, drop_last=drop_last
        )
    gen = torch.Generator()
    gen.manual_seed(int(np.random.default_rng([seed, epoch, 3]).integers(2**62)))
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=indices.tolist(),
        num_workers=num_workers,
        drop_last=drop_last,
        generator=gen,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
