"""modgap.viz.explore and explore_shift (modgap/viz/interactive.py): the interactive map's Python side. What it hands
jupyter-scatter (coordinates, colours, tooltips) matches the data, a
selection maps back to the right rows, hovering fills the side panel, and
every animation frame lies in one frame of reference."""
import numpy as np
import pytest

from modgap import viz
from modgap.viz import interactive as explore_module


def _emb(n, d=16, seed=0, shift=0.0):
    x = np.random.default_rng(seed).normal(size=(n, d))
    x[:, 0] += shift
    return x


@pytest.fixture
def world():
    n = 30
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, 12, 12, 3), dtype=np.uint8)
    labels = np.arange(n) % 3
    texts = [f"caption {i}" for i in range(n)]
    return _emb(n, seed=0, shift=3.0), _emb(n, seed=1, shift=-3.0), images, labels, texts


def test_points_carry_the_coordinates_classes_and_captions_given(world):
    img, txt, images, labels, texts = world
    xy = np.random.default_rng(2).normal(size=(60, 2)).astype(np.float32)
    ex = viz.explore(img, txt, images=images, texts=texts, labels=labels, class_names=["a", "b", "c"], xy=xy,
                     domains=["night"] * 30)
    p = ex.points
    assert np.array_equal(p[["x", "y"]].to_numpy(), xy)
    assert list(p["modality"][:30]) == ["image"] * 30 and list(p["modality"][30:]) == ["text"] * 30
    assert list(p["row"]) == list(range(30)) * 2
    assert list(p["class"][:3]) == ["a", "b", "c"] and list(p["class"][30:33]) == ["a", "b", "c"]
    assert list(p["caption"][30:32]) == ["caption 0", "caption 1"] and set(p["caption"][:30]) == {""}
    assert set(p["domain"][:30]) == {"night"}
    # what jupyter-scatter is given: this table, its x/y columns, colour by modality, the caption as preview
    color = ex.scatter.color()
    assert color["by"] == "modality"
    assert [tuple(np.round(c[:3], 3)) for c in color["map"]] == [(0.122, 0.467, 0.706), (1.0, 0.498, 0.055)]
    assert ex.scatter.tooltip()["preview"] == "caption"
    ex.color("class")
    assert ex.scatter.color()["by"] == "class" and len(ex.scatter.color()["map"]) >= 3
    # the browser is sent these coordinates, in point order
    w = ex.scatter.widget
    for axis, (lo, hi) in enumerate((w.x_scale_domain, w.y_scale_domain)):
        assert np.allclose((w.points[:, axis] + 1) / 2 * (hi - lo) + lo, xy[:, axis], atol=1e-5)
    # the colour channel of each point: its class's index, now that the map is coloured by class
    assert list(w.points[:, 2]) == [i % 3 for i in range(30)] * 2
    # the gap line joins the two centroids on the map
    (line,) = ex.scatter.annotations()["annotations"]
    assert np.allclose(line.vertices, [xy[:30].mean(0), xy[30:].mean(0)], atol=1e-5)


def test_selection_maps_back_to_rows_of_each_modality(world):
    img, txt, images, labels, texts = world
    ex = viz.explore(img, txt, images=images, texts=texts, labels=labels, method="pca")
    seen = []
    ex.observe(lambda ch: seen.append(ch["new"]))
    # a lasso in the browser sets the widget's selection
    ex.scatter.widget.selection = np.array([31, 2, 7, 45], dtype=np.uint32)
    assert ex.selection == [2, 7, 31, 45] and seen == [[2, 7, 31, 45]]
    assert list(ex.selected_rows("image")) == [2, 7]
    assert list(ex.selected_rows("text")) == [1, 15]
    assert ex.selection_label.value == "selected: 4 points (2 images, 2 texts)"
    # and Python can set it back
    ex.selection = [0]
    assert list(ex.scatter.selection()) == [0]
    with pytest.raises(ValueError, match="selection"):
        ex.selection = [60]
    with pytest.raises(ValueError, match="modality"):
        ex.selected_rows("audio")


def test_hovering_shows_the_thumbnail_and_the_nearest_texts(world):
    img, _, images, _, texts = world
    txt = img.copy()  # text i is image i: its nearest text is its own caption
    ex = viz.explore(img, txt, images=images, texts=texts, method="pca")
    ex.scatter.widget.hovering = 4
    assert ex.preview.value == explore_module.thumbnail_png(images[4])
    assert ex.neighbours.value.split("<br>")[1].endswith("caption 4")
    ex.scatter.widget.hovering = 30 + 9
    assert "caption 9" in ex.caption.value
    assert "nearest images: 9 " in ex.neighbours.value
    assert ex.preview.value == explore_module.thumbnail_png(images[9])


def test_thumbnails_are_small_pngs_of_the_image():
    from io import BytesIO

    from PIL import Image

    big = np.zeros((300, 150, 3), dtype=np.uint8)
    big[:, :, 0] = 255
    im = Image.open(BytesIO(explore_module.thumbnail_png(big)))
    assert im.size == (48, 96) and im.getpixel((10, 10)) == (255, 0, 0)


def test_shift_frames_share_one_reducer_fitted_once(world, monkeypatch):
    img, txt, *_ = world
    states = [(img, txt), (img + 0.5, txt - 0.5), (img + 1.0, txt - 1.0)]
    calls = []
    real = explore_module.fit_2d

    def counted(x, *a, **kw):
        calls.append(len(x))
        return real(x, *a, **kw)

    monkeypatch.setattr(explore_module, "fit_2d", counted)
    ex = viz.explore_shift(states=states, names=["a", "b", "c"], method="pca")
    assert calls == [3 * 60]  # one fit, on every state stacked
    unit = [b / np.linalg.norm(b, axis=1, keepdims=True) for s in states for b in s]
    stacked = real(np.vstack(unit).astype(np.float32), "pca", 0)
    for i in range(3):
        assert np.allclose(ex.frames[i], stacked[i * 60:(i + 1) * 60], atol=1e-4)
    ex.show_frame(2)
    assert np.allclose(ex.points[["x", "y"]].to_numpy(), ex.frames[2])
    assert ex.frame_label.value == "c" and ex.frame_slider.value == 2
    assert ex.play.max == 2


@pytest.mark.parametrize(("call", "match"), [
    (lambda a, b: viz.explore_shift(a), "before and after"),
    (lambda a, b: viz.explore_shift(a, b[:5]), "differs in shape"),
    (lambda a, b: viz.explore_shift(states=[a]), "at least two"),
    (lambda a, b: viz.explore_shift(a, b, names=["x"]), "names"),
    (lambda a, b: viz.explore(a, color_by="size"), "color_by"),
    (lambda a, b: viz.explore(a, method="mds"), "method"),
    (lambda a, b: viz.explore(a, xy=np.zeros((3, 2))), "xy"),
    (lambda a, b: viz.explore(a, images=np.zeros((2, 4, 4, 3), np.uint8)), "images"),
    (lambda a, b: viz.explore(a, b, texts=["one"]), "texts"),
    (lambda a, b: viz.explore(a, labels=[0, 1]), "labels"),
    (lambda a, b: viz.explore(a, color_by="domain", method="pca"), "no domain"),
])
def test_bad_input_is_named(world, call, match):
    img, txt, *_ = world
    with pytest.raises(ValueError, match=match):
        call(img, txt)


def test_a_trail_records_the_model_as_it_trains(world):
    import modgap
    from modgap import data
    from modgap.adapt import CLIPRefine

    clip = modgap.load_model("modgap-tiny", device="cpu")
    pairs = data.load("shapes-pairs", split="train", n=96)
    probe = data.load("shapes-pairs", split="test", n=12)
    trail = viz.EmbeddingTrail(probe, probe.first_captions(), every=2, start=clip)
    est = CLIPRefine(clip, epochs=1, batch_size=16, holdout=16, log_every=1, lr=1e-4, progress=False,
                     callback=trail).fit(pairs)
    assert trail.names[0] == "start" and trail.names[1] == "step 0"
    assert len(trail.states) == 1 + (len(est.history_) + 1) // 2
    first, last = trail.states[0], trail.states[-1]
    assert first[0].shape == (12, 128) and first[1].shape == (12, 128)
    after = est.to_clip().encode_images(probe).numpy()
    if est.history_["step"].iloc[-1] == int(trail.names[-1].split()[1]):
        assert np.allclose(last[0], after, atol=1e-5)  # the last record is the trained model
    assert not np.allclose(first[0], last[0], atol=1e-4)  # training moved the embeddings
    ex = viz.explore_shift(states=trail.states, names=trail.names, images=probe, method="pca")
    assert len(ex.frames) == len(trail.states)
