"""Model families (one file each), the registry and the official-weight converters."""

from ._base import FERModel, LogitsOnly, ModelOutput
from ._registry import VARIANTS, parse_variant, register_model
from .factory import create_model, list_models, model_entrypoint

__all__ = ["FERModel", "LogitsOnly", "ModelOutput", "create_model", "list_models", "register_model", "parse_variant",
           "VARIANTS", "model_entrypoint"]
