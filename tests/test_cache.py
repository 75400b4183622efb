"""The on-disk embedding cache: hits, misses on changed inputs or weights,
corrupt entries, atomic writes, and the fingerprints keys are built from."""
import gc
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import modgap.cache
from modgap import Clip
from modgap.cache import EmbeddingCache, _device_checksums, fingerprint_inputs, fingerprint_model


def entries(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def cached(clip, tmp_path):
    """A private copy of the micro model whose cache lives in tmp_path/cache."""
    twin = clip.copy()
    return Clip(twin.model, twin.preprocess, twin.tokenizer, device="cpu", cache_dir=tmp_path / "cache")


def count_calls(monkeypatch, model, method):
    calls = []
    real = getattr(model, method)

    def counting(x):
        calls.append(len(x))
        return real(x)

    monkeypatch.setattr(model, method, counting)
    return calls


def forbid(monkeypatch, model, method):
    def boom(x):
        raise AssertionError(f"{method} was called on a cache hit")

    monkeypatch.setattr(model, method, boom)


def test_second_call_is_a_hit_that_skips_the_model(cached, images, tmp_path, monkeypatch):
    first = cached.encode_images(images)
    assert len(entries(tmp_path / "cache")) == 1
    forbid(monkeypatch, cached.model, "encode_image")
    second = cached.encode_images(images)
    assert torch.equal(first, second)
    assert second.dtype == torch.float32 and second.device == cached.device
    assert cached.cache.hits == 1 and cached.cache.misses == 1


def test_cache_dir_per_call(clip, images, tmp_path, monkeypatch):
    twin = clip.copy()
    first = twin.encode_images(images, cache_dir=tmp_path / "c")
    forbid(monkeypatch, twin.model, "encode_image")
    assert torch.equal(twin.encode_images(images, cache_dir=tmp_path / "c"), first)
    with pytest.raises(AssertionError, match="cache hit"):
        twin.encode_images(images)


def test_texts_and_class_embeddings_hit(cached, monkeypatch):
    texts = ["a red circle", "a blue star"]
    emb = cached.encode_texts(texts)
    classes = cached.class_embeddings(["circle", "star"], ["a {}.", "a photo of a {}."])
    forbid(monkeypatch, cached.model, "encode_text")
    assert torch.equal(cached.encode_texts(texts), emb)
    assert torch.equal(cached.class_embeddings(["circle", "star"], ["a {}.", "a photo of a {}."]), classes)


def test_changed_inputs_miss(cached, images, monkeypatch):
    before = cached.encode_images(images)
    calls = count_calls(monkeypatch, cached.model, "encode_image")
    changed = images.copy()
    changed[5, 10, 10] = 255 - changed[5, 10, 10]
    after = cached.encode_images(changed)
    assert sum(calls) == len(images)
    assert not torch.equal(after[5], before[5])
    assert torch.allclose(after[:5], before[:5], atol=1e-6)
    cached.encode_images(images[:-1])
    assert sum(calls) == 2 * len(images) - 1


def test_changed_settings_miss(cached, images, monkeypatch):
    unit = cached.encode_images(images)
    calls = count_calls(monkeypatch, cached.model, "encode_image")
    raw = cached.encode_images(images, normalize=False)
    assert sum(calls) == len(images) and not torch.allclose(raw, unit)
    cached.encode_texts(["a red circle"])
    text_calls = count_calls(monkeypatch, cached.model, "encode_text")
    cached.encode_texts(["a red circle"], normalize=False)
    assert sum(text_calls) == 1


@pytest.mark.parametrize("how", ["no_grad", "data"])
def test_changed_weights_miss(cached, images, monkeypatch, how):
    before = cached.encode_images(images)
    proj = cached.model.visual.proj
    if how == "no_grad":
        with torch.no_grad():
            proj[0, 0] += 1.0
    else:
        proj.data[0, 0] += 1.0
    calls = count_calls(monkeypatch, cached.model, "encode_image")
    after = cached.encode_images(images)
    assert sum(calls) == len(images)
    assert not torch.allclose(after, before, atol=1e-4)
    fresh = Clip(cached.model, cached.preprocess, cached.tokenizer, device="cpu").encode_images(images)
    assert torch.equal(after, fresh)


def test_another_model_object_with_other_weights_misses(clip, images, tmp_path):
    a, b = clip.copy(), clip.copy()
    with torch.no_grad():
        b.model.visual.proj.mul_(-1)
    ea = a.encode_images(images, cache_dir=tmp_path)
    eb = b.encode_images(images, cache_dir=tmp_path)
    assert torch.allclose(ea, -eb, atol=1e-5)
    assert len(entries(tmp_path)) == 2


def test_corrupt_entry_is_recomputed_with_a_warning(cached, images, tmp_path):
    good = cached.encode_images(images)
    (entry,) = (tmp_path / "cache").iterdir()
    entry.write_bytes(b"\x00garbage, not a zip file" * 10)
    with pytest.warns(UserWarning, match=f"{entry.name} is corrupt"):
        again = cached.encode_images(images)
    assert torch.equal(again, good)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(cached.encode_images(images), good)
    assert cached.cache.hits == 1


def test_tampered_entry_is_not_returned(cached, images, tmp_path):
    good = cached.encode_images(images)
    (entry,) = (tmp_path / "cache").iterdir()
    with np.load(entry) as z:
        key, checksum = z["key"], z["checksum"]
    np.savez(entry, embeddings=np.zeros((len(images), cached.embed_dim), np.float32), key=key, checksum=checksum)
    with pytest.warns(UserWarning, match="corrupt"):
        again = cached.encode_images(images)
    assert torch.equal(again, good)


def test_changed_image_files_miss(cached, images, tmp_path, monkeypatch):
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = []
    for i, a in enumerate(images[:4]):
        paths.append(folder / f"{i}.png")
        Image.fromarray(a).save(paths[-1])
    before = cached.encode_images(paths)
    Image.fromarray(images[10]).save(paths[2])
    os.utime(paths[2], ns=(1_000_000_000, 1_000_000_000))
    calls = count_calls(monkeypatch, cached.model, "encode_image")
    after = cached.encode_images(paths)
    assert sum(calls) == 4
    assert torch.allclose(after[2], cached.encode_images(images[10:11])[0], atol=1e-5)
    assert torch.allclose(after[[0, 1, 3]], before[[0, 1, 3]], atol=1e-6)


def test_writes_leave_no_temporary_files(cached, images, tmp_path):
    cached.encode_images(images)
    cached.encode_images(images[:7])
    cached.encode_texts(["a red circle"])
    names = entries(tmp_path / "cache")
    assert len(names) == 3 and all(n.endswith(".npz") and not n.startswith(".") for n in names)


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path)

    def half_written(fh, **arrays):
        fh.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", half_written)
    with pytest.raises(OSError, match="disk full"):
        cache.put("k" * 40, np.ones((2, 3), np.float32))
    assert entries(tmp_path) == []
    assert cache.get("k" * 40) is None


def test_cache_round_trip_and_shape_check(tmp_path):
    cache = EmbeddingCache(tmp_path / "new" / "dir")
    emb = np.arange(12, dtype=np.float32).reshape(4, 3)
    path = cache.put("abc", emb)
    assert path == cache.path("abc") and path.parent == tmp_path / "new" / "dir"
    assert np.array_equal(cache.get("abc"), emb)
    assert cache.get("missing") is None
    with pytest.warns(UserWarning, match="corrupt"):
        assert cache.get("abc", n_rows=5) is None


# -- fingerprints -----------------------------------------------------------

def test_model_fingerprint_follows_the_weights(clip):
    a, b = clip.copy(), clip.copy()
    assert a.model.logit_scale.ndim == 0
    fa = fingerprint_model(a.model)
    assert fingerprint_model(b.model) == fa
    a.model.logit_scale.data.fill_(1.0)
    assert fingerprint_model(a.model) != fa
    with torch.no_grad():
        b.model.half()
    assert fingerprint_model(b.model) != fa


def test_accelerator_fingerprints_are_remembered_until_the_weights_move(clip, monkeypatch):
    monkeypatch.setattr(modgap.cache, "_in_host_memory", lambda state: False)
    hashed = []
    real = modgap.cache._full_hash
    monkeypatch.setattr(modgap.cache, "_full_hash", lambda state: hashed.append(1) or real(state))
    remembered = len(modgap.cache._model_fp)
    model = clip.copy().model
    fp = fingerprint_model(model)
    assert fingerprint_model(model) == fp and len(hashed) == 1
    model.visual.proj.data[3, 3] += 0.5
    moved = fingerprint_model(model)
    assert moved != fp and len(hashed) == 2
    assert moved == real(model.state_dict())
    assert model in modgap.cache._model_fp
    del model
    gc.collect()
    assert len(modgap.cache._model_fp) == remembered


def test_device_checksums_see_every_change():
    state = {"w": torch.arange(10, dtype=torch.float32), "s": torch.tensor(2.0)}
    base = _device_checksums(state)
    swapped = dict(state, w=state["w"][[1, 0, *range(2, 10)]])
    assert _device_checksums(swapped) != base
    nudged = dict(state, w=state["w"].clone())
    nudged["w"][7] = torch.nextafter(nudged["w"][7], torch.tensor(100.0))
    assert _device_checksums(nudged) != base
    assert _device_checksums(dict(state, s=torch.tensor(3.0))) != base
    assert _device_checksums({k: v.clone() for k, v in state.items()}) == base


def test_input_fingerprints(images):
    fp = fingerprint_inputs("uint8", images)
    assert fp == fingerprint_inputs("uint8", images.copy())
    assert fp != fingerprint_inputs("uint8", images[:-1])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    assert fingerprint_inputs("tensor", x) != fingerprint_inputs("tensor", x + 1e-3)
    pil = [Image.fromarray(a) for a in images[:3]]
    assert fingerprint_inputs("pil", pil) != fingerprint_inputs("pil", pil[::-1])
    assert fingerprint_inputs("texts", ["ab", "c"]) != fingerprint_inputs("texts", ["a", "bc"])
    with pytest.raises(ValueError):
        fingerprint_inputs("audio", [])
