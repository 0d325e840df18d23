"""RAF-DB basic (Li, Deng & Du, CVPR 2017): the ``list_patition_label.txt`` layout, and the class-folder layouts of
MA-Net (``train/0..6``, AffectNet order) and POSTER_V2 (``train/1..7``, RAF-DB file order)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np

from ...labels import LABEL_SPACES, dataset_to_canonical
from ..base import FERDataset, register_dataset
from ..errors import DataFormatError, EmptySplitError
from ._common import canonical_to_space, carve_valid, folder_class, list_images, parse_int, root_error

__all__ = ["read_rafdb", "RAFDB_LAYOUT"]

RAFDB_LAYOUT = """\
<root>/                                   RAF-DB basic (a top-level basic/ folder is accepted too)
├── EmoLabel/
│   └── list_patition_label.txt           lines "train_00001.jpg 5": labels 1..7 = Surprise, Fear, Disgust,
│                                         Happiness, Sadness, Anger, Neutral; split = name prefix train/test
└── Image/
    ├── aligned/train_00001_aligned.jpg   100x100 aligned faces (aligned=True, the default)
    └── original/train_00001.jpg          the original photos (aligned=False)
or class folders:
<root>/train/<0..6>/*.jpg, <root>/test/<0..6>/*.jpg     MA-Net: 0..6 in AffectNet order
<root>/train/<1..7>/*.jpg, <root>/valid/<1..7>/*.jpg    POSTER_V2: 1..7 in the file order above ('valid' = test)"""

_LABEL_FILE = "EmoLabel/list_patition_label.txt"
_EXPECTED_LINE = '"<image name> <label 1..7>", e.g. "train_00001.jpg 5"'


def _read_label_file(path: Path, want: str) -> tuple[list[str], np.ndarray]:
    """Image names and 0-based RAF-DB codes of the lines whose name starts with ``want``."""
    names: list[str] = []
    codes: list[int] = []
    for lineno, raw in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DataFormatError(path, f"cannot parse {raw!r}", lineno, _EXPECTED_LINE)
        name, label = parts
        code = parse_int(label, path, lineno, _EXPECTED_LINE)
        if not 1 <= code <= 7:
            raise DataFormatError(
                path,
                f"label {code} is out of range",
                lineno,
                "labels 1..7 (Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral)",
            )
        prefix = name.split("_", 1)[0].lower()
        if prefix not in ("train", "test"):
            raise DataFormatError(
                path, f"image name {name!r} starts with neither 'train' nor 'test'", lineno, _EXPECTED_LINE
            )
        if prefix == want:
            names.append(name)
            codes.append(code - 1)
    return names, np.asarray(codes, dtype=np.int64)


def _folder_split(root: Path, split: str, folder_order: str | None) -> FERDataset | None:
    """The MA-Net / POSTER_V2 class-folder layout, or None when ``root`` does not have it."""
    train_dir = root / "train"
    if not train_dir.is_dir():
        return None
    subs = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not subs or not all(s.isdigit() for s in subs):
        return None
    if folder_order is None:
        if "0" in subs:
            folder_order = "rafdb_manet"
        elif "7" in subs:
            folder_order = "rafdb"
        else:
            raise DataFormatError(
                train_dir,
                f"class folders {subs} fit both the MA-Net (0..6) and the POSTER_V2 (1..7) numbering",
                expected="folder_order='rafdb_manet' (0..6, AffectNet order) or 'rafdb' (1..7, RAF-DB file order)",
            )
    index_base = 1 if folder_order == "rafdb" else 0
    folder: Path | None
    if split == "train":
        folder = train_dir
    else:
        folder = next((root / d for d in ("test", "valid", "val") if (root / d).is_dir()), None)
        if folder is None:
            raise root_error("rafdb", root, "found train/ class folders but no test/ (or valid/) folder", RAFDB_LAYOUT)
    paths: list[Path] = []
    names: list[str] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        cls = folder_class(sub, folder_order, index_base)
        files = list_images(sub)
        paths += files
        names += [cls] * len(files)
    space = LABEL_SPACES["basic7"]
    if not paths:
        raise EmptySplitError("rafdb", split, folder, "no images in the class folders")
    targets = np.array([space.names.index(n) for n in names], dtype=np.int64)
    return FERDataset("rafdb", split, space, targets, paths=paths, root=root, source=folder)


@register_dataset(
    "rafdb",
    layout=RAFDB_LAYOUT,
    splits=("train", "valid", "test"),
    default_label_space="basic7",
    dirname="rafdb",
    description="RAF-DB basic: 12,271 train / 3,068 test in-the-wild faces, 7 classes; no validation split "
    "(valid_fraction= carves one from train).",
    aliases=("raf-db", "raf_db", "raf"),
)
def read_rafdb(
    root: Path,
    split: str = "train",
    *,
    aligned: bool = True,
    valid_fraction: float | None = None,
    seed: int = 0,
    folder_order: str | None = None,
) -> FERDataset:
    """Read RAF-DB basic.

    Args:
        root: the RAF-DB root (see :data:`RAFDB_LAYOUT`).
        split: ``"train"``, ``"test"``, or ``"valid"`` (a seeded class-stratified share of train; needs
            ``valid_fraction``, and ``"train"`` then leaves it out).
        aligned: read ``Image/aligned/*_aligned.jpg`` (True) or ``Image/original/*.jpg``.
        valid_fraction: share of train held out as ``"valid"``.
        seed: seed of that draw.
        folder_order: for the class-folder layouts, ``"rafdb_manet"`` (0..6) or ``"rafdb"`` (1..7); detected when
            the folders include ``0`` or ``7``.

    Returns:
        a :class:`FERDataset` in the ``basic7`` label space.
    """
    base = root if (root / _LABEL_FILE).is_file() else root / "basic"
    label_file = base / _LABEL_FILE
    if not label_file.is_file():
        ds = _folder_split(root, "train" if split == "valid" else split, folder_order)
        if ds is None:
            raise root_error(
                "rafdb",
                root,
                f"no label file {_LABEL_FILE} (nor basic/{_LABEL_FILE}) and no train/<0..6> class folders",
                RAFDB_LAYOUT,
            )
        return carve_valid(ds, split, valid_fraction, seed) if split != "test" else ds

    want = "test" if split == "test" else "train"
    image_dir = base / "Image" / ("aligned" if aligned else "original")
    if not image_dir.is_dir():
        raise root_error(
            "rafdb",
            root,
            f"the image folder {image_dir} is missing ({'aligned' if aligned else 'original'} images requested)",
            RAFDB_LAYOUT,
        )
    names, codes = _read_label_file(label_file, want)
    if not names:
        raise EmptySplitError("rafdb", split, label_file, f"no line starts with {want!r}")
    if aligned:
        paths = [image_dir / f"{Path(n).stem}_aligned.jpg" for n in names]
    else:
        paths = [image_dir / n for n in names]
    space = LABEL_SPACES["basic7"]
    targets = canonical_to_space(cast(np.ndarray, dataset_to_canonical("rafdb", codes)), space)
    ds = FERDataset("rafdb", want, space, targets, paths=paths, root=root, source=label_file)
    return carve_valid(ds, split, valid_fraction, seed) if split != "test" else ds
