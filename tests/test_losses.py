"""The losses of CLIP-Refine and its baselines, against values worked out by
hand on small fixed tensors, and the identities that tie them together."""
import math

import pytest
import torch
import torch.nn.functional as F

from modgap.adapt.losses import (
    contrastive_loss,
    hybrid_distillation,
    hycd_loss,
    rafa_loss,
    sample_references,
    self_kd_loss,
)


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


# -- RaFA ---------------------------------------------------------------------

def test_rafa_matches_hand_computed_value():
    image = t([[1, 0], [0, 2]])
    text = t([[0, 0], [1, 1]])
    ref = t([[1, 1], [0, 0]])
    # image - ref = [[0,-1],[0,2]] -> (0+1+0+4)/4 = 1.25
    # text - ref  = [[-1,-1],[1,1]] -> (1+1+1+1)/4 = 1.0
    assert rafa_loss(image, text, ref).item() == pytest.approx(2.25)


def test_rafa_normalize_projects_features_and_references_onto_the_sphere():
    image = t([[3, 4]])   # -> [0.6, 0.8]
    text = t([[0, 2]])    # -> [0, 1]
    ref = t([[5, 0]])     # -> [1, 0]
    # (0.4^2 + 0.8^2)/2 = 0.4 ; (1 + 1)/2 = 1.0
    assert rafa_loss(image, text, ref, normalize=True).item() == pytest.approx(1.4)
    assert rafa_loss(image, text, ref).item() != pytest.approx(1.4)
    # scale-free when normalised
    assert rafa_loss(7 * image, 0.1 * text, 3 * ref, normalize=True).item() == pytest.approx(1.4)


def test_rafa_uses_one_reference_for_both_sides_of_a_pair():
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(4, 8, generator=g)
    ref = torch.randn(4, 8, generator=g)
    # identical image and text features sit at the same distance from the shared reference
    assert rafa_loss(feat, feat, ref).item() == pytest.approx(2 * F.mse_loss(feat, ref).item())
    # a pair whose features equal its reference costs nothing
    assert rafa_loss(ref, ref, ref).item() == 0.0


def test_rafa_gradient_pulls_features_towards_the_reference():
    image = torch.zeros(3, 4, requires_grad=True)
    text = torch.zeros(3, 4, requires_grad=True)
    ref = torch.ones(3, 4)
    rafa_loss(image, text, ref).backward()
    # d/dx mean((x - r)^2) = 2 (x - r) / N
    assert torch.allclose(image.grad, torch.full((3, 4), -2 / 12))
    assert torch.allclose(text.grad, image.grad)


def test_sample_references_are_standard_normal_reproducible_and_fresh():
    a = sample_references(4, 16, generator=torch.Generator().manual_seed(3))
    b = sample_references(4, 16, generator=torch.Generator().manual_seed(3))
    assert a.shape == (4, 16) and a.dtype == torch.float32
    torch.testing.assert_close(a, b)
    g = torch.Generator().manual_seed(3)
    first, second = sample_references(4, 16, generator=g), sample_references(4, 16, generator=g)
    assert not torch.equal(first, second)
    big = sample_references(20000, 8, generator=torch.Generator().manual_seed(0))
    assert abs(big.mean().item()) < 0.02
    assert big.std().item() == pytest.approx(1.0, abs=0.02)
    # not on the sphere: norms spread around sqrt(D)
    assert big.norm(dim=1).mean().item() == pytest.approx(math.sqrt(8), rel=0.05)


def test_rafa_and_references_reject_bad_arguments():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="reference"):
        rafa_loss(x, x, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="image_feat"):
        rafa_loss(torch.zeros(3), x, x)
    with pytest.raises(ValueError, match="n must"):
        sample_references(0, 3)
    with pytest.raises(TypeError, match="generator"):
        sample_references(2, 3, generator=0)


# -- HyCD ---------------------------------------------------------------------

def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def test_hycd_matches_hand_computed_value():
    eye = t([[1, 0], [0, 1]])
    zeros = torch.zeros(2, 2)
    # student logits = 3 I, teacher logits = 0 (uniform softmax); alpha = 0.5
    # target rows [0.75, 0.25]; student rows [e^3/(e^3+1), 1/(e^3+1)]; both directions alike
    e3 = math.exp(3)
    expected = _kl([0.75, 0.25], [e3 / (e3 + 1), 1 / (e3 + 1)])
    assert hycd_loss(3 * eye, eye, zeros, zeros, alpha=0.5).item() == pytest.approx(expected, rel=1e-5)


def test_hycd_temperature_softens_and_scales_by_t_squared():
    eye = t([[1, 0], [0, 1]])
    zeros = torch.zeros(2, 2)
    # T = 2: student rows softmax([0.5, 0]); loss times 4
    q = [math.exp(0.5) / (math.exp(0.5) + 1), 1 / (math.exp(0.5) + 1)]
    expected = 4 * _kl([0.75, 0.25], q)
    assert hycd_loss(eye, eye, zeros, zeros, alpha=0.5, temperature=2.0).item() == pytest.approx(expected, rel=1e-5)


def test_hycd_directions_use_the_transposed_logits():
    # asymmetric logits: the text->image direction sees different rows
    si, st = t([[2, 0], [0, 0]]), t([[1, 0], [1, 0]])   # logits [[2, 2], [0, 0]]
    zeros = torch.zeros(2, 2)
    s = si @ st.T
    a, T = 0.5, 1.0
    rows = lambda m: [[math.exp(v) / sum(math.exp(w) for w in r) for v in r] for r in m.tolist()]
    target = [[0.75, 0.25], [0.25, 0.75]]
    i2t = sum(_kl(p, q) for p, q in zip(target, rows(s))) / 2
    t2i = sum(_kl(p, q) for p, q in zip(target, rows(s.T))) / 2
    assert i2t != pytest.approx(t2i)
    assert hycd_loss(si, st, zeros, zeros, alpha=a, temperature=T).item() == pytest.approx((i2t + t2i) / 2, rel=1e-5)


def test_alpha_one_is_the_contrastive_cross_entropy_on_the_same_logits():
    g = torch.Generator().manual_seed(1)
    si, st = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    ti, tt = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    logits = si @ st.T
    labels = torch.arange(6)
    ce = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    torch.testing.assert_close(hycd_loss(si, st, ti, tt, alpha=1.0), ce)
    # the same as the CLIP loss on raw features with a unit scale
    torch.testing.assert_close(contrastive_loss(si, st, 1.0, normalize=False), ce)


def test_alpha_zero_is_pure_distillation():
    g = torch.Generator().manual_seed(2)
    si, st = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    ti, tt = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    s, te = si @ st.T, ti @ tt.T

    def kd(sl, tl):
        p, q = tl.softmax(1), sl.softmax(1)
        return (p * (p.log() - q.log())).sum(1).mean()

    expected = (kd(s, te) + kd(s.T, te.T)) / 2
    torch.testing.assert_close(hycd_loss(si, st, ti, tt, alpha=0.0), expected)
    torch.testing.assert_close(self_kd_loss(si, st, ti, tt), expected)
    assert expected.item() > 0


def test_student_equal_to_teacher_with_alpha_zero_costs_nothing():
    g = torch.Generator().manual_seed(3)
    img, txt = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    assert self_kd_loss(img, txt, img.clone(), txt.clone()).item() == pytest.approx(0.0, abs=1e-6)
    # but not with the true pairs mixed in
    assert hycd_loss(img, txt, img.clone(), txt.clone(), alpha=0.5).item() > 1e-3


def test_hycd_gradients_reach_the_student_only():
    g = torch.Generator().manual_seed(4)
    si = torch.randn(4, 3, generator=g, requires_grad=True)
    st = torch.randn(4, 3, generator=g, requires_grad=True)
    ti = torch.randn(4, 3, generator=g, requires_grad=True)
    tt = torch.randn(4, 3, generator=g, requires_grad=True)
    hycd_loss(si, st, ti, tt).backward()
    assert si.grad is not None and si.grad.abs().sum() > 0
    assert ti.grad is None and tt.grad is None


def test_hybrid_distillation_and_hycd_reject_bad_arguments():
    x = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="alpha"):
        hybrid_distillation(x, x, alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        hybrid_distillation(x, x, temperature=0)
    with pytest.raises(ValueError, match="square"):
        hybrid_distillation(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="teacher_text"):
        hycd_loss(x, x, x, torch.zeros(3, 2))


# -- contrastive --------------------------------------------------------------

def test_contrastive_matches_hand_computed_value():
    image = t([[2, 0], [0, 3]])   # normalised to the identity
    text = t([[1, 0], [0, 5]])
    # logits [[2, 0], [0, 2]]: each row's CE is log(1 + e^-2)
    assert contrastive_loss(image, text, 2.0).item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-5)
    # swapping the pairs makes every row wrong: log(1 + e^2)
    assert contrastive_loss(image, text.flip(0), 2.0).item() == pytest.approx(math.log(1 + math.exp(2)), rel=1e-5)


def test_contrastive_trains_the_logit_scale():
    g = torch.Generator().manual_seed(5)
    img, txt = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    log_scale = torch.tensor(math.log(100.0), requires_grad=True)
    contrastive_loss(img, txt, log_scale.exp()).backward()
    assert log_scale.grad is not None and log_scale.grad.item() != 0
    with pytest.raises(ValueError, match="logit_scale"):
        contrastive_loss(img, txt, -1.0)
