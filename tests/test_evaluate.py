"""The world benchmark used for the refinement table, and the model card's tables."""
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import torch

from modgap import evaluate, viz
from modgap.evaluate import WorldBenchmark, caption_recall_at_1


def test_caption_recall_counts_any_matching_caption_string():
    # images 0 and 1 share the caption "a", image 2 has "c"; image 1 looks like "c"
    img = torch.tensor([[1.0, 0, 0], [0, 0.1, 0.9], [0, 0, 1.0]])
    texts, owner = ["a", "a", "c"], np.array([0, 1, 2])
    txt = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]])
    r = caption_recall_at_1(img, txt, texts, owner)
    assert r["t2i_R@1"] == 1.0  # "a" finds image 0, "c" finds image 2
    assert abs(r["i2t_R@1"] - 2 / 3) < 1e-12  # image 1's best string "c" is not its caption


def test_world_benchmark_rows_have_every_column(clip):
    bench = WorldBenchmark(n_pairs=8, n_zero_shot=6, seed=0)
    table = bench.table({"a": clip, "b": clip})
    assert list(table.index) == ["a", "b"]
    for col in ("centroid_distance", "paired_cosine", "zero_shot_photo", "zero_shot_noisy", "i2t_R@1"):
        assert col in table.columns
    np.testing.assert_allclose(table.loc["a"].to_numpy(float), table.loc["b"].to_numpy(float))
    assert 0 <= table.loc["a", "centroid_distance"] <= 2


def test_world_benchmark_names_its_figures_as_gap_report_does_and_plots_with_viz_defaults():
    import modgap

    tiny = modgap.load_model("modgap-tiny", device="cpu")
    table = WorldBenchmark(n_pairs=40, n_zero_shot=20, seed=0).table({"none": tiny, "again": tiny})
    domains = [f"zero_shot_{d}" for d in ("photo", "sketch", "night", "noisy")]
    tasks = [f"photo_{t}" for _, t in evaluate.TASKS]
    assert list(table.columns) == ["centroid_distance", "paired_cosine", "uniformity", "alignment", *domains,
                                   "i2t_R@1", "t2i_R@1", *tasks]
    assert all(re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*(_R@1)?", c) for c in table.columns)
    fractions = table[[*domains, *tasks, "i2t_R@1", "t2i_R@1"]].to_numpy(float)
    assert ((fractions >= 0) & (fractions <= 1)).all()
    assert table.loc["none", "zero_shot_photo"] > 0.5  # the bundled model reads its own domain

    fig = viz.plot_report_comparison(table)
    shown = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert {"centroid_distance", "paired_cosine", "uniformity", "i2t_R@1", *domains} <= set(shown)
    assert set(shown) <= set(table.columns)
    (panel,) = [ax for ax in fig.axes if ax.get_title() == "zero_shot_photo"]
    np.testing.assert_allclose([p.get_height() for p in panel.patches], table["zero_shot_photo"])
    plt.close(fig)


def test_evaluate_main_prints_the_model_card_tables(capsys, monkeypatch):
    load = evaluate.data.load

    def fewer_real_digits(name, **kw):  # the model card reads all 6,797; 40 each keep this test quick
        return load(name, **({"n": 40} if name in evaluate.REAL_DIGITS else {}), **kw)

    monkeypatch.setattr(evaluate.data, "load", fewer_real_digits)
    assert evaluate.main(["--n", "20", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model: modgap-tiny on cpu, n=20, seed=0")
    for title in ("### zero-shot", "### real digits", "### gap"):
        assert title in out
    for label in ("('shapes', 'shape')", "('glyphs', 'digit')", "sketch drop", "mnist", "sklearn-digits",
                  "shapes-pairs", "centroid distance", "linear separability"):
        assert label in out
