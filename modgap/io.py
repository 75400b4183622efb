"""Writing files safely: every write goes to a temporary file or folder
beside its target and is moved into place in one step, so a crash never
leaves half a file, nor a folder that mixes two runs; nothing that exists is
replaced unless asked."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

__all__ = ["MANIFEST_FILE", "RUN_FILE", "atomic_folder", "atomic_write", "atomic_write_text", "check_free_folder",
           "check_manifest", "save_state_dict", "write_manifest"]

# the file that marks a folder written by an estimator's save()
RUN_FILE = "estimator.json"
# the list of a saved folder's files, with their sizes and hashes
MANIFEST_FILE = "manifest.json"


def _temp_prefix(path: Path) -> str:
    # the writer's pid in the name lets a later save tell a dead writer's leftovers from a live one's
    return f".{path.name}.{os.getpid()}."


def _remove_leftovers(path: Path) -> None:
    """Temporary files and folders of earlier saves to ``path`` whose process
    is gone (killed mid-save) are removed."""
    for stale in path.parent.glob(f".{_glob_escape(path.name)}.*"):
        parts = stale.name[len(path.name) + 2:].split(".")
        if not parts or not parts[0].isdigit() or stale.suffix not in (".tmp", ".old"):
            continue
        if _alive(int(parts[0])):
            continue
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _glob_escape(name: str) -> str:
    """``name`` with glob's special characters taken literally."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _as_created(path: Path, mode: int) -> None:
    # mkstemp and mkdtemp create 0600 / 0700; a saved file gets what open() would give it
    os.chmod(path, mode & ~_umask())


def atomic_write(path, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then move it
    into place. An existing ``path`` is an error unless ``overwrite=True``;
    a failed write leaves ``path`` as it was and no temporary file behind."""
    path = Path(path).expanduser()
    _refuse_existing(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        _as_created(Path(tmp), 0o666)
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
    replaced, so a user's other files are never deleted. The folder gets a
    :data:`MANIFEST_FILE` (see :func:`write_manifest`), and leftovers of an
    earlier save to ``path`` that was killed are removed first.
    """
    path = check_free_folder(path, overwrite, marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp"))
    try:
        _as_created(tmp, 0o777)
        yield tmp
        write_manifest(tmp)
        if path.is_dir() and any(path.iterdir()):
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".old"))
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


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder) -> Path:
    """Write :data:`MANIFEST_FILE` into ``folder``: every other file below it
    with its size and content hash, and the modgap version that wrote them."""
    from . import __version__

    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "blake2b": _digest(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST_FILE}
    target = folder / MANIFEST_FILE
    target.write_text(json.dumps({"modgap": __version__, "files": files}, indent=1), encoding="utf-8")
    return target


def check_manifest(folder, required: bool = True) -> None:
    """Check that the files of ``folder`` are those its manifest lists, with
    the same sizes and hashes: a ``ValueError`` names the first file that
    is missing or differs (a folder mixing two saves, or a file changed by
    hand). Without a manifest: an error if ``required``, else nothing."""
    folder = Path(folder)
    manifest = folder / MANIFEST_FILE
    if not manifest.is_file():
        if required:
            raise ValueError(f"{folder} has no {MANIFEST_FILE}, so its files cannot be checked to belong "
                             "together; save it again with this version of modgap")
        return
    try:
        listed = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{manifest} cannot be read ({e}); save the run again") from None
    for rel, entry in listed.items():
        p = folder / rel
        if not p.is_file():
            raise ValueError(f"{folder}: {rel} is missing though {MANIFEST_FILE} lists it; the folder is "
                             "incomplete: save the run again")
        if p.stat().st_size != entry["bytes"] or _digest(p) != entry["blake2b"]:
            raise ValueError(f"{folder}: {rel} is not the file this run saved (its size or content differs "
                             f"from {MANIFEST_FILE}); it may come from another save: save the run again")
