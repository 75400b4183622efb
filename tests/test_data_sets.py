"""The named data sets: shapes, labels, captions, determinism, domains."""
import numpy as np
import pandas as pd
import pytest

from modgap import data
from modgap.data import glyphs, shapes
from modgap.data.render import DOMAINS


@pytest.mark.parametrize("name,task,n_classes", [
    ("shapes", "shape", len(shapes.SHAPES)),
    ("shapes", "color", len(data.COLORS)),
    ("glyphs", "digit", 10),
])
@pytest.mark.parametrize("domain", DOMAINS)
def test_generated_sets_have_images_labels_and_prompts(name, task, n_classes, domain):
    s = data.load(name, n=60, domain=domain, task=task)
    assert s.images.shape == (60, 32, 32, 3) and s.images.dtype == np.uint8
    assert s.labels.shape == (60,)
    assert s.labels.min() >= 0 and s.labels.max() < n_classes
    assert len(s.classnames) == n_classes and len(s.templates) >= 2
    assert all("{}" in t for t in s.templates)
    assert s.images.std() > 5  # something was drawn


def test_at_least_six_shapes_and_six_colours():
    assert len(shapes.SHAPES) >= 6 and len(data.COLORS) >= 6


@pytest.mark.parametrize("name", ["shapes", "glyphs", "shapes-pairs"])
def test_same_seed_same_pixels_other_seed_other_pixels(name):
    a = data.load(name, n=40, seed=3, domain="noisy")
    b = data.load(name, n=40, seed=3, domain="noisy")
    c = data.load(name, n=40, seed=4, domain="noisy")
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)


def test_train_and_test_splits_differ():
    a = data.load("shapes", split="train", n=50)
    b = data.load("shapes", split="test", n=50)
    assert not np.array_equal(a.images, b.images)


def test_domains_render_the_same_scenes_differently():
    photo = data.load("shapes", n=100, domain="photo")
    for domain in DOMAINS[1:]:
        other = data.load("shapes", n=100, domain=domain)
        np.testing.assert_array_equal(photo.labels, other.labels)
        assert np.abs(photo.images.astype(int) - other.images.astype(int)).mean() > 10


def test_night_is_darker_and_noisy_is_noisier():
    photo = data.load("shapes", n=200).images.astype(float)
    night = data.load("shapes", n=200, domain="night").images.astype(float)
    noisy = data.load("shapes", n=200, domain="noisy").images.astype(float)
    assert night.mean() < 0.6 * photo.mean()
    # pixel-to-pixel differences measure high-frequency noise
    assert np.abs(np.diff(noisy, axis=2)).mean() > 1.5 * np.abs(np.diff(photo, axis=2)).mean()


def test_pairs_have_several_captions_naming_the_label():
    p = data.load("shapes-pairs", n=30)
    assert isinstance(p, data.PairSet) and len(p) == 30
    assert all(len(c) == 5 and len(set(c)) == 5 for c in p.captions)
    for caps, label in zip(p.captions, p.labels):
        names = p.classnames[label]
        assert any(names in c for c in caps)
    g = data.load("glyphs-pairs", n=30)
    for caps, label in zip(g.captions, g.labels):
        assert any(glyphs.DIGIT_NAMES[label] in c or str(label) in c for c in caps)


def test_real_digits_match_glyph_classes():
    m = data.load("mnist")
    assert len(m) == 5000 and m.images.shape[1:] == (32, 32, 3)
    assert np.bincount(m.labels).tolist() == [500] * 10
    d = data.load("sklearn-digits")
    assert len(d) == 1797
    g = data.load("glyphs", n=5)
    assert m.classnames == g.classnames == d.classnames
    assert m.templates == g.templates
    sub = data.load("mnist", n=100, seed=1)
    assert len(sub) == 100


def test_available_lists_every_set():
    table = data.available()
    assert isinstance(table, pd.DataFrame)
    for name in ("shapes", "glyphs", "shapes-pairs", "glyphs-pairs", "mnist", "sklearn-digits"):
        assert name in set(table["name"])
    assert {"tasks", "domains", "size", "licence"} <= set(table.columns)


@pytest.mark.parametrize("kwargs,match", [
    ({"name": "shape"}, "did you mean"),
    ({"name": "shapes", "domain": "underwater"}, "domain"),
    ({"name": "shapes", "task": "digit"}, "task"),
    ({"name": "shapes", "split": "val"}, "split"),
    ({"name": "shapes", "n": 0}, "n must be"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.load(**kwargs)
