"""FER2013 (Goodfellow et al., 2013): the Kaggle ``fer2013.csv`` (48x48 pixels as text), its ``icml_face_data.csv``
variant, and the class-folder image release ``train/<class>/``, ``test/<class>/``."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

from ...labels import LABEL_SPACES, dataset_to_canonical
from ..base import FERDataset, register_dataset
from ..errors import DataFormatError, EmptySplitError
from ._common import (
    canonical_to_space,
    carve_valid,
    first_existing,
    has_class_folders,
    read_class_tree,
    require_columns,
    root_error,
)

__all__ = ["read_fer2013", "parse_pixel_rows", "read_fer2013_csv", "FER2013_LAYOUT", "USAGE_TO_SPLIT"]

FER2013_LAYOUT = """\
<root>/
└── fer2013.csv            columns emotion,pixels,Usage (or icml_face_data.csv: emotion, Usage, pixels)
                           emotion 0..6 = angry, disgust, fear, happy, sad, surprise, neutral
                           pixels = 2304 space-separated 0..255 values (48x48 gray)
                           Usage Training / PublicTest / PrivateTest -> split train / valid / test
or the image release:
<root>/train/<angry|disgust|fear|happy|neutral|sad|surprise>/*.jpg and <root>/test/<class>/*.jpg"""

USAGE_TO_SPLIT: dict[str, str] = {"Training": "train", "PublicTest": "valid", "PrivateTest": "test"}
_CSV_NAMES = ("fer2013.csv", "fer2013/fer2013.csv", "icml_face_data.csv")
_SIDE = 48


def _parse_rows_slowly(rows: Sequence[str], path: Path, lines: Sequence[int] | np.ndarray, side: int) -> np.ndarray:
    """Row-by-row parse that names the first bad row (used when the fast parse sees a problem)."""
    out = np.empty((len(rows), side, side), dtype=np.uint8)
    expected = f"{side * side} space-separated integers 0..255"
    for i, (row, line) in enumerate(zip(rows, lines, strict=True)):
        tokens = row.split()
        if len(tokens) != side * side:
            raise DataFormatError(path, f"pixels has {len(tokens)} values", line, expected)
        try:
            vals = np.array([int(t) for t in tokens], dtype=np.int64)
        except ValueError:
            bad = next(t for t in tokens if not t.lstrip("-").isdigit())
            raise DataFormatError(path, f"pixels holds {bad!r}", line, expected) from None
        if vals.min() < 0 or vals.max() > 255:
            raise DataFormatError(
                path,
                f"pixel value {int(vals.max() if vals.max() > 255 else vals.min())} is out of range",
                line,
                expected,
            )
        out[i] = vals.reshape(side, side).astype(np.uint8)
    return out


def parse_pixel_rows(
    rows: Sequence[str], path: Path, lines: Sequence[int] | np.ndarray, side: int = _SIDE, chunk: int = 1024
) -> np.ndarray:
    """Parse FER2013 ``pixels`` strings into a (N, side, side) uint8 array.

    Chunks of rows are parsed by numpy's C text parser; a chunk with any irregular row (wrong count, a non-number,
    a value outside 0..255) is re-parsed row by row, which raises :class:`DataFormatError` naming the file and line.

    Args:
        rows: (N,) pixel strings.
        path: the CSV (for errors).
        lines: (N,) line number of each row in the CSV.
    """
    n_px = side * side
    out = np.empty((len(rows), side, side), dtype=np.uint8)
    for start in range(0, len(rows), chunk):
        part = [str(r) for r in rows[start : start + chunk]]
        regular = all(r.count(" ") == n_px - 1 for r in part)
        vals = None
        if regular:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # older numpy: partial parse + warning
                try:
                    vals = np.fromstring(" ".join(part), dtype=np.int32, sep=" ")
                except ValueError:  # newer numpy: the text does not parse to its end
                    vals = None
        if vals is None or vals.size != len(part) * n_px or vals.min() < 0 or vals.max() > 255:
            out[start : start + len(part)] = _parse_rows_slowly(part, path, lines[start : start + chunk], side)
        else:
            out[start : start + len(part)] = vals.reshape(len(part), side, side).astype(np.uint8)
    return out


def read_csv_stripped(path: Path) -> pd.DataFrame:
    """A CSV read as strings with stripped column names (``icml_face_data.csv`` has ``" Usage"``, ``" pixels"``)."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataFormatError(path, f"not a readable CSV ({exc})") from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def usage_mask(df: pd.DataFrame, path: Path, split: str) -> np.ndarray:
    """(N,) rows whose ``Usage`` maps to ``split``; raises on an unknown Usage value."""
    usage = df["Usage"].str.strip()
    unknown = ~usage.isin(list(USAGE_TO_SPLIT))
    if unknown.any():
        i = int(np.flatnonzero(unknown.to_numpy())[0])
        raise DataFormatError(path, f"Usage {usage.iloc[i]!r} is unknown", i + 2, f"one of {', '.join(USAGE_TO_SPLIT)}")
    return usage.map(USAGE_TO_SPLIT).to_numpy() == split


def read_fer2013_csv(path: Path, split: str) -> FERDataset:
    """Read one split of ``fer2013.csv`` into an in-memory dataset."""
    df = read_csv_stripped(path)
    require_columns(list(df.columns), ["emotion", "pixels", "Usage"], path, "columns emotion,pixels,Usage")
    rows = np.flatnonzero(usage_mask(df, path, split))
    if len(rows) == 0:
        usage = next(k for k, v in USAGE_TO_SPLIT.items() if v == split)
        raise EmptySplitError("fer2013", split, path, f"no row has Usage {usage!r}")
    lines = rows + 2
    emotion = df["emotion"].to_numpy()[rows]
    codes = np.empty(len(rows), dtype=np.int64)
    for j, (text, line) in enumerate(zip(emotion, lines, strict=True)):
        text = str(text).strip()
        if not text.isdigit() or int(text) > 6:
            raise DataFormatError(
                path,
                f"emotion {text!r} is not a label 0..6",
                int(line),
                "0..6 = angry, disgust, fear, happy, sad, surprise, neutral",
            )
        codes[j] = int(text)
    pixels = parse_pixel_rows(df["pixels"].to_numpy()[rows], path, lines)
    space = LABEL_SPACES["basic7"]
    targets = canonical_to_space(cast(np.ndarray, dataset_to_canonical("fer2013", codes)), space)
    return FERDataset(
        "fer2013", split, space, targets, pixels=pixels, meta={"row": rows}, root=path.parent, source=path
    )


@register_dataset(
    "fer2013",
    layout=FER2013_LAYOUT,
    splits=("train", "valid", "test"),
    default_label_space="basic7",
    dirname="fer2013",
    description="FER2013: 28,709 / 3,589 / 3,589 48x48 gray faces, 7 classes (Kaggle labels).",
    aliases=("fer-2013", "fer"),
)
def read_fer2013(root: Path, split: str = "train", *, valid_fraction: float | None = None, seed: int = 0) -> FERDataset:
    """Read FER2013.

    Args:
        root: folder holding ``fer2013.csv`` (or ``icml_face_data.csv``, or ``train/`` ``test/`` class folders).
        split: ``"train"`` (Training), ``"valid"`` (PublicTest), ``"test"`` (PrivateTest). For the image release,
            which has no PublicTest part, ``"valid"`` needs ``valid_fraction`` to carve it from train.
        valid_fraction: share of train held out as ``"valid"`` (image release only).
        seed: seed of that draw.

    Returns:
        a :class:`FERDataset` in ``basic7``; CSV splits are held in memory (``pixels``), with ``meta["row"]`` the
        0-based CSV row.
    """
    csv_path = first_existing(root, _CSV_NAMES)
    if csv_path is not None:
        return read_fer2013_csv(csv_path, split)
    if has_class_folders(root / "train"):
        folder = root / ("train" if split in ("train", "valid") else "test")
        if not folder.is_dir():
            raise root_error(
                "fer2013", root, f"found train/ class folders but no {folder.name}/ folder", FER2013_LAYOUT
            )
        paths, names = read_class_tree(folder)
        if not paths:
            raise EmptySplitError("fer2013", split, folder, "no images in the class folders")
        space = LABEL_SPACES["basic7"]
        targets = np.array([space.index(n) for n in names], dtype=np.int64)
        ds = FERDataset(
            "fer2013", "train" if split == "valid" else split, space, targets, paths=paths, root=root, source=folder
        )
        return ds if split == "test" else carve_valid(ds, split, valid_fraction, seed)
    raise root_error(
        "fer2013", root, "neither fer2013.csv (nor icml_face_data.csv) nor train/<class>/ folders found", FER2013_LAYOUT
    )
