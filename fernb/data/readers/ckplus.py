"""CK+ (Lucey et al., 2010): the CK+48 class-folder crops (with the fernb manifest when present) and the original
release (``Emotion/`` codes + ``cohn-kanade-images/`` sequences)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ...labels import CANONICAL, LABEL_SPACES, LabelSpace, UnknownClassError, canonical_name, dataset_to_canonical
from ..base import FERDataset, register_dataset
from ..errors import DataFormatError, EmptySplitError
from ._common import (
    first_existing,
    folder_class,
    has_class_folders,
    list_images,
    parse_int,
    require_columns,
    root_error,
    select_fold,
)

__all__ = ["read_ckplus", "CKPLUS_LAYOUT", "parse_ck_name"]

CKPLUS_LAYOUT = """\
one of two layouts:
(a) CK+48 crops:
    <root>/all/<class>/S010_004_00000017.png      (or <root>/<class>/..., or <root>/<train|test>/<class>/...)
    classes angry|anger, contempt, disgust, fear, happy|happiness, sad|sadness, surprise
    <root>/manifest.csv (optional): path,label,subject,sequence,frame,subject_fold10
(b) the original CK+ release:
    <root>/Emotion/S005/001/S005_001_00000011_emotion.txt     one float code 0..7 = neutral, anger, contempt,
                                                               disgust, fear, happy, sadness, surprise
    <root>/cohn-kanade-images/S005/001/S005_001_00000001.png  the frames of each sequence
    the last n_peak frames of each labelled sequence take its label (include_neutral=True adds the first frame)
one split "all" (CK+48 folders may also have train/test); use fold= for subject-independent folds"""

_CK_NAME = re.compile(r"^(S\d+)_(\d+)_(\d+)")
_EXPECTED_NAME = "S<subject>_<sequence>_<frame>.png, e.g. S010_004_00000017.png"


def parse_ck_name(path: Path) -> tuple[str, str, int]:
    """(subject, sequence, frame) from a CK+ file name such as ``S010_004_00000017.png``."""
    m = _CK_NAME.match(path.name)
    if m is None:
        raise DataFormatError(path, f"file name {path.name!r} does not follow the CK+ pattern", expected=_EXPECTED_NAME)
    return m.group(1), m.group(2), int(m.group(3))


def _space_for(names: list[str]) -> LabelSpace:
    return LABEL_SPACES["ferplus8"] if "neutral" in names else LABEL_SPACES["ckplus7"]


def _build(
    root: Path,
    split: str,
    paths: list[Path],
    names: list[str],
    source: Path,
    extra_meta: dict[str, np.ndarray] | None = None,
    subjects: list[str] | None = None,
) -> FERDataset:
    if not paths:
        raise EmptySplitError("ckplus", split, source, "no images found")
    if subjects is None:
        parsed = [parse_ck_name(p) for p in paths]
        subjects = [s for s, _, _ in parsed]
        meta = {"sequence": np.array([f"{s}_{q}" for s, q, _ in parsed]), "frame": np.array([f for _, _, f in parsed])}
    else:
        meta = {}
    meta.update(extra_meta or {})
    space = _space_for(names)
    return FERDataset(
        "ckplus",
        split,
        space,
        [space.names.index(n) for n in names],
        paths=paths,
        subjects=subjects,
        meta=meta,
        root=root,
        source=source,
    )


def _read_manifest(root: Path, manifest: Path, split: str) -> FERDataset:
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    require_columns(
        list(df.columns),
        ["path", "label", "subject"],
        manifest,
        "columns path,label,subject[,sequence,frame,subject_fold10]",
    )
    if "split" in df.columns:
        rows = np.flatnonzero(df["split"].to_numpy() == split) if split != "all" else np.arange(len(df))
    else:
        first = df["path"].str.split("/", n=1).str[0].to_numpy()
        rows = np.arange(len(df)) if split == "all" else np.flatnonzero(first == split)
    if len(rows) == 0:
        if split in ("train", "test"):
            raise ValueError(
                f"{manifest} lists no {split!r} images; use split='all', or split='train'/'test' with "
                "fold=0..9 (subject-independent folds)"
            )
        raise EmptySplitError("ckplus", split, manifest, "no manifest row belongs to this split")
    names = []
    for r in rows:
        try:
            names.append(canonical_name(df["label"].iat[r]))
        except UnknownClassError:
            raise UnknownClassError(
                f"{manifest}, line {r + 2}: label {df['label'].iat[r]!r} is not an expression class"
            ) from None
    sub = df.iloc[rows]
    meta: dict[str, np.ndarray] = {}
    if "sequence" in df.columns:
        meta["sequence"] = (sub["subject"] + "_" + sub["sequence"]).to_numpy()
    if "frame" in df.columns:
        meta["frame"] = pd.to_numeric(sub["frame"], errors="coerce").fillna(-1).to_numpy().astype(np.int64)
    if "subject_fold10" in df.columns:
        folds = pd.to_numeric(sub["subject_fold10"], errors="coerce")
        if folds.isna().any():
            row = int(rows[np.flatnonzero(folds.isna().to_numpy())[0]])
            raise DataFormatError(manifest, "subject_fold10 is not an integer", row + 2, "a fold index 0..9")
        meta["subject_fold10"] = folds.to_numpy().astype(np.int64)
    paths = [root / p for p in sub["path"].to_numpy()]
    return _build(
        root, "all" if split == "all" else split, paths, names, manifest, meta, subjects=list(sub["subject"].to_numpy())
    )


def _read_folders(root: Path, split: str) -> FERDataset | None:
    if split == "all":
        folder = root / "all" if has_class_folders(root / "all") else root if has_class_folders(root) else None
    else:
        folder = root / split if has_class_folders(root / split) else None
    if folder is None:
        return None
    paths: list[Path] = []
    names: list[str] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder is root and sub.name in ("train", "test", "valid", "all"):
            continue
        cls = folder_class(sub)
        files = list_images(sub)
        paths += files
        names += [cls] * len(files)
    return _build(root, split, paths, names, folder)


def _read_original(root: Path, emotion_dir: Path, n_peak: int, include_neutral: bool) -> FERDataset:
    image_dir = first_existing(
        root, ("cohn-kanade-images", "extended-cohn-kanade-images/cohn-kanade-images"), kind="dir"
    )
    if image_dir is None:
        raise root_error("ckplus", root, "found Emotion/ but no cohn-kanade-images/ folder", CKPLUS_LAYOUT)
    expected = "one number 0..7 (neutral, anger, contempt, disgust, fear, happy, sadness, surprise), e.g. 3.0000000e+00"
    paths: list[Path] = []
    names: list[str] = []
    for label_file in sorted(emotion_dir.glob("S*/*/*_emotion.txt")):
        tokens = label_file.read_text(encoding="utf-8", errors="replace").split()
        if len(tokens) != 1:
            raise DataFormatError(label_file, f"holds {len(tokens)} values", 1, expected)
        code = parse_int(tokens[0], label_file, 1, expected)
        if not 0 <= code <= 7:
            raise DataFormatError(label_file, f"emotion code {code} is out of range", 1, expected)
        subject, sequence = label_file.parent.parent.name, label_file.parent.name
        seq_dir = image_dir / subject / sequence
        frames = list_images(seq_dir, recursive=False) if seq_dir.is_dir() else []
        if not frames:
            raise DataFormatError(
                label_file,
                f"the labelled sequence has no frames in {seq_dir}",
                expected="cohn-kanade-images/<subject>/<sequence>/*.png",
            )
        frames.sort(key=lambda p: parse_ck_name(p)[2])
        cls = dataset_to_canonical("ckplus", code)
        peak = frames[-n_peak:]
        paths += peak
        names += [CANONICAL[cls]] * len(peak)
        if include_neutral and len(frames) > n_peak:
            paths.append(frames[0])
            names.append("neutral")
    return _build(root, "all", paths, names, emotion_dir)


@register_dataset(
    "ckplus",
    layout=CKPLUS_LAYOUT,
    splits=("all", "train", "test"),
    default_label_space="ckplus7",
    dirname="ckplus",
    description="CK+: 327 labelled posed sequences of 118 subjects (CK+48: 981 peak-frame crops), 7 classes; "
    "subject-independent folds via fold=.",
    aliases=("ck+", "ck", "ckplus48", "ck+48"),
)
def read_ckplus(
    root: Path,
    split: str = "all",
    *,
    fold: int | None = None,
    num_folds: int = 10,
    fold_seed: int = 0,
    n_peak: int = 3,
    include_neutral: bool = False,
) -> FERDataset:
    """Read CK+ (CK+48 folders or the original release).

    Args:
        root: the CK+ root (see :data:`CKPLUS_LAYOUT`).
        split: ``"all"``; ``"train"`` / ``"test"`` of fold ``fold``; or a ``train/`` ``test/`` folder of CK+48.
        fold: test fold index of a subject-independent ``num_folds``-fold split; with 10 folds and a manifest that
            has ``subject_fold10``, those folds are used.
        num_folds: number of folds.
        fold_seed: seed of the fold assignment (when folds are computed).
        n_peak: original release: frames taken from the end of each labelled sequence.
        include_neutral: original release: also take the first frame of each sequence as neutral.

    Returns:
        a :class:`FERDataset` in ``ckplus7`` (``ferplus8`` when neutral images are present) with ``subjects``
        and ``meta["sequence"]``, ``meta["frame"]``.
    """
    emotion_dir = first_existing(root, ("Emotion", "Emotion_labels/Emotion"), kind="dir")
    if emotion_dir is not None:
        if n_peak < 1:
            raise ValueError(f"n_peak must be >= 1, got {n_peak}")
        ds = _read_original(root, emotion_dir, n_peak, include_neutral)
        return select_fold(ds, split, fold, num_folds, fold_seed)
    manifest = root / "manifest.csv"
    use_fold = fold is not None or split == "all"
    read_split = "all" if use_fold else split
    if manifest.is_file():
        ds = _read_manifest(root, manifest, read_split)
    else:
        folder_ds = _read_folders(root, read_split)
        if folder_ds is None:
            if read_split != "all" and (has_class_folders(root / "all") or has_class_folders(root)):
                raise ValueError(
                    f"ckplus has no {split!r} folder here; use split='all', or split='train'/'test' "
                    f"with fold=0..{num_folds - 1} (subject-independent folds)"
                )
            raise root_error(
                "ckplus", root, "neither Emotion/ (original release) nor class folders found", CKPLUS_LAYOUT
            )
        ds = folder_ds
    if not use_fold:
        return ds
    return select_fold(ds, split, fold, num_folds, fold_seed, fold_column=f"subject_fold{num_folds}")
