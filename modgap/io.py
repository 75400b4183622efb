"""Saving weights safely: atomic writes, and no silent overwrites."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

__all__ = ["atomic_write_text", "save_state_dict"]


def _tmp_beside(path: Path, suffix: str) -> str:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    return tmp


def save_state_dict(model: torch.nn.Module, path, overwrite: bool = False, dtype=None) -> Path:
    """Write ``model.state_dict()`` to ``path`` (``.safetensors``, or a torch
    file for any other suffix), through a temporary file moved into place.

    An existing file is an error unless ``overwrite=True``.
    """
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu")
        state[k] = (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
    tmp = _tmp_beside(path, ".tmp")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, tmp, metadata={"format": "pt"})
        else:
            torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path, text: str, overwrite: bool = True) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_beside(path, ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path
