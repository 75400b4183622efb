"""Start `make lab` (the README's first command) for the tests that talk to it."""
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOKEN = "modgap-lab-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    req = urllib.request.Request(url, headers={"Authorization": f"token {TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status, r.read().decode("utf-8", "replace")


def stop(proc):
    """End the process group of make and the server it started."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def make_lab(workdir: Path, extra_args: str = ""):
    """``make lab`` running on a free port; yields (base url, log file, process)."""
    assert shutil.which("make"), "make is needed to run `make lab`"
    port = free_port()
    args = (f"--no-browser --port={port} --ServerApp.port_retries=0 "
            f"--ServerApp.token={TOKEN} --ServerApp.ip=127.0.0.1 {extra_args}")
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(workdir / "runtime"))
    log = workdir / "lab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["make", "lab", f"LAB_ARGS={args}"], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        yield f"http://127.0.0.1:{port}", log, proc
    finally:
        stop(proc)


def wait_for_api(base, log, proc, patience=90.0):
    """Poll ``/api`` until the server answers; fail with its log if it does not."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"make lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            status, body = get(f"{base}/api")
            if status == 200:
                return json.loads(body)
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer on {base}/api within {patience:.0f} s:\n{log.read_text()[-3000:]}")
