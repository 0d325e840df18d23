"""Data layer: readers for the published dataset layouts, the synthetic default data, faces, transforms, samplers.

The entry point is :func:`load_dataset`; every reader maps its labels into :mod:`fernb.labels`' canonical order.
"""

from .base import FERDataset, read_image, register_dataset, restrict_label_space
from .errors import CorruptImageError, DataFormatError, DataRootError, EmptySplitError, FernbDataError
from .factory import dataset_info, list_datasets, load_dataset
from .noise import FER_CONFUSION, LabelNoiseError, apply_label_noise, plan_label_noise
from .readers import verify_images
from .splits import folds_from_column, group_holdout, stratified_split, subject_kfold, train_valid_split

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
    "subject_kfold",
    "folds_from_column",
    "stratified_split",
    "group_holdout",
    "train_valid_split",
    "verify_images",
    "apply_label_noise",
    "plan_label_noise",
    "LabelNoiseError",
    "FER_CONFUSION",
]
