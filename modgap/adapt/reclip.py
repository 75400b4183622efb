"""ReCLIP: source-free domain adaptation of a CLIP model on unlabelled target
images (Hu et al., "ReCLIP: Refine Contrastive Language Image Pre-Training
with Source Free Domain Adaptation", WACV 2024, arXiv 2308.03793).

Two copies of the model learn from each other's pseudo labels:

- **ReCLIP-V** trains only the affine parameters of the image encoder's
  LayerNorms (and BatchNorms). Its classifier is the set of class centroids
  from label propagation on its own image features, replaced every epoch.
- **ReCLIP-T** trains only the text transformer's LayerNorms (its final one
  included). Its logits compare the frozen image features with the class
  embeddings re-encoded, with gradients, from the first template.

Every epoch, label propagation (:mod:`modgap.adapt.graph`) gives each branch
pseudo labels; both branches train with cross-entropy on the images where
their pseudo labels agree. Prediction averages the two branches' logits.

The reference implementation is ``michiganleon/ReCLIP_WACV`` (``reclip.py``,
``models.py``). modgap follows it step by step except where it is wrong or
could not run here; each such place is named in :class:`ReCLIP`'s docstring.
"""
from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from .. import distributed
from ..embed import (
    PRECISIONS,
    autocast_for,
    encode_pixels,
    grad_scaler_for,
    image_inputs,
    pixel_batches,
    prepare_images,
    show_progress,
    tokenize_checked,
    warn_skipped,
)
from ..validation import (
    check_callable,
    check_choice,
    check_int,
    check_labels,
    check_number,
    check_strings,
)
from .base import ON_DIVERGENCE, Estimator, restore_snapshot, run_estimator, trainable_snapshot
from .graph import propagate

__all__ = [
    "CONFIDENT_SHARE",
    "MAX_BALANCE_DROP",
    "MIN_CONFIDENT_AGREEMENT",
    "SMALL_MODEL_DIM",
    "ReCLIP",
    "confident_agreement",
    "default_schedule",
    "label_free_figures",
    "reference_epochs",
    "run_reclip",
    "text_norm_parameters",
    "visual_norm_parameters",
]

_NORM_TYPES = (torch.nn.LayerNorm, torch.nn.modules.batchnorm._BatchNorm)


# models with a smaller joint embedding than this count as small (modgap-tiny: 128;
# the smallest open_clip models, ViT-B and RN50: 512 and 1024)
SMALL_MODEL_DIM = 256
# ReCLIP adapts only where label propagation keeps at least this share of the
# zero-shot labels of the CONFIDENT_SHARE most confident images; the bar was chosen
# on the validation suite of benchmarks/heldout_suite.py and the model card's eleven
# sets, never on the held-out suite (see ReCLIP's docstring)
MIN_CONFIDENT_AGREEMENT = 0.87
CONFIDENT_SHARE = 0.10
# training stops, keeping the epoch before, once the class balance of the
# predictions falls this far below its value before training (a collapse)
MAX_BALANCE_DROP = 0.05
_SMALL_SCHEDULE = {"epochs": 5, "lr_visual": 5e-2, "lr_text": 5e-2}


def reference_epochs(n_images: int) -> int:
    """The reference's number of epochs: ``min(100, int(N / 5000 + 2))``."""
    return int(min(100, int(n_images / 5000 + 2)))


def default_schedule(embed_dim: int, n_images: int) -> dict:
    """The ``epochs``, ``lr_visual`` and ``lr_text`` that ReCLIP's ``None``
    settings resolve to.

    Models of CLIP's size (joint embedding of :data:`SMALL_MODEL_DIM` = 256
    dimensions or more) get the reference's schedule: ``epochs =
    min(100, int(N / 5000 + 2))`` and a learning rate of 1e-3 in each branch.
    Smaller models get a schedule tuned on the bundled ``modgap-tiny``
    (``benchmarks/reclip_domains.py``): with 1e-3 its LayerNorms barely move
    in the reference's few epochs of a few dozen steps, and its accuracy stays
    at the starting point.
    """
    if embed_dim >= SMALL_MODEL_DIM:
        return {"epochs": reference_epochs(n_images), "lr_visual": 1e-3, "lr_text": 1e-3}
    return dict(_SMALL_SCHEDULE)


def confident_agreement(zero_shot_logits, lp_labels, share: float = CONFIDENT_SHARE) -> float:
    """The share of the ``share`` most confident zero-shot images (largest
    top-class margin of ``zero_shot_logits``, at least one image) whose
    label-propagation label ``lp_labels`` is their zero-shot label.

    Zero-shot is most often right where it is most confident; a label
    propagation that overturns many of those labels follows a structure of
    the images that disagrees with the text classifier where the classifier
    is surest, and self-training on its labels then amplifies noise."""
    top2 = zero_shot_logits.float().topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    n = max(1, round(share * len(margin)))
    picked = margin.topk(n).indices
    return float((lp_labels[picked] == zero_shot_logits[picked].argmax(1)).float().mean())


def label_free_figures(pred, previous, zero_shot, v_labels, logits) -> dict:
    """What one epoch of ReCLIP says about itself without labels: ``stability``
    (share of predictions unchanged since the last epoch; NaN at epoch 0),
    ``zero_shot_agreement`` (share equal to the frozen model's zero-shot
    prediction), ``lp_zero_shot_agreement`` (ReCLIP-V's label-propagation
    labels against zero-shot), ``confidence`` (mean top-class probability of
    the averaged branches at the model's logit scale) and ``class_balance``
    (entropy of the predicted class shares over its largest value, 1 when
    every class is predicted equally often)."""
    c = logits.shape[1]
    counts = torch.bincount(pred, minlength=c).double()
    share = counts / counts.sum()
    entropy = float(-(share[share > 0] * share[share > 0].log()).sum())
    return {
        "stability": float("nan") if previous is None else float((pred == previous).float().mean()),
        "zero_shot_agreement": float((pred == zero_shot).float().mean()),
        "lp_zero_shot_agreement": float((v_labels == zero_shot).float().mean()),
        "confidence": float(torch.softmax(logits.float() / 2, dim=1).max(1).values.mean()),
        "class_balance": entropy / math.log(c),
    }


def visual_norm_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """``(name, parameter)`` for the weight and bias of every LayerNorm and
    BatchNorm in the image encoder (``model.visual``): what ReCLIP-V trains."""
    visual = getattr(model, "visual", None)
    if visual is None:
        raise ValueError("model has no image encoder at .visual; is it an open_clip CLIP model?")
    return _norm_params(visual.named_modules(prefix="visual"), _NORM_TYPES)


def text_norm_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """``(name, parameter)`` for the weight and bias of every LayerNorm of the
    text encoder (``model.transformer`` and ``model.ln_final``, or
    ``model.text`` for open_clip's CustomTextCLIP): what ReCLIP-T trains."""
    if hasattr(model, "text") and isinstance(model.text, torch.nn.Module):
        mods = model.text.named_modules(prefix="text")
    elif hasattr(model, "transformer"):
        mods = list(model.transformer.named_modules(prefix="transformer"))
        if isinstance(getattr(model, "ln_final", None), torch.nn.Module):
            mods += list(model.ln_final.named_modules(prefix="ln_final"))
    else:
        raise ValueError("model has no text encoder at .transformer or .text; is it an open_clip CLIP model?")
    return _norm_params(mods, (torch.nn.LayerNorm,))


def _norm_params(named_modules, types) -> list[tuple[str, torch.nn.Parameter]]:
    out, seen = [], set()
    for name, m in named_modules:
        if not isinstance(m, types):
            continue
        for pname in ("weight", "bias"):
            p = getattr(m, pname, None)
            if isinstance(p, torch.nn.Parameter) and id(p) not in seen:
                seen.add(id(p))
                out.append((f"{name}.{pname}", p))
    return out


def _freeze_all_but(model: torch.nn.Module, params) -> None:
    model.requires_grad_(False)
    for _, p in params:
        p.requires_grad_(True)


def _not_finite(tensors: dict) -> str | None:
    for name, t in tensors.items():
        if not torch.isfinite(t).all():
            return f"{name} are no longer finite"
    return None


class ReCLIP(Estimator):
    """ReCLIP as a scikit-learn estimator (see :class:`~modgap.adapt.base.Estimator`).

    Parameters
    ----------
    clip : modgap.Clip
        The pre-trained model. It is not modified: both branches train
        copies of ``clip.model``, on ``clip.device``.
    classnames : list of str
        The target task's classes.
    templates : list of str
        Prompt templates with ``{}`` (or CLIP_benchmark's ``{c}``) for the class name. All of them build the
        zero-shot classifier, the seeds and the projection; ReCLIP-T trains
        and predicts with the first one, as the reference does.
    epochs : int, optional
        Training passes over the data. ``None``: :func:`default_schedule`,
        the reference's ``min(100, int(N / 5000 + 2))`` for CLIP-sized models
        and a tuned number for small ones.
    batch_size : int
        Images per training step (reference: 64).
    lr_visual, lr_text : float, optional
        SGD learning rates of the two branches. ``None``:
        :func:`default_schedule`, the reference's 1e-3 each for CLIP-sized
        models (joint embedding of 256 dimensions or more) and larger rates,
        tuned on the bundled ``modgap-tiny``, for small ones.
    k, alpha : label propagation's neighbours and strength (reference: 20, 0.99).
    knn_index : {"auto", "exact", "faiss"}
        How label propagation finds the ``k`` neighbours
        (:func:`modgap.adapt.graph.knn_affinity`): ``"exact"`` as the
        reference does (brute force, in blocks), ``"faiss"`` an approximate
        HNSW index on the CPU (``pip install 'modgap[scale]'``; 99.8% of the
        exact neighbours and 99.9% of the labels at 200,000 images in
        ``benchmarks/label_propagation.py``), ``"auto"`` exact on a GPU or
        below 100,000 images, FAISS above where it is installed.
    seed : int
        Seeds the order of the training data. On CPU the whole fit is
        deterministic for a fixed seed.
    momentum, weight_decay : SGD settings (reference: 0.9, 1e-4).
    logit_scale : float
        Multiplies the cosine similarities in both branches' logits
        (reference: 100, whatever the model's own scale).
    rank_cap : int, None or "auto"
        Passed to :func:`modgap.adapt.graph.projection`. ``"auto"`` is the
        reference's choice: 250 for tasks with more than 500 classes, no cap
        below (its cap of 768 is never reached there).
    max_iter, tol : the conjugate gradient's limits per class (reference: 20, 1e-6).
    eval_batch_size : int
        Images per batch in the passes without gradients.
    amp : bool
        Mixed precision (bf16, or fp16 with loss scaling) on CUDA; ignored
        elsewhere. ``precision``, when given, replaces it.
    precision : {"fp32", "amp", "amp_bf16", "amp_fp16"} or None
        open_clip's names for the arithmetic of every pass: ``"fp32"``
        throughout, or autocast to bf16 or fp16 (``"amp"`` is fp16 on CUDA,
        bf16 on CPU) with the optimiser state and the label propagation in
        fp32, and the loss scaled under fp16 on CUDA. The
        low-precision passes take about half the activation memory and run
        on the GPU's tensor cores; their features differ from fp32 in the
        third significant digit, so pseudo labels near a tie can change.
        The trained copies keep the dtype the model was loaded in (fp32
        unless ``load_model(..., precision=...)`` said otherwise).
        ``None`` follows ``amp``.
    callback : callable, optional
        ``callback(estimator, row)`` after every evaluation, with that
        epoch's history row as a dict (``history_`` already holds it), e.g.
        to redraw a plot; returning ``False`` stops the fit there, and the
        model evaluated in that row is the result.
    progress : bool, optional
        Progress bars; ``None`` shows them for 2048 images or more.
    min_confident_agreement : float in [0, 1]
        When adaptation cannot help. Before any training ReCLIP reads, without
        labels, ``confident_agreement`` (in ``history_``): the share of the
        10% most confident zero-shot images (:data:`CONFIDENT_SHARE`, by
        top-class margin) whose label-propagation label equals their
        zero-shot label (:func:`confident_agreement`). Below
        ``min_confident_agreement`` ReCLIP warns, trains nothing, sets
        ``adapted_ = False`` and predicts as the zero-shot classifier does.
        0 always adapts. Chosen on the validation suite
        (``benchmarks/heldout_suite.py --suite validation``: corruptions of
        :data:`modgap.data.corruptions.VALIDATION` at severities 2 and 4 on
        500, 1,000 and 3,000 world shapes and MNIST digits, data seed 5):
        adapted regardless, ReCLIP lost 2.3-3.8 points on three of the 24
        runs (all near chance), whose confident agreement was 0.58-0.84,
        and gained on the 21 others, at 0.94-1.00. On the model card's
        eleven sets (``benchmarks/reclip_domains.py``) the lowest is
        shapes/shape/sketch, 0.897, where ReCLIP gains 9 points; 0.87 lies
        midway between 0.84 and 0.897. With it the validation suite's worst
        change is 0.0 points and the mean gain where label propagation
        beats zero-shot +6.0. The class balance of the
        predictions, the guard tried first, would have stopped three runs
        that gained 6-11 points. The reference has no such guard.
    max_balance_drop : float in [0, 1]
        When to stop early. After each epoch ReCLIP reads ``class_balance``
        (the entropy of the predicted class shares over its maximum, 1 when
        every class is predicted equally often); once it falls more than
        ``max_balance_drop`` below its value before training, the pseudo
        labels are collapsing onto fewer classes: both branches go back to
        the epoch before, which is the result (``kept_epoch_``; ``kept`` in
        ``history_`` marks its row). 1 never stops.
        The reference trains its fixed number of epochs.
    on_divergence : {"raise", "warn"}
        What a loss, feature or class embedding that is no longer finite
        does: training stops at once, both branches go back to the weights
        of the last row of ``history_`` and the fit finishes from there;
        then :class:`~modgap.adapt.base.DivergenceError` is raised (the
        estimator is fitted all the same) or a ``RuntimeWarning`` is given.

    Attributes
    ----------
    epochs_, lr_visual_, lr_text_ : the schedule the fit used (``None`` resolved).
    kept_epoch_ : int
        The epoch whose model is the result: ``epochs_``, or earlier where
        training stopped (``max_balance_drop``, a divergence, a callback);
        ``history_["kept"]`` marks its row.
    adapted_ : bool
        False where ``min_confident_agreement`` kept the frozen model.
    visual_model_, text_model_ : open_clip models
        The trained ReCLIP-V and ReCLIP-T copies (see :meth:`save`, :meth:`load`).
    centroids_ : ndarray ``[C, D]``
        ReCLIP-V's classifier after the last training pass.
    text_classifier_ : ndarray ``[C, D]``
        ReCLIP-T's classifier: the class embeddings from the first template.
    text_class_embeddings_ : ndarray ``[C, D]``
        ReCLIP-T's class embeddings from all templates (its seeds).
    labels_ : ndarray ``[N]``
        The final predictions on the images ``fit`` saw.
    pseudo_labels_v_, pseudo_labels_t_ : ndarray ``[N]``
        Each branch's label propagation on the final features.
    image_embeddings_ : ndarray ``[N, D]``
        ReCLIP-V's image embeddings after training.
    initial_image_embeddings_ : ndarray ``[N, D]``
        The frozen model's image embeddings (ReCLIP-T's, and the starting point).
    diverged_ : str or None
        Why training stopped early on a non-finite value, or ``None``.
    skipped_ : int ndarray
        Positions, in the images given to ``fit``, of files that could not
        be decoded (empty when every image was read). They are left out of
        the fit, with one warning, and every per-image attribute above has
        one row per image that was read, in order.
    history_ : pandas.DataFrame
        One row per evaluation: ``epoch`` 0 is the starting point, row ``e``
        the state after ``e`` training passes. Columns: ``agreement`` (share
        of images where the branches' pseudo labels agree), ``pl_acc_v``,
        ``pl_acc_t``, ``pl_acc_agreed`` (pseudo-label accuracy of each branch
        and on the agreed images), ``acc_v``, ``acc_t``, ``acc`` (accuracy of
        each branch's logits and of their average), ``gap_v``, ``gap_t``
        (centroid distance between each branch's image and class embeddings),
        and for the training pass that led to the row ``loss_v``, ``loss_t``
        and ``trained`` (images trained on). Accuracies are NaN when ``fit``
        got no labels.

    Departures from the reference code
    ----------------------------------
    - Its visual loss divides by the batch size twice (``torch.mean`` of the
      masked losses, then ``/ mask.sum()``), so ReCLIP-V learns about 64
      times slower than ReCLIP-T. Both branches here use the same masked
      mean: ``sum(loss * agree) / sum(agree)``.
    - It reports the best epoch chosen by test accuracy and never evaluates
      the weights after the last training pass. Here the model after the
      last pass is the result; it is evaluated once more (features, label
      propagation, fresh centroids as ReCLIP-V's classifier, as the next
      epoch would) and every epoch's figures go to ``history_``; labels are
      never used to choose anything.
    - A class that no node is assigned to gets a NaN centroid there; here it
      keeps its text embedding (the class's seed) as its centroid.
    - It needs CUDA (and DataParallel) and writes logs to fixed paths; this
      runs on any device, logs to ``history_`` and a callback.
    - With two classes its projection collapses every point onto one line;
      here :func:`~modgap.adapt.graph.projection` warns and uses no
      projection. Images label propagation does not reach get the most
      similar seed's class instead of class 0.
    - ReCLIP-T's frozen image features are computed once, not re-encoded every
      epoch (they cannot change), and each training step runs the encoders
      only on the images whose pseudo labels agree: the others contribute
      nothing to the masked loss, and the models run in eval mode, so the
      gradients are the same.
    """

    def __init__(self, clip, classnames, templates=("a photo of a {}.",), epochs=None, batch_size=64,
                 lr_visual=None, lr_text=None, k=20, alpha=0.99, seed=0, *, momentum=0.9,
                 weight_decay=1e-4, logit_scale=100.0, rank_cap="auto", max_iter=20, tol=1e-6,
                 eval_batch_size=256, amp=True, callback=None, progress=None, on_divergence="raise",
                 min_confident_agreement=MIN_CONFIDENT_AGREEMENT, max_balance_drop=MAX_BALANCE_DROP, precision=None, knn_index="auto"):
        self.clip = clip
        self.classnames = classnames
        self.templates = templates
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr_visual = lr_visual
        self.lr_text = lr_text
        self.k = k
        self.alpha = alpha
        self.seed = seed
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.logit_scale = logit_scale
        self.rank_cap = rank_cap
        self.max_iter = max_iter
        self.tol = tol
        self.eval_batch_size = eval_batch_size
        self.amp = amp
        self.precision = precision
        self.knn_index = knn_index
        self.callback = callback
        self.progress = progress
        self.on_divergence = on_divergence
        self.min_confident_agreement = min_confident_agreement
        self.max_balance_drop = max_balance_drop

    # -- validation ------------------------------------------------------
    def _validate_params(self) -> None:
        """Check the settings; the class names and templates the fit uses
        go to ``classnames_`` and ``templates_``."""
        from ..models import Clip
        from ..validation import check_templates

        if not isinstance(self.clip, Clip):
            raise TypeError(f"clip must be a modgap.Clip (see modgap.load_model), got {type(self.clip).__name__}")
        self.classnames_ = check_strings(self.classnames, "classnames", min_len=2, unique=True)
        self.templates_ = check_templates(self.templates, "templates")
        check_int(self.epochs, "epochs", min_value=0, allow_none=True)
        for name in ("batch_size", "eval_batch_size", "k", "max_iter"):
            check_int(getattr(self, name), name)
        for name in ("lr_visual", "lr_text"):
            check_number(getattr(self, name), name, low=0.0, allow_none=True)
        for name in ("momentum", "weight_decay", "tol"):
            check_number(getattr(self, name), name, low=0.0)
        check_number(self.min_confident_agreement, "min_confident_agreement", low=0.0, high=1.0)
        check_number(self.max_balance_drop, "max_balance_drop", low=0.0, high=1.0)
        check_number(self.logit_scale, "logit_scale", low=0.0, low_open=True)
        check_number(self.alpha, "alpha", low=0.0, high=1.0, low_open=True, high_open=True)
        check_int(self.seed, "seed", min_value=None)
        if self.rank_cap != "auto":
            check_int(self.rank_cap, "rank_cap", allow_none=True)
        check_callable(self.callback, "callback")
        check_choice(self.on_divergence, "on_divergence", ON_DIVERGENCE)
        if self.precision is not None:
            check_choice(self.precision, "precision", PRECISIONS)
        check_choice(self.knn_index, "knn_index", ("auto", "exact", "faiss"))

    def _check_labels(self, labels, n):
        if labels is None:
            return None
        return check_labels(labels, n, len(self.classnames_), "labels")

    def _resolved_rank_cap(self):
        if self.rank_cap == "auto":
            return 250 if len(self.classnames_) > 500 else None
        return self.rank_cap

    # -- pieces ----------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.clip.device

    def _autocast(self):
        return autocast_for(self.device, bool(self.amp), self.precision)

    def _features(self, model, kind, items, desc, show, skipped=None) -> torch.Tensor:
        """Normalised image features ``[N, D]`` (rows of unreadable files left
        out when a list ``skipped`` collects their positions)."""
        f = encode_pixels(self.clip, kind, items, model=model, batch_size=self.eval_batch_size, progress=show,
                          desc=desc, amp=bool(self.amp), skipped=skipped, precision=self.precision)
        return F.normalize(f, dim=-1)

    @staticmethod
    def _drop_unreadable(items, skipped, where, stacklevel=3) -> tuple[list, np.ndarray]:
        """``items`` without the positions in ``skipped`` (one warning names
        those files), and those positions, sorted."""
        bad = warn_skipped(items, skipped, where, stacklevel=stacklevel + 1)
        if not len(bad):
            return items, bad
        keep = np.setdiff1d(np.arange(len(items)), bad)
        return [items[i] for i in keep], bad

    def _encode_prompts(self, model, tokens, n_classes, n_templates) -> torch.Tensor:
        with self._autocast():
            e = model.encode_text(tokens)
        e = F.normalize(e.float(), dim=-1).view(n_classes, n_templates, -1).mean(dim=1)
        return F.normalize(e, dim=-1)

    def _propagate(self, image_emb, class_emb):
        return propagate(image_emb, class_emb, k=self.k, alpha=float(self.alpha), project=True, index=self.knn_index,
                         max_iter=self.max_iter, tol=float(self.tol), rank_cap=self._resolved_rank_cap(),
                         progress=False)

    # -- fit -------------------------------------------------------------
    def fit(self, images, labels=None) -> ReCLIP:
        """Adapt to ``images`` (no labels needed).

        Parameters
        ----------
        images : anything :meth:`modgap.Clip.encode_images` takes
            An ImageSet, a uint8 array ``[N, H, W, 3]``, a preprocessed float
            tensor ``[N, 3, H, W]``, a list of PIL images or of file paths.
            Files that cannot be decoded are found in the first pass and
            left out of the fit, with one warning; ``skipped_`` gives
            their positions.
        labels : int array ``[N]``, optional
            Only recorded: the accuracies in ``history_``. Nothing is chosen
            with them. (An ImageSet's own labels are not read; pass
            ``labels=ds.labels`` to monitor.)
        """
        from tqdm.auto import tqdm

        from ..metrics import centroid_distance

        self._validate_params()
        classnames, templates = self.classnames_, self.templates_
        kind, items = image_inputs(images)
        y = self._check_labels(labels, len(items))
        # in-memory images are resized once here, not on every pass
        kind, items = prepare_images(self.clip, kind, items)
        c = len(classnames)
        self._check_graph_size(len(items), c)
        show = show_progress(self.progress, len(items))
        device = self.device
        base = self.clip.model
        tok_all = tokenize_checked(self.clip, [t.format(cn) for cn in classnames for t in templates],
                                   "ReCLIP.fit: class prompts").to(device)
        tok_first = self.clip.tokenize([templates[0].format(cn) for cn in classnames]).to(device)
        n_t = len(templates)
        # the frozen features are the first pass over the images: files that cannot be
        # decoded are found there and left out of the whole fit
        unreadable = [] if kind == "paths" else None
        was_training = base.training
        try:
            with torch.no_grad():
                text0 = self._encode_prompts(base.eval(), tok_all, c, n_t)
            f0 = self._features(base, kind, items, "frozen features", show, unreadable)
        finally:
            base.train(was_training)
        items, skipped = self._drop_unreadable(items, unreadable, "ReCLIP.fit")
        if y is not None and len(skipped):
            y = np.delete(y, skipped)
        n = len(items)
        self._check_graph_size(n, c)

        schedule = default_schedule(self.clip.embed_dim, n)
        epochs = schedule["epochs"] if self.epochs is None else int(self.epochs)
        lr_visual = schedule["lr_visual"] if self.lr_visual is None else float(self.lr_visual)
        lr_text = schedule["lr_text"] if self.lr_text is None else float(self.lr_text)
        scale = float(self.logit_scale)

        v_model = copy.deepcopy(base).to(device).eval()
        t_model = copy.deepcopy(base).to(device).eval()
        v_params = visual_norm_parameters(v_model)
        t_params = text_norm_parameters(t_model)
        if not v_params:
            raise ValueError("the image encoder has no LayerNorm or BatchNorm parameters for ReCLIP-V to train")
        if not t_params:
            raise ValueError("the text encoder has no LayerNorm parameters for ReCLIP-T to train")
        _freeze_all_but(v_model, v_params)
        _freeze_all_but(t_model, t_params)
        opt_v = torch.optim.SGD([p for _, p in v_params], lr=lr_visual, momentum=float(self.momentum),
                                weight_decay=float(self.weight_decay))
        opt_t = torch.optim.SGD([p for _, p in t_params], lr=lr_text, momentum=float(self.momentum),
                                weight_decay=float(self.weight_decay))
        if self.precision is not None:
            scaler = grad_scaler_for(device, self.precision)
        else:
            fp16 = (self.amp and device.type == "cuda" and not torch.cuda.is_bf16_supported())
            scaler = torch.amp.GradScaler("cuda", enabled=fp16) if device.type == "cuda" else None

        gen = torch.Generator().manual_seed(int(self.seed))
        for stale in ("history_", "visual_model_"):
            self.__dict__.pop(stale, None)
        rows = []
        train_stats = {}
        zero_shot_logits = f0 @ text0.T
        zero_shot, previous = zero_shot_logits.argmax(1), None
        adapted = True
        diverged = snapshot = None
        bar = tqdm(range(epochs + 1), desc="ReCLIP", disable=not show)
        for epoch in bar:
            # (1) one pass without gradients, (2) label propagation in each branch
            fv_new = f0 if epoch == 0 else self._features(v_model, kind, items, f"epoch {epoch}: features", show)
            with torch.no_grad():
                t_all_new = self._encode_prompts(t_model, tok_all, c, n_t)
                t_first_new = self._encode_prompts(t_model, tok_first, c, 1)
            if epoch > 0:
                diverged = train_stats.get("diverged") or _not_finite(
                    {"ReCLIP-V's image features": fv_new, "ReCLIP-T's class embeddings": t_all_new})
                if diverged is not None:
                    # back to the weights the last row of history_ measured
                    restore_snapshot([v_model, t_model], snapshot)
                    diverged = self._divergence_message(diverged, epoch, lr_visual, lr_text)
                    break
            lp_v_new = self._propagate(fv_new, text0)
            centroids_new = lp_v_new.centroids(torch.cat([text0, fv_new]), fallback=text0)
            lp_t_new = self._propagate(f0, t_all_new)
            v_pl_new, t_pl_new = lp_v_new.image_labels.to(device), lp_t_new.image_labels.to(device)
            # every rank propagated the same embeddings; rank 0's labels hold for all (a GPU's
            # sparse sums need not give the same bits twice, and the ranks must agree)
            for t in (v_pl_new, t_pl_new, centroids_new):
                distributed.broadcast_(t)
            agree = v_pl_new == t_pl_new
            logits_v_new = scale * fv_new @ centroids_new.T
            logits_t_new = scale * f0 @ t_first_new.T
            row = self._row(epoch, y, v_pl_new, t_pl_new, agree, logits_v_new, logits_t_new, fv_new, f0, text0,
                            t_all_new, centroid_distance, train_stats)
            pred = (logits_v_new + logits_t_new).argmax(1)
            row.update(label_free_figures(pred, previous, zero_shot, v_pl_new, logits_v_new + logits_t_new))
            row["confident_agreement"] = confident_agreement(zero_shot_logits, v_pl_new, CONFIDENT_SHARE)
            previous = pred
            models = {"visual": v_model, "text": t_model}
            if epoch > 0 and row["class_balance"] < rows[0]["class_balance"] - float(self.max_balance_drop):
                # the pseudo labels collapse onto fewer classes: keep the epoch before
                self._report(rows, row, models)
                restore_snapshot([v_model, t_model], snapshot)
                break
            fv, t_all, t_first, centroids = fv_new, t_all_new, t_first_new, centroids_new
            v_pl, t_pl, logits_v, logits_t = v_pl_new, t_pl_new, logits_v_new, logits_t_new
            kept_epoch = epoch
            if epoch == 0 and row["confident_agreement"] < self.min_confident_agreement:
                # adaptation cannot help: keep the frozen model and its zero-shot classifier
                self._report(rows, row, models)
                centroids, t_first, fv, t_all = text0.clone(), text0.clone(), f0, text0.clone()
                adapted = False
                break
            if show:
                bar.set_postfix({k: f"{row[k]:.3f}" for k in ("agreement", "acc") if not math.isnan(row[k])})
            if not self._report(rows, row, models) or epoch == epochs:
                break
            snapshot = trainable_snapshot(v_model, t_model)
            # (3) one training pass on the images where the branches agree
            train_stats = self._train_pass(v_model, t_model, opt_v, opt_t, scaler, kind, items, f0, centroids,
                                           tok_first, v_pl, t_pl, agree, gen, scale, epoch + 1, show)
            # (4) ReCLIP-T's seeds and projection are rebuilt from its text encoder at the next evaluation
        self.history_["kept"] = self.history_["epoch"] == kept_epoch

        v_model.eval()
        t_model.eval()
        v_model.requires_grad_(False)
        t_model.requires_grad_(False)
        self.visual_model_ = v_model
        self.text_model_ = t_model
        self.epochs_ = epochs
        self.kept_epoch_ = kept_epoch
        self.adapted_ = adapted
        self.lr_visual_ = lr_visual
        self.lr_text_ = lr_text
        self.centroids_ = centroids.cpu().numpy()
        self.text_classifier_ = t_first.cpu().numpy()
        self.text_class_embeddings_ = t_all.cpu().numpy()
        self.class_embeddings_ = text0.cpu().numpy()
        self.pseudo_labels_v_ = v_pl.cpu().numpy()
        self.pseudo_labels_t_ = t_pl.cpu().numpy()
        self.labels_ = ((0.5 * (logits_v + logits_t)).argmax(1) if adapted else zero_shot).cpu().numpy()
        self.image_embeddings_ = fv.cpu().numpy()
        self.initial_image_embeddings_ = f0.cpu().numpy()
        self.skipped_ = skipped
        if not adapted:
            warnings.warn(
                f"ReCLIP: label propagation overturns the zero-shot labels of "
                f"{100 * (1 - rows[0]['confident_agreement']):.0f}% of the most confident images (confident "
                f"agreement {rows[0]['confident_agreement']:.3f} < min_confident_agreement="
                f"{self.min_confident_agreement:g}); self-training on its pseudo labels would likely lose "
                "accuracy. Nothing was trained: the model predicts as zero-shot does (adapted_ is False). "
                "min_confident_agreement=0 adapts regardless.",
                UserWarning, stacklevel=2)
        self._warn_if_collapsed(zero_shot_logits)
        self._end_of_divergence(diverged)
        return self

    def _divergence_message(self, what: str, epoch: int, lr_visual: float, lr_text: float) -> str:
        return (f"ReCLIP diverged: {what} during the training pass of epoch {epoch}; training stopped and "
                f"the branches hold the weights of epoch {epoch - 1}, the last row of history_. Lower the "
                f"learning rates (lr_visual={lr_visual:.3g}, lr_text={lr_text:.3g}).")

    def _warn_if_collapsed(self, zero_shot_logits) -> None:
        """A warning when the result puts nearly every image in one class
        though zero-shot did not: the sign of a learning rate far too large."""
        final = np.bincount(self.labels_, minlength=len(self.classnames_)).max() / len(self.labels_)
        start = np.bincount(zero_shot_logits.argmax(1).cpu().numpy(),
                            minlength=len(self.classnames_)).max() / len(self.labels_)
        if final >= 0.9 and start <= 0.6:
            import warnings

            warnings.warn(f"ReCLIP put {100 * final:.0f}% of the images in one class, where zero-shot put "
                          f"{100 * start:.0f}%: the self-training collapsed. Lower the learning rates "
                          f"(lr_visual={self.lr_visual_:.3g}, lr_text={self.lr_text_:.3g}) or train fewer epochs.",
                          RuntimeWarning, stacklevel=3)

    def _check_graph_size(self, n, c):
        if self.k >= n + c:
            raise ValueError(f"k={self.k} must be smaller than the number of graph nodes "
                             f"(images + classes = {n + c}); pass fewer neighbours or more images")

    def _row(self, epoch, y, v_pl, t_pl, agree, logits_v, logits_t, fv, f0, text0, t_all, gap, train_stats):
        nan = float("nan")
        row = {"epoch": epoch, "agreement": float(agree.float().mean())}
        if y is not None:
            yt = torch.as_tensor(y, device=v_pl.device)
            comb = 0.5 * (logits_v + logits_t)
            row.update(
                pl_acc_v=float((v_pl == yt).float().mean()),
                pl_acc_t=float((t_pl == yt).float().mean()),
                pl_acc_agreed=float((v_pl[agree] == yt[agree]).float().mean()) if bool(agree.any()) else nan,
                acc_v=float((logits_v.argmax(1) == yt).float().mean()),
                acc_t=float((logits_t.argmax(1) == yt).float().mean()),
                acc=float((comb.argmax(1) == yt).float().mean()),
            )
        else:
            row.update(pl_acc_v=nan, pl_acc_t=nan, pl_acc_agreed=nan, acc_v=nan, acc_t=nan, acc=nan)
        row.update(gap_v=gap(fv, text0), gap_t=gap(f0, t_all),
                   loss_v=train_stats.get("loss_v", nan), loss_t=train_stats.get("loss_t", nan),
                   trained=int(train_stats.get("trained", 0)))
        return row

    def _train_pass(self, v_model, t_model, opt_v, opt_t, scaler, kind, items, f0, centroids, tok_first,
                    v_pl, t_pl, agree, gen, scale, epoch, show):
        from tqdm.auto import tqdm

        n = len(items)
        order = torch.randperm(n, generator=gen)
        agree_cpu = agree.cpu()
        losses_v, losses_t, trained = [], [], 0
        v_model.eval()
        t_model.eval()
        batches = [order[s:s + self.batch_size] for s in range(0, n, self.batch_size)]
        batches = [sel for sel in (idx[agree_cpu[idx]] for idx in batches) if len(sel)]
        # under torchrun each rank trains on its share of every global batch; the
        # losses are sums over the share divided by the global batch, and the
        # gradients are summed over the ranks: one process's mean-loss step
        shares = [sel[slice(*distributed.shard_bounds(len(sel)))] for sel in batches]
        loaded = pixel_batches(self.clip, kind, items, shares)
        v_params = [p for p in v_model.parameters() if p.requires_grad]
        t_params = [p for p in t_model.parameters() if p.requires_grad]
        for sel, share, (_, x) in tqdm(zip(batches, shares, loaded), total=len(batches),
                                       desc=f"epoch {epoch}: training", disable=not show, leave=False):
            trained += len(sel)
            share_dev = share.to(f0.device)
            with torch.enable_grad():
                # ReCLIP-V: its image encoder against the centroid classifier
                opt_v.zero_grad(set_to_none=True)
                if len(share):
                    with self._autocast():
                        feat = v_model.encode_image(x)
                    logits = scale * F.normalize(feat.float(), dim=-1) @ centroids.T
                    loss_v = F.cross_entropy(logits, v_pl[share_dev], reduction="sum") / len(sel)
                else:
                    # an empty share still steps with the others: a zero loss on the trained weights
                    loss_v = sum(p.sum() for p in v_params) * 0.0
                self._backward(loss_v, scaler)
                distributed.sum_gradients(v_params)
                self._optimizer_step(opt_v, scaler)
                # ReCLIP-T: the frozen image features against the re-encoded first template
                opt_t.zero_grad(set_to_none=True)
                with self._autocast():
                    te = t_model.encode_text(tok_first)
                te = F.normalize(te.float(), dim=-1)
                logits = scale * f0[share_dev] @ te.T
                loss_t = F.cross_entropy(logits, t_pl[share_dev], reduction="sum") / len(sel)
                self._backward(loss_t, scaler)
                distributed.sum_gradients(t_params)
                self._optimizer_step(opt_t, scaler)
            loss_v, loss_t = distributed.sum_value(loss_v.item()), distributed.sum_value(loss_t.item())
            for name, loss in (("ReCLIP-V's loss", loss_v), ("ReCLIP-T's loss", loss_t)):
                if not math.isfinite(loss):
                    return {"diverged": f"{name} became {loss}", "trained": trained}
            losses_v.append(loss_v * len(sel))
            losses_t.append(loss_t * len(sel))
        nan = float("nan")
        return {"loss_v": sum(losses_v) / trained if trained else nan,
                "loss_t": sum(losses_t) / trained if trained else nan, "trained": trained}

    @staticmethod
    def _backward(loss, scaler):
        (scaler.scale(loss) if scaler is not None and scaler.is_enabled() else loss).backward()

    @staticmethod
    def _optimizer_step(opt, scaler):
        if scaler is not None and scaler.is_enabled():
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()

    # -- predict ---------------------------------------------------------
    _fitted_attr = "visual_model_"
    _saved_arrays = ("centroids_", "text_classifier_", "text_class_embeddings_", "class_embeddings_")
    _saved_scalars = ("classnames_", "templates_", "epochs_", "lr_visual_", "lr_text_", "diverged_", "adapted_",
                      "kept_epoch_")
    # settings of earlier versions that a saved run may still name
    _retired_params = ("min_balance",)

    def fitted_models(self) -> dict:
        """``{"visual": ReCLIP-V's model, "text": ReCLIP-T's model}``."""
        self._check_fitted()
        return {"visual": self.visual_model_, "text": self.text_model_}

    def _restore_models(self, models: dict) -> None:
        self.visual_model_, self.text_model_ = models["visual"], models["text"]
        # runs saved before these existed always adapted, and kept their last epoch
        self.adapted_ = True
        self.kept_epoch_ = None

    def _suffix(self, model_name: str) -> str:
        return f"reclip-{model_name}"

    def predict_logits(self, images, branch: str = "both") -> np.ndarray:
        """Logits ``[N, C]``: ``0.5 * (logits_T + logits_V)`` for
        ``branch="both"``, or one branch's (``"visual"``, ``"text"``).

        As in :meth:`modgap.Clip.encode_images`, the rows of image files
        that cannot be read are left out, with one warning naming them.
        """
        self._check_fitted()
        if branch not in ("both", "visual", "text"):
            raise ValueError(f"branch must be 'both', 'visual' or 'text', got {branch!r}")
        kind, items = image_inputs(images)
        return self._logits(kind, items, branch, "ReCLIP.predict")[0]

    def _logits(self, kind, items, branch, where) -> tuple[np.ndarray, np.ndarray]:
        """The logits of the readable images, and the positions of the others."""
        show = show_progress(self.progress, len(items))
        scale = float(self.logit_scale)
        heads = []
        if branch in ("both", "visual"):
            heads.append((self.visual_model_, self.centroids_, "ReCLIP-V features"))
        if branch in ("both", "text"):
            heads.append((self.text_model_, self.text_classifier_, "ReCLIP-T features"))
        out, skipped = 0.0, np.empty(0, dtype=np.int64)
        for i, (model, classifier, desc) in enumerate(heads):
            unreadable = [] if (kind == "paths" and i == 0) else None
            f = self._features(model, kind, items, desc, show, unreadable)
            if i == 0:
                items, skipped = self._drop_unreadable(items, unreadable, where, stacklevel=4)
            out = out + scale * f @ torch.as_tensor(classifier, device=f.device).T
        if branch == "both":
            out = 0.5 * out
        return out.cpu().numpy(), skipped

    def predict(self, images) -> np.ndarray:
        """Class indices ``[N]`` from :meth:`predict_logits`."""
        return self.predict_logits(images).argmax(1)

    def score(self, images, labels) -> float:
        """Top-1 accuracy of :meth:`predict` against ``labels`` (images that
        cannot be read are left out, with their labels)."""
        self._check_fitted()
        kind, items = image_inputs(images)
        y = self._check_labels(labels, len(items))
        logits, skipped = self._logits(kind, items, "both", "ReCLIP.score")
        return float((logits.argmax(1) == np.delete(y, skipped)).mean())

    def encode_images(self, images, branch: str = "visual") -> np.ndarray:
        """Normalised image embeddings from ReCLIP-V (``"visual"``) or the
        frozen encoder ReCLIP-T uses (``"text"``), ``[N, D]``; the rows of
        files that cannot be read are left out, with one warning."""
        self._check_fitted()
        if branch not in ("visual", "text"):
            raise ValueError(f"branch must be 'visual' or 'text', got {branch!r}")
        kind, items = image_inputs(images)
        show = show_progress(self.progress, len(items))
        model = self.visual_model_ if branch == "visual" else self.text_model_
        unreadable = [] if kind == "paths" else None
        f = self._features(model, kind, items, "features", show, unreadable)
        self._drop_unreadable(items, unreadable, "ReCLIP.encode_images")
        return f.cpu().numpy()


def run_reclip(clip, data, labels=None, classnames=None, templates=None, out=None, overwrite=False,
               **params) -> ReCLIP:
    """Fit ReCLIP in one call, for scripts and the command line.

    Parameters
    ----------
    clip : modgap.Clip or str
        A model, or a spec for :func:`modgap.load_model`.
    data : ImageSet or images
        An :class:`~modgap.data.ImageSet` supplies its own class names,
        templates and labels (the labels only fill in the accuracies of
        ``history_``); other images need ``classnames`` (and ``templates``).
    labels, classnames, templates : override the ImageSet's.
    out : path, optional
        Save the fitted estimator there (:meth:`ReCLIP.save`).
    **params : passed to :class:`ReCLIP` (``epochs``, ``lr_visual``, ``seed``, ...).

    Returns
    -------
    the fitted :class:`ReCLIP`; ``history_.iloc[[0, -1]]`` compares the start
    with the end.
    """
    from ..data.containers import ImageSet

    if isinstance(data, ImageSet):
        classnames = data.classnames if classnames is None else classnames
        templates = data.templates if templates is None else templates
        labels = data.labels if labels is None else labels
    if classnames is None:
        raise ValueError("classnames is required unless data is an ImageSet that names its classes")
    if templates is None or len(templates) == 0:
        templates = ("a photo of a {}.",)
    return run_estimator(ReCLIP, clip, (data,), {"labels": labels}, out=out, overwrite=overwrite,
                         classnames=classnames, templates=templates, **params)
