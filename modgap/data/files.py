"""Loaders for a user's own images: class folders, caption files, COCO JSON.

Every loader opens each image once up front. A file that cannot be decoded is
skipped, and all such files are counted and named in a single warning, so one
corrupt file in ten thousand costs one image, not the run.

The loaders read files the way everyday tools write them:

Text encodings (caption files and COCO JSON)
    UTF-8 with or without a byte-order mark (Excel's "CSV UTF-8", LibreOffice,
    Google Sheets, text editors), and UTF-16 or UTF-32 with a byte-order mark
    (Excel's "Unicode Text", Notepad's old "Unicode"). Anything else is an
    error, not a guess: a file that is not valid UTF-8 (such as Excel's plain
    "CSV" on Windows, which is cp1252) raises a ``ValueError`` naming the file
    and line and saying how to fix it: save it as UTF-8 or pass ``encoding=``.
    Guessing a legacy code page would turn captions to gibberish silently
    whenever the guess is wrong, so the loaders never guess.
Line ends
    ``\\n`` (Linux, macOS), ``\\r\\n`` (Windows) and a lone ``\\r`` (old Mac
    Excel), with or without a final line end.
CSV and TSV (:func:`from_captions`)
    A header row, then one row per image-caption pair. The delimiter is a
    comma, semicolon (Excel in many European locales), tab or ``|``, taken as
    the one whose header row holds the asked-for columns; an Excel
    ``sep=;`` first line fixes it. Header names match ignoring case and
    surrounding spaces. Quoted fields may hold delimiters, doubled quotes and
    line breaks. Empty rows (a spreadsheet's cleared rows, blank lines) and a
    trailing delimiter are ignored. A row with more filled fields than the
    header is an error, as it is a caption with an unquoted delimiter.
JSON Lines and JSON (:func:`from_captions`)
    One JSON object on each line; blank lines are ignored. A ``.jsonl`` file
    that holds one JSON array of objects is read as that array. Comments,
    trailing commas and objects split over several lines are errors naming
    the line.
Image paths
    Relative to ``image_root`` (default: the caption file's folder). A path
    written with Windows backslashes is also tried with forward slashes.
Class folders (:func:`from_folder`)
    One sub-folder per class. Hidden files and folders (a name starting with
    ``.``: ``.DS_Store``, macOS ``._`` files, JupyterLab's
    ``.ipynb_checkpoints``, ``.git``), ``__MACOSX``, ``__pycache__``,
    ``Thumbs.db``, ``desktop.ini``, ``$RECYCLE.BIN``,
    ``System Volume Information``, ``@eaDir`` and ``~$`` lock files are
    skipped at every level. Extensions match ignoring case (``.JPG``),
    symlinked images and class folders are followed, and sub-folders inside
    a class folder are not read.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np

from .containers import DEFAULT_TEMPLATES, ImageSet, PairSet

__all__ = ["IMAGE_EXTENSIONS", "from_captions", "from_coco", "from_folder", "read_image", "read_images",
           "readable_paths", "warn_unreadable"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# Folders and files that operating systems, archivers and tools leave beside
# a user's images; compared in lower case. Names starting with "." are skipped too.
_JUNK_NAMES = frozenset({"__macosx", "__pycache__", "$recycle.bin", "system volume information", "@eadir",
                         "thumbs.db", "ehthumbs.db", "desktop.ini"})

# Longest first, so that a UTF-32 mark is not taken for a UTF-16 one.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))

_CSV_SAVE_AS = ("save it as UTF-8 (Excel: File > Save As > 'CSV UTF-8 (Comma delimited)'; LibreOffice: "
                "Character set 'Unicode (UTF-8)')")
_TEXT_SAVE_AS = "save it as UTF-8 in your editor"


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


def _is_junk(path: Path) -> bool:
    """Whether a file or folder is one that tools leave beside the data."""
    name = path.name
    return name.startswith((".", "~$")) or name.lower() in _JUNK_NAMES


def _line_of(text: str) -> int:
    """The 1-based number of the line on which ``text`` ends."""
    return len(re.split(r"\r\n|\r|\n", text))


def _read_text(file: Path, encoding: str | None, save_as: str) -> str:
    """The text of ``file``: decoded as ``encoding`` if given, else by its
    byte-order mark, else as UTF-8; any byte-order mark dropped. A file that
    does not decode is a ``ValueError`` naming it, the line and ``save_as``."""
    data = file.read_bytes()
    if data.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):
        raise ValueError(f"{file} is an Excel workbook or other binary file, not text; "
                         f"open it in its program and {save_as}")
    if encoding is None:
        codec = next((c for bom, c in _BOMS if data.startswith(bom)), "utf-8")
        if codec == "utf-8" and b"\x00" in data:
            raise ValueError(f"{file} holds NUL bytes, so it is not UTF-8 text: {save_as}, or if it is "
                             "UTF-16 without a byte-order mark pass encoding='utf-16-le'")
    else:
        try:
            codec = codecs.lookup(encoding).name
        except LookupError:
            raise ValueError(f"{file}: unknown encoding {encoding!r}; pass a Python codec name such "
                             "as 'utf-8', 'cp1252' or 'utf-16'") from None
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as e:
        line = _line_of(data[:e.start].decode(codec, errors="replace"))
        name = "UTF-8" if codec in ("utf-8", "utf-8-sig") else codec
        raise ValueError(
            f"{file}: line {line} is not valid {name} text (byte {data[e.start:e.start + 1].hex(' ')} "
            f"cannot be decoded); {save_as}, or pass encoding= the one it was saved in (Windows "
            "programs in Western Europe and the Americas often write encoding='cp1252')"
        ) from None
    return text.removeprefix("\ufeff")


def _resolve(image: str, base: Path) -> Path:
    p = Path(image)
    p = p if p.is_absolute() else base / p
    if "\\" in image and os.sep == "/" and not p.exists():
        alt = Path(image.replace("\\", "/"))
        alt = alt if alt.is_absolute() else base / alt
        if alt.exists():
            return alt
    return p


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def _pairs_from_rows(rows, file: Path, image_root, name, unit: str = "row"):
    """A PairSet from ``(image, caption, where)`` rows; ``where`` names the
    row in messages, as a string or as a (name, where-in-the-file) pair."""
    base = Path(image_root) if image_root is not None else file.parent
    order: dict[Path, list[str]] = {}
    for image, caption, where in rows:
        image, caption = _text(image), _text(caption)
        if not image or not caption:
            label, at = where if isinstance(where, tuple) else (where, "")
            lacks = "image path" if not image else "caption"
            raise ValueError(f"{file}: {label} needs both an image path and a caption, but{at} it has no "
                             f"{lacks}; fill it in or delete the {unit}")
        order.setdefault(_resolve(image, base), []).append(caption)
    if not order:
        raise ValueError(f"{file} holds no image-caption rows; give one {unit} per image-caption pair")
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


def from_folder(root, templates=DEFAULT_TEMPLATES, name: str | None = None,
                classnames=None, extensions=IMAGE_EXTENSIONS) -> ImageSet:
    """An :class:`ImageSet` from a folder with one sub-folder per class.

    ``root/cat/001.jpg`` gets the class ``"cat"``. Class names are the
    sub-folder names in sorted order unless ``classnames`` gives them (then a
    sub-folder not in that list is an error). Unreadable images are skipped
    with one warning.

    Layout accepted: files directly inside each class folder whose extension
    is in ``extensions``, matched ignoring case (``.JPG`` is a JPEG; an
    extension may be given without its dot). Symlinked images and class
    folders are followed; a dangling symlink counts as an unreadable image.
    Hidden files and folders (a leading ``.``: ``.DS_Store``, macOS ``._``
    files, JupyterLab's ``.ipynb_checkpoints``), ``__MACOSX``,
    ``__pycache__``, ``Thumbs.db``, ``desktop.ini``, ``$RECYCLE.BIN``,
    ``System Volume Information``, ``@eaDir`` and ``~$`` lock files are
    skipped, at the top level and inside class folders; so are other files,
    and folders nested inside a class folder.

    A class folder with no images (perhaps only junk) stays a class, so that
    label numbers keep matching another folder with the same classes (a
    train and a test folder, say), and one warning names such folders; delete
    a folder to drop its class.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"from_folder: {root} is not a folder")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and not _is_junk(d))
    if not dirs:
        raise ValueError(f"from_folder: {root} has no sub-folders; put each class's images in root/CLASS/ "
                         "(hidden folders such as .ipynb_checkpoints and __MACOSX do not count)")
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
    paths, labels, empty = [], [], []
    for d in dirs:
        files = sorted(f for f in d.iterdir()
                       if f.suffix.lower() in exts and not _is_junk(f) and not f.is_dir())
        if not files:
            empty.append(d.name)
        paths.extend(files)
        labels.extend([classnames.index(d.name)] * len(files))
    if not paths:
        raise ValueError(f"from_folder: no image files ({', '.join(sorted(exts))}) under {root}")
    if empty:
        warnings.warn(f"from_folder({root}): class folder(s) {', '.join(empty)} hold no images; they stay "
                      "classes with no images (delete a folder to drop its class)", stacklevel=2)
    good, bad = readable_paths(paths, f"from_folder({root})")
    labels = np.delete(np.asarray(labels, dtype=np.int64), bad)
    return ImageSet(good, labels, classnames, templates, name=name or root.name, source=str(root))


def _column(header: list[str], want: str) -> int | None:
    """The index of column ``want`` in ``header``: an exact match first, then
    one ignoring case and surrounding spaces."""
    names = [h.strip() for h in header]
    if want in names:
        return names.index(want)
    folded = [n.casefold() for n in names]
    key = want.strip().casefold()
    return folded.index(key) if key in folded else None


def _first_row(text: str, delimiter: str):
    """The first row with any content, its line number and the reader left
    just after it; no row if quotes do not fit this delimiter. The reader
    is strict, so that an unclosed quote is an error rather than a caption
    that swallows the rows after it."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        for row in reader:
            if any(c.strip() for c in row):
                return row, reader.line_num, reader
    except csv.Error:
        pass
    return [], reader.line_num, reader


def _delimited_rows(file: Path, text: str, image_column: str, caption_column: str):
    """``(image, caption, where)`` rows of a CSV or TSV text."""
    first = re.match(r"[ \t]*sep=(.)[ \t]*(\r\n|\r|\n|$)", text, flags=re.IGNORECASE)
    skipped = 0
    if first:
        candidates = (first.group(1),)
        text, skipped = text[first.end():], 1
    elif file.suffix.lower() == ".tsv":
        candidates = ("\t", ",", ";", "|")
    else:
        candidates = (",", ";", "\t", "|")
    parsed = []
    for d in candidates:
        header, line, reader = _first_row(text, d)
        cols = (_column(header, image_column), _column(header, caption_column))
        if None not in cols:
            break
        parsed.append((len(header), header, line))
    else:
        _, header, line = max(parsed, key=lambda p: p[0])
        if not header:
            raise ValueError(f"{file} holds no image-caption rows: it is empty")
        need = image_column if _column(header, image_column) is None else caption_column
        raise ValueError(
            f"{file}: no column {need!r} in its header row (line {line + skipped}); its columns are "
            f"{[h.strip() for h in header]}. Name the columns to read with image_column= and "
            "caption_column= (matched ignoring case); the delimiter may be a comma, semicolon or tab"
        )
    rows, n = [], 0
    width = len(header)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise ValueError(f"{file}: line {start + skipped} cannot be read as {file.suffix[1:].upper()} "
                             f"({e}); check its quotes: a field that starts with a quote must end with "
                             'one, and a quote inside it is written twice ("")') from None
        if not any(c.strip() for c in row):
            continue
        n += 1
        where = (f"row {n}", f" on line {start + skipped}")
        if any(c.strip() for c in row[width:]):
            raise ValueError(
                f"{file}: row {n} (line {start + skipped}) has {len(row)} fields but the header has {width}; a caption that holds "
                f"the delimiter {d!r} must be in double quotes (a spreadsheet adds them when it saves)"
            )
        image, caption = (row[i] if i < len(row) else "" for i in cols)
        rows.append((image, caption, where))
    return rows


def _jsonl_rows(file: Path, text: str, image_column: str, caption_column: str):
    """``(image, caption, where)`` rows of a JSON Lines text (or of one JSON
    array of objects saved under a .jsonl name)."""
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError:
            records = None
        if isinstance(records, list) and all(isinstance(r, dict) for r in records):
            return [(r.get(image_column), r.get(caption_column), f"item {i}") for i, r in enumerate(records)]
    rows = []
    for ln, line in enumerate(re.split(r"\r\n|\r|\n", text), 1):
        s = line.strip()
        if not s:
            continue
        if s.startswith(("//", "#", "/*")):
            raise ValueError(f"{file}: line {ln} is a comment ({s[:40]!r}); JSON Lines has no comments, "
                             "delete the line")
        try:
            rec = json.loads(s)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{file}: line {ln} is not valid JSON ({e.msg}, column {e.colno}); JSON Lines needs each "
                "object whole on one line with nothing after it (no trailing comma, no object split over "
                "several lines)"
            ) from None
        if not isinstance(rec, dict):
            raise ValueError(f"{file}: line {ln} is not a JSON object; each line must be one "  # noqa: TRY004
                             f"{{...}} object with {image_column!r} and {caption_column!r}")
        rows.append((rec.get(image_column), rec.get(caption_column), f"line {ln}"))
    return rows


def _load_json(file: Path, encoding: str | None, note: str = ""):
    text = _read_text(file, encoding, _TEXT_SAVE_AS)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{file} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}){note}"
                         ) from None


def from_captions(file, image_root=None, image_column: str = "image",
                  caption_column: str = "caption", name: str | None = None,
                  encoding: str | None = None) -> PairSet:
    """A :class:`PairSet` from a CSV, TSV, JSONL or JSON (a list of objects)
    file of image path + caption.

    Rows that share an image path give that image several captions. Relative
    paths are read from ``image_root`` (default: the file's folder); a path
    with Windows backslashes is also tried with forward slashes. Spaces
    around paths and captions are dropped.

    Encodings accepted: UTF-8 with or without a byte-order mark, and UTF-16
    or UTF-32 with one; for anything else pass ``encoding=`` (Excel's plain
    "CSV" on Windows is ``"cp1252"``). An undecodable file is a
    ``ValueError`` naming the line, never a guess.

    ``.csv``/``.tsv``: a header row naming the columns (matched ignoring case
    and surrounding spaces), then one row per pair; comma, semicolon, tab or
    ``|`` delimited (found from the header row, or from an Excel ``sep=``
    line); any line ends; quoted fields may span lines; empty rows and a
    trailing delimiter are ignored. ``.jsonl``: one object per line, blank
    lines ignored, or one JSON array of objects. ``.json``: a list of
    objects. Errors name the file and the row or line, and say what to fix.
    """
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"from_captions: caption file {file} does not exist")
    suffix = file.suffix.lower()
    if suffix == ".json":
        records = _load_json(file, encoding, "; a .json caption file holds a list of objects (use .jsonl for "
                                              "one object a line)")
        if isinstance(records, dict) and "annotations" in records:
            raise ValueError(f"{file} looks like COCO captions; read it with from_coco")
        if not isinstance(records, list):
            raise ValueError(f"{file} must hold a list of objects with {image_column!r} and {caption_column!r}")
        rows = []
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise ValueError(f"{file}: item {i} is not a JSON object")  # noqa: TRY004 - a bad file
            rows.append((rec.get(image_column), rec.get(caption_column), f"item {i}"))
        return _pairs_from_rows(rows, file, image_root, name, unit="item")
    if suffix == ".jsonl":
        rows = _jsonl_rows(file, _read_text(file, encoding, _TEXT_SAVE_AS), image_column, caption_column)
        return _pairs_from_rows(rows, file, image_root, name, unit="line")
    if suffix in (".csv", ".tsv"):
        rows = _delimited_rows(file, _read_text(file, encoding, _CSV_SAVE_AS), image_column, caption_column)
        return _pairs_from_rows(rows, file, image_root, name)
    hint = {".txt": "; a tab-separated .txt (Excel's 'Unicode Text') can be renamed to .tsv",
            ".xlsx": f"; {_CSV_SAVE_AS}", ".xls": f"; {_CSV_SAVE_AS}", ".ods": f"; {_CSV_SAVE_AS}"}
    raise ValueError(f"from_captions: {file} must end in .csv, .tsv, .jsonl or .json{hint.get(suffix, '')}")


def _id_key(value):
    """An image id as a lookup key: ``7`` and ``"7"`` are the same image."""
    return str(value).strip() if isinstance(value, (int, str)) and not isinstance(value, bool) else repr(value)


def from_coco(file, image_root, name: str | None = None, encoding: str | None = None) -> PairSet:
    """A :class:`PairSet` from a COCO-style captions JSON
    (``images[].id/file_name`` and ``annotations[].image_id/caption``).

    Encodings accepted: as :func:`from_captions` (UTF-8 with or without a
    byte-order mark, UTF-16/32 with one, else ``encoding=``). Image ids match
    whether written as numbers or strings. Every ``images`` entry needs an
    ``id`` and a ``file_name`` (its path under ``image_root``), and every
    annotation a ``caption`` (a COCO instances file has none: it is an error
    saying so). Annotations whose ``image_id`` is absent or not among the
    images are skipped with one warning that counts them; if none are left
    that is an error.
    """
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"from_coco: {file} does not exist")
    data = _load_json(file, encoding)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"{file} lacks the COCO keys 'images' and 'annotations'")
    for key in ("images", "annotations"):
        if not isinstance(data[key], list):
            raise ValueError(  # noqa: TRY004 - a bad file
                f"{file}: '{key}' must be a list, not {type(data[key]).__name__}")
    by_id = {}
    for i, im in enumerate(data["images"]):
        fname = im.get("file_name") if isinstance(im, dict) else None
        if not isinstance(im, dict) or "id" not in im or not isinstance(fname, str) or not fname.strip():
            raise ValueError(f"{file}: images[{i}] needs an 'id' and a 'file_name' (the image's path under "
                             f"image_root), got {json.dumps(im)[:120]}")
        by_id[_id_key(im["id"])] = fname
    rows, orphans = [], []
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or "caption" not in a:
            kind = (" It looks like a COCO instances (detection) file; from_coco reads COCO captions files "
                    "(captions_*.json)") if isinstance(a, dict) and ("bbox" in a or "segmentation" in a) else ""
            raise ValueError(f"{file}: annotations[{i}] needs an 'image_id' and a 'caption'.{kind}")
        label = a.get("id", f"[{i}]")
        if a.get("image_id") is None:
            orphans.append(f"annotation {label} has no image_id")
        elif _id_key(a["image_id"]) not in by_id:
            orphans.append(f"annotation {label} names unknown image_id {a['image_id']}")
        else:
            rows.append((by_id[_id_key(a["image_id"])], a["caption"], f"annotations[{i}]"))
    if orphans and not rows:
        raise ValueError(f"{file} holds no image-caption rows: none of its {len(orphans)} annotations has an "
                         f"image_id listed in 'images' (e.g. {orphans[0]})")
    if orphans:
        warnings.warn(f"{file}: skipped {len(orphans)} of {len(data['annotations'])} annotations whose "
                      f"image_id is not among the 'images' (e.g. {orphans[0]})", stacklevel=2)
    return _pairs_from_rows(rows, file, image_root, name, unit="annotation")
