"""Building models by name: importing this module imports every model family, which registers its entry points."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from . import adcorre, arbex, arm, esr, manet, poster, resnet  # noqa: F401  (each registers its entry points)
from ._registry import MODELS
from ._weights import load_checkpoint

__all__ = ["create_model", "list_models", "model_entrypoint"]


def list_models() -> list[str]:
    """Registry names of every model."""
    return MODELS.names()


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The registered entry point ``name``; unknown names raise a ``KeyError`` listing the known models."""
    return MODELS.get(name)


def create_model(
    name: str,
    preset: str = "tiny",
    *,
    num_classes: int | None = None,
    checkpoint: str | Path | Mapping[str, Any] | None = None,
    strict: bool = True,
    **overrides: Any,
) -> nn.Module:
    """Build a registered model from a preset, with config overrides and an optional checkpoint.

    Args:
        name: registry name (``"arbex"``, ``"poster_v2"``, ``"resnet18"``, ``"arm"``, ...; see :func:`list_models`).
        preset: ``"tiny"`` (trains on a 2-core CPU at 48-64 px) or ``"official"`` (the published sizes).
        num_classes: number of output classes (overrides the preset).
        checkpoint: a path (safetensors, a torch file loaded with ``weights_only=True``, a Keras ``.h5`` for
            ``adcorre``, or the official release folder for ``esr``) or a state dict, in fernb's naming or the
            official naming (converted automatically; :func:`fernb.models._weights.load_checkpoint`).
        strict: refuse a checkpoint with missing or unexpected keys.
        **overrides: fields of the model's config dataclass.
    """
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    model = model_entrypoint(name)(preset=preset, **overrides)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, strict=strict)
    return model
