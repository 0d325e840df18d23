"""Evaluation metrics (NumPy): accuracy, mean class accuracy, macro-F1, per-class table, confusion matrices,
divergences between label distributions, bootstrap intervals and across-run summaries.

Conventions (the same as scikit-learn's, which the tests check against):

- ``confusion_matrix[i, j]`` counts samples of true class ``i`` predicted as ``j``.
- Mean class accuracy (balanced accuracy) averages the recall of the classes present in ``y_true``.
- Macro-F1 averages the per-class F1 over the classes present in ``y_true`` or ``y_pred`` (``labels="present"``,
  scikit-learn's default), or over every class of the label space (``labels="all"``: a class absent from both
  counts as F1 = 0). A class with no prediction has precision 0 (scikit-learn's ``zero_division=0``).
- KL and JS divergences use natural logs; ``js`` is the divergence (``scipy.spatial.distance.jensenshannon``
  returns its square root).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "confusion_matrix",
    "normalize_confusion",
    "accuracy",
    "mean_class_accuracy",
    "precision_recall_f1",
    "macro_f1",
    "per_class_table",
    "kl_divergence",
    "js_divergence",
    "softmax",
    "nll",
    "classification_metrics",
    "bootstrap_ci",
    "mean_std",
    "summarize_runs",
    "METRICS",
]

# class indices: a list, a tuple or an integer array
Labels = Sequence[int] | ArrayLike


def _labels(y: Labels) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {arr.shape}")
    return arr.astype(np.int64)


def _num_classes(num_classes: int | None, *ys: np.ndarray) -> int:
    seen = max((int(y.max()) + 1 for y in ys if len(y)), default=0)
    if num_classes is None:
        return seen
    if seen > num_classes:
        raise ValueError(f"a label {seen - 1} is outside 0..{num_classes - 1}")
    return num_classes


def confusion_matrix(y_true: Labels, y_pred: Labels, num_classes: int | None = None) -> np.ndarray:
    """(C, C) int64 counts; rows are true classes, columns predictions."""
    t, p = _labels(y_true), _labels(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.shape[0]} labels, y_pred {p.shape[0]}")
    c = _num_classes(num_classes, t, p)
    return np.bincount(t * c + p, minlength=c * c).reshape(c, c).astype(np.int64)


def normalize_confusion(cm: np.ndarray) -> np.ndarray:
    """Row-normalised confusion matrix (each true class sums to 1; rows of absent classes stay 0)."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(1, keepdims=True)
    return np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)


def accuracy(y_true: Labels, y_pred: Labels) -> float:
    t, p = _labels(y_true), _labels(y_pred)
    return float((t == p).mean()) if len(t) else float("nan")


def precision_recall_f1(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, F1 and support from a confusion matrix (0 where undefined)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    support = cm.sum(1)
    predicted = cm.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1, support.astype(np.int64)


def mean_class_accuracy(y_true: Labels, y_pred: Labels, num_classes: int | None = None) -> float:
    """Mean recall over the classes present in ``y_true`` (balanced accuracy)."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    _, recall, _, support = precision_recall_f1(cm)
    present = support > 0
    return float(recall[present].mean()) if present.any() else float("nan")


def macro_f1(y_true: Labels, y_pred: Labels, num_classes: int | None = None, labels: str = "present") -> float:
    """Unweighted mean of per-class F1.

    Args:
        labels: ``"present"`` (classes in y_true or y_pred), ``"true"`` (classes in y_true) or ``"all"`` (every class
            0..num_classes-1).
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    _, _, f1, support = precision_recall_f1(cm)
    if labels == "all":
        mask = np.ones(len(f1), dtype=bool)
    elif labels == "true":
        mask = support > 0
    elif labels == "present":
        mask = (support > 0) | (cm.sum(0) > 0)
    else:
        raise ValueError(f"labels={labels!r}; expected present, true or all")
    return float(f1[mask].mean()) if mask.any() else float("nan")


def per_class_table(
    y_true: Labels, y_pred: Labels, num_classes: int | None = None, class_names: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """One row per class: ``class``, ``precision``, ``recall``, ``f1``, ``support`` (``pandas.DataFrame(rows)``
    makes it a table)."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    precision, recall, f1, support = precision_recall_f1(cm)
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(cm))]
    if len(names) != len(cm):
        raise ValueError(f"{len(names)} class names for {len(cm)} classes")
    return [
        {
            "class": names[i],
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i in range(len(cm))
    ]


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def nll(probs: np.ndarray, y_true: Labels, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of the true class under (N, C) probabilities."""
    p = np.asarray(probs, dtype=np.float64)
    t = _labels(y_true)
    return float(-np.log(np.clip(p[np.arange(len(t)), t], eps, 1.0)).mean())


@overload
def kl_divergence(
    reference: np.ndarray, predicted: np.ndarray, eps: float = ..., reduce: Literal[True] = ...
) -> float: ...
@overload
def kl_divergence(
    reference: np.ndarray, predicted: np.ndarray, eps: float = ..., *, reduce: Literal[False]
) -> np.ndarray: ...
@overload
def kl_divergence(
    reference: np.ndarray, predicted: np.ndarray, eps: float = ..., reduce: bool = ...
) -> float | np.ndarray: ...


def kl_divergence(
    reference: np.ndarray, predicted: np.ndarray, eps: float = 1e-12, reduce: bool = True
) -> float | np.ndarray:
    """KL(reference || predicted) per row of (N, C) distributions: sum_c r_c log(r_c / p_c), with 0 log 0 = 0.

    Rows are renormalised; predicted probabilities are clipped at ``eps``.
    """
    r = np.asarray(reference, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if r.shape != p.shape:
        raise ValueError(f"reference {r.shape} and predicted {p.shape} distributions differ in shape")
    r = r / np.clip(r.sum(-1, keepdims=True), eps, None)
    p = np.clip(p, eps, None)
    p = p / p.sum(-1, keepdims=True)
    terms = np.where(r > 0, r * (np.log(np.where(r > 0, r, 1.0)) - np.log(p)), 0.0)
    out = terms.sum(-1)
    return float(out.mean()) if reduce else out


@overload
def js_divergence(
    reference: np.ndarray, predicted: np.ndarray, eps: float = ..., reduce: Literal[True] = ...
) -> float: ...
@overload
def js_divergence(
    reference: np.ndarray, predicted: np.ndarray, eps: float = ..., *, reduce: Literal[False]
) -> np.ndarray: ...
@overload
def js_divergence(
    reference: np.ndarray, predicted: np.ndarray, eps: float = ..., reduce: bool = ...
) -> float | np.ndarray: ...


def js_divergence(
    reference: np.ndarray, predicted: np.ndarray, eps: float = 1e-12, reduce: bool = True
) -> float | np.ndarray:
    """Jensen-Shannon divergence per row: (KL(r || m) + KL(p || m)) / 2 with m = (r + p) / 2 (natural log, <= ln 2)."""
    r = np.asarray(reference, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    r = r / np.clip(r.sum(-1, keepdims=True), eps, None)
    p = p / np.clip(p.sum(-1, keepdims=True), eps, None)
    m = 0.5 * (r + p)

    def kl(a: np.ndarray) -> np.ndarray:
        return np.where(a > 0, a * (np.log(np.where(a > 0, a, 1.0)) - np.log(np.where(m > 0, m, 1.0))), 0.0).sum(-1)

    out = 0.5 * (kl(r) + kl(p))
    return float(out.mean()) if reduce else out


def classification_metrics(
    y_true: Labels,
    y_pred: Labels | None = None,
    *,
    num_classes: int | None = None,
    probs: np.ndarray | None = None,
    dists: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every metric fernb reports for one set of predictions.

    Args:
        y_true: (N,) true labels.
        y_pred: (N,) predictions; None takes the argmax of ``probs``.
        num_classes: C (defaults to the largest label + 1, or ``probs.shape[1]``).
        probs: (N, C) predicted probabilities: adds ``nll`` and, with ``dists``, ``kl`` and ``js``.
        dists: (N, C) reference label distributions (FER+ votes, synthetic blends).
        class_names: names for the per-class table.

    Returns:
        ``n``, ``accuracy``, ``mean_class_accuracy``, ``macro_f1``, ``macro_f1_all`` (over every class),
        ``per_class`` (rows), ``confusion`` (counts, list of lists), ``confusion_normalized`` and optional ``nll``,
        ``kl``, ``js``.
    """
    if y_pred is None:
        if probs is None:
            raise ValueError("give y_pred or probs")
        y_pred = np.asarray(probs).argmax(1)
    if num_classes is None and probs is not None:
        num_classes = np.asarray(probs).shape[1]
    t, p = _labels(y_true), _labels(y_pred)
    c = _num_classes(num_classes, t, p)
    cm = confusion_matrix(t, p, c)
    out: dict[str, Any] = {
        "n": int(len(t)),
        "accuracy": accuracy(t, p),
        "mean_class_accuracy": mean_class_accuracy(t, p, c),
        "macro_f1": macro_f1(t, p, c, "present"),
        "macro_f1_all": macro_f1(t, p, c, "all"),
        "per_class": per_class_table(t, p, c, class_names),
        "confusion": cm.tolist(),
        "confusion_normalized": normalize_confusion(cm).tolist(),
    }
    if probs is not None:
        out["nll"] = nll(probs, t)
        if dists is not None:
            out["kl"] = kl_divergence(dists, probs)
            out["js"] = js_divergence(dists, probs)
    return out


METRICS: dict[str, Callable[[np.ndarray, np.ndarray, int | None], float]] = {
    "accuracy": lambda t, p, c: accuracy(t, p),
    "mean_class_accuracy": mean_class_accuracy,
    "macro_f1": lambda t, p, c: macro_f1(t, p, c, "present"),
}


def bootstrap_ci(
    y_true: Labels,
    y_pred: Labels,
    metric: str | Callable[[np.ndarray, np.ndarray, int | None], float] = "accuracy",
    *,
    num_classes: int | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float]:
    """Percentile bootstrap confidence interval of a metric for a single run (test samples resampled with
    replacement).

    Returns:
        ``{"value", "low", "high", "std", "alpha", "n_boot"}``.
    """
    fn = METRICS[metric] if isinstance(metric, str) else metric
    t, p = _labels(y_true), _labels(y_pred)
    c = _num_classes(num_classes, t, p)
    rng = np.random.default_rng(seed)
    n = len(t)
    if n == 0:
        raise ValueError("bootstrap of an empty prediction set")
    if fn is METRICS["accuracy"]:
        correct = (t == p).astype(np.float64)
        stats = np.array([correct[rng.integers(0, n, n)].mean() for _ in range(n_boot)])
    else:
        stats = np.empty(n_boot)
        for b in range(n_boot):
            idx = rng.integers(0, n, n)
            stats[b] = fn(t[idx], p[idx], c)
    stats = stats[np.isfinite(stats)]
    return {
        "value": float(fn(t, p, c)),
        "low": float(np.quantile(stats, alpha / 2)),
        "high": float(np.quantile(stats, 1 - alpha / 2)),
        "std": float(stats.std(ddof=1)) if len(stats) > 1 else 0.0,
        "alpha": alpha,
        "n_boot": int(n_boot),
    }


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (ddof=1; 0 for one value) and count of repeated-run values."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if len(v) == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0, "values": []}
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "n": int(len(v)),
        "values": v.tolist(),
    }


def summarize_runs(
    results: Sequence[Mapping[str, Any]], keys: Sequence[str] = ("accuracy", "mean_class_accuracy", "macro_f1")
) -> dict[str, dict[str, Any]]:
    """Mean and standard deviation of each metric over repeated runs (seeds or folds)."""
    return {k: mean_std([r[k] for r in results if k in r]) for k in keys}
