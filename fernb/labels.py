"""The one place for class orders and label mappings.

fernb works in one **canonical order** of expression classes::

    0 neutral  1 happy  2 sad  3 surprise  4 fear  5 disgust  6 angry  7 contempt  8 other

It is AffectNet's order (the order ESR, MA-Net, Ad-Corre and the diversified-feature code train in), extended by
Aff-Wild2's ``other``. A *label space* is an ordered subset of the canonical classes, always kept in canonical order.
The standard spaces are prefixes of the canonical order (``basic7`` = first 7, ``ferplus8`` = first 8), so for them a
label-space index *is* the canonical index. Datasets whose classes are not a prefix (CK+48 has no neutral, Aff-Wild2
has ``other`` but no contempt) get a space of their own; ``LabelSpace.to_canonical`` maps back.

Every dataset reader maps its published order into canonical names through the tables below
(reference: ``shared/specs/baselines.md`` §1.1). Nothing else in fernb hard-codes a class order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import FernbError

__all__ = [
    "CANONICAL",
    "LabelSpace",
    "LABEL_SPACES",
    "DATASET_ORDERS",
    "JAFFE_CODES",
    "SYNONYMS",
    "UnknownClassError",
    "canonical_name",
    "get_label_space",
    "dataset_to_canonical",
    "canonical_to_dataset",
    "remap",
]

CANONICAL: tuple[str, ...] = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry", "contempt", "other")

# Spellings found in the published datasets and repos, mapped to canonical names.
SYNONYMS: dict[str, str] = {
    "neutral": "neutral",
    "neutrality": "neutral",
    "ne": "neutral",
    "neu": "neutral",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "ha": "happy",
    "hap": "happy",
    "sad": "sad",
    "sadness": "sad",
    "sa": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "su": "surprise",
    "sur": "surprise",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "fe": "fear",
    "disgust": "disgust",
    "disgusted": "disgust",
    "di": "disgust",
    "dis": "disgust",
    "angry": "angry",
    "anger": "angry",
    "an": "angry",
    "ang": "angry",
    "contempt": "contempt",
    "co": "contempt",
    "other": "other",
    "others": "other",
}

# Published orders: index in the dataset's own label encoding -> canonical class name.
DATASET_ORDERS: dict[str, tuple[str, ...]] = {
    # RAF-DB basic, EmoLabel/list_patition_label.txt labels 1..7 (stored here 0-based, i.e. file label - 1).
    "rafdb": ("surprise", "fear", "disgust", "happy", "sad", "angry", "neutral"),
    # AffectNet annotation CSV `expression` column 0..7 (8 None, 9 Uncertain, 10 No-Face are not classes).
    "affectnet": ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry", "contempt"),
    "affectnet7": ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry"),
    # FER+ label.csv vote columns 0..7 (columns 8 unknown and 9 NF are not classes).
    "ferplus": ("neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt"),
    # FER2013 Kaggle fer2013.csv `emotion` column 0..6.
    "fer2013": ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"),
    # CK+ Emotion/*_emotion.txt codes 0..7.
    "ckplus": ("neutral", "angry", "contempt", "disgust", "fear", "happy", "sad", "surprise"),
    # Aff-Wild2 ABAW EXPR annotation codes 0..7 (-1 = not annotated, dropped).
    "affwild2": ("neutral", "angry", "disgust", "fear", "happy", "sad", "surprise", "other"),
    # MA-Net's RAF-DB ImageFolder layout train/0..6 (AffectNet order, 7 classes).
    "rafdb_manet": ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry"),
}

# JAFFE file-name codes (e.g. KA.AN1.39.tiff): the two letters after the subject.
JAFFE_CODES: dict[str, str] = {
    "NE": "neutral",
    "HA": "happy",
    "SA": "sad",
    "SU": "surprise",
    "FE": "fear",
    "DI": "disgust",
    "AN": "angry",
}


class UnknownClassError(FernbError, KeyError):
    """A class name or code that no table knows."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


def canonical_name(name: str) -> str:
    """Return the canonical class name for any known spelling (case-insensitive).

    Raises:
        UnknownClassError: naming the input and listing the accepted names.
    """
    key = str(name).strip().lower()
    try:
        return SYNONYMS[key]
    except KeyError:
        raise UnknownClassError(
            f"unknown expression class {name!r}; expected one of {', '.join(CANONICAL)} "
            f"(or a common spelling such as 'happiness', 'anger', 'sadness')"
        ) from None


@dataclass(frozen=True)
class LabelSpace:
    """An ordered subset of the canonical classes (always in canonical order).

    Attributes:
        name: identifier such as ``"basic7"``.
        names: class names, in canonical order; a label index is a position in this tuple.
    """

    name: str
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        for n in self.names:
            if n not in CANONICAL:
                raise UnknownClassError(f"label space {self.name!r}: {n!r} is not a canonical class {CANONICAL}")
        if list(self.names) != sorted(self.names, key=CANONICAL.index):
            raise ValueError(f"label space {self.name!r} must list classes in canonical order, got {self.names}")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Label index of a class name (any known spelling)."""
        cname = canonical_name(name)
        try:
            return self.names.index(cname)
        except ValueError:
            raise UnknownClassError(
                f"class {name!r} is not in label space {self.name!r} ({', '.join(self.names)})"
            ) from None

    def __contains__(self, name: object) -> bool:
        try:
            return canonical_name(str(name)) in self.names
        except UnknownClassError:
            return False

    @property
    def to_canonical(self) -> np.ndarray:
        """Array mapping label index -> canonical index."""
        return np.array([CANONICAL.index(n) for n in self.names], dtype=np.int64)

    @property
    def is_canonical_prefix(self) -> bool:
        """True when label indices equal canonical indices."""
        return self.names == CANONICAL[: len(self.names)]

    def map_from(self, other: LabelSpace) -> np.ndarray:
        """Array mapping an index of ``other`` to an index of ``self`` (-1 where the class is absent)."""
        return np.array([self.names.index(n) if n in self.names else -1 for n in other.names], dtype=np.int64)


LABEL_SPACES: dict[str, LabelSpace] = {
    s.name: s
    for s in (
        LabelSpace("basic7", CANONICAL[:7]),
        LabelSpace("ferplus8", CANONICAL[:8]),
        LabelSpace("affectnet8", CANONICAL[:8]),
        LabelSpace("ckplus7", CANONICAL[1:8]),  # CK+48: the 7 labelled expressions, no neutral
        LabelSpace("affwild2", CANONICAL[:7] + ("other",)),
        LabelSpace("basic6", CANONICAL[1:7]),  # the six basic emotions without neutral
    )
}


def get_label_space(space: str | LabelSpace | Sequence[str]) -> LabelSpace:
    """Resolve a label space from its name, an instance, or a list of class names."""
    if isinstance(space, LabelSpace):
        return space
    if isinstance(space, str):
        try:
            return LABEL_SPACES[space]
        except KeyError:
            raise UnknownClassError(
                f"unknown label space {space!r}; expected one of {', '.join(LABEL_SPACES)} or a list of class names"
            ) from None
    names = sorted({canonical_name(n) for n in space}, key=CANONICAL.index)
    return LabelSpace("custom:" + ",".join(names), tuple(names))


def _order(dataset: str) -> tuple[str, ...]:
    try:
        return DATASET_ORDERS[dataset]
    except KeyError:
        raise UnknownClassError(
            f"no published class order for dataset {dataset!r}; known: {', '.join(DATASET_ORDERS)}"
        ) from None


def dataset_to_canonical(dataset: str, codes: int | Iterable[int] | np.ndarray) -> np.ndarray | int:
    """Map a dataset's own 0-based label codes to canonical indices.

    Example: ``dataset_to_canonical("rafdb", 0)`` -> 3 (RAF-DB 1 = Surprise is canonical 3).

    Raises:
        ValueError: for a code outside the dataset's range.
    """
    order = _order(dataset)
    table = np.array([CANONICAL.index(n) for n in order], dtype=np.int64)
    arr = np.asarray(codes, dtype=np.int64)
    bad = (arr < 0) | (arr >= len(order))
    if bad.any():
        first = int(arr[bad].flat[0])
        raise ValueError(f"{dataset}: label code {first} is out of range 0..{len(order) - 1} ({', '.join(order)})")
    out = table[arr]
    return int(out) if out.ndim == 0 else out


def canonical_to_dataset(dataset: str, indices: int | Iterable[int] | np.ndarray) -> np.ndarray | int:
    """Inverse of :func:`dataset_to_canonical`: canonical indices -> the dataset's own 0-based codes.

    Raises:
        ValueError: for a canonical class the dataset does not have (e.g. contempt in RAF-DB).
    """
    order = _order(dataset)
    inv = np.full(len(CANONICAL), -1, dtype=np.int64)
    for code, n in enumerate(order):
        inv[CANONICAL.index(n)] = code
    arr = np.asarray(indices, dtype=np.int64)
    if ((arr < 0) | (arr >= len(CANONICAL))).any():
        raise ValueError(f"canonical index out of range 0..{len(CANONICAL) - 1}: {arr}")
    out = inv[arr]
    if (out < 0).any():
        missing = sorted({CANONICAL[i] for i in arr[out < 0].flat})
        raise ValueError(f"{dataset} has no class {', '.join(missing)} (its classes: {', '.join(order)})")
    return int(out) if out.ndim == 0 else out


def remap(labels: np.ndarray | Sequence[int], source: str | LabelSpace, target: str | LabelSpace) -> np.ndarray:
    """Map label indices of one label space into another through class names (-1 where the target lacks a class)."""
    src, dst = get_label_space(source), get_label_space(target)
    table = dst.map_from(src)
    return table[np.asarray(labels, dtype=np.int64)]
