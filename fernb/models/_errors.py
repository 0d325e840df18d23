"""Errors of the model layer; a leaf module so that every weight reader can raise them."""

from __future__ import annotations

from ..errors import FernbError

__all__ = ["CheckpointMismatchError"]


class CheckpointMismatchError(FernbError, RuntimeError):
    """A checkpoint whose keys or shapes do not fit the model, or a file that cannot be read safely."""
