"""Checkpoints without pickle: safetensors for every tensor, JSON for everything else.

A checkpoint is a folder::

    checkpoints/<tag>/
        model.safetensors    the model's state dict (loadable by ``create_model(..., checkpoint=...)``)
        state.safetensors    the tensors of the training state (optimiser moments, RNG states, ...)
        state.json           the rest of the training state, with ``{"__tensor__": key}`` where a tensor was,
                             and the sha256 of both tensor files

The folder is written under a temporary name and swapped in with two renames, so a crash leaves either the old
checkpoint or the new one (a reader falls back to ``<tag>.old`` if the crash hit between the two renames).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import FernbError
from .rundir import RunWriteError, atomic_write_bytes, atomic_write_text

__all__ = [
    "CheckpointError",
    "pack_state",
    "unpack_state",
    "capture_rng",
    "restore_rng",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_exists",
]

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.safetensors"
META_FILE = "state.json"


class CheckpointError(FernbError, RuntimeError):
    """A checkpoint folder that is missing, incomplete or fails its checksum."""


# -- tensors <-> (flat tensor dict, JSON tree) -------------------------------------------------------------------------
def pack_state(obj: Any, tensors: dict[str, Tensor] | None = None, prefix: str = "t") -> tuple[Any, dict[str, Tensor]]:
    """Split a nested structure into a JSON-safe tree and a flat ``{key: tensor}`` dict.

    Handles dicts (any hashable scalar keys), lists, tuples, tensors, numpy arrays and scalars, bools, ints, floats
    (non-finite ones too), strings and None. Anything else raises ``TypeError``: nothing is ever pickled.
    """
    tensors = {} if tensors is None else tensors

    def walk(o: Any) -> Any:
        if isinstance(o, Tensor):
            key = f"{prefix}{len(tensors)}"
            tensors[key] = o.detach().cpu().contiguous().clone()
            return {"__tensor__": key}
        if isinstance(o, np.ndarray):
            key = f"{prefix}{len(tensors)}"
            arr = o.astype(np.int64) if o.dtype in (np.uint32, np.uint16) else o
            tensors[key] = torch.from_numpy(np.ascontiguousarray(arr)).clone()
            return {"__ndarray__": key, "dtype": str(o.dtype)}
        if isinstance(o, np.generic):
            return walk(o.item())
        if isinstance(o, bool) or o is None or isinstance(o, (int, str)):
            return o
        if isinstance(o, float):
            return o if math.isfinite(o) else {"__float__": str(o)}
        if isinstance(o, Mapping):
            if all(isinstance(k, str) for k in o) and not any(k.startswith("__") for k in o):
                return {k: walk(v) for k, v in o.items()}
            return {"__dict__": [[walk(k), walk(v)] for k, v in o.items()]}
        if isinstance(o, tuple):
            return {"__tuple__": [walk(v) for v in o]}
        if isinstance(o, list):
            return [walk(v) for v in o]
        if isinstance(o, torch.dtype):
            return {"__dtype__": str(o).replace("torch.", "")}
        raise TypeError(f"cannot store a {type(o).__name__} in a checkpoint without pickling it")

    return walk(obj), tensors


def unpack_state(tree: Any, tensors: Mapping[str, Tensor]) -> Any:
    """Inverse of :func:`pack_state`."""

    def walk(o: Any) -> Any:
        if isinstance(o, list):
            return [walk(v) for v in o]
        if not isinstance(o, dict):
            return o
        if "__tensor__" in o:
            return tensors[o["__tensor__"]]
        if "__ndarray__" in o:
            return tensors[o["__ndarray__"]].numpy().astype(np.dtype(o["dtype"]))
        if "__float__" in o:
            return float(o["__float__"])
        if "__dict__" in o:
            return {walk(k): walk(v) for k, v in o["__dict__"]}
        if "__tuple__" in o:
            return tuple(walk(v) for v in o["__tuple__"])
        if "__dtype__" in o:
            return getattr(torch, o["__dtype__"])
        return {k: walk(v) for k, v in o.items()}

    return walk(tree)


# -- RNG ---------------------------------------------------------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    """The states of every RNG a training step may draw from: torch (CPU and CUDA), numpy and python."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"].to(torch.uint8))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state["cuda"]])


# -- files -------------------------------------------------------------------------------------------------------------
def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _resolve(path: Path) -> Path:
    if (path / META_FILE).exists():
        return path
    old = path.with_name(path.name + ".old")
    if (old / META_FILE).exists():
        return old
    return path


def checkpoint_exists(path: str | os.PathLike) -> bool:
    return (_resolve(Path(path)) / META_FILE).exists()


def save_checkpoint(
    path: str | os.PathLike,
    model_state: Mapping[str, Tensor],
    meta: Mapping[str, Any] | None = None,
    train_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically.

    Args:
        path: the checkpoint folder (e.g. ``run/checkpoints/last``).
        model_state: the model's state dict.
        meta: JSON-able facts (epoch, step, metrics, ...).
        train_state: optimiser / scheduler / scaler / RNG states and anything else to resume (tensors allowed).

    Returns:
        The folder.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        _write_folder(tmp, model_state, meta, train_state)
        old = path.with_name(path.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        if old.exists():
            shutil.rmtree(old)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk leaves no half-written folder behind
        if isinstance(exc, OSError) and not isinstance(exc, RunWriteError):
            raise RunWriteError(getattr(exc, "filename", None) or path, exc) from exc
        raise
    return path


def _write_folder(
    tmp: Path,
    model_state: Mapping[str, Tensor],
    meta: Mapping[str, Any] | None,
    train_state: Mapping[str, Any] | None,
) -> None:
    from safetensors.torch import save

    weights = {k: v.detach().cpu().contiguous().clone() for k, v in model_state.items()}
    model_bytes = save(weights, metadata={"format": "pt", "producer": "fernb"})
    atomic_write_bytes(tmp / MODEL_FILE, model_bytes)
    meta_tree, meta_tensors = pack_state(dict(meta or {}))
    if meta_tensors:
        raise TypeError("checkpoint meta must be plain JSON values; put tensors into train_state")
    record: dict[str, Any] = {"meta": meta_tree, "files": {MODEL_FILE: _sha256(model_bytes)}}
    if train_state is not None:
        tree, tensors = pack_state(dict(train_state))
        state_bytes = save(tensors) if tensors else save({"_empty": torch.zeros(0)})
        atomic_write_bytes(tmp / STATE_FILE, state_bytes)
        record["files"][STATE_FILE] = _sha256(state_bytes)
        record["train_state"] = tree
    atomic_write_text(tmp / META_FILE, json.dumps(record, allow_nan=False) + "\n")


def load_checkpoint(
    path: str | os.PathLike, *, with_train_state: bool = True, verify: bool = True
) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, Any] | None]:
    """Read a checkpoint folder.

    Returns:
        ``(model_state, meta, train_state)``; ``train_state`` is None when the checkpoint has none or
        ``with_train_state`` is False.

    Raises:
        CheckpointError: naming the folder, when a file is missing or its checksum does not match.
    """
    from safetensors.torch import load

    path = _resolve(Path(path))
    meta_file = path / META_FILE
    if not meta_file.exists():
        raise CheckpointError(f"{path}: no checkpoint here ({META_FILE} missing); was the run ever saved?")
    try:
        record = json.loads(meta_file.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
            raise ValueError("not a fernb checkpoint record")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{meta_file}: unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); the file was "
            "truncated or edited.\n  what to do: use another checkpoint (best, last or an epoch), or start the run "
            "again with run.overwrite=true."
        ) from None

    def read(name: str) -> dict[str, Tensor]:
        f = path / name
        if not f.exists():
            raise CheckpointError(
                f"{f}: missing; the checkpoint is incomplete. Resume from another checkpoint or "
                "start the run again with run.overwrite=true."
            )
        data = f.read_bytes()
        if verify and record["files"].get(name) not in (None, _sha256(data)):
            raise CheckpointError(f"{f}: checksum mismatch (the file was changed or truncated after saving).")
        try:
            return load(data)
        except Exception as exc:  # safetensors raises its own SafetensorError for a bad header
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(
                f"{f}: not a readable safetensors file ({why}).\n"
                "  what to do: use another checkpoint, or start the run again with run.overwrite=true."
            ) from None

    model_state = read(MODEL_FILE)
    train_state = None
    try:
        meta = unpack_state(record.get("meta", {}), {})
        if with_train_state and "train_state" in record:
            train_state = unpack_state(record["train_state"], read(STATE_FILE))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(
            f"{meta_file}: its training state does not match its tensors ({type(exc).__name__}: {exc}); the "
            "checkpoint was edited or mixed with another.\n  what to do: use another checkpoint, or start the run "
            "again with run.overwrite=true."
        ) from None
    return model_state, meta, train_state
