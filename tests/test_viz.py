"""modgap.viz: every plot renders to a PNG with Agg and draws what it should."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.collections import PathCollection
from matplotlib.image import AxesImage
from matplotlib.quiver import Quiver

from modgap import metrics as M
from modgap import viz as V
from modgap.viz import figures as V_figures


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def world():
    """Three classes, images shifted one way along e5 and texts the other."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 12)
    centers = 3 * np.eye(16)[:3]
    img = centers[labels] + 0.5 * rng.normal(size=(36, 16)) + 2 * np.eye(16)[5]
    txt = centers[labels] + 0.5 * rng.normal(size=(36, 16)) - 2 * np.eye(16)[5]
    return img, txt, labels


def by_gid(ax, gid):
    return [a for a in ax.get_children() if a.get_gid() == gid]


def saved(fig, tmp_path, name):
    path = tmp_path / f"{name}.png"
    fig.savefig(path)
    pixels = plt.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    # something besides the white background was drawn
    assert (pixels[..., :3] < 0.9).any()
    return path


def offsets(ax, gid):
    (coll,) = by_gid(ax, gid)
    assert isinstance(coll, PathCollection)
    return coll.get_offsets()


# -- fit_2d ----------------------------------------------------------------------------------------
def test_fit_2d_pca_is_deterministic_and_ordered(world):
    img, txt, _ = world
    x = np.vstack([img, txt])
    y = V.fit_2d(x, "pca")
    assert y.shape == (72, 2)
    np.testing.assert_array_equal(y, V.fit_2d(torch.tensor(x), "pca"))
    assert y[:, 0].var() >= y[:, 1].var()
    y2, reducer = V.fit_2d(x, "pca", return_reducer=True)
    np.testing.assert_allclose(reducer.transform(x), y2)


def test_fit_2d_tsne_gives_a_finite_map(world):
    img, _, _ = world
    y = V.fit_2d(img, "t-SNE", random_state=1, max_iter=250)
    assert y.shape == (36, 2) and np.isfinite(y).all()


def test_fit_2d_umap_is_seeded_and_imports_umap_once(world):
    img, txt, _ = world
    x = np.vstack([img, txt])
    a = V.fit_2d(x, "umap", random_state=3, n_epochs=30)
    b = V.fit_2d(x, "umap", random_state=3, n_epochs=30)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (72, 2) and np.isfinite(a).all()
    info = V_figures._umap_class.cache_info()
    assert info.misses == 1 and info.hits >= 1


def recording_umap(made):
    """A stand-in for umap.UMAP that appends each instance to ``made`` with its parameters and input."""

    class RecordingUMAP:
        def __init__(self, **params):
            self.params = params
            made.append(self)

        def fit_transform(self, x):
            self.x = x
            return np.zeros((len(x), 2))

    return RecordingUMAP


def test_fit_2d_umap_gets_exact_neighbours_unless_the_reducer_must_transform(world, monkeypatch):
    made = []
    monkeypatch.setattr(V_figures, "_umap_class", lambda: recording_umap(made))
    img = world[0]
    assert V.fit_2d(img, "umap", random_state=5).shape == (36, 2)
    (plain,) = made
    knn_idx, knn_dist = plain.params["precomputed_knn"]
    ref_idx, ref_dist = V_figures._exact_knn(img.astype(np.float32), 15)
    np.testing.assert_array_equal(knn_idx, ref_idx)
    np.testing.assert_array_equal(knn_dist, ref_dist)
    assert plain.x.dtype == np.float32 and plain.params["random_state"] == 5
    _, reducer = V.fit_2d(img, "umap", random_state=5, return_reducer=True)
    assert reducer is made[1] and "precomputed_knn" not in reducer.params
    V.fit_2d(img, "umap", metric="cosine")
    assert "precomputed_knn" not in made[2].params


@pytest.mark.parametrize("kw, match", [
    ({"method": "umap", "n_neighbors": 36}, "n_neighbors must be an integer from 2 to N - 1 = 35"),
    ({"method": "mds"}, "method must be one of"),
    ({"method": "pca", "random_state": "zero"}, "random_state"),
])
def test_fit_2d_rejects_bad_arguments(world, kw, match):
    with pytest.raises(ValueError, match=match):
        V.fit_2d(world[0], **kw)


def test_fit_2d_rejects_too_few_points():
    with pytest.raises(ValueError, match="UMAP needs at least 5"):
        V.fit_2d(np.eye(4), "umap")
    with pytest.raises(ValueError, match="X has NaN"):
        V.fit_2d(np.full((6, 3), np.nan), "pca")


# -- plot_embeddings ------------------------------------------------------------------------------
def test_plot_embeddings_pca_draws_both_modalities_and_the_gap(world, tmp_path):
    img, txt, labels = world
    ax = V.plot_embeddings(img, txt, labels, method="pca", class_names=["circle", "square", "star"])
    saved(ax.figure, tmp_path, "embeddings")
    pi, pt = offsets(ax, "image-points"), offsets(ax, "text-points")
    assert len(pi) == 36 and len(pt) == 36
    (ci,), (ct,) = by_gid(ax, "image-points"), by_gid(ax, "text-points")
    assert not np.array_equal(ci.get_paths()[0].vertices, ct.get_paths()[0].vertices)  # different markers
    assert len({tuple(c) for c in ci.get_facecolors()}) == 3  # one colour per class
    np.testing.assert_allclose(offsets(ax, "image-centroid")[0], pi.mean(axis=0))
    np.testing.assert_allclose(offsets(ax, "text-centroid")[0], pt.mean(axis=0))
    assert len(by_gid(ax, "gap-arrow")) == 1
    gap = M.centroid_distance(img, txt)
    assert f"{gap:.3f}" in ax.get_title()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"image", "text", "circle", "square", "star"} <= set(legend)
    assert ax.get_xlabel() == "PC 1" and ax.get_ylabel() == "PC 2"


def test_plot_embeddings_umap_small_case(world, tmp_path):
    img, txt, labels = world
    ax = V.plot_embeddings(torch.tensor(img), torch.tensor(txt), labels, method="umap",
                           reducer_kwargs={"n_epochs": 30})
    saved(ax.figure, tmp_path, "embeddings_umap")
    assert len(offsets(ax, "image-points")) == 36 and len(offsets(ax, "text-points")) == 36
    assert len(by_gid(ax, "gap-arrow")) == 1
    assert ax.get_xlabel() == "UMAP 1"


def test_plot_embeddings_with_class_embeddings_on_a_given_ax(world, tmp_path):
    img, _, labels = world
    cls = 3 * np.eye(16)[:3] - 2 * np.eye(16)[5]
    fig, given = plt.subplots()
    ax = V.plot_embeddings(img, cls, labels, method="pca", text_labels=np.arange(3), ax=given, title="mine")
    saved(fig, tmp_path, "class_embeddings")
    assert ax is given and ax.get_title() == "mine"
    assert len(offsets(ax, "text-points")) == 3
    (ct,) = by_gid(ax, "text-points")
    assert len({tuple(c) for c in ct.get_facecolors()}) == 3


def test_plot_embeddings_without_labels_uses_one_colour_per_modality(world, tmp_path):
    img, txt, _ = world
    ax = V.plot_embeddings(img, txt, method="pca")
    saved(ax.figure, tmp_path, "plain")
    (ci,), (ct,) = by_gid(ax, "image-points"), by_gid(ax, "text-points")
    assert len({tuple(c) for c in ci.get_facecolors()}) == 1
    assert tuple(ci.get_facecolors()[0]) != tuple(ct.get_facecolors()[0])


def test_plot_embeddings_checks_its_input(world):
    img, txt, labels = world
    with pytest.raises(ValueError, match="labels must have one entry per point"):
        V.plot_embeddings(img, txt, labels[:5], method="pca")
    with pytest.raises(ValueError, match="image_emb has dimension 16 but text_emb has dimension 4"):
        V.plot_embeddings(img, txt[:, :4], method="pca")


# -- draw_map --------------------------------------------------------------------------------------
def test_draw_map_draws_given_positions_like_plot_embeddings(world, tmp_path):
    img, txt, labels = world
    y = V.fit_2d(np.vstack([img, txt]), "pca")
    fig, given = plt.subplots()
    ax = V.draw_map(y[:36], y[36:], labels, class_names=["circle", "square", "star"], method="pca", gap=0.5,
                    ax=given)
    saved(fig, tmp_path, "draw_map")
    assert ax is given
    np.testing.assert_allclose(offsets(ax, "image-points"), y[:36])
    np.testing.assert_allclose(offsets(ax, "text-points"), y[36:])
    np.testing.assert_allclose(offsets(ax, "text-centroid")[0], y[36:].mean(axis=0))
    assert len(by_gid(ax, "gap-arrow")) == 1
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "gap, text to image (distance 0.500)" in legend and {"circle", "square", "star"} <= set(legend)
    (ct,) = by_gid(ax, "text-points")
    assert len({tuple(c) for c in ct.get_facecolors()}) == 3  # texts take the images' labels
    assert ax.get_xlabel() == "PC 1"
    # the legend sits under the axes, outside the data
    fig.canvas.draw()
    assert ax.get_legend().get_window_extent().y1 < ax.get_window_extent().y0


def test_maps_name_the_texts_they_draw(world):
    img, txt, labels = world
    ax = V.plot_embeddings(img, txt, labels, method="pca", text_name="caption")
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    gap = M.centroid_distance(img, txt)
    assert {"image", "caption", "caption centroid", f"gap, caption to image (distance {gap:.3f})"} <= set(legend)
    assert f"gap to the captions {gap:.3f}" in ax.get_title()
    fig = V.plot_embedding_shift((img, txt), (img, txt), labels, method="pca", text_name="class prompt")
    assert all("gap to the class prompts" in ax.get_title() for ax in fig.axes[:2])
    assert "class prompt centroid" in [t.get_text() for t in fig.legends[0].get_texts()]
    with pytest.raises(ValueError, match="text_name must be a non-empty string"):
        V.draw_map(np.zeros((4, 2)), np.zeros((4, 2)), text_name="")


def test_draw_map_of_images_only_and_bad_positions(world):
    ax = V.draw_map(np.zeros((4, 2)), method=None, legend=False)
    assert len(offsets(ax, "image-points")) == 4 and not by_gid(ax, "gap-arrow")
    assert ax.get_xlabel() == "" and ax.get_legend() is None
    with pytest.raises(ValueError, match="text_xy must be a non-empty array of 2-D positions"):
        V.draw_map(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="method must be one of"):
        V.draw_map(np.zeros((4, 2)), method="mds")


# -- plot_embedding_shift -------------------------------------------------------------------------
def test_plot_embedding_shift_uses_one_shared_space(world, tmp_path):
    img, txt, labels = world
    moved = 0.2 * txt + 0.8 * img
    fig = V.plot_embedding_shift((img, txt), (img, moved), labels, method="pca", n_arrows=20, random_state=1)
    saved(fig, tmp_path, "shift")
    left, right = fig.axes[:2]
    for ax in (left, right):
        assert len(offsets(ax, "image-points")) == 36 and len(offsets(ax, "text-points")) == 36
        assert len(by_gid(ax, "gap-arrow")) == 1
    assert left.get_xlim() == right.get_xlim() and left.get_ylim() == right.get_ylim()
    # the unchanged images sit at the same place in both panels: one reducer for both states
    np.testing.assert_allclose(offsets(left, "image-points"), offsets(right, "image-points"))
    assert not np.allclose(offsets(left, "text-points"), offsets(right, "text-points"))
    (arrows,) = by_gid(right, "shift-arrows")
    assert isinstance(arrows, Quiver) and arrows.N == 20
    before = np.vstack([offsets(left, "image-points"), offsets(left, "text-points")])
    after = np.vstack([offsets(right, "image-points"), offsets(right, "text-points")])
    for x, y, u, v in zip(arrows.X, arrows.Y, arrows.U, arrows.V):
        (i,) = np.flatnonzero(np.all(np.isclose(before, [x, y]), axis=1))
        np.testing.assert_allclose([x + u, y + v], after[i])
    assert f"{M.centroid_distance(img, moved):.3f}" in right.get_title()
    assert not by_gid(left, "shift-arrows")
    # one legend for both panels, under them, outside the data
    (legend,) = fig.legends
    assert left.get_legend() is None and right.get_legend() is None
    fig.canvas.draw()
    assert legend.get_window_extent().y1 < min(left.get_window_extent().y0, right.get_window_extent().y0)


def test_plot_embedding_shift_of_single_arrays_draws_every_arrow(world, tmp_path):
    img, _, labels = world
    fig = V.plot_embedding_shift(img, img[::-1].copy(), labels, method="pca", n_arrows=None)
    saved(fig, tmp_path, "shift_single")
    (arrows,) = by_gid(fig.axes[1], "shift-arrows")
    assert arrows.N == 36
    assert not by_gid(fig.axes[0], "gap-arrow") and not by_gid(fig.axes[0], "text-points")


def test_plot_embedding_shift_checks_its_input(world):
    img, txt, _ = world
    with pytest.raises(ValueError, match="differ in shape"):
        V.plot_embedding_shift((img, txt), (img, txt[:10]), method="pca")
    with pytest.raises(ValueError, match="both be"):
        V.plot_embedding_shift((img, txt), img, method="pca")
    with pytest.raises(ValueError, match="n_arrows"):
        V.plot_embedding_shift((img, txt), (img, txt), method="pca", n_arrows=-1)


# -- the other plots --------------------------------------------------------------------------------
def test_plot_gap_shift(world, tmp_path):
    img, _, labels = world
    cls = 3 * np.eye(16)[:3] - 2 * np.eye(16)[5]
    df = M.shift_along_gap(img, cls, labels, np.linspace(-2, 3, 11))
    ax = V.plot_gap_shift(df)
    saved(ax.figure, tmp_path, "gap_shift")
    (acc,) = by_gid(ax, "accuracy-line")
    np.testing.assert_allclose(acc.get_xdata(), df["delta"])
    np.testing.assert_allclose(acc.get_ydata(), df["accuracy"])
    twin = [a for a in ax.figure.axes if a is not ax]
    assert len(twin) == 1
    (dist,) = by_gid(twin[0], "distance-line")
    np.testing.assert_allclose(dist.get_ydata(), df["centroid_distance"])
    assert any(line.get_xdata()[0] == 0.0 for line in ax.get_lines() if line.get_gid() is None)
    with pytest.raises(ValueError, match="lacks the column"):
        V.plot_gap_shift(df.drop(columns="accuracy"))


def test_plot_gap_shift_of_several_models_draws_one_curve_each(world, tmp_path):
    img, _, labels = world
    cls = 3 * np.eye(16)[:3] - 2 * np.eye(16)[5]
    deltas = np.linspace(-2, 3, 11)
    shifts = {"before": M.shift_along_gap(img, cls, labels, deltas),
              "after": M.shift_along_gap(img, cls + 2 * np.eye(16)[5], labels, deltas[::-1])}
    fig, given = plt.subplots()
    ax = V.plot_gap_shift(shifts, ax=given, title="two models")
    saved(fig, tmp_path, "gap_shift_models")
    assert ax is given and ax.get_title() == "two models"
    (twin,) = [a for a in fig.axes if a is not ax]
    colors = set()
    for name, df in shifts.items():
        df = df.sort_values("delta")
        (acc,) = by_gid(ax, f"accuracy-line-{name}")
        np.testing.assert_allclose(acc.get_xdata(), df["delta"])
        np.testing.assert_allclose(acc.get_ydata(), df["accuracy"])
        (dist,) = by_gid(twin, f"distance-line-{name}")
        np.testing.assert_allclose(dist.get_ydata(), df["centroid_distance"])
        assert acc.get_color() == dist.get_color()
        colors.add(acc.get_color())
    assert len(colors) == 2
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "before: zero-shot accuracy" in legend and "after: gap to the class prompts" in legend
    # the legend sits below the axes, outside the data
    assert ax.get_legend().get_bbox_to_anchor().y1 < ax.get_window_extent().y0 + 1
    # one point of accuracy is said in images, and a flat curve is not stretched into a cliff
    assert f"1 point = {len(img) / 100:g} of {len(img)} images" in ax.get_ylabel()
    low, high = ax.get_ylim()
    assert high - low >= V.MIN_ACCURACY_SPAN
    with pytest.raises(ValueError, match=r"shift\['after'\] lacks the column"):
        V.plot_gap_shift({**shifts, "after": shifts["after"].drop(columns="accuracy")})
    with pytest.raises(ValueError, match="empty mapping"):
        V.plot_gap_shift({})
    with pytest.raises(TypeError, match="mapping"):
        V.plot_gap_shift([shifts["before"]])


def test_plot_similarity_cross_and_joint(world, tmp_path):
    img, txt, labels = world
    ax = V.plot_similarity(img, txt)
    saved(ax.figure, tmp_path, "similarity")
    (im,) = [a for a in ax.get_children() if isinstance(a, AxesImage)]
    ni = img / np.linalg.norm(img, axis=1, keepdims=True)
    nt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    np.testing.assert_allclose(im.get_array(), ni @ nt.T)

    shuffled = np.random.default_rng(0).permutation(36)
    ax = V.plot_similarity(img[shuffled], txt[:20], labels[shuffled], joint=True, max_items=10)
    saved(ax.figure, tmp_path, "similarity_joint")
    (im,) = [a for a in ax.get_children() if isinstance(a, AxesImage)]
    assert im.get_array().shape == (20, 20)
    np.testing.assert_allclose(np.diag(im.get_array()), 1.0)


def test_plot_spectrum(world, tmp_path):
    img, txt, _ = world
    ax = V.plot_spectrum({"image": img, "text": txt}, top=10)
    saved(ax.figure, tmp_path, "spectrum")
    (line,) = by_gid(ax, "spectrum-image")
    ev = M.spectrum(img)
    np.testing.assert_allclose(line.get_ydata(), (ev / ev.sum())[:10])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[1] == f"text (effective rank {M.effective_rank(txt):.1f})"
    assert ax.get_yscale() == "log"

    ax = V.plot_spectrum(img, txt, relative=False, log=False)
    saved(ax.figure, tmp_path, "spectrum_pair")
    (line,) = by_gid(ax, "spectrum-text")
    np.testing.assert_allclose(line.get_ydata(), M.spectrum(txt))
    with pytest.raises(ValueError, match="not both"):
        V.plot_spectrum({"image": img}, txt)


def test_plot_gap_anatomy(world, tmp_path):
    img, txt, _ = world
    anatomy = M.gap_anatomy(img, txt)
    ax = V.plot_gap_anatomy(anatomy, top=6)
    saved(ax.figure, tmp_path, "gap_anatomy")
    bars = by_gid(ax, "share-bars")
    assert len(bars) == 6
    np.testing.assert_allclose([b.get_height() for b in bars], anatomy["share"].to_numpy()[:6])
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == [str(d) for d in anatomy["dim"].to_numpy()[:6]]
    assert ticks[0] == "5"  # the world's gap lies along e5
    twin = [a for a in ax.figure.axes if a is not ax]
    assert len(twin) == 1
    (line,) = by_gid(twin[0], "cumulative-line")
    np.testing.assert_allclose(line.get_ydata(), anatomy["cumulative"].to_numpy()[:6])
    for level in (50, 90):
        (mark,) = by_gid(twin[0], f"mark-{level}")
        np.testing.assert_allclose(mark.get_ydata(), level / 100)
    legend = [t.get_text() for t in twin[0].get_legend().get_texts()]
    k50, k90 = M.dims_for_share(anatomy, 0.5), M.dims_for_share(anatomy, 0.9)
    assert legend[2] == f"50% of the gap ({k50} dimension{'s' if k50 > 1 else ''})"
    assert legend[3] == f"90% of the gap ({k90} dimension{'s' if k90 > 1 else ''})"

    given = plt.figure().add_subplot()
    ax = V.plot_gap_anatomy((img, txt), ax=given, title="pair", top=100)
    assert ax is given and ax.get_title() == "pair"
    assert len(by_gid(ax, "share-bars")) == 16
    shuffled = V.plot_gap_anatomy(anatomy.sample(frac=1.0, random_state=0), top=6)
    assert [t.get_text() for t in shuffled.get_xticklabels()] == [str(d) for d in anatomy["dim"].to_numpy()[:6]]


def test_plot_gap_anatomy_bad_input(world):
    img, txt, _ = world
    with pytest.raises(ValueError, match="top must be a positive integer"):
        V.plot_gap_anatomy(M.gap_anatomy(img, txt), top=0)
    with pytest.raises(TypeError, match="anatomy must be the DataFrame"):
        V.plot_gap_anatomy(img)
    with pytest.raises(ValueError, match="anatomy lacks the column"):
        V.plot_gap_anatomy(pd.DataFrame({"dim": [0, 1]}))
    with pytest.raises(ValueError, match="same centroid"):
        V.plot_gap_anatomy((img, img))


def test_plot_report_comparison(world, tmp_path):
    img, txt, _ = world
    reports = [M.gap_report(img, txt, name="clip"), M.gap_report(img, 0.3 * txt + img, name="refined")]
    fig = V.plot_report_comparison(reports, ["centroid_distance", "relative_gap", "i2t_R@1"], ncols=2)
    saved(fig, tmp_path, "reports")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["centroid_distance", "relative_gap", "i2t_R@1"]
    heights = [p.get_height() for p in visible[0].patches]
    np.testing.assert_allclose(heights, [r["centroid_distance"] for r in reports])
    assert len(fig.axes) == 4 and not fig.axes[3].get_visible()

    fig = V.plot_report_comparison(pd.DataFrame(reports))
    saved(fig, tmp_path, "reports_default")
    # the 13 default panels, then gap_report's other figures: relative_modality_gap, instance_gap,
    # gap_centroid_share, gap_dims_50 and gap_dims_90
    assert sum(ax.get_visible() for ax in fig.axes) == 18
    with pytest.raises(ValueError, match="reports lacks"):
        V.plot_report_comparison(reports, ["nope"])


def test_plot_report_comparison_defaults_show_other_numeric_columns(tmp_path):
    table = pd.DataFrame({"centroid_distance": [0.8, 0.4], "zero_shot_photo": [0.9, 0.95],
                          "photo_digit": [0.8, 0.85], "note": ["a", "b"], "n_images": [10.0, 10.0]},
                         index=pd.Index(["none", "refined"], name="method"))
    fig = V.plot_report_comparison(table)
    saved(fig, tmp_path, "reports_other_columns")
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["centroid_distance", "zero_shot_photo", "photo_digit"]
    with pytest.raises(ValueError, match="no numeric entries"):
        V.plot_report_comparison(table[["note"]])


def test_plot_images_draws_a_titled_grid(tmp_path):
    from modgap import data

    s = data.load("shapes", n=20)
    ax = V.plot_images(s, n=10, ncols=5)
    assert len(ax.images) == 1
    grid = ax.images[0].get_array()
    assert grid.shape[0] > 2 * 32 and grid.shape[1] > 5 * 32
    assert len(ax.texts) == 10 and {t.get_text() for t in ax.texts} <= set(s.classnames)
    ax.figure.savefig(tmp_path / "grid.png")
    with pytest.raises(ValueError, match="images"):
        V.plot_images(np.zeros((3, 4)))
