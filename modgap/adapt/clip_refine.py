"""CLIP-Refine: post-pre-training that shrinks the modality gap of a CLIP
model (RaFA + HyCD), and the baselines its paper compares.

Yamaguchi et al., "Post-pre-training for Modality Alignment in
Vision-Language Foundation Models", CVPR 2025 (arXiv 2504.12717); reference
code GitHub ``yshinya6/clip-refine``.

>>> ref = CLIPRefine(clip, method="clip-refine").fit(pairs)   # doctest: +SKIP
>>> ref.history_.plot(x="step", y="centroid_distance")         # doctest: +SKIP
>>> ref.to_clip().encode_images(images)                         # doctest: +SKIP

Methods (``method=``) and the loss each one minimises:

==============  ===================================================
``contrastive``  the CLIP loss with a trainable logit scale
``self-kd``      HyCD with ``alpha = 0`` (distillation from the teacher)
``hycd``         HyCD alone
``rafa``         RaFA alone
``clip-refine``  ``lambda_rafa * RaFA + lambda_kd * HyCD``
==============  ===================================================

How modgap departs from the reference code:

- Defaults scale with the model (:func:`default_hyperparameters`): the
  reference's lr 1e-6, batch 512 and one epoch suit CLIPs of 100M+
  parameters and leave a small model where it was.
- The contrastive baseline normalises the features before the logit scale
  (the reference multiplies raw encoder outputs by it, see
  :func:`~modgap.adapt.losses.contrastive_loss`) and clamps the scale at
  100 after each step, as open_clip's training does.
- The logit scale is frozen unless the contrastive term is on. In the
  reference it sits in the optimiser with zero gradient, so weight decay
  slowly shrinks it without any loss asking for that.
- The teacher runs in eval mode; the last incomplete batch of each epoch is
  dropped (the order is reshuffled every epoch), so the contrastive and
  distillation terms always see full batches.
"""
from __future__ import annotations

import copy
import math
import time
import warnings

import numpy as np
import torch

from .. import distributed
from ..embed import (
    PRECISIONS,
    autocast_for,
    grad_scaler_for,
    image_dtype,
    image_inputs,
    pixel_batches,
    prepare_images,
    warn_cut_texts,
)
from ..validation import (
    check_callable,
    check_choice,
    check_fraction_or_count,
    check_int,
    check_number,
)
from .base import (
    ON_DIVERGENCE,
    SCHEDULES,
    Estimator,
    learning_rate_at,
    restore_snapshot,
    run_estimator,
    trainable_snapshot,
)
from .losses import contrastive_loss, hycd_loss, rafa_loss, sample_references

__all__ = [
    "MAX_PASSES",
    "METHODS",
    "SMALL_MODEL_PARAMS",
    "CLIPRefine",
    "RefineObjective",
    "auto_temperature",
    "default_hyperparameters",
    "run_refine",
    "step_plan",
]

METHODS = ("clip-refine", "rafa", "hycd", "self-kd", "contrastive")

# Models below this many parameters get the small-model defaults.
SMALL_MODEL_PARAMS = 30_000_000

# The reference recipe (COCO Captions, ViT-B/32 and up).
_LARGE = {"lr": 1e-6, "batch_size": 512, "epochs": 1, "steps": None, "temperature": 1.0,
          "temperature_factor": 1.0, "lambda_rafa": 1.0, "warmup": 0, "schedule": "constant"}
# Tuned on modgap-tiny (8M parameters) with 8,000 generated pairs; see
# benchmarks/refine_methods.py. At lr 1e-3 every method, plain distillation
# included, costs it 5-10 points of zero-shot accuracy; at lr 1e-4 with
# RaFA at weight 1 its gap does not move. On a validation draw of the world a
# constant 3e-4 cut the gap by half but cost up to 2.4 points of photo
# accuracy; a cosine decay from 3e-4 cost under one but cut only a quarter;
# from 5e-4 it cut 43% and cost 0.8-1.2 points. With that rate, a HyCD
# temperature of 1.5 times auto_temperature and RaFA at weight 6 cut 45% and
# cost 0.6 (two seeds), where the plain auto temperature and weight 5 cost 1.0;
# a temperature of 10 (about twice auto_temperature) kept more photo accuracy,
# but with the RaFA weight that a cut of more than a third then needs it kept
# less on the shifted domains than contrastive fine-tuning does.
# The recipe is a number of steps, not of epochs: it was tuned as 2 epochs of
# 7,744 pairs at batch 128 (120 steps), and a fixed budget keeps its strength
# (updates and learning-rate schedule) whatever the number of pairs.
_SMALL = {"lr": 5e-4, "batch_size": 128, "epochs": None, "steps": 120, "temperature": "auto",
          "temperature_factor": 1.5, "lambda_rafa": 6.0, "warmup": 0, "schedule": "cosine"}
# Above this many passes over the training pairs the step budget repeats them so
# often that zero-shot accuracy pays (chosen on the validation suite; see
# default_hyperparameters).
MAX_PASSES = 5.0

def step_plan(n_pairs: int, batch_size: int, *, epochs: int | None = None, steps: int | None = None,
              hp: dict | None = None) -> dict:
    """How long a fit trains: ``steps`` (optimiser steps, over which the
    learning-rate schedule and warm-up run), ``epochs`` (passes started, the
    last one cut short), ``per_epoch`` (full batches a pass), ``passes``
    (times each pair is seen) and ``too_few`` (the default budget would pass
    over the pairs more than :data:`MAX_PASSES` times).

    ``steps`` given: that many. ``epochs`` given: whole passes. Neither: the
    model size's default in ``hp`` (:func:`default_hyperparameters`), a step
    budget (small models) or a number of epochs (large ones).
    """
    hp = hp or _LARGE
    per_epoch = max(1, n_pairs // batch_size)
    default = steps is None and epochs is None
    if steps is not None:
        total = int(steps)
    elif epochs is not None:
        total = per_epoch * int(epochs)
    elif hp["steps"] is not None:
        total = int(hp["steps"])
    else:
        total = per_epoch * int(hp["epochs"])
    passes = total * batch_size / n_pairs
    return {"steps": total, "epochs": math.ceil(total / per_epoch), "per_epoch": per_epoch, "passes": passes,
            "too_few": bool(default and hp["steps"] is not None and passes > MAX_PASSES)}


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def default_hyperparameters(model: torch.nn.Module) -> dict:
    """The ``lr``, ``batch_size``, ``epochs`` or ``steps``, HyCD ``temperature`` (with
    ``temperature_factor``, the multiple of :func:`auto_temperature` it means
    when it is ``"auto"``), ``lambda_rafa``, ``warmup`` and learning-rate
    ``schedule`` that :class:`CLIPRefine` uses when they are left as
    ``None``, chosen by model size.

    Step budget (small models). The small-model recipe is 120 optimiser
    steps of 128 pairs, whatever the number of pairs: the epochs follow
    (``epochs_ = ceil(120 / (n // 128))``, the last one cut short) and the
    cosine decay runs over those 120 steps. With epochs fixed instead, the
    recipe's strength followed the set's size (58 steps on 4,000 pairs cut
    the gap by 14% where 120 steps on 8,000 cut 46%). With the budget the
    held-out suite (``benchmarks/heldout_suite.py``: draws no setting was
    chosen on) gets a cut of 44-47% at 2,000, 4,000, 8,000 and 20,000
    pairs, for 0.4-0.9 points of photo zero-shot accuracy. Over fewer than
    about 3,000 pairs the budget passes over each pair more than
    :data:`MAX_PASSES` times; on the validation suite the cut held there
    but zero-shot accuracy fell by more than a point (1.1 at 2,000 pairs,
    2.1 at 1,000), so :meth:`CLIPRefine.fit` warns. Large models keep the
    reference's one epoch.

    Models of at least :data:`SMALL_MODEL_PARAMS` parameters get the
    reference recipe (AdamW lr 1e-6, batch 512, 1 epoch, T = 1, RaFA at
    weight 1, no warm-up, constant learning rate), meant for a pre-trained
    CLIP and about 100,000 COCO pairs. Smaller models, such as the bundled
    ``modgap-tiny``, get a peak lr of 5e-4 with cosine decay to zero, batch
    128, 2 epochs, RaFA at weight 6 and 1.5 times the temperature of
    :func:`auto_temperature`: over a few thousand pairs that moves the gap
    while keeping zero-shot accuracy (``benchmarks/refine_methods.py``).
    The decay is a departure from the reference for scale: at a constant
    rate large enough to move a small model's gap in a hundred steps, the
    last steps keep pushing the encoders away from the teacher and cost
    zero-shot accuracy; decaying the rate lets them settle.
    Such a run is about a hundred steps, and RaFA, whose pull towards the
    prior is mostly noise step by step, needs the larger weight to move the
    centroids within them. Fresh pairs beat repeated ones: 8,000 pairs for 2
    epochs lost less accuracy than 4,000 for 4. The teacher's targets are its
    probabilities at two thirds of its own logit scale (1.5 times
    :func:`auto_temperature`), softer than the near one-hot rows its
    calibrated probabilities are on its own training data, as distillation
    usually softens them (Hinton et al., 2015); with the ``T^2`` factor of
    HyCD this also weighs the distillation up against RaFA.
    """
    return dict(_SMALL if count_parameters(model) < SMALL_MODEL_PARAMS else _LARGE)


def _method_terms(method: str, lambda_rafa: float, lambda_kd: float, lambda_contrastive) -> dict:
    """The weight of each loss term a method uses (terms at weight 0 are left out)."""
    base = {
        "contrastive": {"contrastive": 1.0},
        "self-kd": {"hycd": lambda_kd},
        "hycd": {"hycd": lambda_kd},
        "rafa": {"rafa": lambda_rafa},
        "clip-refine": {"rafa": lambda_rafa, "hycd": lambda_kd},
    }[method]
    if lambda_contrastive is not None:
        base["contrastive"] = float(lambda_contrastive)
    return {k: float(v) for k, v in base.items() if v > 0}


class RefineObjective(torch.nn.Module):
    """The training loss of one method on one batch: a student, a frozen
    teacher when the method distils, and the weights of the terms.

    Parameters
    ----------
    student : open_clip CLIP
        The model being trained (updated by the caller's optimiser).
    weights : dict
        Loss term name (``"contrastive"``, ``"rafa"``, ``"hycd"``) to weight.
    teacher : open_clip CLIP, optional
        Needed when ``"hycd"`` is among the terms; it is put in eval mode
        and its parameters stop requiring gradients.
    alpha, temperature : float
        HyCD's blend and temperature.
    rafa_normalize : bool
        RaFA on normalised features instead of raw ones.

    Calling it with a batch of pixels ``[B, 3, H, W]``, tokens ``[B, L]`` and
    a ``torch.Generator`` (for RaFA's references) returns a dict with each
    term and their weighted sum under ``"loss"``. Under an initialised
    process group (:mod:`modgap.distributed`) each rank passes its share of
    the global batch; the features are gathered (the student's with
    gradient) and every rank computes the loss of the global batch, RaFA's
    references drawn for the global batch from the same generator, so the
    loss does not depend on the number of ranks.
    """

    def __init__(self, student, weights: dict, teacher=None, alpha: float = 0.5, temperature: float = 1.0,
                 rafa_normalize: bool = False):
        super().__init__()
        unknown = set(weights) - {"contrastive", "rafa", "hycd"}
        if unknown:
            raise ValueError(f"weights: unknown loss terms {sorted(unknown)}; use contrastive, rafa, hycd")
        if not weights:
            raise ValueError("weights: no loss term has a positive weight")
        if "hycd" in weights and teacher is None:
            raise ValueError("teacher is required when the 'hycd' term is used")
        self.student = student
        self.weights = dict(weights)
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.rafa_normalize = bool(rafa_normalize)
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)
        # kept outside the module tree, so that .parameters() and
        # .state_dict() hold the student only
        self.__dict__["teacher"] = teacher
        proj = getattr(student, "text_projection", None)
        # the width of the features, for a rank whose share of a batch is empty
        self._dim = int(proj.shape[-1]) if isinstance(proj, torch.Tensor) else int(student.visual.output_dim)

    def _encode(self, encoder, x: torch.Tensor) -> torch.Tensor:
        # a rank's share of a global batch may be empty; the encoders refuse zero rows
        if x.shape[0] == 0:
            dtype = next(self.student.parameters()).dtype
            return torch.zeros(0, self._dim, device=x.device, dtype=dtype)
        return encoder(x)

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor, generator: torch.Generator | None = None):
        s_img = distributed.gather_with_grad(self._encode(self.student.encode_image, pixels))
        s_txt = distributed.gather_with_grad(self._encode(self.student.encode_text, tokens))
        terms = {}
        if "contrastive" in self.weights:
            scale = self.student.logit_scale.exp()
            if not distributed.is_main():
                # every rank computes the whole loss: the scale's gradient is counted on one
                scale = scale.detach()
            terms["contrastive"] = contrastive_loss(s_img, s_txt, scale)
        if "rafa" in self.weights:
            ref = sample_references(s_img.shape[0], s_img.shape[1], generator=generator,
                                    device=s_img.device, dtype=s_img.dtype)
            terms["rafa"] = rafa_loss(s_img, s_txt, ref, normalize=self.rafa_normalize)
        if "hycd" in self.weights:
            with torch.no_grad():
                t_img = distributed.gather_rows(self._encode(self.teacher.encode_image, pixels))
                t_txt = distributed.gather_rows(self._encode(self.teacher.encode_text, tokens))
            terms["hycd"] = hycd_loss(s_img, s_txt, t_img, t_txt, alpha=self.alpha, temperature=self.temperature)
        terms["loss"] = sum(self.weights[k] * v for k, v in terms.items())
        return terms


class CLIPRefine(Estimator):
    """Post-pre-train a CLIP model to shrink its modality gap (scikit-learn
    style: parameters in the constructor, :meth:`fit`, learned state in
    attributes ending in ``_``).

    The model passed in is never changed: a copy trains, and a second frozen
    copy (the teacher, in eval mode and without gradients) serves the
    distilling methods; that copy is the only extra memory.

    Parameters
    ----------
    clip : modgap.Clip
        The model to refine (its preprocessing and tokenizer are reused).
    method : str
        One of :data:`METHODS`; see the module docstring.
    epochs, batch_size, lr : optional
        ``None`` picks them by model size, see :func:`default_hyperparameters`
        (reference recipe: 1 epoch, batch 512, lr 1e-6; small models:
        a budget of 120 steps, batch 128, peak lr 5e-4). The values used are
        in ``epochs_``, ``batch_size_`` and ``lr_``; the steps in
        ``total_steps_``.
    weight_decay : float
        AdamW weight decay, applied to every trained parameter as in the
        reference.
    alpha : float in [0, 1]
        HyCD's weight on the true pairs (``method="self-kd"`` forces 0).
    temperature : float, "auto" or None
        HyCD's temperature. ``"auto"`` is :func:`auto_temperature`; ``None``
        picks by model size (1, as the reference, for large models; 1.5
        times :func:`auto_temperature` for small ones, see
        :func:`default_hyperparameters`). The value used is ``temperature_``.
    lambda_rafa : float, optional
        Weight of the RaFA term; ``None`` picks by model size (1.0, the
        reference's, for large models; 6.0 for small ones, see
        :func:`default_hyperparameters`). The value used is in ``terms_``.
    lambda_kd : float
        Weight of the HyCD term (1.0 in CLIP-Refine).
    lambda_contrastive : float, optional
        Adds the CLIP loss with this weight to any method (the reference's
        ``lambda_cont``); ``None`` means 1 for ``"contrastive"``, 0 otherwise.
    rafa_normalize : bool
        RaFA on unit-normalised features and references instead of the raw
        encoder outputs the reference uses.
    warmup : int, float or None
        Linear learning-rate warm-up: a number of steps, or a fraction of
        all steps; ``None`` picks by model size (0, as the reference, for
        both). The step count used is ``warmup_``.
    schedule : {"constant", "cosine"} or None
        The learning rate after warm-up: constant (the reference), or a
        cosine decay from ``lr`` to zero over the remaining steps. ``None``
        picks by model size (constant for large models, cosine for small
        ones, see :func:`default_hyperparameters`). The one used is
        ``schedule_``.
    holdout : int or float
        Pairs kept out of training to measure the centroid distance as
        training goes (a count, or a fraction of ``pairs``); ignored when
        :meth:`fit` gets ``eval_pairs``; 0 turns the measurement off.
    log_every : int, optional
        Steps between rows of ``history_`` (default: about 25 rows a run).
    seed : int
        Seeds the pair order, the caption draws, RaFA's references and
        torch's global generator during the fit (restored afterwards); on
        CPU the same seed gives the same weights.
    device : optional
        Where to train (default: the clip's device).
    progress : bool
        Show a tqdm progress bar.
    callback : callable, optional
        ``callback(estimator, row)`` after row 0 and every logged row of
        ``history_``; returning ``False`` stops training there.
    steps : int, optional
        The number of optimiser steps, instead of ``epochs`` (give one of
        the two); the epochs follow, the last one cut short, and the
        learning-rate schedule runs over these steps. ``None`` with
        ``epochs=None`` is the model size's default: a budget of 120 steps
        for small models, one epoch for large ones.
    precision : {"fp32", "amp", "amp_bf16", "amp_fp16"}
        open_clip's names for the training arithmetic. ``"fp32"`` (the
        default) is the reference's. The others run the student's and the
        teacher's forward passes and the losses under autocast to bf16 or
        fp16 (``"amp"``: fp16 on CUDA, bf16 on CPU) while the weights, the
        gradients and AdamW's state stay fp32, and fp16 on CUDA scales the
        loss; activations take about half the memory and the GPU's tensor
        cores do the matrix products. The weights then differ from an fp32
        run in the third significant digit of each update.
    on_divergence : {"raise", "warn"}
        What a loss, weight or held-out embedding that is no longer finite
        does: training stops at once, ``model_`` goes back to the weights of
        the last row of ``history_``, and then
        :class:`~modgap.adapt.base.DivergenceError` is raised (the estimator
        is fitted all the same) or a ``RuntimeWarning`` is given.

    Attributes
    ----------
    model_ : open_clip CLIP
        The refined model, in eval mode; :meth:`to_clip` wraps it as a
        :class:`modgap.Clip`, :meth:`save` writes it with the fit, and
        ``modgap.load_model(folder)`` loads it back.
    history_ : pandas.DataFrame
        One row per logging step: ``step``, ``epoch``, ``pairs_seen``, the
        mean of each loss term since the previous row and their weighted sum
        ``loss``, ``centroid_distance`` on the held-out pairs, ``lr``,
        ``logit_scale`` and ``seconds``. Row 0 is the model before training.
    terms_ : dict
        The weight of each loss term used.
    lr_, batch_size_, epochs_, schedule_ : the values used.
    total_steps_ : int
        Optimiser steps the schedule is laid out over.
    n_steps_ : int
        Optimiser steps taken.
    diverged_ : str or None
        Why training stopped early on a non-finite value, or ``None``.
    skipped_files_ : list of Path
        Image files of ``pairs`` (or ``eval_pairs``) that could not be
        decoded. Training leaves such a pair out of its batch each time it is
        drawn (a batch that keeps fewer than two pairs is not trained on),
        the held-out measurement leaves it out, and one warning names them.
    """

    def __init__(self, clip, method: str = "clip-refine", epochs: int | None = None,
                 batch_size: int | None = None, lr: float | None = None, weight_decay: float = 0.1,
                 alpha: float = 0.5, temperature=None, lambda_rafa: float | None = None,
                 lambda_kd: float = 1.0, lambda_contrastive: float | None = None,
                 rafa_normalize: bool = False, warmup=None, schedule: str | None = None, holdout=256,
                 log_every: int | None = None, seed: int = 0, device=None, progress: bool = True,
                 callback=None, on_divergence: str = "raise", steps: int | None = None, precision: str = "fp32"):
        self.clip = clip
        self.method = method
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.alpha = alpha
        self.temperature = temperature
        self.lambda_rafa = lambda_rafa
        self.lambda_kd = lambda_kd
        self.lambda_contrastive = lambda_contrastive
        self.rafa_normalize = rafa_normalize
        self.warmup = warmup
        self.schedule = schedule
        self.holdout = holdout
        self.log_every = log_every
        self.seed = seed
        self.device = device
        self.progress = progress
        self.callback = callback
        self.on_divergence = on_divergence
        self.steps = steps
        self.precision = precision

    # -- parameters --------------------------------------------------------
    def _validate_params(self) -> None:
        from ..models import Clip

        if not isinstance(self.clip, Clip):
            raise TypeError(f"clip must be a modgap.Clip (from modgap.load_model), got {type(self.clip).__name__}")
        check_choice(self.method, "method", METHODS)
        check_int(self.epochs, "epochs", allow_none=True)
        check_int(self.steps, "steps", allow_none=True)
        if self.epochs is not None and self.steps is not None:
            raise ValueError(f"give epochs or steps, not both (got epochs={self.epochs}, steps={self.steps})")
        check_int(self.batch_size, "batch_size", min_value=2, allow_none=True)
        check_number(self.lr, "lr", low=0.0, low_open=True, allow_none=True)
        check_number(self.weight_decay, "weight_decay", low=0.0)
        check_number(self.alpha, "alpha", low=0.0, high=1.0)
        if self.temperature not in (None, "auto"):
            check_number(self.temperature, "temperature", low=0.0, low_open=True)
        check_number(self.lambda_rafa, "lambda_rafa", low=0.0, allow_none=True)
        check_number(self.lambda_kd, "lambda_kd", low=0.0)
        check_number(self.lambda_contrastive, "lambda_contrastive", low=0.0, allow_none=True)
        if self.warmup is not None:
            check_fraction_or_count(self.warmup, "warmup")
        if self.schedule is not None:
            check_choice(self.schedule, "schedule", SCHEDULES)
        check_fraction_or_count(self.holdout, "holdout")
        check_int(self.log_every, "log_every", allow_none=True)
        check_int(self.seed, "seed", min_value=None)
        check_callable(self.callback, "callback")
        check_choice(self.on_divergence, "on_divergence", ON_DIVERGENCE)
        check_choice(self.precision, "precision", PRECISIONS)

    def _split(self, pairs, eval_pairs):
        from ..data.containers import PairSet

        if not isinstance(pairs, PairSet):
            raise TypeError(f"pairs must be a modgap.data.PairSet, got {type(pairs).__name__}")
        if eval_pairs is not None:
            if not isinstance(eval_pairs, PairSet):
                raise TypeError(f"eval_pairs must be a modgap.data.PairSet or None, got {type(eval_pairs).__name__}")
            return pairs, eval_pairs
        n = len(pairs)
        k = round(self.holdout * n) if isinstance(self.holdout, float) else int(self.holdout)
        if k == 0:
            return pairs, None
        if n - k < 2:
            raise ValueError(
                f"holdout={self.holdout!r} keeps {k} of the {n} pairs, leaving fewer than 2 to train on; "
                "lower holdout or pass eval_pairs="
            )
        perm = np.random.default_rng([int(self.seed), 1]).permutation(n)
        return pairs.subset(np.sort(perm[k:])), pairs.subset(np.sort(perm[:k]))

    # -- fitting -----------------------------------------------------------
    def fit(self, pairs, eval_pairs=None) -> CLIPRefine:
        """Refine a copy of the model on image-caption ``pairs``.

        Every epoch visits the pairs in a new random order, drawing one of
        each image's captions at random.

        Parameters
        ----------
        pairs : modgap.data.PairSet
            Training pairs (uint8 images, PIL images or files).
        eval_pairs : PairSet, optional
            Pairs on which to measure the centroid distance as training goes
            (with each image's first caption); by default ``holdout`` pairs
            are set aside from ``pairs``.
        """
        from tqdm.auto import tqdm

        from ..data.files import warn_unreadable
        from ..models import Clip, pick_device

        self._validate_params()
        for stale in ("history_", "model_"):
            self.__dict__.pop(stale, None)
        train, held = self._split(pairs, eval_pairs)
        held_unread, unread = [], []
        if held is not None:
            held, held_unread = _readable_pairs(held, "CLIPRefine.fit (held-out pairs)")
        clip = self.clip
        device = clip.device if self.device is None else pick_device(self.device)
        hp = default_hyperparameters(clip.model)
        self.lr_ = float(self.lr if self.lr is not None else hp["lr"])
        self.batch_size_ = int(self.batch_size if self.batch_size is not None else hp["batch_size"])
        lambda_rafa = self.lambda_rafa if self.lambda_rafa is not None else hp["lambda_rafa"]
        self.terms_ = _method_terms(self.method, lambda_rafa, self.lambda_kd, self.lambda_contrastive)
        alpha = 0.0 if self.method == "self-kd" else float(self.alpha)

        n = len(train)
        if n < 2:
            raise ValueError(f"pairs: need at least 2 training pairs, got {n}")
        warn_cut_texts(clip, [c for caps in train.captions for c in caps], "CLIPRefine.fit: captions")
        bs = min(self.batch_size_, n)
        per_epoch = n // bs
        plan = step_plan(n, bs, epochs=self.epochs, steps=self.steps, hp=hp)
        total = plan["steps"]
        if plan["too_few"]:
            warnings.warn(
                f"CLIPRefine.fit: {n} training pairs are too few for the recipe's {total} steps of {bs} "
                f"pairs: it passes over each pair {plan['passes']:.1f} times. So many passes still cut the gap "
                "but cost more than a point of zero-shot accuracy (on the validation suite: 1.1 points at 9 "
                f"passes, 2.1 at 20); the recipe keeps it within a point from about "
                f"{math.ceil(total * bs / MAX_PASSES):,} pairs. Give more pairs, or set steps= for a shorter "
                "schedule (a smaller cut).",
                UserWarning, stacklevel=2)
        self.epochs_ = plan["epochs"]
        log_every = self.log_every or max(1, total // 25)
        warmup = self.warmup if self.warmup is not None else hp["warmup"]
        self.warmup_ = round(warmup * total) if isinstance(warmup, float) else int(warmup)
        self.schedule_ = self.schedule if self.schedule is not None else hp["schedule"]
        self.total_steps_ = total

        # fp32 weights whatever the model was loaded in; a model wholly in fp64 stays fp64
        work = torch.float64 if image_dtype(clip.model) == torch.float64 else torch.float32
        student = copy.deepcopy(clip.model).to(device, work)
        teacher = None
        if "hycd" in self.terms_:
            teacher = copy.deepcopy(clip.model).to(device, work)
        student.requires_grad_(True)
        if "contrastive" not in self.terms_:
            student.logit_scale.requires_grad_(False)
        if getattr(student, "logit_bias", None) is not None:
            student.logit_bias.requires_grad_(False)
        # in-memory images are resized once here, not on every pass
        kind, items = prepare_images(clip, *image_inputs(train))
        temperature = self.temperature if self.temperature is not None else hp["temperature"]
        factor = hp["temperature_factor"] if self.temperature is None else 1.0
        if temperature == "auto":
            temperature = 1.0
            if "hycd" in self.terms_:
                # unreadable files are named once, with the training pass's
                probe, bad = _readable_pairs(train.subset(np.arange(min(256, n))), None)
                unread += bad
                temperature = factor * _norm_product_temperature(clip, probe)
        self.temperature_ = float(temperature)
        objective = RefineObjective(student, self.terms_, teacher=teacher, alpha=alpha,
                                    temperature=self.temperature_, rafa_normalize=self.rafa_normalize)
        params = [p for p in student.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr_, weight_decay=float(self.weight_decay))
        scaler = grad_scaler_for(device, self.precision)
        probe = Clip(student, clip.preprocess, clip.tokenizer, device=device, name=f"{clip.name} (training)",
                     num_workers=clip.num_workers)

        fork = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else []
        rows, window = [], []
        world = distributed.world_size()
        if bs < world:
            raise ValueError(f"batch_size: the global batch of {bs} pairs is smaller than the {world} ranks it is "
                             "split across; use a batch of at least one pair a rank")
        lo, hi = distributed.shard_bounds(bs)
        t0 = time.time()
        with torch.random.fork_rng(devices=fork):
            torch.manual_seed(int(self.seed))
            gen = torch.Generator(device="cpu").manual_seed(int(self.seed))
            rng = np.random.default_rng(int(self.seed))
            stop = not self._report(rows, self._row(0, 0, 0, {}, _gap(probe, held), t0, student, float("nan")),
                                    {"model": student})
            step, seen, epoch, lr = 0, 0, 0, float("nan")
            # the weights of the last row of history_, to come back to if the loss diverges
            snapshot, snapshot_step, diverged = trainable_snapshot(student), 0, None
            bar = tqdm(total=total, desc=f"refine ({self.method})", unit="step",
                       disable=not (self.progress and distributed.is_main()))
            try:
                for epoch in range(0 if stop else self.epochs_):
                    order = rng.permutation(n)
                    batches = [order[b * bs:(b + 1) * bs] for b in range(per_epoch)]
                    # under torchrun each rank loads its share of every global batch
                    shares = [b[lo:hi] for b in batches]
                    loaded = pixel_batches(clip, kind, items, shares, dtype=work)
                    for idx, share, (kept, pixels) in zip(batches, shares, loaded):
                        if step >= total:
                            break
                        captions = train.sample_captions(idx, rng)[lo:hi]
                        if len(kept) < len(share):
                            unread.extend(items[share[j]] for j in np.setdiff1d(np.arange(len(share)), kept))
                            captions = [captions[j] for j in kept]
                        n_kept = len(captions) if world == 1 else int(distributed.sum_value(len(captions)))
                        if n_kept < 2:
                            bar.update(1)
                            continue
                        if pixels is None:
                            pixels = torch.empty(0, 3, *clip.image_size, dtype=work)
                        pixels = pixels.to(device)
                        tokens = clip.tokenize(captions).to(device)
                        lr = learning_rate_at(step, total, self.lr_, self.warmup_, self.schedule_)
                        for group in opt.param_groups:
                            group["lr"] = lr
                        student.train()
                        with autocast_for(device, precision=self.precision):
                            terms = objective(pixels, tokens, generator=gen)
                        if not torch.isfinite(terms["loss"]):
                            bad = [k for k, v in terms.items() if k != "loss" and not torch.isfinite(v)]
                            diverged = self._divergence_message(bad or ["loss"], terms, step + 1, lr,
                                                                snapshot_step)
                            restore_snapshot([student], snapshot)
                            stop = True
                            break
                        opt.zero_grad(set_to_none=True)
                        loss = terms["loss"] if scaler is None else scaler.scale(terms["loss"])
                        if loss.requires_grad:  # not on a rank whose share of the batch is empty
                            loss.backward()
                        distributed.sum_gradients(params)
                        if scaler is None:
                            opt.step()
                        else:
                            scaler.step(opt)
                            scaler.update()
                        if "contrastive" in self.terms_:
                            with torch.no_grad():
                                student.logit_scale.clamp_(0, math.log(100))
                        step += 1
                        seen += n_kept
                        values = {k: float(v.detach()) for k, v in terms.items()}
                        window.append(values)
                        bar.update(1)
                        if step % log_every == 0 or step == total:
                            finite = all(torch.isfinite(p).all() for p in params)
                            gap = _gap(probe, held) if finite else None
                            if gap is None:
                                diverged = self._divergence_message(["weights"], {}, step, lr, snapshot_step)
                                restore_snapshot([student], snapshot)
                                stop = True
                                break
                            mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                            window = []
                            bar.set_postfix(loss=f"{values['loss']:.3f}", gap=f"{gap:.3f}")
                            if not self._report(rows, self._row(step, epoch, seen, mean, gap, t0, student, lr),
                                                {"model": student}):
                                stop = True
                                break
                            snapshot, snapshot_step = trainable_snapshot(student), step
                    loaded.close()  # its workers and their prefetched batches go now
                    if stop:
                        break
            finally:
                bar.close()
            if window and diverged is None:
                gap = _gap(probe, held) if all(torch.isfinite(p).all() for p in params) else None
                if gap is None:
                    diverged = self._divergence_message(["weights"], {}, step, lr, snapshot_step)
                    restore_snapshot([student], snapshot)
                else:
                    mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                    self._report(rows, self._row(step, epoch, seen, mean, gap, t0, student, lr),
                                 {"model": student})

        student.eval()
        student.requires_grad_(False)
        self.n_steps_ = snapshot_step if diverged is not None else step
        unread = list(dict.fromkeys(p for share in distributed.all_gather_objects(unread) for p in share))
        warn_unreadable(unread, len(train), "CLIPRefine.fit",
                        "; their pairs were left out of every batch that drew them", stacklevel=2)
        self.skipped_files_ = held_unread + unread
        self.model_ = student
        self._end_of_divergence(diverged)
        return self

    def _divergence_message(self, terms, values, step, lr, kept_step) -> str:
        if terms == ["weights"]:
            what = f"the weights or the embeddings are no longer finite after step {step}"
        else:
            found = ", ".join(f"{k} = {float(values[k])}" for k in terms)
            what = f"the loss is no longer finite at step {step} ({found})"
        return (f"CLIPRefine diverged: {what}; training "
                f"stopped and model_ holds the weights of step {kept_step}, the last row of history_. "
                f"Lower the learning rate (lr={lr:.3g} at that step, e.g. lr={self.lr_ / 10:.3g}).")

    def _row(self, step, epoch, seen, losses, gap, t0, student, lr) -> dict:
        row = {"step": step, "epoch": epoch, "pairs_seen": seen}
        for k in ("loss", *self.terms_):
            row[k] = losses.get(k, float("nan"))
        row["centroid_distance"] = gap
        row["lr"] = lr
        row["logit_scale"] = float(student.logit_scale.detach().exp())
        row["seconds"] = time.time() - t0
        return row

    # -- after fitting -----------------------------------------------------
    _fitted_attr = "model_"
    _saved_scalars = ("lr_", "batch_size_", "epochs_", "warmup_", "schedule_", "total_steps_", "n_steps_",
                      "temperature_", "terms_", "diverged_")

    def fitted_models(self) -> dict:
        """``{"model": the refined model}``."""
        self._check_fitted()
        return {"model": self.model_}

    def _restore_models(self, models: dict) -> None:
        self.model_ = models["model"]

    def _suffix(self, model_name: str) -> str:
        return self.method


def run_refine(clip, pairs, method: str = "clip-refine", out=None, overwrite: bool = False, eval_pairs=None,
               **params) -> CLIPRefine:
    """Fit a :class:`CLIPRefine` in one call and, when ``out`` is given,
    save it there (:meth:`CLIPRefine.save`): the front door of
    ``modgap refine``, as :func:`~modgap.adapt.reclip.run_reclip` is of
    ``modgap reclip``.

    ``clip`` may be a :class:`modgap.Clip` or a spec for
    :func:`modgap.load_model`; ``params`` go to :class:`CLIPRefine`.
    Returns the fitted estimator.
    """
    return run_estimator(CLIPRefine, clip, (pairs,), {"eval_pairs": eval_pairs}, out=out, overwrite=overwrite,
                         method=method, **params)


def auto_temperature(clip, pairs, n: int = 256) -> float:
    """A HyCD temperature that turns the raw dot products of ``clip``'s model
    into its own calibrated logits.

    Returns the mean of ``||f_img|| * ||f_txt||`` (raw encoder outputs) over
    the first ``n`` pairs of ``pairs`` (first caption each), divided by the
    model's logit scale. Then ``raw / T`` is about ``logit_scale * cos``:
    the teacher's soft labels are the probabilities the model was trained
    to produce, whatever the norms of its raw features. (For ``modgap-tiny``
    the raw norms are about 22, so raw dot products are about five times
    sharper than its logits and their softmax is nearly one-hot.)
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    sub, _ = _readable_pairs(pairs.subset(np.arange(min(n, len(pairs)))), "auto_temperature")
    return _norm_product_temperature(clip, sub)


def _norm_product_temperature(clip, pairs) -> float:
    """:func:`auto_temperature` over all of ``pairs``, whose images are known to decode."""
    img = clip.encode_images(pairs, normalize=False, progress=False)
    txt = clip.encode_texts(pairs.first_captions(), normalize=False, progress=False)
    return float((img.norm(dim=-1) * txt.norm(dim=-1)).mean() / clip.logit_scale)


def _readable_pairs(pairs, where: str | None):
    """``pairs`` without the pairs whose image file cannot be decoded (one
    warning, said of ``where``, names them; none if ``where`` is ``None``),
    and those files."""
    from ..data.files import readable_paths

    if isinstance(pairs.images, np.ndarray):
        return pairs, []
    good, bad = readable_paths(pairs.images, where)
    if not bad:
        return pairs, []
    if not good:
        raise ValueError(f"{where or 'pairs'}: none of the {len(pairs)} image files could be read")
    return pairs.subset(np.setdiff1d(np.arange(len(pairs)), bad)), [pairs.images[i] for i in bad]


def _gap(probe, held) -> float | None:
    """The centroid distance of the held-out pairs (first caption each);
    ``None`` when the model's embeddings of them are not finite."""
    if held is None:
        return float("nan")
    from ..metrics import centroid_distance

    img = probe.encode_images(held, progress=False)
    txt = probe.encode_texts(held.first_captions(), progress=False)
    if not (torch.isfinite(img).all() and torch.isfinite(txt).all()):
        return None
    return centroid_distance(img, txt)
