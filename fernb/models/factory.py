"""Building models by name: importing this module imports every model family, which registers its entry points."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import adcorre, arbex, arm, esr, manet, poster, resnet, scn  # noqa: F401  (each registers its entry points)
from ._base import FERModel
from ._pretrained import PRETRAINED_CFGS, PretrainedCfg, pretrained_cfg_of
from ._registry import MODELS
from ._weights import load_checkpoint

__all__ = ["create_model", "list_models", "model_entrypoint", "get_pretrained_cfg", "list_pretrained"]


def list_models() -> list[str]:
    """Registry names of every model."""
    return MODELS.names()


def model_entrypoint(name: str) -> Callable[..., FERModel]:
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
) -> FERModel:
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

    The entry point builds the model (:func:`fernb.models._builder.build_model`: construct, attach
    ``model.pretrained_cfg``, load the pretrained parts the config names); the checkpoint is loaded after that.
    """
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    model = model_entrypoint(name)(preset=preset, **overrides)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, strict=strict)
    return model


def get_pretrained_cfg(name: str, preset: str | None = None) -> PretrainedCfg:
    """The pretrained cfg of a registered model and preset, without building it (timm's ``get_pretrained_cfg``).

    Args:
        name: an entry point (``"poster_v2"``) or ``"<entry point>.<preset>"`` (``"poster_v2.official"``).
        preset: the preset (default ``"tiny"``, :func:`create_model`'s).

    Raises:
        KeyError: an unknown name or preset (the message lists the known ones).
    """
    return pretrained_cfg_of(name, preset)


def list_pretrained(name: str | None = None) -> list[str]:
    """Names ``"<entry point>.<preset>"`` of the registered pretrained cfgs (of entry point ``name`` only, if given)."""
    return [n for n in PRETRAINED_CFGS.names() if name is None or n.split(".")[0] == MODELS.canonical(name)]
