"""Measure a model on the bundled world and print the model card's tables.

    python -m modgap.zoo.report                   # the shipped modgap-tiny
    python -m modgap.zoo.report --model SPEC --n 2000

Three tables: zero-shot top-1 per task and visual domain (with the drop
against the training domain), zero-shot top-1 on real handwritten digits,
and the modality gap of held-out caption pairs.
"""
from __future__ import annotations

import argparse

import pandas as pd

from .. import data, metrics
from ..data.render import DOMAINS

TASKS = (("shapes", "shape"), ("shapes", "color"), ("glyphs", "digit"))
REAL_DIGITS = ("mnist", "sklearn-digits")


def zero_shot_table(clip, n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Top-1 (%) per task (rows) and domain (columns), held-out test split."""
    rows = []
    for name, task in TASKS:
        row = {"set": name, "task": task}
        classes = None
        for domain in DOMAINS:
            s = data.load(name, split="test", n=n, seed=seed, domain=domain, task=task)
            if classes is None:
                classes = clip.class_embeddings(s.classnames, s.templates)
                row["chance"] = 100.0 / len(s.classnames)
            row[domain] = 100 * metrics.zero_shot_accuracy(clip.encode_images(s), classes, s.labels)
        rows.append(row)
    df = pd.DataFrame(rows).set_index(["set", "task"])
    for domain in DOMAINS[1:]:
        df[f"{domain} drop"] = df["photo"] - df[domain]
    return df


def real_digits_table(clip, seed: int = 0) -> pd.DataFrame:
    rows = []
    for name in REAL_DIGITS:
        s = data.load(name, seed=seed)
        acc = metrics.zero_shot_accuracy(clip.encode_images(s), clip.class_embeddings(s.classnames, s.templates),
                                         s.labels)
        rows.append({"set": name, "images": len(s), "top-1": 100 * acc, "chance": 10.0})
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
    from ..models import load_model

    ap = argparse.ArgumentParser(prog="python -m modgap.zoo.report", description=__doc__,
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
