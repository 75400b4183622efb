"""Post-hoc modality-gap closers: transformers that move the image and text
embeddings of a frozen CLIP model toward each other, fitted on embeddings
alone (a calibration set of images and texts), never on the model.

Each closer keeps one contract, in the manner of scikit-learn:

- ``fit(image_emb, text_emb)`` learns per-modality statistics from the
  calibration set and returns the closer; learned attributes end in ``_``
  (``n_features_in_`` among them).
- ``transform(image_emb, text_emb)`` returns ``(image_out, text_out)``,
  float32 numpy arrays with unit rows (CLIP compares embeddings by cosine,
  so its space is the unit sphere); either argument may be ``None``, and
  ``None`` comes back in its place. ``transform_images`` and
  ``transform_texts`` handle one modality; ``fit_transform`` fits and
  transforms the calibration set.
- Inputs are numpy arrays or torch tensors (on any device), of shape
  ``[N, D]``; their rows are L2-normalised first.
- ``__init__`` only stores its arguments, so ``sklearn.base.clone`` gives
  an unfitted copy.

The work is vectorised numpy on float32 arrays, row blocks where a step
needs scratch memory and float64 for the statistics, with no ``N x N``
matrix anywhere: a million 512-d embeddings take seconds.

``CLOSERS`` maps a name to each closer class.

References
----------
Zhang, Sui, Yeung-Levy. "Connect, Collapse, Corrupt: Learning Cross-Modal
Tasks with Uni-Modal Data". ICLR 2024 (code: yuhui-zh15/C3).
Zhang et al. "Diagnosing and Rectifying Vision Models using Language"
(DrML). ICLR 2023.
An et al. "I0T: Embedding Standardization Method Towards Zero Modality Gap".
ACL 2025 (code: xfactlab/I0T).
Liang, Zhang, Kwon, Yeung, Zou. "Mind the Gap: Understanding the Modality
Gap in Multi-modal Contrastive Representation Learning". NeurIPS 2022.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ..metrics import shift_pair
from ..validation import check_embeddings, check_number, check_same_dim, check_vector, unit_rows

__all__ = ["CLOSERS", "GapShift", "MeanCentering", "Standardization"]

# entries per block where a step needs scratch memory proportional to its input:
# 8 MB of float32, small enough for the allocator to reuse rather than map anew
_BLOCK = 1 << 21
# smallest squared row norm the float32 fast path trusts (below it, squares of
# the entries may have lost precision to underflow)
_TINY = 1e-30


# -- float32 work arrays -------------------------------------------------------------
def _float32_rows(x, name: str, min_rows: int = 1) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(arr, scale, owned)``: ``x`` as a float32 array ``[N, D]`` whose rows
    times ``scale`` ``[N]`` have unit length; ``owned`` says ``arr`` is a new
    array, free to overwrite, rather than the caller's memory.

    The common case (a finite numeric 2-D array of rows of ordinary length)
    is checked in float32 without a copy where the input already is float32.
    Anything else goes through :func:`modgap.validation.check_embeddings`
    and :func:`~modgap.validation.unit_rows` in float64, which raise the
    shared errors for bad input and normalise rows too long or too short
    for float32 arithmetic exactly.
    """
    arr, owned = None, False
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            if isinstance(x, torch.Tensor):
                arr = x.detach().to("cpu", torch.float32).numpy()
            elif x is not None:
                arr = np.asarray(x, dtype=np.float32)
                owned = arr is not x and arr.base is None
    except (TypeError, ValueError, RuntimeError):
        arr = None
    if arr is not None and arr.ndim == 2 and arr.shape[0] >= max(min_rows, 1) and arr.shape[1] > 0:
        with np.errstate(over="ignore", invalid="ignore"):
            sq = np.einsum("ij,ij->i", arr, arr)
        # a finite sum of squares means every entry of the row is finite
        if bool((np.isfinite(sq) & (sq >= _TINY)).all()):
            return arr, 1.0 / np.sqrt(sq), owned
    unit = unit_rows(check_embeddings(x, name, min_rows=min_rows), name).astype(np.float32)
    return unit, np.ones(len(unit), dtype=np.float32), True


def _unit(arr: np.ndarray, scale: np.ndarray, owned: bool) -> np.ndarray:
    """The unit rows ``arr * scale`` as a new array (``arr`` itself where owned)."""
    if owned:
        arr *= scale[:, None]
        return arr
    return arr * scale[:, None]


def _row_blocks(n: int, d: int):
    """Slices of consecutive rows of an ``[n, d]`` array, about ``_BLOCK``
    entries each."""
    rows = max(1, _BLOCK // max(1, d))
    for start in range(0, n, rows):
        yield slice(start, start + rows)


def _moments(arr: np.ndarray, scale: np.ndarray, std: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Column mean (and population standard deviation, ``ddof=0``) of the
    unit rows ``arr * scale``, summed in float64 block by block."""
    n, d = arr.shape
    total = np.zeros(d)
    for rows in _row_blocks(n, d):
        total += (arr[rows] * scale[rows, None]).sum(axis=0, dtype=np.float64)
    mean = total / n
    if not std:
        return mean, None
    centre = mean.astype(np.float32)
    total = np.zeros(d)
    for rows in _row_blocks(n, d):
        part = arr[rows] * scale[rows, None]
        part -= centre
        np.square(part, out=part)
        total += part.sum(axis=0, dtype=np.float64)
    return mean, np.sqrt(total / n)


def _renormalize(x: np.ndarray, name: str, why: str) -> np.ndarray:
    """Scale the rows of the float32 array ``x`` to unit length in place; a
    row of zero length is an error that names ``name`` and says ``why``."""
    with np.errstate(over="ignore", invalid="ignore"):
        sq = np.einsum("ij,ij->i", x, x)
    ok = np.isfinite(sq) & (sq >= _TINY)
    if bool(ok.all()):
        x *= (1.0 / np.sqrt(sq))[:, None]
        return x
    norms = np.sqrt(sq.astype(np.float64))
    rare = np.flatnonzero(~ok)
    norms[rare] = np.linalg.norm(x[rare].astype(np.float64), axis=1)
    zero = rare[norms[rare] == 0]
    if zero.size:
        raise ValueError(
            f"{name} has {zero.size} row(s) of zero length after the transform (first: row {int(zero[0])}): "
            f"{why}, so they cannot be normalised; drop them"
        )
    np.divide(x, norms[:, None], out=x, casting="same_kind")
    return x


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


# -- the contract ------------------------------------------------------------------------
class _Closer(BaseEstimator):
    """What every post-hoc closer shares: input handling, ``fit``,
    ``transform`` and their variants. A subclass validates its parameters
    in :meth:`_check_params`, returns its learned attributes from
    :meth:`_fit` (given each modality as ``(arr, scale)``, see
    :func:`_float32_rows`) and transforms one modality's unit rows in
    place in :meth:`_apply`."""

    def _check_params(self) -> None:
        pass

    def _fit(self, img: tuple, txt: tuple) -> dict:
        raise NotImplementedError

    def _apply(self, x: np.ndarray, modality: str, name: str) -> np.ndarray:
        raise NotImplementedError

    # -- fitting ----------------------------------------------------------------------
    def _fit_arrays(self, image_emb, text_emb) -> tuple[tuple, tuple]:
        self._check_params()
        img = _float32_rows(image_emb, "image_emb", min_rows=2)
        txt = _float32_rows(text_emb, "text_emb", min_rows=2)
        check_same_dim(img[0], txt[0], "image_emb", "text_emb")
        # every attribute is set at the end, so a failed fit leaves no partial state
        learned = self._fit(img[:2], txt[:2])
        learned["n_features_in_"] = img[0].shape[1]
        for key, value in learned.items():
            setattr(self, key, value)
        return img, txt

    def fit(self, image_emb, text_emb):
        """Learn the closer from a calibration set.

        Parameters
        ----------
        image_emb : array or tensor [N, D], N >= 2
        text_emb : array or tensor [M, D], M >= 2
            Image and text embeddings of one model; they need not be paired
            nor of the same number.

        Returns
        -------
        self
        """
        self._fit_arrays(image_emb, text_emb)
        return self

    def fit_transform(self, image_emb, text_emb) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`fit` on ``image_emb`` and ``text_emb``, then their
        :meth:`transform` (each input checked and normalised once)."""
        img, txt = self._fit_arrays(image_emb, text_emb)
        return self._apply(_unit(*img), "image", "image_emb"), self._apply(_unit(*txt), "text", "text_emb")

    # -- transforming -----------------------------------------------------------------
    def _work_array(self, x, name: str) -> np.ndarray:
        check_is_fitted(self, "n_features_in_")
        self._check_params()
        arr, scale, owned = _float32_rows(x, name)
        if arr.shape[1] != self.n_features_in_:
            raise ValueError(
                f"{name} has dimension {arr.shape[1]}, but this {type(self).__name__} was fitted on "
                f"embeddings of dimension {self.n_features_in_}; fit it on embeddings of the same model "
                "as the ones to transform"
            )
        return _unit(arr, scale, owned)

    def transform_images(self, image_emb) -> np.ndarray:
        """Image embeddings ``[N, D]`` moved toward the texts, as float32."""
        return self._apply(self._work_array(image_emb, "image_emb"), "image", "image_emb")

    def transform_texts(self, text_emb) -> np.ndarray:
        """Text embeddings ``[M, D]`` moved toward the images, as float32."""
        return self._apply(self._work_array(text_emb, "text_emb"), "text", "text_emb")

    def transform(self, image_emb=None, text_emb=None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(transform_images(image_emb), transform_texts(text_emb))``,
        with ``None`` in place of an argument that is ``None``."""
        check_is_fitted(self, "n_features_in_")
        return (None if image_emb is None else self.transform_images(image_emb),
                None if text_emb is None else self.transform_texts(text_emb))


# -- the closers -------------------------------------------------------------------------
class MeanCentering(_Closer):
    """Subtract each modality's mean, then normalise the rows again.

    Zhang et al. (C3, ICLR 2024) find that the modality gap is, to first
    order, a constant offset between the two modalities' embeddings, and
    remove it by centring each modality on its own mean (their "collapse"
    step); DrML (Zhang et al., ICLR 2023) removes the gap the same way so
    that text embeddings can stand in for image embeddings. The means are those of the
    normalised calibration embeddings.

    Parameters
    ----------
    renormalize : bool, default True
        Scale the centred rows back to unit length. Centring shortens the
        rows by different amounts, so the normalised rows weigh differently
        in a mean, and the centroid distance of the calibration set after
        the transform is small but not exactly 0 in general. With
        ``renormalize=False`` the output is the centred vectors themselves
        (not unit length), whose means on the calibration set are 0.

    Attributes
    ----------
    image_mean_, text_mean_ : ndarray [D], float64
        Means of the normalised calibration embeddings of each modality.
    n_features_in_ : int
        The embedding dimension D.

    References
    ----------
    Zhang et al., "Connect, Collapse, Corrupt: Learning Cross-Modal Tasks
    with Uni-Modal Data", ICLR 2024 (code: yuhui-zh15/C3).
    Zhang et al., "Diagnosing and Rectifying Vision Models using Language"
    (DrML), ICLR 2023.
    """

    def __init__(self, renormalize: bool = True):
        self.renormalize = renormalize

    def _check_params(self) -> None:
        _check_bool(self.renormalize, "renormalize")

    def _fit(self, img, txt):
        return {"image_mean_": _moments(*img)[0], "text_mean_": _moments(*txt)[0]}

    def _apply(self, x, modality, name):
        x -= getattr(self, f"{modality}_mean_").astype(np.float32)
        if self.renormalize:
            _renormalize(x, name, f"they equal the fitted {modality} mean")
        return x


class Standardization(_Closer):
    """Standardise each dimension within each modality, then normalise the
    rows again.

    A post-hoc variant of I0T (An et al., ACL 2025): the modality gap of
    CLIP sits largely in a few dimensions in which one modality has a large
    offset and scale of its own, so subtracting each modality's per-dimension
    mean and dividing by its per-dimension standard deviation, estimated on
    a calibration set of the frozen model's embeddings, puts the two
    modalities on one footing without any training.

    Parameters
    ----------
    eps : float > 0, default 1e-8
        Floor of the standard deviation, so a dimension that is constant on
        the calibration set is centred but not divided by zero.
    renormalize : bool, default True
        Scale the standardised rows back to unit length. With
        ``renormalize=False`` the output is the standardised vectors, which
        on the calibration set have mean 0 and variance 1 in every
        (non-constant) dimension, per modality.

    Attributes
    ----------
    image_mean_, text_mean_ : ndarray [D], float64
        Per-dimension means of the normalised calibration embeddings.
    image_std_, text_std_ : ndarray [D], float64
        Their per-dimension standard deviations (``ddof=0``), floored at ``eps``.
    n_features_in_ : int
        The embedding dimension D.

    References
    ----------
    An et al., "I0T: Embedding Standardization Method Towards Zero Modality
    Gap", ACL 2025 (code: xfactlab/I0T).
    """

    def __init__(self, eps: float = 1e-8, renormalize: bool = True):
        self.eps = eps
        self.renormalize = renormalize

    def _check_params(self) -> None:
        check_number(self.eps, "eps", low=0.0, low_open=True)
        _check_bool(self.renormalize, "renormalize")

    def _fit(self, img, txt):
        out = {}
        for modality, x in (("image", img), ("text", txt)):
            mean, std = _moments(*x, std=True)
            out[f"{modality}_mean_"] = mean
            out[f"{modality}_std_"] = np.maximum(std, float(self.eps))
        return out

    def _apply(self, x, modality, name):
        x -= getattr(self, f"{modality}_mean_").astype(np.float32)
        x *= (1.0 / getattr(self, f"{modality}_std_")).astype(np.float32)
        if self.renormalize:
            _renormalize(x, name, f"they equal the fitted {modality} mean")
        return x


class GapShift(_Closer):
    """Move images by ``-delta/2`` and texts by ``+delta/2`` along the unit
    gap direction, then normalise the rows again.

    Liang et al. ("Mind the Gap", NeurIPS 2022) show that the gap is mostly
    a displacement along the line between the two modality centroids, and
    close it by shifting both modalities toward each other along that line;
    ``delta`` about equal to the calibration set's centroid distance
    (:func:`modgap.metrics.centroid_distance`) brings the centroids together.
    The step is :func:`modgap.metrics.shift_pair`.

    Parameters
    ----------
    delta : float, default 1.0
        Length of the shift; 0 leaves the (normalised) embeddings as they
        are, negative values move the modalities apart.
    direction : array [D] or None, default None
        The shift direction (normalised at fit time), pointing from the
        texts to the images. By default the unit gap direction of the
        calibration set, :func:`modgap.metrics.gap_vector`.

    Attributes
    ----------
    direction_ : ndarray [D], float64
        The unit shift direction.
    n_features_in_ : int
        The embedding dimension D.

    References
    ----------
    Liang et al., "Mind the Gap: Understanding the Modality Gap in
    Multi-modal Contrastive Representation Learning", NeurIPS 2022, Table 1
    (code: Weixin-Liang/Modality-Gap).
    """

    def __init__(self, delta: float = 1.0, direction=None):
        self.delta = delta
        self.direction = direction

    def _check_params(self) -> None:
        check_number(self.delta, "delta")

    def _fit(self, img, txt):
        if self.direction is None:
            # the gap direction of Liang et al.: from the text centroid to the image centroid
            gap = _moments(*img)[0] - _moments(*txt)[0]
            norm = float(np.linalg.norm(gap))
            if norm <= 1e-12:
                raise ValueError("image_emb and text_emb have the same centroid, so the gap direction is "
                                 "undefined; pass direction=")
            return {"direction_": gap / norm}
        direction = check_vector(self.direction, "direction")
        if direction.shape[0] != img[0].shape[1]:
            raise ValueError(
                f"direction has dimension {direction.shape[0]} but image_emb and text_emb have dimension "
                f"{img[0].shape[1]}; pass a direction in the same model's embedding space"
            )
        norm = np.linalg.norm(direction)
        if norm == 0:
            raise ValueError("direction is the zero vector, which has no direction; pass a nonzero vector "
                             "or direction=None for the calibration set's gap direction")
        return {"direction_": direction / norm}

    def _apply(self, x, modality, name):
        delta = check_number(self.delta, "delta")
        g = self.direction_.astype(np.float32)
        empty = np.empty((0, x.shape[1]), dtype=np.float32)
        what = (f"rows of {name}",) * 2
        for rows in _row_blocks(*x.shape):
            part = x[rows]
            if modality == "image":
                part[...] = shift_pair(part, empty, delta, g, names=what)[0]
            else:
                part[...] = shift_pair(empty, part, delta, g, names=what)[1]
        return x


CLOSERS = {"mean-centering": MeanCentering, "standardization": Standardization, "gap-shift": GapShift}
