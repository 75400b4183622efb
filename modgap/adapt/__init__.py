"""Adaptation methods, one file each, on one estimator contract
(:mod:`~modgap.adapt.base`): ReCLIP (:mod:`~modgap.adapt.reclip`,
source-free domain adaptation) and CLIP-Refine with its baselines
(:mod:`~modgap.adapt.clip_refine`, post-pre-training); the
label-propagation graph and the losses are modules of their own.
Post-hoc gap closers, fitted on embeddings alone rather than trained, are
in :mod:`~modgap.adapt.posthoc`.
"""
from .base import Estimator, learning_rate_at
from .clip_refine import METHODS, CLIPRefine, auto_temperature, run_refine
from .compare import compare_closers
from .graph import label_propagation, projection, propagate
from .losses import contrastive_loss, hycd_loss, rafa_loss, sample_references, self_kd_loss
from .posthoc import CLOSERS, GapShift, MeanCentering, Standardization
from .reclip import ReCLIP, run_reclip

__all__ = [
    "CLOSERS",
    "METHODS",
    "CLIPRefine",
    "Estimator",
    "GapShift",
    "MeanCentering",
    "ReCLIP",
    "Standardization",
    "auto_temperature",
    "compare_closers",
    "contrastive_loss",
    "hycd_loss",
    "label_propagation",
    "learning_rate_at",
    "projection",
    "propagate",
    "rafa_loss",
    "run_reclip",
    "run_refine",
    "sample_references",
    "self_kd_loss",
]
