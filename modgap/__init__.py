"""modgap: see, measure and close the modality gap of CLIP models.

    import modgap
    clip = modgap.load_model("modgap-tiny")
    pairs = modgap.data.load("shapes-pairs")
    modgap.metrics.gap_report(clip.encode_images(pairs), clip.encode_texts(pairs.first_captions()))

Modules: ``data`` (image and pair sets), ``metrics`` (gap figures), ``viz``
(figures), ``adapt`` (ReCLIP, CLIP-Refine), ``widgets`` (notebook dashboards),
``zoo`` (the bundled model).
"""
import importlib

__version__ = "0.1.0"

from . import data, metrics
from .models import Clip, ModelLoadError, load_model, pick_device

__all__ = [
    "Clip",
    "ModelLoadError",
    "__version__",
    "adapt",
    "claims",
    "compare_closers",
    "data",
    "load_model",
    "metrics",
    "pick_device",
    "viz",
    "widgets",
    "zoo",
]


def __getattr__(name):
    # matplotlib, umap and ipywidgets load only when their modules are used
    if name in ("viz", "adapt", "widgets", "zoo", "claims"):
        return importlib.import_module(f".{name}", __name__)
    if name == "compare_closers":
        return importlib.import_module(".adapt", __name__).compare_closers
    raise AttributeError(f"module 'modgap' has no attribute {name!r}")
