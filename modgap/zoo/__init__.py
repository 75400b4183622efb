"""The bundled small CLIP, ``modgap-tiny``: its config (JSON, as open_clip
keeps its own), its weights, the script that trained it (``train``) and the
script that measures it (``report``)."""
from __future__ import annotations

from pathlib import Path

__all__ = ["ZOO_DIR", "BUNDLED", "config_path", "weights_path", "register"]

ZOO_DIR = Path(__file__).resolve().parent
BUNDLED = ("modgap-tiny",)


def config_path(name: str = "modgap-tiny") -> Path:
    return ZOO_DIR / f"{name}.json"


def weights_path(name: str = "modgap-tiny") -> Path:
    return ZOO_DIR / f"{name}.safetensors"


_registered = False


def register() -> None:
    """Make the bundled configs known to open_clip, so that
    ``open_clip.create_model("modgap-tiny", pretrained=weights_path())`` works."""
    global _registered
    if _registered:
        return
    import open_clip

    for name in BUNDLED:
        open_clip.add_model_config(config_path(name))
    _registered = True
