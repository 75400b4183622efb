"""Modality-gap metrics: how far apart, how aligned, how separable, and how
useful the image and text embeddings of a CLIP model are.

Every function takes plain arrays ``[N, D]`` (numpy arrays or torch tensors,
on any device) and returns Python floats, numpy arrays or pandas objects.
Embeddings are L2-normalised inside a function wherever its definition lives
on the unit sphere, so raw and normalised inputs give the same figure. Work
is done in float64 on the CPU, so the figures are deterministic.

Two distances between the modality centroids are provided and named apart:

* :func:`centroid_distance`, the *gap distance* of Liang et al. (2022),
  ``||c_I - c_T||_2`` with ``c`` the mean of the normalised embeddings;
* :func:`centroid_mse`, the figure CLIP-Refine's code logs (Yamaguchi et al.,
  2025), ``||c_I - c_T||^2 / D``.

Two scale-free gap figures in [0, 1] are named apart too:

* :func:`relative_gap`, a correlation ratio: the between-modality share of
  the pooled variance, from the centroids and spreads alone (no pairing);
* :func:`relative_modality_gap`, the RMG of Schrodi et al. (2025): the
  distance of matched pairs against the distances within each modality.

:func:`gap_anatomy` and :func:`gap_split` say how the gap is made up: over
the embedding dimensions, and into a centroid shift and the rest.

Bad input (empty arrays, NaN or infinite entries, rows of zero norm,
dimension or pair-count mismatches, fewer than two classes) raises a
``ValueError`` that names the argument, never a silent NaN.

References
----------
Liang, Zhang, Kwon, Yeung, Zou. "Mind the Gap: Understanding the Modality
Gap in Multi-modal Contrastive Representation Learning". NeurIPS 2022.
Yamaguchi et al. "Post-pre-training for Modality Alignment in
Vision-Language Foundation Models" (CLIP-Refine). CVPR 2025, arXiv 2504.12717.
Wang, Isola. "Understanding Contrastive Representation Learning through
Alignment and Uniformity on the Hypersphere". ICML 2020.
Roy, Vetterli. "The effective rank: A measure of effective dimensionality".
EUSIPCO 2007.
Schrodi, Hoffmann, Argus, Fischer, Brox. "Two Effects, One Trigger: On the
Modality Gap, Object Bias, and Information Imbalance in Contrastive
Vision-Language Models". ICLR 2025.
Zhang, Sui, Yeung. "Connect, Collapse, Corrupt: Learning Cross-Modal Tasks
with Uni-Modal Data". ICLR 2024.
"""
from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch

from .validation import (
    check_embeddings,
    check_int_array,
    check_labels,
    check_number,
    check_pair,
    check_random_state,
    check_same_dim,
    check_vector,
    unit_rows,
)

__all__ = [
    "alignment",
    "centroid_distance",
    "centroid_mse",
    "check_embeddings",
    "class_silhouette",
    "dims_for_share",
    "effective_rank",
    "effective_rank_from_spectrum",
    "gap_anatomy",
    "gap_report",
    "gap_split",
    "gap_vector",
    "instance_gap",
    "linear_separability",
    "paired_cosine",
    "relative_gap",
    "relative_modality_gap",
    "retrieval_recall",
    "shift_along_gap",
    "shift_pair",
    "spectrum",
    "uniformity",
    "unpaired_cosine",
    "zero_shot_accuracy",
    "zero_shot_predict",
]

# rows x columns of one block of a similarity matrix held in memory at once
_BLOCK = 1 << 22


# -- input checks --------------------------------------------------------------
def _pair_index(n_images: int, n_texts: int, text_to_image, name: str = "text_to_image") -> np.ndarray:
    """For each text, the index of its image; one-to-one when ``text_to_image`` is None."""
    if text_to_image is None:
        if n_images != n_texts:
            raise ValueError(
                f"image_emb has {n_images} rows but text_emb has {n_texts}: paired figures need "
                "one text per image, or pass text_to_image saying which image each text belongs to"
            )
        return np.arange(n_texts)
    idx = check_int_array(text_to_image, name)
    if idx.shape != (n_texts,):
        raise ValueError(f"{name} must have one entry per row of text_emb ({n_texts}), got shape {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= n_images):
        raise ValueError(f"{name} holds image indices outside 0..{n_images - 1}")
    return idx


def _check_class_emb(class_emb, image: np.ndarray) -> np.ndarray:
    cls = check_embeddings(class_emb, "class_emb")
    if cls.shape[0] < 2:
        raise ValueError(
            "class_emb has a single class; zero-shot classification needs at least two class embeddings"
        )
    check_same_dim(image, cls, "image_emb", "class_emb")
    return unit_rows(cls, "class_emb")


def _subsample(x: np.ndarray, sample_size, rng: np.random.Generator, name: str = "sample_size"):
    if sample_size is None:
        return x
    if not isinstance(sample_size, Integral) or sample_size < 2:
        raise ValueError(f"{name} must be an integer >= 2 or None, got {sample_size!r}")
    if x.shape[0] <= sample_size:
        return x
    return x[np.sort(rng.choice(x.shape[0], size=int(sample_size), replace=False))]


# -- centroid figures -------------------------------------------------------------
def _centroid_gap(img: np.ndarray, txt: np.ndarray) -> np.ndarray:
    return img.mean(axis=0) - txt.mean(axis=0)


def centroid_distance(image_emb, text_emb) -> float:
    """Gap distance of Liang et al. (2022): ``|| mean(norm(img)) - mean(norm(txt)) ||_2``.

    The two sets need not have the same number of rows. 0 means the two
    centroids coincide; the largest possible value is 2 (each modality
    collapsed onto one point, the two points antipodal). Liang et al. report
    about 0.82 for CLIP ViT-B/32 on COCO val captions.

    See :func:`centroid_mse` for the squared, per-dimension form that
    CLIP-Refine's code logs.

    References
    ----------
    Liang et al., "Mind the Gap", NeurIPS 2022 (the "gap distance").
    """
    img, txt = check_pair(image_emb, text_emb)
    return float(np.linalg.norm(_centroid_gap(img, txt)))


def centroid_mse(image_emb, text_emb) -> float:
    """``||c_I - c_T||^2 / D``: the mean squared difference of the centroids
    of the normalised embeddings, as CLIP-Refine's code reports the gap.

    Equal to ``centroid_distance(...) ** 2 / D``; it depends on the
    embedding width D, so compare it only between models of the same width.

    References
    ----------
    Yamaguchi et al., "Post-pre-training for Modality Alignment in
    Vision-Language Foundation Models", CVPR 2025 (code: yshinya6/clip-refine).
    """
    img, txt = check_pair(image_emb, text_emb)
    gap = _centroid_gap(img, txt)
    return float(gap @ gap / gap.size)


def gap_vector(image_emb, text_emb):
    """The unit gap direction ``g = (c_I - c_T) / ||c_I - c_T||``.

    It points **from the text centroid to the image centroid**: adding
    ``g`` to a text embedding moves it toward the images. Returned as a
    float32 torch tensor ``[D]`` on ``image_emb``'s device when
    ``image_emb`` is a tensor, otherwise as a float64 numpy array ``[D]``.

    Raises ``ValueError`` when the two centroids coincide, for then the
    direction is undefined.

    References
    ----------
    Liang et al., "Mind the Gap", NeurIPS 2022, Table 1 (the shifting
    experiment moves embeddings along this direction).
    """
    img, txt = check_pair(image_emb, text_emb)
    g = _unit_gap(img, txt)
    if isinstance(image_emb, torch.Tensor):
        return torch.from_numpy(g.astype(np.float32)).to(image_emb.device)
    return g


def _unit_gap(img: np.ndarray, txt: np.ndarray) -> np.ndarray:
    gap = _centroid_gap(img, txt)
    norm = np.linalg.norm(gap)
    if norm <= 1e-12:
        raise ValueError(
            "image_emb and text_emb have the same centroid, so the gap direction is undefined; "
            "pass a direction explicitly"
        )
    return gap / norm


def relative_gap(image_emb, text_emb) -> float:
    """Share of the variance of the pooled normalised embeddings that the
    modality explains: a scale-free gap figure in [0, 1].

    With both modalities weighted equally, the total variance of the pooled
    set splits into a between-modality part ``||c_I - c_T||^2 / 4`` and a
    within-modality part ``(tr S_I + tr S_T) / 2`` (``S`` the population
    covariance of each normalised set). This returns

        between / (between + within),

    the multivariate correlation ratio eta^2 (Pearson 1905; the trace form
    of Fisher's between/within decomposition). 0 means the centroids
    coincide; 1 means each modality is a single point. Unlike
    :func:`centroid_distance`, it does not grow merely because the
    embeddings of each modality are more concentrated; it tells how large
    the gap is relative to the spread of the clouds.

    Not :func:`relative_modality_gap` (the RMG of Schrodi et al., 2025):
    that one needs the pairing and puts the distance of matched pairs,
    centroid shift and pair misalignment together, over itself plus the
    distances within each modality. This one sees only the centroid shift,
    so it does not change when the pairs are shuffled.

    References
    ----------
    Pearson, "On the general theory of skew correlation and non-linear
    regression", Drapers' Company Research Memoirs, 1905 (correlation ratio).
    Fisher, "The use of multiple measurements in taxonomic problems", Annals
    of Eugenics 7(2), 1936 (between- and within-group scatter).
    """
    img, txt = check_pair(image_emb, text_emb)
    return _relative_gap(img, txt)


def _relative_gap(img: np.ndarray, txt: np.ndarray) -> float:
    gap = _centroid_gap(img, txt)
    between = float(gap @ gap) / 4.0
    within = 0.5 * (img.var(axis=0).sum() + txt.var(axis=0).sum())
    total = between + within
    if total <= 1e-15:
        raise ValueError("image_emb and text_emb are all the same point; relative_gap is undefined")
    return float(between / total)


# -- pair figures -------------------------------------------------------------------
def paired_cosine(image_emb, text_emb, text_to_image=None) -> float:
    """Mean cosine similarity of matched (image, text) pairs.

    Pairs are row ``i`` with row ``i`` or, when ``text_to_image`` is given
    (one image index per text row, for several captions per image), text
    ``j`` with image ``text_to_image[j]``. Compare with
    :func:`unpaired_cosine`: the gap shows as both being far below 1.

    References
    ----------
    Radford et al., "Learning Transferable Visual Models From Natural
    Language Supervision" (CLIP), ICML 2021 (cosine similarity of pairs).
    """
    img, txt = check_pair(image_emb, text_emb)
    idx = _pair_index(len(img), len(txt), text_to_image)
    return float(np.einsum("ij,ij->i", img[idx], txt).mean())


def unpaired_cosine(image_emb, text_emb, text_to_image=None) -> float:
    """Mean cosine similarity of every (image, text) combination that is not
    a matched pair (see :func:`paired_cosine` for the pairing).

    It is the baseline against which :func:`paired_cosine` is read: a
    model can have low matched cosines and still retrieve well when the
    unmatched ones are lower still. Computed exactly, without the full
    similarity matrix, from ``sum_ij <x_i, y_j> = <sum_i x_i, sum_j y_j>``.

    References
    ----------
    Liang et al., "Mind the Gap", NeurIPS 2022 (cosine similarities of
    CLIP embeddings, matched and not).
    """
    img, txt = check_pair(image_emb, text_emb)
    idx = _pair_index(len(img), len(txt), text_to_image)
    n_unmatched = len(img) * len(txt) - len(txt)
    if n_unmatched == 0:
        raise ValueError("image_emb has a single row, so there are no unmatched pairs; pass more images")
    total = float(img.sum(axis=0) @ txt.sum(axis=0))
    matched = float(np.einsum("ij,ij->i", img[idx], txt).sum())
    return (total - matched) / n_unmatched


def alignment(image_emb, text_emb, alpha: float = 2.0, text_to_image=None) -> float:
    """Alignment loss of Wang & Isola (2020): ``E ||x - y||^alpha`` over
    matched pairs of normalised embeddings (lower is better aligned).

    For unit vectors and ``alpha=2`` this equals ``2 - 2 * paired_cosine``.

    References
    ----------
    Wang, Isola, "Understanding Contrastive Representation Learning through
    Alignment and Uniformity on the Hypersphere", ICML 2020 (the alignment loss).
    """
    if not isinstance(alpha, Real) or not alpha > 0:
        raise ValueError(f"alpha must be a positive number, got {alpha!r}")
    img, txt = check_pair(image_emb, text_emb)
    idx = _pair_index(len(img), len(txt), text_to_image)
    return float((np.linalg.norm(img[idx] - txt, axis=1) ** alpha).mean())


# -- the gap relative to the spread, and how it is made up -------------------------------
def _pair_diff_blocks(img: np.ndarray, txt: np.ndarray, idx: np.ndarray):
    """``img[idx] - txt`` in blocks of rows, so that no copy of the image set is made."""
    rows = max(1, _BLOCK // img.shape[1])
    for start in range(0, len(txt), rows):
        stop = min(start + rows, len(txt))
        yield img[idx[start:stop]] - txt[start:stop]


def _pair_sq_distances(img: np.ndarray, txt: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.concatenate([np.einsum("ij,ij->i", z, z) for z in _pair_diff_blocks(img, txt, idx)])


def _offdiag_distance(x: np.ndarray) -> float:
    """Mean of ``(1 - cos) / 2`` over ordered pairs of distinct unit rows, from
    ``sum_{i != j} <x_i, x_j> = ||sum_i x_i||^2 - sum_i ||x_i||^2``."""
    n = len(x)
    s = x.sum(axis=0)
    cross = float(s @ s) - float(np.einsum("ij,ij->", x, x))
    return max(0.0, (1.0 - cross / (n * (n - 1))) / 2.0)


def _check_two_rows(img: np.ndarray, txt: np.ndarray, what: str) -> None:
    for x, name in ((img, "image_emb"), (txt, "text_emb")):
        if len(x) < 2:
            raise ValueError(f"{name} has {len(x)} row; {what} compares distinct rows within each modality, "
                             "so it needs at least 2")


def relative_modality_gap(image_emb, text_emb, text_to_image=None) -> float:
    """Relative modality gap (RMG) of Schrodi et al. (2025): the distance of
    matched pairs measured against the distances within each modality, in [0, 1].

    With ``d(a, b) = 1 - (cos(a, b) + 1) / 2`` (in [0, 1]) this returns

        RMG = m / (m + (d_II + d_TT) / 2),

    ``m`` the mean ``d`` over matched pairs (text ``j`` with image
    ``text_to_image[j]``, or row ``i`` with row ``i``), ``d_II`` the mean
    ``d`` over all ordered pairs of distinct images and ``d_TT`` the same over
    distinct texts. Why relative: an absolute figure such as
    :func:`centroid_distance` also changes with how spread out each modality
    is, so RMG reads the pair distance against that spread, which lets
    models with differently shaped clouds be compared. 0 means every text
    sits on its image.

    The within-modality means are exact and cost O(N D), without the N x N
    similarity matrix, from ``sum_{i != j} <x_i, x_j> = ||sum_i x_i||^2 - N``
    for unit rows, so a million embeddings are fine. ``m`` is computed as
    ``||x - y||^2 / 4``, which equals ``d`` on unit vectors and is exactly 0
    for identical rows.

    Departure from the authors' code (``compute_rmg`` in
    lmb-freiburg/two-effects-one-trigger): it floors the mean matched
    distance, setting it to 1e-3 when it is not positive; here it is not
    floored, so RMG is exactly 0 when every text equals its image.

    Not :func:`relative_gap`: that one is a correlation ratio, the
    between-modality share of the pooled variance, computed from the
    centroids and the spread of each modality with no use of the pairing.
    RMG's numerator is the
    distance of matched pairs, which holds the centroid shift *and* the
    misalignment of each pair (see :func:`gap_split`), so shuffling which
    text goes with which image raises RMG but leaves ``relative_gap`` as it is.

    Parameters
    ----------
    image_emb : array [N, D], N >= 2
    text_emb : array [M, D], M >= 2
    text_to_image : int array [M] or None
        For several captions per image, the image index of every text.

    References
    ----------
    Schrodi, Hoffmann, Argus, Fischer, Brox. "Two Effects, One Trigger: On
    the Modality Gap, Object Bias, and Information Imbalance in Contrastive
    Vision-Language Models". ICLR 2025 (the relative modality gap; code:
    lmb-freiburg/two-effects-one-trigger).
    """
    img, txt = check_pair(image_emb, text_emb)
    idx = _pair_index(len(img), len(txt), text_to_image)
    _check_two_rows(img, txt, "relative_modality_gap")
    return _rmg(img, txt, idx)


def _rmg(img: np.ndarray, txt: np.ndarray, idx: np.ndarray) -> float:
    m = float(_pair_sq_distances(img, txt, idx).mean()) / 4.0
    total = m + 0.5 * (_offdiag_distance(img) + _offdiag_distance(txt))
    if total <= 1e-15:
        raise ValueError("image_emb and text_emb are all the same point; relative_modality_gap is undefined")
    return m / total


def instance_gap(image_emb, text_emb, text_to_image=None) -> float:
    """Instance-wise L2 gap of Schrodi et al. (2025): the mean over texts of
    ``||normalize(image of text j) - normalize(text j)||_2``, in [0, 2].

    Where :func:`centroid_distance` compares the two clouds as wholes, this
    looks at each pair, so it also counts pairs that are far apart even when
    the centroids coincide. It equals :func:`alignment` with ``alpha=1``.
    Pairs are as in :func:`paired_cosine`.

    It is an absolute distance; :func:`relative_modality_gap` scales the
    pair distance by the spread within each modality, and
    :func:`relative_gap` is the between-modality share of the pooled
    variance (no pairing).

    References
    ----------
    Schrodi et al., "Two Effects, One Trigger", ICLR 2025 (the instance-wise
    L2 distance, ``l2_instancewise`` in lmb-freiburg/two-effects-one-trigger).
    """
    img, txt = check_pair(image_emb, text_emb)
    idx = _pair_index(len(img), len(txt), text_to_image)
    return float(np.sqrt(_pair_sq_distances(img, txt, idx)).mean())


def gap_anatomy(image_emb, text_emb) -> pd.DataFrame:
    """How the squared centroid gap ``||c_I - c_T||^2`` spreads over the
    embedding dimensions (``c`` the mean of the normalised embeddings).

    Schrodi et al. (2025) find that in CLIP models a few embedding
    dimensions carry most of the gap; this table shows whether a model (or
    a fine-tuned one) does the same. It depends on the basis: a rotation of
    the space changes it, a permutation of the dimensions only relabels it.

    Returns
    -------
    pandas.DataFrame
        One row per dimension, sorted by ``share``, largest first (ties by
        dimension), with columns ``dim`` (the index of the dimension),
        ``gap`` (the signed component ``c_I - c_T``), ``share``
        (``gap^2 / sum gap^2``; they sum to 1) and ``cumulative`` (the
        running sum of ``share``). See :func:`dims_for_share`.

    Raises ``ValueError`` when the two centroids coincide, for then there is
    no gap to split.

    References
    ----------
    Schrodi et al., "Two Effects, One Trigger: On the Modality Gap, Object
    Bias, and Information Imbalance in Contrastive Vision-Language Models",
    ICLR 2025 (a few embedding dimensions drive the gap).
    """
    img, txt = check_pair(image_emb, text_emb)
    return _anatomy(_centroid_gap(img, txt))


def _anatomy(gap: np.ndarray) -> pd.DataFrame:
    sq = gap * gap
    if not sq.sum() > 1e-24:
        raise ValueError("image_emb and text_emb have the same centroid, so there is no gap to split "
                         "over the dimensions")
    order = np.argsort(-sq, kind="stable")
    cum = np.cumsum(sq[order])
    return pd.DataFrame({
        "dim": order.astype(np.int64),
        "gap": gap[order],
        "share": sq[order] / cum[-1],
        "cumulative": cum / cum[-1],
    })


def dims_for_share(anatomy, fraction: float) -> int:
    """How many of the largest dimensions of :func:`gap_anatomy` carry
    ``fraction`` of the squared centroid gap: the smallest k whose k
    largest shares add up to at least ``fraction`` (up to rounding, 1e-9).

    A small count for ``fraction=0.9`` against a width of hundreds is the
    "few dimensions drive the gap" finding of Schrodi et al. (2025).

    Parameters
    ----------
    anatomy : pandas.DataFrame
        The table of :func:`gap_anatomy` (in any row order).
    fraction : float in (0, 1]

    References
    ----------
    Schrodi et al., "Two Effects, One Trigger", ICLR 2025.
    """
    if not isinstance(anatomy, pd.DataFrame):
        raise TypeError(f"anatomy must be the DataFrame returned by gap_anatomy, got {type(anatomy).__name__}")
    if "share" not in anatomy.columns or anatomy.empty:
        raise ValueError("anatomy has no 'share' column or no rows; pass the DataFrame returned by gap_anatomy")
    f = check_number(fraction, "fraction", low=0.0, high=1.0, low_open=True)
    shares = pd.to_numeric(anatomy["share"], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(shares).all() or (shares < 0).any():
        raise ValueError("anatomy's share column must hold finite non-negative numbers; pass the output "
                         "of gap_anatomy")
    return _dims_for_share(np.cumsum(np.sort(shares)[::-1]), f)


def _dims_for_share(cum: np.ndarray, fraction: float) -> int:
    reach = cum >= fraction - 1e-9
    if not reach.any():
        raise ValueError(f"anatomy's shares add up to only {cum[-1]:.6g}, short of fraction={fraction:g}; "
                         "pass the whole table of gap_anatomy")
    return int(np.argmax(reach)) + 1


def gap_split(image_emb, text_emb, text_to_image=None) -> dict[str, float]:
    """The exact split of the mean squared distance of matched pairs into
    the centroid shift and what remains after centring each modality.

    With ``x_j`` the normalised image of text ``j``, ``y_j`` the normalised
    text, and ``c_I``, ``c_T`` their means over the matched rows (an image
    with several captions counts once per caption):

        E ||x_j - y_j||^2 = ||c_I - c_T||^2 + E ||(x_j - c_I) - (y_j - c_T)||^2.

    Returns
    -------
    dict
        ``total`` (the left side, :func:`alignment` with ``alpha=2``),
        ``centroid`` (``||c_I - c_T||^2``: what a shift of each modality by a
        constant vector, such as subtracting each modality's mean, can
        remove), ``distribution`` (what remains once both are centred: pairs
        that disagree beyond the shift) and ``centroid_share``
        (``centroid / total``; 0 when ``total`` is 0, as there is then no
        gap to remove).

    Liang et al. (2022) close the gap by shifting along the centroid
    difference, and Zhang et al. (2024) remove it by centring each modality;
    the ``centroid`` part is what such a step can gain, the ``distribution``
    part is out of its reach.

    References
    ----------
    Liang et al., "Mind the Gap", NeurIPS 2022 (shifting along the gap).
    Zhang, Sui, Yeung. "Connect, Collapse, Corrupt: Learning Cross-Modal
    Tasks with Uni-Modal Data". ICLR 2024 (removing the gap by mean centring).
    """
    img, txt = check_pair(image_emb, text_emb)
    idx = _pair_index(len(img), len(txt), text_to_image)
    return _gap_split(img, txt, idx)


def _gap_split(img: np.ndarray, txt: np.ndarray, idx: np.ndarray) -> dict[str, float]:
    m = len(txt)
    total = 0.0
    shift = np.zeros(img.shape[1])
    for z in _pair_diff_blocks(img, txt, idx):
        total += float(np.einsum("ij,ij->", z, z))
        shift += z.sum(axis=0)
    total /= m
    shift /= m
    rest = 0.0
    for z in _pair_diff_blocks(img, txt, idx):
        zc = z - shift
        rest += float(np.einsum("ij,ij->", zc, zc))
    centroid = float(shift @ shift)
    return {
        "total": total,
        "centroid": centroid,
        "distribution": rest / m,
        "centroid_share": centroid / total if total > 0 else 0.0,
    }


def uniformity(emb, t: float = 2.0, sample_size: int | None = None, random_state=0) -> float:
    """Uniformity loss of Wang & Isola (2020):
    ``log mean_{i<j} exp(-t ||x_i - x_j||^2)`` over normalised embeddings.

    More negative is more uniform on the sphere; ``-4t`` is the floor for two
    antipodal points and ``0`` means every row is the same point.

    Parameters
    ----------
    emb : array [N, D], N >= 2
    t : float, default 2
    sample_size : int or None
        Use this many rows drawn without replacement (seeded by
        ``random_state``) instead of all N; the cost is O(N^2 D).
    random_state : int, numpy Generator or None

    References
    ----------
    Wang, Isola, ICML 2020 (the uniformity loss).
    """
    if not isinstance(t, Real) or not t > 0:
        raise ValueError(f"t must be a positive number, got {t!r}")
    x = unit_rows(check_embeddings(emb, "emb", min_rows=2), "emb")
    x = _subsample(x, sample_size, check_random_state(random_state))
    return _uniformity(x, float(t))


def _uniformity(x: np.ndarray, t: float) -> float:
    n = len(x)
    rows = max(1, _BLOCK // n)
    parts = []
    for start in range(0, n - 1, rows):
        stop = min(start + rows, n - 1)
        sq = np.clip(2.0 - 2.0 * (x[start:stop] @ x.T), 0.0, 4.0)
        upper = np.arange(n)[None, :] > np.arange(start, stop)[:, None]
        v = -t * sq[upper]
        m = v.max()
        parts.append(m + np.log(np.exp(v - m).sum()))
    parts = np.asarray(parts)
    m = parts.max()
    log_sum = m + np.log(np.exp(parts - m).sum())
    return float(log_sum - np.log(n * (n - 1) / 2.0))


def linear_separability(image_emb, text_emb, test_size: float = 0.25, C: float = 1.0,
                        sample_size: int | None = None, random_state=0) -> float:
    """Held-out accuracy of a logistic regression that tells normalised image
    embeddings from normalised text embeddings.

    0.5 (with equal counts) means the modalities cannot be told apart by a
    hyperplane; 1.0 means a clean split. The split is stratified and
    seeded, and the fit is deterministic.

    Parameters
    ----------
    test_size : float in (0, 1)
        Held-out share of each modality.
    C : float
        Inverse L2 strength of scikit-learn's ``LogisticRegression``.
    sample_size : int or None
        At most this many rows of each modality (drawn with the seed).
    random_state : int

    References
    ----------
    Alain, Bengio, "Understanding intermediate layers using linear
    classifier probes", arXiv 1610.01644, 2016 (linear probes); Liang et
    al., "Mind the Gap", NeurIPS 2022 (the modalities occupy separate
    regions); scikit-learn's ``LogisticRegression``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    if not isinstance(test_size, Real) or not 0 < test_size < 1:
        raise ValueError(f"test_size must be a fraction in (0, 1), got {test_size!r}")
    if not isinstance(C, Real) or not C > 0:
        raise ValueError(f"C must be a positive number, got {C!r}")
    if random_state is not None and not isinstance(random_state, Integral):
        raise ValueError(f"random_state must be an int or None, got {random_state!r}")
    img, txt = check_pair(image_emb, text_emb)
    for x, name in ((img, "image_emb"), (txt, "text_emb")):
        if len(x) < 4:
            raise ValueError(f"{name} has {len(x)} rows; linear_separability needs at least 4 per modality")
    rng = check_random_state(random_state)
    img = _subsample(img, sample_size, rng)
    txt = _subsample(txt, sample_size, rng)
    X = np.vstack([img, txt])
    y = np.r_[np.ones(len(img), dtype=np.int64), np.zeros(len(txt), dtype=np.int64)]
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, stratify=y, random_state=random_state)
    clf = LogisticRegression(C=C, max_iter=2000)
    clf.fit(X_tr, y_tr)
    return float((clf.predict(X_te) == y_te).mean())


def class_silhouette(emb, labels, sample_size: int | None = 2000, random_state=0) -> float:
    """How tightly embeddings of one class gather, apart from the other
    classes: the mean silhouette (Rousseeuw, 1987) of the normalised rows
    grouped by ``labels``, under cosine distance. 1 is tight, well separated
    classes; 0 classes that overlap; below 0 rows closer to another class.

    Parameters
    ----------
    emb : array [N, D]
    labels : int array [N], at least two classes present
    sample_size : int or None, default 2000
        Score this many rows drawn without replacement (seeded by
        ``random_state``) instead of all N; the cost is O(N^2 D).
    random_state : int, numpy Generator or None
    """
    from sklearn.metrics import silhouette_score

    x = unit_rows(check_embeddings(emb, "emb", min_rows=2), "emb")
    lab = check_int_array(labels, "labels")
    if lab.shape != (len(x),):
        raise ValueError(f"labels has shape {lab.shape} but emb has {len(x)} rows; pass one label per row")
    present = np.unique(lab)
    if len(present) < 2:
        raise ValueError(f"labels holds {len(present)} class; the silhouette needs rows of at least two classes")
    rng = check_random_state(random_state)
    if sample_size is not None and len(x) > int(sample_size):
        keep = rng.choice(len(x), int(sample_size), replace=False)
        x, lab = x[keep], lab[keep]
        if len(np.unique(lab)) < 2:
            raise ValueError("the sample holds one class only; raise sample_size")
    return float(silhouette_score(x, lab, metric="cosine"))


# -- spectrum -----------------------------------------------------------------------
def spectrum(emb, normalize: bool = True) -> np.ndarray:
    """Eigenvalues of the covariance matrix of ``emb`` (``ddof=1``), largest
    first, length D (zeros past rank N - 1).

    Their decay shows how many directions the embeddings really use (the
    "cone effect" is a fast decay). With ``normalize=True`` (default) the
    rows are L2-normalised first. See :func:`effective_rank` for a single
    number.

    References
    ----------
    Liang et al., "Mind the Gap", NeurIPS 2022 (cone effect); Jing et al.,
    "Understanding Dimensional Collapse in Contrastive Self-supervised
    Learning", ICLR 2022 (the singular-value spectrum plot).
    """
    x = check_embeddings(emb, "emb", min_rows=2)
    if normalize:
        x = unit_rows(x, "emb")
    return _spectrum(x)


def _spectrum(x: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=0)
    s = np.linalg.svd(xc, compute_uv=False)
    ev = np.zeros(x.shape[1])
    ev[: len(s)] = s ** 2 / (len(x) - 1)
    return ev


def effective_rank(emb, normalize: bool = True) -> float:
    """Effective rank of Roy & Vetterli (2007): ``exp(H(p))`` with ``p`` the
    singular values of the centred data (square roots of :func:`spectrum`)
    divided by their sum, and ``H`` the Shannon entropy.

    It lies between 1 and ``min(N - 1, D)``; data spread evenly over k
    orthogonal directions give exactly k.

    References
    ----------
    Roy, Vetterli, "The effective rank: A measure of effective
    dimensionality", EUSIPCO 2007.
    """
    x = check_embeddings(emb, "emb", min_rows=2)
    if normalize:
        x = unit_rows(x, "emb")
    return effective_rank_from_spectrum(_spectrum(x))


def effective_rank_from_spectrum(ev) -> float:
    """:func:`effective_rank` from eigenvalues :func:`spectrum` has already
    computed (no second decomposition)."""
    ev = np.asarray(ev, dtype=np.float64)
    s = np.sqrt(np.clip(ev, 0.0, None))
    total = s.sum()
    if total <= 1e-12:
        raise ValueError("emb has no variance (every row is the same point); its effective rank is undefined")
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


# -- zero-shot and retrieval ------------------------------------------------------
def zero_shot_predict(image_emb, class_emb) -> np.ndarray:
    """CLIP zero-shot predictions: for each image the index of the class
    embedding of highest cosine similarity (int64 array ``[N]``).

    ``class_emb`` ``[C, D]``, C >= 2, is typically
    :meth:`modgap.Clip.class_embeddings` (prompts averaged per class).

    References
    ----------
    Radford et al., "Learning Transferable Visual Models From Natural
    Language Supervision", ICML 2021 (zero-shot transfer).
    """
    img = unit_rows(check_embeddings(image_emb, "image_emb"), "image_emb")
    cls = _check_class_emb(class_emb, img)
    return _predict(img, cls)


def _predict(img: np.ndarray, cls: np.ndarray) -> np.ndarray:
    return np.argmax(img @ cls.T, axis=1).astype(np.int64)


def zero_shot_accuracy(image_emb, class_emb, labels) -> float:
    """Share of images whose :func:`zero_shot_predict` class equals ``labels``.

    ``labels`` holds a class index (a row of ``class_emb``) per image; a set
    whose images all share one label is allowed, but ``class_emb`` needs at
    least two rows.

    References
    ----------
    Radford et al., ICML 2021 (zero-shot transfer).
    """
    img = unit_rows(check_embeddings(image_emb, "image_emb"), "image_emb")
    cls = _check_class_emb(class_emb, img)
    lab = check_labels(labels, len(img), len(cls))
    return float((_predict(img, cls) == lab).mean())


def _check_ks(k) -> tuple[int, ...]:
    ks = (k,) if isinstance(k, Integral) else tuple(k)
    if not ks or not all(isinstance(v, Integral) and v >= 1 for v in ks):
        raise ValueError(f"k must be a positive integer or a sequence of them, got {k!r}")
    return tuple(sorted({int(v) for v in ks}))


def retrieval_recall(image_emb, text_emb, k=(1, 5, 10), text_to_image=None) -> dict[str, float]:
    """Recall@k of cross-modal retrieval by cosine similarity, both ways.

    * ``"i2t_R@k"`` (image to text): the share of images for which at least
      one of their own texts is among the k most similar texts;
    * ``"t2i_R@k"`` (text to image): the share of texts whose image is among
      the k most similar images.

    Pairs are row ``i`` with row ``i``, or given by ``text_to_image`` (one
    image index per text, for several captions per image as in COCO); then
    every image needs at least one text. Ties are counted against the query
    (a wrong candidate scoring exactly as high as the right one ranks ahead
    of it), so collapsed embeddings never score well. The similarity matrix
    is computed in blocks, so large sets fit in memory.

    Texts that repeat verbatim embed identically, so they tie: an image
    whose caption also belongs to other images finds those first under this
    rule, and the figure is decided by how ties are counted (in the
    generated world most captions occur more than once). CLIP_benchmark
    (``zeroshot_retrieval.evaluate``) breaks ties by position instead; with
    unique texts the two give the same recall (a test checks it), with
    repeated ones modgap's is the lower, the one that cannot reward
    collapse.

    References
    ----------
    Karpathy, Fei-Fei, "Deep Visual-Semantic Alignments for Generating Image
    Descriptions", CVPR 2015 (R@k on COCO/Flickr with five captions per
    image); Radford et al., ICML 2021 (zero-shot retrieval).
    """
    ks = _check_ks(k)
    img, txt = check_pair(image_emb, text_emb)
    idx = _pair_index(len(img), len(txt), text_to_image)
    return _retrieval(img, txt, idx, ks)


def _retrieval(img: np.ndarray, txt: np.ndarray, idx: np.ndarray, ks) -> dict[str, float]:
    n, m = len(img), len(txt)
    counts = np.bincount(idx, minlength=n)
    if (counts == 0).any():
        raise ValueError(
            f"text_to_image leaves {int((counts == 0).sum())} image(s) without a text "
            f"(first: image {int(np.flatnonzero(counts == 0)[0])}); drop those images or add captions"
        )
    i2t_rank = np.empty(n, dtype=np.int64)
    rows = max(1, _BLOCK // m)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        sim = img[start:stop] @ txt.T
        own = idx[None, :] == np.arange(start, stop)[:, None]
        best = np.where(own, sim, -np.inf).max(axis=1)
        i2t_rank[start:stop] = ((sim >= best[:, None]) & ~own).sum(axis=1)
    t2i_rank = np.empty(m, dtype=np.int64)
    rows = max(1, _BLOCK // n)
    for start in range(0, m, rows):
        stop = min(start + rows, m)
        sim = txt[start:stop] @ img.T
        right = sim[np.arange(stop - start), idx[start:stop]]
        t2i_rank[start:stop] = (sim >= right[:, None]).sum(axis=1) - 1
    out = {}
    for v in ks:
        out[f"i2t_R@{v}"] = float((i2t_rank < v).mean())
    for v in ks:
        out[f"t2i_R@{v}"] = float((t2i_rank < v).mean())
    return out


# -- the embedding-shift experiment -------------------------------------------------
def shift_pair(image_emb: np.ndarray, text_emb: np.ndarray, delta: float, direction: np.ndarray,
               names=("images", "texts")) -> tuple[np.ndarray, np.ndarray]:
    """The embedding-shift step of Liang et al.: images moved by
    ``-delta/2`` and texts by ``+delta/2`` along the unit ``direction``
    (pointing from the texts to the images), each row normalised again.
    Inputs are unit-length float arrays; a row shifted onto the origin is an
    error."""
    img_s = image_emb - 0.5 * delta * direction
    txt_s = text_emb + 0.5 * delta * direction
    for x, what in ((img_s, names[0]), (txt_s, names[1])):
        if (np.linalg.norm(x, axis=1) < 1e-12).any():
            raise ValueError(
                f"delta={delta:g} shifts some {what} onto the origin, where they cannot be normalised; "
                "leave that delta out"
            )
    return (img_s / np.linalg.norm(img_s, axis=1, keepdims=True),
            txt_s / np.linalg.norm(txt_s, axis=1, keepdims=True))


def shift_along_gap(image_emb, class_emb, labels, deltas=None, direction=None) -> pd.DataFrame:
    """Mind the Gap's embedding-shift experiment on a zero-shot task.

    For each ``delta``, with ``g`` the unit gap direction (pointing from
    text to image):

        text'  = normalize(text  + delta / 2 * g)
        image' = normalize(image - delta / 2 * g)

    and the zero-shot accuracy and the gap distance of the shifted
    embeddings are recorded. Positive deltas move the modalities toward each
    other (about ``delta = centroid_distance`` closes the gap), negative
    deltas apart.

    Parameters
    ----------
    image_emb : array [N, D]
    class_emb : array [C, D], C >= 2
        The text side: one embedding per class.
    labels : int array [N]
    deltas : sequence of float, default ``-5, -4.75, ..., 5`` (Liang et al.'s range)
    direction : array [D] or None
        The shift direction (normalised here). By default
        :func:`gap_vector` of ``image_emb`` and ``class_emb``; Liang et al.
        also use the direction measured on a paired caption set, e.g.
        ``gap_vector(pair_images, pair_captions)``.

    Returns
    -------
    pandas.DataFrame
        One row per delta, in the given order, with columns ``delta``,
        ``accuracy``, ``centroid_distance`` (shifted images against shifted
        class embeddings: the gap to the class prompts, not to captions)
        and ``centroid_mse``; ``attrs["n_images"]`` holds the number of
        images, so that a plot can say how many images a point of accuracy is.

    References
    ----------
    Liang et al., "Mind the Gap", NeurIPS 2022, Table 1
    (code: Weixin-Liang/Modality-Gap).
    """
    img = unit_rows(check_embeddings(image_emb, "image_emb"), "image_emb")
    cls = _check_class_emb(class_emb, img)
    lab = check_labels(labels, len(img), len(cls))
    if deltas is None:
        deltas = np.linspace(-5.0, 5.0, 41)
    deltas = np.atleast_1d(np.asarray(deltas, dtype=np.float64))
    if deltas.ndim != 1 or deltas.size == 0:
        raise ValueError("deltas must be a non-empty 1-D sequence of numbers")
    if not np.isfinite(deltas).all():
        raise ValueError("deltas has NaN or infinite entries")
    if direction is None:
        g = _unit_gap(img, cls)
    else:
        g = check_vector(direction, "direction")
        if g.size != img.shape[1]:
            raise ValueError(f"direction has {g.size} entries but the embeddings have dimension {img.shape[1]}")
        norm = np.linalg.norm(g)
        if norm == 0:
            raise ValueError("direction is the zero vector; pass a non-zero direction")
        g = g / norm
    rows = []
    for d in deltas:
        img_s, cls_s = shift_pair(img, cls, d, g, names=("images", "class embeddings"))
        gap = _centroid_gap(img_s, cls_s)
        rows.append({
            "delta": float(d),
            "accuracy": float((_predict(img_s, cls_s) == lab).mean()),
            "centroid_distance": float(np.linalg.norm(gap)),
            "centroid_mse": float(gap @ gap / gap.size),
        })
    table = pd.DataFrame(rows, columns=["delta", "accuracy", "centroid_distance", "centroid_mse"])
    table.attrs["n_images"] = len(img)
    return table


# -- all at once ---------------------------------------------------------------------
def gap_report(image_emb, text_emb, *, text_to_image=None, class_emb=None, labels=None,
               zero_shot_image_emb=None, name: str = "model", k: Sequence[int] = (1, 5, 10),
               sample_size: int | None = 5000, random_state=0) -> pd.Series:
    """Every gap figure of this module for one model, as a pandas Series.

    Reports from several models line up into a comparison table:
    ``pd.DataFrame([gap_report(i1, t1, name="CLIP"), gap_report(i2, t2, name="CLIP-Refine")])``
    (rows are models).

    Parameters
    ----------
    image_emb, text_emb : arrays [N, D] and [M, D]
        A paired set: row i with row i, or as given by ``text_to_image``.
    text_to_image : int array [M] or None
        For several captions per image, the image index of every text.
    class_emb, labels : optional, together
        A zero-shot task (class embeddings [C, D] and the class index of each
        image); adds ``zero_shot_accuracy``.
    zero_shot_image_emb : array or None
        The images ``labels`` refers to, when they are not ``image_emb``.
    name : str
        The Series name (the row label in a comparison table).
    k : recall cut-offs for :func:`retrieval_recall`.
    sample_size : int or None
        Rows per modality used by :func:`uniformity` and
        :func:`linear_separability` (both cost more than linear time).
    random_state : int

    Returns
    -------
    pandas.Series
        ``n_images, n_texts, dim, centroid_distance, centroid_mse,
        relative_gap, relative_modality_gap, instance_gap,
        gap_centroid_share, gap_dims_50, gap_dims_90, paired_cosine,
        unpaired_cosine, alignment, uniformity_image, uniformity_text,
        linear_separability, effective_rank_image, effective_rank_text``,
        then ``i2t_R@k`` and ``t2i_R@k`` for each k, then
        ``zero_shot_accuracy`` when a task is given. ``centroid_distance`` is
        Liang et al.'s gap distance and ``centroid_mse`` is CLIP-Refine's
        logged form (see those functions). ``gap_centroid_share`` is
        :func:`gap_split`'s ``centroid_share`` and ``gap_dims_50`` /
        ``gap_dims_90`` are :func:`dims_for_share` of :func:`gap_anatomy` at
        0.5 and 0.9 (0 when the centroids coincide, as there is then no gap
        to carry); these two depend on the basis of the embedding space.

    References
    ----------
    See the functions named by each entry.
    """
    if (class_emb is None) != (labels is None):
        raise ValueError("class_emb and labels go together: pass both for zero-shot accuracy, or neither")
    if zero_shot_image_emb is not None and class_emb is None:
        raise ValueError("zero_shot_image_emb needs class_emb and labels")
    ks = _check_ks(k)
    img, txt = check_pair(image_emb, text_emb)
    idx = _pair_index(len(img), len(txt), text_to_image)
    for x, nm in ((img, "image_emb"), (txt, "text_emb")):
        if len(x) < 4:
            raise ValueError(f"{nm} has {len(x)} rows; gap_report needs at least 4 per modality")
    gap = _centroid_gap(img, txt)
    if (gap * gap).sum() > 1e-24:
        cum = _anatomy(gap)["cumulative"].to_numpy()
        dims = (_dims_for_share(cum, 0.5), _dims_for_share(cum, 0.9))
    else:
        dims = (0, 0)
    matched = np.einsum("ij,ij->i", img[idx], txt)
    n_unmatched = len(img) * len(txt) - len(txt)
    out = {
        "n_images": float(len(img)),
        "n_texts": float(len(txt)),
        "dim": float(img.shape[1]),
        "centroid_distance": float(np.linalg.norm(gap)),
        "centroid_mse": float(gap @ gap / gap.size),
        "relative_gap": _relative_gap(img, txt),
        "relative_modality_gap": _rmg(img, txt, idx),
        "instance_gap": float(np.sqrt(_pair_sq_distances(img, txt, idx)).mean()),
        "gap_centroid_share": _gap_split(img, txt, idx)["centroid_share"],
        "gap_dims_50": float(dims[0]),
        "gap_dims_90": float(dims[1]),
        "paired_cosine": float(matched.mean()),
        "unpaired_cosine": (float(img.sum(axis=0) @ txt.sum(axis=0)) - float(matched.sum())) / n_unmatched,
        "alignment": float((np.linalg.norm(img[idx] - txt, axis=1) ** 2).mean()),
        "uniformity_image": _uniformity(_subsample(img, sample_size, check_random_state(random_state)), 2.0),
        "uniformity_text": _uniformity(_subsample(txt, sample_size, check_random_state(random_state)), 2.0),
        "linear_separability": linear_separability(img, txt, sample_size=sample_size,
                                                   random_state=random_state),
        "effective_rank_image": effective_rank_from_spectrum(_spectrum(img)),
        "effective_rank_text": effective_rank_from_spectrum(_spectrum(txt)),
    }
    out.update(_retrieval(img, txt, idx, ks))
    if class_emb is not None:
        zs = img if zero_shot_image_emb is None else unit_rows(
            check_embeddings(zero_shot_image_emb, "zero_shot_image_emb"), "zero_shot_image_emb")
        check_same_dim(img, zs, "image_emb", "zero_shot_image_emb")
        cls = _check_class_emb(class_emb, zs)
        lab = check_labels(labels, len(zs), len(cls))
        out["zero_shot_accuracy"] = float((_predict(zs, cls) == lab).mean())
    return pd.Series(out, name=name, dtype=np.float64)
