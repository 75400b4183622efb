"""The ``modgap`` command: the library's jobs from a terminal, for batch runs.

    modgap info
    modgap gap --model modgap-tiny --data shapes-pairs [--save-figures DIR]
    modgap reclip --model modgap-tiny --data shapes --domain night --out DIR
    modgap refine --model modgap-tiny --pairs shapes-pairs --method clip-refine --out DIR
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["load_data_arg", "main"]


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
    return 0


def load_data_arg(name_or_file: str, split: str = "test", n=None, seed: int = 0, domain=None, task=None,
                  image_root=None):
    """A named set (``modgap.data.available()``), a caption file
    (.csv/.tsv/.jsonl), a COCO captions .json, or a folder of class folders."""
    from modgap import data

    p = Path(name_or_file)
    if p.is_dir():
        return data.from_folder(p)
    if p.suffix.lower() in (".csv", ".tsv", ".jsonl"):
        return data.from_captions(p, image_root=image_root)
    if p.suffix.lower() == ".json":
        return data.from_coco(p, image_root=image_root or p.parent)
    return data.load(name_or_file, split=split, n=n, seed=seed, domain=domain, task=task)


def _gap_inputs(clip, ds):
    """Image and text embeddings to compare: captions for a pair set, the
    prompt of each image's class for a labelled image set."""
    from modgap.data import ImageSet

    img = clip.encode_images(ds)
    if isinstance(ds, ImageSet):
        if ds.labels is None:
            raise SystemExit(f"{ds.name} has no labels and no captions; give a pair set or a labelled set")
        classes = clip.class_embeddings(ds.classnames, ds.templates)
        return img, classes[ds.labels], classes, ds.labels
    txt = clip.encode_texts(ds.first_captions())
    if ds.labels is not None and len(ds.classnames):
        return img, txt, clip.class_embeddings(ds.classnames, ds.templates), ds.labels
    return img, txt, None, None


def _cmd_gap(args) -> int:
    from modgap import metrics

    clip = _load(args)
    ds = load_data_arg(args.data, split=args.split, n=args.n, seed=args.seed, domain=args.domain,
                       task=args.task, image_root=args.image_root)
    img, txt, classes, labels = _gap_inputs(clip, ds)
    report = metrics.gap_report(img, txt, class_emb=classes, labels=labels, name=f"{args.model} / {ds.name}")
    print(report.to_string())
    if args.save_figures:
        import matplotlib

        matplotlib.use("Agg")
        from modgap import viz

        out = Path(args.save_figures)
        out.mkdir(parents=True, exist_ok=True)
        figs = {
            "embeddings": viz.plot_embeddings(img, txt, labels=labels, method=args.method).figure,
            "similarity": viz.plot_similarity(img[:200], txt[:200]).figure,
            "spectrum": viz.plot_spectrum(img, txt).figure,
        }
        if classes is not None:
            shift = metrics.shift_along_gap(img, classes, labels, deltas=[d / 4 for d in range(-8, 9)])
            figs["gap_shift"] = viz.plot_gap_shift(shift).figure
        for name, fig in figs.items():
            path = out / f"{name}.png"
            if path.exists() and not args.overwrite:
                raise SystemExit(f"{path} exists; pass --overwrite to replace it")
            fig.savefig(path, dpi=120, bbox_inches="tight")
            print(f"saved {path}")
    return 0


def _check_out(path: str, overwrite: bool) -> None:
    """Fail before any work when ``--out`` cannot take the run."""
    from modgap.io import RUN_FILE, check_free_folder

    try:
        check_free_folder(path, overwrite, RUN_FILE)
    except FileExistsError as e:
        raise SystemExit(f"--out: {e}".replace("overwrite=True", "--overwrite")) from None


def _report_saved(est, out: str) -> None:
    """Where the run went and how to load it back (the same for every method)."""
    models = ", ".join(f"{name}/" for name in est.fitted_models())
    print(f"wrote {out}: estimator.json, history.csv, {models}")
    print(f"load the model with modgap.load_model('{out}'), or all of it with "
          f"modgap.adapt.{type(est).__name__}.load('{out}')")


def _cmd_reclip(args) -> int:
    from modgap.adapt import run_reclip

    _check_out(args.out, args.overwrite)
    ds = load_data_arg(args.data, split="test", n=args.n, seed=args.seed, domain=args.domain, task=args.task)
    est = run_reclip(_load(args), ds, epochs=args.epochs, seed=args.seed, out=args.out, overwrite=args.overwrite)
    print(est.history_.to_string(index=False))
    _report_saved(est, args.out)
    return 0


def _cmd_refine(args) -> int:
    from modgap.adapt import run_refine

    _check_out(args.out, args.overwrite)
    pairs = load_data_arg(args.pairs, split="train", n=args.n, seed=args.seed, image_root=args.image_root)
    kw = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr), ("batch_size", args.batch_size))
          if v is not None}
    est = run_refine(_load(args), pairs, method=args.method, seed=args.seed, out=args.out,
                     overwrite=args.overwrite, **kw)
    print(est.history_.tail(5).to_string(index=False))
    _report_saved(est, args.out)
    return 0


def _load(args):
    import modgap

    return modgap.load_model(args.model, device=args.device)


def build_parser() -> argparse.ArgumentParser:
    from modgap.adapt.clip_refine import METHODS

    ap = argparse.ArgumentParser(prog="modgap", description="See, measure and close the modality gap of CLIP models.")
    sub = ap.add_subparsers(dest="command", required=True)

    sub.add_parser("info", help="versions, the device modgap would use, and the models that load offline")

    def common(p, data_flag="--data"):
        p.add_argument("--model", default="modgap-tiny", help="model spec (default: modgap-tiny)")
        p.add_argument(data_flag, required=True, help="a named set, a caption file, COCO json or a class folder")
        p.add_argument("--n", type=int, default=None, help="number of images (generated sets)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default="auto")
        p.add_argument("--image-root", default=None, help="where the images of a caption file live")

    g = sub.add_parser("gap", help="print the gap report of a model on a data set")
    common(g)
    g.add_argument("--split", default="test")
    g.add_argument("--domain", default=None)
    g.add_argument("--task", default=None)
    g.add_argument("--save-figures", default=None, metavar="DIR")
    g.add_argument("--method", default="pca", choices=["pca", "umap", "tsne"])
    g.add_argument("--overwrite", action="store_true")

    r = sub.add_parser("reclip", help="adapt a model to unlabelled target images with ReCLIP")
    common(r)
    r.add_argument("--domain", default=None)
    r.add_argument("--task", default=None)
    r.add_argument("--epochs", type=int, default=None)
    r.add_argument("--out", required=True)
    r.add_argument("--overwrite", action="store_true")

    f = sub.add_parser("refine", help="post-pre-train a model on image-caption pairs (CLIP-Refine and baselines)")
    common(f, "--pairs")
    f.add_argument("--method", default="clip-refine", choices=list(METHODS))
    f.add_argument("--epochs", type=int, default=None)
    f.add_argument("--lr", type=float, default=None)
    f.add_argument("--batch-size", type=int, default=None)
    f.add_argument("--out", required=True)
    f.add_argument("--overwrite", action="store_true")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"info": _cmd_info, "gap": _cmd_gap, "reclip": _cmd_reclip, "refine": _cmd_refine}
    return handlers[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
