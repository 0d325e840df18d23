"""Helpers shared by the dataset readers: layout errors, class folders, label spaces, folds, image checks."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ...labels import (
    CANONICAL,
    DATASET_ORDERS,
    LABEL_SPACES,
    LabelSpace,
    UnknownClassError,
    canonical_name,
    get_label_space,
)
from ..base import FERDataset
from ..errors import CorruptImageError, DataFormatError, DataRootError
from ..splits import folds_from_column, subject_kfold, train_valid_split

__all__ = [
    "IMAGE_EXTENSIONS",
    "is_image",
    "root_error",
    "first_existing",
    "list_images",
    "space_covering",
    "canonical_to_space",
    "read_class_tree",
    "folder_class",
    "has_class_folders",
    "require_columns",
    "carve_valid",
    "select_fold",
    "verify_images",
    "parse_int",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".gif"})


def is_image(name: str | Path) -> bool:
    """True for a visible file with an image extension."""
    p = Path(name)
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def root_error(dataset: str, root: Path | None, problem: str, layout: str) -> DataRootError:
    """A :class:`DataRootError` that prints ``layout`` and the dataset's environment variable."""
    return DataRootError(dataset, root, problem, layout, f"FERNB_{dataset.upper()}_ROOT")


def first_existing(base: Path, candidates: Iterable[str], kind: str = "file") -> Path | None:
    """The first ``base / candidate`` that is a file (``kind="file"``) or a folder (``kind="dir"``)."""
    for rel in candidates:
        p = base / rel
        if p.is_file() if kind == "file" else p.is_dir():
            return p
    return None


def list_images(folder: Path, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` in sorted path order (hidden files and non-images skipped)."""
    if not recursive:
        return sorted(p for p in folder.iterdir() if p.is_file() and is_image(p.name))
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in filenames if is_image(f))
    return sorted(out)


def space_covering(names: Iterable[str]) -> LabelSpace:
    """The smallest standard label space holding every class in ``names`` (else a custom one)."""
    wanted = {canonical_name(n) for n in names}
    fitting = [s for s in LABEL_SPACES.values() if wanted <= set(s.names)]
    if fitting:
        return min(fitting, key=len)
    return get_label_space(sorted(wanted, key=CANONICAL.index))


def canonical_to_space(canonical_idx: np.ndarray, space: LabelSpace) -> np.ndarray:
    """Map (N,) canonical indices to indices of ``space`` (every class must be in the space)."""
    table = np.full(len(CANONICAL), -1, dtype=np.int64)
    table[space.to_canonical] = np.arange(len(space))
    out = table[np.asarray(canonical_idx, dtype=np.int64)]
    if (out < 0).any():
        missing = sorted({CANONICAL[i] for i in np.asarray(canonical_idx)[out < 0]})
        raise UnknownClassError(f"classes {missing} are not in label space {space.name!r} ({', '.join(space.names)})")
    return out


def folder_class(folder: Path, class_order: str | None = None, index_base: int = 0) -> str:
    """Canonical class of a class folder, from its name or, for numeric names, from a published order.

    Raises:
        UnknownClassError: naming the folder.
    """
    name = folder.name
    if name.strip().isdigit():
        if class_order is None:
            raise UnknownClassError(
                f"{folder}: numeric class folder {name!r} but no class order given; pass class_order= one of "
                f"{', '.join(DATASET_ORDERS)} (e.g. 'affectnet' for AffectNet folders 0..7)"
            )
        order = DATASET_ORDERS[class_order]
        code = int(name) - index_base
        if not 0 <= code < len(order):
            raise UnknownClassError(
                f"{folder}: class folder {name!r} is outside {index_base}..{len(order) - 1 + index_base} of the "
                f"{class_order} order ({', '.join(order)})"
            )
        return order[code]
    try:
        return canonical_name(name)
    except UnknownClassError:
        raise UnknownClassError(
            f"{folder}: folder name {name!r} is not an expression class; expected one of {', '.join(CANONICAL)} "
            f"(or a common spelling such as 'happiness', 'anger'). Rename the folder or move it out of {folder.parent}."
        ) from None


def read_class_tree(folder: Path, class_order: str | None = None, index_base: int = 0) -> tuple[list[Path], list[str]]:
    """Images of a ``<folder>/<class>/...`` tree and the canonical class of each.

    Raises:
        UnknownClassError: for a sub-folder whose name is no class.
    """
    paths: list[Path] = []
    names: list[str] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        cls = folder_class(sub, class_order, index_base)
        files = list_images(sub)
        paths.extend(files)
        names.extend([cls] * len(files))
    return paths, names


def has_class_folders(folder: Path) -> bool:
    """True when ``folder`` exists and holds at least one sub-folder named like a class."""
    if not folder.is_dir():
        return False
    for sub in folder.iterdir():
        if sub.is_dir():
            try:
                canonical_name(sub.name)
                return True
            except UnknownClassError:
                if sub.name.isdigit():
                    return True
    return False


def parse_int(text: str, path: Path, line: int, expected: str) -> int:
    """``int(text)`` (an integral float such as ``3.0000000e+00`` is accepted), else :class:`DataFormatError`."""
    try:
        value = float(text)
    except ValueError:
        raise DataFormatError(path, f"cannot read {text.strip()!r} as a number", line, expected) from None
    if not np.isfinite(value) or value != int(value):
        raise DataFormatError(path, f"{text.strip()!r} is not a whole number", line, expected)
    return int(value)


def carve_valid(ds: FERDataset, split: str, valid_fraction: float | None, seed: int) -> FERDataset:
    """For datasets without an official validation split: ``split="valid"`` is a seeded share of train.

    ``ds`` holds the official training split. With ``valid_fraction`` set, ``"train"`` excludes what ``"valid"``
    holds (subject-disjoint when subjects are known, else class-stratified).
    """
    if valid_fraction is None:
        if split == "valid":
            raise ValueError(
                f"{ds.name} has no official validation split; pass valid_fraction=0.1 (and the same value when "
                f"loading split='train') to carve one from the training split, or select models on a split of your own"
            )
        return ds
    train, valid = train_valid_split(ds, valid_fraction, seed=seed)
    return valid if split == "valid" else train


def select_fold(
    ds: FERDataset,
    split: str,
    fold: int | None,
    num_folds: int,
    seed: int,
    fold_column: str | None = None,
) -> FERDataset:
    """Subject-independent k-fold for datasets published as one ``"all"`` split (CK+, JAFFE).

    ``split="all"`` returns ``ds``; ``"train"``/``"test"`` return the complement / the test part of fold ``fold``
    of :func:`~fernb.data.splits.subject_kfold` (or of ``ds.meta[fold_column]`` when given and it has
    ``num_folds`` distinct values).
    """
    if split == "all" and fold is None:
        return ds
    if fold is None:
        raise ValueError(
            f"{ds.name} is published as one split; use split='all', or split='train'/'test' with "
            f"fold=0..{num_folds - 1} (subject-independent {num_folds}-fold)"
        )
    if split not in ("train", "test"):
        raise ValueError(f"{ds.name}: with fold={fold} the split must be 'train' or 'test', got {split!r}")
    if fold_column is not None and fold_column in ds.meta and len(np.unique(ds.meta[fold_column])) == num_folds:
        folds = folds_from_column(ds.meta[fold_column])
    else:
        if ds.subjects is None:
            raise ValueError(f"{ds.name}: subjects are unknown, so no subject-independent folds can be made")
        folds = subject_kfold(ds.subjects, num_folds, seed=seed, stratify_labels=ds.targets)
    if not 0 <= fold < len(folds):
        raise ValueError(f"{ds.name}: fold must be in 0..{len(folds) - 1}, got {fold}")
    train_idx, test_idx = folds[fold]
    return ds.subset(train_idx if split == "train" else test_idx, split=split)


def verify_images(ds: FERDataset, max_n: int | None = None) -> list[tuple[str, str]]:
    """Open the images of ``ds`` and list the ones that fail.

    Args:
        ds: a dataset.
        max_n: check only the first ``max_n`` samples (all when None).

    Returns:
        ``[(file or sample index, reason), ...]``; empty when every image opened.
    """
    bad: list[tuple[str, str]] = []
    n = len(ds) if max_n is None else min(max_n, len(ds))
    for i in range(n):
        try:
            ds.load_image(i)
        except CorruptImageError as exc:
            bad.append((str(exc.path), str(exc).splitlines()[0]))
        except (OSError, ValueError) as exc:
            where = str(ds.paths[i]) if ds.paths is not None else f"sample {i}"
            bad.append((where, f"{type(exc).__name__}: {exc}"))
    return bad


def require_columns(columns: Sequence[str], needed: Sequence[str], path: Path, what: str) -> None:
    """Raise :class:`DataFormatError` naming the missing columns of a CSV header."""
    missing = [c for c in needed if c not in columns]
    if missing:
        raise DataFormatError(
            path,
            f"missing column(s) {', '.join(missing)} in the header",
            1,
            f"{what}; found columns: {', '.join(columns)}",
        )
