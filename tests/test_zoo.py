"""The bundled model: its training script (``modgap.pretrain``) and its shipped weights."""
import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open

import modgap
from modgap import pretrain
from modgap.zoo import weights_path


def test_training_script_runs_a_few_steps_and_its_loss_falls(tmp_path):
    out = tmp_path / "run"
    rc = pretrain.main(["--out", str(out), "--epochs", "1", "--pairs", "320", "--batch-size", "32",
                        "--max-steps", "8", "--eval-n", "0", "--lr", "1e-3", "--threads", "2"])
    assert rc == 0
    log = pd.read_csv(out / "train_log.csv")
    assert len(log) == 8
    assert log["loss"].iloc[-2:].mean() < log["loss"].iloc[:2].mean()
    record = json.loads((out / "train_record.json").read_text())
    assert record["steps"] == 8 and "machine" in record
    clip = modgap.load_model(f"modgap-tiny:{out / 'model.safetensors'}", device="cpu")
    assert clip.encode_texts(["a red circle."]).shape == (1, 128)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt", "modgap": "modgap-tiny"}
        names = list(f.keys())
        assert names and {f.get_tensor(k).dtype for k in names} == {torch.float16}


def test_training_evaluation_names_every_task_and_the_gap():
    clip = modgap.load_model("modgap-tiny", device="cpu")
    ev = pretrain.evaluate(clip.model, clip.tokenizer, n=12)
    assert list(ev) == ["shape_acc", "color_acc", "digit_acc", "mnist_acc", "sklearn-digits_acc", "gap"]
    assert all(0 <= v <= 1 for k, v in ev.items() if k.endswith("_acc")) and 0 < ev["gap"] < 2


def test_zoo_imports_no_other_modgap_module():
    for path in Path(modgap.zoo.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0 and not (node.module or "").startswith("modgap"), path.name
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("modgap") for a in node.names), path.name


def test_training_script_keeps_existing_weights(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"precious")
    with pytest.raises(SystemExit):
        pretrain.main(["--out", str(out), "--max-steps", "1", "--eval-n", "0"])
    assert (out / "model.safetensors").read_bytes() == b"precious"


def test_bundled_weights_ship_with_the_package():
    assert weights_path().is_file()


def test_bundled_model_loads_offline_and_embeds_the_same_twice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    s = modgap.data.load("shapes", n=16)
    a = modgap.load_model("modgap-tiny", device="cpu").encode_images(s)
    b = modgap.load_model("modgap-tiny", device="cpu").encode_images(s)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert a.shape == (16, 128)


def test_bundled_weights_are_small_and_open_clip_reads_them():
    import open_clip

    assert weights_path().stat().st_size <= 20 * 2**20
    modgap.zoo.register()
    model = open_clip.create_model("modgap-tiny", pretrained=str(weights_path()))
    ref = modgap.load_model("modgap-tiny", device="cpu").model
    got, want = model.state_dict(), ref.state_dict()
    assert len(want) > 0 and set(got) == set(want)
    for k, v in want.items():
        assert torch.equal(got[k], v), k


def test_bundled_model_names_training_domain_shapes():
    clip = modgap.load_model("modgap-tiny", device="cpu")
    s = modgap.data.load("shapes", n=300, seed=5)
    acc = modgap.metrics.zero_shot_accuracy(clip.encode_images(s), clip.class_embeddings(s.classnames, s.templates),
                                            s.labels)
    assert acc > 3 / len(s.classnames)
    assert np.isfinite(acc)
