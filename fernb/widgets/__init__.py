"""ipywidgets explorers: each builder returns ``(widget, state)``; the state holds the selection and the latest
figure and has the methods the widget callbacks call, so tests drive an explorer without a browser. Also the live
views of a training run (:class:`LiveCurves`)."""

from . import embeddings, gradcam, reliability, training
from .embeddings import *  # noqa: F403
from .gradcam import *  # noqa: F403
from .reliability import *  # noqa: F403
from .training import *  # noqa: F403

__all__ = [*embeddings.__all__, *gradcam.__all__, *reliability.__all__, *training.__all__]
