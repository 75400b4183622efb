"""Writing files safely: every write goes to a temporary file or folder
beside its target and is moved into place in one step, so a crash never
leaves half a file, nor a folder that mixes two runs; nothing that exists is
replaced unless asked."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

__all__ = ["RUN_FILE", "atomic_folder", "atomic_write", "atomic_write_text", "check_free_folder", "save_state_dict"]

# the file that marks a folder written by an estimator's save()
RUN_FILE = "estimator.json"


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")


def atomic_write(path, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then move it
    into place. An existing ``path`` is an error unless ``overwrite=True``;
    a failed write leaves ``path`` as it was and no temporary file behind."""
    path = Path(path).expanduser()
    _refuse_existing(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path, text: str, overwrite: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite)


def save_state_dict(model: torch.nn.Module, path, overwrite: bool = False, dtype=None,
                    metadata: dict | None = None) -> Path:
    """Write ``model.state_dict()`` to ``path`` (``.safetensors``, with
    ``metadata``, or a torch file for any other suffix) atomically; floating
    tensors are cast to ``dtype`` where one is given.

    An existing file is an error unless ``overwrite=True``.
    """
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu")
        state[k] = (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()

    def write(tmp: Path) -> None:
        if Path(path).suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata={"format": "pt", **(metadata or {})})
        else:
            torch.save(state, tmp)

    return atomic_write(path, write, overwrite=overwrite)


def check_free_folder(path, overwrite: bool = False, marker: str | None = None) -> Path:
    """``path`` as a ``Path`` if :func:`atomic_folder` may write there: it
    does not exist, is an empty folder, or (with ``overwrite=True``) a
    folder that holds ``marker``; a ``FileExistsError`` says why not.
    Call it before long work, so a bad output path fails first."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder; choose another path")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{path} is not empty; pass overwrite=True to replace it")
        if marker is not None and not (path / marker).is_file():
            raise FileExistsError(f"{path} holds files modgap did not write (no {marker}); "
                                  "choose a new or empty folder")
    return path


@contextlib.contextmanager
def atomic_folder(path, overwrite: bool = False, marker: str | None = None) -> Iterator[Path]:
    """Write a folder as a whole: yields an empty temporary folder beside
    ``path``; when the block ends without an error it replaces ``path`` in
    one rename, and on an error it is removed and ``path`` is untouched.

    A ``path`` that holds files is an error unless ``overwrite=True``; with
    ``marker``, only a folder holding that file (one modgap wrote) is ever
    replaced, so a user's other files are never deleted.
    """
    path = check_free_folder(path, overwrite, marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.is_dir() and any(path.iterdir()):
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if path.is_dir():
                path.rmdir()
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
