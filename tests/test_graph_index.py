"""The neighbour search behind ReCLIP's graph: ``index="exact"``, ``"faiss"``
(approximate, HNSW) and ``"auto"`` in knn_affinity, propagate and
label_propagation."""
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

from modgap.adapt import graph
from modgap.adapt.graph import knn_affinity, label_propagation, propagate


def clustered(n=3000, dim=64, classes=6, sub=8, spread=0.2, seed=0):
    """Unit vectors in ``classes`` overlapping clusters near an ``sub``-dim
    subspace (as ReCLIP's projected features lie in the span of the class
    embeddings), their true labels, and one class embedding per cluster."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim, sub, generator=g))[0]
    centres = torch.randn(classes, sub, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    x = centres[labels] + spread * centres.norm(dim=1).mean() * torch.randn(n, sub, generator=g)
    cls = centres @ basis.T + 0.1 * torch.randn(classes, dim, generator=g)
    return F.normalize(x @ basis.T, dim=-1), labels, F.normalize(cls, dim=-1)


def edges(w):
    return set(map(tuple, w.indices().T.tolist()))


# -- FAISS against exact -----------------------------------------------------------
def test_faiss_graph_has_the_exact_neighbours_and_weights():
    pytest.importorskip("faiss")
    x, _, _ = clustered()
    k = 10
    exact = knn_affinity(x, k=k, index="exact")
    approx = knn_affinity(x, k=k, index="faiss")
    e, a = edges(exact), edges(approx)
    assert len(e & a) >= 0.99 * len(e)
    assert len(e & a) >= 0.99 * len(a)
    # the same format: coalesced, symmetric, no diagonal, at least k entries a row, 2 k N at most
    assert approx.is_sparse and approx.is_coalesced() and approx.dtype == torch.float32
    assert approx.shape == exact.shape
    row, col = approx.indices()
    assert not bool((row == col).any())
    counts = torch.bincount(row, minlength=len(x))
    assert int(counts.min()) >= k and approx._nnz() <= 2 * k * len(x)
    dense = approx.to_dense()
    assert torch.equal(dense, dense.T)
    # each entry is half the affinity (found from one end) or all of it (from both ends)
    aff = ((x[row] * x[col]).sum(1) + 1) / 2
    v = approx.values()
    assert bool((torch.isclose(v, aff / 2, atol=1e-6, rtol=0) | torch.isclose(v, aff, atol=1e-6, rtol=0)).all())
    # and where both graphs have an edge from both ends, the weight is the exact one
    both = exact.to_dense()
    shared = (dense > 0) & (both > 0)
    close = torch.isclose(dense[shared], both[shared], atol=1e-6, rtol=0)
    assert float(close.float().mean()) >= 0.99


def test_faiss_labels_agree_with_exact_labels():
    pytest.importorskip("faiss")
    x, truth, cls = clustered()
    exact = label_propagation(x, cls, k=10, index="exact")
    approx = label_propagation(x, cls, k=10, index="faiss")
    assert approx.shape == exact.shape and approx.dtype == torch.long
    assert float((approx == exact).float().mean()) >= 0.99
    # the clusters overlap, so the labels are not trivially right: the comparison means something
    assert 0.8 < float((exact == truth).float().mean()) < 1.0


def test_faiss_graph_is_the_same_on_every_call():
    pytest.importorskip("faiss")
    x, _, _ = clustered(n=2000)
    a = knn_affinity(x, k=8, index="faiss")
    b = knn_affinity(x, k=8, index="faiss")
    assert torch.equal(a.indices(), b.indices())
    assert torch.equal(a.values(), b.values())


def test_faiss_graph_does_not_depend_on_the_number_of_threads():
    pytest.importorskip("faiss")
    x, _, _ = clustered(n=2000)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = knn_affinity(x, k=8, index="faiss")
        torch.set_num_threads(max(2, threads))
        many = knn_affinity(x, k=8, index="faiss")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one.indices(), many.indices())
    assert torch.equal(one.values(), many.values())


def test_faiss_passes_through_propagate():
    pytest.importorskip("faiss")
    x, _, cls = clustered(n=1500)
    res = propagate(x, cls, k=10, index="faiss")
    assert res.scores.shape == (1500 + len(cls), len(cls))
    assert float((res.image_labels == label_propagation(x, cls, k=10, index="faiss")).float().mean()) == 1.0


def test_rows_searched_exactly_match_the_exact_search():
    # rows the approximate search leaves short are searched exactly, one block at a time
    x, _, _ = clustered(n=700, dim=16, sub=4)
    rows = torch.tensor([0, 5, 349, 699])
    val, idx = graph._exact_knn(x, 6, 128, False)
    v, i = graph._exact_rows(x, rows, 6)
    torch.testing.assert_close(v, val[rows], atol=1e-6, rtol=0)
    assert torch.equal(i, idx[rows])


# -- auto ------------------------------------------------------------------------------
def test_auto_is_exact_below_the_threshold():
    x, _, cls = clustered(n=2500)
    assert len(x) < graph._AUTO_EXACT_MAX
    exact = knn_affinity(x, k=10, index="exact")
    auto = knn_affinity(x, k=10)
    assert torch.equal(auto.indices(), exact.indices())
    assert torch.equal(auto.values(), exact.values())
    assert torch.equal(label_propagation(x, cls, k=10), label_propagation(x, cls, k=10, index="exact"))


def test_auto_uses_faiss_above_the_threshold(monkeypatch):
    pytest.importorskip("faiss")
    x, _, _ = clustered(n=600)
    calls = []
    real = graph._faiss_knn
    monkeypatch.setattr(graph, "_faiss_knn", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    knn_affinity(x, k=5)
    assert calls == []
    monkeypatch.setattr(graph, "_AUTO_EXACT_MAX", 500)
    w = knn_affinity(x, k=5)
    assert calls == [1]
    torch.testing.assert_close(w.to_dense(), knn_affinity(x, k=5, index="faiss").to_dense())


def test_auto_without_faiss_above_the_threshold_warns_once_and_searches_exactly(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    monkeypatch.setattr(graph, "_AUTO_EXACT_MAX", 500)
    monkeypatch.setattr(graph, "_warned_slow", False)
    x, _, _ = clustered(n=600)
    with pytest.warns(UserWarning, match=r"modgap\[scale\]"):
        w = knn_affinity(x, k=5)
    exact = knn_affinity(x, k=5, index="exact")
    assert torch.equal(w.indices(), exact.indices()) and torch.equal(w.values(), exact.values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        knn_affinity(x, k=5)


# -- bad arguments ----------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["annoy", "FAISS", None, 1])
def test_bad_index_is_refused(bad):
    x, _, cls = clustered(n=200)
    with pytest.raises(ValueError, match="index must be one of"):
        knn_affinity(x, k=5, index=bad)
    with pytest.raises(ValueError, match="index must be one of"):
        label_propagation(x, cls, k=5, index=bad)
    with pytest.raises(ValueError, match="index must be one of"):
        propagate(x, cls, k=5, index=bad)


def test_missing_faiss_names_the_package_and_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    x, _, cls = clustered(n=200)
    with pytest.raises(ImportError, match=r"pip install faiss-cpu.*modgap\[scale\]"):
        knn_affinity(x, k=5, index="faiss")
    with pytest.raises(ImportError, match=r"modgap\[scale\]"):
        label_propagation(x, cls, k=5, index="faiss")

