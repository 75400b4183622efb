"""Modality-gap metrics (being filled in)."""
from __future__ import annotations

import numpy as np
import torch


def _t(x):
    return x.detach().float().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), dtype=torch.float32)


def centroid_distance(image_emb, text_emb) -> float:
    i = torch.nn.functional.normalize(_t(image_emb), dim=-1).mean(0)
    t = torch.nn.functional.normalize(_t(text_emb), dim=-1).mean(0)
    return float((i - t).norm())


def zero_shot_accuracy(image_emb, class_emb, labels) -> float:
    pred = (_t(image_emb) @ _t(class_emb).T).argmax(1).numpy()
    return float((pred == np.asarray(labels)).mean())
