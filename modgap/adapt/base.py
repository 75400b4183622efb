"""What every training method of modgap shares: the learning-rate schedule
and the estimator contract (see :class:`Estimator`)."""
from __future__ import annotations

import math

__all__ = ["SCHEDULES", "learning_rate_at"]

SCHEDULES = ("constant", "cosine")


def learning_rate_at(step: int, total: int, peak: float, warmup: int = 0, schedule: str = "cosine") -> float:
    """The learning rate of optimiser step ``step`` (counting from 0) of
    ``total``: a linear ramp that reaches ``peak`` at step ``warmup - 1``,
    then ``peak`` held (``"constant"``) or a cosine decay from ``peak``
    towards zero at step ``total`` (``"cosine"``)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "cosine":
        done = (step - warmup) / max(1, total - warmup)
        return peak * 0.5 * (1.0 + math.cos(math.pi * done))
    return peak
