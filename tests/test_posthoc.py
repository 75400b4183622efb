"""modgap.adapt.posthoc: each closer's defining property on synthetic gapped
embeddings, the shared transformer contract, and bad input."""
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from modgap.adapt.posthoc import CLOSERS, GapShift, MeanCentering, Standardization
from modgap.metrics import centroid_distance, gap_vector

ALL = [MeanCentering, Standardization, GapShift]


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def gapped(n=400, m=300, d=32, offset=1.0, seed=0):
    """Random unit vectors plus a fixed offset per modality (opposite
    directions), renormalised: two cones with a clear gap between them."""
    rng = np.random.default_rng(seed)
    u = unit(rng.normal(size=(1, d)))[0]
    img = unit(unit(rng.normal(size=(n, d))) + offset * u)
    txt = unit(unit(rng.normal(size=(m, d))) - offset * u)
    return img, txt


def plain_gap(img, txt):
    """|| mean(img) - mean(txt) || of the rows as they are (no normalisation)."""
    return float(np.linalg.norm(np.asarray(img, np.float64).mean(0) - np.asarray(txt, np.float64).mean(0)))


# -- the closers ---------------------------------------------------------------------
def test_mean_centering_without_renormalisation_closes_the_gap_exactly():
    img, txt = gapped()
    mc = MeanCentering(renormalize=False)
    a, b = mc.fit_transform(img, txt)
    assert plain_gap(img, txt) > 0.5
    assert plain_gap(a, b) < 1e-6
    np.testing.assert_allclose(mc.image_mean_, img.mean(0), atol=1e-6)
    np.testing.assert_allclose(mc.text_mean_, txt.mean(0), atol=1e-6)
    # fit then transform gives the same as fit_transform
    a2, b2 = MeanCentering(renormalize=False).fit(img, txt).transform(img, txt)
    np.testing.assert_allclose(a2, a, atol=1e-7)
    np.testing.assert_allclose(b2, b, atol=1e-7)


def test_mean_centering_reduces_the_gap_distance():
    img, txt = gapped()
    before = centroid_distance(img, txt)
    a, b = MeanCentering().fit_transform(img, txt)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert before > 0.5
    assert centroid_distance(a, b) < 0.2 * before


def test_standardization_without_renormalisation_gives_zero_mean_unit_variance():
    img, txt = gapped()
    st = Standardization(renormalize=False)
    a, b = st.fit_transform(img, txt)
    for out, raw in ((a, img), (b, txt)):
        out = out.astype(np.float64)
        np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-5)
        np.testing.assert_allclose(out.var(0), 1.0, atol=1e-4)
    np.testing.assert_allclose(st.image_std_, img.std(0), rtol=1e-5)
    np.testing.assert_allclose(st.text_std_, txt.std(0), rtol=1e-5)
    assert plain_gap(a, b) < 1e-5


def test_standardization_reduces_the_gap_and_floors_constant_dimensions():
    img, txt = gapped()
    before = centroid_distance(img, txt)
    a, b = Standardization().fit_transform(img, txt)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert centroid_distance(a, b) < 0.2 * before
    # a dimension constant on the calibration set is centred, not divided by zero
    img0, txt0 = img.copy(), txt.copy()
    img0[:, -1] = 0.0
    txt0[:, -1] = 0.0
    st = Standardization(eps=1e-8, renormalize=False).fit(img0, txt0)
    assert st.image_std_[-1] == 1e-8
    out = st.transform_images(img0)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:, -1], 0.0, atol=1e-6)


def test_gap_shift_by_zero_is_the_identity():
    img, txt = gapped()
    raw_img, raw_txt = 3.0 * img, 0.5 * txt
    a, b = GapShift(delta=0.0).fit(raw_img, raw_txt).transform(raw_img, raw_txt)
    np.testing.assert_allclose(a, img, atol=1e-6)
    np.testing.assert_allclose(b, txt, atol=1e-6)


def test_gap_shift_by_the_gap_length_reduces_the_gap():
    img, txt = gapped()
    before = centroid_distance(img, txt)
    gs = GapShift(delta=before).fit(img, txt)
    np.testing.assert_allclose(gs.direction_, gap_vector(img, txt), atol=1e-6)
    a, b = gs.transform(img, txt)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert centroid_distance(a, b) < 0.5 * before
    # images moved against the direction, texts along it
    g = gs.direction_
    assert (a @ g).mean() < (img @ g).mean() and (b @ g).mean() > (txt @ g).mean()


def test_gap_shift_takes_a_given_direction():
    img, txt = gapped()
    d = img.shape[1]
    e = np.zeros(d)
    e[3] = 2.0
    gs = GapShift(delta=0.4, direction=e).fit(img, txt)
    np.testing.assert_allclose(gs.direction_, e / 2.0)
    a = gs.transform_images(img)
    np.testing.assert_allclose(a, unit(img - 0.2 * e / 2.0), atol=1e-6)
    t = gs.transform_texts(txt)
    np.testing.assert_allclose(t, unit(txt + 0.2 * e / 2.0), atol=1e-6)
    with pytest.raises(ValueError, match=r"direction has dimension 5 but image_emb and text_emb have dimension 32"):
        GapShift(direction=np.ones(5)).fit(img, txt)
    with pytest.raises(ValueError, match="direction is the zero vector"):
        GapShift(direction=np.zeros(d)).fit(img, txt)


def test_gap_shift_refuses_coinciding_centroids_and_a_shift_onto_the_origin():
    img, _ = gapped()
    with pytest.raises(ValueError, match="same centroid"):
        GapShift().fit(img, img)
    gs = GapShift(delta=2.0, direction=img[0]).fit(img, img[::-1])
    with pytest.raises(ValueError, match="rows of image_emb onto the origin"):
        gs.transform_images(img[:1])


def test_closers_by_name():
    assert CLOSERS == {"mean-centering": MeanCentering, "standardization": Standardization,
                       "gap-shift": GapShift}


# -- the shared contract ---------------------------------------------------------------
@pytest.mark.parametrize("cls", ALL)
def test_outputs_are_unit_float32_rows_and_inputs_stay_untouched(cls):
    img, txt = gapped()
    img32, txt32 = (3.0 * img).astype(np.float32), txt.astype(np.float32)
    keep_img, keep_txt = img32.copy(), txt32.copy()
    closer = cls().fit(img32, txt32)
    assert closer.n_features_in_ == img.shape[1]
    a, b = closer.transform(img32, txt32)
    c, e = closer.fit_transform(img32, txt32)
    for out in (a, b, c, e, closer.transform_images(img32), closer.transform_texts(txt32)):
        assert isinstance(out, np.ndarray) and out.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(img32, keep_img)
    np.testing.assert_array_equal(txt32, keep_txt)
    np.testing.assert_allclose(a, c, atol=1e-6)


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("method", ["transform", "transform_images", "transform_texts"])
def test_embeddings_of_another_dimension_are_refused(cls, method):
    img, txt = gapped(d=32)
    other, _ = gapped(d=16, seed=1)
    closer = cls().fit(img, txt)
    name = "text_emb" if method == "transform_texts" else "image_emb"
    pattern = (rf"{name} has dimension 16, but this {cls.__name__} was fitted on embeddings of "
               r"dimension 32; fit it on embeddings of the same model")
    with pytest.raises(ValueError, match=pattern):
        getattr(closer, method)(other)
    if method == "transform":
        with pytest.raises(ValueError, match=pattern.replace("image_emb", "text_emb")):
            closer.transform(img, other)


@pytest.mark.parametrize("cls", ALL)
def test_fit_checks_its_input_and_names_the_argument(cls):
    img, txt = gapped()
    with pytest.raises(ValueError, match="image_emb has dimension 32 but text_emb has dimension 16"):
        cls().fit(img, txt[:, :16])
    bad = txt.copy()
    bad[5, 2] = np.nan
    with pytest.raises(ValueError, match=r"text_emb has NaN or infinite entries \(first in row 5\)"):
        cls().fit(img, bad)
    with pytest.raises(ValueError, match="image_emb must be a 2-D array"):
        cls().fit(img[0], txt)
    with pytest.raises(ValueError, match="text_emb is None"):
        cls().fit(img, None)
    with pytest.raises(ValueError, match=r"image_emb has 1 row\(s\)"):
        cls().fit(img[:1], txt)
    zero = img.copy()
    zero[7] = 0.0
    with pytest.raises(ValueError, match=r"image_emb has 1 row\(s\) of zero norm \(first: row 7\)"):
        cls().fit(zero, txt)
    closer = cls().fit(img, txt)
    with pytest.raises(ValueError, match="image_emb has NaN"):
        closer.transform_images(np.full((2, 32), np.inf))


@pytest.mark.parametrize("cls", ALL)
def test_rows_beyond_float32_range_are_normalised_exactly(cls):
    img, txt = gapped()
    closer = cls().fit(img, txt)
    expected = closer.transform_images(img[:3])
    np.testing.assert_allclose(closer.transform_images(img[:3] * 1e100), expected, atol=1e-6)
    np.testing.assert_allclose(closer.transform_images(img[:3] * 1e-100), expected, atol=1e-6)


def test_parameters_are_checked_at_fit():
    img, txt = gapped()
    with pytest.raises(TypeError, match="renormalize must be True or False"):
        MeanCentering(renormalize="yes").fit(img, txt)
    with pytest.raises(ValueError, match="eps must lie in"):
        Standardization(eps=0.0).fit(img, txt)
    with pytest.raises(TypeError, match="delta must be a number"):
        GapShift(delta="1").fit(img, txt)


def test_a_row_at_the_fitted_mean_cannot_be_renormalised():
    img, txt = gapped()
    same = np.repeat(img[:1], 3, axis=0)
    mc = MeanCentering().fit(same, txt)
    with pytest.raises(ValueError, match=r"image_emb has 1 row\(s\) of zero length.*fitted image mean"):
        mc.transform_images(same[:1])
    out = MeanCentering(renormalize=False).fit(same, txt).transform_images(same[:1])
    np.testing.assert_allclose(out, 0.0, atol=1e-7)


@pytest.mark.parametrize("cls", ALL)
def test_unfitted_transform_is_an_error(cls):
    img, txt = gapped()
    closer = cls()
    for call in (lambda: closer.transform(img, txt), lambda: closer.transform_images(img),
                 lambda: closer.transform_texts(txt), lambda: closer.transform(None, None)):
        with pytest.raises(NotFittedError):
            call()


@pytest.mark.parametrize("closer", [MeanCentering(renormalize=False), Standardization(eps=1e-6),
                                    GapShift(delta=0.3, direction=np.ones(32))])
def test_clone_gives_an_unfitted_copy_with_the_same_params(closer):
    img, txt = gapped()
    closer.fit(img, txt)
    copy = clone(closer)
    assert type(copy) is type(closer) and copy is not closer
    assert copy.get_params().keys() == closer.get_params().keys()
    for key, value in closer.get_params().items():
        np.testing.assert_array_equal(copy.get_params()[key], value)
    assert not hasattr(copy, "n_features_in_")
    with pytest.raises(NotFittedError):
        copy.transform_images(img)
    a = copy.fit(img, txt).transform_images(img)
    np.testing.assert_allclose(a, closer.transform_images(img), atol=1e-7)


@pytest.mark.parametrize("cls", ALL)
def test_torch_input_gives_numpy_output_equal_to_numpy_input(cls):
    img, txt = gapped()
    ti = torch.tensor(img, dtype=torch.float32, requires_grad=True)
    tt = torch.tensor(txt, dtype=torch.float64)
    closer = cls().fit(ti, tt)
    a, b = closer.transform(ti, tt)
    assert isinstance(a, np.ndarray) and a.dtype == np.float32
    ref_a, ref_b = cls().fit(img, txt).transform(img, txt)
    np.testing.assert_allclose(a, ref_a, atol=1e-6)
    np.testing.assert_allclose(b, ref_b, atol=1e-6)
    np.testing.assert_array_equal(ti.detach().numpy(), img.astype(np.float32))


@pytest.mark.parametrize("cls", ALL)
def test_none_comes_back_as_none(cls):
    img, txt = gapped()
    closer = cls().fit(img, txt)
    a, b = closer.transform(img, None)
    assert b is None and a.shape == img.shape
    a, b = closer.transform(None, txt)
    assert a is None and b.shape == txt.shape
    assert closer.transform(None, None) == (None, None)
    np.testing.assert_allclose(closer.transform(text_emb=txt)[1], closer.transform_texts(txt), atol=1e-7)


@pytest.mark.parametrize("cls", ALL)
def test_runs_on_a_large_float32_set(cls):
    rng = np.random.default_rng(0)
    n, d = 200_000, 128
    img = rng.standard_normal((n, d), dtype=np.float32)
    img[:, 0] += 2.0
    txt = rng.standard_normal((n, d), dtype=np.float32)
    txt[:, 0] -= 2.0
    a, b = cls().fit_transform(img, txt)
    assert a.shape == (n, d) and b.shape == (n, d) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a[::997], axis=1), 1.0, atol=1e-5)
    assert np.isfinite(b).all()
