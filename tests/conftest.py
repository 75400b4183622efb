"""Shared fixtures: a micro open_clip model (random weights, built here) in
every form ``load_model`` reads, and small image sets.

No test downloads anything: the Hugging Face Hub is switched to offline mode
before open_clip is imported.
"""
import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)

MICRO = "mg-test-micro"
MICRO_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
MICRO_PREPROCESS = {
    "size": 32,
    "mode": "RGB",
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
    "fill_color": 0,
}


@pytest.fixture(scope="session")
def micro_dir(tmp_path_factory):
    """A folder holding the micro config, registered with open_clip."""
    d = tmp_path_factory.mktemp("micro")
    cfg = d / f"{MICRO}.json"
    cfg.write_text(json.dumps(MICRO_CFG))
    open_clip.add_model_config(cfg)
    return d


@pytest.fixture(scope="session")
def micro_name(micro_dir):
    """The architecture name of the micro model, known to open_clip."""
    return MICRO


@pytest.fixture(scope="session")
def micro_state(micro_name):
    """The weights every micro-model file below holds."""
    torch.manual_seed(0)
    model = open_clip.create_model(micro_name)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="session")
def micro_pt(micro_dir, micro_state):
    path = micro_dir / "micro.pt"
    torch.save(micro_state, path)
    return path


@pytest.fixture(scope="session")
def micro_safetensors(micro_dir, micro_state):
    from safetensors.torch import save_file

    path = micro_dir / "micro.safetensors"
    save_file({k: v.contiguous() for k, v in micro_state.items()}, str(path))
    return path


def write_local_dir(folder, state):
    """An open_clip ``local-dir:`` folder: config JSON and safetensors weights."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": MICRO_CFG, "preprocess_cfg": MICRO_PREPROCESS})
    )
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "open_clip_model.safetensors"))
    return folder


@pytest.fixture(scope="session")
def micro_local_dir(micro_dir, micro_state):
    return write_local_dir(micro_dir / "local", micro_state)


@pytest.fixture(scope="session")
def clip(micro_name, micro_safetensors):
    """The micro model loaded through ``load_model`` on the CPU. Shared by
    the whole session: tests that change weights work on ``clip.copy()``."""
    from modgap import load_model

    return load_model(f"{micro_name}:{micro_safetensors}", device="cpu")


@pytest.fixture(scope="session")
def images():
    """24 generated uint8 images at the model's input size, [24, 32, 32, 3]."""
    from modgap import data

    return data.load("shapes", n=24, seed=3).images


def write_png(path, seed, size=(20, 24)):
    """A small random RGB PNG (width, height = size)."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def write_corrupt(path):
    """A file with an image suffix that no decoder can read."""
    path.write_bytes(b"this is not an image at all")
    return path


@pytest.fixture
def class_folder(tmp_path):
    """``root/circle/*.png`` (3 images) and ``root/square/*.png`` (2 images)."""
    root = tmp_path / "classes"
    for k, (cls, n) in enumerate((("circle", 3), ("square", 2))):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            write_png(root / cls / f"{i}.png", seed=100 * k + i)
    return root
