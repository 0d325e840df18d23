"""JAFFE (Lyons et al., 1998): 213 posed images of 10 Japanese female subjects, 7 classes, named ``KA.AN1.39.tiff``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...labels import JAFFE_CODES, LABEL_SPACES, UnknownClassError
from ..base import FERDataset, register_dataset
from ..errors import DataFormatError
from ._common import first_existing, is_image, root_error, select_fold

__all__ = ["read_jaffe", "JAFFE_LAYOUT", "parse_jaffe_name"]

JAFFE_LAYOUT = """\
<root>/                 (or <root>/jaffe/, <root>/jaffedbase/)
├── KA.AN1.39.tiff      <subject>.<expression code><take>.<image id>.tiff
├── KA.NE1.26.tiff      codes NE neutral, HA happy, SA sad, SU surprise, FE fear, DI disgust, AN angry
└── ...                 213 images, 10 subjects (KA, KL, KM, KR, MK, NA, NM, TM, UY, YM)
one split "all"; use fold= for subject-independent folds (split "train" / "test")"""

_NAME = re.compile(r"^([A-Za-z]{2,3})\.([A-Za-z]{2})(\d*)\.(\d+)\.[A-Za-z]+$")


def parse_jaffe_name(path: Path) -> tuple[str, str, int, int]:
    """(subject, canonical class, take, image id) of a JAFFE file name.

    Raises:
        DataFormatError: when the name does not follow the JAFFE pattern.
        UnknownClassError: for an expression code not in :data:`fernb.labels.JAFFE_CODES`.
    """
    m = _NAME.match(path.name)
    if m is None:
        raise DataFormatError(
            path,
            f"file name {path.name!r} does not follow the JAFFE pattern",
            expected="<subject>.<code><take>.<id>.tiff, e.g. KA.AN1.39.tiff",
        )
    subject, code, take, image_id = m.groups()
    try:
        cls = JAFFE_CODES[code.upper()]
    except KeyError:
        raise UnknownClassError(
            f"{path}: expression code {code!r} is not a JAFFE code "
            f"({', '.join(f'{k} {v}' for k, v in JAFFE_CODES.items())})"
        ) from None
    return subject.upper(), cls, int(take or 0), int(image_id)


@register_dataset(
    "jaffe",
    layout=JAFFE_LAYOUT,
    splits=("all", "train", "test"),
    default_label_space="basic7",
    dirname="jaffe",
    description="JAFFE: 213 posed gray images, 10 subjects, 7 classes; subject-independent folds via fold=.",
)
def read_jaffe(
    root: Path, split: str = "all", *, fold: int | None = None, num_folds: int = 10, fold_seed: int = 0
) -> FERDataset:
    """Read JAFFE.

    Args:
        root: the folder of the ``.tiff`` files (or its parent holding ``jaffe/`` or ``jaffedbase/``).
        split: ``"all"``, or ``"train"`` / ``"test"`` of fold ``fold``.
        fold: index of the test fold of a subject-independent ``num_folds``-fold split (10 = leave one subject out).
        num_folds: number of folds.
        fold_seed: seed of the fold assignment.

    Returns:
        a :class:`FERDataset` in ``basic7`` with ``subjects`` and ``meta["take"]``, ``meta["image_id"]``.
    """
    folder = None
    for cand in (root, first_existing(root, ("jaffe", "jaffedbase", "JAFFE"), kind="dir")):
        if cand is not None and any(_NAME.match(p.name) for p in cand.iterdir() if p.is_file()):
            folder = cand
            break
    if folder is None:
        raise root_error(
            "jaffe", root, "no file named like KA.AN1.39.tiff in the root (or in jaffe/, jaffedbase/)", JAFFE_LAYOUT
        )
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_image(p.name))
    parsed = [parse_jaffe_name(p) for p in files]
    space = LABEL_SPACES["basic7"]
    ds = FERDataset(
        "jaffe",
        "all",
        space,
        [space.names.index(c) for _, c, _, _ in parsed],
        paths=files,
        subjects=[s for s, _, _, _ in parsed],
        meta={"take": np.array([t for _, _, t, _ in parsed]), "image_id": np.array([i for _, _, _, i in parsed])},
        root=root,
        source=folder,
    )
    return select_fold(ds, split, fold, num_folds, fold_seed)
