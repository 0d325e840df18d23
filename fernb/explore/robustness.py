"""Robustness to label noise, as data: what ARBEx's correction did to the flipped labels, how well each score ranks
them (ROC and precision-recall curves, the top-ranked suspects), and accuracy across noise rates.

The runs come from :func:`fernb.engine.fit` on a training split that knows its flips (the synthetic data, or any
dataset with ``data.label_noise``); the per-epoch and per-sample scores are read by
:mod:`fernb.explore.noise_detection`. Definitions, on the training split (N samples, ``is_noisy`` = given label !=
true label):

- *corrected*: ARBEx's corrected label (argmax of its corrected distribution m) differs from the given label (the
  reliability table's ``flagged``, :mod:`fernb.explore.reliability`);
- *corrected & flipped*: corrected and noisy (a found flip; *repaired* when the corrected label is the true one);
  *corrected & clean*: corrected but the given label was right (a false alarm); *missed*: noisy but not corrected;
- a score's ROC curve: the true-positive rate (flips found) against the false-positive rate (clean labels
  suspected) as the threshold falls; its precision-recall curve: the share of flips among the suspects against the
  share of flips found; AUROC and average precision (AP) summarise them (chance: 0.5 and the noisy share).

:func:`robustness_table` summarises runs trained at several noise rates (accuracy on the clean validation and test
splits, mean and standard deviation over seeds, and the detection AUROC of the selected epoch);
:func:`robustness_verdict` reads it into plain sentences, whatever the numbers say.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..engine.noise_detection import DETECTION_CSV, SCORE_NAMES
from .noise_detection import fitted_labels
from .reliability import ReliabilityTable

__all__ = [
    "correction_vs_flips",
    "detection_curve",
    "detection_curves",
    "best_score",
    "top_suspects",
    "best_epoch_detection",
    "robustness_table",
    "robustness_verdict",
]


def correction_vs_flips(table: ReliabilityTable) -> pd.DataFrame:
    """Which samples ARBEx's correction changed (corrected label != given label), against the known flips.

    Args:
        table: a reliability table of a split with known true labels (``table.has_truth``).

    Returns:
        Rows ``corrected & flipped`` (then how many of them were repaired: corrected to the true label),
        ``corrected & clean``, ``missed (flipped, kept)`` and ``kept & clean``; columns ``samples``, ``share`` and
        ``share of`` (what the share is of: the corrected, the flipped or the clean samples).

    Raises:
        ValueError: the table has no true labels.
    """
    if not table.has_truth:
        raise ValueError(f"{table.name}: the true labels are unknown, so the flips cannot be counted")
    f = table.frame
    noisy = f["is_noisy"].to_numpy(dtype=bool)
    corrected = f["flagged"].to_numpy(dtype=bool)
    repaired = f["repaired"].to_numpy(dtype=bool)
    n_corr, n_noisy, n_clean = int(corrected.sum()), int(noisy.sum()), int((~noisy).sum())

    def share(num: int, den: int) -> float:
        return num / den if den else float("nan")

    rows = [
        ("corrected & flipped", int((corrected & noisy).sum()), "of corrected", n_corr),
        ("  of which repaired (to the true label)", int(repaired.sum()), "of flipped", n_noisy),
        ("corrected & clean", int((corrected & ~noisy).sum()), "of corrected", n_corr),
        ("missed (flipped, kept)", int((~corrected & noisy).sum()), "of flipped", n_noisy),
        ("kept & clean", int((~corrected & ~noisy).sum()), "of clean", n_clean),
    ]
    return pd.DataFrame(
        [{"samples": n, "share": share(n, den), "share of": what} for _, n, what, den in rows],
        index=pd.Index([r[0] for r in rows], name=f"{len(f)} training samples, {n_noisy} flipped"),
    )


def detection_curve(scores: np.ndarray, is_noisy: np.ndarray) -> dict[str, Any]:
    """The ROC and precision-recall curves of one score (higher: more likely wrong) against the known flips.

    NaN scores (samples not scored) are left out. Tied scores move the threshold together (one curve point).

    Returns:
        ``fpr``, ``tpr`` (ROC, from (0, 0) to (1, 1)), ``precision``, ``recall`` (one point per distinct threshold,
        highest first), ``auroc`` (trapezoids under the ROC: ties count half, as
        :func:`fernb.engine.noise_detection.auroc`), ``ap`` (average precision: the precision at each threshold
        weighted by the recall it adds), ``noisy_share`` (the precision of a random ranking), ``n``, ``n_noisy``.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_noisy, dtype=bool)
    seen = np.isfinite(s)
    s, y = s[seen], y[seen]
    n, n_pos = len(s), int(y.sum())
    n_neg = n - n_pos
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), n - 1] if n else np.zeros(0, np.int64)  # the end of each tie group
    tp = np.cumsum(y)[last].astype(np.float64)
    fp = (last + 1 - tp).astype(np.float64)
    tpr = np.r_[0.0, tp / n_pos] if n_pos else np.r_[0.0, np.full(len(last), np.nan)]
    fpr = np.r_[0.0, fp / n_neg] if n_neg else np.r_[0.0, np.full(len(last), np.nan)]
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / n_pos if n_pos else np.full(len(last), np.nan)
    auroc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)) if n_pos and n_neg else float("nan")
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision)) if n_pos else float("nan")
    return {
        "fpr": fpr,
        "tpr": tpr,
        "precision": precision,
        "recall": recall,
        "auroc": auroc,
        "ap": ap,
        "noisy_share": n_pos / n if n else float("nan"),
        "n": n,
        "n_noisy": n_pos,
    }


def detection_curves(frame: pd.DataFrame, scores: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """:func:`detection_curve` of each score column of a :func:`~fernb.explore.load_noise_scores` frame.

    Args:
        frame: per-sample scores with an ``is_noisy`` column.
        scores: the score columns (default every score of :data:`~fernb.engine.noise_detection.SCORE_NAMES` there).
    """
    names = [s for s in SCORE_NAMES if s in frame.columns] if scores is None else list(scores)
    noisy = frame["is_noisy"].to_numpy(dtype=bool)
    return {name: detection_curve(frame[name].to_numpy(dtype=np.float64), noisy) for name in names}


def best_score(detection: pd.DataFrame, epoch: int | None = None, metric: str = "auroc") -> str:
    """The score with the highest ``metric`` at ``epoch`` (default the last full epoch) of a
    :func:`~fernb.explore.load_noise_detection` frame."""
    rows = detection[detection["partial"] == 0] if "partial" in detection.columns else detection
    if rows.empty:
        rows = detection
    epoch = int(rows["epoch"].max()) if epoch is None else int(epoch)
    at = rows[rows["epoch"] == epoch].dropna(subset=[metric])
    if at.empty:
        raise ValueError(f"no {metric} recorded at epoch {epoch}")
    return str(at.sort_values(metric, ascending=False, kind="stable")["score"].iloc[0])


def top_suspects(frame: pd.DataFrame, score: str, k: int = 16) -> pd.DataFrame:
    """The ``k`` training samples that ``score`` ranks most likely mislabelled (highest first; ties by index).

    Args:
        frame: a :func:`~fernb.explore.load_noise_scores` frame (index: position in the run's training split).

    Returns:
        Those rows of ``frame``, with ``rank`` (1 = top) and the score renamed to ``score``; ``attrs["score"]`` names
        it.
    """
    if score not in frame.columns:
        raise KeyError(f"score {score!r} was not recorded; this run has {[s for s in SCORE_NAMES if s in frame]}")
    scored = frame[np.isfinite(frame[score].to_numpy(dtype=np.float64))]
    order = np.lexsort((scored.index.to_numpy(), -scored[score].to_numpy(dtype=np.float64)))[:k]
    out = scored.iloc[order].copy()
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    out["score"] = out[score]
    out.attrs["score"] = score
    return out


def _record(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "run.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def best_epoch_detection(run_dir: str | Path, metric: str = "auroc") -> dict[str, float]:
    """``{score: metric}`` at the run's selected (best) epoch from its ``noise_detection.csv``; empty when the run
    recorded no detection (its training labels were not known to be noisy)."""
    path = Path(run_dir) / DETECTION_CSV
    if not path.is_file():
        return {}
    rows = pd.read_csv(path)
    rows = rows[rows["partial"] == 0] if "partial" in rows.columns else rows
    best = (_record(run_dir).get("best") or {}).get("epoch")
    epoch = int(best) if best is not None else int(rows["epoch"].max())
    at = rows[rows["epoch"] == epoch]
    return {str(r["score"]): float(r[metric]) for _, r in at.iterrows()}


def _noisy_share(run_dir: str | Path) -> float:
    """The share of wrong given labels in the run's training split: from its detection file, else its label-noise
    record (0 when it has neither: clean labels)."""
    path = Path(run_dir) / DETECTION_CSV
    if path.is_file():
        rows = pd.read_csv(path)
        if len(rows):
            last = rows.iloc[-1]
            return float(last["n_noisy"]) / float(last["n"]) if last["n"] else float("nan")
    noise = ((_record(run_dir).get("data") or {}).get("label_noise")) or {}
    return float(noise.get("realised_rate", noise.get("rate_realised", 0.0)) or 0.0)


def robustness_table(
    results: Mapping[tuple[str, float, int], Mapping[str, Any]], scores: Sequence[str] = ("loss", "disagreement")
) -> pd.DataFrame:
    """Accuracy across noise rates, one row per method and rate, means and standard deviations over seeds.

    Args:
        results: ``{(method, noise rate, seed): train_and_test result}`` (:func:`fernb.notebooks.noise_grid`).
        scores: the detection scores whose AUROC at the selected epoch is reported (a method without one: NaN).

    Returns:
        Indexed by ``(method, noise)`` (the injected rate), columns ``noisy share`` (the measured share of wrong
        training labels, the data's own noise included), ``valid acc`` / ``valid acc std`` / ``valid mca`` (mean
        class accuracy) on the clean validation split at the selected epoch, ``test acc`` / ``test acc std`` /
        ``test mca`` (NaN without a test split), ``AUROC <score>`` (mean over seeds), ``flipped fitted`` (the share
        of wrong training labels the model had learnt by its last epoch, :func:`fitted_labels`; NaN without
        per-sample scores), ``steps`` (optimiser steps trained, mean over seeds) and ``seeds``.
    """
    groups: dict[tuple[str, float], list[Mapping[str, Any]]] = {}
    for (method, rate, _seed), result in results.items():
        groups.setdefault((method, float(rate)), []).append(result)
    rows = []
    for (method, rate), rs in groups.items():
        valid, valid_mca, test, test_mca, shares, steps, fitted = [], [], [], [], [], [], []
        aurocs: dict[str, list[float]] = {s: [] for s in scores}
        for r in rs:
            record = _record(r["run_dir"])
            best = (record.get("best") or {}).get("metrics") or {}
            steps.append(float(record["steps"]) if record.get("steps") is not None else float("nan"))
            value = r.get("best_value")
            valid.append(float(value) if value is not None else float("nan"))
            valid_mca.append(float(best.get("valid_mean_class_accuracy", np.nan)))
            t = r.get("test") or {}
            test.append(float(t.get("accuracy", np.nan)))
            test_mca.append(float(t.get("mean_class_accuracy", np.nan)))
            shares.append(_noisy_share(r["run_dir"]))
            det = best_epoch_detection(r["run_dir"])
            for s in scores:
                aurocs[s].append(det.get(s, np.nan))
            try:
                fitted.append(fitted_labels(r["run_dir"])["flipped"])
            except FileNotFoundError:
                fitted.append(float("nan"))

        def mean(v: list[float]) -> float:
            a = np.asarray(v, dtype=np.float64)
            return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")

        def std(v: list[float]) -> float:
            a = np.asarray(v, dtype=np.float64)
            a = a[np.isfinite(a)]
            return float(a.std(ddof=1)) if len(a) > 1 else float("nan")

        rows.append(
            {
                "method": method,
                "noise": rate,
                "noisy share": mean(shares),
                "valid acc": mean(valid),
                "valid acc std": std(valid),
                "valid mca": mean(valid_mca),
                "test acc": mean(test),
                "test acc std": std(test),
                "test mca": mean(test_mca),
                **{f"AUROC {s}": mean(v) for s, v in aurocs.items()},
                "flipped fitted": mean(fitted),
                "steps": mean(steps),
                "seeds": len(rs),
            }
        )
    frame = pd.DataFrame(rows).set_index(["method", "noise"]).sort_index()
    return frame


MEMORISED = 0.1
"""Below this share of flipped labels learnt, :func:`robustness_verdict` says that plain cross-entropy has not
memorised the noise."""


def robustness_verdict(
    table: pd.DataFrame, method: str = "arbex", rival: str = "scn", baseline: str = "resnet18"
) -> list[str]:
    """Plain sentences that read a :func:`robustness_table`: at each injected noise rate above 0, whether ``method``
    beats ``rival`` (the dedicated noisy-label method) and ``baseline`` (plain cross-entropy), how much accuracy
    each loses from its clean run, whether ``method`` loses at most half of what ``baseline`` loses, and whether
    ``baseline`` had memorised the wrong labels at all (``flipped fitted`` below :data:`MEMORISED`). Accuracy is
    the test accuracy where there is a test split, else the validation accuracy. Missing methods or rates are left
    out; with nothing to compare, one sentence says so.
    """
    col = "test acc" if table["test acc"].notna().any() else "valid acc"
    where = "test" if col == "test acc" else "validation"
    methods = set(table.index.get_level_values("method"))
    rates = sorted(r for r in set(table.index.get_level_values("noise")) if r > 0)

    def acc(m: str, r: float) -> float:
        return float(table.loc[(m, r), col]) if (m, r) in table.index else float("nan")

    def seeds(m: str, r: float) -> int:
        return int(table.loc[(m, r), "seeds"]) if (m, r) in table.index else 0

    out: list[str] = []
    if method not in methods or not rates:
        return [f"Nothing to compare: the table has no {method} run with injected noise."]
    for r in rates:
        a = acc(method, r)
        if not np.isfinite(a):
            continue
        n = seeds(method, r)
        head = f"At {100 * r:g} % injected noise ({where} accuracy, mean of {n} seed{'s' * (n != 1)}): "
        parts = []
        for other, label in ((rival, "the dedicated noisy-label method"), (baseline, "plain cross-entropy")):
            b = acc(other, r)
            if other == method or not np.isfinite(b):
                continue
            if a > b:
                parts.append(f"{method} beats {other} ({label}), {100 * a:.1f} % against {100 * b:.1f} %")
            elif a == b:
                parts.append(f"{method} ties with {other} ({label}) at {100 * a:.1f} %")
            else:
                parts.append(f"{method} does NOT beat {other} ({label}): {100 * a:.1f} % against {100 * b:.1f} %")
        drops = []
        for m in dict.fromkeys((method, rival, baseline)):
            clean, noisy = acc(m, 0.0), acc(m, r)
            if np.isfinite(clean) and np.isfinite(noisy):
                d = 100 * (clean - noisy)
                drops.append(f"{m} loses {d:.1f} points" if d >= 0 else f"{m} gains {-d:.1f} points")
        if drops:
            parts.append("from its clean run " + ", ".join(drops))
        lost, base_lost = acc(method, 0.0) - a, acc(baseline, 0.0) - acc(baseline, r)
        if method != baseline and np.isfinite(lost) and np.isfinite(base_lost) and base_lost > 0:
            ratio = lost / base_lost
            parts.append(
                f"{method} loses {ratio:.2f}x what {baseline} loses (issue 13's target: at most 0.5x), "
                + ("met" if ratio <= 0.5 else "not met")
            )
        memorised = (
            float(table.loc[(baseline, r), "flipped fitted"])
            if (baseline, r) in table.index and "flipped fitted" in table.columns
            else float("nan")
        )
        if np.isfinite(memorised) and memorised < MEMORISED:
            parts.append(
                f"{baseline} had learnt only {100 * memorised:.1f} % of the flipped labels by its last epoch: it has "
                "not memorised the noise, so a defence against wrong labels has little to correct at this length "
                "of training"
            )
        if parts:
            out.append(head + "; ".join(parts) + ".")
    return out or [f"Nothing to compare: no finite {where} accuracy for {method} with injected noise."]
