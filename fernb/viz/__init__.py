"""Plot functions: each takes data and returns a matplotlib Figure (no global state, no display calls)."""

from .data import plot_class_distribution, plot_image_gallery, plot_label_distributions, plot_sample_grid
from .embeddings import (
    class_colours,
    plot_anchor_summary,
    plot_embedding_comparison,
    plot_embedding_epochs,
    plot_embedding_map,
)
from .faces import plot_alignment
from .gradcam import cam_titles, plot_cam_overlay, plot_gradcam_grid, plot_method_cams, to_gray
from .reliability import (
    plot_confidence_scatter,
    plot_divergence_by_class,
    plot_noise_report,
    plot_reliability_sample,
)
from .training import plot_confusion_matrix, plot_history, plot_leaderboard, plot_per_class

__all__ = [
    "plot_class_distribution",
    "plot_image_gallery",
    "plot_label_distributions",
    "plot_sample_grid",
    "plot_alignment",
    "plot_confusion_matrix",
    "plot_history",
    "plot_leaderboard",
    "plot_per_class",
    "class_colours",
    "plot_embedding_map",
    "plot_embedding_epochs",
    "plot_embedding_comparison",
    "plot_anchor_summary",
    "plot_reliability_sample",
    "plot_confidence_scatter",
    "plot_noise_report",
    "plot_divergence_by_class",
    "cam_titles",
    "plot_cam_overlay",
    "plot_gradcam_grid",
    "plot_method_cams",
    "to_gray",
]
