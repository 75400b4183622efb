"""The embedding engine: images and texts to embeddings.

Every input kind :meth:`modgap.Clip.encode_images` takes (image and pair
sets, uint8 arrays, preprocessed tensors, PIL images, files) becomes
preprocessed batches here (:func:`image_inputs`, :func:`pixels_at`,
:func:`image_batches`); files that cannot be decoded are left out and
named; the passes without gradients, autocast, progress bars and the
on-disk cache (:mod:`modgap.cache`) live here too. :class:`modgap.Clip`
delegates to :func:`encode_images` and :func:`encode_texts`, and the
adaptation methods use the same pieces with their own copies of the model.

Every function takes the ``clip`` it embeds for (a :class:`modgap.Clip`:
its ``preprocess``, ``tokenizer``, ``device`` and ``image_size``) and,
where a method trains a copy, the ``model`` to run.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import distributed
from .cache import EmbeddingCache, fingerprint_inputs, fingerprint_model
from .validation import check_int, check_strings

__all__ = [
    "PRECISIONS",
    "PROGRESS_MIN",
    "autocast_dtype",
    "autocast_for",
    "cache_for",
    "check_tensor_size",
    "default_workers",
    "encode_images",
    "encode_pixels",
    "encode_texts",
    "fast_path_ok",
    "grad_scaler_for",
    "image_batches",
    "image_dtype",
    "image_inputs",
    "normalize_stats",
    "pixel_batches",
    "pixels_at",
    "pixels_to_tensor",
    "prepare_images",
    "show_progress",
    "texts_cut",
    "tokenize_checked",
    "warn_cut",
    "warn_cut_texts",
    "warn_skipped",
]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# below this many items a progress bar is more noise than help
PROGRESS_MIN = 2048
# in-memory images are resized once per fit when the result takes at most this much
PREPARED_MAX_BYTES = 4 * 2 ** 30
# pieces of work a DataLoader worker gets in a pass at least, so that none idles
DECODE_UNITS = 4


def pixels_to_tensor(images: np.ndarray, mean=OPENAI_MEAN, std=OPENAI_STD, device="cpu") -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` (an array or a tensor) -> normalised float ``[N, 3, H, W]``.

    The same numbers as open_clip's eval transform (``ToTensor`` then
    ``Normalize``) when the images already have the model's input size, for
    which ``Resize`` and ``CenterCrop`` are the identity.
    """
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    x = x.to(device)
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


def check_tensor_size(clip, images: torch.Tensor, name: str = "images") -> None:
    """A preprocessed float tensor ``[N, 3, H, W]`` must already have the
    model's input size (nothing resizes it); the error says what to pass
    instead."""
    want = tuple(int(v) for v in clip.image_size)
    got = tuple(int(v) for v in images.shape[-2:])
    if got != want:
        raise ValueError(
            f"{name}: a float tensor is taken as already preprocessed, so it must have the model's input "
            f"size {want[0]}x{want[1]} (clip.image_size), but its images are {got[0]}x{got[1]} "
            f"(shape {tuple(images.shape)}); pass uint8 images (an array [N, H, W, 3]), PIL images or "
            f"file paths, which the model's preprocessing resizes, or resize the tensor to "
            f"[N, 3, {want[0]}, {want[1]}]"
        )


PRECISIONS = ("fp32", "amp", "amp_bf16", "amp_fp16")


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` (open_clip's words) on ``device``,
    ``None`` for fp32: ``"amp"`` is autocast's own default (fp16 on CUDA,
    bf16 on CPU), ``"amp_bf16"`` and ``"amp_fp16"`` name theirs."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "amp":
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.bfloat16 if precision == "amp_bf16" else torch.float16


def autocast_for(device: torch.device, enabled: bool = True, precision: str | None = None):
    """The autocast context of ``precision`` (see :func:`autocast_dtype`);
    without one, modgap's default for passes without gradients: bf16
    autocast on CUDA where supported (else fp16) when ``enabled``, nothing
    elsewhere."""
    if precision is not None:
        dtype = autocast_dtype(device, precision)
        if dtype is None or device.type not in ("cuda", "cpu"):
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def grad_scaler_for(device: torch.device, precision: str | None):
    """A ``GradScaler`` where fp16 autocast trains on CUDA (its small range
    needs the loss scaled), else ``None``."""
    if device.type == "cuda" and precision is not None and autocast_dtype(device, precision) == torch.float16:
        return torch.amp.GradScaler("cuda")
    return None


def show_progress(progress, n: int) -> bool:
    """``progress`` as asked; ``None`` means a bar for long runs only. Only
    rank 0 of a distributed job shows bars."""
    if not distributed.is_main():
        return False
    return (n >= PROGRESS_MIN) if progress is None else bool(progress)


def image_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype an image tower takes: bf16 or fp16 where the model was
    loaded at that precision, fp64 for a model wholly in fp64, else fp32."""
    visual = getattr(model, "visual", model)
    dtypes = {p.dtype for p in visual.parameters() if p.is_floating_point()}
    for low in (torch.bfloat16, torch.float16):
        if low in dtypes:
            return low
    return torch.float64 if dtypes == {torch.float64} else torch.float32


def _preprocess_pil(clip, images, dtype) -> torch.Tensor:
    return torch.stack([clip.preprocess(im.convert("RGB")) for im in images]).to(clip.device, dtype)


def pixels_at(clip, kind: str, items, idx, *, dtype=None) -> tuple[torch.Tensor | None, np.ndarray]:
    """The preprocessed images at positions ``idx`` of ``items`` (as
    :func:`image_inputs` sorted them), on ``clip.device``, and the positions
    in ``idx`` they come from.

    Files that cannot be decoded are left out: the second value then lacks
    their positions, and the pixels are ``None`` when none of ``idx``
    decodes. uint8 arrays at the model's input size skip PIL (the same
    numbers as open_clip's transform, see :func:`fast_path_ok`).
    """
    from .data.files import read_images

    idx = np.asarray(idx.tolist() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64).reshape(-1)
    dtype = image_dtype(clip.model) if dtype is None else dtype
    kept = np.arange(len(idx))
    if not len(idx):  # an empty share of a batch under torchrun
        return None, kept
    if kind == "tensor":
        check_tensor_size(clip, items)
        sel = torch.as_tensor(idx, dtype=torch.long, device=items.device)
        return items[sel].to(clip.device, dtype, non_blocking=True), kept
    if kind == "uint8":
        sub = items[idx]
        if fast_path_ok(clip.preprocess, clip.image_size, sub.shape[1:3]):
            stats = normalize_stats(clip.preprocess)
            return pixels_to_tensor(sub, *stats, device=clip.device).to(dtype), kept
        from PIL import Image

        return _preprocess_pil(clip, [Image.fromarray(a) for a in sub], dtype), kept
    if kind == "paths":
        images, bad = read_images([items[i] for i in idx])
        if bad:
            kept = np.setdiff1d(kept, bad)
        if not images:
            return None, kept
        return _preprocess_pil(clip, images, dtype), kept
    return _preprocess_pil(clip, [items[i] for i in idx], dtype), kept


def default_workers() -> int:
    """DataLoader worker processes that decode and transform image files:
    ``MODGAP_NUM_WORKERS`` where set, else the CPUs this process may use
    (shared among torchrun's processes on the machine), at most 8 (decoding
    is the slow part on a small model, so each core decodes; the model's own
    threads take turns with them)."""
    env = os.environ.get("MODGAP_NUM_WORKERS")
    if env is not None and env.strip():
        try:
            n = int(env)
        except ValueError:
            n = -1
        if n < 0:
            raise ValueError(f"MODGAP_NUM_WORKERS must be a non-negative integer, got {env!r}")
        return n
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    # torchrun's processes on one machine share its cores
    cpus //= max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(8, cpus))


def workers_for(clip) -> int:
    """``clip.num_workers`` when set, else :func:`default_workers`."""
    n = getattr(clip, "num_workers", None)
    return default_workers() if n is None else int(n)


def pil_stage(preprocess):
    """The steps of an open_clip eval transform that work on PIL images
    (resize, crop, mode), as one callable, when everything after them is a
    conversion to tensor and ``Normalize``; else ``None``. Their uint8
    output through :func:`pixels_to_tensor` gives the transform's numbers
    exactly (``ToTensor`` is a division by 255 of the same bytes)."""
    steps = list(getattr(preprocess, "transforms", []))
    names = [type(t).__name__ for t in steps]
    for i, name in enumerate(names):
        if name in ("ToTensor", "MaybeToTensor"):
            if names[i + 1:] != ["Normalize"]:
                return None
            head = steps[:i]
            if any(type(t).__name__ not in ("Resize", "CenterCrop", "MaybeConvertMode", "function")
                   for t in head):
                return None

            def run(image, head=tuple(head)):
                for t in head:
                    image = t(image)
                return image.convert("RGB")
            return run
    return None


def prepare_images(clip, kind: str, items) -> tuple[str, object]:
    """In-memory images made ready for many passes: PIL images, and uint8
    arrays not at the model's input size, are resized and cropped once with
    the model's own transform and kept as uint8 ``[N, H, W, 3]`` at its
    input size (the same numbers on every pass, see :func:`pil_stage`), so
    a training pass only converts bytes to floats. Anything else, or a
    result larger than ``PREPARED_MAX_BYTES``, or a transform of another
    shape, comes back as it was."""
    if kind not in ("pil", "uint8"):
        return kind, items
    h, w = clip.image_size
    if kind == "uint8" and fast_path_ok(clip.preprocess, clip.image_size, items.shape[1:3]):
        return kind, items
    stage = pil_stage(clip.preprocess)
    if stage is None or len(items) * h * w * 3 > PREPARED_MAX_BYTES:
        return kind, items
    from PIL import Image

    out = np.empty((len(items), h, w, 3), dtype=np.uint8)
    for i, im in enumerate(items):
        im = Image.fromarray(im) if kind == "uint8" else im.convert("RGB")
        a = np.asarray(stage(im))
        if a.shape != (h, w, 3):
            return kind, items
        out[i] = a
    return "uint8", out


class _Decoded(torch.utils.data.Dataset):
    """Files (or PIL images) decoded and transformed in a worker: each item
    is ``(position, pixels)``, ``None`` when a file does not decode. With a
    ``stage`` (:func:`pil_stage`) the pixels are the uint8 ``[H, W, 3]`` it
    gives, a quarter of the floats' bytes between the processes, and
    :func:`pixels_to_tensor` finishes them; else the transform's tensor."""

    def __init__(self, kind, items, preprocess, stage):
        self.kind, self.items, self.preprocess, self.stage = kind, items, preprocess, stage

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        from .data.files import read_image

        if self.kind == "paths":
            try:
                im = read_image(self.items[i])
            except Exception:  # noqa: BLE001 - any decoder error means the file is unusable
                return i, None
        else:
            im = self.items[i].convert("RGB")
        if self.stage is not None:
            return i, torch.from_numpy(np.array(self.stage(im), dtype=np.uint8))
        return i, self.preprocess(im)


def _collate_decoded(batch):
    kept = np.asarray([j for j, (_, x) in enumerate(batch) if x is not None], dtype=np.int64)
    xs = [x for _, x in batch if x is not None]
    return kept, (torch.stack(xs) if xs else None)


def _shm_too_small(need: int) -> bool:
    """Whether ``/dev/shm``, where DataLoader workers hand over their
    batches, has less than ``need`` bytes free (containers often give it
    64 MB)."""
    import shutil

    try:
        return shutil.disk_usage("/dev/shm").free < need
    except OSError:
        return False


_warned_shm = False


def pixel_batches(clip, kind: str, items, batches, *, dtype=None, workers: int | None = None,
                  ) -> Iterator[tuple[np.ndarray, torch.Tensor | None]]:
    """``(kept, pixels)`` for each array of positions in ``batches``, in
    order, as :func:`pixels_at` gives them (the same numbers, batch for
    batch). Files and PIL images are decoded and transformed ahead in
    DataLoader worker processes (``workers``, default :func:`workers_for`),
    handed over as uint8 where the transform allows (:func:`pil_stage`),
    pinned on CUDA and copied without blocking, so the device does not wait
    for the CPU. A single batch, or ``workers=0``, is decoded in this
    process; so is everything when ``/dev/shm`` has too little room for the
    workers' batches (with a warning)."""
    global _warned_shm
    batches = [np.asarray(b.tolist() if isinstance(b, torch.Tensor) else b, dtype=np.int64).reshape(-1)
               for b in batches]
    dtype = image_dtype(clip.model) if dtype is None else dtype
    workers = workers_for(clip) if workers is None else int(workers)
    stage = pil_stage(clip.preprocess)
    h, w = clip.image_size
    if workers and kind in ("paths", "pil") and len(batches) >= 2:
        need = 4 * workers * max(len(b) for b in batches) * h * w * 3 * (1 if stage is not None else 4)
        if _shm_too_small(need):
            if not _warned_shm:
                warnings.warn(f"/dev/shm has less than the {need / 2**20:.0f} MB the {workers} DataLoader workers "
                              "need to hand over their images: decoding in this process instead (slower); give "
                              "the container more shared memory (docker run --shm-size 2g) or set "
                              "MODGAP_NUM_WORKERS=0 to silence this", RuntimeWarning, stacklevel=3)
                _warned_shm = True
            workers = 0
    pieces, counts = [], []
    if workers and kind in ("paths", "pil") and len(batches) >= 2:
        # with few batches, workers decode pieces of a batch: a worker holding a whole one
        # would leave the others idle; with many, whole batches cost the least to pass around
        split = -(-DECODE_UNITS * workers // len(batches))
        for b in batches:
            step = max(1, -(-len(b) // split))
            cut = [b[s:s + step].tolist() for s in range(0, len(b), step)]
            pieces.extend(cut)
            counts.append(len(cut))
    if not pieces:
        for idx in batches:
            pixels, kept = pixels_at(clip, kind, items, idx, dtype=dtype)
            yield kept, pixels
        return
    cuda = clip.device.type == "cuda"
    stats = normalize_stats(clip.preprocess) if stage is not None else None
    loader = torch.utils.data.DataLoader(
        _Decoded(kind, items, clip.preprocess, stage), batch_sampler=pieces, collate_fn=_collate_decoded,
        num_workers=min(workers, len(pieces)), pin_memory=cuda, prefetch_factor=2, persistent_workers=False)
    loaded, sizes = iter(loader), iter(len(piece) for piece in pieces)
    for count in counts:
        kept, xs, offset = [], [], 0
        for _ in range(count):
            k, x = next(loaded)
            kept.append(offset + k)
            offset += next(sizes)
            if x is not None:
                xs.append(x)
        pixels = None
        if xs:
            x = xs[0] if len(xs) == 1 else torch.cat(xs)  # one piece stays in its pinned memory
            x = x.to(clip.device, non_blocking=cuda)
            pixels = (pixels_to_tensor(x, *stats, device=clip.device) if stage is not None else x).to(dtype)
        yield (np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)), pixels


def image_batches(clip, kind: str, items, batch_size: int, skipped: list | None = None,
                  ) -> Iterator[torch.Tensor]:
    """Preprocessed batches of ``items`` in order; the positions of files
    that cannot be decoded are appended to ``skipped`` (and their rows left
    out), or raise when ``skipped`` is ``None``."""
    batches = [np.arange(s, min(len(items), s + batch_size)) for s in range(0, len(items), batch_size)]
    for idx, (kept, pixels) in zip(batches, pixel_batches(clip, kind, items, batches)):
        if len(kept) < len(idx):
            bad = np.setdiff1d(idx, idx[kept]).tolist()
            if skipped is None:
                from .data.files import read_image

                read_image(items[bad[0]])  # raises the decoder's own error
            skipped.extend(bad)
        if pixels is not None:
            yield pixels


@torch.no_grad()
def _run(model, fn, batches, n: int, device, *, progress, desc: str, amp: bool, dim: int,
         precision: str | None = None) -> torch.Tensor:
    """Float32 outputs of ``fn`` over ``batches`` with ``model`` in eval mode
    (its mode is restored afterwards)."""
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    out = []
    try:
        with tqdm(total=n, desc=desc, unit="it", disable=not show_progress(progress, n), leave=False) as bar:
            for b in batches:
                with autocast_for(device, amp, precision):
                    f = fn(b)
                out.append(f.float())
                bar.update(len(b))
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, dim, device=device)


def encode_pixels(clip, kind: str, items, *, model=None, batch_size: int = 256, progress=None,
                  desc: str = "images", amp: bool = True, skipped: list | None = None,
                  precision: str | None = None) -> torch.Tensor:
    """Raw (unnormalised) float32 image features ``[N, D]`` of ``items`` by
    ``model`` (default ``clip.model``) with ``clip``'s preprocessing; rows of
    files that cannot be decoded are left out and their positions appended
    to ``skipped``; ``precision`` (see :func:`autocast_for`) overrides
    ``amp``."""
    model = clip.model if model is None else model
    if distributed.is_distributed():
        # each rank embeds its share; every rank gets all rows back, in order
        start, stop = distributed.shard_bounds(len(items))
        local = [] if skipped is not None else None
        batches = image_batches(clip, kind, items[start:stop], batch_size, local)
        feats = _run(model, model.encode_image, batches, stop - start, clip.device, progress=progress,
                     desc=desc, amp=amp, dim=clip.embed_dim, precision=precision)
        if skipped is not None:
            for share_start, bad in distributed.all_gather_objects((start, local)):
                skipped.extend(share_start + i for i in bad)
        return distributed.gather_rows(feats)
    batches = image_batches(clip, kind, items, batch_size, skipped)
    return _run(model, model.encode_image, batches, len(items), clip.device, progress=progress, desc=desc,
                amp=amp, dim=clip.embed_dim, precision=precision)


def warn_skipped(items, skipped, where: str, stacklevel: int = 3) -> np.ndarray:
    """The sorted positions in ``skipped``; one warning, said of ``where``,
    names those files, and a ``ValueError`` says so when none was read."""
    from .data.files import warn_unreadable

    bad = np.asarray(sorted(set(skipped or ())), dtype=np.int64)
    warn_unreadable([items[i] for i in bad], len(items), where, "; their rows are left out",
                    stacklevel=stacklevel + 1)
    if len(bad) and len(bad) == len(items):
        raise ValueError(f"{where}: none of the {len(items)} image files could be read")
    return bad


_caches: dict[Path, EmbeddingCache] = {}


def cache_for(clip, cache_dir=None) -> EmbeddingCache | None:
    """The on-disk cache in ``cache_dir`` (default ``clip.cache_dir``), or
    ``None`` when neither names a folder."""
    d = cache_dir if cache_dir is not None else getattr(clip, "cache_dir", None)
    if d is None:
        return None
    d = Path(d).expanduser()
    if d not in _caches:
        _caches[d] = EmbeddingCache(d)
    return _caches[d]


def encode_images(clip, images, batch_size: int = 256, normalize: bool = True, progress=None,
                  cache_dir=None) -> torch.Tensor:
    """What :meth:`modgap.Clip.encode_images` does (see there)."""
    check_int(batch_size, "batch_size")
    kind, items = image_inputs(images)
    if kind == "tensor":
        check_tensor_size(clip, items)
    cache = cache_for(clip, cache_dir)
    key = None
    if cache is not None:
        key = cache.key("images", fingerprint_model(clip.model), fingerprint_inputs(kind, items),
                        repr(clip.preprocess), normalize, clip.device.type, "notes-v1")
        hit = cache.get_entry(key)
        if not all(distributed.all_gather_objects(hit is not None)):
            hit = None  # every rank embeds, or none: a rank alone in a collective would wait forever
        if hit is not None:
            # a cached answer warns as the first one did
            emb, skipped = hit
            warn_skipped(items, skipped.tolist(), "Clip.encode_images", stacklevel=3)
            return torch.from_numpy(emb).to(clip.device)
    skipped = [] if kind == "paths" else None
    emb = encode_pixels(clip, kind, items, batch_size=batch_size, progress=progress, skipped=skipped)
    bad = warn_skipped(items, skipped, "Clip.encode_images", stacklevel=3)
    if normalize:
        emb = F.normalize(emb, dim=-1)
    if cache is not None and distributed.is_main():
        cache.put(key, emb.cpu().numpy(), bad)
    return emb


def texts_cut(clip, texts, tokens) -> np.ndarray:
    """The positions of ``texts`` longer than the model's context, which
    the tokenizer cut to fit. A row whose last token is not padding filled
    the context; where the tokenizer can ``encode`` (open_clip's own BPE),
    its length decides between a text that fits exactly and one that was cut."""
    full = np.flatnonzero((tokens[:, -1] != 0).cpu().numpy())
    context = tokens.shape[1]
    encode = getattr(clip.tokenizer, "encode", None)
    if callable(encode) and len(full):
        with contextlib.suppress(Exception):  # another encode signature: keep the bound
            full = np.asarray([i for i in full if len(encode(texts[i])) + 2 > context], dtype=np.int64)
    return full


def tokenize_checked(clip, texts, where: str, stacklevel: int = 3) -> torch.Tensor:
    """``clip.tokenize(texts)`` on the CPU, with one warning, said of
    ``where``, for the texts cut at the context length."""
    texts = list(texts)
    tokens = clip.tokenize(texts)
    warn_cut(texts, texts_cut(clip, texts, tokens), tokens.shape[1], where, stacklevel=stacklevel + 1)
    return tokens


def warn_cut_texts(clip, texts, where: str, chunk: int = 4096) -> None:
    """One warning, said of ``where``, for the ``texts`` longer than the
    model's context, tokenized chunk by chunk and dropped (for texts that
    are tokenized again later, such as training captions)."""
    texts = list(texts)
    cut, context = [], 0
    for i in range(0, len(texts), chunk):
        tokens = clip.tokenize(texts[i:i + chunk])
        context = tokens.shape[1]
        cut.extend(i + texts_cut(clip, texts[i:i + chunk], tokens))
    warn_cut(texts, cut, context, where, stacklevel=4)


def warn_cut(texts, cut, context: int, where: str, stacklevel: int = 3) -> None:
    """One warning that counts and shows (the first three of) the cut texts."""
    if not len(cut):
        return
    shown = "; ".join(repr(texts[i][:60] + ("..." if len(texts[i]) > 60 else "")) for i in cut[:3])
    warnings.warn(f"{where}: {len(cut)} of {len(texts)} texts are longer than the model's context of "
                  f"{context} tokens and were cut to fit ({shown}); shorten or split them to embed all of "
                  "their words", stacklevel=stacklevel + 1)


def encode_texts(clip, texts, batch_size: int = 256, normalize: bool = True, progress=None,
                 cache_dir=None, *, model=None) -> torch.Tensor:
    """What :meth:`modgap.Clip.encode_texts` does (see there); ``model``
    (default ``clip.model``) runs the text tower, uncached when given."""
    if isinstance(texts, str):
        texts = [texts]
    texts = check_strings(texts, "texts")
    check_int(batch_size, "batch_size")
    cache = cache_for(clip, cache_dir) if model is None else None
    model = clip.model if model is None else model
    key = None
    if cache is not None:
        key = cache.key("texts", fingerprint_model(model), fingerprint_inputs("texts", texts),
                        repr(clip.tokenizer.__class__), getattr(clip.tokenizer, "context_length", ""),
                        normalize, clip.device.type, "notes-v1")
        hit = cache.get_entry(key)
        if hit is not None:
            emb, cut = hit
            warn_cut(texts, cut, clip.tokenize([""]).shape[1], "encode_texts")
            return torch.from_numpy(emb).to(clip.device)
    cut, context = [], None

    def batches():
        nonlocal context
        for i in range(0, len(texts), batch_size):
            tokens = clip.tokenize(texts[i:i + batch_size])
            context = tokens.shape[1]
            cut.extend(i + texts_cut(clip, texts[i:i + batch_size], tokens))
            yield tokens.to(clip.device)

    emb = _run(model, model.encode_text, batches(), len(texts), clip.device, progress=progress, desc="texts",
               amp=True, dim=clip.embed_dim)
    warn_cut(texts, cut, context, "encode_texts")
    if normalize:
        emb = F.normalize(emb, dim=-1)
    if cache is not None and distributed.is_main():
        cache.put(key, emb.cpu().numpy(), cut)
    return emb
