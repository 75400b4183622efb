"""Clip.encode_images for every input kind, encode_texts, class_embeddings,
and the pieces in modgap.embed they are made of."""
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import write_corrupt
from PIL import Image
from torchvision import transforms as T

from modgap import Clip, embed
from modgap.data import ImageSet, PairSet


def as_pil(images):
    return [Image.fromarray(a) for a in images]


def save_pngs(images, folder):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, a in enumerate(images):
        paths.append(folder / f"{i:03d}.png")
        Image.fromarray(a).save(paths[-1])
    return paths


@pytest.fixture
def count_fromarray(monkeypatch):
    """Counts the images that go through PIL.Image.fromarray."""
    calls = []
    real = Image.fromarray

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(Image, "fromarray", counting)
    return calls


# -- every input kind gives the same embeddings -----------------------------

def test_uint8_fast_path_matches_the_pil_preprocess_path(clip, images, count_fromarray):
    fast = clip.encode_images(images)
    assert len(count_fromarray) == 0
    slow = clip.encode_images(as_pil(images))
    assert fast.shape == (len(images), clip.embed_dim) and fast.dtype == torch.float32
    assert torch.allclose(fast, slow, atol=1e-5)


def test_uint8_of_another_size_goes_through_the_model_preprocessing(clip, count_fromarray):
    big = np.random.default_rng(1).integers(0, 256, (6, 48, 40, 3), dtype=np.uint8)
    emb = clip.encode_images(big)
    assert len(count_fromarray) == len(big)
    reference = torch.stack([clip.preprocess(Image.fromarray(a)) for a in big])
    assert reference.shape[-2:] == (32, 32)
    assert torch.allclose(emb, clip.encode_images(reference), atol=1e-5)


def test_preprocessed_float_tensor(clip, images):
    tensor = torch.stack([clip.preprocess(im) for im in as_pil(images)])
    assert torch.allclose(clip.encode_images(tensor), clip.encode_images(images), atol=1e-5)


def test_uint8_torch_tensor_is_taken_as_pixels(clip, images):
    assert torch.equal(clip.encode_images(torch.from_numpy(images)), clip.encode_images(images))


def test_file_paths(clip, images, tmp_path):
    paths = save_pngs(images, tmp_path)
    expected = clip.encode_images(images)
    assert torch.allclose(clip.encode_images(paths), expected, atol=1e-5)
    assert torch.allclose(clip.encode_images([str(p) for p in paths]), expected, atol=1e-5)


def test_imageset_and_pairset(clip, images, tmp_path):
    expected = clip.encode_images(images)
    labels = np.arange(len(images)) % 2
    assert torch.equal(clip.encode_images(ImageSet(images, labels, ["a", "b"])), expected)
    on_disk = ImageSet(save_pngs(images, tmp_path), labels, ["a", "b"])
    assert torch.allclose(clip.encode_images(on_disk), expected, atol=1e-5)
    pairs = PairSet(images, [f"picture {i}" for i in range(len(images))])
    assert torch.equal(clip.encode_images(pairs), expected)


def test_unreadable_files_are_skipped_with_one_warning(clip, images, tmp_path):
    paths = save_pngs(images[:4], tmp_path)
    bad1 = write_corrupt(tmp_path / "bad1.png")
    bad2 = write_corrupt(tmp_path / "bad2.jpg")
    mixed = [paths[0], bad1, paths[1], paths[2], bad2, paths[3]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emb = clip.encode_images(mixed)
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 1
    assert "skipped 2 of 6" in msgs[0] and str(bad1) in msgs[0] and str(bad2) in msgs[0]
    assert torch.allclose(emb, clip.encode_images(images[:4]), atol=1e-5)


def test_no_readable_file_is_an_error(clip, tmp_path):
    bad = [write_corrupt(tmp_path / "a.png"), write_corrupt(tmp_path / "b.png")]
    with (pytest.warns(UserWarning, match="skipped 2 of 2"),
          pytest.raises(ValueError, match="none of the 2 image files could be read")):
        clip.encode_images(bad)


def test_batches_do_not_change_the_result(clip, images):
    assert torch.allclose(clip.encode_images(images, batch_size=5), clip.encode_images(images), atol=1e-5)


def test_normalize_flag(clip, images):
    raw = clip.encode_images(images, normalize=False)
    unit = clip.encode_images(images)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(len(images)), atol=1e-3)
    assert torch.allclose(unit.norm(dim=1), torch.ones(len(images)), atol=1e-5)
    assert torch.allclose(F.normalize(raw, dim=-1), unit, atol=1e-5)


def test_matches_plain_open_clip(clip, images):
    x = torch.stack([clip.preprocess(im) for im in as_pil(images)])
    clip.model.eval()
    with torch.no_grad():
        expected = F.normalize(clip.model.encode_image(x), dim=-1)
    assert torch.allclose(clip.encode_images(images), expected, atol=1e-5)


@pytest.mark.parametrize("bad,error,match", [
    ([], ValueError, "empty"),
    (np.zeros((0, 32, 32, 3), np.uint8), ValueError, "empty"),
    (np.zeros((2, 32, 32, 3), np.float32), ValueError, "uint8"),
    (np.zeros((2, 32, 32), np.uint8), ValueError, r"\[N, H, W, 3\]"),
    (torch.zeros(2, 32, 32, 3), ValueError, r"\[N, 3, H, W\]"),
    ("images/cat.png", TypeError, "list of paths"),
    ([1, 2, 3], TypeError, "images must be"),
    (42, TypeError, "images must be"),
])
def test_bad_image_arguments(clip, bad, error, match):
    with pytest.raises(error, match=match):
        clip.encode_images(bad)


@pytest.mark.parametrize(("batch_size", "error"), [(0, ValueError), (-1, ValueError), (2.5, TypeError)])
def test_bad_batch_size(clip, images, batch_size, error):
    with pytest.raises(error, match="batch_size"):
        clip.encode_images(images, batch_size=batch_size)


# -- texts --------------------------------------------------------------------

def test_encode_texts_matches_open_clip(clip):
    texts = ["a red circle", "a blue square", "a green star"]
    with torch.no_grad():
        expected = F.normalize(clip.model.eval().encode_text(clip.tokenizer(texts)), dim=-1)
    emb = clip.encode_texts(texts)
    assert emb.shape == (3, clip.embed_dim) and emb.dtype == torch.float32
    assert torch.allclose(emb, expected, atol=1e-5)
    assert torch.allclose(clip.encode_texts(texts, batch_size=2), emb, atol=1e-5)
    assert torch.allclose(clip.encode_texts("a green star"), emb[2:], atol=1e-5)
    assert torch.allclose(clip.encode_texts(t for t in texts), emb, atol=1e-5)


@pytest.mark.parametrize("bad,error", [([], ValueError), (["ok", 3], TypeError)])
def test_bad_texts(clip, bad, error):
    with pytest.raises(error, match="texts"):
        clip.encode_texts(bad)


def test_class_embeddings_average_normalised_templates(clip):
    classes = ["circle", "square", "star"]
    templates = ["a photo of a {}.", "a drawing of a {}.", "{}"]
    per = clip.encode_texts([t.format(c) for c in classes for t in templates], normalize=False)
    per = F.normalize(per, dim=-1).view(3, 3, -1)
    expected = F.normalize(per.mean(dim=1), dim=-1)
    got = clip.class_embeddings(classes, templates)
    assert got.shape == (3, clip.embed_dim)
    assert torch.allclose(got, expected, atol=1e-5)
    plain_mean = F.normalize(clip.encode_texts([t.format(c) for c in classes for t in templates],
                                               normalize=False).view(3, 3, -1).mean(dim=1), dim=-1)
    assert not torch.allclose(got, plain_mean, atol=1e-4)


def test_class_embeddings_with_one_template_are_the_prompt_embeddings(clip):
    got = clip.class_embeddings(["circle", "star"], ["a {} shape"])
    assert torch.allclose(got, clip.encode_texts(["a circle shape", "a star shape"]), atol=1e-5)


@pytest.mark.parametrize("classes,templates,match", [
    ([], ["a {}"], "classnames is empty"),
    (["a"], [], "templates is empty"),
    (["a"], ["a photo"], "no '{}'"),
])
def test_class_embeddings_errors(clip, classes, templates, match):
    with pytest.raises(ValueError, match=match):
        clip.class_embeddings(classes, templates)


def test_zero_shot_logits(clip, images):
    classes = ["circle", "square"]
    logits = clip.zero_shot_logits(images, classes)
    expected = clip.logit_scale * clip.encode_images(images) @ clip.class_embeddings(classes).T
    assert logits.shape == (len(images), 2)
    assert torch.allclose(logits, expected, atol=1e-4)


# -- the pieces -----------------------------------------------------------------

def test_pixels_to_tensor_is_totensor_then_normalize(images):
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    tf = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    expected = torch.stack([tf(im) for im in as_pil(images)])
    assert torch.allclose(embed.pixels_to_tensor(images, mean, std), expected, atol=1e-6)


def test_fast_path_only_where_the_transform_leaves_pixels_as_they_are(clip):
    norm = T.Normalize(embed.OPENAI_MEAN, embed.OPENAI_STD)
    assert embed.fast_path_ok(clip.preprocess, 32, (32, 32))
    assert not embed.fast_path_ok(clip.preprocess, 32, (48, 48))
    assert not embed.fast_path_ok(T.Compose([T.Resize(36), T.CenterCrop(32), T.ToTensor(), norm]), 32, (32, 32))
    assert not embed.fast_path_ok(T.Compose([T.Resize(32), T.CenterCrop(28), T.ToTensor(), norm]), 32, (32, 32))
    assert not embed.fast_path_ok(T.Compose([T.ToTensor(), T.Grayscale(3), norm]), 32, (32, 32))
    assert not embed.fast_path_ok(T.Compose([T.Resize(32), T.ToTensor()]), 32, (32, 32))
    assert embed.fast_path_ok(T.Compose([T.Resize((32, 32)), T.ToTensor(), norm]), 32, (32, 32))


def test_a_zooming_transform_is_applied_to_arrays_at_model_size(clip, images):
    zoom = T.Compose([
        T.Resize(40, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(32), T.ToTensor(),
        T.Normalize(embed.OPENAI_MEAN, embed.OPENAI_STD),
    ])
    zoomed = Clip(clip.model, zoom, clip.tokenizer, device="cpu")
    emb = zoomed.encode_images(images)
    assert torch.allclose(emb, zoomed.encode_images(as_pil(images)), atol=1e-5)
    assert not torch.allclose(emb, clip.encode_images(images), atol=1e-3)


def test_normalize_stats(clip):
    assert embed.normalize_stats(clip.preprocess) == (embed.OPENAI_MEAN, embed.OPENAI_STD)
    assert embed.normalize_stats(T.Compose([T.ToTensor()])) is None


def test_image_inputs_kinds(images, tmp_path):
    assert embed.image_inputs(images)[0] == "uint8"
    assert embed.image_inputs(torch.zeros(2, 3, 8, 8))[0] == "tensor"
    assert embed.image_inputs(as_pil(images[:2]))[0] == "pil"
    kind, items = embed.image_inputs(["a.png", tmp_path / "b.png"])
    assert kind == "paths" and items == [Path("a.png"), tmp_path / "b.png"]


def test_autocast_only_on_cuda():
    ctx = embed.autocast_for(torch.device("cpu"))
    with ctx:
        assert not torch.is_autocast_enabled()


# -- feeding the model: workers and images prepared once --------------------------------------------------------


def test_workers_decode_files_to_the_same_pixels_and_skip_the_same_corrupt_file(clip, tmp_path):
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (10, 40, 48, 3), dtype=np.uint8)
    paths = save_pngs(arrays, tmp_path / "imgs")
    write_corrupt(paths[3])
    batches = [np.array([0, 1, 2, 3]), np.array([9, 4]), np.array([3]), np.array([5, 6, 7, 8])]
    inline = list(embed.pixel_batches(clip, "paths", paths, batches, workers=0))
    pooled = list(embed.pixel_batches(clip, "paths", paths, batches, workers=2))
    assert len(inline) == len(pooled) == len(batches)
    for (k0, x0), (k1, x1), idx in zip(inline, pooled, batches):
        np.testing.assert_array_equal(k0, k1)
        assert list(idx[k0]) == [i for i in idx if i != 3]
        if x0 is None:
            assert x1 is None and list(idx) == [3]
        else:
            assert torch.equal(x0, x1)
    # the whole engine: the same embeddings with and without workers, the corrupt file named once
    clip.num_workers = 2
    try:
        with pytest.warns(UserWarning, match="skipped 1 of 10"):
            pooled_emb = clip.encode_images(paths, batch_size=3)
    finally:
        clip.num_workers = None
    clip.num_workers = 0
    try:
        with pytest.warns(UserWarning, match="skipped 1 of 10"):
            inline_emb = clip.encode_images(paths, batch_size=3)
    finally:
        clip.num_workers = None
    assert pooled_emb.shape == (9, clip.embed_dim)
    torch.testing.assert_close(pooled_emb, inline_emb, rtol=0, atol=0)


def test_pil_images_through_workers_match_the_transform(clip):
    rng = np.random.default_rng(1)
    pil = as_pil(rng.integers(0, 256, (6, 50, 37, 3), dtype=np.uint8))
    batches = [np.array([5, 0, 2]), np.array([1, 3, 4])]
    for (kept, x), idx in zip(embed.pixel_batches(clip, "pil", pil, batches, workers=2), batches):
        assert list(kept) == [0, 1, 2]
        want = torch.stack([clip.preprocess(pil[i]) for i in idx])
        assert torch.equal(x, want)


@pytest.mark.parametrize("kind", ["uint8", "pil"])
def test_images_prepared_once_give_the_transforms_exact_numbers(clip, kind):
    rng = np.random.default_rng(2)
    arrays = rng.integers(0, 256, (5, 45, 60, 3), dtype=np.uint8)
    items = arrays if kind == "uint8" else as_pil(arrays)
    new_kind, prepared = embed.prepare_images(clip, kind, items)
    assert new_kind == "uint8" and prepared.shape == (5, *clip.image_size, 3)
    idx = np.array([4, 1, 3])
    before, _ = embed.pixels_at(clip, kind, items, idx)
    after, _ = embed.pixels_at(clip, new_kind, prepared, idx)
    assert torch.equal(before, after)


def test_prepare_images_leaves_what_needs_no_preparing(clip, tmp_path, monkeypatch):
    at_size = np.zeros((3, *clip.image_size, 3), dtype=np.uint8)
    kind, items = embed.prepare_images(clip, "uint8", at_size)
    assert kind == "uint8" and items is at_size
    paths = save_pngs(at_size, tmp_path / "p")
    assert embed.prepare_images(clip, "paths", paths) == ("paths", paths)
    # too large to keep in memory: left to be transformed batch by batch
    monkeypatch.setattr(embed, "PREPARED_MAX_BYTES", 10)
    big = np.zeros((3, 40, 40, 3), dtype=np.uint8)
    kind, items = embed.prepare_images(clip, "uint8", big)
    assert kind == "uint8" and items is big


def test_worker_count_comes_from_the_machine_or_the_environment(monkeypatch, clip):
    monkeypatch.delenv("MODGAP_NUM_WORKERS", raising=False)
    n = embed.default_workers()
    assert 0 <= n <= 8
    monkeypatch.setenv("MODGAP_NUM_WORKERS", "3")
    assert embed.default_workers() == 3
    monkeypatch.setenv("MODGAP_NUM_WORKERS", "many")
    with pytest.raises(ValueError, match="MODGAP_NUM_WORKERS"):
        embed.default_workers()
    with pytest.raises(ValueError, match="num_workers"):
        Clip(clip.model, clip.preprocess, clip.tokenizer, num_workers=-1)


@pytest.mark.parametrize("workers", [0, 2])
def test_empty_shares_of_a_batch_give_no_pixels(clip, tmp_path, workers):
    rng = np.random.default_rng(3)
    arrays = rng.integers(0, 256, (4, 40, 40, 3), dtype=np.uint8)
    paths = save_pngs(arrays, tmp_path / "e")
    for kind, items in (("paths", paths), ("pil", as_pil(arrays)), ("uint8", arrays)):
        batches = [np.array([], dtype=np.int64), np.array([2, 0]), np.array([], dtype=np.int64)]
        out = list(embed.pixel_batches(clip, kind, items, batches, workers=workers))
        assert [len(k) for k, _ in out] == [0, 2, 0]
        assert out[0][1] is None and out[2][1] is None and out[1][1].shape[0] == 2
