"""ReCLIP on every shifted domain of the generated world and on the real
handwritten digits: top-1 accuracy of zero-shot, of label propagation alone,
and of ReCLIP at the epoch it keeps (no labels used to fit; they only score).

    python benchmarks/reclip_domains.py
    python benchmarks/reclip_domains.py --model modgap-tiny:runs/tiny/model.safetensors --n 1000
    python benchmarks/reclip_domains.py --sets shapes/color/night mnist --epochs 5
    python benchmarks/reclip_domains.py --smoke     # one set, 64 images, one epoch: checks that it runs

Zero-shot is the frozen model with the class embeddings from all templates;
label propagation alone is ReCLIP's pseudo-labelling on the frozen features
(its epoch 0); ReCLIP is the averaged two-branch prediction of the epoch it
keeps (``kept_epoch``: the last, or the one before its class balance
collapsed; -1 where it declined to adapt and predicts as zero-shot does).
Columns V and T are the two branches on their own. Every row is
re-run from scratch, so the table follows whatever the data sets and model
are at the time (the domains' strength lives in modgap/data/render.py).
"""
from __future__ import annotations

import argparse
import resource
import time

SETS = [
    ("shapes", "shape", "sketch"), ("shapes", "shape", "night"), ("shapes", "shape", "noisy"),
    ("shapes", "color", "sketch"), ("shapes", "color", "night"), ("shapes", "color", "noisy"),
    ("glyphs", "digit", "sketch"), ("glyphs", "digit", "night"), ("glyphs", "digit", "noisy"),
    ("mnist", "digit", None), ("sklearn-digits", "digit", None),
]


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _parse_set(text: str):
    parts = text.split("/")
    name = parts[0]
    task = parts[1] if len(parts) > 1 and parts[1] else None
    domain = parts[2] if len(parts) > 2 and parts[2] else None
    return name, task, domain


def _label(name, task, domain) -> str:
    return "/".join(p for p in (name, task, domain) if p)


def run(args):
    import pandas as pd
    import torch

    import modgap
    from modgap.adapt.graph import label_propagation
    from modgap.adapt.reclip import ReCLIP
    from modgap.metrics import zero_shot_accuracy

    torch.set_num_threads(args.threads)
    clip = modgap.load_model(args.model, device=args.device)
    sets = [_parse_set(s) for s in args.sets] if args.sets else list(SETS)
    if args.with_photo:
        sets = [(n, t, "photo") for n, t in dict.fromkeys((n, t) for n, t, d in sets if d)] + sets
    print(f"model {args.model} on {clip.device}; n={args.n}, batch_size={args.batch_size}, k={args.k}, "
          f"alpha={args.alpha}, seed={args.seed}, threads={args.threads}")
    rows = []
    for name, task, domain in sets:
        ds = modgap.data.load(name, split="test", n=args.n, seed=args.data_seed, domain=domain, task=task)
        cpu0, wall0 = _cpu_seconds(), time.perf_counter()
        est = ReCLIP(clip, ds.classnames, ds.templates, epochs=args.epochs, batch_size=args.batch_size,
                     lr_visual=args.lr_visual, lr_text=args.lr_text, k=args.k, alpha=args.alpha, seed=args.seed,
                     progress=args.progress)
        est.fit(ds, labels=ds.labels)
        cpu, wall = _cpu_seconds() - cpu0, time.perf_counter() - wall0
        f0 = torch.as_tensor(est.initial_image_embeddings_)
        text0 = torch.as_tensor(est.class_embeddings_)
        zs = zero_shot_accuracy(f0, text0, ds.labels)
        lp = float((label_propagation(f0, text0, k=est.k, alpha=est.alpha).numpy() == ds.labels).mean())
        # the result is the epoch ReCLIP kept (it may stop early), or zero-shot where it did not adapt
        kept = est.history_.loc[est.history_["kept"]].iloc[0]
        acc, acc_v, acc_t = (float(kept.acc), float(kept.acc_v), float(kept.acc_t)) if est.adapted_ else (zs,) * 3
        rows.append({"set": _label(name, task, domain), "n": len(ds.labels), "zero_shot": zs, "label_prop": lp,
                     "reclip": acc, "V": acc_v, "T": acc_t, "gain": acc - zs,
                     "kept_epoch": int(est.kept_epoch_) if est.adapted_ else -1, "cpu_s": cpu, "wall_s": wall})
        r = rows[-1]
        print(f"{r['set']:<28} zero-shot {zs:6.1%}  label-prop {lp:6.1%}  ReCLIP {r['reclip']:6.1%} "
              f"(V {r['V']:6.1%}, T {r['T']:6.1%})  gain {100 * r['gain']:+5.1f}  kept epoch {r['kept_epoch']}  "
              f"[{cpu:.0f} s cpu, {wall:.0f} s wall]", flush=True)
        if len(rows) == 1 or args.history:
            print(f"  (epochs {est.epochs_}, lr_visual {est.lr_visual_:g}, lr_text {est.lr_text_:g})")
        if args.history:
            print(est.history_.round(3).to_string(index=False))
    table = pd.DataFrame(rows)
    shifted = table[~table.set.str.endswith("/photo")]
    print()
    shown = table.copy()
    for col in ("zero_shot", "label_prop", "reclip", "V", "T"):
        shown[col] = (100 * shown[col]).round(1)
    shown["gain"] = (100 * shown["gain"]).round(1)
    shown["cpu_s"] = shown["cpu_s"].round(0).astype(int)
    shown["wall_s"] = shown["wall_s"].round(0).astype(int)
    print(shown.to_string(index=False))
    print()
    print(f"mean over {len(shifted)} shifted/real sets: zero-shot {100 * shifted.zero_shot.mean():.1f}, "
          f"label-prop {100 * shifted.label_prop.mean():.1f}, ReCLIP {100 * shifted.reclip.mean():.1f}, "
          f"gain {100 * shifted.gain.mean():+.1f} points (min {100 * shifted.gain.min():+.1f}); "
          f"sets with a gain: {int((shifted.gain > 0).sum())} of {len(shifted)}")
    print(f"total: {table.cpu_s.sum():.0f} s cpu, {table.wall_s.sum():.0f} s wall")
    if args.csv:
        table.to_csv(args.csv, index=False)
    return table


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="modgap-tiny", help="a spec for modgap.load_model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--sets", nargs="+", help="NAME/TASK/DOMAIN entries, e.g. shapes/color/night mnist "
                                            "(default: every shifted domain and both real digit sets)")
    p.add_argument("--with-photo", action="store_true", help="also run the training domain, for reference")
    p.add_argument("--n", type=int, default=3000, help="images per set (all of a smaller set)")
    p.add_argument("--epochs", type=int, help="default: ReCLIP's (modgap.adapt.reclip.default_schedule)")
    p.add_argument("--lr-visual", type=float, help="default: ReCLIP's")
    p.add_argument("--lr-text", type=float, help="default: ReCLIP's")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--k", type=int, default=20, help="label propagation's neighbours")
    p.add_argument("--alpha", type=float, default=0.99, help="label propagation's strength")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 keeps the CPU time honest on a busy machine)")
    p.add_argument("--history", action="store_true", help="print every set's per-epoch history")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--csv", help="also write the table here")
    p.add_argument("--smoke", action="store_true",
                   help="shapes/color/night only, 64 images, batch 16, one epoch: checks that it runs")
    args = p.parse_args(argv)
    if args.smoke:
        args.sets, args.n, args.batch_size, args.epochs = ["shapes/color/night"], 64, 16, 1
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
