"""Where fernb keeps what it can rebuild: decoded arrays, synthetic data, embeddings, numba kernels."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_root"]

CACHE_ENV = "FERNB_CACHE_DIR"


def cache_root() -> Path:
    """``$FERNB_CACHE_DIR``, else the checkout's git-ignored ``data/`` folder, else ``~/.cache/fernb``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file() and (repo / "data").is_dir():
        return repo / "data"
    return Path.home() / ".cache" / "fernb"
