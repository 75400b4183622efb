"""load_model: every spec form, the offline failure messages, devices; and
the Clip object's copy, save and precision handling."""
import hashlib
import json

import huggingface_hub.constants as hf_constants
import numpy as np
import pytest
import torch
from conftest import MICRO_CFG, MICRO_PREPROCESS, write_local_dir

import modgap.zoo
from modgap import Clip, ModelLoadError, load_model, pick_device
from modgap.models import offline_models, parse_spec


def assert_same_weights(model, state):
    got = model.state_dict()
    assert set(got) == set(state)
    for k, v in state.items():
        assert torch.equal(got[k].cpu(), v), k


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache in tmp_path, with the Hub in offline mode."""
    hub = tmp_path / "hf-home" / "hub"
    hub.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(hub.parent))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HOME", str(hub.parent))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return hub


def add_to_hub_cache(hub, repo_id, files: dict):
    """Lay out ``files`` (name -> bytes) as huggingface_hub caches a download
    of ``repo_id`` at revision main: blobs, a snapshot of links, refs/main."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / name).symlink_to(blob)


# -- parse_spec -------------------------------------------------------------

@pytest.mark.parametrize("spec,pretrained,expected", [
    ("ViT-B-32:laion2b_s34b_b79k", None, ("open_clip", "ViT-B-32", "laion2b_s34b_b79k")),
    ("ViT-B-32", None, ("open_clip", "ViT-B-32", None)),
    ("ViT-B-32", "openai", ("open_clip", "ViT-B-32", "openai")),
    ("ViT-B-32:/data/w.pt", None, ("open_clip", "ViT-B-32", "/data/w.pt")),
    ("ViT-B-32:C:/w.safetensors", None, ("open_clip", "ViT-B-32", "C:/w.safetensors")),
    ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None,
     ("hf-hub", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None)),
    ("local-dir:/models/a:b", None, ("local-dir", "/models/a:b", None)),
    ("  modgap-tiny ", None, ("bundled", "modgap-tiny", None)),
    ("modgap-tiny:/x/w.safetensors", None, ("bundled", "modgap-tiny", "/x/w.safetensors")),
])
def test_parse_spec_forms(spec, pretrained, expected):
    assert parse_spec(spec, pretrained) == expected


@pytest.mark.parametrize("spec,pretrained,match", [
    ("", None, "non-empty"),
    (None, None, "non-empty"),
    ("ViT-B-32:", None, "nothing after the colon"),
    ("hf-hub:", None, "names nothing"),
    ("ViT-B-32:openai", "laion2b_s34b_b79k", "already names weights"),
    ("local-dir:/x", "openai", "carries its own weights"),
])
def test_parse_spec_rejects(spec, pretrained, match):
    with pytest.raises(ValueError, match=match):
        parse_spec(spec, pretrained)


# -- specs that load --------------------------------------------------------

@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_arch_with_local_weights_file(micro_name, micro_pt, micro_safetensors, micro_state, fmt):
    path = micro_pt if fmt == "pt" else micro_safetensors
    clip = load_model(f"{micro_name}:{path}", device="cpu")
    assert isinstance(clip, Clip)
    assert_same_weights(clip.model, micro_state)
    assert clip.embed_dim == MICRO_CFG["embed_dim"]
    assert clip.image_size == (32, 32)
    assert clip.device == torch.device("cpu")
    assert clip.tokenizer.context_length == MICRO_CFG["text_cfg"]["context_length"]
    assert micro_name in repr(clip) and "embed_dim=32" in repr(clip)


def test_two_argument_form(micro_name, micro_pt, micro_state):
    clip = load_model(micro_name, pretrained=str(micro_pt), device="cpu")
    assert_same_weights(clip.model, micro_state)


def test_arch_alone_is_random_init_with_warning(micro_name, micro_state):
    with pytest.warns(UserWarning, match="randomly initialised"):
        clip = load_model(micro_name, device="cpu")
    assert clip.embed_dim == 32
    same = all(torch.equal(clip.model.state_dict()[k], v) for k, v in micro_state.items())
    assert not same


def test_local_dir(micro_local_dir, micro_state):
    clip = load_model(f"local-dir:{micro_local_dir}", device="cpu")
    assert_same_weights(clip.model, micro_state)
    assert clip.name == f"local-dir:{micro_local_dir}"
    assert clip.tokenizer.context_length == MICRO_CFG["text_cfg"]["context_length"]


def test_hf_hub_repo_in_the_local_cache_loads_offline(offline_hub, micro_state):
    from safetensors.torch import save

    config = json.dumps({"model_cfg": MICRO_CFG, "preprocess_cfg": MICRO_PREPROCESS}).encode()
    weights = save({k: v.contiguous() for k, v in micro_state.items()})
    add_to_hub_cache(offline_hub, "acme/micro-clip",
                     {"open_clip_config.json": config, "open_clip_model.safetensors": weights})
    assert "hf-hub:acme/micro-clip" in offline_models()
    clip = load_model("hf-hub:acme/micro-clip", device="cpu")
    assert_same_weights(clip.model, micro_state)
    assert clip.name == "hf-hub:acme/micro-clip"


# -- specs that fail, and what they say -------------------------------------

def test_pretrained_tag_offline_fails_with_help(offline_hub, tmp_path):
    spec = "ViT-B-32:laion2b_s34b_b79k"
    with pytest.raises(ModelLoadError) as info:
        load_model(spec, device="cpu")
    msg = str(info.value)
    assert msg.startswith(f"could not load model {spec!r}")
    assert str(offline_hub) in msg and "HF_HOME" in msg
    assert "HF_HUB_OFFLINE=1" in msg
    assert "load_model('ARCH:/path/to/weights.pt')" in msg and "local-dir:" in msg
    assert "models that load offline on this machine" in msg
    assert info.value.__cause__ is not None


def test_pretrained_tag_offline_names_weights_cache_dir(offline_hub, tmp_path):
    cache = tmp_path / "my-weights"
    with pytest.raises(ModelLoadError, match="ViT-B-32:laion2b_s34b_b79k") as info:
        load_model("ViT-B-32", pretrained="laion2b_s34b_b79k", device="cpu", weights_cache_dir=cache)
    assert f"cache_dir={cache}" in str(info.value)


def test_hf_hub_offline_fails_with_help(offline_hub):
    with pytest.raises(ModelLoadError) as info:
        load_model("hf-hub:acme/not-cached", device="cpu")
    msg = str(info.value)
    assert "'hf-hub:acme/not-cached'" in msg
    assert str(offline_hub) in msg and "local-dir:" in msg


def test_offline_help_lists_cached_models(offline_hub, micro_state):
    add_to_hub_cache(offline_hub, "acme/cached-clip", {"open_clip_config.json": b"{}"})
    with pytest.raises(ModelLoadError, match=r"load offline on this machine: \[.*'hf-hub:acme/cached-clip'"):
        load_model("ViT-B-32:laion2b_s34b_b79k", device="cpu")


def test_unknown_architecture_lists_close_matches():
    with pytest.raises(ValueError, match="unknown architecture 'ViT-B-3'") as info:
        load_model("ViT-B-3", device="cpu")
    assert "close matches" in str(info.value) and "'ViT-B-32'" in str(info.value)


def test_unknown_pretrained_tag_lists_known_tags():
    with pytest.raises(ValueError, match="unknown pretrained tag 'laion9b'") as info:
        load_model("ViT-B-32:laion9b", device="cpu")
    assert "laion2b_s34b_b79k" in str(info.value)


def test_missing_weights_file_is_named(micro_name, tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_model(f"{micro_name}:{missing}", device="cpu")


def test_weights_of_another_architecture_name_the_file(micro_name, micro_state, tmp_path):
    wrong = dict(micro_state)
    wrong["text_projection"] = torch.zeros(64, 16)
    path = tmp_path / "wrong.pt"
    torch.save(wrong, path)
    with pytest.raises(ModelLoadError, match=f"weights file {path} does not fit architecture {micro_name}"):
        load_model(f"{micro_name}:{path}", device="cpu")


def test_local_dir_errors(tmp_path, micro_state):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(f"local-dir:{tmp_path / 'absent'}", device="cpu")
    no_weights = write_local_dir(tmp_path / "no-weights", micro_state)
    (no_weights / "open_clip_model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no weights file"):
        load_model(f"local-dir:{no_weights}", device="cpu")
    (tmp_path / "no-config").mkdir()
    with pytest.raises(ModelLoadError, match="no open_clip_config.json"):
        load_model(f"local-dir:{tmp_path / 'no-config'}", device="cpu")


def test_bundled_model_without_weights_says_how_to_get_them(tmp_path, monkeypatch):
    missing = tmp_path / "modgap-tiny.safetensors"
    monkeypatch.setattr(modgap.zoo, "weights_path", lambda name="modgap-tiny": missing)
    with pytest.raises(ModelLoadError, match="modgap.pretrain") as info:
        load_model("modgap-tiny", device="cpu")
    assert str(missing) in str(info.value)


# -- devices ----------------------------------------------------------------

def _fake_accelerators(monkeypatch, cuda, mps):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize("cuda,mps,expected", [
    (True, True, "cuda"), (False, True, "mps"), (False, False, "cpu"),
])
def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    _fake_accelerators(monkeypatch, cuda, mps)
    assert pick_device("auto") == torch.device(expected)
    assert pick_device(None) == torch.device(expected)


def test_explicit_device_is_honoured(monkeypatch, micro_name, micro_pt):
    _fake_accelerators(monkeypatch, True, True)
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    clip = load_model(f"{micro_name}:{micro_pt}", device="cpu")
    assert clip.device == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in clip.model.parameters())


def test_load_model_auto_on_a_cpu_machine(monkeypatch, micro_name, micro_pt):
    _fake_accelerators(monkeypatch, False, False)
    clip = load_model(f"{micro_name}:{micro_pt}")
    assert clip.device == torch.device("cpu")
    assert Clip(clip.model, clip.preprocess, clip.tokenizer, device="auto").device == torch.device("cpu")


# -- the Clip object --------------------------------------------------------

@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_save_round_trip(clip, micro_name, images, tmp_path, suffix):
    path = clip.save(tmp_path / f"saved{suffix}")
    assert path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    again = load_model(f"{micro_name}:{path}", device="cpu")
    assert torch.equal(again.encode_images(images), clip.encode_images(images))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        clip.save(path)
    clip.save(path, overwrite=True)


def test_copy_is_independent(clip, images):
    before = clip.encode_images(images)
    twin = clip.copy(name="twin")
    assert twin.name == "twin" and twin.preprocess is clip.preprocess and twin.tokenizer is clip.tokenizer
    with torch.no_grad():
        twin.model.visual.proj.mul_(-1)
    assert torch.allclose(twin.encode_images(images), -before, atol=1e-5)
    assert torch.equal(clip.encode_images(images), before)


def test_with_model_wraps_another_model(clip, images):
    other = clip.with_model(clip.model)
    assert other.model is clip.model and other.name == clip.name
    assert torch.equal(other.encode_images(images), clip.encode_images(images))


def test_encoding_keeps_training_mode(clip, images):
    twin = clip.copy()
    twin.model.train()
    twin.encode_images(images)
    twin.encode_texts(["a red circle"])
    assert twin.model.training


def test_embeddings_can_enter_autograd(clip, images):
    emb = clip.encode_images(images, normalize=False)
    w = torch.ones(emb.shape[1], requires_grad=True)
    (emb @ w).sum().backward()
    assert torch.allclose(w.grad, emb.sum(0))
    emb.mul_(2)


def test_low_precision_model_embeds_on_cpu(micro_name, micro_pt, images):
    clip = load_model(f"{micro_name}:{micro_pt}", device="cpu", precision="bf16")
    emb = clip.encode_images(images)
    assert emb.dtype == torch.float32 and emb.shape == (len(images), 32)
    assert np.allclose(emb.norm(dim=1).numpy(), 1, atol=1e-3)
    assert clip.encode_texts(["a red circle"]).shape == (1, 32)
