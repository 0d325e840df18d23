"""Cheap checks of a training and a validation split for data that would quietly distort a result: the same image
under two labels, the same image in both splits, and images too small to hold a face.

Identity is a hash of the image's bytes: the decoded pixels when a split is held as an array, else the file's
bytes (exact copies; re-encoded copies are not found). Splits of files above :data:`MAX_FILES` are not read.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .base import FERDataset

__all__ = ["SplitAudit", "audit_splits", "MAX_FILES", "MIN_SIDE"]

MAX_FILES = 60_000  # reading every file of a larger split would cost more than a run's start should
MIN_SIDE = 8  # an image whose shorter side is below this holds no face


@dataclass
class SplitAudit:
    """What :func:`audit_splits` found (counts of samples)."""

    conflicting_labels: int = 0  # training samples whose identical image also appears under another label
    train_valid_overlap: int = 0  # validation samples whose identical image is also a training sample
    tiny: dict[str, int] = field(default_factory=dict)  # split -> images with a side below MIN_SIDE
    skipped: list[str] = field(default_factory=list)  # splits too large to read

    def messages(self, train: FERDataset, valid: FERDataset) -> list[str]:
        """One sentence per finding, with counts and what to do."""
        out = []
        if self.conflicting_labels:
            out.append(
                f"{train.name}/{train.split}: {self.conflicting_labels} training samples are identical images that "
                "carry different labels; remove the duplicates or fix their labels"
            )
        if self.train_valid_overlap:
            out.append(
                f"{valid.name}/{valid.split}: {self.train_valid_overlap} of {len(valid)} validation samples are "
                f"identical to training samples ({train.split}); validation scores are optimistic"
            )
        for split, n in self.tiny.items():
            out.append(f"{train.name}/{split}: {n} images are smaller than {MIN_SIDE} px on a side (no face fits)")
        return out


def _digests(ds: FERDataset) -> tuple[list[bytes], int] | None:
    """Per-sample digests and the count of tiny images, or None when the split is too large to read."""
    if ds.pixels is not None:
        px = np.ascontiguousarray(ds.pixels)
        tiny = len(px) if min(px.shape[1:3]) < MIN_SIDE else 0
        return [hashlib.blake2b(row.tobytes(), digest_size=12).digest() for row in px], tiny
    assert ds.paths is not None
    if len(ds.paths) > MAX_FILES:
        return None
    digests, tiny = [], 0
    for p in ds.paths:
        try:
            data = p.read_bytes()
            with Image.open(io.BytesIO(data)) as im:  # the header only
                tiny += min(im.size) < MIN_SIDE
        except (OSError, ValueError, SyntaxError):
            data = b""  # unreadable here: the loader names the file when it gets to it
        digests.append(hashlib.blake2b(data, digest_size=12).digest() if data else p.name.encode())
    return digests, tiny


def audit_splits(train: FERDataset, valid: FERDataset) -> SplitAudit:
    """Count duplicate images across labels (in ``train``) and across ``train`` and ``valid``, and tiny images."""
    out = SplitAudit()
    a, b = _digests(train), _digests(valid)
    if a is None:
        out.skipped.append(train.split)
    if b is None:
        out.skipped.append(valid.split)
    if a is not None:
        labels: dict[bytes, set[int]] = {}
        for d, y in zip(a[0], train.targets.tolist()):
            labels.setdefault(d, set()).add(y)
        out.conflicting_labels = sum(len(labels[d]) > 1 for d in a[0])
        if a[1]:
            out.tiny[train.split] = a[1]
    if b is not None:
        if b[1]:
            out.tiny[valid.split] = b[1]
        if a is not None:
            seen = set(a[0])
            out.train_valid_overlap = sum(d in seen for d in b[0])
    return out
