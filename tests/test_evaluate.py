"""The world benchmark used for the refinement table."""
import numpy as np
import torch

from modgap.evaluate import WorldBenchmark, caption_recall_at_1


def test_caption_recall_counts_any_matching_caption_string():
    # images 0 and 1 share the caption "a", image 2 has "c"; image 1 looks like "c"
    img = torch.tensor([[1.0, 0, 0], [0, 0.1, 0.9], [0, 0, 1.0]])
    texts, owner = ["a", "a", "c"], np.array([0, 1, 2])
    txt = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]])
    r = caption_recall_at_1(img, txt, texts, owner)
    assert r["t2i R@1"] == 100.0  # "a" finds image 0, "c" finds image 2
    assert abs(r["i2t R@1"] - 200 / 3) < 1e-9  # image 1's best string "c" is not its caption


def test_world_benchmark_rows_have_every_column(clip):
    bench = WorldBenchmark(n_pairs=8, n_zero_shot=6, seed=0)
    table = bench.table({"a": clip, "b": clip})
    assert list(table.index) == ["a", "b"]
    for col in ("centroid distance", "paired cosine", "zero-shot photo", "zero-shot noisy", "i2t R@1"):
        assert col in table.columns
    np.testing.assert_allclose(table.loc["a"].to_numpy(float), table.loc["b"].to_numpy(float))
    assert 0 <= table.loc["a", "centroid distance"] <= 2
