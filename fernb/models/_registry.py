"""Model registry in the style of timm: ``@register_model`` entry points and :func:`create_model`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "model_entrypoint", "parse_variant", "VARIANTS"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn(preset: str = "tiny", **overrides) -> nn.Module`` under its function name."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def _ensure_models() -> None:
    from . import _families  # noqa: F401  (imports every model family, which registers its entry points)


def list_models() -> list[str]:
    _ensure_models()
    return sorted(_MODELS)


# Model variants named "name+flag" (a config flag set to True) where benchmarks and tests list methods side by side.
VARIANTS: tuple[str, ...] = ("esr+diversity", "manet+diversity")


def parse_variant(spec: str) -> tuple[str, dict[str, bool]]:
    """``"esr+diversity"`` -> ``("esr", {"diversity": True})``; a plain registry name has no overrides."""
    name, *flags = spec.split("+")
    return name, {flag: True for flag in flags}


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    _ensure_models()
    try:
        return _MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_MODELS))}") from None


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
        from ._weights import load_checkpoint

        load_checkpoint(model, checkpoint, strict=strict)
    return model


def build_config(config_cls: type, preset: str, overrides: Mapping[str, Any]) -> Any:
    """``config_cls.<preset>()`` with ``overrides`` applied; unknown fields raise a clear error."""
    factory = getattr(config_cls, preset, None)
    if factory is None or not callable(factory):
        presets = [m for m in ("official", "tiny") if hasattr(config_cls, m)]
        raise ValueError(f"{config_cls.__name__}: unknown preset {preset!r}; expected one of {presets}")
    cfg = factory()
    names = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"{config_cls.__name__} has no field(s) {unknown}; fields: {sorted(names)}")
    return dataclasses.replace(cfg, **overrides)
