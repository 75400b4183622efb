"""Bad input and faults, as a hostile new user meets them: one case a
parametrised row, each asserting the error type (or the right result where
the input is valid after all) and that the message names the argument or
file at fault.

The five kinds, in this order:

1. saves of several files: a manifest that loading checks, and ``kill -9``
   at several moments of a save, after which the folder holds one whole run;
2. training that diverges stops, keeps the last good weights and says so;
   numeric parameters are finite, in range and not bools;
3. quiet wrong answers from ordinary input: files as spreadsheets, editors
   and JupyterLab write them, a string where a list is meant, an unknown
   precision, texts cut at the context length, a cached answer that warns
   as the first one did;
4. the ``modgap`` command: exit status 2 for a usage error, 1 for a
   failure, one or two plain lines that name the flag or file, nothing
   created or left behind;
5. mistakes named in modgap's words before they reach open_clip, torch,
   safetensors or str.format: tensors of the wrong size, bad templates,
   unreadable weights, devices this machine lacks, bare paths as specs,
   and a Hub that cannot be reached (probed, never contacted).
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import huggingface_hub.constants as hf_constants
import numpy as np
import pytest
import torch
from conftest import MICRO_CFG, MICRO_PREPROCESS, write_local_dir
from PIL import Image

import modgap
import modgap.models
import modgap.zoo
from modgap import ModelLoadError, cli, load_model, pick_device
from modgap.adapt import CLIPRefine, ReCLIP
from modgap.adapt.base import DivergenceError
from modgap.data import ImageSet, PairSet, from_captions, from_coco, from_folder
from modgap.validation import check_templates


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
def image_files(tmp_path):
    """a.png, b.png and c.png under tmp_path/img."""
    return [png(tmp_path / "img" / f"{n}.png", seed=i) for i, n in enumerate("abc")]


def pairs_of(p, root):
    """A PairSet as (image path relative to ``root`` in posix form, captions)."""
    return [(img.relative_to(root).as_posix(), caps) for img, caps in zip(p.images, p.captions)]


@pytest.fixture(scope="module")
def tiny():
    return modgap.load_model("modgap-tiny", device="cpu")


@pytest.fixture(scope="module")
def target():
    return modgap.data.load("shapes", n=48, domain="night", task="shape")


@pytest.fixture(scope="module")
def two_runs(tiny, target, tmp_path_factory):
    """Two fitted ReCLIPs (seeds 0 and 1), saved."""
    root = tmp_path_factory.mktemp("runs")
    for seed in (0, 1):
        ReCLIP(tiny, target.classnames, target.templates, epochs=1, k=5, seed=seed,
               progress=False).fit(target).save(root / f"seed{seed}")
    return root


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


# ============================================================================
# 1. Saves of several files
# ============================================================================

# -- the manifest ---------------------------------------------------------------
@pytest.mark.parametrize(("tamper", "match"), [
    (lambda run: (run / "history.csv").write_text("epoch\n0\n"), "history.csv is not the file this run saved"),
    (lambda run: (run / "visual" / "open_clip_model.safetensors").unlink(),
     "visual/open_clip_model.safetensors is missing"),
    (lambda run: (run / "arrays.safetensors").write_bytes(b"\0" * 10), "arrays.safetensors is not the file"),
    (lambda run: (run / "manifest.json").write_text("{not json"), "manifest.json cannot be read"),
    (lambda run: (run / "manifest.json").unlink(), "has no manifest.json"),
])
def test_load_refuses_a_folder_whose_files_do_not_belong_together(two_runs, tmp_path, tamper, match):
    run = _copy(two_runs / "seed0", tmp_path / "run")
    tamper(run)
    with pytest.raises(ValueError, match=match):
        ReCLIP.load(run)
    with pytest.raises(ValueError, match=match):
        modgap.load_model(str(run))


def test_load_refuses_a_folder_mixing_two_runs(two_runs, tmp_path):
    run = _copy(two_runs / "seed0", tmp_path / "run")
    other = two_runs / "seed1"
    for name in ("visual/open_clip_model.safetensors", "history.csv"):
        (run / name).write_bytes((other / name).read_bytes())
    with pytest.raises(ValueError, match="is not the file this run saved"):
        ReCLIP.load(run)


def test_a_clip_saved_as_a_folder_is_checked_by_load_model(tiny, tmp_path):
    folder = tiny.save(tmp_path / "tiny")
    assert (folder / "manifest.json").is_file()
    assert modgap.load_model(str(folder)).embed_dim == tiny.embed_dim
    (folder / "open_clip_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="open_clip_model.safetensors is not the file"):
        modgap.load_model(str(folder))


# -- kill -9 in the middle of a save -----------------------------------------------
_SAVER = textwrap.dedent("""
    import sys
    from modgap.adapt import ReCLIP
    est = ReCLIP.load(sys.argv[1])
    print("ready", flush=True)
    while True:
        est.save(sys.argv[2], overwrite=True)
""")


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.45, 0.8, 1.3])
def test_a_save_killed_at_any_moment_leaves_one_whole_run(two_runs, tmp_path, delay):
    """The old run (seed 0) is overwritten in a loop by the new one (seed 1)
    in a child process, killed with SIGKILL after ``delay`` seconds: the
    folder then loads as exactly one of the two runs, and the next save
    cleans what the killed one left behind."""
    out = _copy(two_runs / "seed0", tmp_path / "out")
    child = subprocess.Popen([sys.executable, "-c", _SAVER, str(two_runs / "seed1"), str(out)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    loaded = ReCLIP.load(out)
    assert loaded.seed in (0, 1)
    whole = two_runs / f"seed{loaded.seed}"
    assert (out / "history.csv").read_bytes() == (whole / "history.csv").read_bytes()
    assert (out / "visual" / "open_clip_model.safetensors").read_bytes() == \
        (whole / "visual" / "open_clip_model.safetensors").read_bytes()
    loaded.save(out, overwrite=True)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert leftovers == [], leftovers


# -- saved files get the permissions the user's umask gives ----------------------------
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_saved_files_follow_the_umask(tmp_path, umask):
    from modgap.io import atomic_folder, atomic_write_text, save_state_dict

    old = os.umask(umask)
    try:
        text = atomic_write_text(tmp_path / "report.json", "{}")
        weights = save_state_dict(torch.nn.Linear(2, 2), tmp_path / "w.safetensors")
        with atomic_folder(tmp_path / "run") as folder:
            (folder / "history.csv").write_text("epoch\n0\n")
    finally:
        os.umask(old)
    for path in (text, weights):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o777 & ~umask


# ============================================================================
# 2. Training that diverges; numeric parameters
# ============================================================================

# -- divergence ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pairs():
    return modgap.data.load("shapes-pairs", n=200)


def _refine(tiny, **kw):
    return CLIPRefine(tiny, **{"epochs": 1, "batch_size": 32, "holdout": 32, "log_every": 1, "progress": False,
                               **kw})


@pytest.mark.parametrize("lr", [1e3, 1e6])
def test_clip_refine_that_diverges_raises_and_keeps_the_last_good_weights(tiny, pairs, lr):
    est = _refine(tiny, lr=lr)
    train, held = pairs.subset(np.arange(160)), pairs.subset(np.arange(160, 200))
    with pytest.raises(DivergenceError, match=r"Lower the learning rate \(lr="):
        est.fit(train, eval_pairs=held)
    assert all(torch.isfinite(p).all() for p in est.model_.parameters())
    assert est.diverged_ and est.n_steps_ == est.history_["step"].iloc[-1]
    assert np.isfinite(est.history_["centroid_distance"]).all()
    # the weights kept are the ones the last row measured
    refined = est.to_clip()
    got = modgap.metrics.centroid_distance(refined.encode_images(held), refined.encode_texts(held.first_captions()))
    assert got == pytest.approx(est.history_["centroid_distance"].iloc[-1], abs=1e-6)


def test_clip_refine_can_warn_instead_and_stays_usable(tiny, pairs, tmp_path):
    with pytest.warns(RuntimeWarning, match="CLIPRefine diverged"):
        est = _refine(tiny, lr=1e6, on_divergence="warn").fit(pairs)
    est.save(tmp_path / "run")
    assert CLIPRefine.load(tmp_path / "run").diverged_ == est.diverged_


def test_a_fit_that_does_not_diverge_says_so(tiny, pairs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        est = _refine(tiny, lr=1e-4).fit(pairs)
    assert est.diverged_ is None


@pytest.mark.parametrize("on_divergence", ["raise", "warn"])
def test_reclip_that_diverges_stops_with_the_last_good_weights(tiny, target, on_divergence):
    # the guard and the early stop are switched off so that the learning rate, not them, ends the run
    est = ReCLIP(tiny, target.classnames, target.templates, epochs=3, k=5, lr_visual=1e6, lr_text=1e6,
                 progress=False, on_divergence=on_divergence, min_confident_agreement=0.0, max_balance_drop=1.0)
    if on_divergence == "raise":
        with pytest.raises(DivergenceError, match=r"ReCLIP diverged: .*Lower the learning rates"):
            est.fit(target, labels=target.labels)
    else:
        with pytest.warns(RuntimeWarning, match="ReCLIP diverged"):
            est.fit(target, labels=target.labels)
    assert est.diverged_ and est.history_["epoch"].iloc[-1] < 3
    for model in est.fitted_models().values():
        assert all(torch.isfinite(p).all() for p in model.parameters())
    # the branches went back to the weights the last row measured
    assert est.score(target, target.labels) == pytest.approx(est.history_["acc"].iloc[-1])


@pytest.mark.parametrize("bad", [{"on_divergence": "ignore"}, {"on_divergence": True}])
def test_on_divergence_is_checked(tiny, target, pairs, bad):
    with pytest.raises(ValueError, match="on_divergence must be one of"):
        ReCLIP(tiny, target.classnames, **bad).fit(target)
    with pytest.raises(ValueError, match="on_divergence must be one of"):
        CLIPRefine(tiny, **bad).fit(pairs)


def test_saved_run_records_the_modgap_version(two_runs):
    manifest = json.loads((two_runs / "seed0" / "manifest.json").read_text())
    assert manifest["modgap"] == modgap.__version__
    assert set(manifest["files"]) >= {"estimator.json", "history.csv", "visual/open_clip_model.safetensors"}
# -- numeric parameters: finite, in range, not a bool; checked in fit, before any work
INF, NAN = float("inf"), float("nan")
REFINE_NUMBERS = [
    ("lr", INF, ValueError), ("lr", NAN, ValueError), ("lr", -1e-5, ValueError), ("lr", True, TypeError),
    ("lambda_kd", INF, ValueError), ("lambda_kd", NAN, ValueError), ("lambda_kd", False, TypeError),
    ("temperature", INF, ValueError), ("temperature", 0.0, ValueError),
    ("alpha", True, TypeError), ("alpha", NAN, ValueError), ("alpha", 1.5, ValueError),
    ("weight_decay", INF, ValueError), ("weight_decay", -0.1, ValueError),
    ("lambda_rafa", INF, ValueError), ("lambda_contrastive", NAN, ValueError),
    ("epochs", 0, ValueError), ("epochs", 2.0, TypeError), ("batch_size", True, TypeError),
]


@pytest.mark.parametrize(("name", "value", "error"), REFINE_NUMBERS)
def test_clip_refine_numeric_parameters_are_checked_in_fit(tiny, pairs, name, value, error):
    est = _refine(tiny, **{name: value})  # the constructor only stores
    with pytest.raises(error, match=name):
        est.fit(pairs)
    assert not hasattr(est, "history_")


RECLIP_NUMBERS = [
    ("lr_visual", INF, ValueError), ("lr_visual", True, TypeError), ("lr_text", NAN, ValueError),
    ("lr_text", -1.0, ValueError), ("alpha", 1.0, ValueError), ("alpha", INF, ValueError),
    ("momentum", NAN, ValueError), ("weight_decay", INF, ValueError), ("logit_scale", 0.0, ValueError),
    ("logit_scale", INF, ValueError), ("k", 0, ValueError), ("k", True, TypeError), ("tol", NAN, ValueError),
    ("max_iter", 0, ValueError), ("epochs", -1, ValueError), ("batch_size", 1.5, TypeError),
]


@pytest.mark.parametrize(("name", "value", "error"), RECLIP_NUMBERS)
def test_reclip_numeric_parameters_are_checked_in_fit(tiny, target, name, value, error):
    est = ReCLIP(tiny, target.classnames, target.templates, progress=False, **{name: value})
    with pytest.raises(error, match=name):
        est.fit(target)
    assert not hasattr(est, "history_")



# ============================================================================
# 3. Quiet wrong answers: files as everyday tools write them
# ============================================================================

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
def test_caption_file_as_tools_write_it(tmp_path, image_files, case):
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
def test_caption_file_error_names_file_and_fix(tmp_path, image_files, case):
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


def test_coco_saved_by_windows_editor(tmp_path, image_files):
    f = coco_file(tmp_path / "captions.json", IMGS, ANNS, bom=True, crlf=True)
    p, msgs = call(from_coco, f, image_root=tmp_path / "img")
    assert pairs_of(p, tmp_path) == AB and msgs == []


def test_coco_string_ids(tmp_path, image_files):
    imgs = [{"id": "1", "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}]
    anns = [{"id": 10, "image_id": 1, "caption": "a red square"},
            {"id": 11, "image_id": "2", "caption": "a blue circle"}]
    p = from_coco(coco_file(tmp_path / "c.json", imgs, anns), image_root=tmp_path / "img")
    assert pairs_of(p, tmp_path) == AB


def test_coco_annotations_of_unknown_images_skipped_with_one_warning(tmp_path, image_files):
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
def test_coco_errors_name_file_and_fix(tmp_path, image_files, images_, anns, needles):
    f = coco_file(tmp_path / "c.json", images_, anns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError) as info:
            from_coco(f, image_root=tmp_path / "img")
    msg = str(info.value)
    assert str(f) in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_coco_not_utf8_names_file(tmp_path, image_files):
    f = tmp_path / "c.json"
    f.write_bytes(json.dumps({"images": IMGS, "annotations": [{"image_id": 1, "caption": "caf\u00e9"}]},
                             ensure_ascii=False).encode("cp1252"))
    with pytest.raises(ValueError, match="UTF-8") as info:
        from_coco(f, image_root=tmp_path / "img")
    assert str(f) in str(info.value)


# -- quiet wrong answers from ordinary calls -------------------------------------------

@pytest.mark.parametrize("make", [
    lambda m, t: ReCLIP(m, "cat", t.templates),
    lambda m, t: ReCLIP(m, t.classnames, t.templates).fit(t, labels="shape"),
])
def test_a_string_where_a_list_is_meant_is_refused(tiny, target, make):
    with pytest.raises(TypeError, match="classnames|labels"):
        make(tiny, target).fit(target)


@pytest.mark.parametrize("precision", ["fp64", "FP32", "amp_bf16x", "", 16])
def test_unknown_precision_is_refused_not_loaded_as_fp32(precision):
    with pytest.raises((ValueError, TypeError), match="precision"):
        load_model("modgap-tiny", device="cpu", precision=precision)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
@pytest.mark.parametrize("encoder", ["encode_images", "encode_texts"])
def test_encoders_refuse_a_batch_size_that_returns_nothing(tiny, target, encoder, batch_size):
    inputs = target.subset(np.arange(4)) if encoder == "encode_images" else ["a cat", "a dog"]
    with pytest.raises((ValueError, TypeError), match="batch_size"):
        getattr(tiny, encoder)(inputs, batch_size=batch_size)


def _warnings(fn, *args, **kwargs):
    return call(fn, *args, **kwargs)[1]


def test_texts_cut_at_the_context_length_are_named_and_the_rest_are_not(tiny):
    context = tiny.tokenize([""]).shape[1]
    exact = " ".join(["x"] * (context - 2))  # start + end tokens make it fill the context exactly
    long = "a long caption " * context
    said = _warnings(tiny.encode_texts, ["short", exact, long])
    assert len(said) == 1 and "1 of 3 texts" in said[0] and f"context of {context} tokens" in said[0]
    assert "a long caption" in said[0] and "'x x" not in said[0]
    assert _warnings(tiny.encode_texts, ["short", exact]) == []


def test_training_captions_cut_at_the_context_length_are_named(tiny, pairs):
    long = pairs.subset(np.arange(64))
    long.captions[0] = ["word " * 100]
    said = _warnings(_refine(tiny, holdout=0).fit, long)
    assert any(s.startswith("CLIPRefine.fit: captions: 1 of") for s in said), said


@pytest.mark.parametrize("kind", ["texts", "files"])
def test_a_cached_answer_warns_as_the_first_one_did(tiny, tmp_path, kind):
    cached = modgap.load_model("modgap-tiny", device="cpu", cache_dir=tmp_path / "cache")
    if kind == "texts":
        fn, inputs = cached.encode_texts, ["short", "too long " * 40]
    else:
        fn, inputs = cached.encode_images, [png(tmp_path / "a.png"), tmp_path / "broken.png"]
        (tmp_path / "broken.png").write_bytes(b"not an image")
    first, first_said = call(fn, inputs)
    hits, misses = cached.cache.hits, cached.cache.misses
    again, said = call(fn, inputs)
    assert cached.cache.hits > hits and cached.cache.misses == misses
    assert torch.equal(first, again)
    uncached = _warnings(getattr(tiny, fn.__name__), inputs)
    assert first_said and said == first_said == uncached, (first_said, said, uncached)


# ============================================================================
# 4. The command line
# ============================================================================

@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A folder with what the cases point at, as the working directory:
    a text file, folders of someone else's files, a folder of class folders,
    caption files (good, with a wrong header, and pointing at missing
    images) and a model folder without a config."""
    (tmp_path / "notes.txt").write_text("not data\n")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "thesis.tex").write_text("\\section{}\n")
    (tmp_path / "figs-foreign").mkdir()
    (tmp_path / "figs-foreign" / "keep.txt").write_text("mine\n")
    (tmp_path / "figs-foreign" / "spectrum.png").write_bytes(b"")
    for i, cls in enumerate(("cat", "dog")):
        png(tmp_path / "classes" / cls / f"{i}.png", seed=i)
    png(tmp_path / "img" / "0.png")
    (tmp_path / "caps.csv").write_text("image,caption\nimg/0.png,a small square\n")
    (tmp_path / "bad.csv").write_text("picture,text\nimg/0.png,a small square\n")
    (tmp_path / "lost.csv").write_text("image,caption\nelsewhere/0.png,a small square\n")
    (tmp_path / "empty-model").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def tree(root):
    """Every path under ``root``, with the size of each file."""
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else None) for p in root.rglob("*")}


OUT = ["--out", "out"]

CASES = [
    # -- argument values, refused by the parser -----------------------------------------
    ("n-zero", ["gap", "--data", "shapes", "--n", "0"], 2, ["--n"]),
    ("n-not-a-number", ["gap", "--data", "shapes", "--n", "ten"], 2, ["--n", "ten"]),
    ("seed-negative", ["gap", "--data", "shapes", "--seed", "-1"], 2, ["--seed"]),
    ("min-confident-agreement-above-one", ["reclip", "--data", "shapes", "--min-confident-agreement", "1.5", *OUT], 2,
     ["--min-confident-agreement"]),
    ("split-unknown", ["gap", "--data", "shapes", "--split", "valid"], 2, ["--split", "valid"]),
    ("method-unknown", ["refine", "--pairs", "shapes-pairs", "--method", "magic", *OUT], 2, ["--method", "magic"]),
    ("epochs-negative", ["reclip", "--data", "shapes", "--epochs", "-1", *OUT], 2, ["--epochs"]),
    ("epochs-zero-refine", ["refine", "--pairs", "shapes-pairs", "--epochs", "0", *OUT], 2, ["--epochs"]),
    ("batch-size-one-refine", ["refine", "--pairs", "shapes-pairs", "--batch-size", "1", *OUT], 2,
     ["--batch-size"]),
    ("batch-size-zero-reclip", ["reclip", "--data", "shapes", "--batch-size", "0", *OUT], 2, ["--batch-size"]),
    ("lr-zero", ["refine", "--pairs", "shapes-pairs", "--lr", "0", *OUT], 2, ["--lr"]),
    ("lr-nan", ["refine", "--pairs", "shapes-pairs", "--lr", "nan", *OUT], 2, ["--lr"]),
    ("lr-visual-negative", ["reclip", "--data", "shapes", "--lr-visual", "-0.1", *OUT], 2, ["--lr-visual"]),
    ("lr-text-infinite", ["reclip", "--data", "shapes", "--lr-text", "inf", *OUT], 2, ["--lr-text"]),
    ("k-zero", ["reclip", "--data", "shapes", "--k", "0", *OUT], 2, ["--k"]),
    ("holdout-fraction-one", ["refine", "--pairs", "shapes-pairs", "--holdout", "1.5", *OUT], 2, ["--holdout"]),
    ("holdout-negative", ["refine", "--pairs", "shapes-pairs", "--holdout", "-3", *OUT], 2, ["--holdout"]),
    ("device-unknown", ["gap", "--data", "shapes", "--device", "banana"], 2, ["--device", "banana"]),
    ("device-gpu-not-here", ["gap", "--data", "shapes", "--device", "cuda:99"], 2, ["--device", "cuda:99"]),
    ("out-missing", ["reclip", "--data", "shapes"], 2, ["--out"]),
    ("command-unknown", ["gapp"], 2, ["gapp"]),
    ("command-missing", [], 2, ["COMMAND"]),
    # -- the data named ----------------------------------------------------------------
    ("data-unknown-name", ["gap", "--data", "no-such-set"], 2, ["--data", "no-such-set"]),
    ("data-typo", ["gap", "--data", "shapez"], 2, ["--data", "did you mean shapes"]),
    ("data-missing-file", ["gap", "--data", "missing.csv"], 2, ["--data", "missing.csv"]),
    ("data-unreadable-kind", ["gap", "--data", "notes.txt"], 2, ["--data", "notes.txt"]),
    ("domain-unknown", ["gap", "--data", "shapes", "--domain", "moon"], 2, ["--domain", "moon"]),
    ("task-unknown", ["gap", "--data", "shapes", "--task", "size"], 2, ["--task", "size"]),
    ("domain-of-a-folder", ["reclip", "--data", "classes", "--domain", "night", *OUT], 2, ["--domain", "classes"]),
    ("n-of-a-file", ["gap", "--data", "caps.csv", "--n", "5"], 2, ["--n", "caps.csv"]),
    ("image-root-of-a-named-set", ["gap", "--data", "shapes", "--image-root", "img"], 2, ["--image-root"]),
    ("image-root-missing", ["gap", "--data", "caps.csv", "--image-root", "nowhere"], 2,
     ["--image-root", "nowhere"]),
    ("column-of-a-folder", ["gap", "--data", "classes", "--caption-column", "text"], 2, ["--caption-column"]),
    ("encoding-unknown", ["refine", "--pairs", "caps.csv", "--encoding", "klingon", *OUT], 2,
     ["--encoding", "klingon"]),
    ("reclip-given-pairs", ["reclip", "--data", "shapes-pairs", *OUT], 2, ["--data", "shapes-pairs"]),
    ("refine-given-images", ["refine", "--pairs", "shapes", *OUT], 2, ["--pairs", "shapes"]),
    ("refine-given-a-folder", ["refine", "--pairs", "classes", *OUT], 2, ["--pairs", "classes"]),
    # -- where the output goes -----------------------------------------------------------
    ("out-is-a-file", ["reclip", "--data", "shapes", "--out", "notes.txt"], 2, ["--out", "notes.txt"]),
    ("out-not-empty", ["reclip", "--data", "shapes", "--out", "foreign"], 2, ["--out", "foreign", "--overwrite"]),
    ("out-foreign-with-overwrite", ["reclip", "--data", "shapes", "--out", "foreign", "--overwrite"], 2,
     ["--out", "foreign", "did not write"]),
    ("out-under-a-file", ["refine", "--pairs", "shapes-pairs", "--out", "notes.txt/run"], 2,
     ["--out", "notes.txt"]),
    ("figures-is-a-file", ["gap", "--data", "shapes", "--save-figures", "notes.txt"], 2,
     ["--save-figures", "notes.txt"]),
    ("figures-not-empty", ["gap", "--data", "shapes", "--save-figures", "foreign"], 2,
     ["--save-figures", "--overwrite"]),
    ("figures-foreign-with-overwrite", ["gap", "--data", "shapes", "--save-figures", "figs-foreign", "--overwrite"],
     2, ["--save-figures", "keep.txt"]),
    ("overwrite-without-figures", ["gap", "--data", "shapes", "--overwrite"], 2, ["--overwrite", "--save-figures"]),
    # -- the model named -----------------------------------------------------------------
    ("model-missing-folder", ["gap", "--data", "shapes", "--model", "./no/such/run"], 2, ["--model", "no/such/run"]),
    ("model-missing-local-dir", ["gap", "--data", "shapes", "--model", "local-dir:nowhere"], 2,
     ["--model", "nowhere"]),
    ("model-unknown-architecture", ["gap", "--data", "shapes", "--n", "4", "--model", "NoSuchArch-42"], 2,
     ["--model", "NoSuchArch-42"]),
    ("weights-cache-is-a-file", ["gap", "--data", "shapes", "--weights-cache-dir", "notes.txt"], 2,
     ["--weights-cache-dir", "notes.txt"]),
    # -- settings that do not fit the data (found after reading it, before the model) ---------
    ("k-too-large-by-default", ["reclip", "--data", "shapes", "--n", "8", *OUT], 2, ["--k", "20", "--n"]),
    ("k-too-large", ["reclip", "--data", "shapes", "--n", "8", "--k", "30", *OUT], 2, ["--k 30"]),
    ("holdout-too-large-by-default", ["refine", "--pairs", "shapes-pairs", "--n", "100", *OUT], 2,
     ["--holdout", "256"]),
    ("holdout-too-large", ["refine", "--pairs", "shapes-pairs", "--n", "10", "--holdout", "9", *OUT], 2,
     ["--holdout 9"]),
    # -- failures of the work: status 1 ------------------------------------------------------
    ("caption-file-wrong-header", ["refine", "--pairs", "bad.csv", *OUT], 1, ["bad.csv", "--image-column"]),
    ("caption-file-missing-images", ["refine", "--pairs", "lost.csv", *OUT], 1, ["lost.csv", "--image-root"]),
    ("model-folder-without-config", ["gap", "--data", "shapes", "--n", "4", "--model", "local-dir:empty-model"], 1,
     ["--model", "empty-model"]),
]


@pytest.mark.parametrize(("argv", "status", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_command_line_is_one_plain_line_and_changes_nothing(workspace, capsys, argv, status, words):
    before = tree(workspace)
    assert cli.main(argv) == status
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 2, err
    assert lines[0].startswith(f"modgap {argv[0]}: error: " if argv and argv[0] != "gapp" else "modgap: error: ")
    for word in words:
        assert word in err, (word, err)
    # library spellings become flags
    for python in ("overwrite=True", "image_root=", "image_column=", "holdout=", "k=", "batch_size"):
        assert python not in err
    assert tree(workspace) == before
    assert not (workspace / "out").exists()
    assert out == ""


def test_there_are_enough_cases():
    assert len(CASES) >= 20
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_an_output_folder_that_cannot_be_written_is_a_usage_error(workspace, capsys):
    locked = workspace / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert cli.main(["refine", "--pairs", "shapes-pairs", "--out", "locked/run"]) == 2
        err = capsys.readouterr().err
        assert "--out" in err and "cannot write" in err and "Traceback" not in err
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_a_folder_that_refuses_new_files_is_a_usage_error(workspace, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cli.tempfile, "mkstemp", refuse)
    before = tree(workspace)
    assert cli.main(["gap", "--data", "shapes", "--save-figures", "figs"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"modgap gap: error: --save-figures: cannot write in {Path.cwd()} (Permission denied); "
                           "choose a folder you can write to")
    assert tree(workspace) == before


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_lets_a_usage_error_through_with_its_traceback(workspace, where):
    argv = ["gap", "--data", "shapes", "--domain", "moon"]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    with pytest.raises(cli.CommandLineError, match="--domain"):
        cli.main(argv)


def test_debug_lets_a_failure_of_the_work_through(workspace):
    with pytest.raises(ValueError, match="bad.csv"):
        cli.main(["--debug", "refine", "--pairs", "bad.csv", "--out", "out"])
    assert not (workspace / "out").exists()


def test_debug_does_not_change_a_parser_error(workspace, capsys):
    assert cli.main(["--debug", "gap", "--data", "shapes", "--n", "0"]) == 2
    assert "--n" in capsys.readouterr().err


@pytest.mark.parametrize(("error", "status", "words"), [
    (OSError(28, "No space left on device", "out"), 1, ["out: No space left on device"]),
    (PermissionError(13, "Permission denied", "out/visual"), 1, ["out/visual: Permission denied"]),
    (KeyboardInterrupt(), 130, ["interrupted"]),
])
def test_a_failure_during_training_is_reported_plainly(workspace, capsys, monkeypatch, error, status, words):
    import modgap.adapt

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(modgap.adapt, "run_reclip", fail)
    assert cli.main(["reclip", "--data", "shapes", "--n", "40", "--out", "out"]) == status
    err = capsys.readouterr().err
    assert err.startswith("modgap reclip: ") and "Traceback" not in err
    for word in words:
        assert word in err


def test_running_out_of_gpu_memory_points_at_the_batch_size(workspace, capsys, monkeypatch):
    import torch

    import modgap.adapt

    def fail(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    monkeypatch.setattr(modgap.adapt, "run_refine", fail)
    assert cli.main(["refine", "--pairs", "shapes-pairs", "--n", "300", "--out", "out"]) == 1
    err = capsys.readouterr().err
    expected = "modgap refine: error: CUDA out of memory. Tried to allocate 2.00 GiB; lower --batch-size"
    assert err.strip().splitlines() == [expected]


def test_a_bug_keeps_its_traceback(workspace, monkeypatch):
    import modgap.adapt

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug in modgap")

    monkeypatch.setattr(modgap.adapt, "run_reclip", bug)
    with pytest.raises(ZeroDivisionError):
        cli.main(["reclip", "--data", "shapes", "--n", "40", "--out", "out"])


@pytest.mark.parametrize(("message", "flags", "expected"), [
    ("out is not empty; pass overwrite=True to replace it", {"--overwrite"},
     "out is not empty; pass --overwrite to replace it"),
    ("holdout=256 keeps 256 of the 100 pairs; lower holdout or pass eval_pairs=", {"--holdout"},
     "--holdout 256 keeps 256 of the 100 pairs; lower --holdout"),
    ("k=20 must be smaller than the number of graph nodes", {"--k"},
     "--k 20 must be smaller than the number of graph nodes"),
    ("batch_size must be at least 2, got 1", {"--batch-size"}, "--batch-size must be at least 2, got 1"),
    ("Lower the learning rates (lr_visual=0.05, lr_text=0.05).", {"--lr-visual", "--lr-text", "--lr"},
     "Lower the learning rates (--lr-visual 0.05, --lr-text 0.05)."),
    ("epochs must be at least 1, got 0", {"--epochs"}, "--epochs must be at least 1, got 0"),
    ("paths are read relative to x (pass image_root= to change that)", {"--image-root"},
     "paths are read relative to x (pass --image-root to change that)"),
    ("use load_model('local-dir:/a/b') instead", {"--model"}, "use --model local-dir:/a/b instead"),
    ("unknown data set 'x'; available: [...] (see modgap.data.available())", {"--data"},
     "unknown data set 'x'; available: [...] (modgap info lists them)"),
    # a setting the command has no flag for keeps its spelling, and words that only look alike stay
    ("holdout=256 keeps 256 pairs", {"--overwrite"}, "holdout=256 keeps 256 pairs"),
    ("the model_ of 3 epochs; --lr 0.1", {"--lr", "--epochs", "--model"}, "the model_ of 3 epochs; --lr 0.1"),
])
def test_library_messages_speak_in_flags(message, flags, expected):
    assert cli.cli_words(message, flags) == expected


# ============================================================================
# 5. Mistakes named before they reach a dependency
# ============================================================================

# -- 1. preprocessed tensors at the wrong size --------------------------------


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (1, 3, 16, 16), (2, 3, 32, 48), (3, 3, 224, 224)])
def test_float_tensor_of_another_size_is_named(clip, shape):
    with pytest.raises(ValueError, match=r"^images: a float tensor") as info:
        clip.encode_images(torch.zeros(shape))
    msg = str(info.value)
    assert "32x32" in msg and f"{shape[2]}x{shape[3]}" in msg and "clip.image_size" in msg
    assert "uint8" in msg and "PIL" in msg and "file paths" in msg


def test_pixels_at_checks_the_tensor_size_too(clip):
    from modgap import embed

    with pytest.raises(ValueError, match=r"images: .* 32x32 .* 64x64"):
        embed.pixels_at(clip, "tensor", torch.zeros(2, 3, 64, 64), [0, 1])


def test_uint8_images_of_another_size_are_still_resized(clip, images):
    big = np.repeat(np.repeat(images[:2], 2, axis=1), 2, axis=2)
    assert clip.encode_images(big).shape == (2, clip.embed_dim)


# -- 2. templates ---------------------------------------------------------------

BAD_TEMPLATES = [
    ("a {} and a {}.", r"has 2 '\{\}' slots"),
    ("a photo of {name}.", r"named field '\{name\}'"),
    ("a photo of {0}.", r"numbered field '\{0\}'"),
    ("a photo of a {.", "unbalanced brace"),
    ("a photo of a }.", "unbalanced brace"),
    ("a photo.", r"has no '\{\}'"),
    ("a {{}} photo.", r"has no '\{\}'"),
    ("a {:>9} photo.", r"the field '\{:>9\}'"),
]


@pytest.mark.parametrize("template,match", BAD_TEMPLATES)
def test_check_templates_names_the_template_and_the_rule(template, match):
    with pytest.raises(ValueError, match=match) as info:
        check_templates(["a photo of a {}.", template])
    msg = str(info.value)
    assert msg.startswith(f"templates: {template!r}")
    assert "exactly one '{}'" in msg and "'{{'" in msg and "'}}'" in msg


@pytest.mark.parametrize("given,expected", [
    ("a {}.", ["a {}."]),
    (("a {}.", "the {{literal}} {}"), ["a {}.", "the {{literal}} {}"]),
    # CLIP_benchmark's convention, returned in OpenAI's
    ("a photo of a {c}.", ["a photo of a {}."]),
    (("a {c} in {{braces}}.", "a {}."), ["a {} in {{braces}}.", "a {}."]),
])
def test_check_templates_accepts(given, expected):
    assert check_templates(given) == expected
    assert [t.format("cat") for t in check_templates(given)] == [t.format("cat") for t in expected]


def test_both_template_conventions_give_the_same_classifier(clip):
    openai = clip.class_embeddings(["circle", "star"], ["a photo of a {}.", "a drawing of a {}."])
    benchmark = clip.class_embeddings(["circle", "star"], ["a photo of a {c}.", "a drawing of a {c}."])
    assert torch.equal(openai, benchmark)
    with pytest.raises(ValueError, match=r"has 2 '\{\}' slots"):
        clip.class_embeddings(["circle"], ["a {c} and a {}."])


@pytest.mark.parametrize("given,error,match", [
    ([], ValueError, "templates is empty"),
    (None, TypeError, "templates must be a list of strings"),
    (["a {}", 3], TypeError, "templates must hold strings only"),
])
def test_check_templates_kinds(given, error, match):
    with pytest.raises(error, match=match):
        check_templates(given)


@pytest.mark.parametrize("template,match", BAD_TEMPLATES[:4])
def test_class_embeddings_check_templates(clip, template, match):
    with pytest.raises(ValueError, match=match) as info:
        clip.class_embeddings(["circle", "star"], [template])
    assert repr(template) in str(info.value)


@pytest.mark.parametrize("template,match", BAD_TEMPLATES[:4])
def test_image_and_pair_sets_check_templates(images, template, match):
    with pytest.raises(ValueError, match=match) as info:
        ImageSet(images[:2], np.array([0, 1]), ["circle", "star"], [template], name="mine")
    assert str(info.value).startswith(f"templates of ImageSet 'mine': {template!r}")
    with pytest.raises(ValueError, match=match):
        PairSet(images[:2], ["a", "b"], name="p", templates=[template])


def test_a_single_template_string_is_one_template(images, clip):
    assert ImageSet(images[:2], templates="a {} here").templates == ["a {} here"]
    one = clip.class_embeddings(["circle"], "a {} here")
    assert torch.allclose(one, clip.encode_texts(["a circle here"]), atol=1e-5)


@pytest.mark.parametrize("template,match", BAD_TEMPLATES[:3])
def test_reclip_checks_templates(clip, template, match):
    est = ReCLIP(clip, ["circle", "star"], [template], progress=False)
    with pytest.raises(ValueError, match=match):
        est._validate_params()


# -- 3. weights files that cannot be read ---------------------------------------

def _corrupt(path, how, source=None):
    if how == "garbage":
        path.write_bytes(b"this is not a weights file" * 8)
    elif how == "empty":
        path.write_bytes(b"")
    else:
        data = source.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_unreadable_weights_file_is_named(micro_name, micro_pt, micro_safetensors, tmp_path, suffix, how):
    source = micro_safetensors if suffix == ".safetensors" else micro_pt
    path = _corrupt(tmp_path / f"w{suffix}", how, source)
    with pytest.raises(ModelLoadError, match="cannot be read") as info:
        load_model(f"{micro_name}:{path}", device="cpu")
    msg = str(info.value)
    assert f"weights file {path}" in msg and "download it again" in msg and "save it again" in msg
    assert info.value.__cause__ is not None


def test_bundled_model_with_a_corrupt_file_names_it(tmp_path, monkeypatch):
    bad = _corrupt(tmp_path / "modgap-tiny.safetensors", "garbage")
    monkeypatch.setattr(modgap.zoo, "weights_path", lambda name="modgap-tiny": bad)
    with pytest.raises(ModelLoadError, match=f"weights file {bad} .*cannot be read"):
        load_model("modgap-tiny", device="cpu")
    with pytest.raises(ModelLoadError, match=f"weights file {bad} .*cannot be read"):
        load_model(f"modgap-tiny:{bad}", device="cpu")


def test_local_dir_with_a_corrupt_file_names_it(tmp_path, micro_state):
    folder = write_local_dir(tmp_path / "saved", micro_state)
    weights = folder / "open_clip_model.safetensors"
    _corrupt(weights, "truncated", weights)
    for spec in (f"local-dir:{folder}", str(folder)):
        with pytest.raises(ModelLoadError, match=f"weights file {weights} .*cannot be read"):
            load_model(spec, device="cpu")


# -- 4. devices this machine lacks ---------------------------------------------

def _machine(monkeypatch, cuda: int, mps: bool):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize("device,cuda,mps,match", [
    ("cuda", 0, False, "asks for a CUDA GPU"),
    ("cuda:0", 0, False, "asks for a CUDA GPU"),
    ("cuda:1", 1, False, "asks for CUDA GPU 1, but torch sees 1"),
    (torch.device("cuda", 3), 2, False, "asks for CUDA GPU 3"),
    ("mps", 0, False, "asks for Apple's MPS"),
    ("gpu", 0, False, "not a device name torch knows"),
    ("cuda:x", 1, False, "not a device name torch knows"),
])
def test_missing_device_is_named(monkeypatch, device, cuda, mps, match):
    _machine(monkeypatch, cuda, mps)
    with pytest.raises(ValueError, match=match) as info:
        pick_device(device)
    msg = str(info.value)
    assert msg.startswith(f"device={device!r}")
    assert "this machine has" in msg and "'auto'" in msg and "'cpu'" in msg
    assert ("has: cpu, cuda:0" in msg) == (cuda > 0)


def test_devices_this_machine_has_are_taken(monkeypatch):
    _machine(monkeypatch, 2, True)
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    assert pick_device("mps") == torch.device("mps")
    assert pick_device(" AUTO ") == torch.device("cuda")


def test_load_model_checks_the_device_first(monkeypatch, micro_name, micro_pt):
    _machine(monkeypatch, 0, False)
    with pytest.raises(ValueError, match="device='cuda'"):
        load_model(f"{micro_name}:{micro_pt}", device="cuda")


def test_device_of_the_wrong_kind():
    with pytest.raises(TypeError, match="device must be"):
        pick_device(["cpu"])


# -- 5. bare paths given as specs -------------------------------------------------

@pytest.mark.parametrize("make", ["file", "missing-file", "relative", "folder", "home"])
def test_bare_path_spec_says_which_forms_take_a_path(tmp_path, monkeypatch, micro_safetensors, make):
    monkeypatch.chdir(tmp_path)
    if make == "file":
        spec = str(micro_safetensors)
    elif make == "missing-file":
        spec = str(tmp_path / "model.safetensors")
    elif make == "relative":
        spec = "./weights.pt"
    elif make == "folder":
        (tmp_path / "not-a-model").mkdir()
        spec = str(tmp_path / "not-a-model")
    else:
        spec = "~/no-such-model-folder"
    with pytest.raises(ValueError, match=r"looks like a path") as info:
        load_model(spec, device="cpu")
    msg = str(info.value)
    assert repr(spec) in msg
    assert "'ARCH:/path/weights.safetensors'" in msg and "'local-dir:/path/folder'" in msg and "Clip.save()" in msg
    if make == "folder":
        assert "not a saved model" in msg


def test_architecture_names_with_a_slash_still_get_close_matches():
    with pytest.raises(ValueError, match="unknown architecture 'ViT-B/32'.*'ViT-B-32'"):
        load_model("ViT-B/32", device="cpu")


# -- 6. the Hub: offline set, or probed once --------------------------------------

@pytest.fixture
def hub_unset(tmp_path, monkeypatch):
    """An empty Hugging Face cache with HF_HUB_OFFLINE unset; the probe of
    the Hub is recorded and answers as each test says (never the network)."""
    hub = tmp_path / "hf-home" / "hub"
    hub.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(hub.parent))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HOME", str(hub.parent))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    calls = []

    def probe(answer):
        def fake(timeout=modgap.models.HUB_PROBE_TIMEOUT):
            calls.append(timeout)
            return answer
        monkeypatch.setattr(modgap.models, "_hub_reachable", fake)
        return calls

    return probe


@pytest.mark.parametrize("spec", ["ViT-B-32:laion2b_s34b_b79k", "hf-hub:acme/not-cached"])
def test_unreachable_hub_fails_fast_from_the_cache(hub_unset, monkeypatch, spec):
    import open_clip

    calls = hub_unset(False)
    seen = {}

    def fake_create(*args, **kwargs):
        seen["offline"] = (hf_constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE"))
        raise RuntimeError("not in the local cache")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fake_create)
    with pytest.raises(ModelLoadError, match="did not answer within 3 s") as info:
        load_model(spec, device="cpu")
    assert calls == [3.0]
    assert seen["offline"] == (True, "1")
    assert hf_constants.HF_HUB_OFFLINE is False and "HF_HUB_OFFLINE" not in os.environ
    assert f"could not load model {spec!r}" in str(info.value)


def test_unreachable_hub_with_nothing_cached_fails_in_seconds(hub_unset):
    calls = hub_unset(False)
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="did not answer within 3 s"):
        load_model("ViT-B-32:laion2b_s34b_b79k", device="cpu")
    assert calls == [3.0] and time.perf_counter() - start < 10


def test_unreachable_hub_still_loads_a_cached_repo(hub_unset, micro_state, tmp_path):
    from safetensors.torch import save
    from test_models import add_to_hub_cache

    calls = hub_unset(False)
    config = json.dumps({"model_cfg": MICRO_CFG, "preprocess_cfg": MICRO_PREPROCESS}).encode()
    weights = save({k: v.contiguous() for k, v in micro_state.items()})
    add_to_hub_cache(Path(hf_constants.HF_HUB_CACHE), "acme/micro-clip",
                     {"open_clip_config.json": config, "open_clip_model.safetensors": weights})
    clip = load_model("hf-hub:acme/micro-clip", device="cpu")
    assert calls == [3.0]
    assert torch.equal(clip.model.state_dict()["logit_scale"], micro_state["logit_scale"])


def test_hf_hub_offline_set_skips_the_probe(hub_unset, monkeypatch):
    calls = hub_unset(True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE=1 is set, so only the local cache was searched"):
        load_model("ViT-B-32:laion2b_s34b_b79k", device="cpu")
    assert calls == [] and time.perf_counter() - start < 10
    assert hf_constants.HF_HUB_OFFLINE is False


def test_reachable_hub_is_left_to_open_clip(hub_unset, monkeypatch):
    import open_clip

    calls = hub_unset(True)
    seen = {}

    def fake_create(*args, **kwargs):
        seen["offline"] = hf_constants.HF_HUB_OFFLINE
        raise RuntimeError("download failed")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fake_create)
    with pytest.raises(ModelLoadError) as info:
        load_model("ViT-B-32:laion2b_s34b_b79k", device="cpu")
    assert calls == [3.0] and seen["offline"] is False
    assert "did not answer" not in str(info.value)


def test_local_files_never_probe_the_hub(hub_unset, micro_name, micro_pt):
    calls = hub_unset(False)
    load_model(f"{micro_name}:{micro_pt}", device="cpu")
    assert calls == []


def test_probe_reports_an_unreachable_endpoint_quickly(monkeypatch):
    import urllib.request

    def refuse(*args, **kwargs):
        raise OSError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    start = time.perf_counter()
    assert modgap.models._hub_reachable(timeout=1.0) is False
    assert time.perf_counter() - start < 1.5
