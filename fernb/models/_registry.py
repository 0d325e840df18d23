"""Model registry in the style of timm: ``@register_model`` entry points (built by :mod:`.factory`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..registry import Registry
from ._base import FERModel

__all__ = ["MODELS", "register_model", "build_config", "parse_variant", "VARIANTS"]

EntryPoint = Callable[..., FERModel]
E = TypeVar("E", bound=EntryPoint)

MODELS: Registry[EntryPoint] = Registry("model")


def register_model(fn: E) -> E:
    """Register ``fn(preset: str = "tiny", **overrides) -> FERModel`` under its function name (once: a name
    registered twice raises ``ValueError``). Its pretrained cfgs are registered beside it
    (:func:`fernb.models._pretrained.register_pretrained_cfgs`)."""
    MODELS.register()(fn)
    return fn


# Model variants named "name+flag" (a config flag set to True) where benchmarks and tests list methods side by side.
VARIANTS: tuple[str, ...] = ("esr+diversity", "manet+diversity")


def parse_variant(spec: str) -> tuple[str, dict[str, bool]]:
    """``"esr+diversity"`` -> ``("esr", {"diversity": True})``; a plain registry name has no overrides."""
    name, *flags = spec.split("+")
    return name, {flag: True for flag in flags}


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
