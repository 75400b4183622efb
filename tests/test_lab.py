"""`make lab`, the README's first command, starts JupyterLab on the notebooks."""
import json

import pytest
from labserver import REPO, get, make_lab, wait_for_api


@pytest.fixture
def lab(tmp_path):
    with make_lab(tmp_path) as server:
        yield server


def test_make_lab_serves_jupyterlab_on_the_notebooks(lab):
    base, log, proc = lab
    info = wait_for_api(base, log, proc)
    assert isinstance(info.get("version"), str) and info["version"][0].isdigit()

    status, page = get(f"{base}/lab")
    assert status == 200 and "JupyterLab" in page

    status, body = get(f"{base}/api/contents")
    listing = json.loads(body)
    assert listing["type"] == "directory"
    served = sorted(item["name"] for item in listing["content"])
    on_disk = sorted(p.name for p in (REPO / "notebooks").iterdir() if not p.name.startswith("."))
    assert served == on_disk
