"""Nothing lost: saves of several files are atomic as a whole and carry a
manifest that loading checks; training that diverges stops, keeps the last
good weights and says so."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import torch

import modgap
from modgap.adapt import CLIPRefine, ReCLIP
from modgap.adapt.base import DivergenceError


@pytest.fixture(scope="module")
def clip():
    return modgap.load_model("modgap-tiny", device="cpu")


@pytest.fixture(scope="module")
def target():
    return modgap.data.load("shapes", n=48, domain="night", task="shape")


@pytest.fixture(scope="module")
def two_runs(clip, target, tmp_path_factory):
    """Two fitted ReCLIPs (seeds 0 and 1), saved."""
    root = tmp_path_factory.mktemp("runs")
    for seed in (0, 1):
        ReCLIP(clip, target.classnames, target.templates, epochs=1, k=5, seed=seed,
               progress=False).fit(target).save(root / f"seed{seed}")
    return root


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


# -- the manifest ---------------------------------------------------------------
@pytest.mark.parametrize(("tamper", "match"), [
    (lambda run: (run / "history.csv").write_text("epoch\n0\n"), "history.csv is not the file this run saved"),
    (lambda run: (run / "visual" / "open_clip_model.safetensors").unlink(),
     "visual/open_clip_model.safetensors is missing"),
    (lambda run: (run / "arrays.safetensors").write_bytes(b"\0" * 10), "arrays.safetensors is not the file"),
    (lambda run: (run / "manifest.json").write_text("{not json"), "manifest.json cannot be read"),
    (lambda run: (run / "manifest.json").unlink(), "has no manifest.json"),
])
def test_load_refuses_a_folder_whose_files_do_not_belong_together(two_runs, tmp_path, tamper, match):
    run = _copy(two_runs / "seed0", tmp_path / "run")
    tamper(run)
    with pytest.raises(ValueError, match=match):
        ReCLIP.load(run)
    with pytest.raises(ValueError, match=match):
        modgap.load_model(str(run))


def test_load_refuses_a_folder_mixing_two_runs(two_runs, tmp_path):
    run = _copy(two_runs / "seed0", tmp_path / "run")
    other = two_runs / "seed1"
    for name in ("visual/open_clip_model.safetensors", "history.csv"):
        (run / name).write_bytes((other / name).read_bytes())
    with pytest.raises(ValueError, match="is not the file this run saved"):
        ReCLIP.load(run)


def test_a_clip_saved_as_a_folder_is_checked_by_load_model(clip, tmp_path):
    folder = clip.save(tmp_path / "tiny")
    assert (folder / "manifest.json").is_file()
    assert modgap.load_model(str(folder)).embed_dim == clip.embed_dim
    (folder / "open_clip_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="open_clip_model.safetensors is not the file"):
        modgap.load_model(str(folder))


# -- kill -9 in the middle of a save -----------------------------------------------
_SAVER = textwrap.dedent("""
    import sys
    from modgap.adapt import ReCLIP
    est = ReCLIP.load(sys.argv[1])
    print("ready", flush=True)
    while True:
        est.save(sys.argv[2], overwrite=True)
""")


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.45, 0.8, 1.3])
def test_a_save_killed_at_any_moment_leaves_one_whole_run(two_runs, tmp_path, delay):
    """The old run (seed 0) is overwritten in a loop by the new one (seed 1)
    in a child process, killed with SIGKILL after ``delay`` seconds: the
    folder then loads as exactly one of the two runs, and the next save
    cleans what the killed one left behind."""
    out = _copy(two_runs / "seed0", tmp_path / "out")
    child = subprocess.Popen([sys.executable, "-c", _SAVER, str(two_runs / "seed1"), str(out)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    loaded = ReCLIP.load(out)
    assert loaded.seed in (0, 1)
    whole = two_runs / f"seed{loaded.seed}"
    assert (out / "history.csv").read_bytes() == (whole / "history.csv").read_bytes()
    assert (out / "visual" / "open_clip_model.safetensors").read_bytes() == \
        (whole / "visual" / "open_clip_model.safetensors").read_bytes()
    loaded.save(out, overwrite=True)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert leftovers == [], leftovers


# -- divergence ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pairs():
    return modgap.data.load("shapes-pairs", n=200)


def _refine(clip, **kw):
    return CLIPRefine(clip, epochs=1, batch_size=32, holdout=32, log_every=1, progress=False, **kw)


@pytest.mark.parametrize("lr", [1e3, 1e6])
def test_clip_refine_that_diverges_raises_and_keeps_the_last_good_weights(clip, pairs, lr):
    est = _refine(clip, lr=lr)
    train, held = pairs.subset(np.arange(160)), pairs.subset(np.arange(160, 200))
    with pytest.raises(DivergenceError, match=r"Lower the learning rate \(lr="):
        est.fit(train, eval_pairs=held)
    assert all(torch.isfinite(p).all() for p in est.model_.parameters())
    assert est.diverged_ and est.n_steps_ == est.history_["step"].iloc[-1]
    assert np.isfinite(est.history_["centroid_distance"]).all()
    # the weights kept are the ones the last row measured
    refined = est.to_clip()
    got = modgap.metrics.centroid_distance(refined.encode_images(held), refined.encode_texts(held.first_captions()))
    assert got == pytest.approx(est.history_["centroid_distance"].iloc[-1], abs=1e-6)


def test_clip_refine_can_warn_instead_and_stays_usable(clip, pairs, tmp_path):
    with pytest.warns(RuntimeWarning, match="CLIPRefine diverged"):
        est = _refine(clip, lr=1e6, on_divergence="warn").fit(pairs)
    est.save(tmp_path / "run")
    assert CLIPRefine.load(tmp_path / "run").diverged_ == est.diverged_


def test_a_fit_that_does_not_diverge_says_so(clip, pairs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        est = _refine(clip, lr=1e-4).fit(pairs)
    assert est.diverged_ is None


@pytest.mark.parametrize("on_divergence", ["raise", "warn"])
def test_reclip_that_diverges_stops_with_the_last_good_weights(clip, target, on_divergence):
    est = ReCLIP(clip, target.classnames, target.templates, epochs=3, k=5, lr_visual=1e6, lr_text=1e6,
                 progress=False, on_divergence=on_divergence)
    if on_divergence == "raise":
        with pytest.raises(DivergenceError, match=r"ReCLIP diverged: .*Lower the learning rates"):
            est.fit(target, labels=target.labels)
    else:
        with pytest.warns(RuntimeWarning, match="ReCLIP diverged"):
            est.fit(target, labels=target.labels)
    assert est.diverged_ and est.history_["epoch"].iloc[-1] < 3
    for model in est.fitted_models().values():
        assert all(torch.isfinite(p).all() for p in model.parameters())
    # the branches went back to the weights the last row measured
    assert est.score(target, target.labels) == pytest.approx(est.history_["acc"].iloc[-1])


@pytest.mark.parametrize("bad", [{"on_divergence": "ignore"}, {"on_divergence": True}])
def test_on_divergence_is_checked(clip, target, pairs, bad):
    with pytest.raises(ValueError, match="on_divergence must be one of"):
        ReCLIP(clip, target.classnames, **bad).fit(target)
    with pytest.raises(ValueError, match="on_divergence must be one of"):
        CLIPRefine(clip, **bad).fit(pairs)


def test_saved_run_records_the_modgap_version(two_runs):
    manifest = json.loads((two_runs / "seed0" / "manifest.json").read_text())
    assert manifest["modgap"] == modgap.__version__
    assert set(manifest["files"]) >= {"estimator.json", "history.csv", "visual/open_clip_model.safetensors"}
