"""The ``modgap`` command against the mistakes people make on a command line
and the failures a run meets.

Each case checks the exit status (2: a usage error found before any work,
1: the work failed), that stderr holds one or two plain lines that start
``modgap COMMAND: error:`` and name the flag or file at fault, with no
traceback, and that nothing was created or left behind. Nearly all of them
fail before a model is loaded."""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modgap import cli


def png(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)


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
