"""FER+ (Barsoum et al., ICMI 2016): FER2013 images relabelled by 10 crowd votes each, in three published layouts.

Votes come in the FER+ column order ``neutral, happiness, surprise, sadness, anger, disgust, fear, contempt,
unknown, NF``. How votes become targets is the ``mode`` option; the rules follow Microsoft's FERPlus reader
(``src/ferplus.py``, ``_process_data``), which implements the four schemes of the paper:

- ``"majority"`` (the default, and the protocol of ESR / Diversified and of ``shared/data/ferplus``): vote counts
  <= 1 are zeroed; the label is the top class when it holds more than half of the remaining votes; images whose
  winner is unknown/NF, or that have no such majority, are dropped.
- ``"probability"`` and ``"crossentropy"`` (PLD and CEL of the paper; the same targets, they differ only in how a
  trainer uses them): counts <= 1 zeroed; the top classes are taken in order (ties together) while they cover less
  than 75 % of the votes and fewer than 3 were taken; taking unknown/NF stops the scan (and is undone if an emotion was
  taken before); the image is dropped when the taken votes are <= 50 % of all, more than 3 classes were taken, or
  the top taken class is unknown/NF. ``dists`` = the taken votes over the 8 emotions, normalised.
- ``"multi_target"``: counts <= 1 zeroed; every class with >= 30 % of the votes is kept; dropped when the kept votes
  are <= 50 % of all or the top kept class is unknown/NF. ``dists`` = the kept votes normalised (its support is the
  multi-label target).
- ``"soft"`` (not in the paper): every image with at least one emotion vote; ``dists`` = the raw emotion votes
  normalised.

In ``"majority"`` and ``"soft"`` mode ``dists`` is the raw crowd distribution over the 8 emotions; the label is always
the arg-max of the target distribution (ties go to the first FER+ column). ``meta["votes"]`` keeps the raw (N, 10)
votes in FER+ column order.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ...labels import DATASET_ORDERS, LABEL_SPACES, canonical_name
from ..base import FERDataset, register_dataset
from ..errors import DataFormatError, EmptySplitError
from ._common import first_existing, has_class_folders, read_class_tree, require_columns, root_error
from .fer2013 import parse_pixel_rows, read_csv_stripped, usage_mask

__all__ = ["read_ferplus", "ferplus_targets", "FERPLUS_LAYOUT", "VOTE_COLUMNS", "MODES"]

VOTE_COLUMNS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
    "unknown",
    "NF",
)
MODES: tuple[str, ...] = ("majority", "probability", "crossentropy", "multi_target", "soft")

FERPLUS_LAYOUT = """\
one of three layouts:
(a) Microsoft FERPlus (after generate_training_data.py):
    <root>/data/FER2013Train/label.csv + ferXXXXXXX.png     (also FER2013Valid/, FER2013Test/)
    or ESR-style <root>/Images/FER2013Train/*.png + <root>/Labels/FER2013Train/label.csv
    label.csv rows, no header: name, "(0, 0, 48, 48)", 10 votes (neutral, happiness, surprise, sadness,
    anger, disgust, fear, contempt, unknown, NF)
(b) <root>/fer2013new.csv (Usage, Image name, 10 vote columns) beside <root>/fer2013.csv (the pixels,
    same row order)
(c) the fernb shared copy: <root>/train/<class>/*.png, <root>/valid/<class>/*.png, and <root>/manifest.csv
    (path,split,label,ferplus_name,votes_neutral..votes_NF)
splits: train = FER2013Train (Training), valid = FER2013Valid (PublicTest), test = FER2013Test (PrivateTest)"""

_FOLDER = {"train": "FER2013Train", "valid": "FER2013Valid", "test": "FER2013Test"}
_LABEL_ROW = 'name, "(x, y, w, h)", 10 vote counts; e.g. fer0000000.png,"(0, 0, 48, 48)",4,0,0,1,3,2,0,0,0,0'


# -- votes -> targets ----------------------------------------------------------------------------------------------
def _drop_single_votes(votes: np.ndarray) -> np.ndarray:
    return np.where(votes > 1, votes, 0).astype(np.float64)


def _pld_row(raw: list[float]) -> list[float] | None:
    """Target of one image under the FER+ probability / cross-entropy rule, or None when it is dropped."""
    left = [v if v > 1 else 0.0 for v in raw]
    total = sum(left)
    taken = [0.0] * len(left)
    covered, n_taken = 0.0, 0
    stop = False
    while covered < 0.75 * total and n_taken < 3 and not stop:
        top = max(left)
        for i in [j for j, v in enumerate(left) if v == top]:
            taken[i], left[i] = top, 0.0
            covered += top
            n_taken += 1
            if i >= 8:  # unknown or NF reached: stop; undo it when emotions were taken before it
                stop = True
                if sum(taken) > top:
                    taken[i] = 0.0
                    n_taken -= 1
                break
    if sum(taken) <= 0.5 * total or n_taken > 3 or taken.index(max(taken)) >= 8:
        return None
    return taken


def ferplus_targets(votes: np.ndarray, mode: str = "majority") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn FER+ votes into labels and distributions.

    Args:
        votes: (N, 10) vote counts in FER+ column order.
        mode: one of :data:`MODES` (see the module docstring).

    Returns:
        ``keep`` (N,) bool, ``codes`` (N,) int64 label in FER+ column order 0..7 (-1 where dropped), ``dists``
        (N, 8) float32 in FER+ column order (rows of dropped images are zero).
    """
    if mode not in MODES:
        raise ValueError(f"unknown FER+ mode {mode!r}; expected one of {', '.join(MODES)}")
    raw = np.asarray(votes, dtype=np.float64)
    n = len(raw)
    emo = raw[:, :8]
    emo_sum = emo.sum(1, keepdims=True)
    crowd = np.divide(emo, emo_sum, out=np.zeros_like(emo), where=emo_sum > 0)
    if mode == "majority":
        v = _drop_single_votes(raw)
        top = v.argmax(1)
        keep = (v.max(1) > 0.5 * v.sum(1)) & (top < 8)
        codes, dists = np.where(keep, top, -1), crowd
    elif mode == "soft":
        keep = emo_sum[:, 0] >= 1
        codes, dists = np.where(keep, crowd.argmax(1), -1), crowd
    else:
        target = np.zeros((n, 10))
        keep = np.zeros(n, dtype=bool)
        if mode == "multi_target":
            v = _drop_single_votes(raw)
            total = v.sum(1, keepdims=True)
            target = np.where(v >= 0.3 * total, v, 0.0)
            keep = (target.sum(1) > 0.5 * total[:, 0]) & (target.argmax(1) < 8)
        else:
            for i, votes_i in enumerate(raw.tolist()):
                row = _pld_row(votes_i)
                if row is not None:
                    target[i], keep[i] = row, True
        t = target[:, :8]
        s = t.sum(1, keepdims=True)
        dists = np.divide(t, s, out=np.zeros_like(t), where=s > 0)
        codes = np.where(keep, dists.argmax(1), -1)
    dists = np.where(keep[:, None], dists, 0.0).astype(np.float32)
    return keep, codes.astype(np.int64), dists


def _to_canonical_dataset(
    split: str,
    votes: np.ndarray,
    mode: str,
    source: Path,
    root: Path,
    *,
    paths: list[str] | list[Path] | None = None,
    pixels: np.ndarray | None = None,
    names: np.ndarray | None = None,
    folder_labels: list[str] | None = None,
    lines: np.ndarray | None = None,
) -> FERDataset:
    """Apply ``mode`` to the votes and build the dataset in ``ferplus8`` (= canonical prefix of 8)."""
    keep, codes, dists_fer = ferplus_targets(votes, mode)
    space = LABEL_SPACES["ferplus8"]
    col_to_label = np.array([space.names.index(n) for n in DATASET_ORDERS["ferplus"]], dtype=np.int64)
    if folder_labels is not None and mode == "majority":
        got = np.array([space.names.index(canonical_name(f)) for f in folder_labels])
        expect = np.where(keep, col_to_label[np.maximum(codes, 0)], -1)
        bad = np.flatnonzero(got != expect)
        if len(bad):
            i = int(bad[0])
            what = space.names[expect[i]] if expect[i] >= 0 else "no majority label (dropped by the rule)"
            raise DataFormatError(
                source,
                f"image {paths[i] if paths else i} is filed as {folder_labels[i]!r} but "
                f"its votes {votes[i].astype(int).tolist()} give {what}",
                int(lines[i]) if lines is not None else None,
                "folder labels that follow the FER+ majority rule",
            )
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        raise EmptySplitError("ferplus", split, source, f"no image keeps a label in mode {mode!r}")
    dists = np.zeros((len(idx), len(space)), dtype=np.float32)
    dists[:, col_to_label] = dists_fer[idx]
    meta: dict[str, np.ndarray] = {"votes": np.asarray(votes, dtype=np.int64)[idx]}
    if names is not None:
        meta["ferplus_name"] = np.asarray(names)[idx]
    return FERDataset(
        "ferplus",
        split,
        space,
        col_to_label[codes[idx]],
        paths=[paths[i] for i in idx] if paths is not None else None,
        pixels=pixels[idx] if pixels is not None else None,
        dists=dists,
        meta=meta,
        root=root,
        source=source,
    )


# -- layout (a): label.csv per split folder ------------------------------------------------------------------------
def _microsoft_dirs(root: Path, split: str) -> tuple[Path, Path] | None:
    """(label.csv, image folder) of a split in layout (a), or None."""
    folder = _FOLDER[split]
    for label_dir, image_dir in (
        (root / "data" / folder, root / "data" / folder),
        (root / folder, root / folder),
        (root / "Labels" / folder, root / "Images" / folder),
    ):
        if (label_dir / "label.csv").is_file():
            return label_dir / "label.csv", image_dir
    return None


def _read_label_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """File names and (N, 10) votes of a FERPlus ``label.csv`` (with or without the face-box column)."""
    names: list[str] = []
    votes: list[list[int]] = []
    with open(path, newline="", encoding="utf-8") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) not in (11, 12):
                raise DataFormatError(path, f"row has {len(row)} fields", lineno, _LABEL_ROW)
            counts = row[-10:]
            try:
                vals = [int(float(c)) for c in counts]
            except ValueError:
                raise DataFormatError(path, f"vote counts {counts} are not numbers", lineno, _LABEL_ROW) from None
            if min(vals) < 0:
                raise DataFormatError(path, f"negative vote count in {counts}", lineno, _LABEL_ROW)
            names.append(row[0].strip())
            votes.append(vals)
    return names, np.asarray(votes, dtype=np.int64).reshape(-1, 10)


def _read_microsoft(root: Path, split: str, mode: str) -> FERDataset:
    found = _microsoft_dirs(root, split)
    if found is None:
        raise root_error(
            "ferplus", root, f"no label.csv for split {split!r} ({_FOLDER[split]}/label.csv)", FERPLUS_LAYOUT
        )
    label_csv, image_dir = found
    names, votes = _read_label_csv(label_csv)
    if not names:
        raise EmptySplitError("ferplus", split, label_csv, "label.csv has no rows")
    return _to_canonical_dataset(
        split, votes, mode, label_csv, root, paths=[image_dir / n for n in names], names=np.asarray(names)
    )


# -- layout (b): fer2013new.csv + fer2013.csv -----------------------------------------------------------------------
def _read_new_csv(root: Path, split: str, mode: str) -> FERDataset:
    new_csv = root / "fer2013new.csv"
    pixel_csv = first_existing(root, ("fer2013.csv", "fer2013/fer2013.csv"))
    if pixel_csv is None:
        raise root_error(
            "ferplus", root, "fer2013new.csv found but not fer2013.csv (it holds the pixels)", FERPLUS_LAYOUT
        )
    new = read_csv_stripped(new_csv)
    require_columns(
        list(new.columns),
        ["Usage", "Image name", *VOTE_COLUMNS],
        new_csv,
        "columns Usage,Image name," + ",".join(VOTE_COLUMNS),
    )
    fer = read_csv_stripped(pixel_csv)
    require_columns(list(fer.columns), ["pixels", "Usage"], pixel_csv, "columns emotion,pixels,Usage")
    if len(fer) != len(new):
        raise DataFormatError(
            new_csv,
            f"has {len(new)} rows but {pixel_csv.name} has {len(fer)}",
            expected="the same rows in the same order as fer2013.csv",
        )
    names = new["Image name"].str.strip().to_numpy()
    rows = np.flatnonzero(usage_mask(new, new_csv, split) & (names != ""))
    if len(rows) == 0:
        raise EmptySplitError("ferplus", split, new_csv, "no named image has this Usage")
    try:
        votes = new.loc[rows, list(VOTE_COLUMNS)].astype(float).to_numpy().astype(np.int64)
    except ValueError as exc:
        raise DataFormatError(
            new_csv, f"vote columns hold a non-number ({exc})", expected="integer vote counts"
        ) from None
    if (votes < 0).any():
        r = int(rows[np.flatnonzero((votes < 0).any(1))[0]])
        raise DataFormatError(new_csv, "negative vote count", r + 2, "vote counts >= 0")
    pixels = parse_pixel_rows(fer["pixels"].to_numpy()[rows], pixel_csv, rows + 2)
    return _to_canonical_dataset(split, votes, mode, new_csv, root, pixels=pixels, names=names[rows])


# -- layout (c): class folders + manifest.csv -----------------------------------------------------------------------
def _read_shared(root: Path, split: str, mode: str) -> FERDataset:
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        folder = root / split
        if not folder.is_dir():
            raise root_error("ferplus", root, f"no {split}/ class folder (and no manifest.csv)", FERPLUS_LAYOUT)
        if mode != "majority":
            raise root_error(
                "ferplus", root, f"mode {mode!r} needs the votes in manifest.csv, which is missing", FERPLUS_LAYOUT
            )
        class_paths, class_names = read_class_tree(folder)
        if not class_paths:
            raise EmptySplitError("ferplus", split, folder, "no images in the class folders")
        space = LABEL_SPACES["ferplus8"]
        return FERDataset(
            "ferplus", split, space, [space.index(n) for n in class_names], paths=class_paths, root=root, source=folder
        )
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    vote_cols = [f"votes_{c}" for c in VOTE_COLUMNS]
    require_columns(
        list(df.columns),
        ["path", "split", "label", *vote_cols],
        manifest,
        "columns path,split,label,ferplus_name," + ",".join(vote_cols),
    )
    splits = sorted(set(df["split"]))
    rows = np.flatnonzero(df["split"].to_numpy() == split)
    if len(rows) == 0:
        raise root_error(
            "ferplus", root, f"manifest.csv has no {split!r} rows (it lists: {', '.join(splits)})", FERPLUS_LAYOUT
        )
    try:
        votes = df.loc[rows, vote_cols].astype(int).to_numpy()
    except ValueError as exc:
        raise DataFormatError(
            manifest, f"vote columns hold a non-integer ({exc})", expected="integer vote counts"
        ) from None
    paths = [os.path.join(root, p) for p in df["path"].to_numpy()[rows]]
    names = df["ferplus_name"].to_numpy()[rows] if "ferplus_name" in df.columns else None
    return _to_canonical_dataset(
        split,
        votes,
        mode,
        manifest,
        root,
        paths=paths,
        names=names,
        folder_labels=list(df["label"].to_numpy()[rows]),
        lines=rows + 2,
    )


@register_dataset(
    "ferplus",
    layout=FERPLUS_LAYOUT,
    splits=("train", "valid", "test"),
    default_label_space="ferplus8",
    dirname="ferplus",
    description="FER+: FER2013 images with 10 crowd votes each, 8 classes; modes majority / probability / "
    "crossentropy / multi_target / soft.",
    aliases=("fer+", "fer_plus", "fer2013plus"),
)
def read_ferplus(root: Path, split: str = "train", *, mode: str = "majority") -> FERDataset:
    """Read FER+ from any of its three layouts (see :data:`FERPLUS_LAYOUT`).

    Args:
        root: the FER+ root.
        split: ``"train"``, ``"valid"`` or ``"test"``.
        mode: how votes become targets (see the module docstring).

    Returns:
        a :class:`FERDataset` in ``ferplus8`` with ``dists`` (N, 8) and ``meta["votes"]`` (N, 10).
    """
    if mode not in MODES:
        raise ValueError(f"unknown FER+ mode {mode!r}; expected one of {', '.join(MODES)}")
    if (root / "manifest.csv").is_file() or has_class_folders(root / "train") or has_class_folders(root / "valid"):
        return _read_shared(root, split, mode)
    if any(_microsoft_dirs(root, s) is not None for s in _FOLDER):
        return _read_microsoft(root, split, mode)
    if (root / "fer2013new.csv").is_file():
        return _read_new_csv(root, split, mode)
    raise root_error("ferplus", root, "none of the three FER+ layouts found", FERPLUS_LAYOUT)
