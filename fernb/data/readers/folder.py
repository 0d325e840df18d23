"""Generic readers for data of your own: a class-folder tree, or a CSV manifest (with optional soft labels)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ...labels import CANONICAL, DATASET_ORDERS, UnknownClassError, canonical_name
from ..base import FERDataset, register_dataset
from ..errors import DataFormatError, EmptySplitError
from ._common import canonical_to_space, has_class_folders, read_class_tree, require_columns, root_error, space_covering

__all__ = ["read_folder", "read_manifest", "FOLDER_LAYOUT", "MANIFEST_LAYOUT"]

FOLDER_LAYOUT = """\
<root>/<split>/<class>/*.png|jpg|...    e.g. <root>/train/happy/001.jpg, <root>/test/angry/002.png
or <root>/<class>/*.png                  (split "all")
class folder names: neutral, happy, sad, surprise, fear, disgust, angry, contempt, other (or common spellings
such as happiness, anger, sadness); numeric names 0..K-1 need class_order= (e.g. 'affectnet', 'fer2013')"""

MANIFEST_LAYOUT = """\
<root>/manifest.csv        (another name: csv="my.csv"); paths are relative to the CSV's folder
    path,label[,subject][,split][,dist_<class>...|votes_<class>...][,other columns -> meta]
    images/001.png,happy,s01,train,0.1,0.8,...
label: a class name (happy, anger, ...) or a canonical index 0..8 (neutral happy sad surprise fear disgust angry
contempt other); dist_<class> / votes_<class> columns give a label distribution (normalised per row)"""

_NON_CLASS_VOTES = {"unknown", "nf", "noface", "no_face"}


@register_dataset(
    "folder",
    layout=FOLDER_LAYOUT,
    splits=(),
    default_label_space="basic7",
    dirname="folder",
    description="Any <root>/<split>/<class>/ image tree (ImageFolder-style).",
    aliases=("imagefolder", "image_folder"),
)
def read_folder(root: Path, split: str = "train", *, class_order: str | None = None, index_base: int = 0) -> FERDataset:
    """Read a class-folder tree.

    Args:
        root: the tree root.
        split: a sub-folder of ``root``; ``"all"`` reads ``root/all/``, else class folders directly under ``root``,
            else every split folder together.
        class_order: a :data:`fernb.labels.DATASET_ORDERS` key giving the class of numeric folder names.
        index_base: the number of the first numeric folder (1 for POSTER_V2's RAF-DB ``1..7``).

    Returns:
        a :class:`FERDataset` in the smallest standard label space holding its classes.
    """
    if class_order is not None and class_order not in DATASET_ORDERS:
        raise ValueError(f"unknown class_order {class_order!r}; expected one of {', '.join(DATASET_ORDERS)}")
    if split == "all" and not (root / "all").is_dir():
        if has_class_folders(root):
            folders = [root]
        else:
            folders = sorted(p for p in root.iterdir() if p.is_dir() and has_class_folders(p))
    else:
        folders = [root / split]
    if not folders or not folders[0].is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise root_error(
            "folder", root, f"no {split}/ folder (sub-folders here: {', '.join(present) or 'none'})", FOLDER_LAYOUT
        )
    paths: list[Path] = []
    names: list[str] = []
    for folder in folders:
        p, n = read_class_tree(folder, class_order, index_base)
        paths += p
        names += n
    if not paths:
        raise EmptySplitError("folder", split, folders[0], "no images in class folders")
    space = space_covering(names)
    targets = canonical_to_space(np.array([CANONICAL.index(n) for n in names]), space)
    return FERDataset("folder", split, space, targets, paths=paths, root=root, source=folders[0])


def _label_to_canonical(value: str, path: Path, line: int) -> int:
    text = value.strip()
    if text.lstrip("-").isdigit():
        idx = int(text)
        if not 0 <= idx < len(CANONICAL):
            raise DataFormatError(
                path,
                f"label {idx} is out of range",
                line,
                f"a class name or a canonical index 0..{len(CANONICAL) - 1} ({', '.join(CANONICAL)})",
            )
        return idx
    try:
        return CANONICAL.index(canonical_name(text))
    except UnknownClassError:
        raise UnknownClassError(
            f"{path}, line {line}: label {text!r} is not an expression class; expected one of "
            f"{', '.join(CANONICAL)} or a canonical index 0..{len(CANONICAL) - 1}"
        ) from None


def _warn_contradictions(
    dists: np.ndarray, targets: np.ndarray, rows: np.ndarray, path: Path, soft_cols: list[str]
) -> None:
    """Warn, with counts and the first line, about rows whose distribution contradicts their label: no weight on
    the label at all, or another class strictly ahead of it."""
    own = dists[np.arange(len(targets)), targets]
    none = np.flatnonzero(own <= 0)
    behind = np.flatnonzero((own > 0) & (own < dists.max(1) - 1e-6))
    for idx, what in ((none, "give their label no weight"), (behind, "rank another class above their label")):
        if len(idx):
            warnings.warn(
                f"{path}: {len(idx)} of {len(targets)} rows have {'/'.join(soft_cols[:2])}... columns that {what} "
                f"(first: line {int(rows[idx[0]]) + 2}); check the label and distribution columns",
                stacklevel=4,
            )


def _soft_columns(columns: list[str], path: Path) -> tuple[list[str], list[str]]:
    """(CSV columns, canonical class names) of the ``dist_*`` columns, else of the ``votes_*`` columns."""
    for prefix in ("dist_", "votes_"):
        cols = [c for c in columns if c.startswith(prefix)]
        if not cols:
            continue
        keep, names = [], []
        for c in cols:
            cls = c[len(prefix) :]
            if prefix == "votes_" and cls.lower() in _NON_CLASS_VOTES:
                continue
            try:
                names.append(canonical_name(cls))
            except UnknownClassError:
                raise UnknownClassError(
                    f"{path}: column {c!r} names no expression class ({', '.join(CANONICAL)})"
                ) from None
            keep.append(c)
        return keep, names
    return [], []


@register_dataset(
    "manifest",
    layout=MANIFEST_LAYOUT,
    splits=(),
    default_label_space="basic7",
    dirname="manifest",
    description="Any CSV of path,label[,subject,split,dist_*|votes_*] rows.",
    aliases=("csv",),
)
def read_manifest(root: Path, split: str = "all", *, csv: str = "manifest.csv") -> FERDataset:
    """Read a CSV manifest.

    Args:
        root: the folder of the CSV (image paths are relative to it).
        split: ``"all"``, or a value of the ``split`` column.
        csv: the CSV file name (or a path relative to ``root``).

    Returns:
        a :class:`FERDataset` in the smallest standard label space holding the classes of the labels and of the
        soft-label columns; ``dists`` from ``dist_*`` / ``votes_*`` columns; other columns in ``meta``.
    """
    path = root / csv
    if not path.is_file():
        raise root_error("manifest", root, f"no {csv} in the root", MANIFEST_LAYOUT)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataFormatError(path, f"not a readable CSV ({exc})", expected="a CSV with a header row") from None
    df.columns = [str(c).strip() for c in df.columns]
    require_columns(list(df.columns), ["path", "label"], path, "columns path,label[,subject,split,dist_*|votes_*]")
    if split == "all":
        rows = np.arange(len(df))
    elif "split" in df.columns:
        rows = np.flatnonzero(df["split"].str.strip().to_numpy() == split)
    else:
        raise EmptySplitError("manifest", split, path, "the CSV has no 'split' column; use split='all'")
    if len(rows) == 0:
        found = sorted(set(df["split"])) if "split" in df.columns else []
        raise EmptySplitError("manifest", split, path, f"no row has split {split!r} (found: {', '.join(found)})")
    canon = np.array([_label_to_canonical(df["label"].iat[r], path, int(r) + 2) for r in rows], dtype=np.int64)
    soft_cols, soft_names = _soft_columns(list(df.columns), path)
    space = space_covering([CANONICAL[i] for i in np.unique(canon)] + soft_names)
    targets = canonical_to_space(canon, space)

    dists = None
    if soft_cols:
        vals = df.iloc[rows][soft_cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
        bad = np.isnan(vals).any(1) | (vals < 0).any(1)
        if bad.any():
            r = int(rows[np.flatnonzero(bad)[0]])
            raise DataFormatError(
                path, f"soft-label columns {soft_cols} hold a missing or negative value", r + 2, "numbers >= 0"
            )
        dists = np.zeros((len(rows), len(space)), dtype=np.float64)
        cols = canonical_to_space(np.array([CANONICAL.index(n) for n in soft_names]), space)
        np.add.at(dists, (slice(None), cols), vals)  # type: ignore[arg-type]  # numpy stubs: no tuple index in ufunc.at
        s = dists.sum(1, keepdims=True)
        onehot = np.eye(len(space))[targets]
        dists = np.where(s > 0, dists / np.maximum(s, 1e-12), onehot).astype(np.float32)
        _warn_contradictions(dists, targets, rows, path, soft_cols)

    reserved = {"path", "label", "subject", "split", *soft_cols}
    meta: dict[str, np.ndarray] = {}
    for c in df.columns:
        if c in reserved or c.startswith(("dist_", "votes_")):
            continue
        col = df[c].to_numpy()[rows]
        num = pd.to_numeric(pd.Series(col), errors="coerce")
        meta[c] = num.to_numpy() if not num.isna().any() else col.astype(str)
    vote_cols = [c for c in df.columns if c.startswith("votes_")]
    if vote_cols:
        meta["votes"] = df.iloc[rows][vote_cols].apply(pd.to_numeric, errors="coerce").fillna(0).to_numpy()

    base = path.parent
    paths = [os.path.join(base, p) for p in df["path"].str.strip().to_numpy()[rows]]  # absolute p stays as is
    subjects = df["subject"].to_numpy()[rows] if "subject" in df.columns else None
    return FERDataset(
        "manifest",
        split,
        space,
        targets,
        paths=paths,
        dists=dists,
        subjects=subjects,
        meta=meta,
        root=root,
        source=path,
    )
