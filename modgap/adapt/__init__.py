"""Adaptation methods, one file each: ReCLIP (source-free domain
adaptation) and CLIP-Refine (post-pre-training) with its baselines; the
label-propagation graph and the losses are modules of their own.

``modgap.adapt.refine`` is the CLIP-Refine module; its one-call helper is
``modgap.adapt.refine.refine``.
"""
from .graph import label_propagation, projection, propagate
from .losses import contrastive_loss, hycd_loss, rafa_loss, sample_references, self_kd_loss
from .reclip import ReCLIP, run_reclip
from .refine import METHODS, CLIPRefine, auto_temperature

__all__ = [
    "ReCLIP", "run_reclip", "label_propagation", "projection", "propagate",
    "CLIPRefine", "METHODS", "auto_temperature",
    "rafa_loss", "hycd_loss", "self_kd_loss", "contrastive_loss", "sample_references",
]
