"""ReCLIP and its graph pieces: the projection, the kNN graph, conjugate
gradient, label propagation, and the two-branch self-training."""
import json
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse.linalg as sla
import torch
import torch.nn.functional as F
from conftest import write_corrupt

from modgap import data
from modgap.adapt import reclip as reclip_mod
from modgap.adapt.graph import (
    conjugate_gradient,
    knn_affinity,
    label_propagation,
    normalized_adjacency,
    project_embeddings,
    projection,
    propagate,
)
from modgap.adapt.reclip import ReCLIP, run_reclip, text_norm_parameters, visual_norm_parameters


def unit(x):
    return F.normalize(torch.as_tensor(x, dtype=torch.float32), dim=-1)


def dense_label_scores(image_emb, class_emb, k, alpha, max_iter=20, tol=1e-6, project=True):
    """The same equations written densely, solved with scipy's cg per class."""
    nodes = torch.cat([class_emb, image_emb])
    if project:
        nodes = nodes @ projection(class_emb)
    nodes = unit(nodes).double()
    n, c = nodes.shape[0], class_emb.shape[0]
    a = (nodes @ nodes.T + 1) / 2
    a.fill_diagonal_(0)
    v, i = a.topk(k, dim=1)
    w = torch.zeros_like(a).scatter_(1, i, v)
    w = (w + w.T) / 2
    d = w.sum(1).rsqrt()
    wn = (d[:, None] * w * d[None, :]).numpy()
    system = np.eye(n) - alpha * wn
    cols = []
    for j in range(c):
        y = np.zeros(n)
        y[j] = 1
        f, _ = sla.cg(system, y, rtol=tol, maxiter=max_iter)
        cols.append(f)
    return np.stack(cols, axis=1)[c:]


def clusters(c=4, per=30, dim=16, spread=0.15, seed=0):
    """Well separated image clusters, each with a class embedding near it
    (offset by a shared "modality gap" vector), and the true labels."""
    g = torch.Generator().manual_seed(seed)
    centres = unit(torch.randn(c, dim, generator=g))
    gap = 0.5 * unit(torch.randn(dim, generator=g))
    labels = torch.arange(c).repeat_interleave(per)
    images = unit(centres[labels] + spread * torch.randn(c * per, dim, generator=g))
    classes = unit(centres + gap)
    return images, classes, labels


# -- projection -------------------------------------------------------------
def test_projection_is_an_orthogonal_projector_without_the_shared_direction():
    g = torch.Generator().manual_seed(1)
    shared = unit(torch.randn(32, generator=g))
    cls = unit(3 * shared + torch.randn(6, 32, generator=g))
    p = projection(cls)
    assert p.shape == (32, 32)
    torch.testing.assert_close(p @ p, p, atol=1e-5, rtol=0)
    torch.testing.assert_close(p, p.T, atol=1e-6, rtol=0)
    u0 = torch.linalg.svd(cls.T.double())[0][:, 0].float()
    assert (p @ u0).norm() < 1e-5
    assert round(float(torch.trace(p))) == 5  # C - 1 directions kept
    # the rest of the class embeddings' span is kept: residuals lie along u0 only
    resid = cls - cls @ p
    assert torch.allclose(resid, (resid @ u0)[:, None] * u0[None], atol=1e-5)


def test_projection_rank_cap_and_duplicate_classes():
    g = torch.Generator().manual_seed(2)
    cls = unit(torch.randn(8, 24, generator=g))
    assert round(float(torch.trace(projection(cls, rank_cap=4)))) == 3
    dup = torch.cat([cls[:5], cls[:1]])  # 6 rows, rank 5
    assert round(float(torch.trace(projection(dup)))) == 4


def test_projection_with_two_classes_warns_and_falls_back_to_identity():
    cls = unit(torch.randn(2, 10, generator=torch.Generator().manual_seed(0)))
    with pytest.warns(UserWarning, match="collapse"):
        p = projection(cls)
    torch.testing.assert_close(p, torch.eye(10))


@pytest.mark.parametrize("bad, match", [
    (np.zeros(5), "class_emb must be 2-D"),
    (np.ones((1, 4)), "at least 2 rows"),
    (np.full((3, 4), np.nan), "NaN"),
])
def test_projection_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        projection(bad)


def test_projection_rejects_bad_rank_cap():
    with pytest.raises(ValueError, match="rank_cap"):
        projection(np.eye(4), rank_cap=0)


def test_project_embeddings_are_the_features_the_graph_is_built_on():
    images, classes, _ = clusters()
    feats = project_embeddings(classes, classes)
    torch.testing.assert_close(feats, unit(classes @ projection(classes)))
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(len(classes)))
    res = propagate(images, classes, k=10)
    torch.testing.assert_close(res.features, project_embeddings(torch.cat([classes, images]), classes))
    # dropping the shared direction pulls the class embeddings apart
    off = ~torch.eye(len(classes), dtype=torch.bool)
    assert (feats @ feats.T)[off].mean() < (classes @ classes.T)[off].mean()
    torch.testing.assert_close(project_embeddings(images.numpy(), classes.numpy(), rank_cap=3),
                               unit(images @ projection(classes, rank_cap=3)))
    with pytest.raises(ValueError, match="emb has dim 8 but class_emb has dim 16"):
        project_embeddings(images[:, :8], classes)


# -- graph and solver ---------------------------------------------------------
@pytest.mark.parametrize("chunk", [None, 1, 7, 64])
def test_knn_affinity_matches_the_dense_definition(chunk):
    x = unit(torch.randn(90, 12, generator=torch.Generator().manual_seed(3)))
    k = 5
    a = (x @ x.T + 1) / 2
    a.fill_diagonal_(0)
    v, i = a.topk(k, dim=1)
    top = torch.zeros_like(a).scatter_(1, i, v)
    expected = (top + top.T) / 2
    w = knn_affinity(x, k=k, chunk_size=chunk)
    assert w.is_sparse and w._nnz() <= 2 * k * 90
    torch.testing.assert_close(w.to_dense(), expected, atol=1e-6, rtol=0)
    assert torch.all(w.to_dense().diagonal() == 0)


def test_knn_affinity_rejects_k_too_large():
    with pytest.raises(ValueError, match="k=10"):
        knn_affinity(unit(torch.randn(10, 3)), k=10)


def test_normalized_adjacency_divides_by_row_sums():
    x = unit(torch.randn(40, 6, generator=torch.Generator().manual_seed(4)))
    w = knn_affinity(x, k=4)
    wd = w.to_dense()
    d = wd.sum(1).rsqrt()
    wn = normalized_adjacency(w)
    torch.testing.assert_close(wn.to_dense(), d[:, None] * wd * d[None, :], atol=1e-6, rtol=0)


@pytest.mark.parametrize("max_iter", [3, 50])
def test_conjugate_gradient_matches_scipy_per_column(max_iter):
    g = torch.Generator().manual_seed(5)
    m = torch.randn(30, 30, generator=g, dtype=torch.float64)
    a = m @ m.T + 0.5 * torch.eye(30, dtype=torch.float64)
    b = torch.randn(30, 4, generator=g, dtype=torch.float64)
    b[:, 2] = 0  # a zero right-hand side stays zero
    x = conjugate_gradient(lambda v: a @ v, b, max_iter=max_iter, tol=1e-8)
    for j in range(4):
        ref, _ = sla.cg(a.numpy(), b[:, j].numpy(), rtol=1e-8, maxiter=max_iter)
        np.testing.assert_allclose(x[:, j].numpy(), ref, rtol=1e-6, atol=1e-9)
    if max_iter == 50:
        torch.testing.assert_close(a @ x, b, atol=1e-6, rtol=0)


# -- label propagation --------------------------------------------------------
def test_label_propagation_labels_each_cluster_by_its_seed():
    images, classes, labels = clusters()
    pred, scores = label_propagation(images, classes, k=8, return_scores=True)
    assert pred.dtype == torch.long and pred.shape == (120,)
    assert torch.equal(pred, labels)
    assert scores.shape == (120, 4)
    assert torch.equal(scores.argmax(1), pred)


def test_label_propagation_follows_clusters_where_zero_shot_fails():
    # two clusters in a patch of the sphere; both class embeddings sit 0.8 to
    # the right of their cluster's centre, so nearest-class cuts the right
    # cluster at x = 0.8, while the graph keeps each cluster whole
    g = torch.Generator().manual_seed(4)
    per = 60
    labels = torch.arange(2).repeat_interleave(per)
    centres = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])

    def lift(p):
        return unit(torch.cat([p, torch.full((len(p), 1), 3.0), 0.01 * torch.randn(len(p), 5, generator=g)], 1))

    images = lift(centres[labels] + 0.25 * torch.randn(2 * per, 2, generator=g))
    classes = lift(centres + torch.tensor([0.8, 0.0]))
    zero_shot = (images @ classes.T).argmax(1)
    pred = label_propagation(images, classes, k=10, project=False)
    assert (zero_shot == labels).float().mean() < 0.95
    assert torch.equal(pred, labels)


def test_label_propagation_matches_a_dense_implementation():
    images, classes, _ = clusters(c=5, per=40, dim=20, spread=0.6, seed=7)
    pred, scores = label_propagation(images, classes, k=10, return_scores=True)
    ref = dense_label_scores(images, classes, k=10, alpha=0.99)
    np.testing.assert_allclose(scores.numpy(), ref, rtol=1e-3, atol=1e-5)
    assert np.array_equal(pred.numpy(), ref.argmax(1))


def test_label_propagation_is_the_same_in_any_chunk_size():
    images, classes, _ = clusters(c=5, per=30, spread=0.5, seed=8)
    a, sa = label_propagation(images, classes, k=6, return_scores=True)
    b, sb = label_propagation(images, classes, k=6, return_scores=True, chunk_size=11)
    assert torch.equal(a, b)
    torch.testing.assert_close(sa, sb, atol=1e-5, rtol=1e-4)


def test_unreached_images_take_the_nearest_seed_not_class_zero():
    # two far-apart groups; all seeds sit by the first group, so with a small
    # k no edge reaches the second one
    g = torch.Generator().manual_seed(9)
    near = unit(torch.tensor([1.0, 0, 0, 0]) + 0.05 * torch.randn(20, 4, generator=g))
    far = unit(torch.tensor([0, 0, 0, 1.0]) + 0.05 * torch.randn(20, 4, generator=g))
    classes = unit(torch.tensor([[1.0, 0.2, 0, 0], [1.0, -0.2, 0, 0.3]]))
    res = propagate(torch.cat([near, far]), classes, k=3, project=False, max_iter=5)
    assert res.unreached > 0
    unreached = res.scores.abs().amax(1) == 0
    nearest = (res.features @ res.features[:2].T).argmax(1)
    assert torch.equal(res.labels[unreached], nearest[unreached])
    assert bool((nearest[unreached] == 1).any())  # would have been 0 by plain argmax


def test_centroids_keep_the_seed_for_an_empty_class():
    images, classes, _ = clusters(c=3, per=10)
    res = propagate(images, classes, k=5)
    res.labels = torch.zeros_like(res.labels)  # every node in class 0
    cent = res.centroids(torch.cat([classes, images]), fallback=classes)
    assert torch.isfinite(cent).all()
    torch.testing.assert_close(cent[1:], classes[1:])
    torch.testing.assert_close(cent[0], unit(torch.cat([classes, images]).mean(0)))


@pytest.mark.parametrize("kw, match", [
    (dict(k=0), "k must be"), (dict(k=500), "k=500"), (dict(alpha=1.0), "alpha"),
    (dict(max_iter=0), "max_iter"), (dict(tol=-1.0), "tol"),
])
def test_label_propagation_rejects_bad_arguments(kw, match):
    images, classes, _ = clusters(c=3, per=5)
    with pytest.raises(ValueError, match=match):
        label_propagation(images, classes, **kw)


def test_label_propagation_rejects_mismatched_dims():
    with pytest.raises(ValueError, match="dim"):
        label_propagation(torch.randn(10, 4), torch.randn(3, 5))


# -- ReCLIP -----------------------------------------------------------------
@pytest.fixture(scope="module")
def target():
    return data.load("shapes", n=48, seed=11, domain="sketch")


def make(clip, ds, **kw):
    kw.setdefault("epochs", 2)
    kw.setdefault("batch_size", 16)
    kw.setdefault("k", 5)
    kw.setdefault("lr_visual", 0.5)
    kw.setdefault("lr_text", 0.5)
    kw.setdefault("progress", False)
    # the micro model is random: ReCLIP would not adapt it by default
    kw.setdefault("min_confident_agreement", 0.0)
    # and its class balance swings freely; the early stop has tests of its own
    kw.setdefault("max_balance_drop", 1.0)
    return ReCLIP(clip, ds.classnames, ds.templates, **kw)


@pytest.fixture(scope="module")
def fitted(clip, target):
    rows = []

    def callback(est, row):
        # history_ already holds the row the callback is given
        assert est.history_.iloc[-1].to_dict() == pytest.approx(row, nan_ok=True)
        rows.append(row)

    est = make(clip, target, callback=callback).fit(target, labels=target.labels)
    return est, rows


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_fit_records_history_and_calls_back_every_epoch(fitted, target):
    est, rows = fitted
    h = est.history_
    assert list(h.epoch) == [0, 1, 2]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    # history_ adds which epoch was kept once the fit knows it
    assert rows[-1] == pytest.approx(h.drop(columns="kept").iloc[-1].to_dict(), nan_ok=True)
    assert list(h["kept"]) == [False, False, True]
    for col in ("agreement", "pl_acc_v", "pl_acc_t", "pl_acc_agreed", "acc_v", "acc_t", "acc", "gap_v", "gap_t"):
        assert h[col].between(0, 2).all(), col
    assert np.isnan(h.loss_v[0]) and np.isfinite(h.loss_v[1:]).all()
    # the final row describes the final model's predictions on the fit images
    assert h.acc.iloc[-1] == pytest.approx(float((est.labels_ == target.labels).mean()))


def test_only_layernorms_change_in_each_branch(fitted, clip):
    est, _ = fitted
    before = state(clip.model)
    v_names = {n for n, _ in visual_norm_parameters(est.visual_model_)}
    t_names = {n for n, _ in text_norm_parameters(est.text_model_)}
    assert v_names and t_names and not v_names & t_names
    for model, allowed in ((est.visual_model_, v_names), (est.text_model_, t_names)):
        changed = {k for k, v in state(model).items() if not torch.equal(v, before[k])}
        assert changed, "the branch did not train"
        assert changed <= allowed, changed - allowed


def test_fit_leaves_the_callers_model_alone(clip, target):
    before = state(clip.model)
    flags = {n: p.requires_grad for n, p in clip.model.named_parameters()}
    make(clip, target, epochs=1).fit(target)
    after = state(clip.model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert flags == {n: p.requires_grad for n, p in clip.model.named_parameters()}


def test_training_uses_only_images_where_the_branches_agree(clip, target, monkeypatch):
    est = make(clip, target, epochs=2)
    n = len(target.labels)
    c = len(est.classnames)
    agreed, trained = [], []
    last_v = {}
    real_propagate = est._propagate

    def forced(image_emb, class_emb):
        res = real_propagate(image_emb, class_emb)
        if "v" not in last_v:  # ReCLIP-V runs first in every evaluation
            last_v["v"] = res.image_labels.clone()
        else:  # ReCLIP-T: made to disagree with ReCLIP-V on the first half of the images
            v = last_v.pop("v")
            res.labels[c:c + n // 2] = (v[:n // 2] + 1) % c
            agree = v == res.image_labels
            agreed.append(set(torch.nonzero(agree).flatten().tolist()))
            trained.append([])
        return res

    real_batches = reclip_mod.pixel_batches

    def spy(clip_, kind, items, batches, **kw):
        # the module's pixel_batches serves the training steps only; the evaluation
        # passes read their pixels through encode_pixels
        for idx in batches:
            trained[-1].extend(int(i) for i in idx)
        return real_batches(clip_, kind, items, batches, **kw)

    monkeypatch.setattr(est, "_propagate", forced)
    monkeypatch.setattr(reclip_mod, "pixel_batches", spy)
    est.fit(target)
    assert len(agreed) == 3 and trained[-1] == []
    assert agreed[0] == set(range(n // 2, n))  # the branches start out identical
    for epoch in range(2):
        assert agreed[epoch] <= set(range(n // 2, n))
        assert sorted(trained[epoch]) == sorted(agreed[epoch])  # each agreed image once, no other
        assert est.history_.trained[epoch + 1] == len(agreed[epoch])
        assert est.history_.agreement[epoch] == pytest.approx(len(agreed[epoch]) / n)


def test_fit_is_deterministic_on_cpu_for_a_fixed_seed(clip, target, fitted):
    est, _ = fitted
    again = make(clip, target).fit(target, labels=target.labels)
    for a, b in ((est.visual_model_, again.visual_model_), (est.text_model_, again.text_model_)):
        sa, sb = state(a), state(b)
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert est.history_.equals(again.history_)
    other = make(clip, target, seed=1).fit(target)
    sa, so = state(est.visual_model_), state(other.visual_model_)
    assert any(not torch.equal(sa[k], so[k]) for k in sa)


def test_predict_is_the_average_of_the_branches(fitted, target):
    est, _ = fitted
    both = est.predict_logits(target)
    v = est.predict_logits(target, branch="visual")
    t = est.predict_logits(target, branch="text")
    np.testing.assert_allclose(both, 0.5 * (v + t), rtol=1e-5, atol=1e-4)
    assert np.array_equal(est.predict(target), both.argmax(1))
    assert np.array_equal(est.predict(target.images), est.labels_)
    assert est.score(target, target.labels) == pytest.approx(est.history_.acc.iloc[-1])


def test_save_and_load_round_trip(fitted, clip, target, tmp_path):
    est, _ = fitted
    est.save(tmp_path / "r")
    assert {p.name for p in (tmp_path / "r").iterdir()} == {
        "estimator.json", "history.csv", "arrays.safetensors", "visual", "text", "manifest.json"}
    with pytest.raises(FileExistsError, match="overwrite"):
        est.save(tmp_path / "r")
    loaded = ReCLIP.load(tmp_path / "r", clip)
    assert loaded.clip is clip
    np.testing.assert_array_equal(loaded.predict_logits(target), est.predict_logits(target))
    # the callback is a live object, not a setting: it is not saved
    expected = {k: v for k, v in est.get_params().items() if k != "callback"}
    assert {k: v for k, v in loaded.get_params().items() if k != "callback"} == expected
    assert loaded.callback is None
    np.testing.assert_allclose(loaded.history_.acc, est.history_.acc)
    for a, b in ((est.visual_model_, loaded.visual_model_), (est.text_model_, loaded.text_model_)):
        sa = state(a)
        assert all(torch.equal(v, sa[k]) for k, v in state(b).items())


def test_load_rejects_another_architecture(fitted, tmp_path):
    import open_clip

    from modgap import Clip
    from modgap.zoo import register

    est, _ = fitted
    est.save(tmp_path / "r")
    register()
    other = Clip(open_clip.create_model("modgap-tiny"), tokenizer=open_clip.get_tokenizer("modgap-tiny"),
                 device="cpu")
    with pytest.raises(ValueError, match="architecture"):
        ReCLIP.load(tmp_path / "r", other)


def test_run_reclip_takes_names_templates_and_labels_from_an_image_set(clip, target, tmp_path):
    est = run_reclip(clip, target, out=tmp_path / "out", epochs=1, k=5, batch_size=16, progress=False,
                     min_confident_agreement=0.0)
    assert est.classnames == list(target.classnames)
    assert est.history_.acc.notna().all()
    assert (tmp_path / "out" / "estimator.json").is_file()
    assert (tmp_path / "out" / "visual" / "open_clip_model.safetensors").is_file()
    assert len(ReCLIP.load(tmp_path / "out", clip).history_) == len(est.history_) == 2


def test_run_reclip_checks_the_output_folder_before_any_work(clip, target, tmp_path, monkeypatch):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")

    def never(self, *a, **kw):
        raise AssertionError("fit ran before the output folder was checked")

    monkeypatch.setattr(ReCLIP, "fit", never)
    with pytest.raises(FileExistsError, match="overwrite"):
        run_reclip(clip, target, out=user, epochs=1, k=5, progress=False)
    with pytest.raises(FileExistsError, match="estimator.json"):
        run_reclip(clip, target, out=user, overwrite=True, epochs=1, k=5, progress=False)
    assert (user / "notes.txt").read_text() == "keep me"


def test_predict_before_fit_says_so(clip, target):
    with pytest.raises(RuntimeError, match="not fitted"):
        make(clip, target).predict(target)


@pytest.mark.parametrize("kw, error, match", [
    (dict(epochs=-1), ValueError, "epochs must be at least 0, got -1"),
    (dict(batch_size=0), ValueError, "batch_size must be at least 1, got 0"),
    (dict(alpha=0.0), ValueError, r"alpha must lie in \(0, 1\), got 0.0"),
    (dict(lr_visual=-1.0), ValueError, r"lr_visual must lie in \[0, inf\), got -1.0"),
    (dict(k=0), ValueError, "k must be at least 1"),
    (dict(rank_cap=0), ValueError, "rank_cap must be at least 1"),
    (dict(templates=["no slot"]), ValueError, "templates: 'no slot' has no"),
    (dict(classnames=["one"]), ValueError, "classnames must hold at least 2"),
    (dict(classnames=["a", "a"]), ValueError, "classnames has duplicates"),
    (dict(callback=3), TypeError, "callback must be callable"),
    (dict(batch_size=2.5), TypeError, "batch_size must be an integer, got 2.5"),
    (dict(epochs=True), TypeError, "epochs must be an integer or None, got True"),
    (dict(lr_text=True), TypeError, "lr_text must be a number or None, got True"),
    (dict(alpha="0.5"), TypeError, "alpha must be a number"),
    (dict(classnames="circle"), TypeError, "classnames must be a list of strings, got the single string"),
    (dict(classnames=["a", 2]), TypeError, "classnames must hold strings only"),
])
def test_reclip_rejects_bad_settings_in_fit(clip, target, kw, error, match):
    args = dict(classnames=target.classnames, templates=target.templates, progress=False)
    args.update(kw)
    est = ReCLIP(clip, **args)  # the constructor only stores
    for name, value in kw.items():
        assert est.get_params()[name] is value
    with pytest.raises(error, match=match):
        est.fit(target)
    assert not hasattr(est, "history_")


def test_reclip_rejects_a_clip_that_is_not_one(clip, target):
    with pytest.raises(TypeError, match="clip must be a modgap.Clip"):
        ReCLIP(clip.model, target.classnames).fit(target)


@pytest.mark.parametrize("labels, match", [
    (np.zeros(3, dtype=int), "one entry per image"),
    (np.full(48, 9), r"label 9 at index 0 is outside 0\.\.5"),
    (np.full(48, 0.5), "must hold integers"),
])
def test_fit_rejects_bad_labels(clip, target, labels, match):
    with pytest.raises(ValueError, match=match):
        make(clip, target).fit(target, labels=labels)


def test_fit_rejects_k_larger_than_the_graph(clip, target):
    with pytest.raises(ValueError, match="k=60"):
        make(clip, target, k=60).fit(target.images[:10])


def test_default_schedule_is_the_references_for_clip_sized_models():
    from modgap.adapt.reclip import SMALL_MODEL_DIM, default_schedule, reference_epochs

    big = default_schedule(512, 12000)
    assert big == {"epochs": reference_epochs(12000), "lr_visual": 1e-3, "lr_text": 1e-3}
    assert reference_epochs(12000) == 4 and reference_epochs(10 ** 7) == 100
    small = default_schedule(SMALL_MODEL_DIM - 1, 12000)
    assert small["lr_visual"] > 1e-3 and small["lr_text"] > 1e-3


def test_fit_resolves_unset_schedule(clip, target):
    from modgap.adapt.reclip import default_schedule

    est = ReCLIP(clip, target.classnames, target.templates, k=5, batch_size=16, progress=False, min_confident_agreement=0.0)
    expected = default_schedule(clip.embed_dim, 48)
    est.epochs = 1  # keep it short; the learning rates stay unset
    est.fit(target)
    assert (est.epochs_, est.lr_visual_, est.lr_text_) == (1, expected["lr_visual"], expected["lr_text"])
    assert est.get_params()["lr_visual"] is None


def write_images(ds, folder, bad=()):
    """``ds``'s images as PNG files, those at positions ``bad`` corrupt."""
    from PIL import Image

    folder.mkdir(exist_ok=True)
    paths = []
    for i, a in enumerate(ds.images):
        p = folder / f"{i:03d}.png"
        if i in bad:
            write_corrupt(p)
        else:
            Image.fromarray(a).save(p)
        paths.append(p)
    return paths


def test_unreadable_files_are_left_out_of_fit_and_predict_with_one_warning(clip, target, tmp_path):
    paths = write_images(target, tmp_path / "imgs", bad=(7, 30))
    with pytest.warns(UserWarning, match="ReCLIP.fit: skipped 2 of 48") as rec:
        est = make(clip, target).fit(paths, labels=target.labels)
    msgs = [str(w.message) for w in rec if "skipped" in str(w.message)]
    assert len(msgs) == 1 and str(paths[7]) in msgs[0] and str(paths[30]) in msgs[0]
    assert est.skipped_.tolist() == [7, 30]
    good = [p for i, p in enumerate(paths) if i not in (7, 30)]
    good_labels = np.delete(target.labels, [7, 30])
    clean = make(clip, target).fit(good, labels=good_labels)
    assert clean.skipped_.size == 0
    # the same fit as on the readable files alone: rows and labels stay aligned
    assert est.history_.equals(clean.history_)
    assert np.array_equal(est.labels_, clean.labels_) and len(est.labels_) == 46
    with pytest.warns(UserWarning, match="ReCLIP.predict: skipped 2 of 48"):
        logits = est.predict_logits(paths)
    np.testing.assert_array_equal(logits, clean.predict_logits(good))
    with pytest.warns(UserWarning, match="ReCLIP.score: skipped 2"):
        assert est.score(paths, target.labels) == clean.score(good, good_labels)
    with pytest.warns(UserWarning, match="ReCLIP.encode_images: skipped 2"):
        assert est.encode_images(paths).shape == (46, clip.embed_dim)


def test_fit_on_files_none_of_which_decode_says_so(clip, target, tmp_path):
    paths = write_images(target, tmp_path / "bad", bad=range(len(target.labels)))
    with pytest.raises(ValueError, match="none of the 48 image files could be read"), \
            pytest.warns(UserWarning, match="skipped 48 of 48"):
        make(clip, target).fit(paths)


# -- knowing when not to adapt ----------------------------------------------
def test_label_free_figures_on_a_constructed_epoch():
    pred = torch.tensor([0, 0, 1, 2, 2, 2])
    figures = reclip_mod.label_free_figures(pred, torch.tensor([0, 1, 1, 2, 2, 0]), torch.tensor([0, 0, 0, 2, 2, 2]),
                                            torch.tensor([0, 0, 1, 1, 2, 2]), torch.eye(3)[pred] * 10)
    assert figures["stability"] == pytest.approx(4 / 6)
    assert figures["zero_shot_agreement"] == pytest.approx(5 / 6)
    assert figures["lp_zero_shot_agreement"] == pytest.approx(4 / 6)
    shares = np.array([2, 1, 3]) / 6
    assert figures["class_balance"] == pytest.approx(-(shares * np.log(shares)).sum() / np.log(3))
    assert figures["confidence"] == pytest.approx(np.exp(5) / (np.exp(5) + 2))
    first = reclip_mod.label_free_figures(pred, None, pred, pred, torch.eye(3)[pred])
    assert np.isnan(first["stability"]) and first["zero_shot_agreement"] == 1.0
    one_class = reclip_mod.label_free_figures(torch.zeros(6, dtype=torch.long), None, pred, pred, torch.ones(6, 3))
    assert one_class["class_balance"] == 0.0


def test_confident_agreement_reads_the_most_confident_zero_shot_images():
    # margins 9, 8, ..., 0: the two most confident images are rows 0 and 1
    logits = torch.zeros(10, 3)
    logits[torch.arange(10), torch.arange(10) % 3] = torch.arange(9, -1, -1).float()
    zero_shot = logits.argmax(1)
    lp = zero_shot.clone()
    lp[1] = (lp[1] + 1) % 3            # one of the two most confident overturned
    lp[5:] = (lp[5:] + 1) % 3          # the least confident ones do not count
    assert reclip_mod.confident_agreement(logits, lp, share=0.2) == 0.5
    assert reclip_mod.confident_agreement(logits, zero_shot, share=0.2) == 1.0
    assert reclip_mod.confident_agreement(logits, lp, share=1.0) == pytest.approx(4 / 10)
    # at least one image, however few
    assert reclip_mod.confident_agreement(logits, lp, share=0.01) == 1.0


def test_a_start_where_label_propagation_overturns_zero_shot_is_not_adapted(clip, target, tmp_path, monkeypatch):
    # 48 images: the most confident tenth agrees; every image counts here
    monkeypatch.setattr(reclip_mod, "CONFIDENT_SHARE", 1.0)
    free = make(clip, target).fit(target)
    agreement = free.history_["confident_agreement"][0]
    assert free.adapted_ is True and 0.0 <= agreement < 1.0
    # just above what this start shows: ReCLIP keeps the frozen model
    bar = min(1.0, agreement + 0.01)
    est = make(clip, target, min_confident_agreement=bar)
    with pytest.warns(UserWarning, match=rf"confident agreement {agreement:.3f} < min_confident_agreement={bar:g}"):
        est.fit(target)
    h = est.history_
    assert est.adapted_ is False and len(h) == 1 and h["trained"][0] == 0 and est.kept_epoch_ == 0
    zero_shot = (est.initial_image_embeddings_ @ est.class_embeddings_.T).argmax(1)
    assert np.array_equal(est.predict(target), zero_shot)
    assert np.array_equal(est.labels_, zero_shot)
    # nothing trained: both branches are the frozen model
    for model in (est.visual_model_, est.text_model_):
        for k, v in model.state_dict().items():
            assert torch.equal(v.cpu(), clip.model.state_dict()[k].cpu()), k
    est.save(tmp_path / "kept")
    assert ReCLIP.load(tmp_path / "kept", clip).adapted_ is False
    # at the figure itself it adapts
    assert make(clip, target, min_confident_agreement=agreement).fit(target).adapted_ is True


def test_a_collapsing_class_balance_stops_training_and_keeps_the_epoch_before(clip, target, tmp_path):
    free = make(clip, target, epochs=3).fit(target)
    balance = free.history_["class_balance"].to_numpy()
    assert list(free.history_["kept"]) == [False, False, False, True] and free.kept_epoch_ == 3
    # a drop just below the largest fall of this run: training stops at that epoch
    falls = balance[0] - balance[1:]
    assert falls.max() > 0, "the run's class balance never falls below its start; the test needs another draw"
    worst = int(np.argmax(falls)) + 1
    drop = float(np.nextafter(falls.max(), -1.0))
    first = 1 + int(np.argmax(falls > drop))
    assert first == worst
    est = make(clip, target, epochs=3, max_balance_drop=drop).fit(target)
    h = est.history_
    assert est.kept_epoch_ == first - 1 and len(h) == first + 1 and list(h["kept"]) == [e == first - 1 for e in h.epoch]
    np.testing.assert_allclose(h["class_balance"], balance[:first + 1])
    # the result is the model of the kept epoch: a run told to train that many epochs
    short = make(clip, target, epochs=first - 1).fit(target)
    np.testing.assert_array_equal(est.predict(target), short.predict(target))
    for mine, theirs in ((est.visual_model_, short.visual_model_), (est.text_model_, short.text_model_)):
        for k, v in mine.state_dict().items():
            assert torch.equal(v, theirs.state_dict()[k]), k
    est.save(tmp_path / "stopped")
    assert ReCLIP.load(tmp_path / "stopped", clip).kept_epoch_ == first - 1


def test_the_decisions_never_look_at_labels(clip, target):
    figures = ["epoch", "agreement", "stability", "zero_shot_agreement", "lp_zero_shot_agreement", "confidence",
               "class_balance", "confident_agreement", "kept"]
    for bar, drop in ((0.0, 1.0), (0.0, 0.0), (1.0, 1.0)):
        with_labels = make(clip, target, min_confident_agreement=bar, max_balance_drop=drop)
        without = make(clip, target, min_confident_agreement=bar, max_balance_drop=drop)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            with_labels.fit(target, labels=target.labels)
            without.fit(target)
        assert with_labels.adapted_ == without.adapted_
        pd.testing.assert_frame_equal(with_labels.history_[figures], without.history_[figures])
        assert np.array_equal(with_labels.predict(target), without.predict(target))


@pytest.mark.parametrize("name", ["min_confident_agreement", "max_balance_drop"])
@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), True])
def test_the_guards_are_checked(clip, target, name, bad):
    with pytest.raises((ValueError, TypeError), match=name):
        make(clip, target, **{name: bad}).fit(target)


def test_a_run_saved_with_a_retired_setting_still_loads(clip, target, tmp_path):
    est = make(clip, target).fit(target)
    est.save(tmp_path / "run")
    from modgap.io import write_manifest

    meta_path = next(p for p in (tmp_path / "run").iterdir() if p.suffix == ".json" and "params" in p.read_text())
    meta = json.loads(meta_path.read_text())
    meta["params"]["min_balance"] = 0.75
    meta_path.write_text(json.dumps(meta))
    write_manifest(tmp_path / "run")
    loaded = ReCLIP.load(tmp_path / "run", clip)
    assert not hasattr(loaded, "min_balance")
    np.testing.assert_array_equal(loaded.predict(target), est.predict(target))


def test_precision_fp32_and_amp_bf16_on_cpu(clip, target):
    plain = make(clip, target, epochs=1, precision="fp32").fit(target, labels=target.labels)
    bf16 = make(clip, target, epochs=1, precision="amp_bf16").fit(target, labels=target.labels)
    default = make(clip, target, epochs=1).fit(target, labels=target.labels)
    # on the CPU the default (amp=True) is fp32
    np.testing.assert_array_equal(plain.history_["loss_v"].to_numpy(), default.history_["loss_v"].to_numpy())
    assert not np.array_equal(plain.history_["loss_v"].to_numpy(), bf16.history_["loss_v"].to_numpy())
    assert np.isfinite(bf16.history_["loss_v"].to_numpy()[1:]).all()
    with pytest.raises(ValueError, match="precision"):
        make(clip, target, precision="half").fit(target)


def test_knn_index_reaches_label_propagation(clip, target, monkeypatch):
    import modgap.adapt.reclip as reclip_mod

    seen = []
    real = reclip_mod.propagate

    def spy(*args, **kwargs):
        seen.append(kwargs.get("index"))
        return real(*args, **kwargs)

    monkeypatch.setattr(reclip_mod, "propagate", spy)
    exact = make(clip, target, epochs=1, knn_index="exact").fit(target, labels=target.labels)
    assert seen and set(seen) == {"exact"}
    pytest.importorskip("faiss")
    seen.clear()
    approx = make(clip, target, epochs=1, knn_index="faiss").fit(target, labels=target.labels)
    assert set(seen) == {"faiss"}
    # 48 images: the approximate index finds nearly the same neighbours (the random micro
    # model has near ties), so the fit moves by at most two images
    np.testing.assert_allclose(approx.history_["acc"].to_numpy(), exact.history_["acc"].to_numpy(), atol=2.5 / 48)
    with pytest.raises(ValueError, match="knn_index"):
        make(clip, target, knn_index="annoy").fit(target)
