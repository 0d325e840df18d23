"""fernb: a notebook-first research workbook for facial expression recognition."""

from __future__ import annotations

__version__ = "0.1.0"

from . import labels  # noqa: E402

__all__ = ["labels", "create_model", "list_models", "__version__"]


def __getattr__(name: str):
    # Keep `import fernb` light (no torch model code) until a model is asked for.
    if name in ("create_model", "list_models"):
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'fernb' has no attribute {name!r}")
