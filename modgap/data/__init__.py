"""Image sets and image-caption pair sets: the generated world, the packaged
real digits, standard benchmarks by name, and loaders for a user's own
folders and caption files."""
from .benchmarks import BENCHMARKS, load_benchmark
from .containers import DEFAULT_TEMPLATES, ImageSet, PairSet
from .files import from_captions, from_coco, from_folder, read_image
from .render import COLORS, DOMAINS
from .sets import available, load, world_pairs

__all__ = [
    "BENCHMARKS",
    "COLORS",
    "DEFAULT_TEMPLATES",
    "DOMAINS",
    "ImageSet",
    "PairSet",
    "available",
    "from_captions",
    "from_coco",
    "from_folder",
    "load",
    "load_benchmark",
    "read_image",
    "world_pairs",
]
