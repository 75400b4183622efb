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
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

__all__ = ["EmbeddingCache", "fingerprint_model", "fingerprint_inputs"]


def _h(*parts) -> str:
    h = hashlib.blake2b(digest_size=20)
    for p in parts:
        h.update(p if isinstance(p, (bytes, memoryview)) else str(p).encode())
        h.update(b"\x1f")
    return h.hexdigest()


_model_fp: dict[int, tuple[tuple, str]] = {}


def fingerprint_model(model: torch.nn.Module) -> str:
    """A hash of every parameter and buffer. Recomputed only when a tensor
    was modified in place (its version counter moved) or replaced."""
    state = model.state_dict()
    sig = tuple((k, v.data_ptr(), v._version) for k, v in state.items())
    hit = _model_fp.get(id(model))
    if hit is not None and hit[0] == sig:
        return hit[1]
    h = hashlib.blake2b(digest_size=20)
    for k, v in state.items():
        h.update(k.encode())
        t = v.detach().to("cpu").contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    fp = h.hexdigest()
    _model_fp[id(model)] = (sig, fp)
    return fp


def fingerprint_inputs(kind: str, items) -> str:
    """A hash of the inputs: pixels for arrays and images, path, size and
    modification time for files, the strings for texts."""
    if kind == "uint8":
        return _h(kind, items.shape, memoryview(np.ascontiguousarray(items)).cast("B"))
    if kind == "tensor":
        t = items.detach().to("cpu").contiguous()
        return _h(kind, tuple(t.shape), str(t.dtype), t.view(torch.uint8).numpy().tobytes())
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
        p = self.path(key)
        if not p.exists():
            self.misses += 1
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                emb = z["embeddings"]
                ok = str(z["key"]) == key and str(z["checksum"]) == _h(emb.tobytes())
            if not ok or (n_rows is not None and emb.shape[0] != n_rows):
                raise ValueError("key, checksum or shape mismatch")
        except Exception as e:  # unreadable entry: recompute, never return it
            warnings.warn(f"embedding cache entry {p.name} is corrupt ({e}); recomputing", stacklevel=3)
            self.misses += 1
            return None
        self.hits += 1
        return emb

    def put(self, key: str, emb: np.ndarray) -> Path:
        p = self.path(key)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, embeddings=emb, key=np.array(key), checksum=np.array(_h(emb.tobytes())))
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return p
