"""Graphs over embeddings, as ReCLIP uses them: the projection that removes the
direction every class embedding shares, a k-nearest-neighbour affinity graph
built in chunks, and label propagation solved by conjugate gradient.

Everything here is sparse: the graph is never held as an ``N x N`` dense
matrix. The reference code (``michiganleon/ReCLIP_WACV``, ``models.py``,
``LabelPropagationCluster``) builds the affinity matrix, its top-k mask, the
symmetrised graph and the degree matrix densely, and gets the degrees by
multiplying with an all-ones ``N x N`` matrix; that is ``O(N^2)`` memory and
``O(N^3)`` time. Here the neighbours are found a block of rows at a time, the
graph is a sparse matrix with at most ``2 k N`` entries, the degrees are its
row sums, and the conjugate gradient runs on sparse products. The answer
is the same (``benchmarks/label_propagation.py`` checks it against a dense
implementation).

Finding the neighbours exactly still costs ``N^2`` dot products: about 15 s
for 50,000 x 512 on two CPU cores, 1.5 hours for a million. ``index="faiss"``
(the default ``index="auto"`` picks it for 100,000 nodes and more on the CPU
when ``faiss-cpu`` is installed) finds them with an HNSW index instead, in
``O(N log N)`` time and ``O(N D)`` memory. That changes one thing: the
neighbours are approximate. Each row still has ``k`` neighbours with the
exact affinities, and the graph is symmetrised and normalised the same way,
but a few of the ``k`` are near points rather than the nearest. On the
benchmark's clustered embeddings (``benchmarks/label_propagation.py
--index faiss``, k = 20) 99.8% of the exact neighbours are found at 200,000
and at 1,000,000 points, and at 200,000 the labels agree with the exact
graph's on 99.9% of the images (32 s instead of 223 s on two CPU cores; a
million takes 230 s and 7.8 GB in all, the inputs included). Recall
depends on the data: it is lower where the points have a higher intrinsic
dimension (95-99% on the clustered data described next to
``_HNSW_EF_SEARCH``).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from ..validation import check_choice, check_tensor

__all__ = [
    "PropagationResult",
    "conjugate_gradient",
    "knn_affinity",
    "label_propagation",
    "normalized_adjacency",
    "project_embeddings",
    "projection",
    "propagate",
]

# elements of one block of the similarity matrix (rows x N): 2**24 floats is 64 MB
_BLOCK_ELEMENTS = 2 ** 24

_INDEXES = ("auto", "exact", "faiss")
# index="auto" searches exactly below this many nodes: the exact search takes about a minute at
# 100,000 x 512 on two CPU cores and grows as N^2, so past this size the approximate index saves
# minutes to hours, while below it the exact answer costs little
_AUTO_EXACT_MAX = 100_000
_warned_slow = False
# the FAISS index: an HNSW graph with _HNSW_M links a node, built with a candidate list of
# _HNSW_EF_CONSTRUCTION (FAISS's default) and searched with one of _HNSW_EF_SEARCH or 2 (k + 1),
# whichever is larger: on benchmarks/label_propagation.py's embeddings (k = 20) a list of 32 finds
# 99.5% of the exact neighbours and 48 finds 99.8% for 1.5 times the search time, and on
# clustered data of a higher intrinsic dimension 32 finds only 93-97% where 48 finds 95-99%;
# _FAISS_ROWS points are searched at a time
_HNSW_M = 16
_HNSW_EF_CONSTRUCTION = 40
_HNSW_EF_SEARCH = 48
_FAISS_ROWS = 65536


def projection(class_emb, rank_cap: int | None = None) -> torch.Tensor:
    """The projector that drops the direction shared by all class embeddings.

    With the class embeddings as the columns of ``W`` (``[D, C]``, not
    mean-centred) and ``W = U S V^T``, the projector is
    ``P = U[:, 1:r] U[:, 1:r]^T``: the span of the class embeddings without
    its first singular direction, the one every class has in common
    (ReCLIP, sec. 3.1). Features are then ``normalize(x @ P)``.

    Parameters
    ----------
    class_emb : tensor or array ``[C, D]``
        One row per class (modgap's convention; the reference keeps them as
        columns).
    rank_cap : int, optional
        The reference's ``cut_dim``: only columns ``1 .. rank_cap - 1`` of
        ``U`` are kept, so the projector has rank at most ``rank_cap - 1``.
        The reference uses 768, and 250 for tasks with more than 500
        classes. ``None`` keeps every column.

    Returns
    -------
    tensor ``[D, D]``, float32, on the device of ``class_emb``; symmetric and
    idempotent, ``P @ u0 = 0`` for the dropped direction ``u0``.

    Notes
    -----
    Directions with a singular value at round-off level are left out (the
    reference keeps them, though they are arbitrary vectors when two class
    embeddings coincide). If fewer than two directions remain (always the
    case with two classes), every projected point would land on ``+u`` or
    ``-u`` and the graph would carry no information; the reference returns
    that projector silently. modgap warns and returns the identity instead
    (no projection), so the graph is built on the plain embeddings.
    """
    w = check_tensor(class_emb, "class_emb")
    c, d = w.shape
    if c < 2:
        raise ValueError(f"class_emb must have at least 2 rows (classes), got {c}")
    if rank_cap is not None and (not isinstance(rank_cap, (int, np.integer)) or isinstance(rank_cap, bool)
                                 or rank_cap < 1):
        raise ValueError(f"rank_cap must be a positive integer or None, got {rank_cap!r}")
    u, s, _ = torch.linalg.svd(w.T.double(), full_matrices=False)  # u [D, min(D, C)]
    tol = s[0] * max(c, d) * torch.finfo(torch.float32).eps
    rank = int((s > tol).sum())
    stop = rank if rank_cap is None else min(rank, int(rank_cap))
    keep = u[:, 1:stop]
    if keep.shape[1] < 2:
        warnings.warn(
            f"projection: the class embeddings leave {keep.shape[1]} direction(s) once the shared one is "
            f"dropped (C={c}, rank {rank}, rank_cap={rank_cap}); every point would collapse onto one line. "
            "Using no projection (the identity) instead.",
            stacklevel=2,
        )
        return torch.eye(d, dtype=torch.float32, device=w.device)
    return (keep @ keep.T).float()


def project_embeddings(emb, class_emb, rank_cap: int | None = None) -> torch.Tensor:
    """Embeddings in ReCLIP's projection space, ``normalize(emb @ P)`` with
    ``P = projection(class_emb, rank_cap)``: the features its
    label-propagation graph compares, e.g. to see how the projection pulls
    the class embeddings apart (``project_embeddings(class_emb, class_emb)``).

    Parameters
    ----------
    emb : tensor or array ``[N, D]``
    class_emb : tensor or array ``[C, D]``
    rank_cap : int, optional
        Passed to :func:`projection`.

    Returns
    -------
    tensor ``[N, D]``, float32, on the device of ``class_emb``; rows of
    unit length, except a row the projection maps to zero, which stays zero.
    """
    p = projection(class_emb, rank_cap=rank_cap)
    x = check_tensor(emb, "emb", p.device)
    if x.shape[1] != p.shape[0]:
        raise ValueError(f"emb has dim {x.shape[1]} but class_emb has dim {p.shape[0]}")
    return F.normalize(x @ p, dim=-1)


def knn_affinity(x: torch.Tensor, k: int = 20, chunk_size: int | None = None, progress=None,
                 index: str = "auto") -> torch.Tensor:
    """The symmetrised k-nearest-neighbour affinity graph of unit vectors.

    ``A = (x x^T + 1) / 2`` with a zero diagonal; each row keeps its ``k``
    largest entries (``A_k``); the graph is ``W = (A_k + A_k^T) / 2``.

    Parameters
    ----------
    x : tensor ``[N, D]``
        Unit-length rows (the node features).
    k : int
        Neighbours kept per row, ``1 <= k < N``.
    chunk_size : int, optional
        Rows and columns of one block of similarities for the exact index
        (default 4096, a 64 MB block). Ignored by the FAISS index.
    progress : bool, optional
        Show a progress bar (default: from 20,000 nodes on).
    index : {"auto", "exact", "faiss"}
        How the neighbours are found.

        * ``"exact"``: brute force. The similarities are computed one
          ``chunk_size x chunk_size`` block at a time on the device of ``x``,
          only the blocks on and above the diagonal; each block updates the
          running top-``k`` of its rows and, transposed, of its columns.
          Memory is ``O(chunk_size^2 + N k)``, time ``O(N^2 D)``: about 15 s
          for 50,000 x 512 on two CPU cores, 1.5 hours at a million.
        * ``"faiss"``: approximate, from a FAISS HNSW index
          (``IndexHNSWFlat``, inner product) on the CPU: a navigable
          small-world graph over the points, built and searched with
          ``torch.get_num_threads()`` threads (the build in one thread with a
          FAISS too old to build deterministically in parallel), the same
          graph on every call. Memory is
          ``O(N D)`` (one copy of ``x`` in the index), time about
          ``O(N log N)``: label propagation over a million x 512 takes
          about 4 minutes on two CPU cores. Some true neighbours are missed and replaced by near ones
          (see the module docstring for the recall measured); the weights
          of those found are the exact ones. Needs ``faiss-cpu``
          (``pip install faiss-cpu``, or the extra ``modgap[scale]``); the
          graph comes back on the device of ``x``.
        * ``"auto"`` (default): exact for a CUDA tensor (where the brute
          force is fast) or fewer than 100,000 nodes, FAISS otherwise when it
          is installed; exact with a warning (once) when it is not.

    Returns
    -------
    a coalesced sparse COO tensor ``[N, N]`` (float32), symmetric, with no
    diagonal entries, at least ``k`` entries a row (its own neighbours and
    the rows that have it as one) and at most ``2 k N`` in all.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"x must be a 2-D tensor [N, D], got {type(x).__name__} "
                         f"{tuple(getattr(x, 'shape', ()))}")
    n = x.shape[0]
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k >= n:
        raise ValueError(f"k={k} must be smaller than the number of nodes ({n})")
    if chunk_size is None:
        chunk_size = max(1, min(n, math.isqrt(_BLOCK_ELEMENTS)))
    elif not isinstance(chunk_size, (int, np.integer)) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    k = int(k)
    x = x.float()
    show = (n >= 20000) if progress is None else bool(progress)
    if _resolve_index(index, x) == "faiss":
        best_val, best_idx = _faiss_knn(x, k, show)
    else:
        best_val, best_idx = _exact_knn(x, k, int(chunk_size), show)
    return _symmetric_graph(best_val, best_idx)


def _resolve_index(index, x: torch.Tensor) -> str:
    """``"exact"`` or ``"faiss"``: the search ``index`` asks for on ``x``."""
    global _warned_slow
    check_choice(index, "index", _INDEXES)
    if index != "auto":
        return index
    if x.device.type == "cuda" or x.shape[0] < _AUTO_EXACT_MAX:
        return "exact"
    try:
        _import_faiss()
    except ImportError:
        if not _warned_slow:
            _warned_slow = True
            warnings.warn(
                f"knn_affinity: {x.shape[0]:,} nodes on the CPU without FAISS: the exact neighbour search "
                "costs N^2 dot products and will be slow (an hour and a half at a million x 512 on two cores). "
                "Install the extra for the approximate index: pip install 'modgap[scale]' (or faiss-cpu).",
                stacklevel=3,
            )
        return "exact"
    return "faiss"


def _import_faiss():
    try:
        import faiss
    except ImportError as err:
        raise ImportError(
            "index='faiss' needs the FAISS library: pip install faiss-cpu "
            "(or install modgap with the extra: pip install 'modgap[scale]')"
        ) from err
    return faiss


def _exact_knn(x: torch.Tensor, k: int, chunk_size: int, show: bool):
    """Top-``k`` similarities ``(x.y + 1) / 2`` of every row and their
    columns, by brute force over blocks on and above the diagonal."""
    from tqdm.auto import tqdm

    n = x.shape[0]
    device = x.device
    best_val = torch.full((n, k), -math.inf, dtype=torch.float32, device=device)
    best_idx = torch.zeros((n, k), dtype=torch.long, device=device)

    def merge(r0, r1, v, i):
        cand_v = torch.cat([best_val[r0:r1], v], dim=1)
        cand_i = torch.cat([best_idx[r0:r1], i], dim=1)
        top_v, pos = cand_v.topk(k, dim=1)
        best_val[r0:r1] = top_v
        best_idx[r0:r1] = cand_i.gather(1, pos)

    starts = list(range(0, n, chunk_size))
    pairs = [(a, b) for ai, a in enumerate(starts) for b in starts[ai:]]
    with torch.no_grad():
        for a, b in tqdm(pairs, desc="kNN graph", unit="block", disable=not show, leave=False):
            a1, b1 = min(n, a + chunk_size), min(n, b + chunk_size)
            sim = x[a:a1] @ x[b:b1].T
            sim.add_(1.0).mul_(0.5)
            if a == b:
                sim.fill_diagonal_(-math.inf)
            v, i = sim.topk(min(k, b1 - b), dim=1)
            merge(a, a1, v, i + b)
            if a != b:
                v, i = sim.topk(min(k, a1 - a), dim=0)
                merge(b, b1, v.T, i.T + a)
            del sim
    return best_val, best_idx


def _exact_rows(x: torch.Tensor, rows: torch.Tensor, k: int):
    """Exact top-``k`` of a few ``rows`` of ``x`` against all of ``x``
    (self excluded), a block of rows at a time."""
    n = x.shape[0]
    step = max(1, _BLOCK_ELEMENTS // n)
    vals, idxs = [], []
    for s in range(0, len(rows), step):
        r = rows[s:s + step]
        sim = x[r] @ x.T
        sim.add_(1.0).mul_(0.5)
        sim[torch.arange(len(r)), r] = -math.inf
        v, i = sim.topk(k, dim=1)
        vals.append(v)
        idxs.append(i)
    return torch.cat(vals), torch.cat(idxs)


def _faiss_knn(x: torch.Tensor, k: int, show: bool):
    """Approximate top-``k`` as :func:`_exact_knn` returns it, from an HNSW
    index on the CPU; a row the search leaves short is searched exactly."""
    from tqdm.auto import tqdm

    faiss = _import_faiss()
    device = x.device
    xc = x.detach().to("cpu", torch.float32).contiguous()
    xs = xc.numpy()
    n, d = xs.shape
    threads = faiss.omp_get_max_threads()
    try:
        ann = faiss.IndexHNSWFlat(d, _HNSW_M, faiss.METRIC_INNER_PRODUCT)
        ann.hnsw.efConstruction = _HNSW_EF_CONSTRUCTION
        # older FAISS inserts in parallel in an unspecified order, so there only a one-thread build
        # gives the same graph on every call; newer FAISS (with hnsw_add_vertices_deterministic)
        # builds the same graph in any number of threads
        parallel = hasattr(faiss, "hnsw_add_vertices_deterministic")
        faiss.omp_set_num_threads(torch.get_num_threads() if parallel else 1)
        # one call: adding in parts would regrow the index's storage, holding two copies at once
        with tqdm(total=1, desc="kNN index (faiss)", disable=not show, leave=False) as bar:
            ann.add(xs)
            bar.update()
        # the search is deterministic in any number of threads
        faiss.omp_set_num_threads(torch.get_num_threads())
        ann.hnsw.efSearch = max(_HNSW_EF_SEARCH, 2 * (k + 1))
        sims = np.empty((n, k + 1), dtype=np.float32)
        ids = np.empty((n, k + 1), dtype=np.int64)
        for s in tqdm(range(0, n, _FAISS_ROWS), desc="kNN search (faiss)", unit="block", disable=not show,
                      leave=False):
            sims[s:s + _FAISS_ROWS], ids[s:s + _FAISS_ROWS] = ann.search(xs[s:s + _FAISS_ROWS], k + 1)
        del ann
    finally:
        faiss.omp_set_num_threads(threads)
    sims_t = torch.from_numpy(sims)
    ids_t = torch.from_numpy(ids)
    # k + 1 were asked for so that a row keeps k once it drops itself; -1 marks a slot the
    # search could not fill
    keep = (ids_t >= 0) & (ids_t != torch.arange(n)[:, None])
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :k]
    best_idx = ids_t.gather(1, order)
    best_val = sims_t.gather(1, order).add_(1.0).mul_(0.5)
    short = torch.nonzero(keep.sum(1) < k).flatten()
    del sims, ids, sims_t, ids_t, order, keep
    if len(short):
        v, i = _exact_rows(xc, short, k)
        best_val[short] = v
        best_idx[short] = i
    return best_val.to(device), best_idx.to(device)


def _symmetric_graph(best_val: torch.Tensor, best_idx: torch.Tensor) -> torch.Tensor:
    """``W = (A_k + A_k^T) / 2`` as a coalesced sparse COO tensor from each
    row's top-``k`` values and columns."""
    n, k = best_idx.shape
    device = best_idx.device
    src = torch.arange(n, device=device).repeat_interleave(k)
    dst = best_idx.reshape(-1)
    half = best_val.reshape(-1) * 0.5
    index = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])
    with warnings.catch_warnings():
        # torch 2.11 warns once that the checks are off, though they are switched off on purpose here:
        # the indices are built in range and checking them costs a pass over the graph
        warnings.filterwarnings("ignore", message=".*[Ss]parse invariant checks.*")
        w = torch.sparse_coo_tensor(index, torch.cat([half, half]), (n, n), check_invariants=False)
    return w.coalesce()


def normalized_adjacency(w: torch.Tensor) -> torch.Tensor:
    """``D^-1/2 W D^-1/2`` of a sparse COO graph, with ``D`` its row sums.

    Returns a sparse CSR tensor (the layout the products in
    :func:`conjugate_gradient` are fastest with). Rows with no weight keep
    zeros instead of dividing by zero.
    """
    if not w.is_sparse:
        raise ValueError("w must be a sparse COO tensor (see knn_affinity)")
    w = w.coalesce()
    n = w.shape[0]
    row, col = w.indices()
    v = w.values()
    deg = torch.zeros(n, dtype=v.dtype, device=v.device).index_add_(0, row, v)
    dinv = torch.where(deg > 0, deg.clamp_min(torch.finfo(v.dtype).tiny).rsqrt(), torch.zeros_like(deg))
    vn = v * dinv[row] * dinv[col]
    counts = torch.bincount(row, minlength=n)
    crow = torch.zeros(n + 1, dtype=torch.long, device=v.device)
    crow[1:] = counts.cumsum(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(crow, col, vn, (n, n), check_invariants=False)


def conjugate_gradient(matvec, b: torch.Tensor, max_iter: int = 20, tol: float = 1e-6) -> torch.Tensor:
    """Solve ``A X = B`` column by column for a symmetric positive definite
    ``A`` given as ``matvec``, with at most ``max_iter`` iterations a column.

    Each column runs its own conjugate gradient, exactly as one call of
    ``scipy.sparse.linalg.cg(A, b, rtol=tol, maxiter=max_iter)`` per column
    would (start at zero; a column stops once ``||r|| < tol * ||b||``); the
    columns are only batched so that one sparse product serves them all.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = torch.zeros_like(b)
    rs = (r * r).sum(0)
    limit = (tol * b.norm(dim=0)) ** 2
    active = (rs >= limit) & (rs > 0)
    rs_prev = rs
    for it in range(max_iter):
        if not bool(active.any()):
            break
        if it == 0:
            p = r.clone()
        else:
            beta = torch.where(active, rs / rs_prev, torch.zeros_like(rs))
            p = torch.where(active, r + beta * p, p)
        q = matvec(p)
        pq = (p * q).sum(0)
        step = torch.where(active & (pq != 0), rs / torch.where(pq != 0, pq, torch.ones_like(pq)),
                           torch.zeros_like(rs))
        x = x + step * p
        r = r - step * q
        rs_prev = rs
        rs = torch.where(active, (r * r).sum(0), rs)
        active = active & (rs >= limit)
    return x


class PropagationResult:
    """What :func:`propagate` returns.

    Attributes
    ----------
    scores : tensor ``[S + N, C]``
        The solution ``F`` for every node, seeds first.
    labels : LongTensor ``[S + N]``
        The class of every node: the argmax of its row of ``F``; nodes the
        propagation did not reach (an all-zero row) take the class of the
        most similar seed in the graph's feature space.
    features : tensor ``[S + N, D]``
        The (projected, normalised) node features the graph was built on.
    n_seeds : int
    unreached : int
        How many nodes the propagation did not reach.
    """

    def __init__(self, scores, labels, features, n_seeds, unreached):
        self.scores = scores
        self.labels = labels
        self.features = features
        self.n_seeds = n_seeds
        self.unreached = unreached

    @property
    def image_labels(self) -> torch.Tensor:
        return self.labels[self.n_seeds:]

    @property
    def image_scores(self) -> torch.Tensor:
        return self.scores[self.n_seeds:]

    def centroids(self, features: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
        """For each class, the L2-normalised mean of ``features`` (one row per
        node, seeds first, usually the unprojected embeddings) over the nodes
        labelled with that class; ``fallback[c]`` for a class no node has.

        The reference (``perform_label_propagation(cluster_centriod=True)``)
        averages an empty selection there and returns a NaN centroid; modgap
        keeps the fallback (in ReCLIP, the class's text embedding).
        """
        c = self.scores.shape[1]
        feats = features.float()
        sums = torch.zeros(c, feats.shape[1], device=feats.device).index_add_(0, self.labels.to(feats.device), feats)
        counts = torch.bincount(self.labels.to(feats.device), minlength=c)
        out = F.normalize(sums, dim=-1)
        empty = counts == 0
        if bool(empty.any()):
            out[empty] = F.normalize(fallback.float().to(feats.device)[empty], dim=-1)
        return out


def propagate(image_emb, class_emb, k: int = 20, alpha: float = 0.99, project: bool = True,
              max_iter: int = 20, tol: float = 1e-6, rank_cap: int | None = None,
              chunk_size: int | None = None, device=None, progress=None,
              index: str = "auto") -> PropagationResult:
    """Label propagation with the class embeddings as seeds, returning the
    whole solution (see :func:`label_propagation` for the method and the
    parameters, ``index`` among them: ``"auto"``, ``"exact"`` or
    ``"faiss"``, how the graph's neighbours are found)."""
    if not isinstance(alpha, (float, int)) or isinstance(alpha, bool) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number strictly between 0 and 1, got {alpha!r}")
    if not isinstance(max_iter, (int, np.integer)) or isinstance(max_iter, bool) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    check_choice(index, "index", _INDEXES)
    if not isinstance(tol, (float, int)) or isinstance(tol, bool) or tol < 0:
        raise ValueError(f"tol must be a non-negative number, got {tol!r}")
    if device is None:
        device = image_emb.device if isinstance(image_emb, torch.Tensor) else "cpu"
    device = torch.device(device)
    if device.type == "mps":  # torch's sparse kernels do not run on MPS
        device = torch.device("cpu")
    img = check_tensor(image_emb, "image_emb", device)
    cls = check_tensor(class_emb, "class_emb", device)
    if img.shape[1] != cls.shape[1]:
        raise ValueError(f"image_emb has dim {img.shape[1]} but class_emb has dim {cls.shape[1]}")
    if img.shape[0] < 1:
        raise ValueError("image_emb is empty")
    c = cls.shape[0]
    if c < 2:
        raise ValueError(f"class_emb must have at least 2 rows (classes), got {c}")
    nodes = torch.cat([cls, img])
    if project:
        p = projection(cls, rank_cap=rank_cap)
        nodes = nodes @ p
    nodes = F.normalize(nodes, dim=-1)
    n = nodes.shape[0]
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k >= n:
        raise ValueError(f"k={k} must be smaller than the number of nodes (classes + images = {n})")
    w = knn_affinity(nodes, k=k, chunk_size=chunk_size, progress=progress, index=index)
    wn = normalized_adjacency(w)
    del w
    y = torch.zeros(n, c, device=device)
    y[torch.arange(c, device=device), torch.arange(c, device=device)] = 1.0

    def matvec(v):
        return v - alpha * (wn @ v)

    scores = conjugate_gradient(matvec, y, max_iter=max_iter, tol=tol)
    labels = scores.argmax(dim=1)
    unreached = scores.abs().amax(dim=1) == 0
    n_unreached = int(unreached.sum())
    if n_unreached:
        labels[unreached] = (nodes[unreached] @ nodes[:c].T).argmax(dim=1)
    return PropagationResult(scores, labels, nodes, c, n_unreached)


def label_propagation(image_emb, class_emb, k: int = 20, alpha: float = 0.99, project: bool = True,
                      max_iter: int = 20, tol: float = 1e-6, *, return_scores: bool = False,
                      rank_cap: int | None = None, chunk_size: int | None = None, device=None,
                      progress=None, index: str = "auto"):
    """Pseudo labels for images by label propagation from the class embeddings.

    The graph's nodes are the ``C`` class embeddings (one labelled seed per
    class) followed by the ``N`` image embeddings, all mapped by
    :func:`projection` (if ``project``) and L2-normalised. Edges: the
    symmetrised top-``k`` affinity ``(x.y + 1) / 2`` with a zero diagonal
    (:func:`knn_affinity`), normalised as ``Wn = D^-1/2 W D^-1/2``. For each
    class the system ``(I - alpha Wn) f = y`` (``y`` one-hot on that class's
    seed) is solved by conjugate gradient; an image's label is the argmax of
    its row of ``F``.

    Parameters
    ----------
    image_emb : tensor or array ``[N, D]``
    class_emb : tensor or array ``[C, D]``
        The zero-shot classifier, e.g. ``clip.class_embeddings(...)``.
    k : int
        Neighbours per node (ReCLIP: 20).
    alpha : float in (0, 1)
        Propagation strength (ReCLIP: 0.99).
    project : bool
        Build the graph in the :func:`projection` space (ReCLIP) or on the
        plain embeddings.
    max_iter, tol : conjugate gradient limits per class (ReCLIP: 20, 1e-6).
    return_scores : bool
        Also return the scores ``F`` of the images, ``[N, C]``.
    rank_cap : int, optional
        Passed to :func:`projection`.
    chunk_size : int, optional
        Rows of the similarity matrix computed at once by the exact search
        (default: 64 MB worth).
    device : torch device, optional
        Where to compute (default: the device of ``image_emb``).
    progress : bool, optional
        Show a progress bar while the graph is built (default: from 20,000
        nodes on).
    index : {"auto", "exact", "faiss"}
        How the graph's neighbours are found (:func:`knn_affinity`):
        ``"exact"`` by brute force on ``device``; ``"faiss"`` approximately,
        from a FAISS HNSW index on the CPU (needs ``faiss-cpu``, the extra
        ``modgap[scale]``), for hundreds of thousands of images and more;
        ``"auto"`` (default) exact on a CUDA device or below 100,000 nodes,
        FAISS above that when it is installed.

    Returns
    -------
    LongTensor ``[N]`` (and the scores, if asked), on ``device`` (on the CPU
    for an MPS device, where torch has no sparse kernels).

    Notes
    -----
    Sparse throughout (see the module docstring); peak memory is about one
    block of similarities plus ``O(N k)`` with the exact search, one more
    copy of the features with FAISS. With at most ``max_iter`` steps
    the solution only reaches nodes within ``max_iter`` hops of a seed; the
    reference gives the others (an all-zero row) class 0 by argmax, modgap
    gives them the class of the most similar seed in the graph's space.
    """
    res = propagate(image_emb, class_emb, k=k, alpha=alpha, project=project, max_iter=max_iter, tol=tol,
                    rank_cap=rank_cap, chunk_size=chunk_size, device=device, progress=progress,
                    index=index)
    if return_scores:
        return res.image_labels, res.image_scores
    return res.image_labels
