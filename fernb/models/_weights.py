"""Safe checkpoint loading with a key report. Never unpickles arbitrary objects.

Formats: safetensors; torch files (``weights_only=True``); Keras HDF5 (``.h5`` / ``.hdf5``, arrays only, read with
``h5py`` by :mod:`fernb.models._keras`, then translated by the model's ``convert_state_dict``); a folder, for models
whose official release is one file per part (the model's ``read_checkpoint_dir(path)``, e.g. ESR's
``Net-Base-Shared_Representations.pt`` + ``Net-Branch_{i}.pt``); or an in-memory state dict.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from ._errors import CheckpointMismatchError
from ._keras import read_keras_h5

__all__ = ["KeyReport", "CheckpointMismatchError", "read_state_dict", "load_checkpoint", "report_keys"]

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module")


@dataclass
class KeyReport:
    """What loading a state dict into a model matched and what it did not."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    converted_from: str | None = None
    dropped: list[str] = field(default_factory=list)  # official keys of modules the fernb model does not build

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def __str__(self) -> str:
        lines = [
            f"{self.source}: {len(self.loaded)} tensors loaded"
            + (f" (converted from {self.converted_from} naming)" if self.converted_from else "")
        ]
        for title, items in (
            ("missing in checkpoint", self.missing),
            ("unexpected in checkpoint", self.unexpected),
            ("dropped (modules unused by the model)", self.dropped),
        ):
            if items:
                shown = ", ".join(items[:8]) + (f", ... (+{len(items) - 8})" if len(items) > 8 else "")
                lines.append(f"  {len(items)} {title}: {shown}")
        for k, want, got in self.shape_mismatch[:8]:
            lines.append(f"  shape mismatch {k}: model {want}, checkpoint {got}")
        return "\n".join(lines)


KERAS_SUFFIXES = (".h5", ".hdf5")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def sniff_format(path: str | Path) -> str:
    """A checkpoint file's format read from its first bytes, whatever its extension says: ``"safetensors"`` (an
    8-byte header length, then a JSON header), ``"torch"`` (a zip archive, torch's format since 1.6), ``"pickle"``
    (torch's legacy format), ``"keras"`` (HDF5); otherwise a phrase saying what the file is (``"an empty file"``,
    ``"not a checkpoint format fernb knows"``)."""
    with open(path, "rb") as fh:
        head = fh.read(16)
        size = os.fstat(fh.fileno()).st_size
    if not head:
        return "an empty file (0 bytes)"
    if head.startswith(b"PK\x03\x04"):
        return "torch"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "keras"
    if len(head) >= 9:
        n = int.from_bytes(head[:8], "little")
        if 0 < n <= size - 8 and head[8:9] == b"{":
            return "safetensors"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        return "a truncated safetensors file (its header says more bytes than the file has)"
    return "not a checkpoint format fernb knows"


def read_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, Tensor]:
    """Read a flat ``{name: tensor}`` dict from safetensors, a torch file (``weights_only=True``), a Keras HDF5 file
    (``{"<layer>/<weight>:0": array as stored}``, see :func:`fernb.models._keras.read_keras_h5`) or a mapping.

    Unwraps ``{"state_dict": ...}``-style containers and strips a DataParallel ``module.`` prefix.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        CheckpointMismatchError: ``source`` is a folder (see :func:`load_checkpoint`) or cannot be read safely.
    """
    if isinstance(source, Mapping):
        obj: Any = dict(source)
    else:
        path = Path(source)
        if path.is_dir():
            raise CheckpointMismatchError(
                f"{path} is a folder; a checkpoint is one file (safetensors, a torch state dict, a Keras .h5) unless "
                "the model's official release is a folder (ESR: load it with load_checkpoint(model, folder) or "
                "create_model('esr', ..., checkpoint=folder))"
            )
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        kind = sniff_format(path)
        if kind == "keras":
            return read_keras_h5(path)
        if kind == "safetensors":
            try:
                obj = load_file(str(path))
            except Exception as exc:  # safetensors' own error for a truncated or damaged file
                raise CheckpointMismatchError(
                    f"{path}: a damaged safetensors file ({_first_line(exc)}).\n"
                    "  what to do: download or copy it again."
                ) from None
        elif kind in ("torch", "pickle"):
            try:
                with open(path, "rb") as fh:  # a file object: torch would pick its reader by the name's extension
                    obj = torch.load(fh, map_location="cpu", weights_only=True)
            except Exception as exc:  # an unpickling refusal or a corrupt file
                raise CheckpointMismatchError(
                    f"{path}: cannot be read safely ({_first_line(exc)}).\n"
                    "  fernb loads torch files with weights_only=True and never executes pickled code. If you trust the"
                    " file, re-save its state dict with tensors only (torch.save(model.state_dict(), ...)) or as"
                    " safetensors."
                ) from None
        else:
            raise CheckpointMismatchError(
                f"{path}: {kind}; expected a checkpoint (safetensors, a torch state dict, a Keras .h5).\n"
                "  what to do: check the path, or download or copy the file again."
            )
    for _ in range(3):
        if isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointMismatchError(f"{source}: expected a state dict, found {type(obj).__name__}")
    sd = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def report_keys(model: nn.Module, sd: Mapping[str, Tensor], source: str = "state dict") -> KeyReport:
    own = model.state_dict()
    rep = KeyReport(source)
    for k, v in sd.items():
        if k not in own:
            rep.unexpected.append(k)
        elif tuple(own[k].shape) != tuple(v.shape):
            rep.shape_mismatch.append((k, tuple(own[k].shape), tuple(v.shape)))
        else:
            rep.loaded.append(k)
    rep.missing = [k for k in own if k not in sd]
    return rep


def load_checkpoint(
    model: nn.Module, source: str | Path | Mapping[str, Any], strict: bool = True, verbose: bool = False
) -> KeyReport:
    """Load a checkpoint into ``model``, converting official key names when the model knows how.

    A model that defines ``convert_state_dict(sd) -> (sd, naming)`` gets the chance to translate official names
    first; the report says which naming was found. A folder is read by the model's ``read_checkpoint_dir(path)``
    (official releases stored as one file per part, such as ESR's); other models refuse a folder.

    Raises:
        CheckpointMismatchError: with ``strict`` and any missing, unexpected or mis-shaped key; the message names
            the file, the first offending keys, and what to do.
    """
    name = str(source) if not isinstance(source, Mapping) else "state dict"
    read_dir = getattr(model, "read_checkpoint_dir", None)
    if not isinstance(source, Mapping) and Path(source).is_dir():
        if read_dir is None:
            raise CheckpointMismatchError(
                f"{source} is a folder, but {type(model).__name__} checkpoints are single files (safetensors, a torch "
                "state dict, a Keras .h5); give the path of the file inside it."
            )
        sd = read_dir(Path(source))
    else:
        sd = read_state_dict(source)
    naming = None
    dropped: list[str] = []
    convert = getattr(model, "convert_state_dict", None)
    own_keys = set(model.state_dict())
    if convert is not None and not set(sd) <= own_keys:
        try:
            sd, naming, *extra = convert(sd)  # (sd, naming) or (sd, naming, dropped keys)
        except CheckpointMismatchError as exc:
            raise CheckpointMismatchError(f"{name}: {exc}") from None
        dropped = list(extra[0]) if extra else []
    rep = report_keys(model, sd, name)
    rep.converted_from = naming
    rep.dropped = dropped
    if rep.shape_mismatch or (strict and not rep.ok):
        raise CheckpointMismatchError(
            f"checkpoint does not match {type(model).__name__}:\n{rep}\n"
            "  what to do: check the model name, preset and num_classes the checkpoint was trained with "
            "(see its run's config.json), or pass strict=False to load the matching part."
        )
    model.load_state_dict({k: sd[k] for k in rep.loaded}, strict=False)
    if verbose or not rep.ok:
        warnings.warn(str(rep), stacklevel=2)
    return rep
