"""CLIPRefine and RefineObjective on a random-init modgap-tiny: a full fit,
the untouched caller's model and teacher, RaFA's references, determinism,
saving and loading, logging and the parameter checks."""
import copy
import warnings

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from conftest import write_corrupt
from PIL import Image

import modgap
from modgap import data, zoo
from modgap.adapt import clip_refine as refine_mod
from modgap.adapt.base import learning_rate_at
from modgap.adapt.clip_refine import (
    CLIPRefine,
    RefineObjective,
    auto_temperature,
    default_hyperparameters,
    run_refine,
    step_plan,
)
from modgap.embed import pixels_to_tensor


@pytest.fixture(scope="module")
def tiny():
    zoo.register()
    torch.manual_seed(0)
    model = open_clip.create_model("modgap-tiny")
    return modgap.Clip(model, tokenizer=open_clip.get_tokenizer("modgap-tiny"), device="cpu",
                       name="tiny-random", config=open_clip.get_model_config("modgap-tiny"))


@pytest.fixture(scope="module")
def pairs():
    return data.load("shapes-pairs", split="train", n=56, seed=11)


@pytest.fixture(scope="module")
def batch(tiny, pairs):
    return pixels_to_tensor(pairs.images[:8]), tiny.tokenize(pairs.first_captions()[:8])


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def small(tiny, **kw):
    args = dict(epochs=1, batch_size=16, lr=1e-3, warmup=0, holdout=8, progress=False)
    args.update(kw)
    return CLIPRefine(tiny, **args)


def test_one_full_fit_refines_a_copy_and_logs_its_history(tiny, pairs, tmp_path):
    before = state(tiny.model)
    seen = []

    def callback(est, row):
        # the estimator being fitted, its history_ already holding the row
        assert est is ref
        assert est.history_.iloc[-1].to_dict() == pytest.approx(row, nan_ok=True)
        seen.append(row)

    ref = small(tiny, method="clip-refine", log_every=1, callback=callback)
    assert ref.fit(pairs) is ref
    # the caller's model is untouched; the refined copy moved
    assert same_state(before, state(tiny.model))
    assert ref.model_ is not tiny.model
    assert not same_state(before, state(ref.model_))
    assert ref.n_steps_ == (56 - 8) // 16 == 3
    assert not ref.model_.training
    # to_clip wraps the refined model with the original preprocessing and tokenizer
    refined = ref.to_clip()
    assert isinstance(refined, modgap.Clip) and refined.model is ref.model_
    assert refined.preprocess is tiny.preprocess and refined.tokenizer is tiny.tokenizer
    # history: row 0 before training, one row per step after it
    h = ref.history_
    assert list(h["step"]) == [0, 1, 2, 3]
    for col in ("loss", "rafa", "hycd", "centroid_distance", "lr", "epoch", "pairs_seen"):
        assert col in h.columns
    assert np.isnan(h.loc[0, "loss"]) and np.isfinite(h.loc[1:, "loss"]).all()
    w = ref.terms_
    np.testing.assert_allclose(h.loc[1:, "loss"], w["rafa"] * h.loc[1:, "rafa"] + w["hycd"] * h.loc[1:, "hycd"],
                               rtol=1e-6)
    assert np.isfinite(h["centroid_distance"]).all() and (h["centroid_distance"] > 0).all()
    # the small model's default schedule: cosine from the peak over the 3 steps
    assert ref.schedule_ == "cosine" and ref.total_steps_ == 3
    np.testing.assert_allclose(h.loc[1:, "lr"], [1e-3, 0.75e-3, 0.25e-3], rtol=1e-9)
    # the first gap is the untouched model's (a fit stopped at row 0 takes no step);
    # the callback saw row 0 and every step
    probe = small(tiny, method="clip-refine", callback=lambda est, row: False).fit(pairs)
    assert len(probe.history_) == 1 and probe.n_steps_ == 0
    assert probe.history_.loc[0, "centroid_distance"] == pytest.approx(h.loc[0, "centroid_distance"])
    assert [r["step"] for r in seen] == [0, 1, 2, 3]
    assert all({"loss", "rafa", "hycd", "centroid_distance", "lr"} <= set(r) for r in seen)
    # the saved folder loads back through modgap.load_model
    path = ref.save(tmp_path / "refined")
    assert (path / "model" / "open_clip_config.json").is_file()
    loaded = modgap.load_model(str(path), device="cpu")
    texts = pairs.first_captions()[:4]
    torch.testing.assert_close(loaded.encode_texts(texts), refined.encode_texts(texts))
    images = pairs.images[:4]
    torch.testing.assert_close(loaded.encode_images(images), refined.encode_images(images))


def test_callback_returning_false_stops_training(tiny, pairs):
    ref = small(tiny, method="rafa", batch_size=8, callback=lambda est, row: row["step"] < 2).fit(pairs)
    assert ref.n_steps_ == 2
    assert list(ref.history_["step"]) == [0, 1, 2]


def test_same_seed_same_weights_on_cpu_other_seed_other_weights(tiny, pairs):
    a = small(tiny, method="clip-refine", seed=3).fit(pairs)
    b = small(tiny, method="clip-refine", seed=3).fit(pairs)
    c = small(tiny, method="clip-refine", seed=4).fit(pairs)
    assert same_state(state(a.model_), state(b.model_))
    np.testing.assert_array_equal(a.history_["loss"].to_numpy(), b.history_["loss"].to_numpy())
    assert not same_state(state(a.model_), state(c.model_))


def test_fit_leaves_torch_global_random_state_alone(tiny, pairs):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    small(tiny, method="rafa", epochs=1).fit(pairs)
    torch.testing.assert_close(torch.rand(3), expected)


def test_teacher_is_frozen_in_eval_mode_and_never_changes(tiny, batch):
    student, teacher = copy.deepcopy(tiny.model), copy.deepcopy(tiny.model)
    teacher.train()
    before = state(teacher)
    obj = RefineObjective(student, {"rafa": 1.0, "hycd": 1.0}, teacher=teacher)
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    # the module's parameters are the student's only
    assert sum(p.numel() for p in obj.parameters()) == sum(p.numel() for p in student.parameters())
    opt = torch.optim.AdamW(obj.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        loss = obj(*batch, generator=gen)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert same_state(before, state(teacher))
    assert all(p.grad is None for p in teacher.parameters())
    assert not same_state(before, state(student))


def test_rafa_references_are_one_per_pair_shared_and_fresh_each_step(tiny, batch, monkeypatch):
    calls = []
    real = refine_mod.rafa_loss

    def spy(image_feat, text_feat, reference, normalize=False):
        calls.append(reference.detach().clone())
        return real(image_feat, text_feat, reference, normalize=normalize)

    monkeypatch.setattr(refine_mod, "rafa_loss", spy)
    obj = RefineObjective(copy.deepcopy(tiny.model), {"rafa": 1.0})
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        obj(*batch, generator=gen)
        obj(*batch, generator=gen)
    # one reference vector per pair, in the embedding dimension, used for image and text alike
    assert calls[0].shape == (8, tiny.embed_dim)
    assert not torch.equal(calls[0], calls[1])
    # the same generator seed draws the same references
    with torch.no_grad():
        obj(*batch, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(calls[2], calls[0])


def test_self_kd_starts_at_zero_loss_and_hycd_does_not(tiny, pairs):
    kd = small(tiny, method="self-kd", alpha=0.9, log_every=1).fit(pairs)
    assert kd.history_.loc[1, "hycd"] == pytest.approx(0.0, abs=1e-5)
    hy = small(tiny, method="hycd", log_every=1).fit(pairs)
    assert hy.history_.loc[1, "hycd"] > 1e-3


def test_only_the_contrastive_method_trains_the_logit_scale(tiny, pairs):
    scale = tiny.model.logit_scale.detach().clone()
    con = small(tiny, method="contrastive").fit(pairs)
    assert "contrastive" in con.history_.columns and "rafa" not in con.history_.columns
    assert not torch.equal(con.model_.logit_scale.detach(), scale)
    assert con.model_.logit_scale.exp().item() <= 100.0 + 1e-3
    raf = small(tiny, method="rafa").fit(pairs)
    assert torch.equal(raf.model_.logit_scale.detach(), scale)


def test_eval_pairs_and_holdout_zero(tiny, pairs):
    held = data.load("shapes-pairs", split="test", n=10, seed=1)
    ref = small(tiny, method="rafa", holdout=0).fit(pairs, eval_pairs=held)
    assert ref.n_steps_ == 56 // 16
    assert np.isfinite(ref.history_["centroid_distance"]).all()
    off = small(tiny, method="rafa", holdout=0).fit(pairs)
    assert off.history_["centroid_distance"].isna().all()


def test_defaults_follow_model_size(tiny):
    small_hp = default_hyperparameters(tiny.model)
    big = torch.nn.Linear(6000, 6000, device="meta")   # 36M parameters, no memory
    # the reference recipe for large models
    assert default_hyperparameters(big) == {"lr": 1e-6, "batch_size": 512, "epochs": 1, "steps": None,
                                            "temperature": 1.0, "temperature_factor": 1.0, "lambda_rafa": 1.0,
                                            "warmup": 0, "schedule": "constant"}
    assert small_hp.keys() == default_hyperparameters(big).keys()
    assert small_hp["lr"] > 1e-4 and small_hp["temperature"] == "auto" and small_hp["schedule"] == "cosine"
    assert small_hp["temperature_factor"] > 1


def test_lambda_rafa_none_takes_the_model_size_default(tiny, pairs):
    hp = default_hyperparameters(tiny.model)
    est = small(tiny, method="clip-refine", batch_size=32, holdout=0).fit(pairs)
    assert est.terms_ == {"rafa": hp["lambda_rafa"], "hycd": 1.0}
    given = small(tiny, method="clip-refine", batch_size=32, holdout=0, lambda_rafa=2.0).fit(pairs)
    assert given.terms_ == {"rafa": 2.0, "hycd": 1.0}


def test_auto_temperature_is_the_norm_product_over_the_logit_scale(tiny, pairs):
    held = data.load("shapes-pairs", split="test", n=8, seed=1)
    est = small(tiny, method="hycd", temperature="auto", holdout=0).fit(pairs, eval_pairs=held)
    with torch.no_grad():
        img = tiny.model.encode_image(pixels_to_tensor(pairs.images))
        txt = tiny.model.encode_text(tiny.tokenize(pairs.first_captions()))
    expected = (img.norm(dim=1) * txt.norm(dim=1)).mean().item() / tiny.model.logit_scale.exp().item()
    assert est.temperature_ == pytest.approx(expected, rel=1e-4)
    assert auto_temperature(tiny, pairs) == pytest.approx(expected, rel=1e-4)
    assert small(tiny, method="hycd", temperature=2.5).fit(pairs).temperature_ == 2.5
    # left as None on a small model: the size default's multiple of the automatic temperature
    factor = default_hyperparameters(tiny.model)["temperature_factor"]
    default = small(tiny, method="hycd", holdout=0).fit(pairs, eval_pairs=held)
    assert default.temperature_ == pytest.approx(factor * expected, rel=1e-4)


def test_warmup_ramps_the_learning_rate_then_holds_it(tiny, pairs):
    est = small(tiny, method="rafa", batch_size=8, warmup=2, schedule="constant", log_every=1).fit(pairs)
    lr = est.history_["lr"].to_numpy()
    assert np.isnan(lr[0]) and len(lr) == 1 + 48 // 8
    # the ramp reaches the peak at step warmup - 1 = 1: peak * (step + 1) / warmup
    np.testing.assert_allclose(lr[1:3], [1e-3 / 2, 1e-3])
    assert (lr[3:] == 1e-3).all()
    frac = small(tiny, method="rafa", batch_size=8, warmup=0.5).fit(pairs)
    assert frac.warmup_ == round(0.5 * frac.n_steps_)


def test_cosine_schedule_decays_from_the_peak_after_warmup(tiny, pairs):
    est = small(tiny, method="rafa", batch_size=8, warmup=1, schedule="cosine", log_every=1).fit(pairs)
    assert est.schedule_ == "cosine" and est.total_steps_ == est.n_steps_ == 48 // 8
    lr = est.history_["lr"].to_numpy()[1:]
    # one warm-up step reaches the peak at step 0; then half a cosine over the 5 steps after the ramp
    expected = [1e-3] + [1e-3 * 0.5 * (1 + np.cos(np.pi * i / 5)) for i in range(5)]
    np.testing.assert_allclose(lr, expected)
    assert (np.diff(lr[1:]) < 0).all() and lr[-1] > 0
    # the small-model default is the cosine; the reference's constant rate stays one argument away
    assert small(tiny, method="rafa", batch_size=8).fit(pairs).schedule_ == "cosine"


def test_learning_rate_at_ramps_to_the_peak_then_holds_or_decays_to_zero():
    peak = 2e-3
    assert [learning_rate_at(s, 10, peak, warmup=4, schedule="constant") for s in range(10)] == pytest.approx(
        [peak / 4, peak / 2, 3 * peak / 4] + [peak] * 7)
    cos = [learning_rate_at(s, 10, peak, warmup=4, schedule="cosine") for s in range(11)]
    assert cos[:4] == pytest.approx([peak / 4, peak / 2, 3 * peak / 4, peak])
    # the decay starts at the peak on step warmup and reaches zero at step total
    assert cos[4] == pytest.approx(peak) and cos[7] == pytest.approx(peak / 2)
    assert cos[10] == pytest.approx(0.0)
    assert (np.diff(cos[4:]) < 0).all()
    assert learning_rate_at(0, 10, peak) == pytest.approx(peak)
    assert learning_rate_at(0, 10, peak, warmup=0, schedule="constant") == peak


@pytest.mark.parametrize("kw,name", [
    (dict(method="nope"), "method"),
    (dict(alpha=1.5), "alpha"),
    (dict(batch_size=1), "batch_size"),
    (dict(epochs=0), "epochs"),
    (dict(lr=-1.0), "lr"),
    (dict(temperature=0), "temperature"),
    (dict(lambda_kd=-1), "lambda_kd"),
    (dict(holdout=1.5), "holdout"),
    (dict(holdout=60), "holdout"),
    (dict(warmup=-1), "warmup"),
    (dict(schedule="linear"), "schedule"),
    (dict(log_every=0), "log_every"),
])
def test_bad_parameters_name_the_argument(tiny, pairs, kw, name):
    est = small(tiny, **kw)  # the constructor only stores
    with pytest.raises(ValueError, match=name):
        est.fit(pairs)
    assert not hasattr(est, "history_")


@pytest.mark.parametrize("kw, match", [
    (dict(temperature="hot"), "temperature must be a number, got 'hot'"),
    (dict(batch_size=2.5), "batch_size must be an integer or None, got 2.5"),
    (dict(epochs=True), "epochs must be an integer or None, got True"),
    (dict(lr=True), "lr must be a number or None, got True"),
    (dict(alpha=None), "alpha must be a number, got None"),
    (dict(holdout="8"), "holdout must be a count"),
    (dict(warmup=True), "warmup must be a count"),
    (dict(seed=1.0), "seed must be an integer"),
    (dict(callback=3), "callback must be callable"),
])
def test_parameters_of_the_wrong_type_raise_type_error(tiny, pairs, kw, match):
    with pytest.raises(TypeError, match=match):
        small(tiny, **kw).fit(pairs)


def test_wrong_input_types_are_named(tiny, pairs, tmp_path):
    with pytest.raises(TypeError, match="clip"):
        CLIPRefine(tiny.model).fit(pairs)
    with pytest.raises(TypeError, match="pairs"):
        small(tiny).fit(pairs.images)
    with pytest.raises(RuntimeError, match="fit"):
        small(tiny).save(tmp_path / "never")
    with pytest.raises(RuntimeError, match="fit"):
        small(tiny).to_clip()
    assert not (tmp_path / "never").exists()


def test_refine_entry_writes_the_estimator_folder_once(tiny, pairs, tmp_path, monkeypatch):
    out = tmp_path / "r"
    args = dict(method="rafa", epochs=1, batch_size=16, holdout=8, progress=False)
    est = run_refine(tiny, pairs, out=out, **args)
    assert {p.name for p in out.iterdir()} == {"estimator.json", "history.csv", "model", "manifest.json"}
    assert (out / "model" / "open_clip_model.safetensors").is_file()
    assert len(pd.read_csv(out / "history.csv")) == len(est.history_)
    assert CLIPRefine.load(out, tiny).get_params()["method"] == "rafa"
    written = (out / "estimator.json").read_text()

    # the output folder is checked before any work
    def never(self, *a, **kw):
        raise AssertionError("fit ran before the output folder was checked")

    with monkeypatch.context() as m:
        m.setattr(CLIPRefine, "fit", never)
        with pytest.raises(FileExistsError, match="overwrite"):
            run_refine(tiny, pairs, out=out, **args)
        user = tmp_path / "mine"
        user.mkdir()
        (user / "notes.txt").write_text("keep me")
        with pytest.raises(FileExistsError, match="estimator.json"):
            run_refine(tiny, pairs, out=user, overwrite=True, **args)
    assert (out / "estimator.json").read_text() == written
    assert [p.name for p in user.iterdir()] == ["notes.txt"]
    again = run_refine(tiny, pairs, out=out, overwrite=True, **dict(args, method="contrastive"))
    assert CLIPRefine.load(out, tiny).get_params()["method"] == "contrastive"
    assert len(pd.read_csv(out / "history.csv")) == len(again.history_)


def test_pairs_whose_image_cannot_be_read_are_left_out_with_one_warning(tiny, pairs, tmp_path):
    paths = []
    for i, a in enumerate(pairs.images):
        p = tmp_path / f"{i:02d}.png"
        Image.fromarray(a).save(p)
        paths.append(p)
    write_corrupt(paths[5])
    files = data.PairSet(paths, pairs.captions, name="files")
    # eval_pairs keeps the corrupt file in the training set, where every batch draws it once
    with pytest.warns(UserWarning, match="CLIPRefine.fit: skipped 1 of 56") as rec:
        est = small(tiny, method="clip-refine", batch_size=8).fit(files, eval_pairs=pairs.subset(np.arange(8)))
    msgs = [str(w.message) for w in rec if "could not be read" in str(w.message)]
    assert len(msgs) == 1 and str(paths[5]) in msgs[0]
    assert est.skipped_files_ == [paths[5]]
    assert est.n_steps_ == 56 // 8 and np.isfinite(est.history_["loss"].iloc[1:]).all()
    assert est.history_["pairs_seen"].iloc[-1] == 55  # every pair drawn once, the unreadable one left out
    # held out, the corrupt pair is left out of the gap measurement instead
    with pytest.warns(UserWarning, match=r"held-out pairs\): skipped 1 of 8"):
        held = small(tiny, method="contrastive").fit(pairs, eval_pairs=files.subset(np.arange(8)))
    assert held.skipped_files_ == [paths[5]] and np.isfinite(held.history_["centroid_distance"]).all()


@pytest.mark.parametrize(("n", "steps", "epochs", "passes", "too_few"), [
    (2_000, 120, 8, 7.68, True),     # 15 batches a pass: the budget repeats every pair 7.7 times
    (4_000, 120, 4, 3.84, False),
    (7_744, 120, 2, 1.98, False),    # the size the recipe was tuned at: 2 epochs of 60 steps
    (50_000, 120, 1, 0.31, False),   # the budget ends a third into the first pass
])
def test_small_models_train_a_step_budget_whatever_the_size(tiny, n, steps, epochs, passes, too_few):
    hp = default_hyperparameters(tiny.model)
    plan = step_plan(n, hp["batch_size"], hp=hp)
    assert plan["steps"] == steps and plan["epochs"] == epochs and plan["too_few"] is too_few
    assert plan["passes"] == pytest.approx(passes, abs=0.01)
    # given epochs or steps, the budget steps aside
    assert step_plan(n, 128, epochs=1, hp=hp)["steps"] == max(1, n // 128)
    assert step_plan(n, 128, steps=7, hp=hp) == {**step_plan(n, 128, steps=7, hp=hp), "steps": 7, "too_few": False}


def test_large_models_keep_the_reference_epoch():
    plan = step_plan(100_000, 512)
    assert plan == {"steps": 195, "epochs": 1, "per_epoch": 195, "passes": pytest.approx(0.9984), "too_few": False}


def test_the_learning_rate_schedule_runs_over_the_budget(tiny, pairs):
    est = small(tiny, method="rafa", epochs=None, steps=7, batch_size=16, holdout=0, log_every=1,
                lr=1e-4, schedule="cosine", warmup=2).fit(pairs)
    h = est.history_
    assert est.total_steps_ == 7 and est.n_steps_ == 7 and est.epochs_ == 3  # 3 + 3 + 1 batches of 56 pairs
    assert list(h["step"]) == list(range(8))
    lr = h["lr"].to_numpy()[1:]
    assert lr[0] == pytest.approx(0.5e-4) and lr[1] == pytest.approx(1e-4)   # the warm-up's two steps
    assert lr[-1] == pytest.approx(learning_rate_at(6, 7, 1e-4, 2, "cosine")) and lr[-1] < lr[2]


def test_too_few_pairs_for_the_budget_are_said(tiny):
    few = data.load("shapes-pairs", split="train", n=400, seed=3)
    # the callback stops the fit at its first row: the warning comes before any training
    est = CLIPRefine(tiny, holdout=0, progress=False, callback=lambda est, row: False)
    with pytest.warns(UserWarning, match=r"400 training pairs are too few for the recipe's 120 steps of 128 pairs: "
                                         r"it passes over each pair 38.4 times.*within a point from about 3,072 "
                                         r"pairs"):
        est.fit(few)
    assert est.total_steps_ == 120 and est.n_steps_ == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CLIPRefine(tiny, holdout=0, progress=False, steps=120, callback=lambda est, row: False).fit(few)
    with pytest.raises(ValueError, match="epochs or steps, not both"):
        CLIPRefine(tiny, epochs=1, steps=3, progress=False).fit(few)


def test_precision_amp_bf16_trains_in_bf16_and_keeps_fp32_weights(tiny, pairs, monkeypatch):
    seen = []
    real = RefineObjective.forward

    def spy(self, pixels, tokens, generator=None):
        terms = real(self, pixels, tokens, generator)
        seen.append(self.student.encode_image(pixels[:2]).dtype)
        return terms

    monkeypatch.setattr(RefineObjective, "forward", spy)
    fp32 = small(tiny, method="clip-refine", seed=3).fit(pairs)
    assert set(seen) == {torch.float32}
    seen.clear()
    bf16 = small(tiny, method="clip-refine", seed=3, precision="amp_bf16").fit(pairs)
    assert set(seen) == {torch.bfloat16}  # the forward passes ran under bf16 autocast
    assert all(p.dtype == torch.float32 for p in bf16.model_.parameters())
    assert np.isfinite(bf16.history_["loss"].to_numpy()[1:]).all()
    assert not same_state(state(fp32.model_), state(bf16.model_))
    # the same losses, up to low-precision rounding
    np.testing.assert_allclose(bf16.history_["loss"].to_numpy()[1:], fp32.history_["loss"].to_numpy()[1:],
                               rtol=0.02)


def test_precision_outside_open_clips_words_is_refused(tiny, pairs):
    with pytest.raises(ValueError, match="precision"):
        small(tiny, precision="bf16-mixed").fit(pairs)
