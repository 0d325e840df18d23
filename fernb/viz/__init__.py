"""Plot functions: each takes data and returns a matplotlib Figure (no global state, no display calls)."""

from .data import (
    plot_class_distribution,
    plot_image_gallery,
    plot_label_distributions,
    plot_sample_grid,
)

__all__ = ["plot_class_distribution", "plot_image_gallery", "plot_label_distributions", "plot_sample_grid"]
from .faces import plot_alignment  # noqa: E402

__all__ += ["plot_alignment"]
from .training import LiveCurves, plot_confusion_matrix, plot_history, plot_leaderboard, plot_per_class  # noqa: E402

__all__ += ["LiveCurves", "plot_confusion_matrix", "plot_history", "plot_leaderboard", "plot_per_class"]
