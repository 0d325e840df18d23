"""Finding and loading a dataset by name; importing this module registers every reader and the synthetic data."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from ..labels import LabelSpace, get_label_space
from . import readers, synthetic  # noqa: F401  (each registers its datasets)
from .base import DATASETS, DatasetInfo, FERDataset, resolve_root, restrict_label_space

__all__ = ["list_datasets", "dataset_info", "load_dataset"]


def list_datasets() -> list[str]:
    """Names of every registered dataset."""
    return DATASETS.names()


def dataset_info(name: str) -> DatasetInfo:
    """What the reader ``name`` (or an alias) reads and how its data root must look."""
    return DATASETS.get(name)


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    split: str = "train",
    *,
    transform: Callable[[Image.Image], Any] | None = None,
    label_space: str | LabelSpace | Sequence[str] | None = None,
    **options: Any,
) -> FERDataset:
    """Load any supported dataset from its published layout.

    Args:
        name: ``"rafdb"``, ``"fer2013"``, ``"ferplus"``, ``"affectnet"``, ``"jaffe"``, ``"ckplus"``, ``"affwild2"``,
            ``"folder"``, ``"manifest"`` or ``"synthetic"`` (see :func:`list_datasets`).
        root: the data root; defaults to ``$FERNB_<NAME>_ROOT`` or ``$FERNB_DATA_ROOT/<name>``.
        split: split name (``"train"``, ``"valid"``, ``"test"``, ``"all"``, ... per dataset).
        transform: applied to the PIL image of each item.
        label_space: keep only these classes (name such as ``"basic7"``, or a list of class names); samples of
            other classes are dropped. Defaults to the dataset's own classes.
        **options: reader-specific options (e.g. FER+ ``mode="majority" | "probability" | "soft"``).
    """
    info = dataset_info(name)
    if info.splits and split not in info.splits:
        raise ValueError(f"{info.name}: unknown split {split!r}; expected one of {', '.join(info.splits)}")
    path = resolve_root(info, root) if info.name != "synthetic" else (Path(root) if root else None)
    ds = info.loader(path, split, **options)
    if label_space is not None:
        ds = restrict_label_space(ds, get_label_space(label_space))
    ds.transform = transform
    return ds
