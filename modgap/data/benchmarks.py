"""Standard zero-shot classification sets by name, read from the files
torchvision's dataset classes read: ``load_benchmark("cifar10",
root="~/data")`` or ``modgap.data.load("cifar10", root="~/data")``.

The names are CLIP_benchmark's. The reading is torchvision's own code (its
dataset class for each set), so the on-disk layout is the one its
``download=True`` writes. Class names and prompt templates come from the
``clip-benchmark`` package's English files where it is installed (``pip
install 'modgap[benchmarks]'``), the field's prompts for each set; without
it, from torchvision's class list with OpenAI's generic prompt.

Nothing is fetched unless asked: with ``download=False`` (the default) a
set whose files are not under ``root`` fails at once with its name, the
folder looked in, the layout expected there and ``download=True`` as the
way to fetch it on a machine with the internet.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .containers import DEFAULT_TEMPLATES, ImageSet

__all__ = ["BENCHMARKS", "Benchmark", "benchmark_prompts", "load_benchmark"]


@dataclass(frozen=True)
class Benchmark:
    """How one standard set is read: torchvision's class, the keyword that
    picks a split (``None``: a boolean ``train``), the layout under
    ``root`` that its reader expects, and how its images are held."""

    torchvision_class: str
    layout: str
    split_keyword: str | None = None
    splits: tuple = ("train", "test")
    folder_of_images: bool = False


BENCHMARKS = {
    "cifar10": Benchmark("CIFAR10", "ROOT/cifar-10-batches-py/ with data_batch_1 ... data_batch_5, test_batch "
                                    "and batches.meta (the 'python version' archive, unpacked)"),
    "cifar100": Benchmark("CIFAR100", "ROOT/cifar-100-python/ with train, test and meta (the 'python version' "
                                      "archive, unpacked)"),
    "mnist": Benchmark("MNIST", "ROOT/MNIST/raw/ with train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                                "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte"),
    "stl10": Benchmark("STL10", "ROOT/stl10_binary/ with train_X.bin, train_y.bin, test_X.bin, test_y.bin "
                                "and class_names.txt", split_keyword="split"),
    "eurosat": Benchmark("EuroSAT", "ROOT/eurosat/2750/<class>/<image>.jpg (the RGB archive, unpacked); "
                                    "one split, all images", splits=("test",), folder_of_images=True),
    "country211": Benchmark("Country211", "ROOT/country211/{train,valid,test}/<country code>/<image>.jpg",
                            split_keyword="split", splits=("train", "valid", "test"), folder_of_images=True),
}


def benchmark_prompts(name: str, fallback_classes) -> tuple[list[str], list[str], str]:
    """``(classnames, templates, source)`` of a set: CLIP_benchmark's English
    class names and templates where ``clip-benchmark`` is installed and
    names the set, else ``fallback_classes`` (underscores as spaces) and
    OpenAI's generic prompt. Templates come back in OpenAI's ``{}`` form."""
    from ..validation import check_templates

    fallback = [str(c).replace("_", " ") for c in fallback_classes]
    try:
        import clip_benchmark
    except ImportError:
        return fallback, list(DEFAULT_TEMPLATES), "torchvision"
    folder = Path(clip_benchmark.__file__).parent / "datasets"
    try:
        classnames = json.loads((folder / "en_classnames.json").read_text(encoding="utf-8"))
        templates = json.loads((folder / "en_zeroshot_classification_templates.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return fallback, list(DEFAULT_TEMPLATES), "torchvision"
    if name not in classnames:
        return fallback, list(DEFAULT_TEMPLATES), "torchvision"
    if len(classnames[name]) != len(fallback):
        raise ValueError(f"{name}: clip-benchmark names {len(classnames[name])} classes but the files hold "
                         f"{len(fallback)}; check the files under root")
    return list(classnames[name]), list(check_templates(templates.get(name, DEFAULT_TEMPLATES), "templates")), \
        "clip-benchmark"


def _missing(name: str, root: Path, spec: Benchmark, why: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{name}: its files are not under {root} ({why}). Expected layout: {spec.layout.replace('ROOT', str(root))}. "
        f"On a machine with the internet, load it once with download=True (modgap.data.load({name!r}, "
        f"root={str(root)!r}, download=True)) to fetch it there, or point root= at the folder that holds it.")


def load_benchmark(name: str, root, split: str = "test", download: bool = False, n: int | None = None,
                   seed: int = 0) -> ImageSet:
    """A standard classification set as an :class:`ImageSet`.

    Parameters
    ----------
    name : str
        One of :data:`BENCHMARKS` (CLIP_benchmark's names).
    root : path
        The folder that holds the set in torchvision's layout (the error
        for a missing set says what goes where).
    split : str
        ``"test"`` (default, the split zero-shot results are reported on)
        or another of the set's splits.
    download : bool
        Let torchvision fetch the set into ``root`` when it is not there.
        Off by default: nothing is ever fetched unasked.
    n, seed : optional
        A random subset of ``n`` images, drawn with ``seed``.

    Returns
    -------
    ImageSet
        uint8 images for the sets torchvision holds in memory (CIFAR, MNIST,
        STL-10), file paths for folders of images; labels, class names and
        templates (see :func:`benchmark_prompts`), ``source`` naming where
        the prompts came from.
    """
    import torchvision.datasets as tvd

    if name not in BENCHMARKS:
        import difflib

        close = difflib.get_close_matches(name, list(BENCHMARKS), n=3)
        raise ValueError(f"unknown standard set {name!r}; " + (f"did you mean {close}? " if close else "")
                         + f"modgap reads: {sorted(BENCHMARKS)}")
    spec = BENCHMARKS[name]
    if split not in spec.splits:
        raise ValueError(f"split: {name} has the splits {list(spec.splits)}, got {split!r}")
    if root is None:
        raise ValueError(f"root: give the folder that holds {name} ({spec.layout}), or download=True to fetch it")
    root = Path(root).expanduser()
    kwargs = {"root": str(root), "download": bool(download)}
    if len(spec.splits) > 1:
        if spec.split_keyword is None:
            kwargs["train"] = split == "train"
        else:
            kwargs[spec.split_keyword] = split
    if not download and not root.is_dir():
        raise _missing(name, root, spec, "the folder does not exist")
    try:
        ds = getattr(tvd, spec.torchvision_class)(**kwargs)
    except RuntimeError as e:
        if download:
            raise
        raise _missing(name, root, spec, str(e).split(".")[0].lower()) from None
    if spec.folder_of_images:
        images = [Path(p) for p, _ in ds.samples]
        labels = np.asarray([y for _, y in ds.samples], dtype=np.int64)
    else:
        images = np.asarray(ds.data)
        if images.ndim == 3:  # grey digits
            images = np.repeat(images[..., None], 3, axis=-1)
        elif images.shape[1] == 3:  # STL-10 keeps channels first
            images = images.transpose(0, 2, 3, 1)
        images = np.ascontiguousarray(images, dtype=np.uint8)
        labels = np.asarray(ds.targets if hasattr(ds, "targets") else ds.labels, dtype=np.int64)
    classnames, templates, source = benchmark_prompts(name, ds.classes)
    if n is not None:
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        keep = np.sort(np.random.default_rng(seed).permutation(len(labels))[:n])
        images = [images[i] for i in keep] if isinstance(images, list) else images[keep]
        labels = labels[keep]
    return ImageSet(images, labels, classnames, templates, name=name, task="class", domain=split,
                    source=f"{spec.torchvision_class} under {root}; prompts from {source}")
