"""modgap.data.corruptions: every corruption changes the images, more at a
higher severity, keeps labels and shapes, is seeded, and the held-out and
validation kinds never overlap."""
import numpy as np
import pytest

from modgap import data
from modgap.data.corruptions import CORRUPTIONS, HELD_OUT, VALIDATION, corrupt


@pytest.fixture(scope="module")
def shapes():
    return data.load("shapes", n=24, seed=3)


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_each_corruption_grows_with_severity_and_keeps_the_set(shapes, kind):
    changes = []
    for severity in (1, 3, 5):
        out = corrupt(shapes, kind, severity, seed=0)
        assert out.images.shape == shapes.images.shape and out.images.dtype == np.uint8
        assert np.array_equal(out.labels, shapes.labels) and out.classnames == shapes.classnames
        assert out.name == f"{shapes.name}+{kind}-{severity}" and out.domain == f"{kind}-{severity}"
        changes.append(np.abs(out.images.astype(float) - shapes.images).mean())
    assert changes[0] > 0.5, changes
    assert changes[0] < changes[1] < changes[2], changes
    # seeded: the same call gives the same pixels
    assert np.array_equal(corrupt(shapes, kind, 3, seed=0).images, corrupt(shapes, kind, 3, seed=0).images)


def test_arrays_come_back_as_arrays(shapes):
    out = corrupt(shapes.images, "fog", 2)
    assert isinstance(out, np.ndarray) and out.shape == shapes.images.shape


def test_held_out_and_validation_kinds_are_apart():
    assert not set(HELD_OUT) & set(VALIDATION)
    assert set(HELD_OUT) | set(VALIDATION) == set(CORRUPTIONS)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"kind": "rain"}, "kind"),
    ({"kind": "fog", "severity": 0}, "severity"),
    ({"kind": "fog", "severity": 6}, "severity"),
    ({"kind": "fog", "seed": -1}, "seed"),
])
def test_bad_arguments_are_named(shapes, kwargs, match):
    with pytest.raises(ValueError, match=match):
        corrupt(shapes, **kwargs)


def test_file_paths_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="uint8 images"):
        corrupt(np.zeros((2, 8, 8, 3), dtype=np.float32), "fog")
