"""Flipped-label detection of a run, as frames: the per-epoch precision, recall and AUROC of each score against the
known flips, and the per-sample scores behind them.

:func:`fernb.engine.fit` records them on training data that knows which labels are wrong (the synthetic data, or any
dataset trained with ``data.label_noise``); :mod:`fernb.engine.noise_detection` defines the scores (``loss``: the
small-loss criterion of any method; ``disagreement`` and ``uncertainty_*``: ARBEx's corrected distribution and
confidences) and the metrics. This module only reads the files back.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..engine.noise_detection import (
    BEST_SCORES_NPZ,
    DETECTION_CSV,
    SCORE_NAMES,
    SCORES_NPZ,
    auroc,
    detection_metrics,
)

__all__ = ["load_noise_detection", "load_noise_scores", "fitted_labels", "detection_metrics", "auroc", "SCORE_NAMES"]


def _run_path(run_dir: str | os.PathLike) -> Path:
    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such run folder")
    return path


def load_noise_detection(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The run's ``noise_detection.csv``: one row per epoch and score.

    Columns: ``epoch``, ``score``, ``n``, ``n_noisy``, ``precision_at_k``, ``recall_at_k`` (k = ``n_noisy``),
    ``auroc``, ``flagged``, ``flag_precision``, ``flag_recall`` (NaN for scores without a flag) and ``partial``.

    Raises:
        FileNotFoundError: the run recorded no detection (its training split did not know which labels are wrong:
            train on the synthetic data or with ``data.label_noise``).
    """
    path = _run_path(run_dir) / DETECTION_CSV
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: this run recorded no flipped-label detection; it is recorded when the training split knows "
            "its wrong labels (the synthetic data, or data.label_noise={'rate': 0.3, ...})"
        )
    frame = pd.read_csv(path)
    frame["score"] = pd.Categorical(frame["score"], categories=[s for s in SCORE_NAMES if s in set(frame["score"])])
    return frame


def load_noise_scores(run_dir: str | os.PathLike, which: str = "last") -> pd.DataFrame:
    """The per-sample scores of the run's last epoch (``which="last"``) or of its best checkpoint's (``"best"``).

    Returns:
        one row per training sample, indexed by its position in the run's training split (``run_split(cfg,
        "train")``): ``given`` and ``true`` (Categoricals over the class names), ``is_noisy``, ``epoch_seen`` (the
        epoch each score is from), every score (higher: more likely wrong) and its flag (``flag_loss``, ...).
        ``frame.attrs["epoch"]`` is the epoch the file was written at.

    Raises:
        FileNotFoundError: no such file (no detection recorded, or no best checkpoint yet).
        ValueError: ``which`` is neither ``"last"`` nor ``"best"``.
    """
    if which not in ("last", "best"):
        raise ValueError(f"which={which!r}; expected 'last' or 'best'")
    path = _run_path(run_dir) / (SCORES_NPZ if which == "last" else BEST_SCORES_NPZ)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no per-sample noise scores; they are written at each epoch's end when the training split knows "
            "its wrong labels (the synthetic data, or data.label_noise)"
        )
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    names = [str(n) for n in arrays.pop("class_names")]
    epoch = int(arrays.pop("epoch"))
    index = arrays.pop("index")
    cols: dict[str, object] = {}
    for key in ("given", "true"):
        codes = arrays.pop(key).astype(np.int64)
        cols[key] = pd.Categorical.from_codes(np.where(codes >= 0, codes, -1), categories=names)
    cols["is_noisy"] = arrays.pop("is_noisy").astype(bool)
    cols["epoch_seen"] = arrays.pop("epoch_seen")
    for score in SCORE_NAMES:
        if score in arrays:
            cols[score] = arrays.pop(score)
    cols.update(arrays)  # the flags
    frame = pd.DataFrame(cols, index=pd.Index(index, name="index"))
    frame.attrs["epoch"] = epoch
    return frame


def fitted_labels(run_dir: str | os.PathLike, which: str = "last") -> dict[str, float]:
    """How far a run has learnt its given labels, wrong ones apart: the share of clean (``clean``) and of flipped
    (``flipped``) training samples whose given label was the argmax of the model's training output when last seen
    (train mode, augmented input; ``flag_loss`` unset). A flipped share near 0 means the run has not memorised its
    wrong labels, so a defence against them has little to correct; ``epoch``: the epoch of the scores.

    Raises:
        FileNotFoundError: the run recorded no per-sample scores (see :func:`load_noise_scores`).
    """
    scores = load_noise_scores(run_dir, which)
    fitted = ~scores["flag_loss"].to_numpy(bool)
    noisy = scores["is_noisy"].to_numpy(bool)
    share = {
        k: float(fitted[m].mean()) if m.any() else float("nan") for k, m in (("clean", ~noisy), ("flipped", noisy))
    }
    return {**share, "epoch": float(scores.attrs["epoch"])}
