"""Model families (one file each), the registry and the official-weight converters."""

from ._base import FERModel, LogitsOnly, ModelOutput
from ._registry import VARIANTS, create_model, list_models, parse_variant, register_model

__all__ = ["FERModel", "LogitsOnly", "ModelOutput", "create_model", "list_models", "register_model", "parse_variant",
           "VARIANTS"]
