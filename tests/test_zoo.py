"""The bundled model: its training script and, once shipped, its weights."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

import modgap
from modgap.zoo import train, weights_path


def test_training_script_runs_a_few_steps_and_its_loss_falls(tmp_path):
    out = tmp_path / "run"
    rc = train.main(["--out", str(out), "--epochs", "1", "--pairs", "320", "--batch-size", "32",
                     "--max-steps", "8", "--eval-n", "0", "--lr", "1e-3", "--threads", "2"])
    assert rc == 0
    log = pd.read_csv(out / "train_log.csv")
    assert len(log) == 8
    assert log["loss"].iloc[-2:].mean() < log["loss"].iloc[:2].mean()
    record = json.loads((out / "train_record.json").read_text())
    assert record["steps"] == 8 and "machine" in record
    clip = modgap.load_model(f"modgap-tiny:{out / 'model.safetensors'}", device="cpu")
    assert clip.encode_texts(["a red circle."]).shape == (1, 128)


def test_training_script_keeps_existing_weights(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"precious")
    with pytest.raises(SystemExit):
        train.main(["--out", str(out), "--max-steps", "1", "--eval-n", "0"])
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
    for (k, v), (k2, v2) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_bundled_model_names_training_domain_shapes():
    clip = modgap.load_model("modgap-tiny", device="cpu")
    s = modgap.data.load("shapes", n=300, seed=5)
    acc = modgap.metrics.zero_shot_accuracy(clip.encode_images(s), clip.class_embeddings(s.classnames, s.templates),
                                            s.labels)
    assert acc > 3 / len(s.classnames)
    assert np.isfinite(acc)
