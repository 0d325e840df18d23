"""Embeddings of trained runs and their 2-D maps: where the samples and ARBEx's anchors sit, and how they move.

- :func:`collect_embeddings` runs one checkpoint of a run over (a seeded share of) a split and returns an
  :class:`EmbeddingSet`: the per-sample embeddings e (N, D), labels, predictions, confidences and, for models with
  anchors (ARBEx), the anchors (C*k, D) with their classes. Results are cached on disk per checkpoint.
- :func:`project` maps one or several sets to 2-D with UMAP (or PCA), fitted ONCE on the samples and the anchors of
  all the sets together, so that every set of one call lives in the same map; seeded and cached on disk.
- :func:`neighbours` finds a sample's nearest samples and nearest anchor in the embedding space (not in the map:
  UMAP keeps who is near whom only roughly and distances not at all).
- :func:`anchor_summary` turns "how do the anchors move" into numbers per checkpoint.

Caches. Everything is written under :func:`cache_root` (``$FERNB_CACHE_DIR``, else the checkout's ignored ``data/``
folder, else ``~/.cache/fernb``), in ``embeddings/`` (arrays, keyed by hashes of their inputs) and ``numba/``.
UMAP compiles its numba kernels on first use in every new process (tens of seconds on 2 cores). Importing this module
sets ``NUMBA_CACHE_DIR`` to ``<cache_root>/numba`` unless it is already set (so set your own before importing it),
and :func:`project` turns numba's on-disk cache on for umap-learn's own kernels, which umap-learn does not do itself:
the compile is then paid once per machine instead of once per kernel start (``python -m fernb.explore.embeddings``
pays it ahead of time, e.g. in a CI install step).
"""

from ...data.cache import cache_root
from .checkpoints import checkpoint_epoch, list_checkpoints, pick_checkpoints
from .collection import collect_checkpoints, collect_embeddings, run_maps
from .projection import configure_numba_cache, project, warm_numba_cache
from .sets import COLOURINGS, EmbeddingSet, Neighbours
from .summary import anchor_summary, class_silhouette, nearest_anchor, neighbours

__all__ = [
    "COLOURINGS",
    "EmbeddingSet",
    "Neighbours",
    "cache_root",
    "configure_numba_cache",
    "list_checkpoints",
    "checkpoint_epoch",
    "pick_checkpoints",
    "collect_embeddings",
    "collect_checkpoints",
    "run_maps",
    "project",
    "neighbours",
    "nearest_anchor",
    "anchor_summary",
    "class_silhouette",
    "warm_numba_cache",
]
