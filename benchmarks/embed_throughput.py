"""How fast modgap embeds images, next to a plain open_clip loop.

Both run on the same model (the bundled ``modgap-tiny``; randomly
initialised when its weights are absent, which does not change the speed)
and the same generated images. The plain loop is what one writes by hand:
images preprocessed once, then batches through ``model.encode_image`` under
``torch.no_grad``. modgap is timed on uint8 arrays (its fast path) and on the
same preprocessed tensors. Each round runs every variant once, in a shuffled
order, so a busy machine slows them alike; the best round of each is
reported. One more call of each modgap variant splits its time into the part
spent inside ``model.encode_image`` and modgap's own work around it.

Targets: modgap at least 0.95x the plain loop, and a warm on-disk cache at
least 20x faster than embedding. The exit status is 1 when one is missed.

    .venv/bin/python benchmarks/embed_throughput.py [--n 4096] [--rounds 5] [--device auto]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np
import open_clip
import torch
from PIL import Image

import modgap
from modgap import data
from modgap.embed import autocast_for
from modgap.models import Clip
from modgap.zoo import register, weights_path

RATIO_TARGET = 0.95
CACHE_TARGET = 20.0


def bundled_model(device) -> tuple[Clip, str]:
    if weights_path("modgap-tiny").exists():
        return modgap.load_model("modgap-tiny", device=device), "trained weights"
    register()
    model, _, preprocess = open_clip.create_model_and_transforms("modgap-tiny")
    return (Clip(model, preprocess, open_clip.get_tokenizer("modgap-tiny"), device=device, name="modgap-tiny"),
            "random init: weights file absent")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def plain_loop(model, tensors, batch_size, device):
    """The hand-written open_clip loop."""
    model.eval()
    out = []
    with torch.no_grad(), autocast_for(device):
        for i in range(0, len(tensors), batch_size):
            out.append(model.encode_image(tensors[i:i + batch_size].to(device), normalize=True).float())
    return torch.cat(out)


def overhead(clip, fn, device):
    """One call of ``fn`` with the time spent inside ``model.encode_image``
    counted apart: what is left is modgap's own work (input handling,
    batching, moving, normalising). Both come from the same call, so a busy
    machine shifts them together."""
    inside = [0.0]
    real = clip.model.encode_image

    def counted(x, *a, **kw):
        sync(device)
        t = time.perf_counter()
        out = real(x, *a, **kw)
        sync(device)
        inside[0] += time.perf_counter() - t
        return out

    clip.model.encode_image = counted
    try:
        total, _ = timed(fn, device)
    finally:
        del clip.model.encode_image
    return total, inside[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4096, help="number of images (default 4096)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the best of each is kept")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    clip, weights = bundled_model(args.device)
    device, bs = clip.device, args.batch_size
    images = data.load("shapes", n=args.n).images
    tensors = torch.stack([clip.preprocess(Image.fromarray(a)) for a in images])
    print(f"model: {clip!r} ({weights})")
    print(f"images: {len(images)} x {images.shape[1]}x{images.shape[2]}, batch size {bs}, device {device}, "
          f"torch threads {torch.get_num_threads()}, {args.rounds} rounds")

    runs = {
        "plain open_clip loop (tensors)": lambda: plain_loop(clip.model, tensors, bs, device),
        "modgap encode_images (uint8)": lambda: clip.encode_images(images, batch_size=bs, progress=False),
        "modgap encode_images (tensors)": lambda: clip.encode_images(tensors, batch_size=bs, progress=False),
    }
    for fn in runs.values():  # warm-up: allocator, kernels, lazy imports
        fn()
    best = {k: float("inf") for k in runs}
    outs = {}
    order = list(runs)
    rng = np.random.default_rng(0)
    for _ in range(args.rounds):
        for name in rng.permutation(order):
            t, outs[name] = timed(runs[name], device)
            best[name] = min(best[name], t)

    plain = "plain open_clip loop (tensors)"
    ref = outs[plain]
    print()
    for name in runs:
        diff = (outs[name].to(ref.device) - ref).abs().max().item()
        print(f"{name:34s} {len(images) / best[name]:9.1f} images/s   (max |diff| vs plain {diff:.1e})")
    ok = True
    print()
    for name in runs:
        if name == plain:
            continue
        ratio = best[plain] / best[name]
        good = ratio >= RATIO_TARGET
        ok &= good
        print(f"ratio {name} / plain: {ratio:.3f}  (target >= {RATIO_TARGET}: {'ok' if good else 'MISSED'})")

    print()
    for name in order[1:]:
        total, inside = overhead(clip, runs[name], device)
        print(f"{name}: {total * 1e3:.0f} ms in all, {inside * 1e3:.0f} ms inside model.encode_image; "
              f"modgap's own work {100 * (total - inside) / total:.1f}%")

    with tempfile.TemporaryDirectory() as cache_dir:
        cold, _ = timed(lambda: clip.encode_images(images, batch_size=bs, progress=False, cache_dir=cache_dir),
                        device)
        warm = float("inf")
        for _ in range(args.rounds):
            t, hit = timed(lambda: clip.encode_images(images, batch_size=bs, progress=False,
                                                      cache_dir=cache_dir), device)
            warm = min(warm, t)
        same = torch.equal(hit.cpu(), outs["modgap encode_images (uint8)"].cpu())
    uncached = best["modgap encode_images (uint8)"]
    speedup = uncached / warm
    good = speedup >= CACHE_TARGET and same
    ok &= good
    print()
    print(f"cache: cold {cold * 1e3:.0f} ms (embed + write), warm {warm * 1e3:.1f} ms, "
          f"uncached {uncached * 1e3:.0f} ms; hit equals uncached result: {same}")
    print(f"warm-cache speed-up: {speedup:.1f}x  (target >= {CACHE_TARGET:.0f}x: {'ok' if good else 'MISSED'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
