"""The modgap command line."""
import json

import pytest

from modgap import cli


def test_info_prints_versions_device_and_offline_models(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("modgap", "torch", "open_clip", "device", "offline", "modgap-tiny", "data sets", "shapes-pairs"):
        assert word in out


def test_gap_prints_the_report_and_saves_figures(tmp_path, capsys):
    figs = tmp_path / "figs"
    assert cli.main(["gap", "--data", "shapes-pairs", "--n", "60", "--save-figures", str(figs)]) == 0
    out, err = capsys.readouterr()
    assert "centroid_distance" in out and "linear_separability" in out
    # 60 pairs are few, yet the command shows its progress
    assert "images:" in err and "texts:" in err
    assert {p.name for p in figs.iterdir()} >= {"embeddings.png", "similarity.png", "spectrum.png", "gap_shift.png",
                                                "report.csv", "report.json"}
    # the saved report is the printed one
    import json

    import pandas as pd

    table = pd.read_csv(figs / "report.csv", index_col="figure")["value"]
    saved = json.loads((figs / "report.json").read_text())
    assert float(table["centroid_distance"]) == pytest.approx(saved["centroid_distance"])
    assert f"{saved['centroid_distance']:.6f}"[:5] in out
    assert cli.main(["gap", "--data", "shapes-pairs", "--n", "60", "--save-figures", str(figs)]) == 2
    err = capsys.readouterr().err
    assert "--save-figures" in err and "--overwrite" in err and "Traceback" not in err
    before = {p.name: p.stat().st_mtime_ns for p in figs.iterdir()}
    assert cli.main(["gap", "--data", "shapes-pairs", "--n", "60", "--save-figures", str(figs), "--overwrite"]) == 0
    assert {p.name for p in figs.iterdir()} == set(before)
    assert all(p.stat().st_mtime_ns > before[p.name] for p in figs.iterdir())


def test_gap_on_a_labelled_image_set_uses_class_prompts(capsys):
    assert cli.main(["gap", "--data", "shapes", "--domain", "night", "--n", "40"]) == 0
    assert "zero_shot_accuracy" in capsys.readouterr().out


def test_unknown_data_set_is_named(capsys):
    assert cli.main(["gap", "--data", "no-such-set", "--n", "10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("modgap gap: error: --data: unknown data set 'no-such-set'")
    assert "Traceback" not in err
    with pytest.raises(ValueError, match="unknown data set"):
        cli.main(["--debug", "gap", "--data", "no-such-set", "--n", "10"])


def test_reclip_writes_history_and_weights_that_load_back(tmp_path, capsys):
    import modgap
    from modgap.adapt import ReCLIP

    out = tmp_path / "reclip"
    assert cli.main(["reclip", "--data", "shapes", "--domain", "night", "--n", "48", "--epochs", "1",
                     "--k", "10", "--batch-size", "16", "--lr-visual", "0.02", "--lr-text", "0.03",
                     "--min-confident-agreement", "0", "--out", str(out)]) == 0
    assert (out / "history.csv").is_file()
    clip = modgap.load_model("modgap-tiny", device="cpu")
    est = ReCLIP.load(out, clip)
    assert est.predict(modgap.data.load("shapes", n=8, domain="night")).shape == (8,)
    assert (est.k, est.batch_size, est.lr_visual, est.lr_text, est.min_confident_agreement) == (10, 16, 0.02, 0.03, 0.0)
    assert est.adapted_ and len(est.history_) == 2
    capsys.readouterr()
    assert cli.main(["reclip", "--data", "shapes", "--n", "48", "--epochs", "1", "--out", str(out)]) == 2
    assert "not empty; pass --overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["arrays.safetensors", "estimator.json", "history.csv",
                                                      "manifest.json", "text", "visual"]


def test_refine_writes_weights_that_load_model_reads(tmp_path, capsys):
    import modgap

    out = tmp_path / "refined"
    assert cli.main(["refine", "--pairs", "shapes-pairs", "--n", "320", "--method", "clip-refine",
                     "--epochs", "1", "--batch-size", "32", "--holdout", "0.1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"modgap.load_model('{out}')" in printed
    assert f"modgap gap --model {out} --data DATA" in printed
    assert cli.main(["gap", "--model", str(out), "--data", "shapes-pairs", "--n", "20"]) == 0
    assert (out / "history.csv").is_file() and (out / "estimator.json").is_file()
    assert json.loads((out / "estimator.json").read_text())["params"]["holdout"] == 0.1
    refined = modgap.load_model(str(out), device="cpu")
    base = modgap.load_model("modgap-tiny", device="cpu")
    moved = any(not (a == b).all() for a, b in zip(refined.model.parameters(), base.model.parameters()))
    assert moved


def test_python_dash_m_modgap_runs_the_command_line(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "modgap", "info"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0 and "modgap-tiny" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "modgap", "no-such-command"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert bad.returncode == 2 and "no-such-command" in bad.stderr


def test_precision_and_count_flags_reach_the_estimator(tmp_path, capsys):
    out = tmp_path / "bf16"
    assert cli.main(["refine", "--pairs", "shapes-pairs", "--count", "200", "--holdout", "20", "--steps", "2",
                     "--batch-size", "32",
                     "--precision", "amp_bf16", "--device", "cpu", "--out", str(out)]) == 0
    meta = json.loads((out / "estimator.json").read_text())
    assert meta["params"]["precision"] == "amp_bf16"
    assert cli.main(["refine", "--pairs", "shapes-pairs", "--precision", "half", "--out",
                     str(tmp_path / "x")]) == 2
    assert "--precision" in capsys.readouterr().err
