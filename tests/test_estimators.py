"""The estimator contract that ReCLIP and CLIPRefine share
(:mod:`modgap.adapt.base`): scikit-learn parameters and ``clone``, the
``callback(estimator, row)`` that can stop a fit, ``to_clip``, and the
estimator folder that ``save`` writes and ``load`` / ``modgap.load_model``
read. Every test runs on both, with the bundled modgap-tiny on the CPU."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone

import modgap
from modgap import data
from modgap.adapt import CLIPRefine, ReCLIP
from modgap.metrics import centroid_distance


@pytest.fixture(scope="module")
def tiny():
    return modgap.load_model("modgap-tiny", device="cpu")


@pytest.fixture(scope="module")
def target():
    return data.load("shapes", n=60, domain="night", task="shape")


@pytest.fixture(scope="module")
def pairs():
    return data.load("shapes-pairs", n=200)


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(a, b):
    sa, sb = state(a), state(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def without(params, *names):
    return {k: v for k, v in params.items() if k not in names}


class ReCLIPCase:
    """ReCLIP on 60 night-time shapes, one epoch."""

    cls = ReCLIP
    x = "epoch"
    # attribute of each trained model, the default first
    models = {"visual": "visual_model_", "text": "text_model_"}
    files = {"estimator.json", "history.csv", "arrays.safetensors", "visual", "text", "manifest.json"}
    # settings away from the defaults, for clone
    configured = dict(seed=3, lr_visual=0.2, k=10, momentum=0.5)

    def __init__(self, clip, target, pairs):
        self.clip, self.data = clip, target
        self.images = target.images[:4]

    def make(self, **kw):
        # min_confident_agreement=0: the micro model is random; ReCLIP would not adapt it by default
        args = dict(epochs=1, batch_size=32, progress=False, min_confident_agreement=0.0, max_balance_drop=1.0)
        args.update(kw)
        return ReCLIP(self.clip, self.data.classnames, self.data.templates, **args)

    def fit(self, est, **kw):
        return est.fit(self.data, labels=self.data.labels, **kw)

    def output(self, est):
        """What a fitted estimator gives: its logits on the target images."""
        return est.predict_logits(self.data)

    # a run that a callback stops after the first training pass of three
    def stopping(self, callback):
        return self.make(epochs=3, callback=callback)

    def fit_stopping(self, est):
        return self.fit(est)

    stop_rows = [0, 1]

    @staticmethod
    def go_on(row):
        return row["epoch"] < 1

    def check_result_is_the_last_row(self, est):
        last = est.history_.iloc[-1]
        assert est.score(self.data, self.data.labels) == pytest.approx(last.acc)
        assert np.array_equal(est.predict(self.data), est.labels_)
        assert len(est.centroids_) == len(self.data.classnames)

    # set_params: fewer epochs and another learning rate
    changes = dict(epochs=1, lr_visual=0.2)

    def check_changes(self, est):
        assert list(est.history_.epoch) == [0, 1]
        assert (est.epochs_, est.lr_visual_) == (1, 0.2)


class CLIPRefineCase:
    """CLIPRefine (clip-refine) on 200 generated pairs, 32 held out: 5 steps."""

    cls = CLIPRefine
    x = "step"
    models = {"model": "model_"}
    files = {"estimator.json", "history.csv", "model", "manifest.json"}
    configured = dict(seed=3, method="rafa", lr=2e-4, warmup=0.25, log_every=2)

    def __init__(self, clip, target, pairs):
        self.clip, self.pairs = clip, pairs
        self.images = pairs.images[:4]
        self.train, self.held = pairs.subset(np.arange(168)), pairs.subset(np.arange(168, 200))

    def make(self, **kw):
        args = dict(epochs=1, batch_size=32, holdout=32, progress=False)
        args.update(kw)
        return CLIPRefine(self.clip, **args)

    def fit(self, est, **kw):
        return est.fit(self.pairs, **kw)

    def output(self, est):
        """What a fitted estimator gives: its model's image and text embeddings."""
        refined = est.to_clip()
        img = refined.encode_images(self.pairs.images[:16], progress=False)
        txt = refined.encode_texts(self.pairs.first_captions()[:16], progress=False)
        return torch.cat([img, txt]).numpy()

    # a run on 168 pairs (5 steps, a row every 2) that a callback stops at step 4;
    # the gap is measured on the other 32, given as eval_pairs to check it here
    def stopping(self, callback):
        return self.make(log_every=2, callback=callback)

    def fit_stopping(self, est):
        return est.fit(self.train, eval_pairs=self.held)

    stop_rows = [0, 2, 4]

    @staticmethod
    def go_on(row):
        return row["step"] < 4

    def check_result_is_the_last_row(self, est):
        assert est.n_steps_ == 4 and est.total_steps_ == 5
        refined = est.to_clip()
        gap = centroid_distance(refined.encode_images(self.held, progress=False),
                                refined.encode_texts(self.held.first_captions(), progress=False))
        assert gap == pytest.approx(est.history_.centroid_distance.iloc[-1], rel=1e-5)

    changes = dict(epochs=1, lr=3e-4, schedule="constant", method="rafa")

    def check_changes(self, est):
        assert est.epochs_ == 1 and est.n_steps_ == 5
        assert est.lr_ == 3e-4 and est.schedule_ == "constant"
        assert set(est.terms_) == {"rafa"} and "hycd" not in est.history_.columns
        assert (est.history_.lr.iloc[1:] == 3e-4).all()


CASES = {"reclip": ReCLIPCase, "clip-refine": CLIPRefineCase}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tiny, target, pairs):
    return CASES[request.param](tiny, target, pairs)


@pytest.fixture(scope="module")
def fitted(case):
    return case.fit(case.make())


def other_case(case):
    return CLIPRefine if case.cls is ReCLIP else ReCLIP


# -- parameters ---------------------------------------------------------------
def test_the_constructor_only_stores_its_arguments(case):
    est = case.make(batch_size="many", callback=3)
    assert est.get_params()["batch_size"] == "many" and est.get_params()["callback"] == 3
    assert est.get_params()["clip"] is case.clip
    assert not hasattr(est, "history_")
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        case.fit(est)
    with pytest.raises(TypeError, match="callback must be callable"):
        case.fit(est.set_params(batch_size=32))


def test_clone_is_an_unfitted_copy_with_the_same_params(case):
    rows = []

    def callback(est, row):
        rows.append(row)

    est = case.fit(case.make(callback=callback, **case.configured))
    copy = clone(est)
    assert type(copy) is case.cls and copy is not est
    assert copy.get_params() == est.get_params()
    for name, value in case.configured.items():
        assert copy.get_params()[name] == value
    # the pre-trained model is shared, not copied; so is the callback
    assert copy.clip is est.clip and copy.clip.model is est.clip.model
    assert copy.callback is callback
    assert repr(copy) == repr(est)
    assert not hasattr(copy, "history_")
    for attr in case.models.values():
        assert not hasattr(copy, attr)
    with pytest.raises(RuntimeError, match="not fitted"):
        copy.to_clip()
    # fitting the copy repeats the original's fit (deterministic on the CPU)
    n = len(rows)
    case.fit(copy)
    assert len(rows) == 2 * n
    pd.testing.assert_frame_equal(copy.history_.drop(columns="seconds", errors="ignore"),
                                  est.history_.drop(columns="seconds", errors="ignore"))
    np.testing.assert_array_equal(case.output(copy), case.output(est))


def test_set_params_then_fit_uses_the_new_values(case):
    est = case.make(epochs=2)
    assert est.set_params(**case.changes) is est
    for name, value in case.changes.items():
        assert est.get_params()[name] == value
    case.check_changes(case.fit(est))
    with pytest.raises(ValueError, match="Invalid parameter"):
        est.set_params(no_such_setting=1)
    # a bad value set on a fitted estimator is refused by the next fit, not by set_params
    est.set_params(batch_size=2.5)
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        case.fit(est)


# -- callback -----------------------------------------------------------------
def test_fit_takes_no_callback_argument(case):
    with pytest.raises(TypeError, match="callback"):
        case.fit(case.make(), callback=lambda est, row: None)


def test_a_callback_returning_false_stops_the_fit_with_a_usable_result(case, tmp_path):
    rows, seen_by = [], []

    def callback(est, row):
        seen_by.append(est)
        rows.append(row)
        return case.go_on(row)

    est = case.stopping(callback)
    assert case.fit_stopping(est) is est
    # the callback saw every row as it came, and the history ends at the row that stopped it
    assert all(e is est for e in seen_by)
    assert [r[case.x] for r in rows] == case.stop_rows
    assert list(est.history_[case.x]) == case.stop_rows
    # ("kept", which ReCLIP adds once the fit knows it, is no part of a row as it comes)
    pd.testing.assert_frame_equal(pd.DataFrame(rows), est.history_.drop(columns="kept", errors="ignore"))
    # the result is the model the last row measured, and it works
    case.check_result_is_the_last_row(est)
    for name, attr in case.models.items():
        model = est.to_clip(name)
        assert model.model is getattr(est, attr) and not model.model.training
        assert torch.isfinite(model.encode_images(case.images, progress=False)).all()
    # ... and it saves and loads
    est.save(tmp_path / "stopped")
    loaded = case.cls.load(tmp_path / "stopped", case.clip)
    pd.testing.assert_frame_equal(loaded.history_, est.history_)
    np.testing.assert_array_equal(case.output(loaded), case.output(est))


# -- to_clip ------------------------------------------------------------------
def test_to_clip_wraps_each_trained_model(case, fitted):
    default = next(iter(case.models))
    assert fitted.to_clip().model is getattr(fitted, case.models[default])
    for name, attr in case.models.items():
        refined = fitted.to_clip(name)
        assert isinstance(refined, modgap.Clip) and refined.model is getattr(fitted, attr)
        assert refined.preprocess is case.clip.preprocess and refined.tokenizer is case.clip.tokenizer
        assert refined.model is not case.clip.model
    with pytest.raises(ValueError, match="model must be one of"):
        fitted.to_clip("nope")


# -- save and load ------------------------------------------------------------
def test_save_then_load_round_trips(case, fitted, tmp_path):
    path = fitted.save(tmp_path / "est")
    assert path == tmp_path / "est"
    assert {p.name for p in path.iterdir()} == case.files
    meta = json.loads((path / "estimator.json").read_text())
    assert meta["estimator"] == case.cls.__name__ and meta["models"] == list(case.models)
    for name in case.models:
        assert (path / name / "open_clip_config.json").is_file()
        assert (path / name / "open_clip_model.safetensors").is_file()

    loaded = case.cls.load(path, case.clip)
    assert type(loaded) is case.cls and loaded.clip is case.clip
    assert without(loaded.get_params(), "callback") == without(fitted.get_params(), "callback")
    pd.testing.assert_frame_equal(loaded.history_, fitted.history_)
    for attr in case.models.values():
        assert same_state(getattr(loaded, attr), getattr(fitted, attr))
    np.testing.assert_array_equal(case.output(loaded), case.output(fitted))


def test_load_without_clip_puts_the_saved_default_model_in_its_place(case, fitted, tmp_path):
    path = fitted.save(tmp_path / "est")
    loaded = case.cls.load(path)
    assert isinstance(loaded.clip, modgap.Clip)
    default = getattr(fitted, next(iter(case.models.values())))
    assert same_state(loaded.clip.model, default)
    pd.testing.assert_frame_equal(loaded.history_, fitted.history_)
    np.testing.assert_array_equal(case.output(loaded), case.output(fitted))


def test_load_model_reads_the_saved_models(case, fitted, tmp_path, pairs):
    path = fitted.save(tmp_path / "est")
    images, texts = pairs.images[:8], pairs.first_captions()[:8]
    for name, spec in [(None, str(path))] + [(n, f"local-dir:{path / n}") for n in case.models]:
        loaded = modgap.load_model(spec, device="cpu")
        refined = fitted.to_clip(name)
        assert same_state(loaded.model, refined.model)
        torch.testing.assert_close(loaded.encode_images(images, progress=False),
                                   refined.encode_images(images, progress=False))
        torch.testing.assert_close(loaded.encode_texts(texts, progress=False),
                                   refined.encode_texts(texts, progress=False))


def test_save_replaces_only_its_own_folder_and_only_when_told(case, fitted, tmp_path):
    path = fitted.save(tmp_path / "est")
    written = (path / "estimator.json").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fitted.save(path)
    assert (path / "estimator.json").read_bytes() == written
    (path / "stale.txt").write_text("from an earlier run")
    assert fitted.save(path, overwrite=True) == path
    assert {p.name for p in path.iterdir()} == case.files  # replaced as a whole
    case.cls.load(path, case.clip)

    # a folder that modgap did not write is never replaced
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError):
            fitted.save(user, overwrite=overwrite)
    assert [p.name for p in user.iterdir()] == ["notes.txt"]
    assert (user / "notes.txt").read_text() == "keep me"
    # nor a file; an empty folder is fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        fitted.save(tmp_path / "file", overwrite=True)
    (tmp_path / "empty").mkdir()
    fitted.save(tmp_path / "empty")
    assert {p.name for p in (tmp_path / "empty").iterdir()} == case.files
    # no temporary folder is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "est", "file", "mine"]


def test_a_failed_save_leaves_the_folder_as_it_was(case, fitted, tmp_path, monkeypatch):
    path = fitted.save(tmp_path / "est")
    before = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}

    def full_disk(*args, **kw):
        raise OSError("no space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    with pytest.raises(OSError, match="no space"):
        fitted.save(path, overwrite=True)
    with pytest.raises(OSError, match="no space"):
        fitted.save(tmp_path / "new")
    monkeypatch.undo()
    assert {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["est"]


def test_load_reads_only_a_folder_its_own_class_wrote(case, fitted, tmp_path):
    path = fitted.save(tmp_path / "est")
    other = other_case(case)
    with pytest.raises(ValueError, match=f"holds a {case.cls.__name__}, not a {other.__name__}"):
        other.load(path)
    with pytest.raises(FileNotFoundError, match="estimator.json"):
        case.cls.load(tmp_path)


def test_save_before_fit_says_so(case, tmp_path):
    with pytest.raises(RuntimeError, match="not fitted"):
        case.make().save(tmp_path / "never")
    assert not (tmp_path / "never").exists()
