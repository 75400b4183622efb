"""The notebook dashboards build, draw their default figure, and redraw."""
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from modgap import metrics, widgets
from modgap.adapt.graph import label_propagation


def _clusters(n_per=30, n_cls=3, dim=16, seed=0, offset=1.5):
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:n_cls] * 3
    labels = np.repeat(np.arange(n_cls), n_per)
    img = centres[labels] + rng.normal(0, 0.4, size=(len(labels), dim)) + offset  # shared offset: a gap
    # real class prompts share a strong common direction, which ReCLIP's projection removes
    cls = centres + 4 * np.eye(dim)[dim - 1] + rng.normal(0, 0.05, size=centres.shape)
    return img.astype(np.float32), cls.astype(np.float32), labels


def test_gap_shift_explorer_draws_and_moves_with_the_slider():
    img, cls, labels = _clusters()
    dash = widgets.gap_shift_explorer(img, cls, labels, method="pca")
    ax_map = dash.figure.axes[0]
    gids = {a.get_gid() for a in ax_map.get_children()}
    assert {"image-points", "text-points", "gap-arrow"} <= gids  # drawn by modgap.viz.draw_map
    start = dict(dash.state)
    dash.controls["delta"].value = 0.8  # what a user's drag does
    assert dash.state["centroid_distance"] < start["centroid_distance"]
    assert set(dash.curve.columns) >= {"delta", "accuracy", "centroid_distance"}
    bundle = dash._repr_mimebundle_()
    assert bundle["image/png"][:4] == b"\x89PNG"
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_gap_shift_explorer_figures_are_those_of_shift_along_gap():
    img, cls, labels = _clusters()
    rng = np.random.default_rng(1)
    captions = img + rng.normal(0, 0.8, img.shape) - 2.5
    dash = widgets.gap_shift_explorer(img, cls, labels, text_emb=captions, method="pca")
    dash.update(0.3)
    row = metrics.shift_along_gap(img, cls, labels, deltas=[0.3], direction=metrics.gap_vector(img, captions))
    assert dash.state["accuracy"] == pytest.approx(row["accuracy"].iloc[0])
    assert dash.state["class_centroid_distance"] == pytest.approx(row["centroid_distance"].iloc[0])
    # the title names both gaps, the one to the captions drawn and the one the curve plots
    title = dash.figure.axes[0].get_title()
    assert f"{dash.state['centroid_distance']:.3f} to the captions" in title
    assert f"{dash.state['class_centroid_distance']:.3f} to the class prompts" in title
    at_zero = dash.curve.loc[dash.curve["delta"].abs().idxmin()]
    dash.update(0.0)
    assert dash.state["class_centroid_distance"] == pytest.approx(at_zero["centroid_distance"])
    assert dash.state["centroid_distance"] == pytest.approx(metrics.centroid_distance(img, captions))


@pytest.mark.parametrize("offset", [1.5, 0.3])
def test_label_propagation_explorer_reports_accuracy_and_confusion(offset):
    img, cls, labels = _clusters(offset=offset)
    dash = widgets.label_propagation_explorer(img, cls, labels, k=10, classnames=["a", "b", "c"])
    assert dash.state["accuracy"] > 0.9  # well separated clusters propagate cleanly, with or without a gap
    for k in (10, 8):
        dash.controls["k"].value = k
        expected = label_propagation(torch.from_numpy(img), torch.from_numpy(cls), k=k).numpy()
        np.testing.assert_array_equal(dash.state["pseudo_labels"], expected)
        conf = dash.state["confusion"]
        assert conf.shape == (3, 3) and conf.sum() == len(labels)
        np.testing.assert_array_equal(conf.sum(axis=1), np.bincount(labels, minlength=3))
        assert dash.state["accuracy"] == pytest.approx(np.trace(conf) / len(labels))
        assert dash.state["accuracy"] == pytest.approx(np.mean(expected == labels))
        assert f"k={k}," in dash.figure.axes[0].get_title()
    assert len(dash.figure.axes[1].images) == 1


def test_hybrid_target_explorer_rows_are_distributions():
    logits = torch.randn(6, 6, generator=torch.Generator().manual_seed(0)) * 3
    dash = widgets.hybrid_target_explorer(logits, alpha=0.5)
    target = dash.state["target"]
    np.testing.assert_allclose(target.sum(1), 1.0, rtol=1e-5)
    assert np.all(np.diag(target) >= 0.5 - 1e-6)
    dash.controls["alpha"].value = 1.0
    np.testing.assert_allclose(dash.state["target"], np.eye(6), atol=1e-6)
    with pytest.raises(ValueError, match="square"):
        widgets.hybrid_target_explorer(np.zeros((2, 3)))


def test_live_history_plots_each_column_it_gets():
    live = widgets.LiveHistory(["acc", "agreement"], x="epoch", display=False)
    for e in range(4):
        live(None, {"epoch": e, "acc": 0.5 + 0.1 * e, "agreement": 0.7, "other": 1.0})
    lines = live.ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["acc", "agreement"]
    np.testing.assert_allclose(lines[0].get_ydata(), [0.5, 0.6, 0.7, 0.8])


def test_model_picker_offers_the_bundled_model():
    picker = widgets.model_picker()
    assert picker.value == "modgap-tiny" and "modgap-tiny" in picker.options


@pytest.mark.parametrize("closer", ["mean-centering", "standardization", "gap-shift"])
def test_closer_explorer_shows_the_figures_of_the_closer_it_applies(closer):
    from modgap.adapt import CLOSERS

    img, cls, labels = _clusters()
    txt = cls[labels] + np.random.default_rng(1).normal(0, 0.3, size=img.shape).astype(np.float32)
    dash = widgets.closer_explorer(img, txt, cls, labels, closer="none")
    before = dict(dash.state)
    assert before["centroid_distance"] == pytest.approx(metrics.centroid_distance(img, txt))
    dash.controls["closer"].value = closer  # what a click on the toggle does
    est = CLOSERS[closer](delta=dash.controls["delta"].value) if closer == "gap-shift" else CLOSERS[closer]()
    moved_img, moved_txt = est.fit(img, txt).transform(img, txt)
    assert dash.state["centroid_distance"] == pytest.approx(metrics.centroid_distance(moved_img, moved_txt))
    assert dash.state["relative_modality_gap"] == pytest.approx(
        metrics.relative_modality_gap(moved_img, moved_txt))
    assert dash.state["zero_shot_accuracy"] == pytest.approx(
        metrics.zero_shot_accuracy(moved_img, est.transform_texts(cls), labels))
    assert dash.state["centroid_distance"] < 0.5 * before["centroid_distance"]
    gids = {a.get_gid() for a in dash.figure.axes[0].get_children()}
    assert {"image-points", "text-points"} <= gids


def test_closer_explorer_keeps_one_frame_and_refuses_unknown_closers():
    img, cls, labels = _clusters()
    dash = widgets.closer_explorer(img, cls[labels], closer="none")
    limits = dash.figure.axes[0].get_xlim(), dash.figure.axes[0].get_ylim()
    dash.update(closer="standardization")
    assert (dash.figure.axes[0].get_xlim(), dash.figure.axes[0].get_ylim()) == limits
    assert "zero_shot_accuracy" not in dash.state  # no class embeddings given
    with pytest.raises(ValueError, match="closer must be one of"):
        widgets.closer_explorer(img, cls[labels], closer="whitening")
