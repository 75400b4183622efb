"""Time one CLIP-Refine training step against one plain contrastive step.

Both steps run on the same model and the same batch: forward, backward and
an AdamW update. CLIP-Refine adds the frozen teacher's forward pass (no
gradients) and two cheap loss terms, so its step should cost about one
extra forward pass: a ratio near 1.3 and at most 1.6.

    python benchmarks/refine_step.py                      # modgap-tiny, batch 128, CPU
    python benchmarks/refine_step.py --model ViT-B-32 --batch-size 32 --device cuda
    python benchmarks/refine_step.py --smoke              # batch 8, one timed step: checks that it runs
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch


def build(model_name: str, weights: str | None, device: str):
    import open_clip

    import modgap
    from modgap import zoo

    zoo.register()
    if weights:
        return modgap.load_model(f"{model_name}:{weights}", device=device)
    torch.manual_seed(0)
    model = open_clip.create_model(model_name)
    return modgap.Clip(model, tokenizer=open_clip.get_tokenizer(model_name), device=device, name=model_name)


def make_batch(clip, n: int, seed: int):
    from modgap import data

    h, w = clip.image_size
    rng = np.random.default_rng(seed)
    if (h, w) == (32, 32):
        pairs = data.load("shapes-pairs", split="train", n=n, seed=seed)
        images, captions = pairs.images, pairs.sample_captions(rng=rng)
    else:
        images = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
        captions = [f"a photo of object number {i}" for i in range(n)]
    from modgap.embed import image_inputs, pixels_at

    # the students below train in float32
    kind, items = image_inputs(images)
    pixels, _ = pixels_at(clip, kind, items, np.arange(n), dtype=torch.float32)
    return pixels, clip.tokenize(captions).to(clip.device)


def time_steps(objective, pixels, tokens, steps: int, warmup: int, device) -> list[float]:
    params = [p for p in objective.student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6, weight_decay=0.1)
    gen = torch.Generator().manual_seed(0)
    out = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = objective(pixels, tokens, generator=gen)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            out.append(time.perf_counter() - t0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="modgap-tiny", help="open_clip architecture (default modgap-tiny)")
    ap.add_argument("--weights", default=None, help="weights file (default: random init; speed is the same)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of both methods")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="batch 8, one timed step: checks that it runs")
    args = ap.parse_args(argv)
    if args.smoke:
        args.batch_size, args.steps, args.warmup, args.rounds = 8, 1, 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)

    from modgap.adapt.clip_refine import RefineObjective

    clip = build(args.model, args.weights, args.device)
    device = clip.device
    pixels, tokens = make_batch(clip, args.batch_size, args.seed)

    def objective(method):
        student = copy.deepcopy(clip.model).float().train()
        if method == "contrastive":
            return RefineObjective(student, {"contrastive": 1.0})
        student.logit_scale.requires_grad_(False)
        teacher = copy.deepcopy(clip.model).float()
        return RefineObjective(student, {"rafa": 1.0, "hycd": 1.0}, teacher=teacher)

    objs = {"contrastive": objective("contrastive"), "clip-refine": objective("clip-refine")}
    times = {k: [] for k in objs}
    for _ in range(args.rounds):
        for k, obj in objs.items():
            times[k] += time_steps(obj, pixels, tokens, args.steps, args.warmup, device)

    teacher = objs["clip-refine"].teacher
    fwd = []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        with torch.no_grad():
            teacher.encode_image(pixels)
            teacher.encode_text(tokens)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            fwd.append(time.perf_counter() - t0)

    med = {k: statistics.median(v) for k, v in times.items()}
    n_params = sum(p.numel() for p in clip.model.parameters())
    print(f"model {args.model} ({n_params / 1e6:.1f}M params), batch {args.batch_size}, device {device}, "
          f"torch threads {torch.get_num_threads()}, {args.rounds} x {args.steps} timed steps each")
    print("| step | median s | ratio to contrastive |")
    print("|---|---|---|")
    print(f"| contrastive | {med['contrastive']:.4f} | 1.00 |")
    print(f"| clip-refine (RaFA + HyCD) | {med['clip-refine']:.4f} | {med['clip-refine'] / med['contrastive']:.2f} |")
    print(f"| teacher forward alone | {statistics.median(fwd):.4f} | "
          f"{statistics.median(fwd) / med['contrastive']:.2f} |")
    print(f"ratio clip-refine / contrastive: {med['clip-refine'] / med['contrastive']:.2f} (target <= 1.6)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
