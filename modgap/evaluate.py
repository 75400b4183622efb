"""Held-out evaluation of a model on the bundled world, for comparing
models side by side (the refinement table of notebook 03 and the model card).

For each model: the gap on held-out caption pairs (centroid distance,
paired cosine, uniformity, alignment), retrieval recall@1 both ways, and
zero-shot accuracy in every visual domain (the mean over the tasks shape,
colour and digit, plus each task on ``photo``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import data, metrics
from .data.render import DOMAINS

__all__ = ["WorldBenchmark", "caption_recall_at_1", "TASKS"]

TASKS = (("shapes", "shape"), ("shapes", "color"), ("glyphs", "digit"))


def caption_recall_at_1(image_emb, text_emb, texts, owner) -> dict:
    """Recall@1 in both directions when captions repeat across images.

    Generated captions such as "something yellow." belong to many images,
    so retrieval runs over the distinct caption strings: image to text hits
    when the top string is one of the image's captions, text to image when
    the top image has the query among its captions. ``texts[j]`` is a
    caption of image ``owner[j]``; returns percentages.
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
    return {"i2t R@1": 100 * float(i2t), "t2i R@1": 100 * float(t2i)}


class WorldBenchmark:
    """The held-out sets, generated once, and a row of figures per model.

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
        self.sets = {}
        for domain in DOMAINS:
            for name, task in TASKS:
                self.sets[domain, name, task] = data.load(name, split="test", n=n_zero_shot, seed=seed,
                                                          domain=domain, task=task)

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
            "centroid distance": metrics.centroid_distance(img, txt[first]),
            "paired cosine": metrics.paired_cosine(img, txt[first]),
            "uniformity": metrics.uniformity(torch.cat([img, txt[first]])),
            "alignment": metrics.alignment(img, txt[first]),
        }
        acc, embedded = {}, {}
        for (domain, name, task), s in self.sets.items():
            if (domain, name) not in embedded:  # the tasks of one set share its images
                embedded[domain, name] = clip.encode_images(s, progress=False)
            classes = clip.class_embeddings(s.classnames, s.templates)
            acc[domain, task] = 100 * metrics.zero_shot_accuracy(embedded[domain, name], classes, s.labels)
        for domain in DOMAINS:
            row[f"zero-shot {domain}"] = float(np.mean([acc[domain, t] for _, t in TASKS]))
        row.update(caption_recall_at_1(img, txt, texts, owner))
        row.update({f"photo {t}": acc["photo", t] for _, t in TASKS})
        return row

    def table(self, models) -> pd.DataFrame:
        """One row per model: ``models`` maps a name to a :class:`modgap.Clip`."""
        return pd.DataFrame({name: self(clip) for name, clip in models.items()}).T.rename_axis("method")
