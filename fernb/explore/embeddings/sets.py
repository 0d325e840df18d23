"""The containers: a set of embeddings of one checkpoint (:class:`EmbeddingSet`) and a sample's neighbours."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import numpy as np

COLOURINGS = ("label", "prediction", "confidence")


@dataclass
class EmbeddingSet:
    """One checkpoint's embeddings of a split, with what the model said about each sample.

    Attributes:
        run: run name (its folder name). checkpoint: ``"epoch-003"``, ``"best"``, ... epoch: its 1-based epoch.
        method: the model's registered name (``"arbex"``, ``"resnet18"``, ...). split: the split embedded.
        embeddings: (N, D) float32 embeddings e (``model(x).embedding``).
        labels: (N,) int64 labels. preds: (N,) int64 predictions. indices: (N,) positions in the split.
        confidence: (N,) float32 1 - H(p) / log C of the primary distribution p (ARBEx's c_p; for other models p is
            the softmax of the logits, the same formula, so the colouring compares across methods).
        max_prob: (N,) float32 the probability of the predicted class.
        class_names: the C class names.
        anchors: (A, D) float32 anchors (A = C*k, class-major), or None for models without anchors.
        anchor_classes: (A,) int64 class of each anchor, or None.
        extra: further per-sample scalars (ARBEx: ``confidence_anchor``, ``confidence_attention``), each (N,).
        xy: (N, 2) map coordinates of the samples, set by :func:`project`. anchor_xy: (A, 2) of the anchors.
    """

    run: str
    checkpoint: str
    epoch: int | None
    method: str
    split: str
    embeddings: np.ndarray
    labels: np.ndarray
    preds: np.ndarray
    confidence: np.ndarray
    max_prob: np.ndarray
    indices: np.ndarray
    class_names: list[str]
    anchors: np.ndarray | None = None
    anchor_classes: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    xy: np.ndarray | None = None
    anchor_xy: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        a = f", anchors={self.anchors.shape}" if self.anchors is not None else ""
        return (
            f"EmbeddingSet({self.run!r}, {self.checkpoint!r}, n={len(self)}, "
            f"dim={self.embeddings.shape[1]}{a}, projected={self.xy is not None})"
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_anchors(self) -> bool:
        return self.anchors is not None and len(self.anchors) > 0

    @property
    def title(self) -> str:
        """``"arbex · epoch 3"``: a short caption for plots."""
        when = f"epoch {self.epoch}" if self.epoch is not None else self.checkpoint
        if self.checkpoint in ("best", "last") and self.epoch is not None:
            when = f"{self.checkpoint} (epoch {self.epoch})"
        return f"{self.method} · {when}"

    def colour_values(self, colour: str) -> np.ndarray:
        """The per-sample values a colouring shows: class indices for label/prediction, [0, 1] for confidence."""
        if colour == "label":
            return self.labels
        if colour == "prediction":
            return self.preds
        if colour == "confidence":
            return self.confidence
        if colour in self.extra:
            return self.extra[colour]
        raise ValueError(f"colour={colour!r}; expected one of {', '.join((*COLOURINGS, *self.extra))}")

    # -- cache files ------------------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        arrays = {k: getattr(self, k) for k in ("embeddings", "labels", "preds", "confidence", "max_prob", "indices")}
        if self.anchors is not None:
            arrays.update(anchors=self.anchors, anchor_classes=self.anchor_classes)
        arrays.update({f"extra__{k}": v for k, v in self.extra.items()})
        meta = {k: getattr(self, k) for k in ("run", "checkpoint", "epoch", "method", "split", "class_names")}
        buf = io.BytesIO()
        np.savez(buf, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> EmbeddingSet:
        with np.load(io.BytesIO(data)) as z:
            meta = json.loads(z["__meta__"].tobytes().decode())
            arrays = {k: z[k] for k in z.files if k != "__meta__"}
        extra = {k[len("extra__") :]: arrays.pop(k) for k in list(arrays) if k.startswith("extra__")}
        return cls(**meta, **arrays, extra=extra)


@dataclass
class Neighbours:
    """A sample's nearest samples and nearest anchor in the embedding space.

    Attributes:
        index: the sample (row of the set). samples: (k,) rows of its nearest other samples, nearest first.
        distances: (k,) their Euclidean distances. anchor: row of the nearest anchor (None without anchors).
        anchor_class: that anchor's class. anchor_distance: its distance.
    """

    index: int
    samples: np.ndarray
    distances: np.ndarray
    anchor: int | None = None
    anchor_class: int | None = None
    anchor_distance: float | None = None
