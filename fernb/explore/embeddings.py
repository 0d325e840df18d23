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

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch

from ..data.cache import cache_root
from ..engine.data import run_split
from ..engine.distributed import resolve_device
from ..engine.factory import load_run
from ..engine.metrics import softmax
from ..engine.predict import predict
from ..engine.rundir import RunDir, atomic_write_bytes

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

COLOURINGS = ("label", "prediction", "confidence")
_VERSION = 1  # bump when what is cached changes meaning


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


# -- data -----------------------------------------------------------------------------------------------------------
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
        return (f"EmbeddingSet({self.run!r}, {self.checkpoint!r}, n={len(self)}, "
                f"dim={self.embeddings.shape[1]}{a}, projected={self.xy is not None})")

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
        extra = {k[len("extra__"):]: arrays.pop(k) for k in list(arrays) if k.startswith("extra__")}
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


# -- run folders ----------------------------------------------------------------------------------------------------
def list_checkpoints(run_dir: str | os.PathLike) -> list[str]:
    """The run's epoch checkpoints in order (``run.keep_epochs``), else whichever of ``best``/``last`` it has."""
    tags = RunDir(run_dir).checkpoints()
    epochs = [t for t in tags if t.startswith("epoch-")]
    return epochs or tags


def checkpoint_epoch(run_dir: str | os.PathLike, checkpoint: str | int) -> int | None:
    """The 1-based epoch a checkpoint was saved at (from its ``state.json``)."""
    state = RunDir(run_dir).checkpoint(checkpoint) / "state.json"
    if not state.is_file():
        return None
    epoch = json.loads(state.read_text()).get("meta", {}).get("epoch")
    return int(epoch) if epoch is not None else None


def pick_checkpoints(run_dir: str | os.PathLike, n: int = 6, *, include_best: bool = True) -> list[str]:
    """Up to ``n`` epoch checkpoints evenly spread over training (first and last included), plus the best epoch's.

    Falls back to ``best``/``last`` for runs trained without ``run.keep_epochs``.
    """
    tags = list_checkpoints(run_dir)
    if not tags or not tags[0].startswith("epoch-") or len(tags) <= n:
        return tags
    keep = sorted({int(round(i)) for i in np.linspace(0, len(tags) - 1, max(2, n))})
    chosen = [tags[i] for i in keep]
    best = checkpoint_epoch(run_dir, "best") if include_best else None
    if best is not None and f"epoch-{best:03d}" in tags and f"epoch-{best:03d}" not in chosen:
        chosen = sorted([*chosen, f"epoch-{best:03d}"])
    return chosen


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str((p.dtype, p.shape)).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        elif isinstance(p, bytes):
            h.update(p)
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()[:24]


def _read_cache(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _write_cache(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:  # a cache that cannot be written only costs time
        warnings.warn(f"could not write the cache file {path}: {exc}", stacklevel=3)


def collect_embeddings(
    run_dir: str | os.PathLike,
    checkpoint: str | int = "best",
    *,
    split: str = "valid",
    limit: int | None = 500,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int | None = None,
    cache: bool = True,
) -> EmbeddingSet:
    """Embed a split with one checkpoint of a run.

    Args:
        run_dir: the run folder.
        checkpoint: ``"best"``, ``"last"``, an epoch number or ``"epoch-003"`` (see :func:`list_checkpoints`).
        split: ``"valid"`` (default: the run's validation samples), ``"test"`` or ``"train"`` (evaluation transform).
        limit: embed at most this many samples, a seeded choice that is the same for every checkpoint of the run.
        seed: seed of that choice and of the shuffled batch order (``predict(order="shuffled")``).
        device: where the model runs.
        batch_size: inference batch size (default: the run's evaluation batch size).
        cache: read and write ``<cache_root>/embeddings/`` (keyed by the run's config, the checkpoint's weight
            checksum, the split, limit and seed).

    Returns:
        An :class:`EmbeddingSet` (not yet projected).
    """
    rd = RunDir(run_dir)
    tag = f"epoch-{int(checkpoint):03d}" if isinstance(checkpoint, int) else str(checkpoint)
    state_file = rd.checkpoint(tag) / "state.json"
    if not rd.config_path.is_file():
        raise FileNotFoundError(f"{rd.path}: no config.json; is this a fernb run folder?")
    if not state_file.is_file():
        raise FileNotFoundError(f"{rd.path}: no checkpoint {tag!r}; it has {', '.join(rd.checkpoints()) or 'none'}")
    state = json.loads(state_file.read_text())
    data = rd.read_record().get("data")  # the data fingerprints the run recorded
    key = _digest("embeddings", _VERSION, rd.config_path.read_bytes(), data, state.get("files"), tag, split, limit,
                  seed)
    path = cache_root() / "embeddings" / f"emb-{rd.path.name}-{tag}-{key}.npz"
    if cache and (blob := _read_cache(path)) is not None:
        try:
            return EmbeddingSet.from_bytes(blob)
        except Exception:  # noqa: BLE001 - a damaged cache file is recomputed
            pass
    es = _embed(rd.path, tag, split=split, limit=limit, seed=seed, device=device, batch_size=batch_size)
    if cache:
        _write_cache(path, es.to_bytes())
    return es


_ARBEX_SCALARS = ("confidence_primary", "confidence_anchor", "confidence_attention")


def _embed(run_dir: Path, tag: str, *, split: str, limit: int | None, seed: int, device: str,
           batch_size: int | None) -> EmbeddingSet:
    cfg, model, meta = load_run(run_dir, tag, device=device)
    ds = run_split(cfg, split)
    rows = np.arange(len(ds))
    if limit is not None and limit < len(ds):
        rows = np.sort(np.random.default_rng([seed, 17]).choice(len(ds), size=limit, replace=False))
        ds = ds.subset(rows)
    anchors = getattr(model, "anchors", None)
    names = ["embedding", *(_ARBEX_SCALARS if isinstance(anchors, torch.Tensor) else ())]
    bs = batch_size or cfg.data.eval_batch_size or cfg.data.batch_size
    try:
        pred = predict(model, ds, batch_size=bs, device=resolve_device(device), order="shuffled", seed=seed,
                       extras=names)
    except KeyError:  # a model with anchors but without ARBEx's confidences
        pred = predict(model, ds, batch_size=bs, device=resolve_device(device), order="shuffled", seed=seed,
                       extras=["embedding"])
    probs = softmax(pred.logits, axis=1)
    c = probs.shape[1]
    if "confidence_primary" in pred.extras:
        conf = pred.extras["confidence_primary"].reshape(-1)
    else:
        ent = -(probs * np.log(np.clip(probs, 1e-12, None))).sum(1)
        conf = 1.0 - ent / np.log(c)
    extra = {k: pred.extras[k].reshape(-1).astype(np.float32) for k in _ARBEX_SCALARS[1:] if k in pred.extras}
    a = a_cls = None
    if isinstance(anchors, torch.Tensor):
        a3 = anchors.detach().float().cpu().numpy()
        if a3.ndim == 2:  # (C, D): one anchor per class
            a3 = a3[:, None, :]
        a = a3.reshape(-1, a3.shape[-1]).astype(np.float32)
        a_cls = np.repeat(np.arange(a3.shape[0]), a3.shape[1]).astype(np.int64)
    return EmbeddingSet(
        run=run_dir.name, checkpoint=tag, epoch=meta.get("epoch"), method=cfg.model.name, split=split,
        embeddings=pred.extras["embedding"].reshape(len(pred), -1).astype(np.float32),
        labels=pred.targets.astype(np.int64), preds=pred.preds.astype(np.int64),
        confidence=np.clip(conf, 0.0, 1.0).astype(np.float32), max_prob=probs.max(1).astype(np.float32),
        indices=rows[pred.indices].astype(np.int64), class_names=list(meta["class_names"]),
        anchors=a, anchor_classes=a_cls, extra=extra)


def collect_checkpoints(run_dir: str | os.PathLike, checkpoints: Sequence[str | int] | None = None,
                        **kwargs: Any) -> list[EmbeddingSet]:
    """:func:`collect_embeddings` for several checkpoints of one run (default: :func:`pick_checkpoints`); the same
    samples in each."""
    tags = list(checkpoints) if checkpoints is not None else pick_checkpoints(run_dir)
    return [collect_embeddings(run_dir, t, **kwargs) for t in tags]


def run_maps(
    run_dir: str | os.PathLike,
    checkpoints: Sequence[str | int] | None = None,
    *,
    limit: int | None = 300,
    max_points: int = 4000,
    seed: int = 0,
    split: str = "valid",
    device: str = "cpu",
    method: str = "umap",
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    cache: bool = True,
) -> list[EmbeddingSet]:
    """Several checkpoints of one run (default :func:`pick_checkpoints`) embedded and projected into ONE map.

    ``limit`` samples per checkpoint, lowered so that all checkpoints together keep under ``max_points`` (UMAP
    switches from exact to approximate neighbours above 4096 points, and its time grows with the count).
    """
    tags = list(checkpoints) if checkpoints is not None else pick_checkpoints(run_dir)
    per = max_points // max(1, len(tags))
    lim = per if limit is None else min(limit, per)
    sets = collect_checkpoints(run_dir, tags, split=split, limit=lim, seed=seed, device=device, cache=cache)
    return project(sets, method=method, n_neighbors=n_neighbors, min_dist=min_dist, seed=seed, cache=cache)


# -- projection ------------------------------------------------------------------------------------------------------
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
    reducer = umap.UMAP(n_components=2, n_neighbors=int(min(n_neighbors, m - 1)), min_dist=min_dist,
                        metric="euclidean", random_state=seed, n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the seed forces one thread; tiny graphs warn about disconnection
        return reducer.fit_transform(x.astype(np.float32)).astype(np.float32)


@overload
def project(sets: EmbeddingSet, **kwargs: Any) -> EmbeddingSet: ...
@overload
def project(sets: Sequence[EmbeddingSet], **kwargs: Any) -> list[EmbeddingSet]: ...


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
    items = [sets] if single else list(sets)
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
        if s.has_anchors:
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
    out, at = [], 0
    for s in items:
        n = len(s)
        s_xy, at = xy[at:at + n], at + n
        a_xy = None
        if s.has_anchors:
            a_xy, at = xy[at:at + len(s.anchors)], at + len(s.anchors)
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


# -- neighbours and numbers -----------------------------------------------------------------------------------------
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
    d = _pairwise(embeddings[index:index + 1], embeddings)[0]
    d[index] = np.inf
    order = np.argsort(d, kind="stable")[:max(0, min(k, n - 1))]
    out = Neighbours(index=int(index), samples=order.astype(np.int64), distances=d[order])
    if anchors is not None and len(anchors):
        j, dist = nearest_anchor(embeddings[index:index + 1], anchors)
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
        row: dict[str, Any] = {"run": es.run, "checkpoint": es.checkpoint, "epoch": es.epoch, "n": len(es),
                               "accuracy": float((es.preds == y).mean()) if len(es) else float("nan")}
        row["nearest_anchor_accuracy"] = float("nan")
        row["nearest_centroid_accuracy"] = _loo_centroid_accuracy(x, y, c) if len(es) else float("nan")
        ok = 2 <= len(np.unique(y)) < len(es)
        row["silhouette"] = float(silhouette_score(x.astype(np.float64), y)) if ok else float("nan")
        row["embedding_scale"] = float(np.sqrt(((x - x.mean(0)) ** 2).sum(1).mean())) if len(es) else float("nan")
        for col in ("own_anchor_distance", "anchor_separation", "anchor_drift"):
            row[col] = float("nan")
        if es.has_anchors:
            a, ac = es.anchors, es.anchor_classes
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


def _main() -> None:
    print(f"NUMBA_CACHE_DIR={os.environ.get('NUMBA_CACHE_DIR')}")
    print(f"UMAP kernels ready in {warm_numba_cache():.1f} s")


if __name__ == "__main__":
    _main()
