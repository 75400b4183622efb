"""Loaders for a user's own images: class folders, caption files, COCO JSON.

Every loader opens each image once up front. A file that cannot be decoded is
skipped, and all such files are counted and named in a single warning, so one
corrupt file in ten thousand costs one image, not the run.
"""
from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np

from .containers import DEFAULT_TEMPLATES, ImageSet, PairSet

__all__ = ["IMAGE_EXTENSIONS", "from_captions", "from_coco", "from_folder", "read_image", "read_images",
           "readable_paths", "warn_unreadable"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def read_image(path):
    """Open an image file as an RGB PIL image (decoded now, not lazily)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return im.convert("RGB")


def read_images(paths) -> tuple[list, list[int]]:
    """Decode files: the RGB PIL images of those that decode, in order, and
    the positions in ``paths`` of those that do not (no warning; see
    :func:`warn_unreadable`)."""
    images, bad = [], []
    for i, p in enumerate(paths):
        try:
            images.append(read_image(p))
        except Exception:  # noqa: BLE001 - any decoder error means the file is unusable
            bad.append(i)
    return images, bad


def warn_unreadable(bad_paths, total: int, where: str, note: str = "", stacklevel: int = 3) -> None:
    """One warning that counts and names (the first ten of) ``bad_paths``,
    said of ``where`` and followed by ``note``; ``stacklevel`` counts from
    the caller of this function."""
    if not bad_paths:
        return
    names = ", ".join(str(p) for p in bad_paths[:10])
    more = f" and {len(bad_paths) - 10} more" if len(bad_paths) > 10 else ""
    warnings.warn(f"{where}: skipped {len(bad_paths)} of {total} images that could not be read: "
                  f"{names}{more}{note}", stacklevel=stacklevel + 1)


def readable_paths(paths, where: str | None) -> tuple[list[Path], list[int]]:
    """The paths that decode, and the positions of those that do not; one
    warning, said of ``where``, names the bad ones (none if ``where`` is
    ``None``). Each image is decoded and dropped at once, so memory stays
    flat however many files there are."""
    good, bad = [], []
    for i, p in enumerate(paths):
        if read_images([p])[1]:
            bad.append(i)
        else:
            good.append(p)
    if where is not None:
        warn_unreadable([paths[i] for i in bad], len(paths), where, stacklevel=3)
    return good, bad


def from_folder(root, templates=DEFAULT_TEMPLATES, name: str | None = None,
                classnames=None, extensions=IMAGE_EXTENSIONS) -> ImageSet:
    """An :class:`ImageSet` from a folder with one sub-folder per class.

    ``root/cat/001.jpg`` gets the class ``"cat"``. Class names are the
    sub-folder names in sorted order unless ``classnames`` gives them (then a
    sub-folder not in that list is an error). Unreadable images are skipped
    with one warning.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"from_folder: {root} is not a folder")
    dirs = sorted(d for d in root.iterdir() if d.is_dir())
    if not dirs:
        raise ValueError(f"from_folder: {root} has no sub-folders; put each class's images in root/CLASS/")
    found = [d.name for d in dirs]
    if classnames is None:
        classnames = found
    else:
        classnames = list(classnames)
        extra = [c for c in found if c not in classnames]
        if extra:
            raise ValueError(
                f"from_folder: sub-folders {extra} of {root} are not in classnames {classnames}"
            )
    paths, labels = [], []
    for d in dirs:
        for f in sorted(d.iterdir()):
            if f.suffix.lower() in extensions:
                paths.append(f)
                labels.append(classnames.index(d.name))
    if not paths:
        raise ValueError(f"from_folder: no image files ({', '.join(extensions)}) under {root}")
    good, bad = readable_paths(paths, f"from_folder({root})")
    labels = np.delete(np.asarray(labels, dtype=np.int64), bad)
    return ImageSet(good, labels, classnames, templates, name=name or root.name, source=str(root))


def _resolve(image: str, base: Path, file: Path) -> Path:
    p = Path(image)
    return p if p.is_absolute() else base / p


def _pairs_from_rows(rows, file: Path, image_root, name):
    base = Path(image_root) if image_root is not None else file.parent
    order: dict[Path, list[str]] = {}
    for r, (image, caption) in enumerate(rows):
        if not image or caption is None or str(caption).strip() == "":
            raise ValueError(f"{file}: row {r + 1} needs both an image path and a caption")
        order.setdefault(_resolve(str(image), base, file), []).append(str(caption))
    if not order:
        raise ValueError(f"{file} holds no image-caption rows")
    missing = [p for p in order if not p.exists()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:5])
        raise FileNotFoundError(
            f"{file} points at {len(missing)} image(s) that do not exist, e.g. {shown}; "
            f"image paths are read relative to {base} (pass image_root= to change that)"
        )
    paths = list(order)
    good, bad = readable_paths(paths, str(file))
    bad = set(bad)
    caps = [order[p] for i, p in enumerate(paths) if i not in bad]
    return PairSet(good, caps, name=name or file.stem, source=str(file))


def from_captions(file, image_root=None, image_column: str = "image",
                  caption_column: str = "caption", name: str | None = None) -> PairSet:
    """A :class:`PairSet` from a CSV, TSV, JSONL or JSON (a list of objects)
    file of image path + caption.

    Rows that share an image path give that image several captions. Relative
    paths are read from ``image_root`` (default: the file's folder).
    """
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"from_captions: caption file {file} does not exist")
    rows = []
    if file.suffix.lower() == ".json":
        with open(file, encoding="utf-8") as fh:
            try:
                records = json.load(fh)
            except json.JSONDecodeError as e:
                raise ValueError(f"{file} is not valid JSON ({e.msg}); a .json caption file holds a list "
                                 "of objects (use .jsonl for one object a line)") from None
        if isinstance(records, dict) and "annotations" in records:
            raise ValueError(f"{file} looks like COCO captions; read it with from_coco")
        if not isinstance(records, list):
            raise ValueError(f"{file} must hold a list of objects with {image_column!r} and {caption_column!r}")
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise ValueError(f"{file}: item {i} is not a JSON object")  # noqa: TRY004 - a bad file
            rows.append((rec.get(image_column), rec.get(caption_column)))
    elif file.suffix.lower() == ".jsonl":
        with open(file, encoding="utf-8") as fh:
            for ln, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{file}: line {ln} is not valid JSON ({e.msg})") from None
                if not isinstance(rec, dict):
                    raise ValueError(f"{file}: line {ln} is not a JSON object")  # noqa: TRY004 - a bad file
                rows.append((rec.get(image_column), rec.get(caption_column)))
    elif file.suffix.lower() in (".csv", ".tsv"):
        with open(file, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if file.suffix.lower() == ".tsv" else ",")
            cols = reader.fieldnames or []
            for need in (image_column, caption_column):
                if need not in cols:
                    raise ValueError(f"{file}: no column {need!r}; its columns are {cols}")
            rows = [(r[image_column], r[caption_column]) for r in reader]
    else:
        raise ValueError(f"from_captions: {file} must end in .csv, .tsv, .jsonl or .json")
    return _pairs_from_rows(rows, file, image_root, name)


def from_coco(file, image_root, name: str | None = None) -> PairSet:
    """A :class:`PairSet` from a COCO-style captions JSON
    (``images[].id/file_name`` and ``annotations[].image_id/caption``)."""
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"from_coco: {file} does not exist")
    with open(file, encoding="utf-8") as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError as e:
            raise ValueError(f"{file} is not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"{file} lacks the COCO keys 'images' and 'annotations'")
    by_id = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise ValueError(f"{file}: images[{i}] needs an 'id' and a 'file_name'")
        by_id[im["id"]] = im["file_name"]
    rows = []
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or "image_id" not in a or "caption" not in a:
            raise ValueError(f"{file}: annotations[{i}] needs an 'image_id' and a 'caption'")
        if a["image_id"] not in by_id:
            raise ValueError(f"{file}: annotation {a.get('id', i)} names unknown image_id {a['image_id']}")
        rows.append((by_id[a["image_id"]], a["caption"]))
    return _pairs_from_rows(rows, file, image_root, name)
