"""modgap.metrics: closed-form cases, properties, and bad input."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from modgap import metrics as M


def eye(d):
    return np.eye(d)


def cone(center, theta, dirs):
    """Unit rows cos(theta) * center +- sin(theta) * dir for each dir: their mean is exactly
    cos(theta) * center when center and dirs are orthonormal."""
    rows = []
    for v in dirs:
        rows.append(math.cos(theta) * center + math.sin(theta) * v)
        rows.append(math.cos(theta) * center - math.sin(theta) * v)
    return np.array(rows)


def rotation(d, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def gapped(n=80, d=12, shift=1.5, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, d))
    img = base + 0.5 * rng.normal(size=(n, d)) + shift * eye(d)[0]
    txt = base + 0.5 * rng.normal(size=(n, d)) - shift * eye(d)[0]
    return img, txt


# -- centroid figures ----------------------------------------------------------------
@pytest.mark.parametrize("theta", [0.0, 0.3, 1.0, math.pi / 2 - 0.1])
def test_centroid_distance_of_two_cones(theta):
    e = eye(8)
    img = cone(e[0], theta, [e[2], e[3]])
    txt = cone(e[1], theta, [e[4], e[5], e[6]])
    assert M.centroid_distance(img, txt) == pytest.approx(math.sqrt(2) * math.cos(theta), abs=1e-12)
    assert M.centroid_mse(img, txt) == pytest.approx(2 * math.cos(theta) ** 2 / 8, abs=1e-12)


def test_centroid_figures_normalise_rows_first():
    e = eye(8)
    img = cone(e[0], 0.4, [e[2], e[3]])
    txt = cone(e[1], 0.4, [e[4], e[5]])
    scale = np.arange(1, len(img) + 1)[:, None] * 3.0
    assert M.centroid_distance(img * scale, txt) == pytest.approx(M.centroid_distance(img, txt), abs=1e-12)
    assert M.centroid_mse(img * scale, txt / 7) == pytest.approx(M.centroid_mse(img, txt), abs=1e-12)


def test_centroid_distance_of_opposite_points_is_two():
    img = np.tile(eye(4)[0], (5, 1))
    assert M.centroid_distance(img, -img[:3]) == pytest.approx(2.0)


def test_identical_modalities_have_no_gap():
    img, _ = gapped()
    assert M.centroid_distance(img, img) == pytest.approx(0.0, abs=1e-12)
    assert M.centroid_mse(img, img) == pytest.approx(0.0, abs=1e-15)
    assert M.relative_gap(img, img) == pytest.approx(0.0, abs=1e-12)


def test_gap_vector_points_from_text_to_image():
    e = eye(6)
    img = cone(e[0], 0.5, [e[2], e[3]])
    txt = cone(e[1], 0.5, [e[4], e[5]])
    g = M.gap_vector(img, txt)
    assert isinstance(g, np.ndarray)
    np.testing.assert_allclose(g, (e[0] - e[1]) / math.sqrt(2), atol=1e-12)
    np.testing.assert_allclose(M.gap_vector(txt, img), -g, atol=1e-12)


def test_gap_vector_of_tensors_is_a_float32_tensor():
    img, txt = gapped()
    g = M.gap_vector(torch.tensor(img, dtype=torch.float32), torch.tensor(txt, dtype=torch.float32))
    assert isinstance(g, torch.Tensor) and g.dtype == torch.float32 and g.shape == (img.shape[1],)
    assert float(g.norm()) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(g.numpy(), M.gap_vector(img, txt), atol=1e-5)


def test_gap_vector_is_undefined_when_centroids_coincide():
    img, _ = gapped()
    with pytest.raises(ValueError, match="same centroid"):
        M.gap_vector(img, img)


def test_relative_gap_closed_form():
    e = eye(6)
    # c_I = (e0 + e1) / 2, c_T = (e2 + e3) / 2: between = 1/4, within = 1/2 -> 1/3
    assert M.relative_gap(e[[0, 1]], e[[2, 3]]) == pytest.approx(1 / 3, abs=1e-12)
    # each modality a single point: no within-modality spread
    assert M.relative_gap(np.tile(e[0], (3, 1)), np.tile(e[1], (4, 1))) == pytest.approx(1.0)


def test_relative_gap_of_two_cones():
    e = eye(8)
    tight = M.relative_gap(cone(e[0], 0.2, [e[2], e[3]]), cone(e[1], 0.2, [e[4], e[5]]))
    loose = M.relative_gap(cone(e[0], 0.8, [e[2], e[3]]), cone(e[1], 0.8, [e[4], e[5]]))
    # between = ||c_I - c_T||^2 / 4 = cos^2 / 2; within = 1 - ||c||^2 = 1 - cos^2 per modality
    for theta, value in ((0.2, tight), (0.8, loose)):
        b = math.cos(theta) ** 2 / 2
        assert value == pytest.approx(b / (b + 1 - math.cos(theta) ** 2), abs=1e-12)
    assert tight > loose


# -- pair figures -------------------------------------------------------------------------
@pytest.mark.parametrize("phi", [0.0, 0.5, 1.2, math.pi / 2])
def test_paired_unpaired_cosine_and_alignment_closed_form(phi):
    n = 5
    e = eye(2 * n)
    img = e[:n]
    txt = math.cos(phi) * e[:n] + math.sin(phi) * e[n:]
    assert M.paired_cosine(img, txt) == pytest.approx(math.cos(phi), abs=1e-12)
    assert M.unpaired_cosine(img, txt) == pytest.approx(0.0, abs=1e-12)
    assert M.alignment(img, txt) == pytest.approx(2 - 2 * math.cos(phi), abs=1e-12)
    assert M.alignment(img, txt, alpha=1) == pytest.approx(math.sqrt(2 - 2 * math.cos(phi)), abs=1e-12)


def test_unpaired_cosine_of_orthogonal_rows_on_a_common_offset():
    # rows sqrt(1 - c^2) e_i + c e_6: matched pairs have cosine 1, unmatched ones c^2
    e = eye(7)
    c = 0.6
    rows = math.sqrt(1 - c ** 2) * e[:4] + c * e[6]
    assert M.paired_cosine(rows, rows.copy()) == pytest.approx(1.0)
    assert M.unpaired_cosine(rows, rows.copy()) == pytest.approx(c ** 2)


def test_pair_figures_with_several_captions_per_image_match_brute_force():
    rng = np.random.default_rng(3)
    img = rng.normal(size=(6, 5))
    owner = np.array([0, 0, 1, 2, 2, 2, 3, 4, 5, 5])
    txt = img[owner] + 0.7 * rng.normal(size=(len(owner), 5))
    ni = img / np.linalg.norm(img, axis=1, keepdims=True)
    nt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    sim = ni @ nt.T
    matched = sim[owner, np.arange(len(owner))]
    mask = np.ones_like(sim, dtype=bool)
    mask[owner, np.arange(len(owner))] = False
    assert M.paired_cosine(img, txt, text_to_image=owner) == pytest.approx(matched.mean())
    assert M.unpaired_cosine(img, txt, text_to_image=owner) == pytest.approx(sim[mask].mean())
    assert M.alignment(img, txt, text_to_image=owner) == pytest.approx((2 - 2 * matched).mean())


@pytest.mark.parametrize("t", [1.0, 2.0, 3.5])
def test_uniformity_closed_form(t):
    # one-hot rows: every pair at squared distance 2
    assert M.uniformity(eye(5), t=t) == pytest.approx(-2 * t)
    # two antipodal points: squared distance 4, the floor
    assert M.uniformity(np.array([[1.0, 0.0], [-1.0, 0.0]]), t=t) == pytest.approx(-4 * t)
    # one point repeated: distance 0
    assert M.uniformity(np.ones((4, 3)), t=t) == pytest.approx(0.0, abs=1e-12)


def test_uniformity_matches_direct_formula_in_blocks(monkeypatch):
    from scipy.spatial.distance import pdist

    x = np.random.default_rng(1).normal(size=(37, 6))
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    expected = np.log(np.mean(np.exp(-2 * pdist(u) ** 2)))
    assert M.uniformity(x) == pytest.approx(expected, abs=1e-10)
    monkeypatch.setattr(M, "_BLOCK", 50)
    assert M.uniformity(x) == pytest.approx(expected, abs=1e-10)


def test_uniformity_sample_is_seeded():
    x = np.random.default_rng(2).normal(size=(300, 4))
    a = M.uniformity(x, sample_size=50, random_state=7)
    assert a == M.uniformity(x, sample_size=50, random_state=7)
    assert M.uniformity(x, sample_size=500) == M.uniformity(x)


def test_linear_separability_of_orthogonal_clusters_is_one():
    rng = np.random.default_rng(0)
    e = eye(10)
    img = e[0] + 0.1 * rng.normal(size=(60, 10))
    txt = e[1] + 0.1 * rng.normal(size=(60, 10))
    assert M.linear_separability(img, txt) == 1.0


def test_linear_separability_without_gap_is_chance():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(600, 8))
    txt = rng.normal(size=(600, 8))
    assert abs(M.linear_separability(img, txt) - 0.5) < 0.08
    assert abs(M.linear_separability(img, img) - 0.5) < 0.08


def test_linear_separability_is_seeded():
    img, txt = gapped(shift=0.3)
    assert M.linear_separability(img, txt, random_state=4) == M.linear_separability(img, txt, random_state=4)


# -- spectrum -----------------------------------------------------------------------------
def test_spectrum_closed_form():
    a, b = 3.0, 1.0
    e = eye(5)
    x = np.array([a * e[0], -a * e[0], b * e[1], -b * e[1]])
    np.testing.assert_allclose(M.spectrum(x, normalize=False), [2 * a * a / 3, 2 * b * b / 3, 0, 0, 0],
                               atol=1e-12)
    np.testing.assert_allclose(M.spectrum(x), [2 / 3, 2 / 3, 0, 0, 0], atol=1e-12)


def test_effective_rank_closed_form():
    e = eye(6)
    assert M.effective_rank(np.array([e[0], -e[0], e[1], -e[1], e[2], -e[2]])) == pytest.approx(3.0)
    a, b = 3.0, 1.0
    x = np.array([a * e[0], -a * e[0], b * e[1], -b * e[1]])
    p = np.array([a, b]) / (a + b)
    assert M.effective_rank(x, normalize=False) == pytest.approx(math.exp(-(p * np.log(p)).sum()))


def test_effective_rank_of_a_single_point_is_undefined():
    with pytest.raises(ValueError, match="no variance"):
        M.effective_rank(np.ones((5, 3)))


# -- zero-shot and retrieval ------------------------------------------------------------------
def test_zero_shot_closed_form():
    rng = np.random.default_rng(0)
    cls = eye(6)[:3] * np.array([[1.0], [5.0], [0.2]])  # norms differ: cosine decides, not the dot product
    labels = rng.integers(0, 3, 30)
    img = eye(6)[labels] + 0.2 * rng.uniform(size=(30, 6)) * eye(6)[[3]]
    np.testing.assert_array_equal(M.zero_shot_predict(img, cls), labels)
    assert M.zero_shot_accuracy(img, cls, labels) == 1.0
    wrong = labels.copy()
    wrong[:6] = (wrong[:6] + 1) % 3
    assert M.zero_shot_accuracy(img, cls, wrong) == pytest.approx(24 / 30)


def test_zero_shot_accepts_a_set_of_one_label_and_tensors():
    cls = torch.eye(4)[:2]
    img = torch.eye(4)[[0, 0, 0]] + 0.1
    assert M.zero_shot_accuracy(img, cls, torch.zeros(3, dtype=torch.long)) == 1.0


def test_retrieval_of_perfect_pairs_is_one():
    e = eye(8)
    out = M.retrieval_recall(e, 2 * e, k=(1, 5))
    assert out == {"i2t_R@1": 1.0, "i2t_R@5": 1.0, "t2i_R@1": 1.0, "t2i_R@5": 1.0}


def test_retrieval_hand_worked_case_with_ties():
    e = eye(3)
    img = e
    # captions of image 0: e0 and e1 (the second looks like image 1); image 1: e1; image 2: e2
    txt = e[[0, 1, 1, 2]]
    owner = np.array([0, 0, 1, 2])
    out = M.retrieval_recall(img, txt, k=(1, 2, 3), text_to_image=owner)
    # caption 1 (e1, of image 0): image 1 scores 1, image 0 ties image 2 at 0 -> rank 2
    assert out["t2i_R@1"] == pytest.approx(3 / 4)
    assert out["t2i_R@2"] == pytest.approx(3 / 4)
    assert out["t2i_R@3"] == 1.0
    # image 1: its caption 2 scores 1 but caption 1 (of image 0) ties it -> rank 1
    assert out["i2t_R@1"] == pytest.approx(2 / 3)
    assert out["i2t_R@2"] == 1.0


def brute_recall(img, txt, owner, ks):
    ni = img / np.linalg.norm(img, axis=1, keepdims=True)
    nt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    sim = ni @ nt.T
    out = {}
    for k in ks:
        hits = [bool(set(np.argsort(-sim[i])[:k]) & set(np.flatnonzero(owner == i))) for i in range(len(img))]
        out[f"i2t_R@{k}"] = float(np.mean(hits))
    for k in ks:
        hits = [owner[j] in np.argsort(-sim[:, j])[:k] for j in range(len(txt))]
        out[f"t2i_R@{k}"] = float(np.mean(hits))
    return out


def test_retrieval_matches_brute_force(monkeypatch):
    rng = np.random.default_rng(5)
    img = rng.normal(size=(20, 6))
    owner = np.r_[np.arange(20), rng.integers(0, 20, 15)]
    txt = img[owner] + 1.2 * rng.normal(size=(len(owner), 6))
    expected = brute_recall(img, txt, owner, (1, 3, 5))
    assert M.retrieval_recall(img, txt, k=(1, 3, 5), text_to_image=owner) == pytest.approx(expected)
    monkeypatch.setattr(M, "_BLOCK", 40)
    assert M.retrieval_recall(img, txt, k=(1, 3, 5), text_to_image=owner) == pytest.approx(expected)


def test_retrieval_directions_swap_with_the_arguments():
    img, txt = gapped(n=40)
    ab = M.retrieval_recall(img, txt)
    ba = M.retrieval_recall(txt, img)
    for k in (1, 5, 10):
        assert ab[f"i2t_R@{k}"] == ba[f"t2i_R@{k}"]
        assert ab[f"t2i_R@{k}"] == ba[f"i2t_R@{k}"]


# -- relative modality gap, instance gap, anatomy and split ------------------------------------------
def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def direct_rmg(img, txt, owner):
    """Schrodi et al.'s RMG with the N x N similarity matrices, as their code computes it (without
    the floor on the matched distance)."""
    x, y = unit(img), unit(txt)

    def d(cos):
        return 1 - (cos + 1) / 2

    m = d(np.einsum("ij,ij->i", x[owner], y)).mean()
    sii, stt = x @ x.T, y @ y.T
    d_ii = d(sii[~np.eye(len(x), dtype=bool)]).mean()
    d_tt = d(stt[~np.eye(len(y), dtype=bool)]).mean()
    return m / (m + (d_ii + d_tt) / 2)


def captioned(seed=3, n=7, per=3, d=5, offset=0.8):
    """n images with per captions each, image 0 with twice as many, in shuffled order; the captions near
    their image."""
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(n, d))
    owner = rng.permutation(np.r_[np.repeat(np.arange(n), per), np.zeros(per, dtype=np.int64)])
    txt = img[owner] + 0.6 * rng.normal(size=(len(owner), d)) + offset * eye(d)[0]
    return img, txt, owner


def test_relative_modality_gap_matches_the_direct_formula():
    img = np.array([[1.0, 0.2, 0.0], [0.1, 1.0, 0.3], [-0.4, 0.5, 1.0], [0.3, -1.0, 0.2]])
    txt = np.array([[0.9, 0.5, 0.4], [0.0, 0.8, 0.9], [-0.2, 0.1, 1.2], [0.6, -0.7, 0.8]])
    assert M.relative_modality_gap(img, txt) == pytest.approx(direct_rmg(img, txt, np.arange(4)), abs=1e-12)
    img, txt, owner = captioned()
    expected = direct_rmg(img, txt, owner)
    assert M.relative_modality_gap(img, txt, text_to_image=owner) == pytest.approx(expected, abs=1e-12)
    ti, tt = torch.tensor(img, dtype=torch.float32), torch.tensor(txt, dtype=torch.float32)
    assert M.relative_modality_gap(ti, tt, text_to_image=torch.tensor(owner)) == pytest.approx(expected, abs=1e-6)


def test_relative_modality_gap_works_in_blocks(monkeypatch):
    img, txt, owner = captioned(n=12)
    expected = M.relative_modality_gap(img, txt, text_to_image=owner)
    monkeypatch.setattr(M, "_BLOCK", 10)
    assert M.relative_modality_gap(img, txt, text_to_image=owner) == pytest.approx(expected, abs=1e-14)


def test_relative_modality_gap_is_zero_without_a_gap_and_grows_with_an_offset():
    img, _, owner = captioned()
    assert M.relative_modality_gap(img, img) == 0.0
    assert M.relative_modality_gap(img, 4 * img[owner], text_to_image=owner) == 0.0
    rng = np.random.default_rng(0)
    img = rng.normal(size=(30, 8))
    txt = img + 0.3 * rng.normal(size=(30, 8))
    values = [M.relative_modality_gap(img, txt + s * eye(8)[2]) for s in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert (np.diff(values) > 0).all()
    assert 0 < values[0] and values[-1] < 1


def test_relative_modality_gap_uses_the_pairing_and_relative_gap_does_not():
    img, txt = gapped(n=60, d=10, shift=0.5)
    shuffled = txt[np.random.default_rng(1).permutation(60)]
    assert M.relative_gap(img, shuffled) == pytest.approx(M.relative_gap(img, txt), abs=1e-12)
    assert M.relative_modality_gap(img, shuffled) > M.relative_modality_gap(img, txt) + 0.05


def test_instance_gap_matches_the_direct_formula():
    img, txt, owner = captioned()
    expected = np.mean([np.linalg.norm(unit(img)[owner[j]] - unit(txt)[j]) for j in range(len(txt))])
    assert M.instance_gap(img, txt, text_to_image=owner) == pytest.approx(expected, abs=1e-12)
    assert M.instance_gap(img, txt, text_to_image=owner) == pytest.approx(
        M.alignment(img, txt, alpha=1.0, text_to_image=owner), abs=1e-12)
    e = eye(4)
    assert M.instance_gap(e[:2], np.array([e[0], -e[1]])) == pytest.approx(1.0)  # pair distances 0 and 2
    assert M.instance_gap(img, img) == 0.0


def two_axis_world(theta=0.4):
    """Images around v and texts around -v, v = 0.6 e2 + 0.8 e5: the gap is 2 cos(theta) v, so dimension 5
    carries 64% of its square and dimension 2 the other 36%."""
    e = eye(8)
    v = 0.6 * e[2] + 0.8 * e[5]
    return cone(v, theta, [e[0], e[1]]), cone(-v, theta, [e[0], e[3], e[7]])


def test_gap_anatomy_of_a_gap_along_two_axes():
    img, txt = two_axis_world()
    a = M.gap_anatomy(img * np.arange(1, 5)[:, None], txt)
    assert list(a.columns) == ["dim", "gap", "share", "cumulative"]
    assert a["dim"].tolist()[:2] == [5, 2]
    assert sorted(a["dim"].tolist()) == list(range(8))
    c = 2 * math.cos(0.4)
    np.testing.assert_allclose(a["gap"].to_numpy()[:2], [0.8 * c, 0.6 * c], atol=1e-12)
    np.testing.assert_allclose(a["share"].to_numpy(), [0.64, 0.36, 0, 0, 0, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(a["cumulative"].to_numpy()[:2], [0.64, 1.0], atol=1e-12)
    assert M.dims_for_share(a, 0.5) == 1
    assert M.dims_for_share(a, 0.64) == 1
    assert M.dims_for_share(a, 0.65) == 2
    assert M.dims_for_share(a, 0.9) == 2
    assert M.dims_for_share(a, 1.0) == 2
    assert M.dims_for_share(a.sample(frac=1.0, random_state=0), 0.65) == 2
    np.testing.assert_allclose(M.gap_anatomy(txt, img)["gap"], -a["gap"], atol=1e-12)


def test_gap_anatomy_shares_sum_to_one_and_follow_a_permutation_of_dimensions():
    img, txt = gapped(n=50, d=9, shift=0.4)
    a = M.gap_anatomy(img, txt)
    assert a["share"].sum() == pytest.approx(1.0, abs=1e-12)
    assert (np.diff(a["share"].to_numpy()) <= 0).all()
    assert a["cumulative"].iloc[-1] == 1.0
    assert (a["gap"] ** 2).sum() == pytest.approx(M.centroid_distance(img, txt) ** 2, abs=1e-12)
    perm = np.random.default_rng(2).permutation(9)
    b = M.gap_anatomy(img[:, perm], txt[:, perm])
    np.testing.assert_array_equal(perm[b["dim"].to_numpy()], a["dim"].to_numpy())
    np.testing.assert_allclose(b["share"], a["share"], atol=1e-14)
    for f in (0.1, 0.5, 0.9, 0.99):
        k = M.dims_for_share(a, f)
        assert a["cumulative"].iloc[k - 1] >= f - 1e-9
        assert k == 1 or a["cumulative"].iloc[k - 2] < f


def direct_split(img, txt, owner):
    x, y = unit(img)[owner], unit(txt)
    ci, ct = x.mean(axis=0), y.mean(axis=0)
    total = np.mean([np.sum((x[j] - y[j]) ** 2) for j in range(len(y))])
    distribution = np.mean([np.sum(((x[j] - ci) - (y[j] - ct)) ** 2) for j in range(len(y))])
    return total, float(np.sum((ci - ct) ** 2)), distribution


def test_gap_split_adds_up_and_matches_the_direct_computation(monkeypatch):
    img, txt, owner = captioned()
    s = M.gap_split(img, txt, text_to_image=owner)
    assert list(s) == ["total", "centroid", "distribution", "centroid_share"]
    total, centroid, distribution = direct_split(img, txt, owner)
    assert s["total"] == pytest.approx(total, abs=1e-12)
    assert s["centroid"] == pytest.approx(centroid, abs=1e-12)
    assert s["distribution"] == pytest.approx(distribution, abs=1e-12)
    assert s["centroid"] + s["distribution"] == pytest.approx(s["total"], abs=1e-12)
    assert s["centroid_share"] == pytest.approx(centroid / total, abs=1e-12)
    assert s["total"] == pytest.approx(M.alignment(img, txt, text_to_image=owner), abs=1e-12)
    # captions weight their image: c_I is the mean over the image of each text, not over the images
    assert s["centroid"] != pytest.approx(M.centroid_distance(img, txt) ** 2, abs=1e-6)
    img, txt = gapped(n=40, d=6)
    assert M.gap_split(img, txt)["centroid"] == pytest.approx(M.centroid_distance(img, txt) ** 2, abs=1e-12)
    monkeypatch.setattr(M, "_BLOCK", 12)
    assert M.gap_split(img, txt)["distribution"] == pytest.approx(direct_split(img, txt, np.arange(40))[2],
                                                                  abs=1e-12)


def test_gap_split_of_a_pure_shift_and_of_no_gap():
    e = eye(8)
    k = [0, 1, 2, 3, 0, 2]
    img = (e[k] + e[6]) / math.sqrt(2) * np.arange(1, 7)[:, None]
    txt = (e[k] + e[7]) / math.sqrt(2)
    s = M.gap_split(img, txt)  # every x_j - y_j is (e6 - e7) / sqrt2: all of the gap is the centroid shift
    assert s["total"] == pytest.approx(1.0, abs=1e-12)
    assert s["distribution"] == pytest.approx(0.0, abs=1e-12)
    assert s["centroid_share"] == pytest.approx(1.0, abs=1e-12)
    img, _, owner = captioned()
    assert M.gap_split(img, img[owner], text_to_image=owner) == {
        "total": 0.0, "centroid": 0.0, "distribution": 0.0, "centroid_share": 0.0}
    img, txt = gapped(n=50, d=8, shift=0.5)
    shuffled = M.gap_split(img, txt[np.random.default_rng(0).permutation(50)])
    paired = M.gap_split(img, txt)
    assert shuffled["centroid"] == pytest.approx(paired["centroid"], abs=1e-12)
    assert shuffled["distribution"] > paired["distribution"]


# -- shift experiment -----------------------------------------------------------------------------
def shift_world():
    """x_k = (e_k + e_I)/sqrt2, c_k = (e_k + e_T)/sqrt2: g = (e_I - e_T)/sqrt2, gap distance 1."""
    e = eye(6)
    img = (e[[0, 1, 2, 0, 1, 2]] + e[4]) / math.sqrt(2)
    cls = (e[[0, 1, 2]] + e[5]) / math.sqrt(2)
    return img, cls, np.array([0, 1, 2, 0, 1, 2])


def test_shift_along_gap_closed_form():
    img, cls, labels = shift_world()
    deltas = [-3.0, -1.0, 0.0, 0.5, 1.0, 2.0, 4.0]
    df = M.shift_along_gap(img, cls, labels, deltas)
    assert list(df.columns) == ["delta", "accuracy", "centroid_distance", "centroid_mse"]
    assert df["delta"].tolist() == deltas
    for d, dist in zip(deltas, df["centroid_distance"]):
        a, b = 1 - d / 2, d / 2
        assert dist == pytest.approx(math.sqrt(2) * abs(a - b) / math.sqrt(1 + a * a + b * b), abs=1e-12)
    assert df.loc[df["delta"] == 1.0, "centroid_distance"].item() == pytest.approx(0.0, abs=1e-12)
    # every class projects equally on g, so the argmax never changes
    assert (df["accuracy"] == 1.0).all()
    np.testing.assert_allclose(df["centroid_mse"], df["centroid_distance"] ** 2 / 6, atol=1e-15)


def test_shift_along_gap_at_zero_is_the_model_as_it_is():
    rng = np.random.default_rng(0)
    img, _ = gapped(n=50, d=8)
    cls = rng.normal(size=(4, 8)) - 1.5 * eye(8)[0]
    labels = rng.integers(0, 4, 50)
    row = M.shift_along_gap(img, cls, labels, [0.0]).iloc[0]
    assert row["accuracy"] == M.zero_shot_accuracy(img, cls, labels)
    assert row["centroid_distance"] == pytest.approx(M.centroid_distance(img, cls))
    assert len(M.shift_along_gap(img, cls, labels)) == 41


def test_shift_along_gap_direction_is_normalised_and_may_be_a_tensor():
    img, cls, labels = shift_world()
    g = (eye(6)[4] - eye(6)[5]) / math.sqrt(2)
    default = M.shift_along_gap(img, cls, labels, [0.5, 1.0])
    given = M.shift_along_gap(img, cls, labels, [0.5, 1.0], direction=torch.tensor(3 * g))
    pd.testing.assert_frame_equal(default, given, atol=1e-12)


# -- the report ------------------------------------------------------------------------------------
def test_gap_report_agrees_with_the_functions_and_concatenates():
    rng = np.random.default_rng(0)
    img, txt = gapped(n=60, d=10)
    cls = rng.normal(size=(3, 10))
    labels = rng.integers(0, 3, 60)
    r = M.gap_report(img, txt, class_emb=cls, labels=labels, name="clip", sample_size=None)
    assert r.name == "clip"
    assert r["centroid_distance"] == pytest.approx(M.centroid_distance(img, txt))
    assert r["centroid_mse"] == pytest.approx(M.centroid_mse(img, txt))
    assert r["relative_gap"] == pytest.approx(M.relative_gap(img, txt))
    assert r["paired_cosine"] == pytest.approx(M.paired_cosine(img, txt))
    assert r["unpaired_cosine"] == pytest.approx(M.unpaired_cosine(img, txt))
    assert r["alignment"] == pytest.approx(M.alignment(img, txt))
    assert r["uniformity_image"] == pytest.approx(M.uniformity(img))
    assert r["uniformity_text"] == pytest.approx(M.uniformity(txt))
    assert r["linear_separability"] == M.linear_separability(img, txt)
    assert r["effective_rank_text"] == pytest.approx(M.effective_rank(txt))
    assert r["zero_shot_accuracy"] == M.zero_shot_accuracy(img, cls, labels)
    assert r["relative_modality_gap"] == pytest.approx(M.relative_modality_gap(img, txt))
    assert r["instance_gap"] == pytest.approx(M.instance_gap(img, txt))
    assert r["gap_centroid_share"] == pytest.approx(M.gap_split(img, txt)["centroid_share"])
    anatomy = M.gap_anatomy(img, txt)
    assert (r["gap_dims_50"], r["gap_dims_90"]) == (M.dims_for_share(anatomy, 0.5), M.dims_for_share(anatomy, 0.9))
    assert list(r.index) == [
        "n_images", "n_texts", "dim", "centroid_distance", "centroid_mse", "relative_gap",
        "relative_modality_gap", "instance_gap", "gap_centroid_share", "gap_dims_50", "gap_dims_90",
        "paired_cosine", "unpaired_cosine", "alignment", "uniformity_image", "uniformity_text",
        "linear_separability", "effective_rank_image", "effective_rank_text",
        "i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "zero_shot_accuracy"]
    for key, value in M.retrieval_recall(img, txt).items():
        assert r[key] == value
    assert (r["n_images"], r["n_texts"], r["dim"]) == (60, 60, 10)
    other = M.gap_report(img, img + 0.1 * txt, name="refined")
    table = pd.DataFrame([r, other])
    assert list(table.index) == ["clip", "refined"]
    assert np.isnan(table.loc["refined", "zero_shot_accuracy"])
    assert table.loc["refined", "centroid_distance"] < table.loc["clip", "centroid_distance"]


def test_gap_report_with_captions_and_separate_zero_shot_images():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(10, 6))
    owner = np.repeat(np.arange(10), 3)
    txt = img[owner] + rng.normal(size=(30, 6))
    zs = np.eye(6)[[0, 1, 0, 1]]
    r = M.gap_report(img, txt, text_to_image=owner, class_emb=np.eye(6)[:2], labels=[0, 1, 0, 1],
                     zero_shot_image_emb=zs)
    assert r["zero_shot_accuracy"] == 1.0
    assert r["paired_cosine"] == pytest.approx(M.paired_cosine(img, txt, text_to_image=owner))
    assert r["i2t_R@1"] == M.retrieval_recall(img, txt, text_to_image=owner)["i2t_R@1"]
    assert r["relative_modality_gap"] == pytest.approx(M.relative_modality_gap(img, txt, text_to_image=owner))
    assert r["instance_gap"] == pytest.approx(M.instance_gap(img, txt, text_to_image=owner))
    assert r["gap_centroid_share"] == pytest.approx(M.gap_split(img, txt, text_to_image=owner)["centroid_share"])
    assert r["gap_dims_90"] == M.dims_for_share(M.gap_anatomy(img, txt), 0.9)


def test_gap_report_without_a_centroid_gap_needs_no_dimensions():
    img, _ = gapped(n=20, d=6)
    r = M.gap_report(img, img[::-1])
    assert (r["gap_dims_50"], r["gap_dims_90"]) == (0.0, 0.0)
    assert r["gap_centroid_share"] == pytest.approx(0.0, abs=1e-12)
    assert r["relative_modality_gap"] > 0.0  # the pairs are crossed, so matched rows are far apart


# -- properties -------------------------------------------------------------------------------------
def test_figures_do_not_change_under_a_common_rotation():
    img, txt = gapped(n=60, d=10, shift=0.6)
    q = rotation(10, seed=9)
    a = M.gap_report(img, txt, sample_size=None)
    b = M.gap_report(img @ q, txt @ q, sample_size=None)
    # the anatomy's counts are per embedding dimension, so a rotation changes them; a permutation does not
    basis = ["linear_separability", "gap_dims_50", "gap_dims_90"]
    exact = a.drop(basis)
    pd.testing.assert_series_equal(exact, b.drop(basis), atol=1e-9, rtol=0)
    perm = np.random.default_rng(3).permutation(10)
    c = M.gap_report(img[:, perm], txt[:, perm], sample_size=None)
    assert (c["gap_dims_50"], c["gap_dims_90"]) == (a["gap_dims_50"], a["gap_dims_90"])
    assert b["linear_separability"] == pytest.approx(a["linear_separability"], abs=0.04)
    np.testing.assert_allclose(M.gap_vector(img @ q, txt @ q), M.gap_vector(img, txt) @ q, atol=1e-12)
    np.testing.assert_allclose(M.spectrum(img @ q), M.spectrum(img), atol=1e-12)


def test_symmetric_figures_are_symmetric():
    img, txt = gapped(n=30, d=7)
    for f in (M.centroid_distance, M.centroid_mse, M.relative_gap, M.paired_cosine, M.unpaired_cosine,
              M.alignment):
        assert f(img, txt) == pytest.approx(f(txt, img), abs=1e-12)


def test_torch_and_numpy_inputs_agree():
    img, txt = gapped(n=30, d=7)
    ti, tt = torch.tensor(img, dtype=torch.float32), torch.tensor(txt, dtype=torch.float32)
    assert M.centroid_distance(ti, tt) == pytest.approx(M.centroid_distance(img, txt), abs=1e-6)
    assert M.paired_cosine(ti, tt) == pytest.approx(M.paired_cosine(img, txt), abs=1e-6)
    assert M.uniformity(ti) == pytest.approx(M.uniformity(img), abs=1e-5)


# -- bad input ---------------------------------------------------------------------------------------
GOOD = np.random.default_rng(0).normal(size=(6, 4))
NAN = GOOD.copy()
NAN[2, 1] = np.nan
INF = GOOD.copy()
INF[4, 0] = np.inf
ZERO = GOOD.copy()
ZERO[1] = 0.0
CLS = np.eye(4)[:3]
LAB = np.array([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize("call, match", [
    (lambda: M.centroid_distance(np.zeros((0, 4)), GOOD), "image_emb is empty"),
    (lambda: M.centroid_mse(GOOD, np.zeros((0, 4))), "text_emb is empty"),
    (lambda: M.centroid_distance(GOOD, NAN), "text_emb has NaN or infinite entries .first in row 2"),
    (lambda: M.gap_vector(INF, GOOD), "image_emb has NaN or infinite entries .first in row 4"),
    (lambda: M.relative_gap(GOOD, np.ones((6, 5))), "image_emb has dimension 4 but text_emb has dimension 5"),
    (lambda: M.centroid_distance(GOOD[0], GOOD), "image_emb must be a 2-D array"),
    (lambda: M.centroid_distance(ZERO, GOOD), "image_emb has 1 row.s. of zero norm"),
    (lambda: M.centroid_distance(None, GOOD), "image_emb is None"),
    (lambda: M.centroid_distance([["a", "b"]], GOOD), "image_emb must be a numeric array"),
    (lambda: M.paired_cosine(GOOD, GOOD[:5]), "image_emb has 6 rows but text_emb has 5"),
    (lambda: M.unpaired_cosine(GOOD[:5], GOOD), "text_to_image"),
    (lambda: M.alignment(GOOD, GOOD[:3]), "text_to_image"),
    (lambda: M.alignment(GOOD, GOOD, alpha=0), "alpha"),
    (lambda: M.retrieval_recall(GOOD, GOOD[:4]), "text_to_image"),
    (lambda: M.paired_cosine(GOOD, GOOD[:3], text_to_image=[0, 1, 9]), "text_to_image holds image indices"),
    (lambda: M.paired_cosine(GOOD, GOOD[:3], text_to_image=[0, 1]), "one entry per row of text_emb"),
    (lambda: M.paired_cosine(GOOD, GOOD[:3], text_to_image=[0, 1.5, 2]), "text_to_image must hold integers"),
    (lambda: M.retrieval_recall(GOOD, GOOD[:3], text_to_image=[0, 1, 2]), "without a text"),
    (lambda: M.retrieval_recall(GOOD, GOOD, k=0), "k must be a positive integer"),
    (lambda: M.unpaired_cosine(GOOD[:1], GOOD[:1]), "no unmatched pairs"),
    (lambda: M.uniformity(GOOD[:1]), "emb has 1 row.s.; this figure needs at least 2"),
    (lambda: M.uniformity(GOOD, t=-1), "t must be a positive number"),
    (lambda: M.uniformity(GOOD, sample_size=1), "sample_size"),
    (lambda: M.spectrum(np.zeros((3, 0))), "emb has zero dimensions"),
    (lambda: M.linear_separability(GOOD[:3], GOOD), "image_emb has 3 rows"),
    (lambda: M.linear_separability(GOOD, GOOD, test_size=1.5), "test_size"),
    (lambda: M.zero_shot_accuracy(GOOD, CLS[:1], np.zeros(6, dtype=int)), "class_emb has a single class"),
    (lambda: M.zero_shot_predict(GOOD, np.eye(5)[:3]), "image_emb has dimension 4 but class_emb has dimension 5"),
    (lambda: M.zero_shot_accuracy(GOOD, CLS, LAB[:5]), "labels must have one entry per image"),
    (lambda: M.zero_shot_accuracy(GOOD, CLS, LAB + 1), "labels: label 3 at index 2 is outside 0..2"),
    (lambda: M.zero_shot_accuracy(GOOD, CLS, None), "labels is None"),
    (lambda: M.zero_shot_accuracy(GOOD, NAN[:3], LAB), "class_emb has NaN"),
    (lambda: M.shift_along_gap(GOOD, CLS, LAB, [0.0, np.nan]), "deltas has NaN"),
    (lambda: M.shift_along_gap(GOOD, CLS, LAB, []), "deltas must be a non-empty"),
    (lambda: M.shift_along_gap(GOOD, CLS, LAB, [1.0], direction=np.ones(3)), "direction has 3 entries"),
    (lambda: M.shift_along_gap(GOOD, CLS, LAB, [1.0], direction=np.zeros(4)), "direction is the zero vector"),
    (lambda: M.gap_report(GOOD, GOOD, class_emb=CLS), "class_emb and labels go together"),
    (lambda: M.gap_report(GOOD, GOOD, zero_shot_image_emb=GOOD), "zero_shot_image_emb needs class_emb"),
    (lambda: M.gap_report(GOOD, GOOD[:5]), "text_to_image"),
    (lambda: M.relative_modality_gap(GOOD[:1], GOOD[:1]), "image_emb has 1 row; relative_modality_gap"),
    (lambda: M.relative_modality_gap(GOOD, GOOD[:1], text_to_image=[0]),
     "text_emb has 1 row; relative_modality_gap"),
    (lambda: M.relative_modality_gap(GOOD, GOOD[:5]), "text_to_image"),
    (lambda: M.relative_modality_gap(np.ones((3, 4)), np.ones((3, 4))), "all the same point"),
    (lambda: M.relative_modality_gap(GOOD, NAN), "text_emb has NaN"),
    (lambda: M.instance_gap(GOOD, GOOD[:3], text_to_image=[0, 1, 9]), "text_to_image holds image indices"),
    (lambda: M.instance_gap(ZERO, GOOD), "image_emb has 1 row.s. of zero norm"),
    (lambda: M.gap_split(GOOD, GOOD[:3]), "text_to_image"),
    (lambda: M.gap_split(GOOD, np.ones((6, 5))), "image_emb has dimension 4 but text_emb has dimension 5"),
    (lambda: M.gap_anatomy(GOOD, GOOD), "same centroid"),
    (lambda: M.gap_anatomy(None, GOOD), "image_emb is None"),
    (lambda: M.dims_for_share(M.gap_anatomy(GOOD, -GOOD), 0.0), "fraction must lie in"),
    (lambda: M.dims_for_share(M.gap_anatomy(GOOD, -GOOD), 1.5), "fraction must lie in"),
    (lambda: M.dims_for_share(M.gap_anatomy(GOOD, -GOOD).head(1), 0.99999), "pass the whole table"),
    (lambda: M.dims_for_share(pd.DataFrame({"dim": [0]}), 0.5), "anatomy has no 'share' column"),
])
def test_bad_input_raises_a_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_dims_for_share_wants_the_anatomy_table_and_a_number():
    with pytest.raises(TypeError, match="anatomy must be the DataFrame returned by gap_anatomy"):
        M.dims_for_share(np.array([0.5, 0.5]), 0.5)
    with pytest.raises(TypeError, match="fraction must be a number"):
        M.dims_for_share(M.gap_anatomy(GOOD, -GOOD), "half")


def test_class_silhouette_tells_tight_classes_from_mixed_ones():
    rng = np.random.default_rng(0)
    centers = np.eye(8)[:3] * 5
    labels = np.repeat(np.arange(3), 40)
    tight = centers[labels] + 0.3 * rng.normal(size=(120, 8))
    loose = centers[labels] + 3.0 * rng.normal(size=(120, 8))
    mixed = tight[rng.permutation(120)]
    s_tight, s_loose = M.class_silhouette(tight, labels), M.class_silhouette(loose, labels)
    assert 0.8 < s_tight <= 1.0
    assert s_loose < s_tight
    assert abs(M.class_silhouette(mixed, labels)) < 0.1
    # a sample gives the figure of the whole to within its noise, and the seed fixes it
    assert M.class_silhouette(tight, labels, sample_size=60, random_state=1) == pytest.approx(s_tight, abs=0.1)
    assert (M.class_silhouette(loose, labels, sample_size=60, random_state=2)
            == M.class_silhouette(loose, labels, sample_size=60, random_state=2))
    with pytest.raises(ValueError, match="at least two"):
        M.class_silhouette(tight, np.zeros(120, dtype=int))
    with pytest.raises(ValueError, match="one label per row"):
        M.class_silhouette(tight, labels[:-1])
