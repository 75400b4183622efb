"""Train the bundled small CLIP on the generated world.

    python -m modgap.pretrain --out runs/tiny            # the full recipe
    python -m modgap.pretrain --max-steps 5 --out /tmp/x # a smoke run

The recipe: a fresh mix of captioned shapes and rendered digits every epoch
(training domain ``photo`` only, train split), one random caption per image,
the symmetric CLIP loss with the temperature fixed at 0.01 (logit scale 100),
AdamW with a linear warm-up and cosine decay. The temperature is fixed on
purpose: Liang et al. (NeurIPS 2022, sec. 4.2) show that a low temperature
keeps the modality gap that random initialisation creates, and the bundled
model exists to show that gap.

Outputs in ``--out``: ``model.safetensors`` (fp16) after every epoch,
``train_log.csv`` and ``train_record.json`` (recipe, time, machine), and
``eval.csv`` (held-out accuracy and gap after every epoch). Existing files are
never overwritten unless ``--overwrite`` is given.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import data, metrics
from .adapt.base import learning_rate_at
from .evaluate import REAL_DIGITS, TASKS, set_accuracy, world_sets, zero_shot_accuracies
from .io import save_state_dict
from .models import Clip


def build_model(name: str = "modgap-tiny", seed: int = 0):
    import open_clip

    from .zoo import register

    register()
    torch.manual_seed(seed)
    model = open_clip.create_model(name)
    model.logit_scale.requires_grad_(False)
    return model, open_clip.get_tokenizer(name)


def _param_groups(model, weight_decay):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "ln" in n or "bias" in n or "embedding" in n else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def evaluate(model, tokenizer, n: int = 1000) -> dict:
    """Held-out zero-shot accuracy per task and the image-caption gap."""
    clip = Clip(model, tokenizer=tokenizer, name="training")
    acc = zero_shot_accuracies(clip, world_sets(n, domains=("photo",)))
    out = {f"{task}_acc": acc["photo", task] for _, task in TASKS}
    for name in REAL_DIGITS:
        out[f"{name}_acc"] = set_accuracy(clip, data.load(name, n=n))
    p = data.load("shapes-pairs", split="test", n=n)
    out["gap"] = metrics.centroid_distance(clip.encode_images(p, progress=False), clip.encode_texts(p.first_captions()))
    return out


def save_weights(model, path: Path, overwrite: bool = False) -> None:
    """fp16 safetensors, written to a temporary file and moved into place;
    the header names the model so a reader can tell the file apart."""
    save_state_dict(model, path, overwrite, dtype=torch.float16, metadata={"modgap": "modgap-tiny"})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m modgap.pretrain", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for weights and logs")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--pairs", type=int, default=40000, help="fresh pairs per epoch")
    ap.add_argument("--glyph-fraction", type=float, default=0.45)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--warmup", type=float, default=0.05, help="fraction of steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--max-steps", type=int, default=None, help="stop early (smoke test)")
    ap.add_argument("--eval-n", type=int, default=1000)
    ap.add_argument("--init", default=None, help="start from these weights instead of random initialisation")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "model.safetensors"
    if weights.exists() and not args.overwrite:
        ap.error(f"{weights} exists; pass --overwrite to replace it")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, tokenizer = build_model(seed=args.seed)
    if args.init:
        from open_clip import load_checkpoint

        load_checkpoint(model, args.init)
        model.logit_scale.requires_grad_(False)
    from .embed import pixels_to_tensor

    steps_per_epoch = args.pairs // args.batch_size
    total = steps_per_epoch * args.epochs
    if args.max_steps:
        total = min(total, args.max_steps)
    opt = torch.optim.AdamW(_param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    warmup = max(1, int(args.warmup * total))
    scale = model.logit_scale.exp().item()
    log, evals, step, t0 = [], [], 0, time.time()
    for epoch in range(args.epochs):
        pairs = data.world_pairs(args.pairs, "train", args.glyph_fraction, seed=args.seed * 1000 + epoch)
        rng = np.random.default_rng([args.seed, epoch])
        tokens = tokenizer(pairs.sample_captions(rng=rng))
        order = rng.permutation(len(pairs))
        model.train()
        for b in range(steps_per_epoch):
            if step >= total:
                break
            idx = order[b * args.batch_size:(b + 1) * args.batch_size]
            x = pixels_to_tensor(pairs.images[idx])
            lr = learning_rate_at(step, total, args.lr, warmup, "cosine")
            for g in opt.param_groups:
                g["lr"] = lr
            fi = model.encode_image(x, normalize=True)
            ft = model.encode_text(tokens[idx], normalize=True)
            logits = scale * fi @ ft.T
            target = torch.arange(len(idx))
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            log.append({"step": step, "epoch": epoch, "loss": loss.item(), "lr": lr,
                        "seconds": time.time() - t0})
            if step % 20 == 0:
                print(f"epoch {epoch} step {step}/{total} loss {loss.item():.4f} lr {lr:.2e} "
                      f"{time.time() - t0:.0f}s", flush=True)
            step += 1
        model.eval()
        save_weights(model, weights, overwrite=True)
        pd.DataFrame(log).to_csv(out / "train_log.csv", index=False)
        if args.eval_n:
            ev = {"epoch": epoch, "step": step, "seconds": time.time() - t0,
                  **evaluate(model, tokenizer, n=args.eval_n)}
            evals.append(ev)
            pd.DataFrame(evals).to_csv(out / "eval.csv", index=False)
            print("eval", json.dumps({k: round(v, 4) for k, v in ev.items()}), flush=True)
        if step >= total:
            break
    record = {
        "recipe": vars(args), "steps": step, "seconds": round(time.time() - t0, 1),
        "final_loss": log[-1]["loss"] if log else None,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "python": sys.version.split()[0]},
    }
    (out / "train_record.json").write_text(json.dumps(record, indent=2))
    print(f"done: {step} steps in {record['seconds']} s -> {weights}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
