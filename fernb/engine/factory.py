"""Building a run's model from its config (shared by ``fit`` and ``evaluate``)."""

from __future__ import annotations

from torch import nn

from .config import ModelConfig

__all__ = ["build_model"]


def build_model(cfg: ModelConfig, num_classes: int, img_size: int | None = None, *, checkpoint: bool = True
                ) -> nn.Module:
    """``create_model`` with the config's preset and overrides.

    ``img_size`` (the run's ``data.img_size``) is passed on to models whose config has an ``img_size`` field, unless
    ``cfg.kwargs`` sets it: some heads are sized from it (ARM's classifier).
    """
    from ..models import create_model

    kwargs = dict(cfg.kwargs)
    ckpt = cfg.checkpoint if checkpoint else None
    if img_size is not None and "img_size" not in kwargs:
        try:
            return create_model(cfg.name, cfg.preset, num_classes=num_classes, checkpoint=ckpt, strict=cfg.strict,
                                img_size=img_size, **kwargs)
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
    return create_model(cfg.name, cfg.preset, num_classes=num_classes, checkpoint=ckpt, strict=cfg.strict, **kwargs)
