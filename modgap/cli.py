"""The ``modgap`` command: the library's jobs from a terminal, for batch runs.

    modgap info
    modgap gap --model modgap-tiny --data shapes-pairs [--save-figures DIR]
    modgap reclip --model modgap-tiny --data shapes --domain night --out DIR
    modgap refine --model modgap-tiny --pairs shapes-pairs --method clip-refine --out DIR
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main", "load_data_arg"]


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
    import modgap
    from modgap import metrics

    clip = modgap.load_model(args.model, device=args.device)
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


def _out_dir(path: str, overwrite: bool) -> Path:
    out = Path(path)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SystemExit(f"--out {out} is not empty; pass --overwrite to write into it")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _cmd_reclip(args) -> int:
    import modgap
    from modgap.adapt.reclip import ReCLIP

    clip = modgap.load_model(args.model, device=args.device)
    ds = load_data_arg(args.data, split="test", n=args.n, seed=args.seed, domain=args.domain, task=args.task)
    out = _out_dir(args.out, args.overwrite)
    model = ReCLIP(clip, ds.classnames, ds.templates, epochs=args.epochs, seed=args.seed)
    model.fit(ds, labels=ds.labels)
    model.save(out, overwrite=args.overwrite)
    print(model.history_.to_string(index=False))
    arch = _architecture(clip)
    print(f"wrote {out}: history.csv, visual_model.safetensors, text_model.safetensors, classifier, settings")
    if arch:
        print(f"load a branch with modgap.load_model('{arch}:{out / 'visual_model.safetensors'}'), "
              f"or all of it with modgap.adapt.ReCLIP.load('{out}', clip)")
    return 0


def _architecture(clip) -> str | None:
    """The open_clip architecture name of a clip loaded from an ARCH[:TAG] spec."""
    if clip.name.startswith(("hf-hub:", "local-dir:")):
        return None
    return clip.name.split(":")[0]


def _cmd_refine(args) -> int:
    import modgap
    from modgap.adapt.refine import CLIPRefine
    from modgap.io import save_state_dict

    clip = modgap.load_model(args.model, device=args.device)
    pairs = load_data_arg(args.pairs, split="train", n=args.n, seed=args.seed, image_root=args.image_root)
    out = _out_dir(args.out, args.overwrite)
    kw = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr), ("batch_size", args.batch_size))
          if v is not None}
    ref = CLIPRefine(clip, method=args.method, seed=args.seed, **kw).fit(pairs)
    ref.history_.to_csv(out / "history.csv", index=False)
    weights = save_state_dict(ref.model_, out / "model.safetensors", overwrite=args.overwrite)
    arch = _architecture(clip)
    (out / "model.json").write_text(json.dumps({"base": clip.name, "method": args.method, "architecture": arch}))
    print(ref.history_.tail(5).to_string(index=False))
    if arch:
        print(f"wrote {weights}; load it with modgap.load_model('{arch}:{weights}')")
    else:
        print(f"wrote {weights}")
    return 0


def build_parser() -> argparse.ArgumentParser:
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
    f.add_argument("--method", default="clip-refine",
                   choices=["clip-refine", "rafa", "hycd", "self-kd", "contrastive"])
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
