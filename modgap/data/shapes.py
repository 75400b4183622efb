"""The generated shapes world: coloured shapes with captions, in four domains.

Every image holds one shape of one colour, small or large, in the centre or a
corner. Shapes are drawn from signed distance functions, vectorised over the
whole batch, so thousands of images render per second on one core and the
same seed always gives the same pixels.
"""
from __future__ import annotations

import numpy as np

from .render import COLORS, compose, domain_params

__all__ = [
    "CAPTION_TEMPLATES",
    "COLOR_TEMPLATES",
    "POSITIONS",
    "SHAPES",
    "SHAPE_TEMPLATES",
    "SIZES",
    "captions_for",
    "render_shapes",
    "sample_scenes",
]

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star")
SIZES = ("small", "large")
POSITIONS = {
    "in the center": (0.5, 0.5),
    "in the top left": (0.3, 0.3),
    "in the top right": (0.7, 0.3),
    "in the bottom left": (0.3, 0.7),
    "in the bottom right": (0.7, 0.7),
}

SHAPE_TEMPLATES = (
    "a photo of a {}.",
    "a {}.",
    "a picture of a {} shape.",
    "a drawing of a {}.",
)
COLOR_TEMPLATES = (
    "a photo of something {}.",
    "a {} shape.",
    "something {}.",
    "a picture of a {} object.",
)
# Captions vary in how much they say, as web captions do: some name every
# attribute, some only the shape or only the colour.
CAPTION_TEMPLATES = (
    "a photo of a {size} {color} {shape} {where}.",
    "a {color} {shape} {where}.",
    "a {size} {color} {shape}.",
    "a picture of a {color} {shape}.",
    "a {size} {shape} coloured {color}, {where}.",
    "there is a {color} {shape} {where} of the image.",
    "a photo of a {shape}.",
    "a drawing of a {shape} {where}.",
    "something {color}.",
    "a {color} shape {where}.",
)


def _sdf(shape: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance (inside < 0) in units of the shape's radius."""
    name = SHAPES[shape]
    if name == "circle":
        return np.sqrt(x * x + y * y) - 0.95
    if name == "square":
        return _box(x, y, 0.8, 0.8)
    if name == "diamond":
        return (np.abs(x) + np.abs(y) - 1.05) / np.sqrt(2.0)
    if name == "cross":
        return np.minimum(_box(x, y, 1.0, 0.32), _box(x, y, 0.32, 1.0))
    if name == "triangle":
        return _triangle(x, y + 0.15, 1.05)
    if name == "star":
        theta = np.arctan2(y, x) + np.pi / 2
        t = (theta * 5 / (2 * np.pi)) % 1.0
        tip = 1.0 - 2.0 * np.abs(t - 0.5)  # 1 at the five tips, 0 between
        radius = 0.45 + 0.62 * (1 - tip) ** 2
        return (np.sqrt(x * x + y * y) - radius) * 0.8
    raise ValueError(name)


def _box(x, y, bx, by):
    qx, qy = np.abs(x) - bx, np.abs(y) - by
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _triangle(x, y, r):
    """Equilateral triangle pointing up (image y grows downward)."""
    k = np.sqrt(3.0)
    y = -y
    px = np.abs(x) - r
    py = y + r / k
    flip = px + k * py > 0
    px2 = np.where(flip, (px - k * py) / 2, px)
    py2 = np.where(flip, (-k * px - py) / 2, py)
    px2 = px2 - np.clip(px2, -2 * r, 0)
    return -np.sqrt(px2 * px2 + py2 * py2) * np.sign(py2)


def sample_scenes(n: int, rng: np.random.Generator) -> dict:
    """Draw the content of ``n`` scenes: shape, colour, size and position."""
    pos_names = list(POSITIONS)
    return {
        "shape": rng.integers(len(SHAPES), size=n),
        "color": rng.integers(len(COLORS), size=n),
        "size": rng.integers(len(SIZES), size=n),
        "position": rng.integers(len(pos_names), size=n),
        "angle": rng.uniform(-0.3, 0.3, size=n),
        "jitter": rng.uniform(-0.04, 0.04, size=(n, 2)),
        "color_jitter": rng.uniform(-0.07, 0.07, size=(n, 3)),
    }


def render_shapes(
    scenes: dict,
    domain: str,
    rng: np.random.Generator,
    image_size: int = 32,
    params: dict | None = None,
) -> np.ndarray:
    """Render sampled scenes in ``domain``; returns uint8 ``[N, S, S, 3]``."""
    n = len(scenes["shape"])
    s = image_size
    pos = np.array(list(POSITIONS.values()), dtype=np.float32)[scenes["position"]]
    centre = (pos + scenes["jitter"]) * s
    radius = np.where(scenes["size"] == 1, 0.26, 0.16).astype(np.float32) * s
    # a large shape cannot sit in a corner without leaving the frame: pull it in
    centre = np.clip(centre, radius[:, None] + 1, s - radius[:, None] - 1).astype(np.float32)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
    dx = (xx[None] - centre[:, 0, None, None]) / radius[:, None, None]
    dy = (yy[None] - centre[:, 1, None, None]) / radius[:, None, None]
    angle = scenes["angle"].astype(np.float32)
    c, sn = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    x, y = c * dx + sn * dy, c * dy - sn * dx
    dist = np.empty((n, s, s), dtype=np.float32)
    for k in range(len(SHAPES)):
        m = scenes["shape"] == k
        if m.any():
            dist[m] = _sdf(k, x[m], y[m])
    dist_px = dist * radius[:, None, None]
    fill = np.clip(np.float32(0.5) - dist_px, 0.0, 1.0)
    width = domain_params("sketch", "shapes", params)["width"] if domain == "sketch" else 1.6
    edge = np.clip(width / 2 + 0.5 - np.abs(dist_px), 0.0, 1.0)
    palette = np.array(list(COLORS.values()), dtype=np.float32)
    fg = np.clip(palette[scenes["color"]] + scenes["color_jitter"], 0, 1)
    return compose(fill, edge, fg, domain, rng, params=params, set_name="shapes")


def captions_for(scenes: dict, rng: np.random.Generator, per_image: int = 5) -> list[list[str]]:
    """``per_image`` distinct captions for every scene."""
    colors, pos_names = list(COLORS), list(POSITIONS)
    n = len(scenes["shape"])
    out = []
    for i in range(n):
        fields = {
            "shape": SHAPES[scenes["shape"][i]],
            "color": colors[scenes["color"][i]],
            "size": SIZES[scenes["size"][i]],
            "where": pos_names[scenes["position"][i]],
        }
        picks = rng.choice(len(CAPTION_TEMPLATES), size=per_image, replace=False)
        out.append([CAPTION_TEMPLATES[j].format(**fields) for j in picks])
    return out
