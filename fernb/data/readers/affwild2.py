"""Aff-Wild2 expression annotations of the ABAW challenge (EXPR track): one label per video frame, 8 classes."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import cast

import numpy as np

from ...labels import DATASET_ORDERS, LABEL_SPACES, canonical_name, dataset_to_canonical
from ..base import FERDataset, register_dataset
from ..errors import DataFormatError, EmptySplitError
from ._common import canonical_to_space, first_existing, root_error

__all__ = ["read_affwild2", "AFFWILD2_LAYOUT", "subject_of_video"]

AFFWILD2_LAYOUT = """\
<root>/
├── annotations/EXPR_Set/               (or annotations/EXPR_Classification_Challenge/)
│   ├── Train_Set/<video>.txt           header "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other",
│   └── Validation_Set/<video>.txt      then one label per frame: 0..7 in that order, -1 = not annotated
└── cropped_aligned/<video>/00001.jpg   (or crops_aligned/); line i after the header is frame %05d.jpg of i
splits: train = Train_Set, valid = Validation_Set"""

_ANN_DIRS = (
    "annotations/EXPR_Set",
    "annotations/EXPR_Classification_Challenge",
    "EXPR_Set",
    "EXPR_Classification_Challenge",
)
_FRAME_DIRS = ("cropped_aligned", "crops_aligned", "crops_aligned/crops_aligned", "cropped_aligned/cropped_aligned")
_SPLIT_DIR = {"train": "Train_Set", "valid": "Validation_Set"}
_EXPECTED = "one integer per line: 0..7 (Neutral, Anger, Disgust, Fear, Happiness, Sadness, Surprise, Other) or -1"


def subject_of_video(video: str) -> str:
    """Subject id of an Aff-Wild2 video: the name without a ``_left`` / ``_right`` suffix (two faces in one video)."""
    for suffix in ("_left", "_right"):
        if video.endswith(suffix):
            return video[: -len(suffix)]
    return video


def _read_labels(path: Path) -> np.ndarray:
    """(F,) per-frame codes of one annotation file (frame f+1 <-> entry f)."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    start = 0
    if lines and not lines[0].strip().lstrip("-").isdigit():
        header = [h.strip() for h in lines[0].split(",") if h.strip()]
        try:
            names = tuple(canonical_name(h) for h in header)
        except KeyError:
            names = ()
        if names != DATASET_ORDERS["affwild2"]:
            raise DataFormatError(
                path,
                f"header {lines[0].strip()!r} is not the ABAW EXPR class list",
                1,
                "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other",
            )
        start = 1
    codes = np.empty(len(lines) - start, dtype=np.int64)
    for j, raw in enumerate(lines[start:]):
        text = raw.strip()
        if not text.lstrip("-").isdigit() or not -1 <= int(text) <= 7:
            raise DataFormatError(path, f"label {text!r} is not a code -1..7", start + j + 1, _EXPECTED)
        codes[j] = int(text)
    return codes


@register_dataset(
    "affwild2",
    layout=AFFWILD2_LAYOUT,
    splits=("train", "valid"),
    default_label_space="affwild2",
    dirname="affwild2",
    description="Aff-Wild2 (ABAW EXPR): per-frame labels of in-the-wild videos, 8 classes incl. 'other'; "
    "subject = video.",
    aliases=("aff-wild2", "abaw", "affwild"),
)
def read_affwild2(root: Path, split: str = "train", *, frame_stride: int = 1, check_frames: bool = True) -> FERDataset:
    """Read Aff-Wild2 EXPR frames.

    Args:
        root: the Aff-Wild2 root (see :data:`AFFWILD2_LAYOUT`).
        split: ``"train"`` or ``"valid"`` (the ABAW validation set).
        frame_stride: keep every ``frame_stride``-th labelled frame of each video (neighbouring frames are
            near-duplicates).
        check_frames: keep only frames whose jpg exists (as ARBEx does; one folder listing per video).

    Returns:
        a :class:`FERDataset` in ``affwild2`` with ``subjects`` and ``meta["video"]``, ``meta["frame"]`` (1-based).
    """
    if frame_stride < 1:
        raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
    ann_root = first_existing(root, _ANN_DIRS, kind="dir")
    if ann_root is None:
        raise root_error("affwild2", root, "no annotations/EXPR_Set/ folder", AFFWILD2_LAYOUT)
    ann_dir = ann_root / _SPLIT_DIR[split]
    if not ann_dir.is_dir():
        raise root_error("affwild2", root, f"no {ann_dir.relative_to(root)}/ folder", AFFWILD2_LAYOUT)
    frame_root = first_existing(root, _FRAME_DIRS, kind="dir")
    if frame_root is None:
        raise root_error("affwild2", root, "no cropped_aligned/ frame folder", AFFWILD2_LAYOUT)
    files = sorted(ann_dir.glob("*.txt"))
    if not files:
        raise EmptySplitError("affwild2", split, ann_dir, "no <video>.txt annotation file")

    paths: list[str] = []
    codes: list[np.ndarray] = []
    videos: list[str] = []
    frames: list[np.ndarray] = []
    missing_videos: list[str] = []
    for txt in files:
        video = txt.stem
        labels = _read_labels(txt)
        frame_no = np.flatnonzero(labels >= 0) + 1
        video_dir = frame_root / video
        if check_frames:
            present = {e.name for e in os.scandir(video_dir)} if video_dir.is_dir() else set()
            if not present:
                missing_videos.append(video)
            frame_no = np.array([f for f in frame_no if f"{f:05d}.jpg" in present], dtype=np.int64)
        frame_no = frame_no[::frame_stride]
        video_str = str(video_dir)
        paths += [f"{video_str}{os.sep}{f:05d}.jpg" for f in frame_no]
        codes.append(labels[frame_no - 1])
        videos += [video] * len(frame_no)
        frames.append(frame_no)
    if missing_videos:
        warnings.warn(
            f"affwild2/{split}: {len(missing_videos)} annotated videos have no frames in {frame_root} "
            f"(e.g. {missing_videos[0]}); their labels are skipped",
            stacklevel=2,
        )
    if not paths:
        raise EmptySplitError("affwild2", split, ann_dir, "no annotated frame has a jpg")
    space = LABEL_SPACES["affwild2"]
    targets = canonical_to_space(cast(np.ndarray, dataset_to_canonical("affwild2", np.concatenate(codes))), space)
    return FERDataset(
        "affwild2",
        split,
        space,
        targets,
        paths=paths,
        subjects=[subject_of_video(v) for v in videos],
        meta={"video": np.asarray(videos), "frame": np.concatenate(frames)},
        root=root,
        source=ann_dir,
    )
