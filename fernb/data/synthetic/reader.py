"""The ``synthetic`` dataset reader."""

from __future__ import annotations

import os
from typing import Any

from ..base import FERDataset, register_dataset
from .cache import get_synthetic
from .config import SyntheticConfig

_LAYOUT = """\
(nothing to download: the images are generated and cached)
<cache_dir>/synthetic/<config-hash>.npz   cache_dir = root=..., else $FERNB_CACHE_DIR, else the repo's data/
options: any SyntheticConfig field, e.g. n=2000 (all splits together), size=64, seed=0, classes="basic7" | "ferplus8",
         noise_rate=0.1, noise_mode="symmetric" | "asymmetric", noisy_splits=("train",), blend_fraction=0.2"""


@register_dataset(
    "synthetic",
    layout=_LAYOUT,
    splits=("train", "valid", "test", "all"),
    default_label_space="basic7",
    description="procedural faces with the basic expressions, "
    "subject-disjoint splits, label distributions and controlled label noise",
    aliases=("synth",),
)
def load_synthetic(
    root: str | os.PathLike | None = None,
    split: str = "train",
    *,
    classes: str | None = None,
    cache: bool = True,
    workers: int | None = None,
    **overrides: Any,
) -> FERDataset:
    """The synthetic data as a :class:`FERDataset` (registered as ``"synthetic"``).

    Args:
        root: cache root (default ``$FERNB_CACHE_DIR`` or the repo's ``data/``); files go to ``root/synthetic/``.
        split: ``"train"``, ``"valid"``, ``"test"`` (subject-disjoint) or ``"all"``.
        classes: the generated label space, ``"basic7"`` or ``"ferplus8"`` (the ``label_space`` field of
            :class:`SyntheticConfig`; named differently because :func:`~fernb.data.load_dataset` keeps
            ``label_space=`` for restricting any dataset to a label space afterwards).
        cache: read/write the cache.
        workers: rendering processes on a cache miss.
        **overrides: :class:`SyntheticConfig` fields (``n`` counts all splits together).
    """
    if classes is not None:
        overrides["label_space"] = classes
    faces = get_synthetic(SyntheticConfig().replace(**overrides), cache=cache, cache_dir=root, workers=workers)
    return faces.to_dataset(split)
