"""Everyday image corruptions at five severities, in the manner of
ImageNet-C (Hendrycks & Dietterich, ICLR 2019): shifts that are not the
generated world's four domains, for measuring adaptation on data nobody
tuned on.

:func:`corrupt` applies one corruption to an :class:`~modgap.data.ImageSet`
of uint8 images (or to a uint8 array) and returns a new set named after it.
The corruptions are written here for small images with numpy and Pillow;
their kinds follow ImageNet-C's families (noise, blur, weather-like, digital)
and each grows in strength with ``severity`` (1-5), but their constants are
modgap's own, chosen for 32-pixel images, not ImageNet-C's.

:data:`HELD_OUT` and :data:`VALIDATION` split the kinds in two: settings are
chosen on the validation kinds and reported on the held-out ones.

Reference: Hendrycks, Dietterich. "Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations". ICLR 2019.
"""
from __future__ import annotations

import io

import numpy as np

from ..validation import check_choice, check_int

__all__ = ["CORRUPTIONS", "HELD_OUT", "VALIDATION", "corrupt"]


def _gaussian_noise(x, s, rng):
    return x + rng.normal(0, (0.04, 0.07, 0.10, 0.14, 0.19)[s], x.shape)


def _shot_noise(x, s, rng):
    lam = (120, 60, 30, 15, 8)[s]
    return rng.poisson(np.clip(x, 0, 1) * lam) / lam


def _impulse_noise(x, s, rng):
    p = (0.02, 0.05, 0.09, 0.14, 0.20)[s]
    out = x.copy()
    hit = rng.random(x.shape[:3]) < p
    salt = rng.random(x.shape[:3]) < 0.5
    out[hit & salt] = 1.0
    out[hit & ~salt] = 0.0
    return out


def _blur(x, radius):
    from PIL import Image, ImageFilter

    out = np.empty_like(x)
    for i, im in enumerate(x):
        pil = Image.fromarray((np.clip(im, 0, 1) * 255).astype(np.uint8))
        out[i] = np.asarray(pil.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float64) / 255
    return out


def _gaussian_blur(x, s, rng):
    return _blur(x, (0.5, 0.8, 1.1, 1.5, 2.0)[s])


def _contrast(x, s, rng):
    c = (0.6, 0.45, 0.33, 0.23, 0.15)[s]
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - mean) * c + mean


def _brightness(x, s, rng):
    return x + (0.12, 0.2, 0.28, 0.36, 0.45)[s]


def _saturate(x, s, rng):
    k = (0.4, 0.2, 0.0, 2.5, 4.0)[s]
    grey = x.mean(axis=3, keepdims=True)
    return grey + (x - grey) * k


def _fog(x, s, rng):
    n, h, w, _ = x.shape
    strength = (0.25, 0.35, 0.45, 0.55, 0.65)[s]
    coarse = rng.random((n, 4, 4))
    from PIL import Image

    haze = np.stack([np.asarray(Image.fromarray((c * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC),
                                dtype=np.float64) / 255 for c in coarse])[..., None]
    return x * (1 - strength) + strength * (0.6 + 0.4 * haze)


def _jpeg(x, s, rng):
    from PIL import Image

    quality = (30, 18, 12, 8, 5)[s]
    out = np.empty_like(x)
    for i, im in enumerate(x):
        buf = io.BytesIO()
        Image.fromarray((np.clip(im, 0, 1) * 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float64) / 255
    return out


def _pixelate(x, s, rng):
    from PIL import Image

    _, h, w, _ = x.shape
    f = (0.75, 0.6, 0.45, 0.35, 0.25)[s]
    small = (max(1, round(w * f)), max(1, round(h * f)))
    out = np.empty_like(x)
    for i, im in enumerate(x):
        pil = Image.fromarray((np.clip(im, 0, 1) * 255).astype(np.uint8))
        out[i] = np.asarray(pil.resize(small, Image.BOX).resize((w, h), Image.NEAREST), dtype=np.float64) / 255
    return out


def _spatter(x, s, rng):
    n, h, w, _ = x.shape
    p = (0.03, 0.06, 0.1, 0.15, 0.2)[s]
    drops = rng.random((n, h, w)) < p
    colour = rng.random((n, 1, 1, 3)) * 0.5
    out = x.copy()
    out[drops] = (out * 0.3 + colour)[drops]
    return out


def _invert(x, s, rng):
    # a digital shift with no ImageNet-C twin: partial negative
    a = (0.15, 0.25, 0.35, 0.45, 0.5)[s]
    return (1 - a) * x + a * (1 - x)


CORRUPTIONS = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
    "gaussian_blur": _gaussian_blur, "contrast": _contrast, "brightness": _brightness,
    "saturate": _saturate, "fog": _fog, "jpeg": _jpeg, "pixelate": _pixelate, "spatter": _spatter,
    "invert": _invert,
}
# kinds that report, and kinds that choose: no kind is in both
HELD_OUT = ("gaussian_noise", "gaussian_blur", "contrast", "jpeg", "fog", "pixelate")
VALIDATION = ("shot_noise", "impulse_noise", "brightness", "saturate", "spatter", "invert")


def corrupt(images, kind: str, severity: int = 3, seed: int = 0):
    """``images`` (an ImageSet of uint8 images, or a uint8 array
    ``[N, H, W, 3]``) with the corruption ``kind`` (one of
    :data:`CORRUPTIONS`) at ``severity`` 1-5, seeded; an ImageSet comes back
    as a new ImageSet named ``"<name>+<kind>-<severity>"``."""
    from .containers import ImageSet

    check_choice(kind, "kind", tuple(CORRUPTIONS))
    check_int(severity, "severity", min_value=1)
    if severity > 5:
        raise ValueError(f"severity must lie in 1..5, got {severity}")
    check_int(seed, "seed", min_value=0)
    arr = images.images if isinstance(images, ImageSet) else images
    arr = np.asarray(arr)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"images must hold uint8 images [N, H, W, 3] (file paths are not corrupted), "
                         f"got {arr.dtype} of shape {arr.shape}")
    rng = np.random.default_rng([seed, severity, list(CORRUPTIONS).index(kind)])
    x = arr.astype(np.float64) / 255
    out = (np.clip(CORRUPTIONS[kind](x, severity - 1, rng), 0, 1) * 255).round().astype(np.uint8)
    if not isinstance(images, ImageSet):
        return out
    return ImageSet(out, images.labels, images.classnames, images.templates,
                    name=f"{images.name}+{kind}-{severity}", task=images.task, domain=f"{kind}-{severity}")
