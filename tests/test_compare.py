"""Every closer side by side on the bundled model, at tiny sizes."""
import pytest

import modgap
from modgap import data, metrics


@pytest.fixture(scope="module")
def world():
    clip = modgap.load_model("modgap-tiny", device="cpu")
    calibration = data.load("shapes-pairs", split="train", n=160, seed=1)
    evaluation = data.load("shapes-pairs", split="test", n=80, seed=0)
    sets = {d: data.load("shapes", split="test", n=48, seed=0, task="shape", domain=d) for d in ("photo", "night")}
    return clip, calibration, evaluation, sets


def test_one_row_per_method_with_gap_figures_accuracy_and_cost(world):
    clip, calibration, evaluation, sets = world
    table = modgap.compare_closers(clip, calibration, evaluation, sets, reclip_params={"epochs": 1, "k": 5},
                                   refine_params={"epochs": 1, "batch_size": 32, "holdout": 0})
    assert list(table.index) == list(modgap.adapt.compare.METHOD_NAMES)
    for col in ("centroid_distance", "relative_modality_gap", "linear_separability", "i2t_R@1", "t2i_R@1",
                "zero_shot_photo", "zero_shot_night", "seconds", "needs_training", "needs_target_images"):
        assert col in table.columns, col
    img = clip.encode_images(evaluation)
    txt = clip.encode_texts(evaluation.first_captions())
    none = table.loc["none"]
    assert none["centroid_distance"] == pytest.approx(metrics.centroid_distance(img, txt))
    assert none["relative_modality_gap"] == pytest.approx(metrics.relative_modality_gap(img, txt))
    for name in ("mean-centering", "standardization", "gap-shift"):
        assert table.loc[name, "centroid_distance"] < 0.5 * none["centroid_distance"], name
        assert not table.loc[name, "needs_training"] and not table.loc[name, "needs_target_images"]
    assert table.loc["reclip", "needs_target_images"] and table.loc["clip-refine", "needs_training"]
    assert not table.loc["clip-refine", "needs_target_images"]
    assert (table[["zero_shot_photo", "zero_shot_night"]].to_numpy() <= 1).all()
    # the original model is left as it was
    assert metrics.centroid_distance(clip.encode_images(evaluation), txt) == pytest.approx(
        none["centroid_distance"])


def test_a_subset_of_methods_and_clear_errors(world):
    clip, calibration, evaluation, sets = world
    table = modgap.compare_closers(clip, calibration, evaluation, sets, methods=["none", "gap-shift"],
                                   gap_shift_delta=0.0)
    assert list(table.index) == ["none", "gap-shift"]
    # a shift of zero only renormalises: the figures stay those of the model
    assert table.loc["gap-shift", "centroid_distance"] == pytest.approx(table.loc["none", "centroid_distance"],
                                                                        abs=1e-6)
    with pytest.raises(ValueError, match="methods must be one of"):
        modgap.compare_closers(clip, calibration, evaluation, sets, methods=["whitening"])
    with pytest.raises(ValueError, match="zero_shot is empty"):
        modgap.compare_closers(clip, calibration, evaluation, {}, methods=["none"])
