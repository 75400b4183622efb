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

import contextlib
import copy
import difflib
import json
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from . import embed
from .io import RUN_FILE, check_manifest
from .validation import check_choice, check_templates

__all__ = ["PRECISIONS", "Clip", "ModelLoadError", "load_model", "offline_models", "parse_spec", "pick_device"]

# open_clip's create_model knows these; any other string silently loads fp32
PRECISIONS = ("fp32", "fp16", "bf16", "pure_fp16", "pure_bf16")


class ModelLoadError(RuntimeError):
    """A model spec could not be loaded (usually: weights not reachable)."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def _devices_here() -> str:
    """The devices this machine offers torch, e.g. ``"cpu, cuda:0, cuda:1"``."""
    have = ["cpu"]
    if torch.cuda.is_available():
        have += [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cuda"]
    if _mps_available():
        have.append("mps")
    return ", ".join(have)


def pick_device(device="auto") -> torch.device:
    """``"auto"``: cuda, then mps, then cpu. Anything else is taken as asked,
    if this machine has it: a device it lacks (``"cuda"`` without a GPU,
    ``"cuda:1"`` with one GPU, ``"mps"`` off Apple silicon) or a name torch
    does not know (``"gpu"``) is a ``ValueError`` that says what it has."""
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    advice = "pass device='auto' (the best device here) or device='cpu'"
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str) or (isinstance(device, int) and not isinstance(device, bool)):
        try:
            dev = torch.device(device.strip() if isinstance(device, str) else device)
        except (RuntimeError, ValueError, TypeError):
            raise ValueError(
                f"device={device!r} is not a device name torch knows (such as 'cpu', 'cuda', 'cuda:1' or "
                f"'mps'; a GPU is 'cuda'); this machine has: {_devices_here()}; {advice}"
            ) from None
    else:
        raise TypeError(f"device must be 'auto', a device name such as 'cpu' or 'cuda:0', or a torch.device; "
                        f"got {type(device).__name__}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is built without CUDA" if torch.version.cuda is None
                   else "torch finds no CUDA GPU on this machine")
            raise ValueError(f"device={device!r} asks for a CUDA GPU, but {why}; this machine has: "
                             f"{_devices_here()}; {advice}")
        count = torch.cuda.device_count()
        if dev.index is not None and count and dev.index >= count:
            raise ValueError(f"device={device!r} asks for CUDA GPU {dev.index}, but torch sees {count} "
                             f"(numbered from 0); this machine has: {_devices_here()}; {advice}")
    elif dev.type == "mps" and not _mps_available():
        raise ValueError(f"device={device!r} asks for Apple's MPS, which torch cannot use here; "
                         f"this machine has: {_devices_here()}; {advice}")
    return dev


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


def _offline_help(spec: str, err: Exception, weights_cache_dir, note: str = "") -> str:
    hub_cache = _hub_cache()
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        f"could not load model {spec!r}: the weights could not be fetched or read "
        f"({type(err).__name__}: {first[:300]}).\n"
        + (f"  - {note}.\n" if note else "")
        + f"  - open_clip and huggingface_hub look for cached weights in {hub_cache} "
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
        ``"auto"`` picks cuda, then mps, then cpu; a device this machine
        lacks is a ``ValueError`` (see :func:`pick_device`).
    cache_dir : path, optional
        Turns on the on-disk embedding cache in this folder.
    weights_cache_dir : path, optional
        Where open_clip downloads and looks for weights (its ``cache_dir``).
    precision : str
        How the weights are held, in open_clip's words (:data:`PRECISIONS`):
        ``"fp32"``; ``"fp16"`` / ``"bf16"`` (half-precision weights with
        float32 layer norms, as OpenAI's CLIP); ``"pure_fp16"`` /
        ``"pure_bf16"`` (everything in half precision).

    Notes
    -----
    Pretrained tags and ``hf-hub:`` specs read the Hugging Face cache only
    where ``HF_HUB_OFFLINE=1``; otherwise the Hub is asked once (3 s at
    most) and, where it does not answer, only the cache is read, so an
    offline machine learns at once that a model it lacks cannot be fetched.
    A weights file that cannot be read raises :class:`ModelLoadError`
    naming it.
    """
    import open_clip

    from .zoo import register, weights_path

    register()
    saved = _saved_model_folder(spec)
    if saved is not None:
        if pretrained is not None:
            raise ValueError(f"spec {spec!r} is a saved folder that carries its own weights; "
                             f"do not pass pretrained={pretrained!r}")
        spec = f"local-dir:{saved}"
    schema, name, tag = parse_spec(spec, pretrained)
    check_choice(precision, "precision", PRECISIONS)
    dev = pick_device(device)
    kwargs = {"device": dev, "precision": precision}
    label = spec if pretrained is None else f"{spec}:{pretrained}"
    if schema == "bundled":
        if tag is None:
            path = weights_path(name)
            if not path.exists():
                raise ModelLoadError(
                    f"the weights of the bundled model {name!r} are missing ({path}); "
                    "reinstall modgap or train them with python -m modgap.pretrain"
                )
            tag = str(path)
        elif not Path(tag).is_file():
            raise FileNotFoundError(f"load_model({label!r}): weights file {tag} does not exist")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=tag, **kwargs)
        except Exception as e:
            bad = _unreadable_weights(label, tag)
            if bad is not None:
                raise bad from e
            raise
        return Clip(model, preprocess, open_clip.get_tokenizer(name), device=dev, name=label, cache_dir=cache_dir,
                    config=open_clip.get_model_config(name))

    if schema == "open_clip":
        known = open_clip.list_models()
        if name not in known and _bare_path(name):
            raise ValueError(_bare_path_help(label, name))
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
        from_hub = tag is not None and not _looks_like_path(tag)
        hub, note = _hub_access() if from_hub else (contextlib.nullcontext(), "")
        try:
            with hub:
                model, _, preprocess = open_clip.create_model_and_transforms(
                    name, pretrained=tag, cache_dir=weights_cache_dir, **kwargs
                )
        except Exception as e:  # safetensors, torch.load and huggingface_hub raise many types
            if tag is None:
                raise
            if not from_hub:
                bad = _unreadable_weights(label, tag)
                if bad is not None:
                    raise bad from e
                raise ModelLoadError(
                    f"load_model({label!r}): weights file {tag} does not fit architecture {name} "
                    f"({_first_line(e)})"
                ) from e
            raise ModelLoadError(_offline_help(label, e, weights_cache_dir, note)) from e
        return Clip(model, preprocess, open_clip.get_tokenizer(name), device=dev, name=label, cache_dir=cache_dir,
                    config=open_clip.get_model_config(name))

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
    hub, note = _hub_access() if schema == "hf-hub" else (contextlib.nullcontext(), "")
    try:
        with hub:
            model, _, preprocess = open_clip.create_model_and_transforms(
                full, cache_dir=weights_cache_dir, **kwargs
            )
            tokenizer = open_clip.get_tokenizer(full)
            config = open_clip.get_model_config(full)
    except Exception as e:  # huggingface_hub raises many unrelated types offline
        if schema == "local-dir":
            bad = _unreadable_weights(full, _folder_weights(folder))
            if bad is not None:
                raise bad from e
            raise ModelLoadError(f"could not load {full!r}: {e}") from e
        raise ModelLoadError(_offline_help(full, e, weights_cache_dir, note)) from e
    return Clip(model, preprocess, tokenizer, device=dev, name=full, cache_dir=cache_dir, config=config)


def _saved_model_folder(spec) -> Path | None:
    """The model folder a spec names when it is a folder on disk: one
    written by an estimator's ``save`` (its default model) or by
    :meth:`Clip.save` (``open_clip_config.json`` and weights)."""
    if not isinstance(spec, str) or not spec.strip():
        return None
    folder = Path(spec.strip()).expanduser()
    if not folder.is_dir():
        return None
    run_file = folder / RUN_FILE
    if run_file.is_file():
        check_manifest(folder)
        meta = json.loads(run_file.read_text(encoding="utf-8"))
        default = meta.get("default_model")
        if not default or not (folder / default / "open_clip_config.json").is_file():
            raise ModelLoadError(f"{run_file} names no loadable model folder (default_model={default!r}); "
                                 f"load it with the estimator's load()")
        return folder / default
    if (folder / "open_clip_config.json").is_file():
        check_manifest(folder, required=False)
        return folder
    return None


_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:300]}" if text else type(err).__name__


def _unreadable_weights(label: str, path) -> ModelLoadError | None:
    """Asked after loading ``label`` failed: the error to raise when its
    weights file ``path`` cannot be read at all; ``None`` when the file
    reads (the fault is elsewhere) or is unknown."""
    if path is None:
        return None
    path = Path(path)
    if path.suffix in (".npz", ".npy") or not path.is_file():
        return None
    with open(path, "rb") as fh:
        head = fh.read(2)
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                f.keys()
            return None
        if not head:
            reason = "the file is empty"
        elif head[:2] == b"PK" or head[:1] == b"\x80":  # torch.save's zip archive, or a legacy pickle
            torch.load(path, map_location="cpu", weights_only=True)
            return None
        else:
            reason = f"it starts with {head!r}, neither a zip archive as torch.save writes nor a pickle"
    except Exception as read_err:  # noqa: BLE001 - any reader error means the file cannot be read
        reason = _first_line(read_err)
    size = path.stat().st_size
    return ModelLoadError(
        f"load_model({label!r}): weights file {path} ({size:,} bytes) cannot be read ({reason}); it is "
        "truncated, corrupt or not a weights file: download it again, or save it again "
        "(Clip.save('weights.safetensors') or safetensors.torch.save_file)"
    )


def _folder_weights(folder: Path) -> Path | None:
    """The weights file open_clip picks in a ``local-dir:`` folder."""
    try:
        from open_clip.factory import _find_checkpoint_in_dir

        found = _find_checkpoint_in_dir(folder)
        return Path(found) if found else None
    except (ImportError, AttributeError):
        files = sorted(p for ext in (".safetensors", ".bin", ".pth") for p in folder.glob(f"*{ext}"))
        files.sort(key=lambda p: (p.name != "open_clip_model.safetensors", p.suffix != ".safetensors"))
        return files[0] if files else None


def _bare_path(name: str) -> bool:
    """Whether an architecture name is a path on disk or written like one."""
    return (
        name.startswith(("/", "./", "../", "~", ".\\")) or "\\" in name
        or name.lower().endswith(_WEIGHT_SUFFIXES) or Path(name).expanduser().exists()
    )


def _bare_path_help(label: str, name: str) -> str:
    path = Path(name).expanduser()
    if path.is_dir():
        what = (f"{path} is a folder, but not a saved model: it holds neither open_clip_config.json "
                f"(Clip.save, open_clip) nor {RUN_FILE} (an estimator's save)")
    elif path.is_file():
        what = f"{path} is a file; a weights file alone does not say which architecture it is for"
    else:
        what = f"no file or folder {path} exists"
    return (
        f"spec {label!r} looks like a path, not an architecture name ({what}). The forms that take a path: "
        f"'ARCH:/path/weights.safetensors' (or .pt) for a weights file, with ARCH from "
        f"open_clip.list_models() such as 'ViT-B-32'; 'local-dir:/path/folder' for a folder holding "
        f"open_clip_config.json and weights; or the path of a folder written by Clip.save() or an "
        f"estimator's save()"
    )


# -- the Hugging Face Hub ------------------------------------------------------
HUB_PROBE_TIMEOUT = 3.0


def _hub_offline_set() -> bool:
    """Whether HF_HUB_OFFLINE asks for offline mode (the environment, or
    huggingface_hub's reading of it at import)."""
    flag = os.environ.get("HF_HUB_OFFLINE")
    if flag is not None and flag.strip():
        return flag.strip().upper() in ("1", "ON", "YES", "TRUE")
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return False


def _hub_endpoint() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.ENDPOINT)
    except ImportError:
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def _hub_reachable(timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """Whether the Hub endpoint answers one HEAD request within ``timeout``
    seconds (any HTTP status is an answer). The request runs in a thread so
    that a hanging name lookup is bounded by the same timeout."""
    import threading
    import urllib.error
    import urllib.request

    answered = []

    def probe():
        try:
            urllib.request.urlopen(urllib.request.Request(_hub_endpoint(), method="HEAD"), timeout=timeout).close()
            answered.append(True)
        except urllib.error.HTTPError:
            answered.append(True)
        except Exception:  # noqa: BLE001 - no answer of any kind means the Hub is out of reach
            answered.append(False)

    thread = threading.Thread(target=probe, name="modgap-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answered and answered[0])


@contextlib.contextmanager
def _hub_offline_mode():
    """HF_HUB_OFFLINE=1 for the duration (in the environment and in
    huggingface_hub, which reads it once at import), restored afterwards."""
    try:
        from huggingface_hub import constants
    except ImportError:
        constants = None
    saved_env = os.environ.get("HF_HUB_OFFLINE")
    saved_flag = getattr(constants, "HF_HUB_OFFLINE", None)
    os.environ["HF_HUB_OFFLINE"] = "1"
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved_flag


def _hub_access():
    """How to reach the Hub for one load: ``(context, note)``. With
    HF_HUB_OFFLINE=1 only the cache is read (also where it was set after
    huggingface_hub was imported); otherwise the Hub is probed once
    and, where it does not answer, the load reads only the cache (so a
    missing file fails at once instead of after minutes of retries)."""
    if _hub_offline_set():
        return _hub_offline_mode(), "HF_HUB_OFFLINE=1 is set, so only the local cache was searched"
    if _hub_reachable():
        return contextlib.nullcontext(), ""
    return _hub_offline_mode(), (f"the Hugging Face Hub ({_hub_endpoint()}) did not answer within "
                                 f"{HUB_PROBE_TIMEOUT:g} s, so only the local cache was searched")


def _looks_like_path(tag: str) -> bool:
    return (
        "/" in tag or "\\" in tag or tag.startswith((".", "~"))
        or tag.endswith(_WEIGHT_SUFFIXES)
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
    config : dict or None
        The open_clip ``model_cfg`` of the architecture, where known
        (:func:`load_model` fills it in); saving a trained copy writes it
        beside the weights, so the folder loads with ``local-dir:``.
    num_workers : int or None
        DataLoader worker processes that decode and transform image files
        and PIL images while the model runs; ``None`` picks them from the
        machine (:func:`modgap.embed.default_workers`, overridable with the
        ``MODGAP_NUM_WORKERS`` environment variable), 0 decodes in this
        process.
    """

    def __init__(self, model, preprocess=None, tokenizer=None, device=None, name="clip", cache_dir=None,
                 config=None, num_workers=None):
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
        self.config = config
        if num_workers is not None and (not isinstance(num_workers, int) or isinstance(num_workers, bool)
                                        or num_workers < 0):
            raise ValueError(f"num_workers must be a non-negative integer or None, got {num_workers!r}")
        self.num_workers = num_workers

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

    @property
    def cache(self):
        """The on-disk embedding cache (:class:`modgap.cache.EmbeddingCache`)
        in :attr:`cache_dir`, or ``None``."""
        return embed.cache_for(self)

    def with_model(self, model, name: str | None = None) -> Clip:
        """A new Clip with the same preprocessing and tokenizer around ``model``."""
        return Clip(model, self.preprocess, self.tokenizer, device=self.device,
                    name=name or self.name, cache_dir=self.cache_dir, config=self.config,
                    num_workers=self.num_workers)

    def copy(self, name: str | None = None) -> Clip:
        """A deep copy of the model, for training without touching this one."""
        return self.with_model(copy.deepcopy(self.model), name=name)

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
        return embed.encode_images(self, images, batch_size=batch_size, normalize=normalize,
                                   progress=progress, cache_dir=cache_dir)

    # -- texts -----------------------------------------------------------
    def tokenize(self, texts) -> torch.Tensor:
        return self.tokenizer(list(texts))

    def encode_texts(self, texts, batch_size: int = 256, normalize: bool = True, progress=None,
                     cache_dir=None) -> torch.Tensor:
        """Embed strings; returns a float32 tensor ``[N, D]``."""
        return embed.encode_texts(self, texts, batch_size=batch_size, normalize=normalize, progress=progress,
                                  cache_dir=cache_dir)

    def class_embeddings(self, classnames, templates=("a photo of a {}.",), cache_dir=None) -> torch.Tensor:
        """The CLIP zero-shot classifier ``[C, D]``: every template per class,
        each normalised, averaged, and normalised again."""
        classnames = list(classnames)
        if not classnames:
            raise ValueError("classnames is empty")
        templates = check_templates(templates, "templates")
        prompts = [t.format(c) for c in classnames for t in templates]
        emb = self.encode_texts(prompts, normalize=True, progress=False, cache_dir=cache_dir)
        emb = emb.view(len(classnames), len(templates), -1).mean(dim=1)
        return F.normalize(emb, dim=-1)

    def zero_shot_logits(self, images, classnames, templates=("a photo of a {}.",), **kw) -> torch.Tensor:
        """``logit_scale * image @ class^T`` for ``images``."""
        img = self.encode_images(images, **kw)
        return self.logit_scale * img @ self.class_embeddings(classnames, templates).T

    def save(self, path, overwrite: bool = False) -> Path:
        """Write the model, atomically; what exists is kept unless
        ``overwrite=True``.

        A path ending in ``.safetensors`` (or ``.pt``, ``.bin``, ``.pth``)
        gets the weights alone, for ``load_model("ARCH:/path")``. Any other
        path becomes a folder in open_clip's own format,
        ``open_clip_config.json`` (architecture and preprocessing) beside
        ``open_clip_model.safetensors``, which ``load_model(path)`` and
        ``open_clip.create_model_from_pretrained("local-dir:path")`` read;
        that needs :attr:`config` (known for models from :func:`load_model`).
        """
        from .io import atomic_folder, save_state_dict

        path = Path(path).expanduser()
        if path.suffix in (".safetensors", ".pt", ".bin", ".pth"):
            return save_state_dict(self.model, path, overwrite=overwrite)
        with atomic_folder(path, overwrite=overwrite, marker="open_clip_config.json") as tmp:
            self.write_model_folder(tmp)
        return path

    def write_model_folder(self, folder) -> None:
        """Write ``open_clip_config.json`` and ``open_clip_model.safetensors``
        into the existing ``folder`` (see :meth:`save`)."""
        import open_clip

        from .io import atomic_write_text, save_state_dict

        if self.config is None:
            raise ValueError(f"{self.name!r} has no open_clip config (it was not made by load_model); "
                             "save its weights to a .safetensors file instead")
        folder = Path(folder)
        preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(self.model))
        cfg = {"model_cfg": self.config,
               "preprocess_cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in preprocess_cfg.items()}}
        atomic_write_text(folder / "open_clip_config.json", json.dumps(cfg, indent=2))
        save_state_dict(self.model, folder / "open_clip_model.safetensors", overwrite=True)
