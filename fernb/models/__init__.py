"""Model families (one file each), the registry and the official-weight converters."""

from ._base import FERModel, ModelOutput
from ._registry import create_model, list_models, register_model

__all__ = ["FERModel", "ModelOutput", "create_model", "list_models", "register_model"]
