"""modgap under torchrun: 2 CPU processes with the gloo backend give what
one process gives (embedding row for row, CLIP-Refine's weights, ReCLIP's
history), and a rank that raises ends the whole job at once.

The jobs and their inputs live in tests/jobs/distributed_job.py; the same
functions run here in this process for the single-process answer.
"""
import importlib.util
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from modgap import distributed

JOB = Path(__file__).parent / "jobs" / "distributed_job.py"


def load_job():
    spec = importlib.util.spec_from_file_location("distributed_job", JOB)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def torchrun(*args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *map(str, args)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, env=env)
    return proc, time.monotonic() - t0


@pytest.fixture(scope="module")
def job():
    return load_job()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("two-ranks")
    proc, _ = torchrun(JOB, out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return torch.load(out / "results.pt", weights_only=False), out


@pytest.fixture(scope="module")
def one_rank(job, two_ranks):
    clip = job.build_clip()
    return {"embed": job.embed_job(clip, str(two_ranks[1] / "files")), "refine": job.refine_job(clip),
            "reclip": job.reclip_job(clip)}


def test_the_job_ran_on_two_ranks(two_ranks):
    assert two_ranks[0]["world_size"] == 2


def test_distributed_embedding_equals_one_process_row_for_row(two_ranks, one_rank):
    got, want = two_ranks[0]["embed"], one_rank["embed"]
    assert got["uint8"].shape == want["uint8"].shape == (37, 128)
    torch.testing.assert_close(got["uint8"], want["uint8"], rtol=0, atol=1e-6)
    # 36 files: the corrupt one is left out on the rank that holds it, and the rows stay in order
    assert got["files"].shape == want["files"].shape == (36, 128)
    torch.testing.assert_close(got["files"], want["files"], rtol=0, atol=1e-6)
    # through the cache: written once by rank 0, read back the same on every rank
    assert got["cache_files"] >= 1
    assert torch.equal(got["warm"], got["cold"])
    torch.testing.assert_close(got["cold"], want["uint8"], rtol=0, atol=1e-6)


def test_distributed_clip_refine_gives_one_process_weights(two_ranks, one_rank):
    got, want = two_ranks[0]["refine"], one_rank["refine"]
    assert got["state"].keys() == want["state"].keys()
    for k in want["state"]:
        torch.testing.assert_close(got["state"][k], want["state"][k], rtol=0, atol=1e-5, msg=k)
    moved = max(float((want["state"][k] - job_start_state()[k]).abs().max()) for k in want["state"])
    assert moved > 1e-3  # the four steps did train
    pd.testing.assert_frame_equal(got["history"], want["history"], rtol=1e-5, atol=1e-6)


def job_start_state():
    clip = load_job().build_clip()
    return {k: v.detach().clone() for k, v in clip.model.state_dict().items()}


def test_distributed_reclip_gives_one_process_history(two_ranks, one_rank):
    got, want = two_ranks[0]["reclip"], one_rank["reclip"]
    cols = [c for c in want["history"].columns if c != "seconds"]
    assert len(want["history"]) == 3 and want["history"]["trained"].iloc[1] > 0
    pd.testing.assert_frame_equal(got["history"][cols], want["history"][cols], rtol=1e-4, atol=1e-5)
    for k in want["visual"]:
        torch.testing.assert_close(got["visual"][k], want["visual"][k], rtol=0, atol=1e-5, msg=k)


def test_a_rank_that_raises_ends_the_job_within_seconds(tmp_path):
    proc, seconds = torchrun(JOB, tmp_path, "--fail-rank", 1, timeout=120)
    assert proc.returncode != 0
    assert "rank 1 fails on purpose" in proc.stderr
    # the other rank waited in a collective: torchrun stopped it, nothing hung
    assert seconds < 60


def test_without_a_process_group_everything_is_one_process():
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    x = torch.arange(6.0).reshape(3, 2)
    assert distributed.gather_rows(x) is x and distributed.gather_with_grad(x) is x
    assert distributed.all_gather_objects("a") == ["a"]
    assert distributed.sum_value(2.5) == 2.5
    assert not distributed.init_from_env() or os.environ.get("WORLD_SIZE") not in (None, "1")
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    y = torch.ones(2)
    assert distributed.broadcast_(y) is y


@pytest.mark.parametrize("n", [0, 1, 5, 37])
def test_shards_cover_the_items_once_in_order(monkeypatch, n):
    for world in (1, 2, 3):
        monkeypatch.setattr(distributed, "world_size", lambda world=world: world)
        bounds = [distributed.shard_bounds(n, r) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
        sizes = [b - a for a, b in bounds]
        assert max(sizes) - min(sizes) <= 1
        assert np.concatenate([np.arange(a, b) for a, b in bounds]).tolist() == list(range(n))


def test_torchrun_runs_the_command_line_and_only_rank_0_writes_and_prints(tmp_path):
    out = tmp_path / "run"
    proc, _ = torchrun("-m", "modgap", "reclip", "--data", "shapes", "--domain", "sketch", "--count", "96",
                       "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--out", out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "estimator.json").is_file() and (out / "visual").is_dir()
    assert not list(tmp_path.glob(".*run*"))  # no half-written folder left beside it
    assert proc.stdout.count(f"wrote {out}") == 1  # one rank reports
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [0, 1] and history["trained"].iloc[1] > 0
