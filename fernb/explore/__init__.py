"""What a trained model learned, as data: embeddings and their projections, Grad-CAM maps, reliability corrections,
flipped-label detection.

Each module computes from run folders (``fernb.engine.load_run``) and returns arrays or frames; ``fernb.viz`` plots
them and ``fernb.widgets`` wraps both in interactive explorers. Heavy dependencies (umap, numba, pytorch-grad-cam)
load on first use.
"""

from . import embeddings, gradcam, noise_detection, reliability
from .embeddings import *  # noqa: F403
from .gradcam import *  # noqa: F403
from .noise_detection import fitted_labels, load_noise_detection, load_noise_scores
from .reliability import *  # noqa: F403

__all__ = [
    "embeddings",
    "gradcam",
    "noise_detection",
    "reliability",
    *embeddings.__all__,
    *gradcam.__all__,
    "load_noise_detection",
    "load_noise_scores",
    "fitted_labels",
    *reliability.__all__,
]
