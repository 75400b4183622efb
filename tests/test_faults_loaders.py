"""The file loaders against files as everyday tools write them: CSV from Excel
and LibreOffice, JSON Lines from text editors, class folders carrying the
junk that macOS, Windows and JupyterLab leave behind, and COCO JSON from
Windows editors and annotation tools.

Each case writes the exact bytes the tool produces and checks either the
result (the right images, captions and labels, and no junk read) or a clear
error that names the file."""
import json
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from modgap.data import from_captions, from_coco, from_folder


def png(path, seed=0, fmt=None):
    """A tiny 8x8 RGB image (PNG unless ``fmt`` says otherwise)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path, format=fmt)
    return path


def call(fn, *args, **kwargs):
    """``fn``'s result and the messages of every warning it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, [str(w.message) for w in caught]


@pytest.fixture
def images(tmp_path):
    """a.png, b.png and c.png under tmp_path/img."""
    return [png(tmp_path / "img" / f"{n}.png", seed=i) for i, n in enumerate("abc")]


def pairs_of(p, root):
    """A PairSet as (image path relative to ``root`` in posix form, captions)."""
    return [(img.relative_to(root).as_posix(), caps) for img, caps in zip(p.images, p.captions)]


# -- caption files: read right -------------------------------------------------

AB = [("img/a.png", ["a red square"]), ("img/b.png", ["a blue circle"])]

CAPTION_FILES = {
    # Excel "CSV UTF-8 (Comma delimited)": a BOM and CRLF line ends.
    "excel_csv_utf8_bom_crlf": (
        "caps.csv", "\ufeffimage,caption\r\nimg/a.png,a red square\r\nimg/b.png,a blue circle\r\n".encode(),
        {}, AB),
    # Excel with a European locale: semicolons, so a comma in a caption needs no quotes.
    "excel_semicolon_european": (
        "caps.csv", "\ufeffimage;caption\r\nimg/a.png;un carré rouge, petit\r\nimg/b.png;un cercle bleu\r\n"
        .encode(), {}, [("img/a.png", ["un carré rouge, petit"]), ("img/b.png", ["un cercle bleu"])]),
    # Excel "Unicode Text": UTF-16 little-endian with a BOM, tab-separated, CRLF.
    "excel_unicode_text_utf16_tsv": (
        "caps.tsv", "image\tcaption\r\nimg/a.png\tÄpfel, rot\r\nimg/b.png\ta blue circle\r\n"
        .encode("utf-16"), {}, [("img/a.png", ["Äpfel, rot"]), ("img/b.png", ["a blue circle"])]),
    # The same export renamed to .csv by the user.
    "excel_unicode_text_renamed_csv": (
        "caps.csv", "image\tcaption\r\nimg/a.png\ta red square\r\nimg/b.png\ta blue circle\r\n"
        .encode("utf-16"), {}, AB),
    "utf16_big_endian_bom": (
        "caps.csv", b"\xfe\xff" + "image,caption\r\nimg/a.png,a red square\r\nimg/b.png,a blue circle\r\n"
        .encode("utf-16-be"), {}, AB),
    # LibreOffice with "Quote all text cells".
    "libreoffice_quote_all": (
        "caps.csv", b'"image","caption"\n"img/a.png","a red square"\n"img/b.png","a blue circle"\n', {}, AB),
    # Rows a spreadsheet keeps after cells were cleared: empty fields, then blank lines.
    "trailing_empty_rows": (
        "caps.csv", b"image,caption\r\nimg/a.png,a red square\r\nimg/b.png,a blue circle\r\n,\r\n,\r\n\r\n\r\n",
        {}, AB),
    "spaces_around_header_names": (
        "caps.csv", b" image , caption \nimg/a.png,a red square\nimg/b.png,a blue circle\n", {}, AB),
    "header_in_other_case": (
        "caps.csv", b"Image,Caption\r\nimg/a.png,a red square\r\nimg/b.png,a blue circle\r\n", {}, AB),
    "header_upper_case_asked_lower": (
        "caps.tsv", b"FILE\tTEXT\nimg/a.png\ta red square\nimg/b.png\ta blue circle\n",
        {"image_column": "file", "caption_column": "text"}, AB),
    # Excel quotes a cell holding a comma or a line break (Alt+Enter, written as LF).
    "quoted_commas_and_newlines": (
        "caps.csv", (b'image,caption\r\nimg/a.png,"a red, shiny square\non two lines"\r\n'
                     b'img/b.png,"he said ""hi"""\r\n'), {},
        [("img/a.png", ["a red, shiny square\non two lines"]), ("img/b.png", ['he said "hi"'])]),
    "trailing_delimiter": (
        "caps.csv", b"image,caption,\r\nimg/a.png,a red square,\r\nimg/b.png,a blue circle,\r\n", {}, AB),
    # Excel's "sep=" hint line, which some exporters write first.
    "excel_sep_hint_line": (
        "caps.csv", b"sep=;\r\nimage;caption\r\nimg/a.png;a red square\r\nimg/b.png;a blue circle\r\n", {}, AB),
    # Old Mac Excel "CSV (Macintosh)": CR alone ends a line.
    "mac_cr_line_ends": (
        "caps.csv", b"image,caption\rimg/a.png,a red square\rimg/b.png,a blue circle\r", {}, AB),
    # Excel "CSV (Comma delimited)" on Windows is cp1252: read when the encoding is named.
    "cp1252_with_encoding_given": (
        "caps.csv", "image;caption\r\nimg/a.png;café crème\r\nimg/b.png;naïve – ok\r\n".encode("cp1252"),
        {"encoding": "cp1252"}, [("img/a.png", ["café crème"]), ("img/b.png", ["naïve – ok"])]),
    # Paths typed on Windows, read on Linux or macOS.
    "windows_backslash_paths": (
        "caps.csv", b"image,caption\r\nimg\\a.png,a red square\r\nimg\\b.png,a blue circle\r\n", {}, AB),
    "several_captions_per_image": (
        "caps.csv", b"image,caption\r\nimg/a.png,one\r\nimg/b.png,two\r\nimg/a.png,three\r\n", {},
        [("img/a.png", ["one", "three"]), ("img/b.png", ["two"])]),
    # JSON Lines from an editor on Windows: BOM, CRLF, blank lines, no final newline.
    "jsonl_bom_crlf_blank_lines": (
        "caps.jsonl", '\ufeff{"image": "img/a.png", "caption": "a red square"}\r\n\r\n'
        '{"image": "img/b.png", "caption": "a blue circle"}'.encode(), {}, AB),
    "jsonl_trailing_newlines": (
        "caps.jsonl", (b'{"image": "img/a.png", "caption": "a red square"}\n'
                       b'{"image": "img/b.png", "caption": "a blue circle"}\n\n\n'), {}, AB),
    # Notepad's old "Unicode" choice: UTF-16 with a BOM.
    "jsonl_utf16_notepad": (
        "caps.jsonl", ('{"image": "img/a.png", "caption": "a red square"}\r\n'
                       '{"image": "img/b.png", "caption": "a blue circle"}\r\n').encode("utf-16"), {}, AB),
    # A pretty-printed JSON array saved with a .jsonl name.
    "jsonl_holding_a_json_array": (
        "caps.jsonl", json.dumps([{"image": "img/a.png", "caption": "a red square"},
                                  {"image": "img/b.png", "caption": "a blue circle"}], indent=2).encode(),
        {}, AB),
    "json_list_with_bom_crlf": (
        "caps.json", "\ufeff" + json.dumps([{"image": "img/a.png", "caption": "a red square"},
                                            {"image": "img/b.png", "caption": "a blue circle"}],
                                           indent=2).replace("\n", "\r\n"), {}, AB),
}


@pytest.mark.parametrize("case", list(CAPTION_FILES))
def test_caption_file_as_tools_write_it(tmp_path, images, case):
    name, content, kwargs, expected = CAPTION_FILES[case]
    f = tmp_path / name
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    p, msgs = call(from_captions, f, **kwargs)
    assert pairs_of(p, tmp_path) == expected
    assert msgs == []


# -- caption files: clear errors -------------------------------------------------

CAPTION_ERRORS = {
    # Excel "CSV (Comma delimited)" on Windows: cp1252, not UTF-8.
    "cp1252_csv_not_utf8": (
        "caps.csv", "image,caption\r\nimg/a.png,plain\r\nimg/b.png,café\r\n".encode("cp1252"),
        ["line 3", "UTF-8", "encoding="]),
    "latin1_jsonl_not_utf8": (
        "caps.jsonl", '{"image": "img/a.png", "caption": "über"}\n'.encode("latin-1"),
        ["line 1", "UTF-8", "encoding="]),
    "csv_without_the_columns": (
        "caps.csv", b"\xef\xbb\xbfpicture;text\r\nimg/a.png;x\r\n", ["'image'", "picture", "text"]),
    "jsonl_slash_comment": (
        "caps.jsonl", b'// captions for the demo\n{"image": "img/a.png", "caption": "x"}\n',
        ["line 1", "comment"]),
    "jsonl_hash_comment": (
        "caps.jsonl", (b'{"image": "img/a.png", "caption": "x"}\n# the next one\n'
                       b'{"image": "img/b.png", "caption": "y"}\n'), ["line 2", "comment"]),
    "jsonl_object_over_several_lines": (
        "caps.jsonl", b'{\n  "image": "img/a.png",\n  "caption": "x"\n}\n', ["line 1", "one line"]),
    "jsonl_trailing_commas": (
        "caps.jsonl", b'{"image": "img/a.png", "caption": "x"},\n{"image": "img/b.png", "caption": "y"},\n',
        ["line 1", "one line"]),
    "csv_row_missing_caption": (
        "caps.csv", b"image,caption\r\nimg/a.png,x\r\nimg/b.png,\r\n", ["row 2", "line 3", "caption"]),
    "csv_row_missing_image": (
        "caps.csv", b"image;caption\r\n;a caption without its image\r\n", ["row 1", "image"]),
    # A hand-written CSV: a comma in a caption that nobody quoted.
    "unquoted_comma_in_caption": (
        "caps.csv", b"image,caption\r\nimg/a.png,a red, shiny square\r\n", ["row 1", "double quotes"]),
    # An opening quote never closed would swallow every row after it.
    "unclosed_quote": (
        "caps.csv", b'image,caption\r\nimg/a.png,"a red square\r\nimg/b.png,a blue circle\r\n',
        ["line 2", "quote"]),
    # A workbook saved under a .csv name.
    "xlsx_named_csv": ("caps.csv", b"PK\x03\x04\x14\x00\x06\x00" + bytes(40), ["workbook", "CSV UTF-8"]),
    "utf16_without_bom": (
        "caps.tsv", "image\tcaption\r\nimg/a.png\tx\r\n".encode("utf-16-le"), ["NUL", "encoding='utf-16-le'"]),
    "header_only": ("caps.csv", b"\xef\xbb\xbfimage,caption\r\n,\r\n", ["no image-caption rows"]),
    # Excel "Unicode Text" keeps its .txt name.
    "excel_unicode_text_kept_txt": (
        "caps.txt", "image\tcaption\r\nimg/a.png\tx\r\n".encode("utf-16"), [".tsv"]),
}


@pytest.mark.parametrize("case", list(CAPTION_ERRORS))
def test_caption_file_error_names_file_and_fix(tmp_path, images, case):
    name, content, needles = CAPTION_ERRORS[case]
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(ValueError) as info:
        from_captions(f)
    msg = str(info.value)
    assert str(f) in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


# -- class folders ------------------------------------------------------------------

APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64)


def add_mac_junk(root):
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(32))
    (root / "cat" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(32))
    (root / "cat" / "._0.png").write_bytes(APPLEDOUBLE)
    (root / "dog" / "._0.png").write_bytes(APPLEDOUBLE)
    (root / "__MACOSX" / "cat").mkdir(parents=True)
    (root / "__MACOSX" / "cat" / "._0.png").write_bytes(APPLEDOUBLE)


def add_windows_junk(root):
    for d in (root / "cat", root / "dog"):
        (d / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(56))
        (d / "desktop.ini").write_text("[.ShellClassInfo]\r\nIconResource=x\r\n")
    (root / "desktop.ini").write_text("[.ShellClassInfo]\r\n")
    (root / "$RECYCLE.BIN").mkdir()
    (root / "System Volume Information").mkdir()


def add_jupyter_checkpoints(root):
    png(root / ".ipynb_checkpoints" / "0-checkpoint.png", seed=9)
    (root / ".ipynb_checkpoints" / "notes-checkpoint.ipynb").write_text("{}")
    png(root / "cat" / ".ipynb_checkpoints" / "0-checkpoint.png", seed=9)


def add_hidden_things(root):
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    png(root / ".Trash-1000" / "files" / "old.png", seed=8)
    png(root / "cat" / ".hidden.png", seed=7)


def add_sidecar_files(root):
    (root / "cat" / "0.png.xmp").write_text("<x:xmpmeta/>")
    (root / "cat" / "notes.txt").write_text("notes")
    (root / "cat" / "~$labels.xlsx").write_bytes(b"lock")


FOLDER_JUNK = {
    "macos_junk": add_mac_junk,
    "windows_junk": add_windows_junk,
    "jupyter_checkpoints": add_jupyter_checkpoints,
    "hidden_files_and_folders": add_hidden_things,
    "sidecar_files": add_sidecar_files,
}


def two_classes(root):
    """root/cat (2 images) and root/dog (1 image)."""
    png(root / "cat" / "0.png", seed=0)
    png(root / "cat" / "1.png", seed=1)
    png(root / "dog" / "0.png", seed=2)
    return root


@pytest.mark.parametrize("case", list(FOLDER_JUNK))
@pytest.mark.parametrize("given", [False, True], ids=["found", "classnames_given"])
def test_class_folder_junk_is_not_read(tmp_path, case, given):
    root = two_classes(tmp_path / "pets")
    FOLDER_JUNK[case](root)
    kwargs = {"classnames": ["cat", "dog"]} if given else {}
    s, msgs = call(from_folder, root, **kwargs)
    assert s.classnames == ["cat", "dog"]
    assert [p.relative_to(root).as_posix() for p in s.images] == ["cat/0.png", "cat/1.png", "dog/0.png"]
    assert s.labels.tolist() == [0, 0, 1]
    assert msgs == []


def test_upper_case_extensions_are_images(tmp_path):
    root = tmp_path / "camera"
    png(root / "cat" / "IMG_0001.JPG", fmt="JPEG")
    png(root / "cat" / "IMG_0002.Jpeg", seed=1, fmt="JPEG")
    png(root / "dog" / "SCREEN.PNG", seed=2)
    s, msgs = call(from_folder, root)
    assert [p.name for p in s.images] == ["IMG_0001.JPG", "IMG_0002.Jpeg", "SCREEN.PNG"]
    assert s.labels.tolist() == [0, 0, 1] and msgs == []
    s2 = from_folder(root, extensions=(".PNG", "jpg"))
    assert [p.name for p in s2.images] == ["IMG_0001.JPG", "SCREEN.PNG"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_symlinked_images_and_class_folders(tmp_path):
    store = tmp_path / "store"
    png(store / "x.png", seed=0)
    png(store / "more" / "y.png", seed=1)
    root = tmp_path / "linked"
    (root / "cat").mkdir(parents=True)
    try:
        (root / "cat" / "x.png").symlink_to(store / "x.png")
    except OSError:
        pytest.skip("symlinks not permitted here")
    (root / "dog").symlink_to(store / "more", target_is_directory=True)
    (root / "cat" / "dangling.png").symlink_to(store / "gone.png")
    s, msgs = call(from_folder, root)
    assert s.classnames == ["cat", "dog"]
    assert [p.relative_to(root).as_posix() for p in s.images] == ["cat/x.png", "dog/y.png"]
    assert s.labels.tolist() == [0, 1]
    assert len(msgs) == 1 and "dangling.png" in msgs[0]


def test_empty_class_folder_is_kept_with_one_warning(tmp_path):
    root = two_classes(tmp_path / "pets")
    (root / "bird").mkdir()
    (root / "bird" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "fish").mkdir()
    s, msgs = call(from_folder, root)
    assert s.classnames == ["bird", "cat", "dog", "fish"]
    assert s.labels.tolist() == [1, 1, 2]
    assert len(msgs) == 1
    assert "bird" in msgs[0] and "fish" in msgs[0] and str(root) in msgs[0]


def test_folder_of_only_junk_names_root(tmp_path):
    root = tmp_path / "junk"
    add_jupyter_checkpoints_only = root / ".ipynb_checkpoints"
    png(add_jupyter_checkpoints_only / "a-checkpoint.png")
    (root / "__MACOSX").mkdir()
    (root / ".DS_Store").write_bytes(b"Bud1")
    with pytest.raises(ValueError, match="no sub-folders") as info:
        from_folder(root)
    assert str(root) in str(info.value)


# -- COCO JSON ----------------------------------------------------------------------

def coco_file(path, images, annotations, bom=False, crlf=False):
    text = json.dumps({"info": {}, "licenses": [], "images": images, "annotations": annotations}, indent=2)
    if crlf:
        text = text.replace("\n", "\r\n")
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    return path


IMGS = [{"id": 1, "file_name": "a.png", "width": 8, "height": 8},
        {"id": 2, "file_name": "b.png", "width": 8, "height": 8}]
ANNS = [{"id": 10, "image_id": 1, "caption": "a red square"},
        {"id": 11, "image_id": 2, "caption": "a blue circle"}]


def test_coco_saved_by_windows_editor(tmp_path, images):
    f = coco_file(tmp_path / "captions.json", IMGS, ANNS, bom=True, crlf=True)
    p, msgs = call(from_coco, f, image_root=tmp_path / "img")
    assert pairs_of(p, tmp_path) == AB and msgs == []


def test_coco_string_ids(tmp_path, images):
    imgs = [{"id": "1", "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}]
    anns = [{"id": 10, "image_id": 1, "caption": "a red square"},
            {"id": 11, "image_id": "2", "caption": "a blue circle"}]
    p = from_coco(coco_file(tmp_path / "c.json", imgs, anns), image_root=tmp_path / "img")
    assert pairs_of(p, tmp_path) == AB


def test_coco_annotations_of_unknown_images_skipped_with_one_warning(tmp_path, images):
    anns = [*ANNS, {"id": 12, "image_id": 99, "caption": "orphan"},
            {"id": 13, "caption": "no image_id"}, {"id": 14, "image_id": None, "caption": "null"}]
    f = coco_file(tmp_path / "c.json", IMGS, anns)
    p, msgs = call(from_coco, f, image_root=tmp_path / "img")
    assert pairs_of(p, tmp_path) == AB
    assert len(msgs) == 1
    assert str(f) in msgs[0] and "skipped 3 of 5 annotations" in msgs[0]


@pytest.mark.parametrize("images_,anns,needles", [
    ([{"id": 1, "coco_url": "http://x/a.png"}], ANNS[:1], ["images[0]", "'file_name'"]),
    ([{"id": 1, "file_name": None}], ANNS[:1], ["images[0]", "'file_name'"]),
    (IMGS, [{"id": 10, "image_id": 1, "bbox": [0, 0, 1, 1], "category_id": 3}],
     ["annotations[0]", "'caption'", "captions"]),
    (IMGS, [{"id": 12, "image_id": 99, "caption": "orphan"}], ["no image-caption", "image_id"]),
], ids=["image_without_file_name", "image_file_name_null", "instances_file_not_captions",
        "every_annotation_unknown"])
def test_coco_errors_name_file_and_fix(tmp_path, images, images_, anns, needles):
    f = coco_file(tmp_path / "c.json", images_, anns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError) as info:
            from_coco(f, image_root=tmp_path / "img")
    msg = str(info.value)
    assert str(f) in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_coco_not_utf8_names_file(tmp_path, images):
    f = tmp_path / "c.json"
    f.write_bytes(json.dumps({"images": IMGS, "annotations": [{"image_id": 1, "caption": "caf\u00e9"}]},
                             ensure_ascii=False).encode("cp1252"))
    with pytest.raises(ValueError, match="UTF-8") as info:
        from_coco(f, image_root=tmp_path / "img")
    assert str(f) in str(info.value)
