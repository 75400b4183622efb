"""Rendered digits: 0-9 from the fonts found on the machine, with varied
stroke widths, slants, scales and elastic distortions, in the same visual
domains as the shapes world.

Fonts: every DejaVu TrueType face under ``/usr/share/fonts/truetype/dejavu``
(Debian's ``fonts-dejavu-core``) and Pillow's built-in font, which needs no
file. The set of faces is what makes two machines agree: the same fonts and
seed give the same pixels.
"""
from __future__ import annotations

import functools
import glob
import os

import numpy as np

from .render import COLORS, compose

__all__ = [
    "DIGIT_NAMES",
    "DIGIT_TEMPLATES",
    "font_files",
    "glyph_captions",
    "render_glyphs",
    "sample_glyphs",
]

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_TEMPLATES = (
    "a photo of the number {}.",
    "the number {}.",
    "a picture of a {}.",
    "a written {}.",
)
_CAPTIONS = (
    "a photo of the number {word}.",
    "the number {word}.",
    "the digit {digit}.",
    "a picture of a {word}.",
    "a written {word}.",
    "a {color} {word} on a {bg} background.",
    "the digit {digit} written in {color}.",
    "a photo of the digit {digit}, {style}.",
)
FONT_DIR = "/usr/share/fonts/truetype/dejavu"
_MASK = 64  # glyphs are warped at twice the output size, then averaged down


def font_files() -> list[str]:
    """The TrueType faces used for rendering, sorted for reproducibility."""
    files = sorted(glob.glob(os.path.join(FONT_DIR, "DejaVu*.ttf")))
    return [f for f in files if "Math" not in f and "ExtraLight" not in f]


@functools.lru_cache(maxsize=2)
def _glyph_masks(size: int = _MASK) -> np.ndarray:
    """Coverage masks ``[F, 10, T, size, size]`` for every font, digit and
    stroke thickness (T: thinned once, as drawn, thickened once or twice)."""
    import torch
    import torch.nn.functional as F
    from PIL import Image, ImageDraw, ImageFont

    fonts = [ImageFont.truetype(f, size=int(size * 0.72)) for f in font_files()]
    try:
        fonts.append(ImageFont.load_default(size=int(size * 0.72)))
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        pass
    masks = np.zeros((len(fonts), 10, size, size), dtype=np.float32)
    for fi, font in enumerate(fonts):
        for d in range(10):
            canvas = Image.new("L", (size, size), 0)
            draw = ImageDraw.Draw(canvas)
            l, t, r, b = draw.textbbox((0, 0), str(d), font=font)
            draw.text(((size - (r - l)) / 2 - l, (size - (b - t)) / 2 - t), str(d), fill=255, font=font)
            masks[fi, d] = np.asarray(canvas, dtype=np.float32) / 255.0
    m = torch.from_numpy(masks).view(-1, 1, size, size)
    variants = [-F.max_pool2d(-m, 3, 1, 1), m]
    cur = m
    for _ in range(2):
        cur = F.max_pool2d(cur, 3, 1, 1)
        variants.append(cur)
    out = torch.stack(variants, dim=1).view(len(fonts), 10, len(variants), size, size)
    return out.numpy()


def sample_glyphs(n: int, rng: np.random.Generator) -> dict:
    """Draw ``n`` glyph scenes: digit, font, thickness, pose and style."""
    masks = _glyph_masks()
    n_fonts, _, n_thick = masks.shape[:3]
    return {
        "digit": rng.integers(10, size=n),
        "font": rng.integers(n_fonts, size=n),
        "thickness": rng.integers(n_thick, size=n),
        "scale": rng.uniform(0.8, 1.15, size=n),
        "angle": rng.uniform(-0.25, 0.25, size=n),
        "shear": rng.uniform(-0.35, 0.35, size=n),
        "shift": rng.uniform(-0.1, 0.1, size=(n, 2)),
        "elastic": rng.normal(0, 1, size=(n, 2, 4, 4)),
        "elastic_amp": rng.uniform(0.0, 0.08, size=n),
        # 0: coloured ink on a lit background, 1: grey ink on a plain
        # background, 2: as 1 but seen at low resolution (blurred)
        "style": rng.choice(3, size=n, p=[0.5, 0.32, 0.18]),
        "color": rng.integers(len(COLORS) + 1, size=n),  # last: black ink
        "invert": rng.random(n) < 0.6,  # light ink on a dark ground
        "ink": rng.uniform(0.85, 1.0, size=n),
        "ground": rng.uniform(0.0, 0.15, size=n),
    }


def _warp(scenes: dict, image_size: int):
    import torch
    import torch.nn.functional as F

    masks = _glyph_masks()
    src = torch.from_numpy(
        masks[scenes["font"], scenes["digit"], scenes["thickness"]]
    )[:, None]
    n = src.shape[0]
    a, sh, sc = (torch.from_numpy(np.asarray(scenes[k], dtype=np.float32)) for k in ("angle", "shear", "scale"))
    cos, sin = torch.cos(a), torch.sin(a)
    # output -> input coordinates: inverse of scale, rotation and shear
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos / sc
    theta[:, 0, 1] = (-sin + sh) / sc
    theta[:, 1, 0] = sin / sc
    theta[:, 1, 1] = cos / sc
    theta[:, :, 2] = torch.from_numpy(scenes["shift"].astype(np.float32))
    size = 2 * image_size
    grid = F.affine_grid(theta, (n, 1, size, size), align_corners=False)
    field = torch.from_numpy(scenes["elastic"].astype(np.float32))
    field = F.interpolate(field, size=(size, size), mode="bicubic", align_corners=True)
    amp = torch.from_numpy(scenes["elastic_amp"].astype(np.float32))[:, None, None, None]
    grid = grid + (field * amp).permute(0, 2, 3, 1)
    warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    edge = (F.max_pool2d(warped, 3, 1, 1) + F.max_pool2d(-warped, 3, 1, 1)).clamp(0, 1)
    fill = F.avg_pool2d(warped, 2)
    edge = F.avg_pool2d(edge, 2).clamp(0, 1) * 1.6
    low = torch.from_numpy(scenes["style"] == 2)
    if low.any():
        small = F.avg_pool2d(fill[low], 4)
        fill[low] = F.interpolate(small, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return fill[:, 0].numpy(), edge[:, 0].clamp(0, 1).numpy()


def render_glyphs(scenes: dict, domain: str, rng: np.random.Generator, image_size: int = 32,
                  params: dict | None = None) -> np.ndarray:
    """Render sampled glyph scenes in ``domain``; uint8 ``[N, S, S, 3]``."""
    fill, edge = _warp(scenes, image_size)
    n = len(fill)
    palette = np.array(list(COLORS.values()) + [(0.08, 0.08, 0.08)], dtype=np.float32)
    fg = palette[scenes["color"]]
    grey = scenes["style"] > 0
    ink = scenes["ink"].astype(np.float32)
    ground = scenes["ground"].astype(np.float32)
    inv = scenes["invert"]
    grey_fg = np.where(inv, ink, 1 - ink)[:, None].repeat(3, 1)
    grey_bg = np.where(inv, ground, 1 - ground)[:, None].repeat(3, 1)
    fg = np.where(grey[:, None], grey_fg, fg).astype(np.float32)
    bg = None
    if grey.any():
        from .render import photo_background

        bg = photo_background(rng, n, image_size, image_size)
        flat = np.broadcast_to(grey_bg[:, None, None, :], bg.shape)
        bg = np.where(grey[:, None, None, None], flat, bg).astype(np.float32)
    return compose(fill, edge, fg, domain, rng, bg=bg, params=params, set_name="glyphs")


def glyph_captions(scenes: dict, rng: np.random.Generator, per_image: int = 5) -> list[list[str]]:
    colors = list(COLORS) + ["black"]
    out = []
    for i in range(len(scenes["digit"])):
        d = int(scenes["digit"][i])
        if scenes["style"][i] == 0:
            color, bg = colors[scenes["color"][i]], "light"
            style = "printed in colour"
        else:
            color = "white" if scenes["invert"][i] else "black"
            bg = "black" if scenes["invert"][i] else "white"
            style = "blurry" if scenes["style"][i] == 2 else "in black and white"
        fields = {"digit": d, "word": DIGIT_NAMES[d], "color": color, "bg": bg, "style": style}
        picks = rng.choice(len(_CAPTIONS), size=per_image, replace=False)
        out.append([_CAPTIONS[j].format(**fields) for j in picks])
    return out
