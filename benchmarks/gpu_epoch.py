"""One ReCLIP epoch and one CLIP-Refine epoch on a real-size open_clip
architecture, on a GPU: wall time and peak GPU memory of each.

The weights are a random initialisation (no download is possible on the
machines this runs on); the speed and memory of a step do not depend on
them. The images are the generated world's (32x32), preprocessed to the
architecture's input size by its own open_clip transform, so the data path
is the one a user's images take.

    python benchmarks/gpu_epoch.py                                # ViT-B-32, 5,000 images, 5,376 pairs
    python benchmarks/gpu_epoch.py --model ViT-B-16 --images 2000 --pairs 2304
    python benchmarks/gpu_epoch.py --only reclip
    python benchmarks/gpu_epoch.py --smoke     # modgap-tiny on CPU, tiny sizes: checks that it runs

ReCLIP runs with ``epochs=1``: the evaluation pass of the frozen model,
label propagation in both branches, one training pass and the final
evaluation. CLIP-Refine runs the reference recipe of a CLIP-sized model
(``CLIPRefine``'s defaults: batch 512, AdamW lr 1e-6, fp32, one epoch),
and the contrastive baseline the same way, for comparison. Peak memory is
``torch.cuda.max_memory_allocated`` over each fit.

``--feed`` times ReCLIP twice in the same process: with the images
resized once per fit (modgap's default) and, as the baseline, resized by
PIL on every pass (``modgap.embed.PREPARED_MAX_BYTES = 0``, the path before
it), and on CUDA samples the GPU's utilisation every 0.1 s during the
fit where ``torch.cuda.utilization`` can read it. ``--precision P`` runs
CLIP-Refine in fp32 and in ``P`` (e.g. ``amp_bf16``) and prints the ratio
of their peak memory (target: under 0.6 at batch 512 on ViT-B-32).

``--smoke`` runs the bundled ``modgap-tiny`` on the CPU over 64 images and
96 pairs (32 held out): it checks the script, not the figures.
"""
from __future__ import annotations

import argparse
import threading
import time
import warnings


def _peak_gib(torch) -> float:
    if not torch.cuda.is_available():
        return float("nan")
    return torch.cuda.max_memory_allocated() / 2**30


def _start(torch):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return time.perf_counter()


def _stop(torch, t0) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _device_name(torch, device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)


class Utilisation:
    """The GPU's utilisation sampled every 0.1 s in a thread while the
    block runs (``torch.cuda.utilization``, which needs NVML); ``mean`` is
    ``None`` where it cannot be read."""

    def __init__(self, torch):
        self.torch, self.samples, self._stop = torch, [], threading.Event()

    def _run(self):
        while not self._stop.wait(0.1):
            try:
                self.samples.append(self.torch.cuda.utilization())
            except Exception:  # noqa: BLE001 - no NVML: no figure
                return

    def __enter__(self):
        if self.torch.cuda.is_available():
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.torch.cuda.is_available():
            self._thread.join()

    @property
    def mean(self):
        return sum(self.samples) / len(self.samples) if self.samples else None


def run_reclip(clip, args, torch, label: str = "ReCLIP, 1 epoch") -> dict:
    import modgap
    from modgap.adapt.reclip import ReCLIP

    ds = modgap.data.load("shapes", split="test", n=args.images, seed=0, domain="night", task="shape")
    # random weights: the guard and the early stop would decline to train, and the epoch is what is timed
    est = ReCLIP(clip, ds.classnames, ds.templates, epochs=1, batch_size=args.reclip_batch_size, seed=0,
                 progress=False, min_confident_agreement=0.0, max_balance_drop=1.0)
    t0 = _start(torch)
    with Utilisation(torch) as busy:
        est.fit(ds, labels=ds.labels)
    wall = _stop(torch, t0)
    last = est.history_.iloc[-1]
    gpu = f"; GPU busy {busy.mean:.0f}% of samples" if busy.mean is not None else ""
    return {"job": label, "n": len(ds.labels), "batch": args.reclip_batch_size,
            "steps": -(-len(ds.labels) // args.reclip_batch_size), "wall_s": wall, "peak_gib": _peak_gib(torch),
            "detail": f"trained on {int(last.trained)} agreed images; lr {est.lr_visual_:g}{gpu}"}


def run_refine(clip, args, torch, method: str, precision: str = "fp32") -> dict:
    import modgap
    from modgap.adapt.clip_refine import CLIPRefine

    pairs = modgap.data.load("shapes-pairs", split="train", n=args.pairs, seed=0)
    est = CLIPRefine(clip, method=method, epochs=1, holdout=args.holdout, seed=0, progress=False,
                     precision=precision)
    t0 = _start(torch)
    est.fit(pairs)
    wall = _stop(torch, t0)
    h = est.history_
    return {"job": f"{method}, 1 epoch, {precision}", "n": len(pairs) - args.holdout, "batch": est.batch_size_,
            "steps": est.n_steps_, "wall_s": wall, "peak_gib": _peak_gib(torch),
            "detail": f"lr {est.lr_:g}; gap {h.centroid_distance.iloc[0]:.3f} -> {h.centroid_distance.iloc[-1]:.3f}"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-B-32", help="open_clip architecture, random init (default ViT-B-32)")
    ap.add_argument("--images", type=int, default=5000, help="ReCLIP's unlabelled target images")
    ap.add_argument("--pairs", type=int, default=5376, help="CLIP-Refine's pairs, --holdout of them kept out")
    ap.add_argument("--holdout", type=int, default=256, help="pairs held out to measure the gap")
    ap.add_argument("--reclip-batch-size", type=int, default=64)
    ap.add_argument("--only", choices=("reclip", "refine"), help="run one method")
    ap.add_argument("--device", default="cuda", help="cuda (default); cpu only to check the script itself")
    ap.add_argument("--feed", action="store_true",
                    help="ReCLIP also with the images resized on every pass (the baseline), for the ratio")
    ap.add_argument("--precision", default=None,
                    help="CLIP-Refine also in this precision (e.g. amp_bf16), for the ratio of peak memory")
    ap.add_argument("--smoke", action="store_true",
                    help="modgap-tiny on the CPU, 64 images, 96 pairs (32 held out): checks that it runs")
    args = ap.parse_args(argv)
    if args.smoke:
        args.model, args.device, args.images, args.pairs, args.holdout = "modgap-tiny", "cpu", 64, 96, 32
        args.reclip_batch_size = 16
        args.feed, args.precision = True, "amp_bf16"

    import torch

    import modgap

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("no CUDA device: this benchmark measures the GPU path (--device cpu checks the script only)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-initialisation warning
        torch.manual_seed(0)
        clip = modgap.load_model(args.model, device=args.device)
    n_params = sum(p.numel() for p in clip.model.parameters())
    weights = "bundled weights" if args.model in modgap.zoo.BUNDLED else "random init"
    where = _device_name(torch, clip.device)
    print(f"{args.model} ({n_params / 1e6:.1f}M parameters, {weights}) on {where}, "
          f"torch {torch.__version__}, input {clip.image_size}", flush=True)
    rows, ratios = [], []
    if args.only in (None, "reclip"):
        rows.append(run_reclip(clip, args, torch))
        print(rows[-1], flush=True)
        if args.feed:
            prepared = modgap.embed.PREPARED_MAX_BYTES
            modgap.embed.PREPARED_MAX_BYTES = 0
            try:
                rows.append(run_reclip(clip, args, torch, "ReCLIP, 1 epoch, resized every pass"))
            finally:
                modgap.embed.PREPARED_MAX_BYTES = prepared
            print(rows[-1], flush=True)
            ratios.append(f"ReCLIP: resized once per fit is {rows[-1]['wall_s'] / rows[-2]['wall_s']:.2f}x "
                          "as fast as resized every pass")
    if args.only in (None, "refine"):
        for method in ("clip-refine", "contrastive"):
            rows.append(run_refine(clip, args, torch, method))
            print(rows[-1], flush=True)
        if args.precision:
            fp32 = rows[-2]
            rows.append(run_refine(clip, args, torch, "clip-refine", args.precision))
            print(rows[-1], flush=True)
            ratios.append(f"CLIP-Refine: {args.precision} peak memory {rows[-1]['peak_gib'] / fp32['peak_gib']:.2f} "
                          f"of fp32's (target < 0.6), wall {rows[-1]['wall_s'] / fp32['wall_s']:.2f} of fp32's")
    print()
    print("| job | n | batch | steps | wall s | peak GPU GiB | |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['job']} | {r['n']} | {r['batch']} | {r['steps']} | {r['wall_s']:.1f} | {r['peak_gib']:.2f} | "
              f"{r['detail']} |")
    for line in ratios:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
