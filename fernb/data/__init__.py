"""Data layer: readers for the published dataset layouts, the synthetic default data, faces, transforms, samplers.

The entry point is :func:`load_dataset`; every reader maps its labels into :mod:`fernb.labels`' canonical order.
"""

from .base import FERDataset, dataset_info, list_datasets, load_dataset, read_image, register_dataset, restrict_label_space
from .errors import CorruptImageError, DataFormatError, DataRootError, EmptySplitError, FernbDataError

__all__ = [
    "FERDataset",
    "load_dataset",
    "list_datasets",
    "dataset_info",
    "register_dataset",
    "restrict_label_space",
    "read_image",
    "FernbDataError",
    "DataRootError",
    "DataFormatError",
    "CorruptImageError",
    "EmptySplitError",
]
