"""The ``modgap`` command: the library's jobs from a terminal, for batch runs.

    modgap info
    modgap gap --model modgap-tiny --data shapes-pairs [--save-figures DIR]
    modgap reclip --model modgap-tiny --data shapes --domain night --out DIR
    modgap refine --model modgap-tiny --pairs shapes-pairs --method clip-refine --out DIR

Every argument, the data named and the output folder are checked before any
work. An error is one line on stderr, ``modgap COMMAND: error: MESSAGE``,
with no traceback; ``--debug`` (before or after the command) lets the
exception through to show it. Exit status: 0 done, 1 the work failed,
2 a usage error (nothing was done and nothing was written), 130 interrupted.
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import math
import os
import re
import sys
import tempfile
from pathlib import Path

__all__ = ["CommandLineError", "build_parser", "cli_words", "load_data_arg", "main"]

# the caption files load_data_arg reads (a .json is COCO captions)
CAPTION_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
# what `modgap gap --save-figures DIR` writes
FIGURES = ("embeddings.png", "similarity.png", "spectrum.png", "gap_shift.png", "report.csv", "report.json")


class CommandLineError(ValueError):
    """A bad command line, found before any work: exit status 2."""


# -- argument types: argparse names the flag in their errors -------------------------
def _whole(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number of at least {low}, got {text!r}"
                                             ) from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _number(low: float, *, above: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value) or value < low or (above and value == low):
            raise argparse.ArgumentTypeError(
                f"must be a finite number {'above' if above else 'of at least'} {low:g}, got {text}")
        return value

    return parse


def _share(text: str) -> float:
    value = _number(0.0, above=False)(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 1, got {text}")
    return value


def _holdout(text: str) -> int | float:
    """A count of pairs (``256``) or a fraction of them (``0.1``)."""
    try:
        value = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a count (256) or a fraction (0.1), got {text!r}"
                                             ) from None
        if not 0.0 <= value < 1.0:
            raise argparse.ArgumentTypeError(f"a fraction must lie in [0, 1), got {text}")
        return value
    if value < 0:
        raise argparse.ArgumentTypeError(f"a count must be at least 0, got {value}")
    return value


def _device(text: str) -> str:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, refused where this
    machine does not have it."""
    import torch

    if text == "auto":
        return text
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use auto, cpu, cuda, cuda:N or mps"
                                         ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is built without CUDA" if torch.version.cuda is None
                   else "no CUDA device is visible")
            raise argparse.ArgumentTypeError(f"{text} was asked for, but {why}; "
                                             "use --device cpu or --device auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"{text} was asked for, but this machine has {torch.cuda.device_count()} CUDA device(s) "
                f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise argparse.ArgumentTypeError("mps was asked for, but it is not available here; "
                                             "use --device cpu")
    elif dev.type != "cpu":
        raise argparse.ArgumentTypeError(f"modgap runs on cpu, cuda or mps, got {text!r}")
    return text


# -- checks before any work ----------------------------------------------------------
def _path_like(text: str) -> bool:
    return ("/" in text or os.sep in text or text.startswith((".", "~"))
            or Path(text).suffix.lower() in CAPTION_SUFFIXES or Path(text).expanduser().exists())


def _given(args, name: str) -> bool:
    return getattr(args, name, None) is not None


def _check_data_arg(flag: str, text: str, args, want: str | None) -> None:
    """``text`` names a set modgap has, or a caption file or class folder that
    exists, of the kind the command needs (``"images"``, ``"pairs"`` or
    either); the flags that pick a variant of a named set come only with one."""
    from modgap.data import available

    is_path = _path_like(text)
    if is_path:
        path = Path(text).expanduser()
        if not path.exists():
            raise CommandLineError(f"{flag}: {text} does not exist; give a named set (modgap info lists "
                                   "them), a caption file (.csv, .tsv, .jsonl), a COCO captions .json "
                                   "or a folder of class folders")
        if path.is_dir():
            kind = "images"
        elif path.suffix.lower() in CAPTION_SUFFIXES:
            kind = "pairs"
        else:
            raise CommandLineError(f"{flag}: cannot read {text}; give a caption file (.csv, .tsv, .jsonl), "
                                   "a COCO captions .json or a folder of class folders")
        for name in ("n", "domain", "task", "split"):
            if _given(args, name):
                raise CommandLineError(f"--{name} picks from a named set; {flag} {text} is read whole, "
                                       f"so leave --{name} out")
        if _given(args, "image_root"):
            if kind != "pairs":
                raise CommandLineError(f"--image-root is where the images of a caption file live; "
                                       f"{flag} {text} is a folder, so leave --image-root out")
            if not Path(args.image_root).expanduser().is_dir():
                raise CommandLineError(f"--image-root: {args.image_root} is not a folder")
        for name in ("image_column", "caption_column"):
            if _given(args, name) and path.suffix.lower() not in (".csv", ".tsv", ".jsonl"):
                option = "--" + name.replace("_", "-")
                raise CommandLineError(f"{option} names a column of a .csv, .tsv or .jsonl caption file; "
                                       f"{flag} {text} is not one, so leave {option} out")
        if _given(args, "encoding"):
            import codecs

            if kind != "pairs":
                raise CommandLineError(f"--encoding is for caption files; {flag} {text} is a folder, "
                                       "so leave --encoding out")
            try:
                codecs.lookup(args.encoding)
            except LookupError:
                raise CommandLineError(f"--encoding: unknown text encoding {args.encoding!r}; e.g. utf-8, "
                                       "cp1252, utf-16-le") from None
    else:
        sets = available().set_index("name")
        if text not in sets.index:
            close = difflib.get_close_matches(text, list(sets.index), n=3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise CommandLineError(f"{flag}: unknown data set {text!r}, and no such file or folder; {hint}"
                                   f"the named sets are {', '.join(sets.index)}")
        row = sets.loc[text]
        kind = row["kind"]
        for name, options in (("domain", row["domains"]), ("task", row["tasks"])):
            options = options.split(", ")
            if _given(args, name) and getattr(args, name) not in options:
                raise CommandLineError(f"--{name}: {text} has the {name}s {', '.join(options)}, "
                                       f"got {getattr(args, name)!r}")
        for name in ("image_root", "image_column", "caption_column", "encoding"):
            if _given(args, name):
                option = "--" + name.replace("_", "-")
                raise CommandLineError(f"{option} is for caption files; {flag} {text} is a named set, "
                                       f"so leave {option} out")
    if want is not None and kind != want:
        if is_path:
            what = "a caption file" if kind == "pairs" else "a folder of class folders"
        else:
            what = "a set of image-caption pairs" if kind == "pairs" else "a set of labelled images"
        need = {
            "images": "labelled images (a named image set such as shapes, or a folder of class folders)",
            "pairs": "image-caption pairs (a named pair set such as shapes-pairs, or a caption file)",
        }[want]
        raise CommandLineError(f"{flag}: modgap {args.command} needs {need}; {text} is {what}")


def _check_writable(flag: str, start: Path) -> None:
    """The nearest folder at or above ``start`` that exists takes a new file."""
    here = start.absolute()
    while not here.exists() and here != here.parent:
        here = here.parent
    if not here.is_dir():
        raise CommandLineError(f"{flag}: {here} is a file, so no folder can be made under it; "
                               "choose another path")
    try:
        fd, probe = tempfile.mkstemp(dir=here, prefix=".modgap-probe-", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CommandLineError(f"{flag}: cannot write in {here} ({e.strerror or e}); "
                               "choose a folder you can write to") from None


def _check_out(flag: str, path: str, overwrite: bool, marker: str | None = None,
               ours: tuple[str, ...] | None = None) -> None:
    """``path`` can take the output: not a file, empty or new unless
    ``--overwrite``, never a folder modgap did not write (one that holds
    ``marker``, or only the files named in ``ours``), and writable."""
    from modgap.io import check_free_folder

    try:
        folder = check_free_folder(path, overwrite, marker)
    except FileExistsError as e:
        raise CommandLineError(f"{flag}: {e}") from None
    if ours is not None and folder.is_dir():
        foreign = sorted(p.name for p in folder.iterdir() if p.name not in ours)
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise CommandLineError(f"{flag}: {folder} holds files modgap did not write ({shown}); "
                                   "choose a new or empty folder")
    _check_writable(flag, folder if ours is not None else folder.absolute().parent)


def _check_model_arg(spec: str, weights_cache_dir) -> None:
    if not spec.strip():
        raise CommandLineError("--model is empty; give a spec such as modgap-tiny (modgap info lists the "
                               "models that load offline)")
    if spec.startswith("local-dir:"):
        folder = spec.removeprefix("local-dir:")
        if not Path(folder).expanduser().is_dir():
            raise CommandLineError(f"--model: folder {folder} does not exist")
    elif ":" not in spec and _path_like(spec) and not Path(spec).expanduser().exists():
        raise CommandLineError(f"--model: {spec} does not exist; give a model spec such as modgap-tiny or a "
                               "folder that modgap reclip or modgap refine wrote with --out")
    if weights_cache_dir is not None and Path(weights_cache_dir).expanduser().is_file():
        raise CommandLineError(f"--weights-cache-dir: {weights_cache_dir} is a file, not a folder")


# -- the library's words as the command line's ---------------------------------------
_PYTHON_HINTS = (
    (re.compile(r"load_model\('([^']*)'\)"), r"--model \1"),
    (re.compile(r"\(see modgap\.data\.available\(\)\)"), "(modgap info lists them)"),
    (re.compile(r"see open_clip\.list_models\(\)"), "modgap info lists the models that load offline"),
    (re.compile(r"\s*or pass eval_pairs=\S*"), ""),
    (re.compile(r"training stopped and (?:model_ holds|the branches hold) the weights of [^,.]*, "
                r"the last row of history_\."), "training stopped, and nothing was written."),
)


def cli_words(message: str, flags) -> str:
    """``message`` with the Python spelling of a setting that the command has
    a flag for written as that flag: ``overwrite=True`` -> ``--overwrite``,
    ``holdout=256`` -> ``--holdout 256``, ``batch_size`` -> ``--batch-size``."""
    for pattern, text in _PYTHON_HINTS:
        message = pattern.sub(text, message)
    if "--weights-cache-dir" in flags:
        message = re.sub(r"(?<![\w.'\"-])cache_dir=", "--weights-cache-dir ", message)
    for flag in sorted(flags, key=len, reverse=True):
        name = re.escape(flag[2:].replace("-", "_"))

        def spelled(m, flag=flag):
            value = m.group(1)
            return flag if value in ("", "True") else f"{flag} {value}"

        message = re.sub(rf"(?<![\w.'\"-]){name}=([^\s)\];,]*)", spelled, message)
        bare = rf"(?<![\w.'\"-]){name}(?![\w=(-])"
        if "-" in flag[2:] or flag == "--holdout":
            message = re.sub(bare, flag, message)
        else:
            message = re.sub(bare + r"(?= must\b| has\b)", flag, message)
    return message


# -- commands ------------------------------------------------------------------------
def _cmd_info(args) -> int:
    import open_clip
    import torch

    import modgap
    from modgap.models import offline_models, pick_device

    dev = pick_device("auto")
    print(f"modgap      {modgap.__version__}")
    print(f"torch       {torch.__version__}")
    print(f"open_clip   {open_clip.__version__}")
    print(f"python      {sys.version.split()[0]}")
    extra = f" ({torch.cuda.get_device_name(0)})" if dev.type == "cuda" else ""
    print(f"device      {dev}{extra}")
    print("offline     " + ", ".join(offline_models() or ["(none)"]))
    print("data sets   " + ", ".join(modgap.data.available()["name"]))
    return 0


def load_data_arg(name_or_file: str, split: str = "test", n=None, seed: int = 0, domain=None, task=None,
                  image_root=None, image_column=None, caption_column=None, encoding=None):
    """A named set (``modgap.data.available()``), a caption file
    (.csv/.tsv/.jsonl, with the columns ``image_column`` and
    ``caption_column``, default image and caption), a COCO captions .json,
    or a folder of class folders; ``encoding`` is that of a caption file."""
    from modgap import data

    p = Path(name_or_file).expanduser()
    text = {} if encoding is None else {"encoding": encoding}
    if p.is_dir():
        return data.from_folder(p)
    if p.suffix.lower() in (".csv", ".tsv", ".jsonl"):
        return data.from_captions(p, image_root=image_root, image_column=image_column or "image",
                                  caption_column=caption_column or "caption", **text)
    if p.suffix.lower() == ".json":
        return data.from_coco(p, image_root=image_root or p.parent, **text)
    if _path_like(name_or_file) and not p.exists():
        raise FileNotFoundError(f"{name_or_file} does not exist")
    return data.load(name_or_file, split=split, n=n, seed=seed, domain=domain, task=task)


def _gap_inputs(clip, ds):
    """Image and text embeddings to compare: captions for a pair set, the
    prompt of each image's class for a labelled image set."""
    from modgap.data import ImageSet

    img = clip.encode_images(ds, progress=True)
    if isinstance(ds, ImageSet):
        classes = clip.class_embeddings(ds.classnames, ds.templates)
        return img, classes[ds.labels], classes, ds.labels
    txt = clip.encode_texts(ds.first_captions(), progress=True)
    if ds.labels is not None and len(ds.classnames):
        return img, txt, clip.class_embeddings(ds.classnames, ds.templates), ds.labels
    return img, txt, None, None


def _cmd_gap(args) -> int:
    from modgap import distributed, metrics
    from modgap.data import ImageSet
    from modgap.io import atomic_write, atomic_write_text

    _check_data_arg("--data", args.data, args, want=None)
    if args.save_figures is not None:
        _check_out("--save-figures", args.save_figures, args.overwrite, ours=FIGURES)
    elif args.overwrite:
        raise CommandLineError("--overwrite replaces the files of --save-figures; "
                               "give --save-figures DIR too")
    _check_model_arg(args.model, args.weights_cache_dir)
    ds = load_data_arg(args.data, split=args.split or "test", n=args.n, seed=args.seed, domain=args.domain,
                       task=args.task, image_root=args.image_root, image_column=args.image_column,
                       caption_column=args.caption_column, encoding=args.encoding)
    if isinstance(ds, ImageSet) and ds.labels is None:
        raise CommandLineError(f"--data: {ds.name} has no labels and no captions; give a pair set or a "
                               "labelled image set")
    clip = _load(args)
    img, txt, classes, labels = _gap_inputs(clip, ds)
    report = metrics.gap_report(img, txt, class_emb=classes, labels=labels, name=f"{args.model} / {ds.name}")
    print(report.to_string())
    if args.save_figures and distributed.is_main():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from modgap import viz

        out = Path(args.save_figures).expanduser()
        names = list(ds.classnames) if labels is not None and len(ds.classnames) else None
        figs = {
            "embeddings": viz.plot_embeddings(img, txt, labels=labels, method=args.method,
                                              class_names=names, text_name="caption").figure,
            "similarity": viz.plot_similarity(img[:200], txt[:200]).figure,
            "spectrum": viz.plot_spectrum(img, txt).figure,
        }
        if classes is not None:
            shift = metrics.shift_along_gap(img, classes, labels, deltas=[d / 4 for d in range(-8, 9)])
            figs["gap_shift"] = viz.plot_gap_shift(shift).figure
        for name, fig in figs.items():
            path = out / f"{name}.png"
            atomic_write(path, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=120,
                                                                bbox_inches="tight"), overwrite=True)
            plt.close(fig)
            print(f"saved {path}")
        for path, text in ((out / "report.csv", report.rename("value").to_csv(index_label="figure")),
                           (out / "report.json", report.to_json(indent=1))):
            atomic_write_text(path, text)
            print(f"saved {path}")
    return 0


def _report_saved(est, out: str) -> None:
    """Where the run went and how to use it (the same for every method)."""
    models = ", ".join(f"{name}/" for name in est.fitted_models())
    print(f"wrote {out}: estimator.json, history.csv, {models}")
    print(f"measure it with modgap gap --model {out} --data DATA")
    print(f"load the model with modgap.load_model('{out}'), or all of it with "
          f"modgap.adapt.{type(est).__name__}.load('{out}')")


def _default(estimator_class, name: str):
    """The default of a setting of ``estimator_class``."""
    import inspect

    return inspect.signature(estimator_class).parameters[name].default


def _passed(args, *names) -> dict:
    """The settings given on the command line, for the estimator (the others
    keep the library's defaults)."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _cmd_reclip(args) -> int:
    from modgap.adapt import ReCLIP, run_reclip
    from modgap.io import RUN_FILE

    _check_data_arg("--data", args.data, args, want="images")
    _check_out("--out", args.out, args.overwrite, marker=RUN_FILE)
    _check_model_arg(args.model, args.weights_cache_dir)
    ds = load_data_arg(args.data, split="test", n=args.n, seed=args.seed, domain=args.domain, task=args.task,
                       image_root=args.image_root)
    k = _default(ReCLIP, "k") if args.k is None else args.k
    nodes = len(ds) + len(ds.classnames)
    if k >= nodes:
        given = f"--k {k}" if args.k is not None else f"--k is {k} by default, which"
        raise CommandLineError(f"{given} must be smaller than the number of graph nodes (images + classes = "
                               f"{len(ds)} + {len(ds.classnames)}); lower --k or give more images "
                               "(--n of a named set)")
    params = _passed(args, "epochs", "batch_size", "lr_visual", "lr_text", "k", "min_confident_agreement",
                     "precision")
    # a command-line job shows its progress whatever its size
    est = run_reclip(_load(args), ds, seed=args.seed, out=args.out, overwrite=args.overwrite, progress=True,
                     **params)
    print(est.history_.to_string(index=False))
    _report_saved(est, args.out)
    return 0


def _cmd_refine(args) -> int:
    from modgap.adapt import CLIPRefine, run_refine
    from modgap.io import RUN_FILE

    _check_data_arg("--pairs", args.pairs, args, want="pairs")
    _check_out("--out", args.out, args.overwrite, marker=RUN_FILE)
    _check_model_arg(args.model, args.weights_cache_dir)
    pairs = load_data_arg(args.pairs, split="train", n=args.n, seed=args.seed, image_root=args.image_root,
                          image_column=args.image_column, caption_column=args.caption_column,
                          encoding=args.encoding)
    holdout = _default(CLIPRefine, "holdout") if args.holdout is None else args.holdout
    kept = round(holdout * len(pairs)) if isinstance(holdout, float) else holdout
    if kept and len(pairs) - kept < 2:
        given = (f"--holdout {holdout}" if args.holdout is not None
                 else f"--holdout is {holdout} by default; it")
        raise CommandLineError(f"{given} keeps {kept} of the {len(pairs)} pairs for measuring, leaving fewer "
                               "than 2 to train on; lower --holdout (0 measures nothing) or give more pairs "
                               "(--n of a named set)")
    params = _passed(args, "epochs", "steps", "lr", "batch_size", "holdout", "precision")
    est = run_refine(_load(args), pairs, method=args.method, seed=args.seed, out=args.out,
                     overwrite=args.overwrite, progress=True, **params)
    print(est.history_.tail(5).to_string(index=False))
    _report_saved(est, args.out)
    return 0


def _load(args):
    """The model of ``--model``; a spec that names no model is a usage error,
    weights that cannot be fetched or read a failure of the work."""
    import modgap

    try:
        return modgap.load_model(args.model, device=args.device, weights_cache_dir=args.weights_cache_dir)
    except (ValueError, TypeError, FileNotFoundError) as e:
        message = cli_words(str(e), args.command_flags)
        raise CommandLineError(message if "--model" in message else f"--model: {message}") from e


# -- the parser ----------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in the same two lines as modgap's."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n"
                     f"{self.prog}: see '{self.prog} --help' for the options\n")


def build_parser() -> argparse.ArgumentParser:
    from modgap.adapt import CLIPRefine, ReCLIP
    from modgap.adapt.clip_refine import METHODS
    from modgap.embed import PRECISIONS

    ap = _Parser(
        prog="modgap", description="See, measure and close the modality gap of CLIP models.",
        epilog="Every argument and the output folder are checked before any work. Exit status: 0 done, "
               "1 the work failed, 2 a usage error (nothing done, nothing written), 130 interrupted. "
               "Errors are one line without a traceback; --debug, before or after the command, shows it.")
    ap.add_argument("--debug", action="store_true", help="let errors through with their traceback")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, help):
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="let errors through with their traceback")
        return p

    command("info", "versions, the device modgap would use, the models that load offline and the named sets")

    def common(p, data_flag="--data"):
        p.add_argument("--model", default="modgap-tiny",
                       help="model spec, or a folder modgap wrote with --out (default: modgap-tiny)")
        p.add_argument(data_flag, required=True,
                       help="a named set (modgap info lists them), a caption file (.csv, .tsv, .jsonl), "
                            "a COCO captions .json or a folder of class folders")
        # --count is the spelling torchrun lets through: its own flags make --n ambiguous
        p.add_argument("--n", "--count", dest="n", type=_whole(1), default=None,
                       help="number of images of a named set (--count under torchrun)")
        p.add_argument("--seed", type=_whole(0), default=0,
                       help="seed of the data and the training (default: 0)")
        p.add_argument("--device", type=_device, default="auto",
                       help="auto, cpu, cuda, cuda:N or mps (default: auto)")
        p.add_argument("--image-root", default=None, metavar="DIR",
                       help="where the images of a caption file live (default: the file's folder)")
        p.add_argument("--weights-cache-dir", default=None, metavar="DIR",
                       help="where open_clip downloads and looks for weights")

    def columns(p):
        p.add_argument("--image-column", default=None, metavar="NAME",
                       help="column of the image paths in a .csv, .tsv or .jsonl caption file "
                            "(default: image)")
        p.add_argument("--caption-column", default=None, metavar="NAME",
                       help="column of the captions in a .csv, .tsv or .jsonl caption file "
                            "(default: caption)")
        p.add_argument("--encoding", default=None,
                       help="text encoding of a caption file, e.g. cp1252 (default: UTF-8, or as its "
                            "byte-order mark says)")

    g = command("gap", "print the gap report of a model on a data set")
    common(g)
    columns(g)
    g.add_argument("--split", default=None, choices=["train", "test"],
                   help="split of a named set (default: test)")
    g.add_argument("--domain", default=None, help="domain of a named set (photo, sketch, night, noisy)")
    g.add_argument("--task", default=None, help="what the labels of a named set name (shape, color, digit)")
    g.add_argument("--save-figures", default=None, metavar="DIR", help="write the figures and the report (CSV, JSON) into DIR")
    g.add_argument("--method", default="pca", choices=["pca", "umap", "tsne"],
                   help="projection of the embedding figure (default: pca)")
    g.add_argument("--overwrite", action="store_true", help="replace the figures of an earlier run in DIR")

    r = command("reclip", "adapt a model to unlabelled target images with ReCLIP")
    common(r)
    r.add_argument("--domain", default=None, help="domain of a named set (photo, sketch, night, noisy)")
    r.add_argument("--task", default=None, help="what the labels of a named set name (shape, color, digit)")
    r.add_argument("--epochs", type=_whole(0), default=None,
                   help="training passes (default: by model size; 0 measures the start only)")
    r.add_argument("--batch-size", type=_whole(1), default=None,
                   help=f"images a step (default: {_default(ReCLIP, 'batch_size')})")
    r.add_argument("--lr-visual", type=_number(0.0, above=False), default=None,
                   help="learning rate of ReCLIP-V (default: chosen by model size)")
    r.add_argument("--lr-text", type=_number(0.0, above=False), default=None,
                   help="learning rate of ReCLIP-T (default: chosen by model size)")
    r.add_argument("--k", type=_whole(1), default=None,
                   help=f"neighbours of each node in label propagation (default: {_default(ReCLIP, 'k')})")
    r.add_argument("--min-confident-agreement", type=_share, default=None,
                   help="adapt only where label propagation keeps at least this share of the zero-shot labels of "
                        "the most confident images, 0 to 1 (default: "
                        f"{_default(ReCLIP, 'min_confident_agreement')}; 0 always adapts)")
    r.add_argument("--precision", default=None, choices=list(PRECISIONS),
                   help="arithmetic of every pass in open_clip's words (default: bf16 autocast on a GPU, "
                        "fp16 with loss scaling where it has no bf16, fp32 on the CPU)")
    r.add_argument("--out", required=True, metavar="DIR", help="folder to write the adapted models to")
    r.add_argument("--overwrite", action="store_true", help="replace a folder an earlier run wrote")

    f = command("refine", "post-pre-train a model on image-caption pairs (CLIP-Refine and baselines)")
    common(f, "--pairs")
    columns(f)
    f.add_argument("--method", default="clip-refine", choices=list(METHODS),
                   help="clip-refine or one of its baselines (default: clip-refine)")
    budget = f.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=_whole(1), default=None,
                        help="passes over the pairs (default: by model size)")
    budget.add_argument("--steps", type=_whole(1), default=None,
                        help="optimiser steps instead of epochs (default: by model size: 120 for small models)")
    f.add_argument("--lr", type=_number(0.0, above=True), default=None,
                   help="peak learning rate (default: by model size)")
    f.add_argument("--batch-size", type=_whole(2), default=None, help="pairs a step (default: by model size)")
    f.add_argument("--holdout", type=_holdout, default=None,
                   help="pairs set aside to measure the gap as training goes: a count or a fraction "
                        f"(default: {_default(CLIPRefine, 'holdout')}; 0 measures nothing)")
    f.add_argument("--precision", default=None, choices=list(PRECISIONS),
                   help="training arithmetic in open_clip's words (default: fp32, the reference's; amp_bf16 "
                        "takes about half the activation memory on a GPU)")
    f.add_argument("--out", required=True, metavar="DIR", help="folder to write the refined model to")
    f.add_argument("--overwrite", action="store_true", help="replace a folder an earlier run wrote")

    for p in sub.choices.values():
        p.set_defaults(command_flags=frozenset(re.findall(r"--[a-z][\w-]*", p.format_usage())))
    return ap


_HANDLERS = {"info": _cmd_info, "gap": _cmd_gap, "reclip": _cmd_reclip, "refine": _cmd_refine}


def _failures() -> tuple[type[BaseException], ...]:
    """What a user's input or machine causes (as opposed to a bug in modgap,
    whose traceback is shown)."""
    import torch

    from modgap.adapt.base import DivergenceError
    from modgap.models import ModelLoadError

    return (ValueError, TypeError, OSError, ImportError, ModelLoadError, DivergenceError,
            torch.cuda.OutOfMemoryError)


def _say(args, message: str) -> None:
    lines = cli_words(message.strip() or "failed", args.command_flags).splitlines()
    print(f"modgap {args.command}: error: {lines[0]}", file=sys.stderr)
    for line in lines[1:]:
        print(line, file=sys.stderr)


def main(argv=None) -> int:
    """Run the command in ``argv`` (default: ``sys.argv[1:]``); returns the
    exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    failures = _failures()
    from modgap import distributed

    # under torchrun: one process group for the job, and one rank that prints
    started = distributed.init_from_env()
    try:
        with contextlib.ExitStack() as stack:
            if not distributed.is_main():
                stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
            return _HANDLERS[args.command](args)
    except CommandLineError as e:
        if args.debug:
            raise
        _say(args, str(e))
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"modgap {args.command}: interrupted", file=sys.stderr)
        return 130
    except failures as e:
        if args.debug:
            raise
        import torch

        message = str(e)
        if isinstance(e, torch.cuda.OutOfMemoryError):
            message = message.strip().splitlines()[0] + (
                "; lower --batch-size" if "--batch-size" in args.command_flags else "")
        elif isinstance(e, OSError) and e.filename and e.strerror:
            message = f"{e.filename}: {e.strerror}"
        _say(args, message)
        return 1
    finally:
        if started:
            distributed.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
