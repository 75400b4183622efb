"""The on-disk embedding cache.

An entry is keyed by a fingerprint of the model's weights, of the inputs and
of the preprocessing, so a changed model, image or transform never hits an
old entry. Each entry stores its key and a checksum of its array; an entry
that fails to load, or whose key or checksum does not match, is recomputed
and rewritten, never returned. Writes go to a temporary file that is then
moved into place, so a crash never leaves half an entry.
"""
from __future__ import annotations

import hashlib
import os
import warnings
import weakref
from pathlib import Path

import numpy as np
import torch

from .io import atomic_write

__all__ = ["EmbeddingCache", "fingerprint_inputs", "fingerprint_model"]


def _h(*parts) -> str:
    h = hashlib.blake2b(digest_size=20)
    for p in parts:
        h.update(p if isinstance(p, (bytes, memoryview)) else str(p).encode())
        h.update(b"\x1f")
    return h.hexdigest()


_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_CHUNK = 1 << 22
# model -> (checksums of its tensors, fingerprint); entries go when the model does
_model_fp: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, str]] = weakref.WeakKeyDictionary()


def _bits(t: torch.Tensor) -> torch.Tensor:
    """A flat integer view of a tensor's bytes (0-d tensors included)."""
    t = t.detach().reshape(-1)
    if t.is_complex():
        t = torch.view_as_real(t).reshape(-1)
    if t.dtype == torch.bool:
        return t.view(torch.uint8)
    return t.view(_INT_OF_SIZE[t.element_size()])


def _full_hash(state) -> str:
    h = hashlib.blake2b(digest_size=20)
    for k, v in state.items():
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}".encode())
        if v.numel():
            h.update(_bits(v).to("cpu").numpy())
    return h.hexdigest()


def _device_checksums(state) -> tuple:
    """Exact integer sums of every tensor's bits, plain and weighted by
    position, computed where the tensors live: a change to any value,
    through ``.data`` or not, moves them."""
    weights, sums = {}, []
    for v in state.values():
        b = _bits(v)
        w = weights.get(b.device)
        if w is None:
            w = weights[b.device] = torch.arange(1, _CHUNK + 1, dtype=torch.int64, device=b.device)
        weighted = torch.zeros((), dtype=torch.int64, device=b.device)
        for i in range(0, b.numel(), _CHUNK):
            c = b[i:i + _CHUNK]
            weighted += (c.to(torch.int64) * w[:c.numel()]).sum()
        sums.append(torch.stack([b.sum(dtype=torch.int64), weighted]).cpu())
    return tuple(torch.cat(sums).tolist()) if sums else ()


def _in_host_memory(state) -> bool:
    return all(v.device.type == "cpu" for v in state.values())


def fingerprint_model(model: torch.nn.Module) -> str:
    """A hash of the name, dtype, shape and bytes of every parameter and buffer.

    Weights in CPU memory are hashed on every call (hashing is faster there
    than any cheaper check). Weights on an accelerator are summed on the
    device first, and hashed again only when those sums moved, so a cache
    hit does not copy the whole model to the host.
    """
    state = model.state_dict()
    if _in_host_memory(state):
        return _full_hash(state)
    try:
        sig = (tuple((k, str(v.dtype), tuple(v.shape)) for k, v in state.items()), _device_checksums(state))
    except (RuntimeError, TypeError):  # an int64 reduction the device lacks: hash every time
        return _full_hash(state)
    hit = _model_fp.get(model)
    if hit is not None and hit[0] == sig:
        return hit[1]
    fp = _full_hash(state)
    _model_fp[model] = (sig, fp)
    return fp


def fingerprint_inputs(kind: str, items) -> str:
    """A hash of the inputs: pixels for arrays and images, path, size and
    modification time for files, the strings for texts."""
    if kind == "uint8":
        return _h(kind, items.shape, memoryview(np.ascontiguousarray(items)).cast("B"))
    if kind == "tensor":
        return _h(kind, tuple(items.shape), str(items.dtype), memoryview(_bits(items).to("cpu").numpy()))
    if kind == "pil":
        h = hashlib.blake2b(digest_size=20)
        for im in items:
            h.update(f"{im.mode}{im.size}".encode())
            h.update(im.tobytes())
        return h.hexdigest()
    if kind == "paths":
        parts = []
        for p in items:
            try:
                st = os.stat(p)
                parts.append(f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}")
            except OSError:
                parts.append(f"{p}|missing")
        return _h(kind, "\n".join(parts))
    if kind == "texts":
        return _h(kind, "\x00".join(items))
    raise ValueError(kind)


class EmbeddingCache:
    """A folder of ``.npz`` entries, one per (model, inputs, settings) key."""

    def __init__(self, directory):
        self.directory = Path(directory).expanduser()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def key(self, *parts) -> str:
        return _h(*parts)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.npz"

    def get(self, key: str, n_rows: int | None = None) -> np.ndarray | None:
        """The stored array, or ``None`` if absent, corrupt or stale."""
        entry = self.get_entry(key, n_rows, stacklevel=4)
        return None if entry is None else entry[0]

    def get_entry(self, key: str, n_rows: int | None = None, stacklevel: int = 3):
        """``(embeddings, positions)`` as stored by :meth:`put` (the positions
        the first run noted: files left out, texts cut), or ``None`` if the
        entry is absent, corrupt, stale, or older than positions."""
        p = self.path(key)
        if not p.exists():
            self.misses += 1
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                emb, positions = z["embeddings"], z["positions"]
                ok = str(z["key"]) == key and str(z["checksum"]) == _h(emb.tobytes(), positions.tobytes())
            if not ok or (n_rows is not None and emb.shape[0] != n_rows):
                raise ValueError("key, checksum or shape mismatch")
        except Exception as e:  # noqa: BLE001 - an unreadable entry is recomputed, never returned
            warnings.warn(f"embedding cache entry {p.name} is corrupt ({e}); recomputing", stacklevel=stacklevel)
            self.misses += 1
            return None
        self.hits += 1
        return emb, positions

    def put(self, key: str, emb: np.ndarray, positions=()) -> Path:
        """Store ``emb`` under ``key``, with the ``positions`` (row indices)
        a cached answer must report as the first one did."""
        positions = np.asarray(positions, dtype=np.int64)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, embeddings=emb, positions=positions, key=np.array(key),
                         checksum=np.array(_h(emb.tobytes(), positions.tobytes())))

        return atomic_write(self.path(key), write, overwrite=True)
