"""fernb: a notebook-first research workbook for facial expression recognition."""

from __future__ import annotations

import os

from ._version import __version__

# OpenMP threads that spin while waiting make a 2-thread torch process up to 15x slower as soon as another process
# wants the same cores (a notebook kernel beside a test run, a second training): passive waiting costs little when
# the machine is idle. Only effective when fernb is imported before torch; export it to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import labels  # noqa: E402
from .errors import short_errors  # noqa: E402

short_errors()  # in a notebook, fernb's errors show as their message (FERNB_DEBUG=1: full tracebacks)

__all__ = ["labels", "create_model", "list_models", "predict", "__version__"]


def __getattr__(name: str):
    # Keep `import fernb` light (no torch model code) until a model is asked for.
    if name in ("create_model", "list_models"):
        from . import models

        return getattr(models, name)
    if name == "predict":  # fernb.predict(source, run_dir, ...): every face of images, folders, videos, cameras
        from .engine.faces import predict_faces

        return predict_faces
    raise AttributeError(f"module 'fernb' has no attribute {name!r}")
