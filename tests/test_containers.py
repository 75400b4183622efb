"""ImageSet and PairSet: validation with clear errors, subsets and splits,
and the caption views."""
from pathlib import Path

import numpy as np
import pytest

from modgap.data import DEFAULT_TEMPLATES, ImageSet, PairSet


def pixels(n, size=8):
    return np.random.default_rng(n).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


CLASSES = ["circle", "square", "star"]


# -- ImageSet -----------------------------------------------------------------

def test_imageset_basics():
    s = ImageSet(pixels(6), [0, 1, 2, 0, 1, 2], CLASSES, ["a {}.", "a photo of a {}."], name="toy",
                 task="shape", domain="photo")
    assert len(s) == 6 and s.num_classes == 3
    assert s.labels.dtype == np.int64 and s.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert s.prompts() == [["a circle.", "a photo of a circle."], ["a square.", "a photo of a square."],
                           ["a star.", "a photo of a star."]]
    assert repr(s) == "ImageSet(name='toy', n=6, classes=3, task='shape', domain='photo')"
    assert list(ImageSet(pixels(2)).templates) == list(DEFAULT_TEMPLATES)


def test_imageset_of_paths_turns_strings_into_paths():
    s = ImageSet(["a.png", Path("b.png")])
    assert s.images == [Path("a.png"), Path("b.png")] and s.labels is None


def test_label_outside_the_class_list_is_named():
    with pytest.raises(ValueError, match=r"'toy' \(/data/toy\): label 3 at index 2 is outside 0..2 \(the 3 classes "
                                         r"\['circle', 'square', 'star'\]\)"):
        ImageSet(pixels(4), [0, 1, 3, 0], CLASSES, name="toy", source="/data/toy")
    with pytest.raises(ValueError, match="label -1 at index 0"):
        ImageSet(pixels(2), [-1, 0], CLASSES)
    with pytest.raises(ValueError, match=r"label 0 at index 0 is outside 0..-1 \(the 0 classes"):
        ImageSet(pixels(2), [0, 0])


@pytest.mark.parametrize("images,match", [
    (np.zeros((0, 8, 8, 3), np.uint8), "'bad' is empty"),
    ([], "'bad' is empty"),
    (np.zeros((2, 8, 8, 3), np.float32), "uint8 array of shape"),
    (np.zeros((2, 8, 8), np.uint8), "uint8 array of shape"),
    (np.zeros((2, 8, 8, 4), np.uint8), "uint8 array of shape"),
])
def test_bad_images(images, match):
    with pytest.raises(ValueError, match=match):
        ImageSet(images, name="bad")


def test_images_of_a_wrong_type():
    with pytest.raises(TypeError, match="uint8 array .* or a list of file paths, got str"):
        ImageSet("folder/")


def test_empty_set_read_from_somewhere_names_it():
    with pytest.raises(ValueError, match=r"empty \(read from /my/folder\)"):
        ImageSet([], name="mine", source="/my/folder")


@pytest.mark.parametrize("labels,match", [
    ([0, 1], r"labels of ImageSet 'images' must have one entry per image \(3\), got shape \(2,\)"),
    ([[0], [1], [2]], r"labels of ImageSet 'images' must be a 1-D array of integers, got shape \(3, 1\)"),
    ([0.0, 1.5, 2.0], "labels of ImageSet 'images' must hold integers"),
    (["circle", "square", "star"], "labels of ImageSet 'images' must hold integers"),
])
def test_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        ImageSet(pixels(3), labels, CLASSES)


def test_template_without_placeholder():
    with pytest.raises(ValueError, match="templates of ImageSet 'images': 'a photo' has no"):
        ImageSet(pixels(2), templates=["a {}", "a photo"])


def test_subset_by_ints_slice_and_mask():
    s = ImageSet(pixels(6), [0, 1, 2, 0, 1, 2], CLASSES, name="toy", domain="night")
    by_int = s.subset([4, 1])
    assert np.array_equal(by_int.images, s.images[[4, 1]]) and by_int.labels.tolist() == [1, 1]
    assert by_int.name == "toy" and by_int.domain == "night" and by_int.classnames == CLASSES
    assert s.subset(slice(0, 3)).labels.tolist() == [0, 1, 2]
    mask = s.labels == 2
    assert np.array_equal(s.subset(mask).images, s.images[mask])
    one = s.subset(3)
    assert len(one) == 1 and one.labels.tolist() == [0]
    paths = ImageSet([f"{i}.png" for i in range(4)], [0, 1, 0, 1], ["a", "b"])
    assert paths.subset([3, 0]).images == [Path("3.png"), Path("0.png")]


def test_split_is_disjoint_covering_and_seeded():
    s = ImageSet(pixels(10), np.arange(10) % 3, CLASSES)
    a, b = s.split(0.3, seed=1)
    assert (len(a), len(b)) == (3, 7)
    rows = {tuple(x.ravel()[:16]) for x in np.concatenate([a.images, b.images])}
    assert len(rows) == 10
    a2, _ = s.split(0.3, seed=1)
    a3, _ = s.split(0.3, seed=2)
    assert np.array_equal(a.images, a2.images) and not np.array_equal(a.images, a3.images)
    for bad in (0, 1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            s.split(bad)


# -- PairSet ------------------------------------------------------------------

def test_pairset_captions_and_views():
    p = PairSet(pixels(3), ["one", ["two", "deux"], ("three",)], name="toy")
    assert p.captions == [["one"], ["two", "deux"], ["three"]]
    assert len(p) == 3 and p.first_captions() == ["one", "two", "three"]
    texts, owner = p.flat_captions()
    assert texts == ["one", "two", "deux", "three"] and owner.tolist() == [0, 1, 1, 2]
    assert repr(p) == "PairSet(name='toy', n=3, captions_per_image=1.3)"


def test_sample_captions_draw_from_each_image():
    p = PairSet(pixels(2), [["a", "b", "c"], ["x"]])
    drawn = p.sample_captions(rng=np.random.default_rng(0))
    assert drawn[0] in ("a", "b", "c") and drawn[1] == "x"
    assert p.sample_captions() == p.sample_captions()
    many = {p.sample_captions([0], rng=np.random.default_rng(s))[0] for s in range(30)}
    assert many == {"a", "b", "c"}


@pytest.mark.parametrize("captions,match", [
    (["one", "two"], "3 images but 2 caption lists"),
    (["one", [], "three"], "image 1 has no caption"),
])
def test_pairset_errors(captions, match):
    with pytest.raises(ValueError, match=match):
        PairSet(pixels(3), captions, name="toy")
    with pytest.raises(ValueError, match="'none' is empty"):
        PairSet(np.zeros((0, 8, 8, 3), np.uint8), [], name="none")


def test_pairset_labels_are_checked():
    with pytest.raises(ValueError, match="labels of PairSet 'toy': label 5 at index 1 is outside 0..2"):
        PairSet(pixels(2), ["a", "b"], name="toy", labels=[0, 5], classnames=CLASSES)
    with pytest.raises(ValueError, match=r"labels of PairSet 'pairs' must have one entry per image \(2\)"):
        PairSet(pixels(2), ["a", "b"], labels=[0], classnames=CLASSES)


def test_pairset_subset_and_imageset():
    p = PairSet(pixels(4), ["a", "b", "c", "d"], name="toy", labels=[0, 1, 2, 1], classnames=CLASSES,
                templates=["a {} here"], domain="sketch")
    sub = p.subset([2, 0])
    assert sub.captions == [["c"], ["a"]] and sub.labels.tolist() == [2, 0]
    assert np.array_equal(sub.images, p.images[[2, 0]])
    s = p.to_imageset()
    assert isinstance(s, ImageSet) and s.labels.tolist() == [0, 1, 2, 1]
    assert s.classnames == CLASSES and s.templates == ["a {} here"] and s.domain == "sketch"
    with pytest.raises(ValueError, match="'plain' has no labels"):
        PairSet(pixels(1), ["a"], name="plain").to_imageset()
