"""Which checkpoints of a run folder to embed."""

from __future__ import annotations

import json
import os

import numpy as np

from ...engine.rundir import RunDir


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
