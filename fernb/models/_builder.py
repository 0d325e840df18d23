"""The builder behind every registered entry point (timm's ``build_model_with_cfg``): construct, attach the pretrained
cfg, then load the local weight files the config names. Constructors never open files; this is where files are read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ._base import FERModel
from ._pretrained import PRETRAINED_CFGS, pretrained_cfg_of

__all__ = ["build_model"]

C = TypeVar("C")
M = TypeVar("M", bound=FERModel)


def build_model(
    model_cls: Callable[[C], M], config: C, name: str, preset: str, load_pretrained: Callable[[M], object] | None = None
) -> M:
    """``model_cls(config)``, its ``pretrained_cfg`` and its pretrained parts.

    Args:
        model_cls: the family's model class.
        config: the built config (:func:`fernb.models._registry.build_config`).
        name: the registry name of the entry point.
        preset: the preset the config came from; its cfg (``"<name>.<preset>"``, else ``"<name>.official"``) is
            resolved for the model (:meth:`~fernb.models.FERModel.resolve_pretrained_cfg`).
        load_pretrained: reads the weight files the config names into the built model (POSTER_V2's IR-50 and
            MobileFaceNet, ARBEx's backbone checkpoint), with the family's checks and messages.
    """
    model = model_cls(config)
    key = f"{name}.{preset}" if f"{name}.{preset}" in PRETRAINED_CFGS else f"{name}.official"
    model.pretrained_cfg = model.resolve_pretrained_cfg(pretrained_cfg_of(key))
    if load_pretrained is not None:
        load_pretrained(model)
    return model
