"""Image sets and image-caption pair sets: the generated world, the packaged
real digits, and loaders for a user's own folders and caption files."""
from .containers import DEFAULT_TEMPLATES, ImageSet, PairSet
from .files import from_captions, from_coco, from_folder, read_image
from .render import COLORS, DOMAINS
from .sets import available, load, world_pairs

__all__ = [
    "ImageSet", "PairSet", "DEFAULT_TEMPLATES", "load", "available",
    "from_folder", "from_captions", "from_coco", "read_image", "DOMAINS", "COLORS", "world_pairs",
]
