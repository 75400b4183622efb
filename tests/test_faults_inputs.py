"""User mistakes named in modgap's words before they reach open_clip, torch,
safetensors or str.format: preprocessed tensors of the wrong size, bad
templates, unreadable weights files, devices this machine lacks, bare paths
given as specs, and a Hub that cannot be reached (probed, never contacted)."""
import json
import os
import time
from pathlib import Path

import huggingface_hub.constants as hf_constants
import numpy as np
import pytest
import torch
from conftest import MICRO_CFG, MICRO_PREPROCESS, write_local_dir

import modgap.models
import modgap.zoo
from modgap import ModelLoadError, load_model, pick_device
from modgap.adapt.reclip import ReCLIP
from modgap.data import ImageSet, PairSet
from modgap.validation import check_templates

# -- 1. preprocessed tensors at the wrong size --------------------------------


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (1, 3, 16, 16), (2, 3, 32, 48), (3, 3, 224, 224)])
def test_float_tensor_of_another_size_is_named(clip, shape):
    with pytest.raises(ValueError, match=r"^images: a float tensor") as info:
        clip.encode_images(torch.zeros(shape))
    msg = str(info.value)
    assert "32x32" in msg and f"{shape[2]}x{shape[3]}" in msg and "clip.image_size" in msg
    assert "uint8" in msg and "PIL" in msg and "file paths" in msg


def test_pixels_at_checks_the_tensor_size_too(clip):
    from modgap import embed

    with pytest.raises(ValueError, match=r"images: .* 32x32 .* 64x64"):
        embed.pixels_at(clip, "tensor", torch.zeros(2, 3, 64, 64), [0, 1])


def test_uint8_images_of_another_size_are_still_resized(clip, images):
    big = np.repeat(np.repeat(images[:2], 2, axis=1), 2, axis=2)
    assert clip.encode_images(big).shape == (2, clip.embed_dim)


# -- 2. templates ---------------------------------------------------------------

BAD_TEMPLATES = [
    ("a {} and a {}.", r"has 2 '\{\}' slots"),
    ("a photo of {name}.", r"named field '\{name\}'"),
    ("a photo of {0}.", r"numbered field '\{0\}'"),
    ("a photo of a {.", "unbalanced brace"),
    ("a photo of a }.", "unbalanced brace"),
    ("a photo.", r"has no '\{\}'"),
    ("a {{}} photo.", r"has no '\{\}'"),
    ("a {:>9} photo.", r"the field '\{:>9\}'"),
]


@pytest.mark.parametrize("template,match", BAD_TEMPLATES)
def test_check_templates_names_the_template_and_the_rule(template, match):
    with pytest.raises(ValueError, match=match) as info:
        check_templates(["a photo of a {}.", template])
    msg = str(info.value)
    assert msg.startswith(f"templates: {template!r}")
    assert "exactly one '{}'" in msg and "'{{'" in msg and "'}}'" in msg


@pytest.mark.parametrize("given,expected", [
    ("a {}.", ["a {}."]),
    (("a {}.", "the {{literal}} {}"), ["a {}.", "the {{literal}} {}"]),
])
def test_check_templates_accepts(given, expected):
    assert check_templates(given) == expected


@pytest.mark.parametrize("given,error,match", [
    ([], ValueError, "templates is empty"),
    (None, TypeError, "templates must be a list of strings"),
    (["a {}", 3], TypeError, "templates must hold strings only"),
])
def test_check_templates_kinds(given, error, match):
    with pytest.raises(error, match=match):
        check_templates(given)


@pytest.mark.parametrize("template,match", BAD_TEMPLATES[:4])
def test_class_embeddings_check_templates(clip, template, match):
    with pytest.raises(ValueError, match=match) as info:
        clip.class_embeddings(["circle", "star"], [template])
    assert repr(template) in str(info.value)


@pytest.mark.parametrize("template,match", BAD_TEMPLATES[:4])
def test_image_and_pair_sets_check_templates(images, template, match):
    with pytest.raises(ValueError, match=match) as info:
        ImageSet(images[:2], np.array([0, 1]), ["circle", "star"], [template], name="mine")
    assert str(info.value).startswith(f"templates of ImageSet 'mine': {template!r}")
    with pytest.raises(ValueError, match=match):
        PairSet(images[:2], ["a", "b"], name="p", templates=[template])


def test_a_single_template_string_is_one_template(images, clip):
    assert ImageSet(images[:2], templates="a {} here").templates == ["a {} here"]
    one = clip.class_embeddings(["circle"], "a {} here")
    assert torch.allclose(one, clip.encode_texts(["a circle here"]), atol=1e-5)


@pytest.mark.parametrize("template,match", BAD_TEMPLATES[:3])
def test_reclip_checks_templates(clip, template, match):
    est = ReCLIP(clip, ["circle", "star"], [template], progress=False)
    with pytest.raises(ValueError, match=match):
        est._validate_params()


# -- 3. weights files that cannot be read ---------------------------------------

def _corrupt(path, how, source=None):
    if how == "garbage":
        path.write_bytes(b"this is not a weights file" * 8)
    elif how == "empty":
        path.write_bytes(b"")
    else:
        data = source.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_unreadable_weights_file_is_named(micro_name, micro_pt, micro_safetensors, tmp_path, suffix, how):
    source = micro_safetensors if suffix == ".safetensors" else micro_pt
    path = _corrupt(tmp_path / f"w{suffix}", how, source)
    with pytest.raises(ModelLoadError, match="cannot be read") as info:
        load_model(f"{micro_name}:{path}", device="cpu")
    msg = str(info.value)
    assert f"weights file {path}" in msg and "download it again" in msg and "save it again" in msg
    assert info.value.__cause__ is not None


def test_bundled_model_with_a_corrupt_file_names_it(tmp_path, monkeypatch):
    bad = _corrupt(tmp_path / "modgap-tiny.safetensors", "garbage")
    monkeypatch.setattr(modgap.zoo, "weights_path", lambda name="modgap-tiny": bad)
    with pytest.raises(ModelLoadError, match=f"weights file {bad} .*cannot be read"):
        load_model("modgap-tiny", device="cpu")
    with pytest.raises(ModelLoadError, match=f"weights file {bad} .*cannot be read"):
        load_model(f"modgap-tiny:{bad}", device="cpu")


def test_local_dir_with_a_corrupt_file_names_it(tmp_path, micro_state):
    folder = write_local_dir(tmp_path / "saved", micro_state)
    weights = folder / "open_clip_model.safetensors"
    _corrupt(weights, "truncated", weights)
    for spec in (f"local-dir:{folder}", str(folder)):
        with pytest.raises(ModelLoadError, match=f"weights file {weights} .*cannot be read"):
            load_model(spec, device="cpu")


# -- 4. devices this machine lacks ---------------------------------------------

def _machine(monkeypatch, cuda: int, mps: bool):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize("device,cuda,mps,match", [
    ("cuda", 0, False, "asks for a CUDA GPU"),
    ("cuda:0", 0, False, "asks for a CUDA GPU"),
    ("cuda:1", 1, False, "asks for CUDA GPU 1, but torch sees 1"),
    (torch.device("cuda", 3), 2, False, "asks for CUDA GPU 3"),
    ("mps", 0, False, "asks for Apple's MPS"),
    ("gpu", 0, False, "not a device name torch knows"),
    ("cuda:x", 1, False, "not a device name torch knows"),
])
def test_missing_device_is_named(monkeypatch, device, cuda, mps, match):
    _machine(monkeypatch, cuda, mps)
    with pytest.raises(ValueError, match=match) as info:
        pick_device(device)
    msg = str(info.value)
    assert msg.startswith(f"device={device!r}")
    assert "this machine has" in msg and "'auto'" in msg and "'cpu'" in msg
    assert ("has: cpu, cuda:0" in msg) == (cuda > 0)


def test_devices_this_machine_has_are_taken(monkeypatch):
    _machine(monkeypatch, 2, True)
    assert pick_device("cuda:1") == torch.device("cuda", 1)
    assert pick_device("mps") == torch.device("mps")
    assert pick_device(" AUTO ") == torch.device("cuda")


def test_load_model_checks_the_device_first(monkeypatch, micro_name, micro_pt):
    _machine(monkeypatch, 0, False)
    with pytest.raises(ValueError, match="device='cuda'"):
        load_model(f"{micro_name}:{micro_pt}", device="cuda")


def test_device_of_the_wrong_kind():
    with pytest.raises(TypeError, match="device must be"):
        pick_device(["cpu"])


# -- 5. bare paths given as specs -------------------------------------------------

@pytest.mark.parametrize("make", ["file", "missing-file", "relative", "folder", "home"])
def test_bare_path_spec_says_which_forms_take_a_path(tmp_path, monkeypatch, micro_safetensors, make):
    monkeypatch.chdir(tmp_path)
    if make == "file":
        spec = str(micro_safetensors)
    elif make == "missing-file":
        spec = str(tmp_path / "model.safetensors")
    elif make == "relative":
        spec = "./weights.pt"
    elif make == "folder":
        (tmp_path / "not-a-model").mkdir()
        spec = str(tmp_path / "not-a-model")
    else:
        spec = "~/no-such-model-folder"
    with pytest.raises(ValueError, match=r"looks like a path") as info:
        load_model(spec, device="cpu")
    msg = str(info.value)
    assert repr(spec) in msg
    assert "'ARCH:/path/weights.safetensors'" in msg and "'local-dir:/path/folder'" in msg and "Clip.save()" in msg
    if make == "folder":
        assert "not a saved model" in msg


def test_architecture_names_with_a_slash_still_get_close_matches():
    with pytest.raises(ValueError, match="unknown architecture 'ViT-B/32'.*'ViT-B-32'"):
        load_model("ViT-B/32", device="cpu")


# -- 6. the Hub: offline set, or probed once --------------------------------------

@pytest.fixture
def hub_unset(tmp_path, monkeypatch):
    """An empty Hugging Face cache with HF_HUB_OFFLINE unset; the probe of
    the Hub is recorded and answers as each test says (never the network)."""
    hub = tmp_path / "hf-home" / "hub"
    hub.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(hub.parent))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HOME", str(hub.parent))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    calls = []

    def probe(answer):
        def fake(timeout=modgap.models.HUB_PROBE_TIMEOUT):
            calls.append(timeout)
            return answer
        monkeypatch.setattr(modgap.models, "_hub_reachable", fake)
        return calls

    return probe


@pytest.mark.parametrize("spec", ["ViT-B-32:laion2b_s34b_b79k", "hf-hub:acme/not-cached"])
def test_unreachable_hub_fails_fast_from_the_cache(hub_unset, monkeypatch, spec):
    import open_clip

    calls = hub_unset(False)
    seen = {}

    def fake_create(*args, **kwargs):
        seen["offline"] = (hf_constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE"))
        raise RuntimeError("not in the local cache")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fake_create)
    with pytest.raises(ModelLoadError, match="did not answer within 3 s") as info:
        load_model(spec, device="cpu")
    assert calls == [3.0]
    assert seen["offline"] == (True, "1")
    assert hf_constants.HF_HUB_OFFLINE is False and "HF_HUB_OFFLINE" not in os.environ
    assert f"could not load model {spec!r}" in str(info.value)


def test_unreachable_hub_with_nothing_cached_fails_in_seconds(hub_unset):
    calls = hub_unset(False)
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="did not answer within 3 s"):
        load_model("ViT-B-32:laion2b_s34b_b79k", device="cpu")
    assert calls == [3.0] and time.perf_counter() - start < 10


def test_unreachable_hub_still_loads_a_cached_repo(hub_unset, micro_state, tmp_path):
    from safetensors.torch import save
    from test_models import add_to_hub_cache

    calls = hub_unset(False)
    config = json.dumps({"model_cfg": MICRO_CFG, "preprocess_cfg": MICRO_PREPROCESS}).encode()
    weights = save({k: v.contiguous() for k, v in micro_state.items()})
    add_to_hub_cache(Path(hf_constants.HF_HUB_CACHE), "acme/micro-clip",
                     {"open_clip_config.json": config, "open_clip_model.safetensors": weights})
    clip = load_model("hf-hub:acme/micro-clip", device="cpu")
    assert calls == [3.0]
    assert torch.equal(clip.model.state_dict()["logit_scale"], micro_state["logit_scale"])


def test_hf_hub_offline_set_skips_the_probe(hub_unset, monkeypatch):
    calls = hub_unset(True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE=1 is set, so only the local cache was searched"):
        load_model("ViT-B-32:laion2b_s34b_b79k", device="cpu")
    assert calls == [] and time.perf_counter() - start < 10
    assert hf_constants.HF_HUB_OFFLINE is False


def test_reachable_hub_is_left_to_open_clip(hub_unset, monkeypatch):
    import open_clip

    calls = hub_unset(True)
    seen = {}

    def fake_create(*args, **kwargs):
        seen["offline"] = hf_constants.HF_HUB_OFFLINE
        raise RuntimeError("download failed")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fake_create)
    with pytest.raises(ModelLoadError) as info:
        load_model("ViT-B-32:laion2b_s34b_b79k", device="cpu")
    assert calls == [3.0] and seen["offline"] is False
    assert "did not answer" not in str(info.value)


def test_local_files_never_probe_the_hub(hub_unset, micro_name, micro_pt):
    calls = hub_unset(False)
    load_model(f"{micro_name}:{micro_pt}", device="cpu")
    assert calls == []


def test_probe_reports_an_unreachable_endpoint_quickly(monkeypatch):
    import urllib.request

    def refuse(*args, **kwargs):
        raise OSError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    start = time.perf_counter()
    assert modgap.models._hub_reachable(timeout=1.0) is False
    assert time.perf_counter() - start < 1.5
