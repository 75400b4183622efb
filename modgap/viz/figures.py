"""Pictures of the modality gap: 2-D maps of both modalities, the shift of
a model's embeddings under adaptation, the embedding-shift curve, similarity
heat maps, covariance spectra and report comparisons.

Every function takes plain arrays (numpy or torch), draws with matplotlib,
and returns the ``Axes`` (one panel) or ``Figure`` (several panels) it drew
on, so a notebook can keep styling it, in the manner of ``umap.plot``.
One-panel functions accept ``ax=``. Artists a reader may want to find again
carry a ``gid``: ``"image-points"``, ``"text-points"``,
``"image-centroid"``, ``"text-centroid"``, ``"gap-arrow"`` and
``"shift-arrows"``.

2-D maps come from :func:`fit_2d` (UMAP, PCA or t-SNE, seeded). umap-learn
is imported on first use only, once per process, and always receives
float32 arrays with the same metric, so numba compiles its kernels once per
process (about 20 s on two busy cores, see ``benchmarks/umap_time.py``) and
every later map reuses them; UMAP's neighbour search is done here for maps of
up to 20,000 points, which spares pynndescent's compilation too.

References
----------
McInnes, Healy, Melville. "UMAP: Uniform Manifold Approximation and
Projection for Dimension Reduction". arXiv 1802.03426, 2018.
van der Maaten, Hinton. "Visualizing Data using t-SNE". JMLR 9, 2008.
Liang et al. "Mind the Gap". NeurIPS 2022 (Fig. 1: the two modalities on
one map, joined by the gap).
"""
from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping
from numbers import Integral

import numpy as np
import pandas as pd

from .. import metrics as _m
from ..validation import check_embeddings, check_pair, unit_rows

__all__ = [
    "MIN_ACCURACY_SPAN",
    "draw_map",
    "fit_2d",
    "plot_embedding_shift",
    "plot_embeddings",
    "plot_gap_anatomy",
    "plot_gap_shift",
    "plot_images",
    "plot_report_comparison",
    "plot_similarity",
    "plot_spectrum",
]

REDUCERS = ("umap", "pca", "tsne")
# up to this many points UMAP gets exact neighbours from blocked matrix products
EXACT_KNN_MAX = 20000
_AXIS_NAME = {"umap": "UMAP", "pca": "PC", "tsne": "t-SNE"}
# rows x columns of one block of a distance matrix held in memory at once
_BLOCK = 1 << 22
_METHOD_NAME = {"umap": "UMAP", "pca": "PCA", "tsne": "t-SNE"}
_MARKER = {"image": "o", "text": "^"}
_PLAIN_COLOR = {"image": "C0", "text": "C1"}
_UNLABELLED = "0.45"
_MAX_LEGEND_CLASSES = 20

_REPORT_DEFAULTS = (
    "centroid_distance", "centroid_mse", "relative_gap", "linear_separability",
    "paired_cosine", "unpaired_cosine", "alignment", "uniformity", "uniformity_image",
    "uniformity_text", "effective_rank_image", "effective_rank_text",
    "i2t_R@1", "t2i_R@1", "zero_shot_accuracy",
)


# -- 2-D reduction -----------------------------------------------------------------
def _exact_knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest neighbours of every row of ``x`` by Euclidean distance,
    itself first, in UMAP's ``precomputed_knn`` form (indices, distances)."""
    n = len(x)
    sq = np.einsum("ij,ij->i", x, x)
    idx = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float32)
    rows = max(1, _BLOCK // n)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        d2 = sq[start:stop, None] + sq[None, :] - 2.0 * (x[start:stop] @ x.T)
        d2[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        part = np.argpartition(d2, k - 1, axis=1)[:, :k]
        part_d2 = np.take_along_axis(d2, part, axis=1)
        order = np.argsort(part_d2, axis=1, kind="stable")
        idx[start:stop] = np.take_along_axis(part, order, axis=1)
        dist[start:stop] = np.sqrt(np.clip(np.take_along_axis(part_d2, order, axis=1), 0.0, None))
    return idx, dist


@functools.lru_cache(maxsize=1)
def _umap_class():
    try:
        from umap import UMAP
    except ImportError as err:
        raise ImportError(
            "method='umap' needs the umap-learn package (pip install umap-learn); "
            "or pass method='pca'"
        ) from err
    return UMAP


def fit_2d(X, method: str = "umap", random_state: int = 0, return_reducer: bool = False, **kwargs):
    """Reduce ``X`` ``[N, D]`` to 2-D coordinates ``[N, 2]`` (float64 numpy).

    Parameters
    ----------
    X : array or tensor [N, D]
        Used as given (plot functions pass L2-normalised embeddings, for
        which Euclidean neighbours are cosine neighbours).
    method : {"umap", "pca", "tsne"}
        ``"umap"``: ``umap.UMAP`` with ``n_neighbors=min(15, N - 1)``,
        ``min_dist=0.1``, Euclidean metric, ``n_epochs=200`` (umap-learn's
        own choice for large sets; it would use 500 below 10,000 points),
        single-threaded so that a fixed ``random_state`` gives the same map
        every run. Up to ``EXACT_KNN_MAX`` (20,000) points the exact nearest
        neighbours are computed here by blocked matrix products and handed
        to UMAP as ``precomputed_knn``: faster than pynndescent at this size
        and free of its long first numba compile. Above that, with another
        ``metric``, or with ``return_reducer=True`` (a UMAP fitted on given
        neighbours cannot ``transform`` new points), UMAP finds neighbours
        itself. ``"pca"``:
        scikit-learn ``PCA`` (full SVD, deterministic). ``"tsne"``:
        scikit-learn ``TSNE`` with PCA initialisation and
        ``perplexity=min(30, (N - 1) / 3)``.
    random_state : int
        Seed of the reducer.
    return_reducer : bool
        Also return the fitted reducer object (``umap.UMAP``, ``PCA`` or
        ``TSNE``), e.g. to place new points with ``reducer.transform``
        (UMAP and PCA; t-SNE has no transform).
    **kwargs
        Passed to the reducer, overriding the defaults above (for UMAP e.g.
        ``n_neighbors``, ``min_dist``, ``n_epochs``).

    Returns
    -------
    ndarray [N, 2], or (ndarray, reducer) with ``return_reducer=True``.

    References
    ----------
    McInnes et al., arXiv 1802.03426 (UMAP); van der Maaten & Hinton, JMLR
    2008 (t-SNE); Pearson 1901 (PCA).
    """
    if not isinstance(method, str) or method.lower().replace("-", "") not in REDUCERS:
        raise ValueError(f"method must be one of {REDUCERS}, got {method!r}")
    method = method.lower().replace("-", "")
    if random_state is not None and not isinstance(random_state, Integral):
        raise ValueError(f"random_state must be an int or None, got {random_state!r}")
    x = check_embeddings(X, "X")
    n, d = x.shape
    if method == "pca":
        if n < 2 or d < 2:
            raise ValueError(f"X has shape {x.shape}; a 2-D PCA needs at least 2 rows and 2 columns")
        from sklearn.decomposition import PCA

        params = {"svd_solver": "full", "random_state": random_state}
        params.update(kwargs)
        reducer = PCA(n_components=2, **params)
        y = reducer.fit_transform(x)
    elif method == "tsne":
        if n < 5:
            raise ValueError(f"X has {n} rows; t-SNE needs at least 5 (or use method='pca')")
        from sklearn.manifold import TSNE

        params = {"perplexity": min(30.0, (n - 1) / 3.0), "init": "pca", "learning_rate": "auto",
                  "random_state": random_state}
        params.update(kwargs)
        reducer = TSNE(n_components=2, **params)
        y = reducer.fit_transform(x)
    else:
        if n < 5:
            raise ValueError(f"X has {n} rows; UMAP needs at least 5 (or use method='pca')")
        params = {"n_neighbors": min(15, n - 1), "min_dist": 0.1, "metric": "euclidean", "n_epochs": 200,
                  "random_state": random_state, "n_jobs": 1}
        params.update(kwargs)
        k = params["n_neighbors"]
        if not isinstance(k, Integral) or not 2 <= k < n:
            raise ValueError(f"n_neighbors must be an integer from 2 to N - 1 = {n - 1}, got {k!r}")
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        if (params["metric"] == "euclidean" and "precomputed_knn" not in kwargs and n <= EXACT_KNN_MAX
                and not return_reducer):
            params["precomputed_knn"] = _exact_knn(x32, int(k))
        reducer = _umap_class()(n_components=2, **params)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]")
            y = reducer.fit_transform(x32)
    y = np.asarray(y, dtype=np.float64)
    return (y, reducer) if return_reducer else y


# -- shared drawing helpers --------------------------------------------------------------
def _pyplot():
    import matplotlib.pyplot as plt

    return plt


def _new_ax(ax, figsize=(7, 6)):
    if ax is not None:
        return ax
    _, ax = _pyplot().subplots(figsize=figsize)
    return ax


def _label_array(labels, n: int, name: str):
    if labels is None:
        return None
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    lab = np.asarray(labels)
    if lab.ndim != 1 or len(lab) != n:
        raise ValueError(f"{name} must have one entry per point ({n}), got shape {lab.shape}")
    return lab


def _class_palette(classes) -> dict:
    from matplotlib import colormaps

    k = len(classes)
    if k <= 10:
        cols = [colormaps["tab10"](i) for i in range(k)]
    elif k <= 20:
        cols = [colormaps["tab20"](i) for i in range(k)]
    else:
        cols = [colormaps["turbo"](v) for v in np.linspace(0.05, 0.95, k)]
    return dict(zip(classes.tolist(), cols))


def _class_name(c, class_names):
    if class_names is not None and isinstance(c, (Integral, np.integer)) and 0 <= int(c) < len(class_names):
        return str(class_names[int(c)])
    return str(c)


def _point_size(n_total: int) -> float:
    return 14.0 if n_total <= 2000 else 5.0


def _check_text_name(text_name) -> str:
    if not isinstance(text_name, str) or not text_name.strip():
        raise ValueError(f"text_name must be a non-empty string such as 'caption' or 'class prompt', "
                         f"got {text_name!r}")
    return text_name.strip()


def _legend_below(ax, handles):
    """The map's legend under the axes, where it hides no point."""
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize="small",
              frameon=False)


def _draw_map(ax, pts, labs, class_names, palette, *, gap=None, size=None, alpha=0.7,
              legend=True, arrow=True, text_name="text"):
    """Scatter each modality of ``pts`` ({"image": [n, 2], "text": [m, 2] or None})
    with its marker, colour by class, draw centroids and the gap arrow;
    return the legend's handles."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch

    total = sum(len(p) for p in pts.values() if p is not None)
    size = _point_size(total) if size is None else size
    handles = []
    centroids = {}
    for mod in ("image", "text"):
        p = pts.get(mod)
        if p is None:
            continue
        lab = labs.get(mod)
        if palette is None:
            color = _PLAIN_COLOR[mod]
        elif lab is None:
            color = _UNLABELLED
        else:
            color = [palette[v] for v in lab.tolist()]
        name = "image" if mod == "image" else text_name
        ax.scatter(p[:, 0], p[:, 1], s=size, c=color if isinstance(color, list) else [color],
                   marker=_MARKER[mod], alpha=alpha, linewidths=0, label=name, gid=f"{mod}-points")
        handles.append(Line2D([], [], ls="", marker=_MARKER[mod], markersize=7,
                              color=_PLAIN_COLOR[mod] if palette is None else "0.35", label=name))
        c = p.mean(axis=0)
        centroids[mod] = c
        ax.scatter([c[0]], [c[1]], s=220, marker="X" if mod == "image" else "P", c="black",
                   edgecolors="white", linewidths=1.5, zorder=6, gid=f"{mod}-centroid")
        handles.append(Line2D([], [], ls="", marker="X" if mod == "image" else "P", markersize=10,
                              color="black", markeredgecolor="white", label=f"{name} centroid"))
    if arrow and "image" in centroids and "text" in centroids:
        ax.add_patch(FancyArrowPatch(tuple(centroids["text"]), tuple(centroids["image"]),
                                     arrowstyle="-|>", mutation_scale=22, lw=2.2, color="black",
                                     zorder=7, gid="gap-arrow"))
        gap_label = f"gap, {text_name} to image" + (f" (distance {gap:.3f})" if gap is not None else "")
        handles.append(Line2D([], [], color="black", lw=2.2, label=gap_label))
    if palette is not None and len(palette) <= _MAX_LEGEND_CLASSES:
        for v, col in palette.items():
            handles.append(Line2D([], [], ls="", marker="s", markersize=7, color=col,
                                  label=_class_name(v, class_names)))
    if legend:
        _legend_below(ax, handles)
    return handles


def _axis_labels(ax, method: str):
    name = _AXIS_NAME[method.lower().replace("-", "")]
    ax.set_xlabel(f"{name} 1")
    ax.set_ylabel(f"{name} 2")


def _palette_for(labs: dict):
    present = [v for v in labs.values() if v is not None]
    if not present:
        return None
    return _class_palette(np.unique(np.concatenate(present)))


# -- one map --------------------------------------------------------------------------
def draw_map(image_xy, text_xy=None, labels=None, *, text_labels=None, class_names=None,
             method: str | None = None, gap: float | None = None, ax=None, point_size: float | None = None,
             alpha: float = 0.7, legend: bool = True, text_name: str = "text"):
    """Draw 2-D positions of both modalities as :func:`plot_embeddings` does
    (images as circles, texts as triangles, classes coloured, centroids
    marked, an arrow from the text centroid to the image centroid) for
    points the caller has placed, e.g. with a reducer from
    :func:`fit_2d` (``return_reducer=True``) fitted once and reused while
    the embeddings move, so that the axes stay put.

    Parameters
    ----------
    image_xy : array [N, 2]
    text_xy : array [M, 2] or None (images only, no gap arrow)
    labels, text_labels, class_names : as in :func:`plot_embeddings`;
        without labels each modality has one colour.
    method : {"umap", "pca", "tsne"} or None
        Names the axes after the reducer; None leaves them unnamed.
    gap : float or None
        The gap distance shown in the legend, measured in the full space
        (:func:`modgap.metrics.centroid_distance`), not on the map.
    ax : matplotlib Axes or None
    point_size, alpha : as in :func:`plot_embeddings`
    legend : bool
        The legend goes under the axes, where it hides no point.
    text_name : str
        What the texts are, for the legend: ``"caption"``, ``"class prompt"``.

    Returns
    -------
    matplotlib.axes.Axes
    """
    pts = {}
    for mod, xy in (("image", image_xy), ("text", text_xy)):
        if xy is None:
            continue
        arr = np.asarray(xy.detach().cpu() if hasattr(xy, "detach") else xy, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) == 0:
            raise ValueError(f"{mod}_xy must be a non-empty array of 2-D positions [n, 2], got shape {arr.shape}")
        pts[mod] = arr
    if "image" not in pts:
        raise ValueError("image_xy is None; pass the 2-D positions of the images")
    n_t = len(pts["text"]) if "text" in pts else 0
    lab_i = _label_array(labels, len(pts["image"]), "labels")
    lab_t = _label_array(text_labels, n_t, "text_labels") if n_t else None
    if lab_t is None and lab_i is not None and n_t == len(lab_i):
        lab_t = lab_i
    if method is not None and (not isinstance(method, str) or method.lower().replace("-", "") not in REDUCERS):
        raise ValueError(f"method must be one of {REDUCERS} or None, got {method!r}")
    ax = _new_ax(ax)
    labs = {"image": lab_i, "text": lab_t}
    _draw_map(ax, pts, labs, class_names, _palette_for(labs), gap=gap, size=point_size, alpha=alpha,
              legend=legend, text_name=_check_text_name(text_name))
    if method is not None:
        _axis_labels(ax, method)
    return ax


def plot_embeddings(image_emb, text_emb, labels=None, method: str = "umap", *, text_labels=None,
                    class_names=None, ax=None, random_state: int = 0, reducer_kwargs=None,
                    title: str | None = None, point_size: float | None = None, alpha: float = 0.7,
                    text_name: str = "text"):
    """One 2-D map of both modalities: images as circles, texts as
    triangles, classes coloured, each modality's centroid marked, and an
    arrow from the text centroid to the image centroid (the gap).

    The normalised embeddings of both modalities are reduced together by
    :func:`fit_2d`. The centroids drawn are the means of the 2-D positions
    (for PCA exactly the projection of the high-dimensional centroids); the
    gap distance in the legend and title is :func:`modgap.metrics.centroid_distance`
    measured in the full space.

    Parameters
    ----------
    image_emb, text_emb : arrays [N, D] and [M, D]
    labels : array [N] or None
        Class of each image (colours). When ``text_labels`` is None and
        M == N, the texts take the labels of their images.
    method : {"umap", "pca", "tsne"}
    text_labels : array [M] or None
        Class of each text, e.g. ``np.arange(C)`` for class embeddings.
    class_names : sequence of str or None
        Legend names for integer labels.
    ax : matplotlib Axes or None
    random_state : int
    reducer_kwargs : dict or None, passed to :func:`fit_2d`.
    title : str or None
        None: the method and the gap, e.g. "gap to the captions 0.796".
    text_name : str
        What the texts are, for the legend and the title: ``"caption"`` or
        ``"class prompt"``, so that the gap to the captions and the gap to
        the class prompts are never confused. The legend goes under the axes.

    Returns
    -------
    matplotlib.axes.Axes

    References
    ----------
    Liang et al., "Mind the Gap", NeurIPS 2022, Fig. 1.
    """
    img, txt = check_pair(image_emb, text_emb)
    lab_i = _label_array(labels, len(img), "labels")
    lab_t = _label_array(text_labels, len(txt), "text_labels")
    if lab_t is None and lab_i is not None and len(txt) == len(img):
        lab_t = lab_i
    text_name = _check_text_name(text_name)
    y = fit_2d(np.vstack([img, txt]), method, random_state, **(reducer_kwargs or {}))
    gap = _m.centroid_distance(img, txt)
    ax = _new_ax(ax)
    labs = {"image": lab_i, "text": lab_t}
    _draw_map(ax, {"image": y[: len(img)], "text": y[len(img):]}, labs, class_names, _palette_for(labs),
              gap=gap, size=point_size, alpha=alpha, text_name=text_name)
    _axis_labels(ax, method)
    ax.set_title(title if title is not None
                 else f"Image and {text_name} embeddings ({_METHOD_NAME[method.lower().replace('-', '')]}), "
                      f"gap to the {text_name}s {gap:.3f}")
    return ax


# -- two states on one map --------------------------------------------------------------
def _as_state(x, name: str):
    if isinstance(x, (tuple, list)) and len(x) == 2 and all(np.ndim(v) == 2 for v in x):
        img, txt = check_pair(x[0], x[1])
        return img, txt
    if isinstance(x, (tuple, list)) and len(x) != 2 and all(np.ndim(v) == 2 for v in x):
        raise ValueError(f"{name} must be (image_emb, text_emb) or one array of embeddings, "
                         f"got a sequence of {len(x)} arrays")
    return unit_rows(check_embeddings(x, name), name), None


def plot_embedding_shift(before, after, labels=None, method: str = "umap", *, text_labels=None,
                         class_names=None, n_arrows: int | None = 200, random_state: int = 0,
                         titles=("before", "after"), axes=None, reducer_kwargs=None,
                         point_size: float | None = None, alpha: float = 0.6, text_name: str = "text"):
    """Two states of a model (e.g. before and after ReCLIP or CLIP-Refine)
    side by side in ONE shared 2-D space, with arrows showing where points
    moved.

    The reducer is fitted once on the union of all embeddings of both
    states, so positions are comparable across panels; both panels get the
    same axis limits. The right panel carries arrows from each point's old
    position to its new one, for a seeded random subset of ``n_arrows``
    points (``None`` for all).

    Parameters
    ----------
    before, after : (image_emb, text_emb) tuples, or one array each
        Row i of ``before`` and of ``after`` must be the same item, so the
        shapes must match.
    labels, text_labels, class_names : as in :func:`plot_embeddings`
    method : {"umap", "pca", "tsne"}
    n_arrows : int >= 0 or None
    random_state : int
        Seed of the reducer and of the arrow subset.
    titles : two str
    axes : two matplotlib Axes or None (a new 1 x 2 figure)
    reducer_kwargs : dict or None, passed to :func:`fit_2d`.
    text_name : str
        What the texts are, for the legend and the titles: ``"caption"`` or
        ``"class prompt"``. One legend for both panels goes under them.

    Returns
    -------
    matplotlib.figure.Figure
    """
    b_img, b_txt = _as_state(before, "before")
    a_img, a_txt = _as_state(after, "after")
    if (b_txt is None) != (a_txt is None):
        raise ValueError("before and after must both be (image_emb, text_emb) tuples, or both single arrays")
    for b, a, what in ((b_img, a_img, "image"), (b_txt, a_txt, "text")):
        if b is not None and b.shape != a.shape:
            raise ValueError(f"before and after {what} embeddings differ in shape ({b.shape} vs {a.shape}); "
                             "row i of both must be the same item")
    if n_arrows is not None and (not isinstance(n_arrows, Integral) or n_arrows < 0):
        raise ValueError(f"n_arrows must be a non-negative integer or None, got {n_arrows!r}")
    if len(titles) != 2:
        raise ValueError(f"titles must hold two strings, got {titles!r}")
    text_name = _check_text_name(text_name)
    n_i = len(b_img)
    n_t = 0 if b_txt is None else len(b_txt)
    lab_i = _label_array(labels, n_i, "labels")
    lab_t = _label_array(text_labels, n_t, "text_labels") if n_t else None
    if lab_t is None and lab_i is not None and n_t == n_i:
        lab_t = lab_i
    blocks = [b_img] + ([b_txt] if n_t else []) + [a_img] + ([a_txt] if n_t else [])
    y = fit_2d(np.vstack(blocks), method, random_state, **(reducer_kwargs or {}))
    half = n_i + n_t
    y_before, y_after = y[:half], y[half:]

    own_figure = axes is None
    if own_figure:
        fig, axes = _pyplot().subplots(1, 2, figsize=(13, 6.6), sharex=True, sharey=True)
        fig.subplots_adjust(bottom=0.2)
    else:
        if len(axes) != 2:
            raise ValueError("axes must hold two matplotlib Axes")
        fig = axes[0].figure
    labs = {"image": lab_i, "text": lab_t}
    palette = _palette_for(labs)
    for ax, yy, (im, tx), ttl in zip(axes, (y_before, y_after), ((b_img, b_txt), (a_img, a_txt)), titles):
        pts = {"image": yy[:n_i], "text": yy[n_i:] if n_t else None}
        gap = None if tx is None else _m.centroid_distance(im, tx)
        # the titles carry each panel's gap, so the shared legend names the arrow only
        handles = _draw_map(ax, pts, labs, class_names, palette, size=point_size, alpha=alpha,
                            legend=False, text_name=text_name)
        _axis_labels(ax, method)
        ax.set_title(ttl if gap is None else f"{ttl}: gap to the {text_name}s {gap:.3f}")
    # one legend for both panels, under them, where it hides no point: in the margin of a
    # figure made here, below the caller's figure otherwise
    loc, anchor = ("lower center", (0.5, 0.01)) if own_figure else ("upper center", (0.5, 0.0))
    fig.legend(handles=handles, loc=loc, bbox_to_anchor=anchor, ncol=6, fontsize="small", frameon=False)

    total = len(y_before)
    k = total if n_arrows is None else min(int(n_arrows), total)
    if k:
        pick = np.sort(np.random.default_rng(random_state).choice(total, size=k, replace=False))
        start, move = y_before[pick], y_after[pick] - y_before[pick]
        axes[1].quiver(start[:, 0], start[:, 1], move[:, 0], move[:, 1], angles="xy", scale_units="xy",
                       scale=1, width=0.0025, headwidth=5, headlength=6, headaxislength=5,
                       color="0.2", alpha=0.6, zorder=4, gid="shift-arrows")
    lo, hi = y.min(axis=0), y.max(axis=0)
    pad = 0.05 * np.maximum(hi - lo, 1e-9)
    for ax in axes:
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    fig.suptitle(f"Embedding shift in one shared {_METHOD_NAME[method.lower().replace('-', '')]} map"
                 + (f" (arrows: {k} of {total} points)" if k else ""))
    return fig


# -- the shift experiment -------------------------------------------------------------------
# accuracy axes span at least this much, so that a few images do not look like a cliff
MIN_ACCURACY_SPAN = 0.10
GAP_SHIFT_GAP = "gap to the class prompts"


def _accuracy_axis(ax, tables) -> None:
    lo = min(float(t["accuracy"].min()) for t in tables)
    hi = max(float(t["accuracy"].max()) for t in tables)
    if hi - lo < MIN_ACCURACY_SPAN:
        mid = 0.5 * (lo + hi)
        lo, hi = mid - MIN_ACCURACY_SPAN / 2, mid + MIN_ACCURACY_SPAN / 2
        if lo < 0:
            lo, hi = 0.0, MIN_ACCURACY_SPAN
        if hi > 1:
            lo, hi = 1.0 - MIN_ACCURACY_SPAN, 1.0
    pad = 0.05 * (hi - lo)
    ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad))
    sizes = {t.attrs.get("n_images") for t in tables}
    n = sizes.pop() if len(sizes) == 1 else None
    ax.set_ylabel("zero-shot accuracy" + (f"\n(1 point = {n / 100:g} of {n} images)" if n else ""))


def plot_gap_shift(shift, ax=None, title: str | None = None):
    """Zero-shot accuracy (left axis) and the gap it shifts, between the
    images and the class prompts (right axis), against the shift ``delta``
    of :func:`modgap.metrics.shift_along_gap`.

    A dotted line marks ``delta = 0`` (the model as it is) and a dashed one
    the delta of the smallest gap. The right-hand axis is a twin of ``ax``
    (``ax.figure.axes`` holds it). The accuracy axis spans at least
    :data:`MIN_ACCURACY_SPAN` and says how many images one point is, so a
    change of a few images does not read as a cliff; the legend sits below
    the axes, where it hides no data.

    ``shift`` may also map model names to such tables, e.g. ``{"before": s0,
    "after": s1}``, to compare models: each model gets one colour, its
    accuracy a solid line (gid ``"accuracy-line-NAME"``) and its gap distance
    a dashed one (``"distance-line-NAME"``), and the legend names them.

    Returns
    -------
    matplotlib.axes.Axes (the accuracy axis)

    References
    ----------
    Liang et al., "Mind the Gap", NeurIPS 2022, Table 1 (the shifting experiment).
    """
    single = isinstance(shift, pd.DataFrame)
    if not single and not isinstance(shift, Mapping):
        raise TypeError("shift must be the DataFrame returned by modgap.metrics.shift_along_gap, or a mapping "
                        f"name -> such DataFrame, got {type(shift).__name__}")
    curves = {"shift": shift} if single else {name: df for name, df in shift.items()}
    if not curves:
        raise ValueError("shift is an empty mapping; pass at least one table from shift_along_gap")
    for name, table in curves.items():
        where = "shift" if single else f"shift[{name!r}]"
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"{where} must be the DataFrame returned by modgap.metrics.shift_along_gap, "
                            f"got {type(table).__name__}")
        missing = [c for c in ("delta", "accuracy", "centroid_distance") if c not in table.columns]
        if missing:
            raise ValueError(f"{where} lacks the column(s) {missing}; pass the output of shift_along_gap")
        if table.empty:
            raise ValueError(f"{where} has no rows")
        curves[name] = table.sort_values("delta")
        curves[name].attrs = dict(table.attrs)
    ax = _new_ax(ax, figsize=(7, 4.5))
    ax2 = ax.twinx()
    handles = []
    for i, (name, df) in enumerate(curves.items()):
        color = "C0" if single else f"C{i % 10}"
        who = "" if single else f"{name}: "
        acc, = ax.plot(df["delta"], df["accuracy"], "o-", color=color, ms=4,
                       label=f"{who}zero-shot accuracy", gid="accuracy-line" if single else f"accuracy-line-{name}")
        dist, = ax2.plot(df["delta"], df["centroid_distance"], "s--", color="C1" if single else color, ms=3,
                         alpha=1.0 if single else 0.7, label=f"{who}{GAP_SHIFT_GAP}",
                         gid="distance-line" if single else f"distance-line-{name}")
        handles += [acc, dist]
    handles.append(ax.axvline(0.0, color="0.4", ls=":", label="delta = 0 (unshifted)"))
    if single:
        df = curves["shift"]
        best = float(df["delta"].iloc[int(np.argmin(df["centroid_distance"].to_numpy()))])
        handles.append(ax.axvline(best, color="C1", ls="-.", lw=1, label=f"smallest gap (delta = {best:.2f})"))
    _accuracy_axis(ax, list(curves.values()))
    ax.set_xlabel("delta: shift along the gap direction (+ moves the modalities together)")
    ax2.set_ylabel(f"{GAP_SHIFT_GAP} ||c_I - c_T||" + ("" if single else " (dashed)"),
                   color="C1" if single else "black")
    if single:
        ax.yaxis.label.set_color("C0")
    # the accuracy axis drawn over its twin; the legend below the axes hides no data
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize="small",
              frameon=False)
    ax.set_title(title if title is not None else "Shifting embeddings along the gap")
    return ax


# -- similarity heat map ------------------------------------------------------------------------
def _spread(n: int, k: int) -> np.ndarray:
    if n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def plot_similarity(image_emb, text_emb, labels=None, *, text_labels=None, joint: bool = False,
                    max_items: int = 100, ax=None, cmap: str = "viridis", colorbar: bool = True,
                    title: str | None = None):
    """Heat map of cosine similarities between normalised embeddings.

    ``joint=False``: images (rows) against texts (columns); a paired set
    shows a bright diagonal. ``joint=True``: all embeddings against all, the
    image block first; the modality gap shows as two bright diagonal blocks
    (within a modality) and darker off-diagonal blocks (across).

    With ``labels`` (and ``text_labels``, or the image labels for an equal
    number of texts) rows and columns are sorted by class. At most
    ``max_items`` of each modality are shown, evenly spaced.

    Returns
    -------
    matplotlib.axes.Axes
    """
    if not isinstance(max_items, Integral) or max_items < 1:
        raise ValueError(f"max_items must be a positive integer, got {max_items!r}")
    img, txt = check_pair(image_emb, text_emb)
    lab_i = _label_array(labels, len(img), "labels")
    lab_t = _label_array(text_labels, len(txt), "text_labels")
    if lab_t is None and lab_i is not None and len(txt) == len(img):
        lab_t = lab_i
    oi = np.argsort(lab_i, kind="stable") if lab_i is not None else np.arange(len(img))
    ot = np.argsort(lab_t, kind="stable") if lab_t is not None else np.arange(len(txt))
    if lab_i is not None and lab_t is lab_i:
        ot = oi
    oi, ot = oi[_spread(len(oi), max_items)], ot[_spread(len(ot), max_items)]
    ax = _new_ax(ax, figsize=(6.5, 5.5))
    if joint:
        z = np.vstack([img[oi], txt[ot]])
        sim = z @ z.T
        im = ax.imshow(sim, cmap=cmap, interpolation="nearest")
        ax.axhline(len(oi) - 0.5, color="white", lw=1.2)
        ax.axvline(len(oi) - 0.5, color="white", lw=1.2)
        ticks = [len(oi) / 2 - 0.5, len(oi) + len(ot) / 2 - 0.5]
        ax.set_xticks(ticks, ["images", "texts"])
        ax.set_yticks(ticks, ["images", "texts"])
        default = "Cosine similarity within and across modalities"
    else:
        sim = img[oi] @ txt[ot].T
        im = ax.imshow(sim, cmap=cmap, interpolation="nearest", aspect="auto")
        ax.set_xlabel(f"text ({len(ot)} shown" + (", sorted by class)" if lab_t is not None else ")"))
        ax.set_ylabel(f"image ({len(oi)} shown" + (", sorted by class)" if lab_i is not None else ")"))
        default = "Cosine similarity, images x texts"
    if colorbar:
        ax.figure.colorbar(im, ax=ax, label="cosine similarity")
    ax.set_title(title if title is not None else default)
    return ax


# -- spectrum -----------------------------------------------------------------------------------
def plot_spectrum(emb, text_emb=None, *, ax=None, normalize: bool = True, relative: bool = True,
                  log: bool = True, top: int | None = None, title: str | None = None):
    """Covariance eigenvalues (:func:`modgap.metrics.spectrum`), largest first,
    one line per set, each labelled with its effective rank.

    Parameters
    ----------
    emb : array [N, D], or a mapping name -> array (e.g.
        ``{"image": img, "text": txt}`` or several models)
    text_emb : array [M, D] or None
        With it, ``emb`` is taken as the images: ``plot_spectrum(img, txt)``
        draws the lines "image" and "text".
    normalize : L2-normalise rows first (default True)
    relative : plot each eigenvalue's share of the total variance
    log : logarithmic y axis (zero eigenvalues are left out)
    top : plot only the first ``top`` eigenvalues

    Returns
    -------
    matplotlib.axes.Axes

    References
    ----------
    Jing et al., "Understanding Dimensional Collapse in Contrastive
    Self-supervised Learning", ICLR 2022; Roy & Vetterli, EUSIPCO 2007.
    """
    if text_emb is not None:
        if isinstance(emb, Mapping):
            raise ValueError("pass either a mapping name -> array as emb, or image and text arrays, not both")
        sets = {"image": emb, "text": text_emb}
    else:
        sets = dict(emb) if isinstance(emb, Mapping) else {"embeddings": emb}
    if not sets:
        raise ValueError("emb is an empty mapping; pass at least one array of embeddings")
    if top is not None and (not isinstance(top, Integral) or top < 1):
        raise ValueError(f"top must be a positive integer or None, got {top!r}")
    ax = _new_ax(ax, figsize=(7, 4.5))
    for name, x in sets.items():
        arr = check_embeddings(x, f"emb[{name!r}]" if len(sets) > 1 or name != "embeddings" else "emb",
                            min_rows=2)
        if normalize:
            arr = unit_rows(arr, "emb")
        ev = _m.spectrum(arr, normalize=False)
        er = _m.effective_rank_from_spectrum(ev)
        vals = ev / ev.sum() if relative else ev
        if top is not None:
            vals = vals[:top]
        idx = np.arange(1, len(vals) + 1)
        keep = vals > 0 if log else np.ones(len(vals), dtype=bool)
        ax.plot(idx[keep], vals[keep], "-", lw=1.6, label=f"{name} (effective rank {er:.1f})",
                gid=f"spectrum-{name}")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("component, by variance")
    ax.set_ylabel("share of variance" if relative else "eigenvalue")
    ax.legend(fontsize="small")
    ax.set_title(title if title is not None else "Covariance spectrum")
    return ax


# -- gap anatomy --------------------------------------------------------------------------------
def plot_gap_anatomy(anatomy, top: int = 20, ax=None, title: str | None = None):
    """Which embedding dimensions carry the modality gap: bars of the
    ``top`` largest shares of the squared centroid gap (labelled by the
    index of the dimension), and their cumulative share as a line on a twin
    axis, with dotted marks at 50% and 90%.

    Schrodi et al. (2025) find that a few dimensions drive the gap of CLIP
    models; a steep cumulative line that reaches 90% within a few bars shows
    that here. The bars carry the gid ``"share-bars"``, the line
    ``"cumulative-line"`` and the marks ``"mark-50"`` and ``"mark-90"``; the
    twin axis, which holds the line, the marks and the legend, is in
    ``ax.figure.axes``.

    Parameters
    ----------
    anatomy : pandas.DataFrame or (image_emb, text_emb)
        The table of :func:`modgap.metrics.gap_anatomy`, or the two arrays
        to compute it from.
    top : int
        How many dimensions to draw (all of them when fewer).
    ax : matplotlib Axes or None
    title : str or None

    Returns
    -------
    matplotlib.axes.Axes (the share axis)

    References
    ----------
    Schrodi et al., "Two Effects, One Trigger: On the Modality Gap, Object
    Bias, and Information Imbalance in Contrastive Vision-Language Models",
    ICLR 2025.
    """
    if isinstance(top, bool) or not isinstance(top, Integral) or top < 1:
        raise ValueError(f"top must be a positive integer, got {top!r}")
    if isinstance(anatomy, (tuple, list)) and len(anatomy) == 2:
        anatomy = _m.gap_anatomy(*anatomy)
    if not isinstance(anatomy, pd.DataFrame):
        raise TypeError("anatomy must be the DataFrame returned by modgap.metrics.gap_anatomy or a pair "
                        f"(image_emb, text_emb), got {type(anatomy).__name__}")
    missing = [c for c in ("dim", "share") if c not in anatomy.columns]
    if missing or anatomy.empty:
        raise ValueError(f"anatomy lacks the column(s) {missing} or has no rows; pass the output of gap_anatomy")
    table = anatomy.sort_values("share", ascending=False, kind="stable")
    shares = table["share"].to_numpy(dtype=np.float64)
    cum = np.cumsum(shares)
    k = min(int(top), len(table))
    x = np.arange(k)
    ax = _new_ax(ax, figsize=(max(6.0, 0.32 * k + 2.5), 4.5))
    bars = ax.bar(x, shares[:k], color="C0", label="share of ||c_I - c_T||^2", gid="share-bars")
    ax.set_xticks(x, [str(d) for d in table["dim"].to_numpy()[:k]], rotation=90 if k > 12 else 0,
                  fontsize="small")
    ax.set_xlabel(f"embedding dimension (the {k} largest shares of {len(table)})")
    ax.set_ylabel("share of the squared gap", color="C0")
    ax2 = ax.twinx()
    line, = ax2.plot(x, cum[:k], "o-", color="C1", ms=3, label="cumulative share", gid="cumulative-line")
    handles = [bars, line]
    for level, style in ((0.5, ":"), (0.9, "--")):
        reach = cum >= level - 1e-9
        n = int(np.argmax(reach)) + 1 if reach.any() else None
        where = "not reached" if n is None else f"{n} dimension" + ("s" if n > 1 else "")
        handles.append(ax2.axhline(level, color="0.4", ls=style, lw=1,
                                   label=f"{level:.0%} of the gap ({where})", gid=f"mark-{int(level * 100)}"))
    ax2.set_ylim(0.0, 1.05)
    ax2.set_ylabel("cumulative share", color="C1")
    ax2.legend(handles=handles, loc="center right", fontsize="small")
    ax.set_title(title if title is not None else "Which dimensions carry the gap")
    return ax


# -- report comparison --------------------------------------------------------------------------
def _reports_frame(reports) -> pd.DataFrame:
    if isinstance(reports, pd.DataFrame):
        df = reports
    elif isinstance(reports, pd.Series):
        df = reports.to_frame().T
    elif isinstance(reports, Mapping):
        df = pd.DataFrame({k: pd.Series(v) for k, v in reports.items()}).T
    elif isinstance(reports, (list, tuple)) and all(isinstance(r, pd.Series) for r in reports):
        df = pd.DataFrame(list(reports))
    else:
        raise ValueError("reports must be a DataFrame (one row per model), a Series, a list of Series "
                         "from gap_report, or a mapping name -> Series")
    if df.empty:
        raise ValueError("reports holds no rows")
    return df


def plot_report_comparison(reports, metrics=None, *, ncols: int = 4, fig=None, title: str | None = None):
    """Small bar charts, one panel per figure of :func:`modgap.metrics.gap_report`,
    one bar per model, each bar labelled with its value.

    Parameters
    ----------
    reports : DataFrame (rows are models), a list of Series, or a mapping
        name -> Series, as returned by ``gap_report``.
    metrics : sequence of str or None
        Which entries to show; by default the gap, alignment, uniformity,
        separability, rank, recall@1 and zero-shot entries that are present,
        then every other numeric column (such as the zero-shot accuracy per
        domain of :class:`modgap.evaluate.WorldBenchmark`) except
        ``gap_report``'s counts and its recall beyond @1.
    ncols : int
    fig : matplotlib Figure or None

    Returns
    -------
    matplotlib.figure.Figure
    """
    df = _reports_frame(reports)
    if metrics is None:
        metrics = [c for c in _REPORT_DEFAULTS if c in df.columns]
        counts = ("n_images", "n_texts", "dim")
        metrics += [c for c in df.columns
                    if c not in metrics and c not in counts and not str(c).startswith(("i2t_R@", "t2i_R@"))
                    and pd.to_numeric(df[c], errors="coerce").notna().any()]
        if not metrics:
            raise ValueError("reports has no numeric entries to show; pass metrics=[...]")
    else:
        metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        missing = [c for c in metrics if c not in df.columns]
        if missing or not metrics:
            raise ValueError(f"metrics names entries that reports lacks: {missing}; "
                             f"available: {list(df.columns)}")
    if not isinstance(ncols, Integral) or ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols!r}")
    ncols = min(int(ncols), len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    if fig is None:
        fig = _pyplot().figure(figsize=(3.3 * ncols, 2.9 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    names = [str(i) for i in df.index]
    colors = [f"C{i % 10}" for i in range(len(names))]
    for ax, metric in zip(axes, metrics):
        vals = pd.to_numeric(df[metric], errors="coerce").to_numpy(dtype=np.float64)
        bars = ax.bar(np.arange(len(names)), np.nan_to_num(vals), color=colors, gid=f"bars-{metric}")
        ax.bar_label(bars, labels=["n/a" if np.isnan(v) else f"{v:.3g}" for v in vals], fontsize="x-small")
        ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right", fontsize="small")
        ax.set_title(metric, fontsize="medium")
        ax.margins(y=0.15)
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle(title if title is not None else "Gap report comparison")
    fig.tight_layout()
    return fig


def plot_images(images, labels=None, class_names=None, *, n: int = 16, ncols: int = 8, ax=None,
                title: str | None = None, random_state: int | None = 0):
    """A grid of ``n`` images, each titled with its class.

    ``images`` is an :class:`~modgap.data.ImageSet` (its labels and class
    names are used) or a uint8 array ``[N, H, W, 3]``. A seeded random
    sample is drawn (``random_state=None`` takes the first ``n``). Returns
    the Axes.
    """
    import matplotlib.pyplot as plt

    from ..data.containers import ImageSet

    if isinstance(images, ImageSet):
        labels = images.labels if labels is None else labels
        class_names = images.classnames if class_names is None else class_names
        title = title or images.name
        images = images.images
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3 or len(arr) == 0:
        raise ValueError(f"images must be an ImageSet or a non-empty uint8 array [N, H, W, 3], got shape {arr.shape}")
    if not isinstance(n, Integral) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    n = min(n, len(arr))
    idx = (np.arange(n) if random_state is None
           else np.sort(np.random.default_rng(random_state).choice(len(arr), size=n, replace=False)))
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    h, w = arr.shape[1:3]
    pad = max(1, h // 16)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for j, i in enumerate(idx):
        r, c = divmod(j, ncols)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = arr[i]
    if ax is None:
        _, ax = plt.subplots(figsize=(1.3 * ncols, 1.45 * nrows))
    ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if labels is not None:
        labels = np.asarray(labels)
        for j, i in enumerate(idx):
            r, c = divmod(j, ncols)
            name = class_names[labels[i]] if class_names is not None else str(labels[i])
            ax.text(pad + c * (w + pad) + w / 2, pad + r * (h + pad) + h + pad * 0.2, name,
                    ha="center", va="top", fontsize=7)
    ax.set_title(title or f"{n} images")
    return ax
