"""Running a checkpoint over a split to collect its embeddings (and ARBEx's anchors and confidences)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...data.cache import cache_root
from ...engine.data import run_split
from ...engine.distributed import resolve_device
from ...engine.factory import load_run
from ...engine.metrics import softmax
from ...engine.predict import predict
from ...engine.rundir import RunDir
from .cache import _VERSION, _digest, _read_cache, _write_cache
from .checkpoints import pick_checkpoints
from .projection import project
from .sets import EmbeddingSet


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
    key = _digest(
        "embeddings", _VERSION, rd.config_path.read_bytes(), data, state.get("files"), tag, split, limit, seed
    )
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


def _embed(
    run_dir: Path, tag: str, *, split: str, limit: int | None, seed: int, device: str, batch_size: int | None
) -> EmbeddingSet:
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
        pred = predict(
            model, ds, batch_size=bs, device=resolve_device(device), order="shuffled", seed=seed, extras=names
        )
    except KeyError:  # a model with anchors but without ARBEx's confidences
        pred = predict(
            model, ds, batch_size=bs, device=resolve_device(device), order="shuffled", seed=seed, extras=["embedding"]
        )
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
        run=run_dir.name,
        checkpoint=tag,
        epoch=meta.get("epoch"),
        method=cfg.model.name,
        split=split,
        embeddings=pred.extras["embedding"].reshape(len(pred), -1).astype(np.float32),
        labels=pred.targets.astype(np.int64),
        preds=pred.preds.astype(np.int64),
        confidence=np.clip(conf, 0.0, 1.0).astype(np.float32),
        max_prob=probs.max(1).astype(np.float32),
        indices=rows[pred.indices].astype(np.int64),
        class_names=list(meta["class_names"]),
        anchors=a,
        anchor_classes=a_cls,
        extra=extra,
    )


def collect_checkpoints(
    run_dir: str | os.PathLike, checkpoints: Sequence[str | int] | None = None, **kwargs: Any
) -> list[EmbeddingSet]:
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
