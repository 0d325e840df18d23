"""AffectNet (Mollahosseini et al., 2017), manually annotated part: the official annotation CSVs, and the
class-folder layouts (``train/<0..7>``, ESR's ``Training_Labeled/<k>``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
from PIL import Image

from ...labels import LABEL_SPACES, dataset_to_canonical
from ..base import FERDataset, register_dataset
from ..errors import DataFormatError, EmptySplitError
from ._common import canonical_to_space, carve_valid, first_existing, read_class_tree, require_columns, root_error

__all__ = ["read_affectnet", "AFFECTNET_LAYOUT", "BoxCropDataset"]

AFFECTNET_LAYOUT = """\
<root>/
├── training.csv                 official annotations (also accepted under Manually_Annotated_file_lists/):
├── validation.csv               subDirectory_filePath, face_x, face_y, face_width, face_height,
│                                facial_landmarks, expression, valence, arousal
│                                expression 0..7 = Neutral, Happy, Sad, Surprise, Fear, Disgust, Anger,
│                                Contempt (8 None, 9 Uncertain, 10 No-Face are dropped)
└── Manually_Annotated_Images/   <subDirectory_filePath> (e.g. 689/737db2....jpg); also accepted under
                                 Manually_Annotated/ or Manually_Annotated_compressed/
or class folders:
<root>/train/<0..7 or class name>/*.jpg and <root>/val/<0..7 or class name>/*.jpg
(ESR: <root>/Training_Labeled/<0..7>/, <root>/Validation/<0..7>/)
splits: train = training.csv, test = validation.csv (there is no public test set),
        valid = a seeded stratified share of train (valid_fraction=)"""

_CSV_DIRS = ("", "Manually_Annotated_file_lists", "Manually_Annotated/Manually_Annotated_file_lists")
_IMAGE_DIRS = (
    "Manually_Annotated_Images",
    "Manually_Annotated/Manually_Annotated_Images",
    "Manually_Annotated_compressed/Manually_Annotated_Images",
)
_COLUMNS = (
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "expression",
    "valence",
    "arousal",
)
_EXPECTED_EXPR = "expression 0..10 (0..7 classes; 8 None, 9 Uncertain, 10 No-Face are dropped)"


class BoxCropDataset(FERDataset):
    """A :class:`FERDataset` whose images are cropped to ``meta["box"]`` (N, 4) = (x, y, width, height)."""

    def load_image(self, i: int) -> Image.Image:
        img = super().load_image(i)
        x, y, w, h = (int(v) for v in self.meta["box"][i])
        if w <= 0 or h <= 0:
            return img
        return img.crop((max(x, 0), max(y, 0), min(x + w, img.width), min(y + h, img.height)))


def _read_csv(path: Path, image_dir: Path, split: str, space_name: str, crop_face: bool, root: Path) -> FERDataset:
    try:
        header = pd.read_csv(path, nrows=0)
        header.columns = [str(c).strip() for c in header.columns]
        require_columns(list(header.columns), _COLUMNS, path, "the official AffectNet columns " + ",".join(_COLUMNS))
        df = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=lambda c: str(c).strip() in _COLUMNS)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataFormatError(path, f"not a readable CSV ({exc})") from None
    df.columns = [str(c).strip() for c in df.columns]
    expr = pd.to_numeric(df["expression"].str.strip(), errors="coerce").to_numpy()
    bad = ~np.isfinite(expr) | (expr < 0) | (expr > 10) | (expr != np.round(expr))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataFormatError(path, f"expression {df['expression'].iloc[i]!r} is not a label", i + 2, _EXPECTED_EXPR)
    n_cls = len(LABEL_SPACES[space_name])
    rows = np.flatnonzero(expr < n_cls)  # 8-class keeps 0..7; 7-class also drops 7 (contempt)
    if len(rows) == 0:
        raise EmptySplitError("affectnet", split, path, "no row has an expression label 0..7")
    rel = df["subDirectory_filePath"].to_numpy()[rows]
    empty = np.flatnonzero(pd.Series(rel).str.strip().to_numpy() == "")
    if len(empty):
        raise DataFormatError(path, "empty subDirectory_filePath", int(rows[empty[0]]) + 2, "an image path")
    space = LABEL_SPACES[space_name]
    canonical = cast(np.ndarray, dataset_to_canonical("affectnet", expr[rows].astype(np.int64)))
    targets = canonical_to_space(canonical, space)
    meta: dict[str, np.ndarray] = {}
    for col in ("valence", "arousal"):
        meta[col] = pd.to_numeric(df[col].to_numpy()[rows], errors="coerce").astype(np.float32)
    box = df.loc[rows, ["face_x", "face_y", "face_width", "face_height"]].apply(pd.to_numeric, errors="coerce")
    if box.isna().to_numpy().any():
        i = int(rows[np.flatnonzero(box.isna().to_numpy().any(1))[0]])
        raise DataFormatError(path, "face box is not numeric", i + 2, "integer face_x, face_y, face_width, face_height")
    meta["box"] = box.to_numpy().astype(np.int64)
    cls = BoxCropDataset if crop_face else FERDataset
    paths = [os.path.join(image_dir, r.strip()) for r in rel]
    return cls("affectnet", split, space, targets, paths=paths, meta=meta, root=root, source=path)


def _read_folders(root: Path, split: str, space_name: str) -> FERDataset | None:
    train_dir = first_existing(root, ("train", "Training_Labeled", "training"), kind="dir")
    if train_dir is None:
        return None
    if split == "test":
        folder = first_existing(root, ("val", "valid", "validation", "Validation", "test"), kind="dir")
        if folder is None:
            raise root_error(
                "affectnet", root, f"found {train_dir.name}/ but no val/ (or Validation/) folder", AFFECTNET_LAYOUT
            )
    else:
        folder = train_dir
    paths, names = read_class_tree(folder, class_order="affectnet")
    space = LABEL_SPACES[space_name]
    keep = [i for i, n in enumerate(names) if n in space.names]
    if not keep:
        raise EmptySplitError("affectnet", split, folder, "no images in the class folders")
    targets = np.array([space.names.index(names[i]) for i in keep], dtype=np.int64)
    return FERDataset(
        "affectnet",
        "test" if split == "test" else "train",
        space,
        targets,
        paths=[paths[i] for i in keep],
        root=root,
        source=folder,
    )


@register_dataset(
    "affectnet",
    layout=AFFECTNET_LAYOUT,
    splits=("train", "valid", "test"),
    default_label_space="affectnet8",
    dirname="affectnet",
    description="AffectNet manual part: ~287k train / 4,000 validation (used as test), 8 or 7 classes, valence and "
    "arousal in meta.",
    aliases=("affectnet8", "affectnet7"),
)
def read_affectnet(
    root: Path,
    split: str = "train",
    *,
    num_classes: int = 8,
    crop_face: bool = False,
    valid_fraction: float | None = None,
    seed: int = 0,
) -> FERDataset:
    """Read AffectNet.

    Args:
        root: the AffectNet root (see :data:`AFFECTNET_LAYOUT`).
        split: ``"train"``, ``"test"`` (the official validation set) or ``"valid"`` (a seeded class-stratified
            share of train; needs ``valid_fraction``, and ``"train"`` then leaves it out).
        num_classes: 8 (``affectnet8``) or 7 (``basic7``, contempt dropped).
        crop_face: crop each image to the CSV face box (CSV layout only).
        valid_fraction: share of train held out as ``"valid"``.
        seed: seed of that draw.

    Returns:
        a :class:`FERDataset`; the CSV layout adds ``meta["valence"]``, ``meta["arousal"]`` (N,) and ``meta["box"]``
        (N, 4).
    """
    if num_classes not in (7, 8):
        raise ValueError(f"AffectNet num_classes must be 7 or 8, got {num_classes}")
    space_name = "affectnet8" if num_classes == 8 else "basic7"
    csv_name = "validation.csv" if split == "test" else "training.csv"
    csv_path = first_existing(root, [str(Path(d) / csv_name) for d in _CSV_DIRS])
    if csv_path is not None:
        image_dir = first_existing(root, _IMAGE_DIRS, kind="dir")
        if image_dir is None:
            raise root_error(
                "affectnet", root, f"found {csv_path.name} but no Manually_Annotated_Images/ folder", AFFECTNET_LAYOUT
            )
        ds = _read_csv(csv_path, image_dir, "test" if split == "test" else "train", space_name, crop_face, root)
    else:
        other = first_existing(root, [str(Path(d) / n) for d in _CSV_DIRS for n in ("training.csv", "validation.csv")])
        if other is not None:
            raise root_error("affectnet", root, f"found {other.name} but not {csv_name}", AFFECTNET_LAYOUT)
        folder_ds = _read_folders(root, split, space_name)
        if folder_ds is None:
            raise root_error(
                "affectnet",
                root,
                "neither training.csv / validation.csv nor train/ class folders found",
                AFFECTNET_LAYOUT,
            )
        ds = folder_ds
    return ds if split == "test" else carve_valid(ds, split, valid_fraction, seed)
