"""Loading CLIP models: ``load_model(spec)`` for any open_clip model, a local
file, a Hugging Face repo or the bundled ``modgap-tiny``; and :class:`Clip`,
which holds the real open_clip objects and embeds images and texts.

Spec forms
----------
``"modgap-tiny"``                 the bundled small model (offline)
``"ViT-B-32:laion2b_s34b_b79k"``  an open_clip architecture and pretrained tag
``"ViT-B-32"``                    random initialisation (with a warning)
``"ViT-B-32:/path/weights.pt"``   a local state dict or ``.safetensors`` file
``"local-dir:/path"``             a folder with ``open_clip_config.json`` and weights
``"hf-hub:org/repo"``             a Hugging Face Hub repository
"""
from __future__ import annotations

import copy
import difflib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import embed as _embed
from .cache import EmbeddingCache, fingerprint_inputs, fingerprint_model

__all__ = ["Clip", "ModelLoadError", "load_model", "offline_models", "parse_spec", "pick_device"]


class ModelLoadError(RuntimeError):
    """A model spec could not be loaded (usually: weights not reachable)."""


def pick_device(device="auto") -> torch.device:
    """``"auto"``: cuda, then mps, then cpu. Anything else is taken as asked."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def parse_spec(spec: str, pretrained: str | None = None) -> tuple[str, str | None, str | None]:
    """Split a spec into ``(schema, name, pretrained)``.

    schema is ``"bundled"``, ``"hf-hub"``, ``"local-dir"`` or ``"open_clip"``.
    The ``hf-hub:`` and ``local-dir:`` prefixes are read before the
    ``ARCH:PRETRAINED`` split, which happens at the first colon.
    """
    from .zoo import BUNDLED

    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"spec must be a non-empty string such as 'modgap-tiny' or 'ViT-B-32:openai', got {spec!r}")
    spec = spec.strip()
    for prefix in ("hf-hub:", "local-dir:"):
        if spec.startswith(prefix):
            if pretrained is not None:
                raise ValueError(f"spec {spec!r} carries its own weights; do not pass pretrained={pretrained!r}")
            rest = spec[len(prefix):]
            if not rest:
                raise ValueError(f"spec {spec!r} names nothing after {prefix!r}")
            return prefix[:-1], rest, None
    arch, sep, tag = spec.partition(":")
    if sep:
        if pretrained is not None:
            raise ValueError(f"spec {spec!r} already names weights ({tag!r}); do not also pass pretrained=")
        if not tag:
            raise ValueError(f"spec {spec!r} has nothing after the colon; use {arch!r} or {arch}:TAG")
        pretrained = tag
    if arch in BUNDLED:
        return "bundled", arch, pretrained
    return "open_clip", arch, pretrained


def offline_models(weights_cache_dir=None) -> list[str]:
    """Specs that load on this machine with no network: the bundled models
    and open_clip models found in the Hugging Face cache (and in
    ``weights_cache_dir``, where one is given)."""
    from .zoo import BUNDLED, weights_path

    found = [n for n in BUNDLED if weights_path(n).exists()]
    folders = [_hub_cache()] + ([str(weights_cache_dir)] if weights_cache_dir is not None else [])
    try:
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.errors import CacheNotFound, CorruptedCacheException
    except ImportError:
        return found
    for folder in folders:
        try:
            repos = scan_cache_dir(folder).repos
        except (CacheNotFound, CorruptedCacheException, OSError, ValueError):
            repos = ()
        for repo in sorted(repos, key=lambda r: r.repo_id):
            files = {f.file_name for rev in repo.revisions for f in rev.files}
            if "open_clip_config.json" in files and f"hf-hub:{repo.repo_id}" not in found:
                found.append(f"hf-hub:{repo.repo_id}")
    return found


def _hub_cache() -> str:
    """The folder huggingface_hub reads and writes (it reads HF_HOME and
    HF_HUB_CACHE when it is imported)."""
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:
        hf_home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
        return os.environ.get("HF_HUB_CACHE", os.path.join(hf_home, "hub"))


def _offline_help(spec: str, err: Exception, weights_cache_dir) -> str:
    hub_cache = _hub_cache()
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        f"could not load model {spec!r}: the weights could not be fetched or read "
        f"({type(err).__name__}: {first[:300]}).\n"
        f"  - open_clip and huggingface_hub look for cached weights in {hub_cache} "
        f"(set HF_HOME or HF_HUB_CACHE to move it"
        + (f"; cache_dir={weights_cache_dir}" if weights_cache_dir else "; or pass weights_cache_dir=")
        + "); HF_HUB_OFFLINE=1 makes them use only that cache.\n"
        "  - to use a file you already have: load_model('ARCH:/path/to/weights.pt') "
        "(or .safetensors), or load_model('local-dir:/path/to/folder').\n"
        f"  - models that load offline on this machine: {offline_models(weights_cache_dir)}"
    )


def load_model(spec: str, pretrained: str | None = None, device="auto", *, cache_dir=None,
               weights_cache_dir=None, precision: str = "fp32") -> Clip:
    """Load a CLIP model as a :class:`Clip`.

    Parameters
    ----------
    spec : str
        See the module docstring: ``"modgap-tiny"``, ``"ARCH:TAG"``,
        ``"ARCH:/path/file"``, ``"ARCH"``, ``"local-dir:/path"``, ``"hf-hub:org/repo"``.
    pretrained : str, optional
        The two-argument form, ``load_model("ViT-B-32", pretrained="openai")``.
    device : "auto" or a torch device
        ``"auto"`` picks cuda, then mps, then cpu.
    cache_dir : path, optional
        Turns on the on-disk embedding cache in this folder.
    weights_cache_dir : path, optional
        Where open_clip downloads and looks for weights (its ``cache_dir``).
    precision : str
        open_clip's precision argument (``"fp32"``, ``"bf16"``, ...).
    """
    import open_clip

    from .zoo import register, weights_path

    register()
    schema, name, tag = parse_spec(spec, pretrained)
    dev = pick_device(device)
    kwargs = {"device": dev, "precision": precision}
    label = spec if pretrained is None else f"{spec}:{pretrained}"
    if schema == "bundled":
        if tag is None:
            path = weights_path(name)
            if not path.exists():
                raise ModelLoadError(
                    f"the weights of the bundled model {name!r} are missing ({path}); "
                    "reinstall modgap or train them with python -m modgap.zoo.train"
                )
            tag = str(path)
        elif not Path(tag).is_file():
            raise FileNotFoundError(f"load_model({label!r}): weights file {tag} does not exist")
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=tag, **kwargs)
        return Clip(model, preprocess, open_clip.get_tokenizer(name), device=dev, name=label, cache_dir=cache_dir)

    if schema == "open_clip":
        known = open_clip.list_models()
        if name not in known:
            close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
            raise ValueError(
                f"unknown architecture {name!r} in spec {label!r}"
                + (f"; close matches: {close}" if close else "")
                + "; see open_clip.list_models()"
            )
        if tag is None:
            warnings.warn(
                f"load_model({spec!r}): no pretrained weights named; the model is randomly initialised. "
                f"Name a tag (e.g. {name}:{(open_clip.list_pretrained_tags_by_model(name) or ['TAG'])[0]}) "
                "or a local file.",
                stacklevel=2,
            )
        elif _looks_like_path(tag):
            if not Path(tag).expanduser().is_file():
                raise FileNotFoundError(
                    f"load_model({label!r}): weights file {tag} does not exist; give the path of a "
                    f"state dict (.pt/.bin) or .safetensors file for architecture {name}"
                )
            tag = str(Path(tag).expanduser())
        else:
            tags = open_clip.list_pretrained_tags_by_model(name)
            if tag not in tags:
                raise ValueError(
                    f"unknown pretrained tag {tag!r} for {name} in spec {label!r}; known tags: {tags}, "
                    "or give a path to a local weights file"
                )
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=tag, cache_dir=weights_cache_dir, **kwargs
            )
        except (RuntimeError, OSError, ConnectionError, TimeoutError, ValueError) as e:
            if tag is None:
                raise
            if _looks_like_path(tag):
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ModelLoadError(
                    f"load_model({label!r}): weights file {tag} does not fit architecture {name} "
                    f"({type(e).__name__}: {first[:300]})"
                ) from e
            raise ModelLoadError(_offline_help(label, e, weights_cache_dir)) from e
        return Clip(model, preprocess, open_clip.get_tokenizer(name), device=dev, name=label, cache_dir=cache_dir)

    full = f"{schema}:{name}"
    if schema == "local-dir":
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"load_model({full!r}): folder {name} does not exist")
        if not (folder / "open_clip_config.json").is_file():
            raise ModelLoadError(
                f"load_model({full!r}): {folder} has no open_clip_config.json "
                '({"model_cfg": ..., "preprocess_cfg": ...})'
            )
        if not any(next(folder.glob(f"*{ext}"), None) for ext in (".safetensors", ".bin", ".pth")):
            raise ModelLoadError(
                f"load_model({full!r}): {folder} has no weights file; open_clip looks for "
                "open_clip_model.safetensors (or another .safetensors, .bin or .pth file) beside "
                "open_clip_config.json"
            )
        full = f"local-dir:{folder}"
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            full, cache_dir=weights_cache_dir, **kwargs
        )
        tokenizer = open_clip.get_tokenizer(full)
    except Exception as e:  # huggingface_hub raises many unrelated types offline
        if schema == "local-dir":
            raise ModelLoadError(f"could not load {full!r}: {e}") from e
        raise ModelLoadError(_offline_help(full, e, weights_cache_dir)) from e
    return Clip(model, preprocess, tokenizer, device=dev, name=full, cache_dir=cache_dir)


def _looks_like_path(tag: str) -> bool:
    return (
        "/" in tag or "\\" in tag or tag.startswith((".", "~"))
        or tag.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz"))
    )


class Clip:
    """A CLIP model with its preprocessing and tokenizer, ready to embed.

    Attributes
    ----------
    model : open_clip.CLIP
        The real open_clip model (train it, save it, hand it to open_clip).
    preprocess : callable
        The model's eval transform (PIL image -> tensor).
    tokenizer : callable
        open_clip's tokenizer for the model.
    device : torch.device
    name : str
        The spec it was loaded from.
    cache_dir : path or None
        Where embeddings are cached on disk; ``None`` turns the cache off.
    """

    def __init__(self, model, preprocess=None, tokenizer=None, device=None, name="clip", cache_dir=None):
        import open_clip

        self.model = model
        if device is None:
            device = next(model.parameters()).device
        self.device = pick_device(device)
        self.model.to(self.device)
        if preprocess is None:
            size = model.visual.image_size
            preprocess = open_clip.image_transform(size, is_train=False)
        self.preprocess = preprocess
        self.tokenizer = tokenizer if tokenizer is not None else open_clip.get_tokenizer("ViT-B-32")
        self.name = name
        self.cache_dir = cache_dir
        self._cache = None

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        return f"Clip(name={self.name!r}, device={self.device}, params={n / 1e6:.1f}M, embed_dim={self.embed_dim})"

    # -- facts -----------------------------------------------------------
    @property
    def image_size(self) -> tuple[int, int]:
        s = self.model.visual.image_size
        return (s, s) if isinstance(s, int) else tuple(s)

    @property
    def embed_dim(self) -> int:
        proj = getattr(self.model, "text_projection", None)
        if isinstance(proj, torch.Tensor):
            return proj.shape[-1]
        return int(self.model.visual.output_dim)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp().item())

    def with_model(self, model, name: str | None = None) -> Clip:
        """A new Clip with the same preprocessing and tokenizer around ``model``."""
        return Clip(model, self.preprocess, self.tokenizer, device=self.device,
                    name=name or self.name, cache_dir=self.cache_dir)

    def copy(self, name: str | None = None) -> Clip:
        """A deep copy of the model, for training without touching this one."""
        return self.with_model(copy.deepcopy(self.model), name=name)

    # -- cache -----------------------------------------------------------
    def _cache_for(self, cache_dir):
        d = cache_dir if cache_dir is not None else self.cache_dir
        if d is None:
            return None
        if self._cache is None or self._cache.directory != Path(d).expanduser():
            self._cache = EmbeddingCache(d)
        return self._cache

    # -- images ----------------------------------------------------------
    def _image_dtype(self) -> torch.dtype:
        """The dtype the image tower takes: bf16 or fp16 where the model was
        loaded at that precision, else fp32."""
        dtypes = {p.dtype for p in self.model.visual.parameters() if p.is_floating_point()}
        for low in (torch.bfloat16, torch.float16):
            if low in dtypes:
                return low
        return torch.float32

    def _image_batches(self, kind, items, batch_size):
        """Yield preprocessed float batches on the device."""
        dtype = self._image_dtype()
        if kind == "tensor":
            for i in range(0, len(items), batch_size):
                yield items[i:i + batch_size].to(self.device, dtype, non_blocking=True)
            return
        if kind == "uint8":
            stats = _embed.normalize_stats(self.preprocess)
            if _embed.fast_path_ok(self.preprocess, self.image_size, items.shape[1:3]):
                for i in range(0, len(items), batch_size):
                    yield _embed.pixels_to_tensor(items[i:i + batch_size], *stats, device=self.device).to(dtype)
                return
            from PIL import Image

            for i in range(0, len(items), batch_size):
                chunk = [self.preprocess(Image.fromarray(a)) for a in items[i:i + batch_size]]
                yield torch.stack(chunk).to(self.device, dtype)
            return
        # PIL images (file paths are decoded to PIL first)
        for i in range(0, len(items), batch_size):
            chunk = [self.preprocess(im.convert("RGB")) for im in items[i:i + batch_size]]
            yield torch.stack(chunk).to(self.device, dtype)

    @torch.no_grad()
    def _encode(self, fn, batches, n, progress, desc):
        from tqdm.auto import tqdm

        was_training = self.model.training
        self.model.eval()
        show = (n >= _embed.PROGRESS_MIN) if progress is None else bool(progress)
        out = []
        try:
            with tqdm(total=n, desc=desc, unit="it", disable=not show, leave=False) as bar:
                for b in batches:
                    with _embed.autocast_for(self.device):
                        f = fn(b)
                    out.append(f.float())
                    bar.update(len(b))
        finally:
            self.model.train(was_training)
        return torch.cat(out) if out else torch.empty(0, self.embed_dim, device=self.device)

    def encode_images(self, images, batch_size: int = 256, normalize: bool = True, progress=None,
                      cache_dir=None) -> torch.Tensor:
        """Embed images; returns a float32 tensor ``[N, D]`` on ``self.device``.

        ``images`` may be an :class:`~modgap.data.ImageSet` or
        :class:`~modgap.data.PairSet`, a uint8 array ``[N, H, W, 3]``, a
        float tensor ``[N, 3, H, W]`` already preprocessed, a list of PIL
        images, or a list of file paths. The model's own preprocessing is
        applied (uint8 arrays at the model's input size take an exact
        tensor path that skips PIL). Files that cannot be read are skipped
        with one warning, and their rows are left out.

        progress : None (a bar for long runs), True or False.
        cache_dir : a folder for the on-disk cache (default ``self.cache_dir``).
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        kind, items = _embed.image_inputs(images)
        cache = self._cache_for(cache_dir)
        key = None
        if cache is not None:
            key = cache.key("images", fingerprint_model(self.model), fingerprint_inputs(kind, items),
                            repr(self.preprocess), normalize, self.device.type)
            hit = cache.get(key)
            if hit is not None:
                return torch.from_numpy(hit).to(self.device)
        if kind == "paths":
            items, _ = _embed.read_images_skipping(items)
            kind = "pil"
            if not items:
                raise ValueError("images: none of the files could be read")
        n = len(items)
        emb = self._encode(self.model.encode_image, self._image_batches(kind, items, batch_size), n,
                           progress, "images")
        if normalize:
            emb = F.normalize(emb, dim=-1)
        if cache is not None:
            cache.put(key, emb.cpu().numpy())
        return emb

    # -- texts -----------------------------------------------------------
    def tokenize(self, texts) -> torch.Tensor:
        return self.tokenizer(list(texts))

    def encode_texts(self, texts, batch_size: int = 256, normalize: bool = True, progress=None,
                     cache_dir=None) -> torch.Tensor:
        """Embed strings; returns a float32 tensor ``[N, D]``."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ValueError("texts is empty")
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be strings")
        cache = self._cache_for(cache_dir)
        key = None
        if cache is not None:
            key = cache.key("texts", fingerprint_model(self.model), fingerprint_inputs("texts", texts),
                            repr(self.tokenizer.__class__), getattr(self.tokenizer, "context_length", ""),
                            normalize, self.device.type)
            hit = cache.get(key)
            if hit is not None:
                return torch.from_numpy(hit).to(self.device)

        def batches():
            for i in range(0, len(texts), batch_size):
                yield self.tokenize(texts[i:i + batch_size]).to(self.device)

        emb = self._encode(self.model.encode_text, batches(), len(texts), progress, "texts")
        if normalize:
            emb = F.normalize(emb, dim=-1)
        if cache is not None:
            cache.put(key, emb.cpu().numpy())
        return emb

    def class_embeddings(self, classnames, templates=("a photo of a {}.",), cache_dir=None) -> torch.Tensor:
        """The CLIP zero-shot classifier ``[C, D]``: every template per class,
        each normalised, averaged, and normalised again."""
        classnames, templates = list(classnames), list(templates)
        if not classnames:
            raise ValueError("classnames is empty")
        if not templates:
            raise ValueError("templates is empty")
        for t in templates:
            if "{}" not in t:
                raise ValueError(f"template {t!r} has no '{{}}' where the class name goes")
        prompts = [t.format(c) for c in classnames for t in templates]
        emb = self.encode_texts(prompts, normalize=True, progress=False, cache_dir=cache_dir)
        emb = emb.view(len(classnames), len(templates), -1).mean(dim=1)
        return F.normalize(emb, dim=-1)

    def zero_shot_logits(self, images, classnames, templates=("a photo of a {}.",), **kw) -> torch.Tensor:
        """``logit_scale * image @ class^T`` for ``images``."""
        img = self.encode_images(images, **kw)
        return self.logit_scale * img @ self.class_embeddings(classnames, templates).T

    def save(self, path, overwrite: bool = False) -> Path:
        """Write the weights as ``.safetensors`` (or a torch ``.pt`` state dict),
        atomically; an existing file is kept unless ``overwrite=True``."""
        from .io import save_state_dict

        return save_state_dict(self.model, path, overwrite=overwrite)


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
