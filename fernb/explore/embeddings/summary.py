"""Numbers from embeddings: nearest anchors, neighbours, class silhouettes, how the anchors move."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .sets import EmbeddingSet, Neighbours


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances (len(a), len(b)), in float64."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.clip(sq, 0.0, None))


def nearest_anchor(embeddings: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row of each sample's nearest anchor and its distance: (N, D), (A, D) -> (N,), (N,)."""
    d = _pairwise(embeddings, anchors)
    j = d.argmin(1)
    return j, d[np.arange(len(d)), j]


def neighbours(
    embeddings: np.ndarray | EmbeddingSet,
    index: int,
    k: int = 8,
    *,
    anchors: np.ndarray | None = None,
    anchor_classes: np.ndarray | None = None,
) -> Neighbours:
    """The ``k`` nearest other samples of sample ``index`` and its nearest anchor, by Euclidean distance in the
    embedding space (ARBEx's anchor distance).

    Args:
        embeddings: (N, D) embeddings, or an :class:`EmbeddingSet` (its anchors are then used).
        index: the sample's row.
        k: how many neighbours (fewer when the set is smaller).
        anchors: (A, D) anchors. anchor_classes: (A,) their classes.
    """
    if isinstance(embeddings, EmbeddingSet):
        anchors = embeddings.anchors if anchors is None else anchors
        anchor_classes = embeddings.anchor_classes if anchor_classes is None else anchor_classes
        embeddings = embeddings.embeddings
    n = len(embeddings)
    if not 0 <= index < n:
        raise IndexError(f"sample {index} is outside 0..{n - 1}")
    d = _pairwise(embeddings[index : index + 1], embeddings)[0]
    d[index] = np.inf
    order = np.argsort(d, kind="stable")[: max(0, min(k, n - 1))]
    out = Neighbours(index=int(index), samples=order.astype(np.int64), distances=d[order])
    if anchors is not None and len(anchors):
        j, dist = nearest_anchor(embeddings[index : index + 1], anchors)
        out.anchor, out.anchor_distance = int(j[0]), float(dist[0])
        out.anchor_class = int(anchor_classes[j[0]]) if anchor_classes is not None else None
    return out


def _loo_centroid_accuracy(x: np.ndarray, y: np.ndarray, c: int) -> float:
    """Accuracy of the nearest class mean, each sample left out of its own class's mean."""
    x = x.astype(np.float64)
    counts = np.bincount(y, minlength=c).astype(np.float64)
    sums = np.zeros((c, x.shape[1]))
    np.add.at(sums, y, x)
    means = np.divide(sums, counts[:, None], out=np.full_like(sums, np.nan), where=counts[:, None] > 0)
    d = _pairwise(x, np.nan_to_num(means, nan=0.0))
    d[:, counts == 0] = np.inf
    own = counts[y] - 1
    loo = np.divide(sums[y] - x, own[:, None], out=np.zeros_like(x), where=own[:, None] > 0)
    d_own = np.where(own > 0, np.sqrt(((x - loo) ** 2).sum(1)), np.inf)
    d[np.arange(len(y)), y] = d_own
    return float((d.argmin(1) == y).mean())


def class_silhouette(es: EmbeddingSet) -> dict[str, float]:
    """Mean silhouette (Euclidean, in the embedding space) of each class's samples; NaN for classes with < 2."""
    from sklearn.metrics import silhouette_samples

    out = {n: float("nan") for n in es.class_names}
    if len(np.unique(es.labels)) < 2 or len(es) < 3:
        return out
    s = silhouette_samples(es.embeddings.astype(np.float64), es.labels)
    for c, name in enumerate(es.class_names):
        if (es.labels == c).sum() >= 2:
            out[name] = float(s[es.labels == c].mean())
    return out


def anchor_summary(sets: Sequence[EmbeddingSet]):
    """One row of numbers per set (checkpoint), in the order given; a pandas DataFrame.

    Columns: ``run``, ``checkpoint``, ``epoch``, ``n``; ``accuracy`` (predictions); ``nearest_anchor_accuracy``
    (share of samples whose nearest anchor has their label; NaN without anchors); ``nearest_centroid_accuracy`` (the
    same with leave-one-out class means instead of anchors: the baseline's analogue); ``silhouette`` (by label,
    embedding space); ``own_anchor_distance`` (mean distance from a sample to the nearest anchor of its class);
    ``anchor_separation`` (smallest distance between anchors of different classes); ``anchor_drift`` (mean distance
    each anchor moved since the previous row of the same run; NaN on a run's first row). Distances are in
    embedding units; ``embedding_scale`` (the RMS distance of the samples to their mean) gives their scale.
    """
    import pandas as pd
    from sklearn.metrics import silhouette_score

    rows: list[dict[str, Any]] = []
    prev: dict[str, np.ndarray] = {}
    for es in sets:
        x, y, c = es.embeddings, es.labels, es.num_classes
        row: dict[str, Any] = {
            "run": es.run,
            "checkpoint": es.checkpoint,
            "epoch": es.epoch,
            "n": len(es),
            "accuracy": float((es.preds == y).mean()) if len(es) else float("nan"),
        }
        row["nearest_anchor_accuracy"] = float("nan")
        row["nearest_centroid_accuracy"] = _loo_centroid_accuracy(x, y, c) if len(es) else float("nan")
        ok = 2 <= len(np.unique(y)) < len(es)
        row["silhouette"] = float(silhouette_score(x.astype(np.float64), y)) if ok else float("nan")
        row["embedding_scale"] = float(np.sqrt(((x - x.mean(0)) ** 2).sum(1).mean())) if len(es) else float("nan")
        for col in ("own_anchor_distance", "anchor_separation", "anchor_drift"):
            row[col] = float("nan")
        if es.has_anchors:
            a, ac = es.anchors, es.anchor_classes
            assert a is not None and ac is not None
            d = _pairwise(x, a)
            row["nearest_anchor_accuracy"] = float((ac[d.argmin(1)] == y).mean())
            own = np.where(ac[None, :] == y[:, None], d, np.inf).min(1)
            row["own_anchor_distance"] = float(own[np.isfinite(own)].mean()) if np.isfinite(own).any() else np.nan
            da = _pairwise(a, a)
            cross = da[ac[:, None] != ac[None, :]]
            row["anchor_separation"] = float(cross.min()) if cross.size else float("nan")
            if es.run in prev and prev[es.run].shape == a.shape:
                row["anchor_drift"] = float(np.linalg.norm(a - prev[es.run], axis=1).mean())
            prev[es.run] = a
        rows.append(row)
    return pd.DataFrame(rows)
