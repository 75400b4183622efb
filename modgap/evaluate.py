"""Held-out evaluation of a model on the bundled world: the figures that
compare models side by side (:class:`WorldBenchmark`, the refinement table of
notebook 03) and the model card's tables.

    python -m modgap.evaluate                   # the shipped modgap-tiny
    python -m modgap.evaluate --model SPEC --n 2000

:class:`WorldBenchmark` gives, for each model, the gap on held-out caption
pairs (centroid distance, paired cosine, uniformity, alignment), retrieval
recall@1 both ways, and zero-shot accuracy in every visual domain (the mean
over the tasks shape, colour and digit, plus each task on ``photo``), named
as :func:`modgap.metrics.gap_report` names its figures, all fractions.

The command prints the model card's three tables: zero-shot top-1 per task
and visual domain (with the drop against the training domain), zero-shot
top-1 on real handwritten digits, and the modality gap of held-out caption
pairs.
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import data, metrics
from .data.render import DOMAINS

__all__ = [
    "REAL_DIGITS",
    "TASKS",
    "WorldBenchmark",
    "caption_recall_at_1",
    "gap_table",
    "main",
    "measure",
    "real_digits_table",
    "set_accuracy",
    "world_sets",
    "zero_shot_accuracies",
    "zero_shot_table",
]

# the zero-shot tasks of the generated world: (set name, task)
TASKS = (("shapes", "shape"), ("shapes", "color"), ("glyphs", "digit"))
REAL_DIGITS = ("mnist", "sklearn-digits")


def world_sets(n: int, seed: int = 0, domains=DOMAINS, split: str = "test") -> dict:
    """The set of every task in each of ``domains``, keyed ``(domain, set name, task)``."""
    return {(domain, name, task): data.load(name, split=split, n=n, seed=seed, domain=domain, task=task)
            for domain in domains for name, task in TASKS}


def set_accuracy(clip, images, progress: bool = False) -> float:
    """Zero-shot top-1 (a fraction) on an image set, with its class names and templates."""
    return metrics.zero_shot_accuracy(clip.encode_images(images, progress=progress),
                                      clip.class_embeddings(images.classnames, images.templates), images.labels)


def zero_shot_accuracies(clip, sets, progress: bool = False) -> dict:
    """Top-1 (fractions) per ``(domain, task)`` on the sets of :func:`world_sets`.
    The tasks of one set share its images, so they are embedded once."""
    acc, embedded = {}, {}
    for (domain, name, task), s in sets.items():
        if (domain, name) not in embedded:
            embedded[domain, name] = clip.encode_images(s, progress=progress)
        classes = clip.class_embeddings(s.classnames, s.templates)
        acc[domain, task] = metrics.zero_shot_accuracy(embedded[domain, name], classes, s.labels)
    return acc


def caption_recall_at_1(image_emb, text_emb, texts, owner) -> dict:
    """Recall@1 in both directions when captions repeat across images.

    Generated captions such as "something yellow." belong to many images,
    so retrieval runs over the distinct caption strings: image to text hits
    when the top string is one of the image's captions, text to image when
    the top image has the query among its captions. ``texts[j]`` is a
    caption of image ``owner[j]``; returns fractions named as
    :func:`modgap.metrics.gap_report` names recall@1.
    """
    strings = sorted(set(texts))
    index = {t: k for k, t in enumerate(strings)}
    first: dict[str, int] = {}
    for j, t in enumerate(texts):
        first.setdefault(t, j)
    relevant = np.zeros((len(image_emb), len(strings)), dtype=bool)
    relevant[np.asarray(owner), [index[t] for t in texts]] = True
    txt = torch.as_tensor(text_emb)[[first[t] for t in strings]]
    sim = F.normalize(torch.as_tensor(image_emb).float(), dim=-1).cpu() @ F.normalize(txt.float(), dim=-1).cpu().T
    i2t = relevant[np.arange(len(image_emb)), sim.argmax(1).numpy()].mean()
    t2i = relevant[sim.argmax(0).numpy(), np.arange(len(strings))].mean()
    return {"i2t_R@1": float(i2t), "t2i_R@1": float(t2i)}


class WorldBenchmark:
    """The held-out sets, generated once, and a row of figures per model.

    Columns: ``centroid_distance``, ``paired_cosine``, ``uniformity`` (of
    images and captions pooled), ``alignment``, ``zero_shot_<domain>`` (mean
    over the tasks), ``i2t_R@1``, ``t2i_R@1`` and ``photo_<task>``; accuracies
    and recalls are fractions.

    Parameters
    ----------
    n_pairs : held-out caption pairs (half shapes, half digits; test split)
    n_zero_shot : images per set and domain for zero-shot accuracy
    seed : data seed
    """

    def __init__(self, n_pairs: int = 2000, n_zero_shot: int = 1000, seed: int = 0):
        if n_pairs < 2 or n_zero_shot < 1:
            raise ValueError("n_pairs must be at least 2 and n_zero_shot at least 1")
        half = n_pairs // 2
        self.domains = DOMAINS
        self.pairs = [data.load("shapes-pairs", split="test", n=half, seed=seed),
                      data.load("glyphs-pairs", split="test", n=n_pairs - half, seed=seed)]
        self.sets = world_sets(n_zero_shot, seed)

    def __call__(self, clip) -> dict:
        img = torch.cat([clip.encode_images(p, progress=False) for p in self.pairs])
        texts, owner, offset = [], [], 0
        for p in self.pairs:
            t, o = p.flat_captions()
            texts += t
            owner.append(o + offset)
            offset += len(p)
        owner = np.concatenate(owner)
        txt = clip.encode_texts(texts, progress=False)
        first = np.r_[0, np.flatnonzero(np.diff(owner)) + 1]  # each image's first caption
        row = {
            "centroid_distance": metrics.centroid_distance(img, txt[first]),
            "paired_cosine": metrics.paired_cosine(img, txt[first]),
            "uniformity": metrics.uniformity(torch.cat([img, txt[first]])),
            "alignment": metrics.alignment(img, txt[first]),
        }
        acc = zero_shot_accuracies(clip, self.sets)
        for domain in DOMAINS:
            row[f"zero_shot_{domain}"] = float(np.mean([acc[domain, t] for _, t in TASKS]))
        row.update(caption_recall_at_1(img, txt, texts, owner))
        row.update({f"photo_{t}": acc["photo", t] for _, t in TASKS})
        return row

    def table(self, models) -> pd.DataFrame:
        """One row per model: ``models`` maps a name to a :class:`modgap.Clip`."""
        return pd.DataFrame({name: self(clip) for name, clip in models.items()}).T.rename_axis("method")


# -- the model card's tables ------------------------------------------------------------------
def zero_shot_table(clip, n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Top-1 (%) per task (rows) and domain (columns), held-out test split."""
    sets = world_sets(n, seed)
    acc = zero_shot_accuracies(clip, sets, progress=True)
    rows = []
    for name, task in TASKS:
        row = {"set": name, "task": task, "chance": 100.0 / len(sets[DOMAINS[0], name, task].classnames)}
        row.update({domain: 100 * acc[domain, task] for domain in DOMAINS})
        rows.append(row)
    df = pd.DataFrame(rows).set_index(["set", "task"])
    for domain in DOMAINS[1:]:
        df[f"{domain} drop"] = df["photo"] - df[domain]
    return df


def real_digits_table(clip, seed: int = 0) -> pd.DataFrame:
    """Top-1 (%) on the real handwritten digits, every image of each set."""
    rows = []
    for name in REAL_DIGITS:
        s = data.load(name, seed=seed)
        rows.append({"set": name, "images": len(s), "top-1": 100 * set_accuracy(clip, s, progress=True),
                     "chance": 10.0})
    return pd.DataFrame(rows).set_index("set")


def gap_table(clip, n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Centroid distance (Liang et al.) and linear separability of image and
    caption embeddings of held-out training-domain pairs."""
    rows = []
    for name in ("shapes-pairs", "glyphs-pairs"):
        p = data.load(name, split="test", n=n, seed=seed)
        img, txt = clip.encode_images(p), clip.encode_texts(p.first_captions())
        rows.append({
            "pairs": name,
            "centroid distance": metrics.centroid_distance(img, txt),
            "linear separability": metrics.linear_separability(img, txt),
            "paired cosine": metrics.paired_cosine(img, txt),
        })
    return pd.DataFrame(rows).set_index("pairs")


def measure(clip, n: int = 2000, seed: int = 0) -> dict[str, pd.DataFrame]:
    """All three tables for ``clip``."""
    return {
        "zero-shot": zero_shot_table(clip, n, seed),
        "real digits": real_digits_table(clip, seed),
        "gap": gap_table(clip, n, seed),
    }


def main(argv=None) -> int:
    from .models import load_model

    ap = argparse.ArgumentParser(prog="python -m modgap.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="modgap-tiny")
    ap.add_argument("--n", type=int, default=2000, help="images per generated set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    clip = load_model(args.model, device=args.device)
    print(f"model: {args.model} on {clip.device}, n={args.n}, seed={args.seed}\n")
    for title, df in measure(clip, args.n, args.seed).items():
        print(f"### {title}\n")
        print(df.round(3 if title == "gap" else 1).to_markdown())
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
