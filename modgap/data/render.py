"""Pixel work shared by the generated sets: visual domains and colours.

A generated image is described by coverage masks (``fill``: where the object
is, ``edge``: its outline) and a foreground colour. A *domain* turns that
description into pixels: ``photo`` is the training domain; ``sketch``,
``night`` and ``noisy`` are shifted renderings of the same scenes, so one
scene seen in two domains differs only in how it is drawn.
"""
from __future__ import annotations

import numpy as np

__all__ = ["COLORS", "DOMAINS", "DOMAIN_PARAMS", "compose", "domain_params", "photo_background", "to_uint8"]

# name -> RGB in [0, 1]
COLORS = {
    "red": (0.86, 0.10, 0.10),
    "green": (0.10, 0.68, 0.16),
    "blue": (0.12, 0.26, 0.90),
    "yellow": (0.96, 0.86, 0.08),
    "purple": (0.55, 0.16, 0.76),
    "orange": (1.00, 0.50, 0.04),
}

DOMAINS = ("photo", "sketch", "night", "noisy")

# How far each shifted domain moves away from ``photo``. The values were
# chosen on the bundled model with ``benchmarks/tune_domains.py`` so
# that each shift costs at least 15 points of zero-shot accuracy on every
# task yet stays above twice chance, leaving something for adaptation to win
# back (modgap/zoo/MODEL_CARD.md). A nested dict holds overrides for one set
# (``"shapes"``, ``"glyphs"``): thin digit strokes and filled shapes respond
# differently to darkness and noise, so each gets the strength that meets
# both conditions.
DOMAIN_PARAMS = {
    "photo": {},
    # outlines on paper with a pale wash inside; ``ink`` pulls stroke and
    # wash toward graphite, ``fill`` is the wash's opacity
    "sketch": {"width": 1.6, "ink": 0.78, "fill": 0.82, "shapes": {"fill": 0.9}},
    # dark, low contrast, blue cast
    "night": {"brightness": 0.43, "tint": (0.64, 0.79, 1.0), "floor": 0.05, "shapes": {"brightness": 0.55}},
    # sensor noise over washed-out colours and a wrong white balance
    "noisy": {"sigma": 0.056, "desaturate": 0.81, "shapes": {"sigma": 0.05, "desaturate": 0.3, "cast": 0.5},
              "glyphs": {"sigma": 0.10}},
}


def domain_params(domain: str, set_name: str | None = None, overrides: dict | None = None) -> dict:
    """The rendering parameters of ``domain`` for the set ``set_name``."""
    base = DOMAIN_PARAMS[domain]
    p = {k: v for k, v in base.items() if not isinstance(v, dict)}
    if set_name is not None:
        p.update(base.get(set_name, {}))
    p.update(overrides or {})
    return p


def to_uint8(img: np.ndarray) -> np.ndarray:
    img = np.clip(img, 0.0, 1.0, out=img if img.dtype == np.float32 else None)
    img *= 255.0
    img += 0.5
    return img.astype(np.uint8)


def _noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    noise = rng.standard_normal(shape, dtype=np.float32)
    noise *= sigma
    return noise


def photo_background(rng: np.random.Generator, n: int, h: int, w: int, light=(0.5, 0.95)):
    """Smooth lit backgrounds: a grey level, a linear gradient and a slight tint."""
    base = rng.uniform(*light, size=(n, 1, 1, 1)).astype(np.float32)
    tint = rng.uniform(-0.05, 0.05, size=(n, 1, 1, 3)).astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi, size=(n, 1, 1, 1)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx = (xx / (w - 1) - 0.5)[None, :, :, None]
    yy = (yy / (h - 1) - 0.5)[None, :, :, None]
    grad = 0.15 * (np.cos(ang) * xx + np.sin(ang) * yy)
    return base + tint + grad


def compose(
    fill: np.ndarray,
    edge: np.ndarray,
    fg: np.ndarray,
    domain: str,
    rng: np.random.Generator,
    bg: np.ndarray | None = None,
    params: dict | None = None,
    set_name: str | None = None,
) -> np.ndarray:
    """Render coverage masks in a visual domain.

    Parameters
    ----------
    fill, edge : float arrays [N, H, W] in [0, 1]
        Coverage of the object and of its outline.
    fg : float array [N, 3]
        Foreground colour of each object.
    domain : one of ``DOMAINS``
    rng : numpy Generator for the domain's own randomness (noise, paper)
    bg : optional float array [N, H, W, 3] or [N, 1, 1, 3]
        Background; drawn at random when omitted.
    params : overrides of ``DOMAIN_PARAMS[domain]``
    set_name : the generated set being drawn, for its own overrides

    Returns
    -------
    uint8 array [N, H, W, 3]
    """
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    p = domain_params(domain, set_name, params)
    n, h, w = fill.shape
    fg = fg[:, None, None, :].astype(np.float32)
    if domain == "sketch":
        paper = rng.uniform(0.88, 1.0, size=(n, 1, 1, 1)).astype(np.float32)
        stroke = (1 - p["ink"]) * fg + p["ink"] * 0.12
        wash = fill[..., None] * p.get("fill", 0.0)
        img = paper * (1 - wash) + stroke * wash
        a = edge[..., None]
        img = img * (1 - a) + stroke * a
        img = img + _noise(rng, img.shape, 0.01)
        return to_uint8(img)
    if bg is None:
        bg = photo_background(rng, n, h, w)
    a = fill[..., None]
    img = bg * (1 - a)
    img += fg * a
    # mild sensor noise, shared by the three channels
    img += _noise(rng, (n, h, w, 1), 0.02)
    if domain == "night":
        tint = np.asarray(p["tint"], dtype=np.float32)
        img = p["floor"] + np.clip(img, 0, 1) * p["brightness"] * tint
        img = img + _noise(rng, img.shape, 0.015)
    elif domain == "noisy":
        if p.get("desaturate"):
            grey = img.mean(axis=-1, keepdims=True)
            img = (1 - p["desaturate"]) * img + p["desaturate"] * grey
        if p.get("cast"):
            # a wrong white balance: a random gain per image and channel
            img = img * rng.uniform(1 - p["cast"], 1 + p["cast"], size=(n, 1, 1, 3)).astype(np.float32)
        img += _noise(rng, img.shape, p["sigma"])
    return to_uint8(img)
