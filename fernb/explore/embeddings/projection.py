"""2-D maps with UMAP (or PCA), fitted once over several sets, and numba's on-disk cache for UMAP's kernels."""

from __future__ import annotations

import dataclasses
import io
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import overload

import numpy as np

from ...data.cache import cache_root
from .cache import _VERSION, _digest, _read_cache, _write_cache
from .sets import EmbeddingSet


def configure_numba_cache() -> Path:
    """Point numba's on-disk cache at ``$NUMBA_CACHE_DIR`` (default ``<cache_root>/numba``), creating the folder.

    Works before numba is imported (the environment variable) and after (numba's config, read at caching time).
    """
    path = Path(os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_root() / "numba"))).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only location: numba then falls back to its own places
        return path
    numba = sys.modules.get("numba")
    if numba is not None and not getattr(numba.config, "CACHE_DIR", ""):
        numba.config.CACHE_DIR = str(path)
    return path


configure_numba_cache()


def _enable_umap_disk_cache() -> None:
    """Turn numba's on-disk cache on for umap-learn's module-level kernels (umap-learn compiles them without
    ``cache=True``, so each new process would recompile them: about 25 s on 2 cores)."""
    try:
        from numba.core.caching import NullCache
        from numba.core.dispatcher import Dispatcher
    except ImportError:  # pragma: no cover - umap-learn depends on numba
        return
    for name, mod in list(sys.modules.items()):
        if name != "umap" and not name.startswith("umap."):
            continue
        for obj in list(vars(mod).values()):
            if isinstance(obj, Dispatcher) and isinstance(getattr(obj, "_cache", None), NullCache):
                try:
                    obj.enable_caching()
                except Exception:  # noqa: BLE001 - a kernel that cannot be cached is compiled as usual
                    pass


def _import_umap():
    configure_numba_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import umap
        import umap.layouts  # noqa: F401
        import umap.spectral  # noqa: F401
        import umap.umap_  # noqa: F401
        import umap.utils  # noqa: F401
    _enable_umap_disk_cache()
    return umap


def _fit_2d(x: np.ndarray, method: str, n_neighbors: int, min_dist: float, seed: int) -> np.ndarray:
    """(M, D) -> (M, 2) with UMAP or PCA."""
    m = len(x)
    if method == "pca" or m <= 4:
        from sklearn.decomposition import PCA

        if m < 2:
            return np.zeros((m, 2), np.float32)
        k = min(2, m, x.shape[1])
        out = PCA(k, svd_solver="full", random_state=seed).fit_transform(x.astype(np.float64))
        return np.pad(out, ((0, 0), (0, 2 - k))).astype(np.float32)
    umap = _import_umap()
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=int(min(n_neighbors, m - 1)),
        min_dist=min_dist,
        metric="euclidean",
        random_state=seed,
        n_jobs=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the seed forces one thread; tiny graphs warn about disconnection
        return reducer.fit_transform(x.astype(np.float32)).astype(np.float32)


@overload
def project(
    sets: EmbeddingSet,
    *,
    method: str = ...,
    n_neighbors: int = ...,
    min_dist: float = ...,
    seed: int = ...,
    cache: bool = ...,
) -> EmbeddingSet: ...
@overload
def project(
    sets: Sequence[EmbeddingSet],
    *,
    method: str = ...,
    n_neighbors: int = ...,
    min_dist: float = ...,
    seed: int = ...,
    cache: bool = ...,
) -> list[EmbeddingSet]: ...


def project(
    sets: EmbeddingSet | Sequence[EmbeddingSet],
    *,
    method: str = "umap",
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    seed: int = 0,
    cache: bool = True,
) -> EmbeddingSet | list[EmbeddingSet]:
    """Map sets to 2-D, fitting ONE map on all their samples and anchors together; returns copies with ``xy`` and
    ``anchor_xy`` set.

    Why one joint fit. Anchors are points of the embedding space, so they are placed by the same fit as the samples
    (a ``transform`` of anchors into a map of samples would place them by their nearest samples only). For the
    checkpoints of one run, the embeddings of all epochs are fitted together as well: the map is then one
    coordinate system, an anchor's positions over epochs form a trajectory that can be drawn, and a cluster that
    forms late sits apart from the early cloud it came from. Fitting the last epoch and ``transform``-ing the
    earlier ones would instead squeeze the untrained embeddings onto the trained clusters they happen to be near.
    The cost is one fit on (sum of N) + anchors points, which stays small because :func:`pick_checkpoints` keeps a
    handful of epochs and ``collect_embeddings(limit=...)`` caps N.

    Sets of different runs (ARBEx and a baseline) have unrelated embedding spaces, often of different widths: give
    them to separate calls.

    Args:
        sets: one set or several sets with the same embedding width.
        method: ``"umap"`` (umap-learn; Euclidean, seeded) or ``"pca"`` (linear, distances along the two axes kept).
        n_neighbors, min_dist: UMAP's parameters.
        seed: UMAP's ``random_state`` (a fixed seed makes UMAP single-threaded and the map reproducible).
        cache: read and write ``<cache_root>/embeddings/`` keyed by a hash of the inputs and the parameters, so a
            second call with the same inputs is a file read.

    Returns:
        The projected set, or a list of them in the order given.
    """
    single = isinstance(sets, EmbeddingSet)
    items = [sets] if isinstance(sets, EmbeddingSet) else list(sets)
    if not items:
        return []
    if method not in ("umap", "pca"):
        raise ValueError(f"method={method!r}; expected 'umap' or 'pca'")
    widths = {s.embeddings.shape[1] for s in items}
    if len(widths) > 1:
        raise ValueError(f"the sets have embeddings of different widths {sorted(widths)}; project each run separately")
    blocks: list[np.ndarray] = []
    for s in items:
        blocks.append(s.embeddings)
        if s.has_anchors and s.anchors is not None:
            blocks.append(s.anchors)
    x = np.concatenate(blocks).astype(np.float32)
    params = {"method": method, "n_neighbors": n_neighbors, "min_dist": min_dist, "seed": seed}
    if method == "umap":
        params["umap"] = _umap_version()
    key = _digest("projection", _VERSION, params, [len(b) for b in blocks], x)
    path = cache_root() / "embeddings" / f"map-{method}-{key}.npy"
    xy = None
    if cache and (data := _read_cache(path)) is not None:
        try:
            xy = np.load(io.BytesIO(data))
            if xy.shape != (len(x), 2):
                xy = None
        except Exception:  # noqa: BLE001 - a damaged cache file is recomputed
            xy = None
    if xy is None:
        xy = _fit_2d(x, method, n_neighbors, min_dist, seed)
        if cache:
            buf = io.BytesIO()
            np.save(buf, xy)
            _write_cache(path, buf.getvalue())
    out: list[EmbeddingSet] = []
    at = 0
    for s in items:
        n = len(s)
        s_xy, at = xy[at : at + n], at + n
        a_xy = None
        if s.has_anchors and s.anchors is not None:
            a_xy, at = xy[at : at + len(s.anchors)], at + len(s.anchors)
        out.append(dataclasses.replace(s, xy=s_xy, anchor_xy=a_xy))
    return out[0] if single else out


def _umap_version() -> str:
    try:
        from importlib.metadata import version

        return version("umap-learn")
    except Exception:  # noqa: BLE001
        return "unknown"


def warm_numba_cache() -> float:
    """Compile (or load from the cache) UMAP's kernels once, on a tiny problem; returns the seconds it took."""
    t0 = time.perf_counter()
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    _fit_2d(x, "umap", 15, 0.1, 0)
    return time.perf_counter() - t0
