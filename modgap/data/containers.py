"""Containers for labelled image sets and image-caption pair sets.

Images are held either as one ``uint8`` array ``[N, H, W, 3]`` (the generated
and packaged sets) or as a list of file paths (a user's own folders), which are
read lazily when a model embeds them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..validation import check_labels, check_templates

__all__ = ["DEFAULT_TEMPLATES", "ImageSet", "PairSet"]

DEFAULT_TEMPLATES = ("a photo of a {}.",)


def _check_images(images, name: str, source=None):
    """The images as a uint8 array or a list of paths, never empty."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"{name}: images must be a uint8 array of shape [N, H, W, 3], "
                f"got dtype {images.dtype} and shape {images.shape}"
            )
    elif isinstance(images, (list, tuple)):
        images = [Path(p) if isinstance(p, str) else p for p in images]
    else:
        raise TypeError(
            f"{name}: images must be a uint8 array [N, H, W, 3] or a list of file paths, "
            f"got {type(images).__name__}"
        )
    if len(images) == 0:
        raise ValueError(f"{name} is empty" + (f" (read from {source})" if source else "")
                         + "; give it at least one image")
    return images


def _check_classes(dataset, n: int, kind: str) -> None:
    """Class names and templates as lists, every template with one ``{}``,
    and the labels (if any) as indices into the class names."""
    dataset.classnames = list(dataset.classnames)
    dataset.templates = check_templates(dataset.templates, f"templates of {kind} {dataset.name!r}",
                                        allow_empty=True)
    if dataset.labels is not None:
        dataset.labels = check_labels(dataset.labels, n, len(dataset.classnames),
                                      f"labels of {kind} {dataset.name!r}", context=dataset.source or "",
                                      classnames=dataset.classnames)


def _take(images, idx: np.ndarray):
    if isinstance(images, np.ndarray):
        return images[idx]
    return [images[i] for i in idx]


@dataclass
class ImageSet:
    """A set of images for one classification task.

    Parameters
    ----------
    images : uint8 array [N, H, W, 3] or list of paths
    labels : int array [N] or None
        Class indices into ``classnames``; ``None`` for unlabelled data.
    classnames : list of str
    templates : list of str
        Prompt templates with one ``{}`` where the class name goes.
    name, task, domain : str
        Descriptive tags shown in reports.
    """

    images: object
    labels: np.ndarray | None = None
    classnames: Sequence[str] = ()
    templates: Sequence[str] = DEFAULT_TEMPLATES
    name: str = "images"
    task: str | None = None
    domain: str | None = None
    source: str | None = field(default=None, repr=False)

    def __post_init__(self):
        self.images = _check_images(self.images, f"ImageSet {self.name!r}", self.source)
        n = len(self.images)
        _check_classes(self, n, "ImageSet")

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return (
            f"ImageSet(name={self.name!r}, n={len(self)}, classes={len(self.classnames)}, "
            f"task={self.task!r}, domain={self.domain!r})"
        )

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def prompts(self) -> list[list[str]]:
        """Every template filled with every class name: ``[C][T]`` strings."""
        return [[t.format(c) for t in self.templates] for c in self.classnames]

    def subset(self, index) -> ImageSet:
        """A new set holding the images at ``index`` (ints, a slice or a mask)."""
        idx = np.atleast_1d(np.arange(len(self))[index])
        return ImageSet(
            images=_take(self.images, idx),
            labels=None if self.labels is None else self.labels[idx],
            classnames=self.classnames,
            templates=self.templates,
            name=self.name,
            task=self.task,
            domain=self.domain,
            source=self.source,
        )

    def split(self, fraction: float = 0.5, seed: int = 0) -> tuple[ImageSet, ImageSet]:
        """Two disjoint random subsets, the first holding ``fraction`` of the images."""
        if not 0 < fraction < 1:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        perm = np.random.default_rng(seed).permutation(len(self))
        cut = round(fraction * len(self))
        return self.subset(np.sort(perm[:cut])), self.subset(np.sort(perm[cut:]))


@dataclass
class PairSet:
    """Images paired with captions (one or several per image).

    Parameters
    ----------
    images : uint8 array [N, H, W, 3] or list of paths
    captions : list of list of str
        ``captions[i]`` are the captions of image ``i`` (a plain string is
        taken as a single caption).
    labels, classnames, templates : optional
        A classification task over the same images, where one exists.
    """

    images: object
    captions: Sequence
    name: str = "pairs"
    labels: np.ndarray | None = None
    classnames: Sequence[str] = ()
    templates: Sequence[str] = DEFAULT_TEMPLATES
    domain: str | None = None
    source: str | None = field(default=None, repr=False)

    def __post_init__(self):
        self.images = _check_images(self.images, f"PairSet {self.name!r}", self.source)
        n = len(self.images)
        caps = [[c] if isinstance(c, str) else list(c) for c in self.captions]
        if len(caps) != n:
            raise ValueError(
                f"PairSet {self.name!r}: {n} images but {len(caps)} caption lists"
            )
        for i, c in enumerate(caps):
            if not c:
                raise ValueError(f"PairSet {self.name!r}: image {i} has no caption")
        self.captions = caps
        _check_classes(self, n, "PairSet")

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        per = sum(len(c) for c in self.captions) / len(self)
        return f"PairSet(name={self.name!r}, n={len(self)}, captions_per_image={per:.1f})"

    def first_captions(self) -> list[str]:
        """The first caption of every image, for one-to-one paired metrics."""
        return [c[0] for c in self.captions]

    def sample_captions(self, index=None, rng: np.random.Generator | None = None) -> list[str]:
        """One caption drawn at random for each image in ``index``."""
        rng = rng if rng is not None else np.random.default_rng(0)
        idx = range(len(self)) if index is None else np.atleast_1d(index)
        return [self.captions[i][rng.integers(len(self.captions[i]))] for i in idx]

    def flat_captions(self) -> tuple[list[str], np.ndarray]:
        """All captions in one list and, for each, the index of its image."""
        texts, owner = [], []
        for i, caps in enumerate(self.captions):
            texts.extend(caps)
            owner.extend([i] * len(caps))
        return texts, np.asarray(owner, dtype=np.int64)

    def subset(self, index) -> PairSet:
        idx = np.atleast_1d(np.arange(len(self))[index])
        return PairSet(
            images=_take(self.images, idx),
            captions=[self.captions[i] for i in idx],
            name=self.name,
            labels=None if self.labels is None else self.labels[idx],
            classnames=self.classnames,
            templates=self.templates,
            domain=self.domain,
            source=self.source,
        )

    def to_imageset(self) -> ImageSet:
        """The classification view of these images (needs labels)."""
        if self.labels is None:
            raise ValueError(f"PairSet {self.name!r} has no labels to make an ImageSet of")
        return ImageSet(
            self.images, self.labels, self.classnames, self.templates,
            name=self.name, domain=self.domain, source=self.source,
        )
