"""The jobs tests/test_distributed.py runs under ``torchrun`` (2 processes,
gloo) and again in one process: the same inputs, built here for both.

    torchrun --nproc_per_node 2 tests/jobs/distributed_job.py OUT_DIR [--fail-rank R]

Rank 0 writes what each job gave into OUT_DIR; with ``--fail-rank R`` rank
R raises while the others wait in a collective.
"""
import copy
import os
import sys
import warnings

os.environ["HF_HUB_OFFLINE"] = "1"

import open_clip
import torch
from PIL import Image

import modgap
from modgap import data, distributed, zoo
from modgap.adapt import CLIPRefine, ReCLIP

torch.set_num_threads(1)


def build_clip():
    zoo.register()
    torch.manual_seed(0)
    model = open_clip.create_model("modgap-tiny")
    return modgap.Clip(model, tokenizer=open_clip.get_tokenizer("modgap-tiny"), device="cpu",
                       name="tiny-random", num_workers=0)


def image_files(folder):
    """37 PNG files at another size than the model's, one of them corrupt."""
    os.makedirs(folder, exist_ok=True)
    images = data.load("shapes", n=37, seed=3).images
    paths = []
    for i, a in enumerate(images):
        path = os.path.join(folder, f"{i:02d}.png")
        if distributed.is_main() and not os.path.exists(path):
            if i == 11:
                with open(path + ".tmp", "wb") as fh:
                    fh.write(b"not an image")
            else:
                Image.fromarray(a).resize((40, 40)).save(path + ".tmp", format="png")
            os.replace(path + ".tmp", path)
        paths.append(path)
    distributed.barrier()
    return paths


def embed_job(clip, folder):
    uint8 = clip.encode_images(data.load("shapes", n=37, seed=3).images, batch_size=8, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the corrupt file's warning; tests check it elsewhere
        files = clip.encode_images(image_files(folder), batch_size=8, progress=False)
    # the on-disk cache: rank 0 writes it, and every rank then reads it (or none does)
    cache = os.path.join(folder, "cache")
    images = data.load("shapes", n=37, seed=3).images
    cold = clip.encode_images(images, batch_size=8, progress=False, cache_dir=cache)
    distributed.barrier()
    warm = clip.encode_images(images, batch_size=8, progress=False, cache_dir=cache)
    return {"uint8": uint8, "files": files, "cold": cold, "warm": warm,
            "cache_files": len(os.listdir(cache)) if os.path.isdir(cache) else 0}


def refine_job(clip):
    """Four AdamW steps in fp64: in fp32 the rounding of a sum in another
    order differs in the last bits, and where a gradient is zero in exact
    arithmetic (attention's key bias) Adam turns that noise into steps of
    the full learning rate; fp64 leaves the comparison to the algorithm."""
    pairs = data.load("shapes-pairs", split="train", n=56, seed=11)
    clip = clip.with_model(copy.deepcopy(clip.model).double())
    est = CLIPRefine(clip, steps=4, batch_size=16, lr=1e-3, warmup=0, holdout=8, progress=False, seed=3,
                     lambda_contrastive=1.0).fit(pairs)
    return {"state": {k: v.detach().clone() for k, v in est.model_.state_dict().items()},
            "history": est.history_.drop(columns=["seconds"])}


def reclip_job(clip):
    target = data.load("shapes", n=48, seed=11, domain="sketch")
    est = ReCLIP(clip, target.classnames, target.templates, epochs=2, batch_size=16, k=5, lr_visual=0.5,
                 lr_text=0.5, progress=False, min_confident_agreement=0.0, max_balance_drop=1.0)
    est.fit(target, labels=target.labels)
    return {"history": est.history_, "visual": {k: v.detach().clone()
                                                for k, v in est.visual_model_.state_dict().items()}}


def main(argv):
    out = argv[0]
    fail_rank = int(argv[argv.index("--fail-rank") + 1]) if "--fail-rank" in argv else None
    distributed.init_from_env()
    assert distributed.is_distributed(), "run me under torchrun with more than one process"
    if fail_rank is not None:
        if distributed.rank() == fail_rank:
            raise RuntimeError(f"rank {fail_rank} fails on purpose")
        distributed.gather_rows(torch.zeros(3, 2))  # waits for the failed rank
        return 0
    clip = build_clip()
    results = {"world_size": distributed.world_size(), "embed": embed_job(clip, os.path.join(out, "files")),
               "refine": refine_job(clip), "reclip": reclip_job(clip)}
    if distributed.is_main():
        torch.save(results, os.path.join(out, "results.pt.tmp"))
        os.replace(os.path.join(out, "results.pt.tmp"), os.path.join(out, "results.pt"))
    distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
