"""Images and texts to embeddings: input handling, batching, AMP on GPU,
progress bars, and the optional on-disk cache (:mod:`modgap.cache`).

The :class:`modgap.Clip` methods are the front door; the functions here are
the pieces they are made of.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "PROGRESS_MIN",
    "autocast_for",
    "fast_path_ok",
    "image_inputs",
    "normalize_stats",
    "pixels_to_tensor",
]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# below this many items a progress bar is more noise than help
PROGRESS_MIN = 2048


def pixels_to_tensor(images: np.ndarray, mean=OPENAI_MEAN, std=OPENAI_STD, device="cpu") -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` -> normalised float ``[N, 3, H, W]``.

    The same numbers as open_clip's eval transform (``ToTensor`` then
    ``Normalize``) when the images already have the model's input size, for
    which ``Resize`` and ``CenterCrop`` are the identity.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return x.sub_(m).div_(s)


def normalize_stats(preprocess) -> tuple[tuple, tuple] | None:
    """The ``Normalize`` mean and std of a torchvision ``Compose``, if any."""
    for t in getattr(preprocess, "transforms", []):
        if type(t).__name__ == "Normalize":
            return tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std)
    return None


_IDENTITY_AT_SIZE = {"Resize", "CenterCrop", "MaybeConvertMode", "MaybeToTensor", "ToTensor",
                     "Normalize", "_convert_to_rgb", "function"}


def fast_path_ok(preprocess, image_size, hw) -> bool:
    """Whether uint8 arrays of spatial size ``hw`` may skip PIL: every step of
    the transform is a resize or crop to the size they already have, a
    conversion to tensor, or ``Normalize``."""
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if tuple(hw) != tuple(image_size) or normalize_stats(preprocess) is None:
        return False
    for t in getattr(preprocess, "transforms", [None]):
        name = type(t).__name__
        if name == "function":
            name = getattr(t, "__name__", name)
        if name not in _IDENTITY_AT_SIZE:
            return False
        if name == "Resize" and getattr(t, "max_size", None) is not None:
            return False
        if name in ("Resize", "CenterCrop") and not _same_size(getattr(t, "size", None), hw):
            return False
    return True


def _same_size(size, hw) -> bool:
    """Whether a torchvision ``size`` (an int for the shorter edge, or
    ``(h, w)``) leaves a ``hw`` image as it is."""
    if isinstance(size, int):
        return min(hw) == size and hw[0] == hw[1]
    if isinstance(size, (list, tuple)):
        if len(size) == 1:
            return min(hw) == size[0] and hw[0] == hw[1]
        return tuple(size) == tuple(hw)
    return False


def image_inputs(images):
    """Sort an ``images`` argument into ``(kind, items)``.

    kind is one of ``"uint8"`` (a numpy array [N, H, W, 3]), ``"tensor"``
    (a float tensor [N, 3, H, W], taken as already preprocessed), ``"pil"``
    (a list of PIL images) or ``"paths"`` (a list of file paths).
    """
    from .data.containers import ImageSet, PairSet

    if isinstance(images, (ImageSet, PairSet)):
        images = images.images
    if isinstance(images, torch.Tensor):
        if images.dtype == torch.uint8:
            images = images.cpu().numpy()
        else:
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(
                    f"images: a float tensor must be preprocessed, of shape [N, 3, H, W]; got {tuple(images.shape)}"
                )
            return "tensor", images
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"images: a numpy array must be uint8 [N, H, W, 3]; got {images.dtype} {images.shape}"
            )
        if len(images) == 0:
            raise ValueError("images is empty")
        return "uint8", images
    if isinstance(images, (str, Path)):
        raise TypeError("images: give a list of paths, not a single path")
    if isinstance(images, Sequence) or hasattr(images, "__iter__"):
        items = list(images)
        if not items:
            raise ValueError("images is empty")
        if all(isinstance(i, (str, Path)) for i in items):
            return "paths", [Path(i) for i in items]
        from PIL import Image

        if all(isinstance(i, Image.Image) for i in items):
            return "pil", items
    raise TypeError(
        "images must be an ImageSet or PairSet, a uint8 array [N, H, W, 3], a preprocessed float "
        f"tensor [N, 3, H, W], a list of PIL images or a list of file paths; got {type(images).__name__}"
    )


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA where supported (else fp16), nothing elsewhere."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def read_images_skipping(paths: list[Path]):
    """Decode files; returns the PIL images and the indices of those that
    could not be read (named together in one warning)."""
    from .data.files import read_images, warn_unreadable

    good, bad = read_images(paths)
    warn_unreadable([paths[i] for i in bad], len(paths), "Clip.encode_images",
                    "; their rows are left out of the result", stacklevel=3)
    return good, bad