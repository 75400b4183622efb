"""modgap: see, measure and close the modality gap of CLIP models."""
__version__ = "0.1.0"

from . import data
from .models import Clip, ModelLoadError, load_model, pick_device

__all__ = ["Clip", "load_model", "ModelLoadError", "pick_device", "data", "__version__"]
