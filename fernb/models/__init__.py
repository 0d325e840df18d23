"""Model families (one file each), the registry and the official-weight converters."""

from ._base import FERModel, LogitsOnly, ModelOutput
from ._pretrained import PretrainedCfg, register_pretrained_cfgs
from ._registry import VARIANTS, parse_variant, register_model
from .factory import create_model, get_pretrained_cfg, list_models, list_pretrained, model_entrypoint

__all__ = [
    "FERModel",
    "LogitsOnly",
    "ModelOutput",
    "create_model",
    "list_models",
    "register_model",
    "parse_variant",
    "VARIANTS",
    "model_entrypoint",
    "PretrainedCfg",
    "get_pretrained_cfg",
    "list_pretrained",
    "register_pretrained_cfgs",
]
