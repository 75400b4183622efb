"""The bundled small CLIP, ``modgap-tiny``: its config (JSON, as open_clip
keeps its own), its weights, its model card and the tables measured on it.

A registry only, at the bottom of the import graph: it imports no other
modgap module. The script that trained the model is ``python -m
modgap.pretrain``; the one that measures it is ``python -m modgap.evaluate``."""
from __future__ import annotations

from pathlib import Path

__all__ = ["BUNDLED", "ZOO_DIR", "config_path", "register", "results_table", "weights_path"]

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


def results_table(name: str):
    """A table measured on the bundled model and shipped with it
    (``modgap/zoo/results/NAME.csv``), as shown in the model card."""
    import pandas as pd

    path = ZOO_DIR / "results" / f"{name}.csv"
    if not path.exists():
        known = sorted(p.stem for p in (ZOO_DIR / "results").glob("*.csv"))
        raise FileNotFoundError(f"no results table {name!r} in {path.parent}; known: {known}")
    return pd.read_csv(path)
