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
from .embeddings import (  # noqa: E402
    class_colours,
    plot_anchor_summary,
    plot_embedding_comparison,
    plot_embedding_epochs,
    plot_embedding_map,
)

__all__ += ["class_colours", "plot_embedding_map", "plot_embedding_epochs", "plot_embedding_comparison",
            "plot_anchor_summary"]
from .reliability import (  # noqa: E402
    plot_confidence_scatter,
    plot_divergence_by_class,
    plot_noise_report,
    plot_reliability_sample,
)

__all__ += ["plot_reliability_sample", "plot_confidence_scatter", "plot_noise_report", "plot_divergence_by_class"]
from .gradcam import cam_titles, plot_cam_overlay, plot_gradcam_grid, plot_method_cams, to_gray  # noqa: E402

__all__ += ["cam_titles", "plot_cam_overlay", "plot_gradcam_grid", "plot_method_cams", "to_gray"]
