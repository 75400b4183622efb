"""Every script in benchmarks/ runs in its smoke mode.

``python benchmarks/X.py --smoke`` runs at tiny sizes and exits 0 whatever
the figures, so this checks that each script still works against the
library, not what it measures. A new benchmark is picked up on its own, and
one without ``--smoke`` fails here (argparse exits 2).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))
TIMEOUT_S = 120


def test_benchmarks_are_found():
    assert BENCHMARKS, f"no scripts in {ROOT / 'benchmarks'}"


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_smoke_run(script):
    # one thread each: on a small shared machine torch's default thread
    # count makes these tiny runs several times slower
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "MPLBACKEND": "Agg"}
    try:
        res = subprocess.run([sys.executable, str(script), "--smoke"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{script.name} --smoke ran past {TIMEOUT_S} s\n--- stdout ---\n{_tail(err.stdout)}\n"
                    f"--- stderr ---\n{_tail(err.stderr)}")
    assert res.returncode == 0, (
        f"{script.name} --smoke exited {res.returncode}\n--- stdout ---\n{_tail(res.stdout)}\n"
        f"--- stderr ---\n{_tail(res.stderr)}"
    )


def _tail(text, lines: int = 40) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").splitlines()[-lines:])
