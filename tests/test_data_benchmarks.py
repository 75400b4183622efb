"""Standard sets by name (modgap.data.load(name, root=...)) on small fakes
written here in the exact formats torchvision reads: CIFAR-10/100 python
pickles, MNIST IDX files, an EuroSAT folder tree; the clear error for a set
that is not there; CLIP_benchmark's class names and templates where its
package is importable."""
import json
import pickle
import struct
import sys
import types

import numpy as np
import pytest
from PIL import Image

from modgap import data
from modgap.data import benchmarks

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture
def no_md5(monkeypatch):
    """torchvision checks the MD5 of the real CIFAR files; fakes cannot pass it."""
    from torchvision.datasets import cifar

    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)


def cifar_batch(path, images, labels, label_key):
    flat = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # the files hold channel planes
    with open(path, "wb") as fh:
        pickle.dump({"data": flat, label_key: list(map(int, labels))}, fh)


def fake_cifar10(root, n_test=12):
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        cifar_batch(folder / f"data_batch_{i}", rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
                    rng.integers(0, 10, 4), "labels")
    test_images = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
    test_labels = rng.integers(0, 10, n_test)
    cifar_batch(folder / "test_batch", test_images, test_labels, "labels")
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": CIFAR10_NAMES}, fh)
    return test_images, test_labels


def test_cifar10_from_its_python_pickles(tmp_path, no_md5, monkeypatch):
    monkeypatch.setitem(sys.modules, "clip_benchmark", None)  # torchvision's names and OpenAI's prompt
    images, labels = fake_cifar10(tmp_path)
    ds = data.load("cifar10", root=tmp_path)
    assert ds.images.shape == (12, 32, 32, 3)
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert list(ds.classnames) == CIFAR10_NAMES
    assert list(ds.templates) == list(data.DEFAULT_TEMPLATES)
    train = data.load("cifar10", root=tmp_path, split="train")
    assert len(train) == 20
    sub = data.load("cifar10", root=tmp_path, n=5, seed=1)
    assert len(sub) == 5 and set(map(tuple, sub.images.reshape(5, -1)[:, :8])) <= set(
        map(tuple, images.reshape(12, -1)[:, :8]))


def test_cifar100_fine_labels(tmp_path, no_md5, monkeypatch):
    monkeypatch.setitem(sys.modules, "clip_benchmark", None)
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    names = [f"class_{i}" for i in range(100)]
    test_images = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    test_labels = rng.integers(0, 100, 7)
    cifar_batch(folder / "train", rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8), [1, 2, 3], "fine_labels")
    cifar_batch(folder / "test", test_images, test_labels, "fine_labels")
    with open(folder / "meta", "wb") as fh:
        pickle.dump({"fine_label_names": names}, fh)
    ds = data.load("cifar100", root=tmp_path)
    np.testing.assert_array_equal(ds.images, test_images)
    np.testing.assert_array_equal(ds.labels, test_labels)
    assert ds.classnames[7] == "class 7"  # underscores read as spaces


def idx_file(path, array, magic):
    with open(path, "wb") as fh:
        fh.write(struct.pack(">I", magic))
        fh.write(b"".join(struct.pack(">I", d) for d in array.shape))
        fh.write(array.astype(np.uint8).tobytes())


def test_mnist_from_idx_files_in_grey_becomes_rgb(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "clip_benchmark", None)
    rng = np.random.default_rng(2)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    test_images = rng.integers(0, 256, (9, 28, 28), dtype=np.uint8)
    test_labels = rng.integers(0, 10, 9).astype(np.uint8)
    idx_file(raw / "t10k-images-idx3-ubyte", test_images, 0x803)
    idx_file(raw / "t10k-labels-idx1-ubyte", test_labels, 0x801)
    idx_file(raw / "train-images-idx3-ubyte", test_images[:3], 0x803)
    idx_file(raw / "train-labels-idx1-ubyte", test_labels[:3], 0x801)
    ds = data.load("mnist", root=tmp_path)
    assert ds.images.shape == (9, 28, 28, 3)
    np.testing.assert_array_equal(ds.images[..., 1], test_images)
    np.testing.assert_array_equal(ds.labels, test_labels)
    assert ds.classnames[0].startswith("0")
    # without root, "mnist" is still the packaged sample
    assert len(data.load("mnist", n=10)) == 10


def test_eurosat_folder_tree_gives_paths(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "clip_benchmark", None)
    base = tmp_path / "eurosat" / "2750"
    for c in ("Forest", "River"):
        (base / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (64, 64), (i * 40, 90, 30)).save(base / c / f"{c}_{i}.jpg")
    ds = data.load("eurosat", root=tmp_path)
    assert len(ds) == 6 and all(p.suffix == ".jpg" for p in ds.images)
    assert list(ds.classnames) == ["Forest", "River"]
    assert sorted(ds.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="split"):
        data.load("eurosat", root=tmp_path, split="train")


def test_a_missing_set_names_itself_the_folder_the_layout_and_download(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()  # the folder, without its files
    for root in (tmp_path, tmp_path / "absent"):
        with pytest.raises(FileNotFoundError) as e:
            data.load("cifar10", root=root)
        msg = str(e.value)
        assert "cifar10" in msg and str(root) in msg and "data_batch_1" in msg and "download=True" in msg
    with pytest.raises(ValueError, match="root"):
        data.load("cifar10")
    with pytest.raises(ValueError, match="cifar10"):
        data.load("cifar1O", root=tmp_path)


def test_download_false_never_fetches(tmp_path, monkeypatch):
    from torchvision.datasets import cifar, mnist

    calls = []
    monkeypatch.setattr(cifar, "download_and_extract_archive", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(mnist, "download_and_extract_archive", lambda *a, **k: calls.append(a))
    for name in ("cifar10", "cifar100", "mnist"):
        with pytest.raises(FileNotFoundError, match=name):
            data.load(name, root=tmp_path)
    assert calls == []
    # with download=True the fetch is attempted (here it finds the stand-in)
    with pytest.raises(Exception):  # noqa: B017 - the stand-in fetched nothing to read
        data.load("cifar10", root=tmp_path, download=True)
    assert len(calls) == 1


def test_clip_benchmark_names_and_templates_where_installed(tmp_path, no_md5, monkeypatch):
    pkg = tmp_path / "fake_cb"
    (pkg / "datasets").mkdir(parents=True)
    (pkg / "datasets" / "en_classnames.json").write_text(json.dumps({"cifar10": [f"the {c}" for c in CIFAR10_NAMES]}))
    (pkg / "datasets" / "en_zeroshot_classification_templates.json").write_text(
        json.dumps({"cifar10": ["a photo of a {c}.", "a blurry photo of a {c}."]}))
    module = types.ModuleType("clip_benchmark")
    module.__file__ = str(pkg / "__init__.py")
    monkeypatch.setitem(sys.modules, "clip_benchmark", module)
    fake_cifar10(tmp_path / "root")
    ds = data.load("cifar10", root=tmp_path / "root")
    assert ds.classnames[0] == "the airplane"
    assert list(ds.templates) == ["a photo of a {}.", "a blurry photo of a {}."]  # OpenAI's form
    assert "clip-benchmark" in ds.source


def test_every_name_has_a_torchvision_reader_and_a_layout():
    import torchvision.datasets as tvd

    for name, spec in benchmarks.BENCHMARKS.items():
        assert hasattr(tvd, spec.torchvision_class), name
        assert "ROOT/" in spec.layout and "test" in spec.splits


def test_stl10_from_its_binaries(tmp_path, monkeypatch):
    from torchvision.datasets import stl10

    monkeypatch.setitem(sys.modules, "clip_benchmark", None)
    monkeypatch.setattr(stl10.STL10, "_check_integrity", lambda self: True)  # the real files' MD5
    rng = np.random.default_rng(4)
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    images = rng.integers(0, 256, (5, 96, 96, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 5)
    images.transpose(0, 3, 2, 1).tofile(folder / "test_X.bin")  # column-major channel planes, as STL-10 stores
    (labels + 1).astype(np.uint8).tofile(folder / "test_y.bin")  # 1-based on disk
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    ds = data.load("stl10", root=tmp_path)
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert list(ds.classnames) == names
