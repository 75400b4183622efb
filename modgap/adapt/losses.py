"""The training losses of CLIP-Refine and its baselines, as plain functions
of feature tensors, each testable on its own.

- :func:`rafa_loss` and :func:`sample_references`: random feature alignment
  (RaFA), pulling the image and the text feature of each pair towards one
  shared random vector drawn from the prior N(0, I).
- :func:`hycd_loss`: hybrid contrastive-distillation (HyCD), a KL divergence
  to a target that blends the identity (the true pairs) with a frozen
  teacher's softmax; :func:`self_kd_loss` is its ``alpha = 0`` case and
  :func:`hybrid_distillation` one direction of it on given logits.
- :func:`contrastive_loss`: the symmetric CLIP cross-entropy.

Paper: Yamaguchi et al., "Post-pre-training for Modality Alignment in
Vision-Language Foundation Models", CVPR 2025 (arXiv 2504.12717); reference
code GitHub ``yshinya6/clip-refine``. The scales follow the reference code,
not the paper's formulas where the two differ (each function says where).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..validation import check_features, check_number, check_same_shape

__all__ = [
    "contrastive_loss",
    "hybrid_distillation",
    "hycd_loss",
    "rafa_loss",
    "sample_references",
    "self_kd_loss",
]


def sample_references(n: int, dim: int, generator: torch.Generator | None = None, device=None,
                      dtype=torch.float32) -> torch.Tensor:
    """Draw RaFA's references: ``n`` vectors from the prior N(0, I) in ``dim``
    dimensions, one for each pair of a batch (row ``i`` serves both the image
    and the text of pair ``i``).

    Parameters
    ----------
    n, dim : int
        Batch size and embedding dimension.
    generator : torch.Generator, optional
        The source of randomness; pass one to make the draws reproducible.
        Its device decides where the numbers are drawn; the result is then
        moved to ``device``.
    device, dtype :
        Where and how the result is returned (default: the generator's
        device, float32).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    draw_on = generator.device if generator is not None else (device or "cpu")
    z = torch.randn(n, dim, generator=generator, device=draw_on, dtype=dtype)
    return z if device is None else z.to(device)


def rafa_loss(image_feat: torch.Tensor, text_feat: torch.Tensor, reference: torch.Tensor,
              normalize: bool = False) -> torch.Tensor:
    """Random feature alignment: ``mse(image, ref) + mse(text, ref)``.

    ``reference[i]`` is shared by the image and the text of pair ``i``; draw
    it fresh every step with :func:`sample_references`. Each mean squared
    error averages over the batch and the dimensions, as the reference code
    does; the paper writes ``1/2 (||z_img - z_ref||^2 + ||z_txt - z_ref||^2)``
    summed over dimensions, which is ``D / 2`` times this value.

    Parameters
    ----------
    image_feat, text_feat : [B, D] tensors
        By default the raw (un-normalised) encoder outputs, as the reference
        code uses them.
    reference : [B, D] tensor
        Draws from the prior.
    normalize : bool
        Project features and references onto the unit sphere first (then
        the prior is the uniform distribution on the sphere). Off by default.
    """
    check_features(image_feat, "image_feat")
    check_features(text_feat, "text_feat")
    check_features(reference, "reference")
    check_same_shape(image_feat=image_feat, text_feat=text_feat, reference=reference)
    if normalize:
        image_feat = F.normalize(image_feat, dim=-1)
        text_feat = F.normalize(text_feat, dim=-1)
        reference = F.normalize(reference, dim=-1)
    reference = reference.to(image_feat.dtype)
    return F.mse_loss(image_feat, reference) + F.mse_loss(text_feat, reference)


def hybrid_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, alpha: float = 0.5,
                        temperature: float = 1.0) -> torch.Tensor:
    """One direction of HyCD on a square logit matrix (row ``i`` scores query
    ``i`` against every candidate; the true match is the diagonal).

    The target of row ``i`` is ``alpha * onehot(i) + (1 - alpha) *
    softmax(teacher_logits[i] / T)``; the loss is ``KL(target || softmax(
    student_logits[i] / T))`` averaged over rows ("batchmean") times ``T^2``.
    ``alpha = 1`` gives the cross-entropy of ``student_logits / T`` with the
    diagonal labels (times ``T^2``); ``alpha = 0`` gives plain distillation.
    The teacher's logits are detached.
    """
    check_features(student_logits, "student_logits")
    check_features(teacher_logits, "teacher_logits")
    check_same_shape(student_logits=student_logits, teacher_logits=teacher_logits)
    if student_logits.shape[0] != student_logits.shape[1]:
        raise ValueError(f"logits must be square [B, B], got shape {tuple(student_logits.shape)}")
    alpha, temperature = _check_alpha_temperature(alpha, temperature)
    log_p = F.log_softmax(student_logits / temperature, dim=1)
    target = hybrid_target(teacher_logits, alpha, temperature).to(log_p.dtype)
    return F.kl_div(log_p, target, reduction="batchmean") * temperature ** 2


def _check_alpha_temperature(alpha, temperature) -> tuple[float, float]:
    return (check_number(alpha, "alpha", low=0.0, high=1.0),
            check_number(temperature, "temperature", low=0.0, low_open=True))


def hycd_loss(student_image: torch.Tensor, student_text: torch.Tensor, teacher_image: torch.Tensor,
              teacher_text: torch.Tensor, alpha: float = 0.5, temperature: float = 1.0) -> torch.Tensor:
    """Hybrid contrastive-distillation between a student and a frozen teacher.

    Logits are raw dot products ``image @ text.T`` of the features as given,
    with no logit scale (the reference code passes raw encoder outputs;
    pass normalised features and a small ``temperature`` for a cosine
    version). The image->text loss uses the rows, the text->image loss the
    transposed matrix; see :func:`hybrid_distillation` for one direction.
    Returns their average.

    Parameters
    ----------
    student_image, student_text : [B, D] tensors
        The features of the model being trained.
    teacher_image, teacher_text : [B, D] tensors
        The frozen teacher's features of the same batch (detached here).
    alpha : float in [0, 1]
        Weight of the true pairs in the target; ``0`` is self-distillation,
        ``1`` the contrastive cross-entropy.
    temperature : float > 0
        Softens both distributions; the loss is scaled by ``T^2``.
    """
    for name, x in (("student_image", student_image), ("student_text", student_text),
                    ("teacher_image", teacher_image), ("teacher_text", teacher_text)):
        check_features(x, name)
    check_same_shape(student_image=student_image, student_text=student_text,
                      teacher_image=teacher_image, teacher_text=teacher_text)
    s = student_image @ student_text.T
    t = (teacher_image @ teacher_text.T).detach()
    i2t = hybrid_distillation(s, t, alpha, temperature)
    t2i = hybrid_distillation(s.T, t.T, alpha, temperature)
    return (i2t + t2i) / 2


def self_kd_loss(student_image: torch.Tensor, student_text: torch.Tensor, teacher_image: torch.Tensor,
                 teacher_text: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Self-distillation: :func:`hycd_loss` with ``alpha = 0`` (the target is
    the teacher's softmax alone)."""
    return hycd_loss(student_image, student_text, teacher_image, teacher_text, alpha=0.0,
                     temperature=temperature)


def contrastive_loss(image_feat: torch.Tensor, text_feat: torch.Tensor, logit_scale,
                     normalize: bool = True) -> torch.Tensor:
    """The symmetric CLIP loss: cross-entropy of ``logit_scale * cos(image,
    text)`` with the diagonal as labels, image->text and text->image averaged.

    Parameters
    ----------
    image_feat, text_feat : [B, D] tensors
    logit_scale : float or 0-d tensor
        The multiplier itself (``model.logit_scale.exp()`` for an open_clip
        model), so that a trainable scale gets its gradient.
    normalize : bool
        Normalise the features first (the CLIP loss). The reference code's
        contrastive baseline multiplies raw encoder outputs by the scale,
        which for CLIP's raw feature norms gives logits hundreds of times too
        large; modgap normalises, as CLIP and open_clip do.
    """
    check_features(image_feat, "image_feat")
    check_features(text_feat, "text_feat")
    check_same_shape(image_feat=image_feat, text_feat=text_feat)
    if isinstance(logit_scale, torch.Tensor):
        if logit_scale.numel() != 1:
            raise ValueError(f"logit_scale must be a scalar, got shape {tuple(logit_scale.shape)}")
    elif not float(logit_scale) > 0:
        raise ValueError(f"logit_scale must be positive, got {logit_scale}")
    if normalize:
        image_feat = F.normalize(image_feat, dim=-1)
        text_feat = F.normalize(text_feat, dim=-1)
    logits = logit_scale * image_feat @ text_feat.T
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def hybrid_target(teacher_logits: torch.Tensor, alpha: float = 0.5, temperature: float = 1.0) -> torch.Tensor:
    """HyCD's target rows, ``alpha * I + (1 - alpha) * softmax(teacher / T)``,
    for a square logit matrix (what :func:`hybrid_distillation` fits the
    student to); each row sums to one."""
    check_features(teacher_logits, "teacher_logits")
    if teacher_logits.ndim != 2 or teacher_logits.shape[0] != teacher_logits.shape[1]:
        raise ValueError(f"teacher_logits must be square [B, B], got shape {tuple(teacher_logits.shape)}")
    alpha, temperature = _check_alpha_temperature(alpha, temperature)
    soft = F.softmax(teacher_logits.detach().float() / temperature, dim=1)
    eye = torch.eye(teacher_logits.shape[0], device=soft.device, dtype=soft.dtype)
    return alpha * eye + (1.0 - alpha) * soft
