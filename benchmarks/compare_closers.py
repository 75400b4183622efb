"""Every way to close the gap of the bundled model, side by side: the
post-hoc closers, ReCLIP and CLIP-Refine (`modgap.compare_closers`), the
model card's comparison table.

    python benchmarks/compare_closers.py                   # the model card's table
    python benchmarks/compare_closers.py --domain sketch   # another shifted domain
    python benchmarks/compare_closers.py --smoke           # tiny sizes: checks that it runs

Calibration pairs (the train split) fit the post-hoc closers and train
CLIP-Refine; the gap figures and retrieval are measured on held-out pairs
of the test split; zero-shot accuracy on the shape task in the photo domain
and in one shifted domain, whose images ReCLIP adapts to. Every method keeps
its defaults. Besides the table, the script prints each method's seconds as
a ratio to the cheapest post-hoc closer run in the same process.
"""
from __future__ import annotations

import argparse
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="modgap-tiny")
    ap.add_argument("--calibration", type=int, default=8000, help="calibration pairs (train split)")
    ap.add_argument("--evaluation", type=int, default=2000, help="held-out pairs (test split)")
    ap.add_argument("--n", type=int, default=1000, help="images per zero-shot set (test split)")
    ap.add_argument("--domain", default="night", help="the shifted domain (ReCLIP's target)")
    ap.add_argument("--task", default="shape")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--csv", default=None, help="also write the table here")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one epoch each: checks that the script runs")
    args = ap.parse_args(argv)

    import torch

    import modgap
    from modgap import data

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smoke:
        args.calibration, args.evaluation, args.n = 160, 64, 48
    reclip = {"epochs": 1} if args.smoke else {}
    refine = {"epochs": 1, "batch_size": 32, "holdout": 0} if args.smoke else {}
    clip = modgap.load_model(args.model, device="cpu")
    calibration = data.load("shapes-pairs", split="train", n=args.calibration, seed=args.seed + 1)
    evaluation = data.load("shapes-pairs", split="test", n=args.evaluation, seed=args.seed)
    sets = {d: data.load("shapes", split="test", n=args.n, seed=args.seed, task=args.task, domain=d)
            for d in ("photo", args.domain)}
    t0 = time.perf_counter()
    table = modgap.compare_closers(clip, calibration, evaluation, sets, reclip_params=reclip,
                                   refine_params=refine, seed=args.seed)
    print(f"model {args.model}; {args.calibration} calibration pairs, {args.evaluation} held-out pairs, "
          f"{args.n} images per zero-shot set (task {args.task}); torch threads {torch.get_num_threads()}\n")
    print(table.round(3).to_string())
    cheapest = table.loc[["mean-centering", "standardization", "gap-shift"], "seconds"].min()
    print("\nseconds as a ratio to the cheapest post-hoc closer:")
    for method, s in table["seconds"].items():
        if method != "none":
            print(f"  {method:16s} {s / max(cheapest, 1e-9):10.0f}x")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.csv:
        table.to_csv(args.csv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
