"""Pictures of the modality gap.

- :mod:`modgap.viz.figures`: static matplotlib figures for papers and for
  headless runs (maps of both modalities, the shift of a model's
  embeddings, the shift curve, similarity heat maps, spectra, the gap's
  anatomy, report comparisons); each returns the ``Axes`` or ``Figure``.
- :mod:`modgap.viz.interactive`: the interactive map for JupyterLab, on
  jupyter-scatter: thumbnails and captions on hover, lasso selection back
  in Python, and before/after animation in one shared frame.
"""
from .figures import (
    EXACT_KNN_MAX,
    MIN_ACCURACY_SPAN,
    REDUCERS,
    draw_map,
    fit_2d,
    plot_embedding_shift,
    plot_embeddings,
    plot_gap_anatomy,
    plot_gap_shift,
    plot_images,
    plot_report_comparison,
    plot_similarity,
    plot_spectrum,
)
from .interactive import EmbeddingTrail, Explorer, explore, explore_shift

__all__ = [
    "EXACT_KNN_MAX",
    "MIN_ACCURACY_SPAN",
    "REDUCERS",
    "EmbeddingTrail",
    "Explorer",
    "draw_map",
    "explore",
    "explore_shift",
    "fit_2d",
    "plot_embedding_shift",
    "plot_embeddings",
    "plot_gap_anatomy",
    "plot_gap_shift",
    "plot_images",
    "plot_report_comparison",
    "plot_similarity",
    "plot_spectrum",
]
