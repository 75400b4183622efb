"""The notebooks in a real browser: JupyterLab started by `make lab`,
driven by Playwright in Debian's headless Chromium, runs every cell and
renders their widgets live (notebook 01's gap-shift slider, notebook 04's
closer picker, the maps of 01 and 02), a move of each control redraws the
figure, and each notebook's key figure is drawn.

Screenshots go to the test's temporary folder, or to ``MODGAP_SCREENSHOTS``
when that is set: ``make screenshots`` writes them to ``docs/screenshots/``. Needs Chromium (``apt-get install
chromium``, which `.ci/run` does) and the ``playwright`` Python package (in
the ``dev`` extra); its own browser download is not used.
"""
import contextlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from labserver import REPO, TOKEN, get, make_lab, wait_for_api

NOTEBOOK = "01_measuring_the_gap.ipynb"
CHROMIUM = os.environ.get("MODGAP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# Without the background-networking flags Chromium keeps calling Google's
# hosts, which a closed network refuses.
# WebGL (jupyter-scatter's maps) from SwiftShader, Chromium's software renderer: no GPU needed
CHROMIUM_ARGS = ["--no-sandbox", "--disable-quic", "--no-first-run", "--use-angle=swiftshader",
                 "--enable-unsafe-swiftshader", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
RUN_PATIENCE_MS = 8 * 60 * 1000

if not CHROMIUM and os.environ.get("CI"):
    raise RuntimeError("CI needs Chromium for tests/test_browser.py: apt-get install chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM, reason="no Chromium on this machine (apt-get install chromium)")


@pytest.fixture
def shots(tmp_path):
    d = Path(os.environ.get("MODGAP_SCREENSHOTS") or tmp_path / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


def run_all_cells(page, sync_api, tries=6):
    """Run > Run All Cells from JupyterLab's menu bar, again until every code
    cell has run or is queued: a click while the kernel is still connecting
    can be lost, or run the first cell only."""
    started = ("() => { const p = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];"
               " return p.length > 0 && p.every(e => /\\[(\\*|\\d+)\\]/.test(e.textContent)); }")
    for _ in range(tries):
        page.keyboard.press("Escape")
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        try:
            page.wait_for_function(started, timeout=20_000)
            return
        except sync_api.TimeoutError:
            continue
    pytest.fail(f"no cell started after {tries} clicks on Run All Cells")


def dismiss_news_prompt(page):
    """Answer JupyterLab's "notified about news?" toast so it does not cover the output."""
    no = page.locator(".jp-toast-button", has_text="No")
    if no.count():
        no.first.click()
        no.first.wait_for(state="detached", timeout=10_000)


def drag_right(page, handle, pixels=60):
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + pixels, y, steps=6)
    page.mouse.up()


def wait_until(condition, seconds):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {seconds} s")
        time.sleep(0.5)


def lab_settings_without_autosave(folder: Path) -> Path:
    """A JupyterLab user-settings folder that never saves documents on its own:
    the run must not write outputs into the committed notebook."""
    plugin = folder / "@jupyterlab" / "docmanager-extension" / "plugin.jupyterlab-settings"
    plugin.parent.mkdir(parents=True)
    plugin.write_text(json.dumps({"autosave": False}))
    # every cell rendered, so a widget far down the notebook exists before it is scrolled to
    tracker = folder / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    return folder


@contextlib.contextmanager
def notebook_page(tmp_path, notebook_name):
    """A headless Chromium page on ``notebook_name`` in a fresh JupyterLab,
    with every cell started; afterwards the committed notebook must be as it was."""
    sync_api = pytest.importorskip("playwright.sync_api")
    notebook = REPO / "notebooks" / notebook_name
    committed = notebook.read_bytes()
    settings = lab_settings_without_autosave(tmp_path / "user-settings")
    # a workspace of its own: the user's saved layout would reopen other notebooks beside this one
    workspaces = tmp_path / "workspaces"
    workspaces.mkdir()
    args = f"--LabApp.user_settings_dir={settings} --LabApp.workspaces_dir={workspaces}"
    with make_lab(tmp_path, args) as (base, log, proc):
        wait_for_api(base, log, proc)
        _, body = get(f"{base}/lab/api/settings/@jupyterlab/docmanager-extension:plugin")
        assert json.loads(body)["settings"].get("autosave") is False
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                                         timeout=60_000)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{base}/lab/tree/{notebook_name}?token={TOKEN}", timeout=120_000)
                page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
                # the kernel has started when the toolbar says Idle
                page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
                run_all_cells(page, sync_api)
                yield page
            finally:
                browser.close()
    assert notebook.read_bytes() == committed, "the browser run saved into the notebook"


def page_state(page):
    """What the notebook shows now: prompts, errors and widget views, for a failure message."""
    return page.evaluate("""() => {
        const prompts = [...document.querySelectorAll('.jp-InputArea-prompt')].map(e => e.textContent.trim());
        const errors = [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type*="stderr"],'
            + '.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')]
            .map(e => e.textContent.slice(0, 400));
        const views = [...document.querySelectorAll('.jp-OutputArea-output')]
            .map(e => e.className + ' ' + (e.getAttribute('data-mime-type') || '')).filter(c => /widget/.test(c));
        const status = document.querySelector('.jp-Notebook-ExecutionIndicator');
        return {prompts, errors, views, status: status && status.getAttribute('data-status')};
    }""")


def shown(page, control, sync_api, shots=None):
    """Wait for a widget control to be rendered, and bring it into view
    (JupyterLab skips rendering cells out of view)."""
    try:
        control.wait_for(state="attached", timeout=RUN_PATIENCE_MS)
    except sync_api.TimeoutError:
        if shots is not None:
            page.screenshot(path=str(shots / "timeout.png"), full_page=True)
        pytest.fail(f"the widget was not rendered; the notebook showed {page_state(page)}")
    control.scroll_into_view_if_needed()
    control.wait_for(state="visible", timeout=30_000)
    dismiss_news_prompt(page)
    return control


def key_figure(page, code, path, sync_api):
    """Screenshot the figure of the code cell whose source contains ``code``
    once its image is drawn."""
    cell = page.locator(".jp-CodeCell", has=page.locator(".cm-content", has_text=code)).first
    image = cell.locator(".jp-OutputArea-output img").first
    try:
        image.wait_for(state="attached", timeout=RUN_PATIENCE_MS)
    except sync_api.TimeoutError:
        pytest.fail(f"the cell with {code!r} drew no figure; the notebook showed {page_state(page)}")
    image.scroll_into_view_if_needed()
    dismiss_news_prompt(page)
    image.screenshot(path=str(path))


def assert_claims_hold(page, seconds=RUN_PATIENCE_MS / 1000):
    """Wait for every code cell to finish, then check the notebook's own
    claim checks (modgap.claims) all held in JupyterLab."""
    done = ("() => { const p = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];"
            " return p.length > 0 && p.every(e => /\\[\\d+\\]/.test(e.textContent)); }")
    try:
        page.wait_for_function(done, timeout=seconds * 1000)
    except pytest.importorskip("playwright.sync_api").TimeoutError:
        pytest.fail(f"the notebook did not finish; it showed {page_state(page)}")
    said = page.locator(".jp-Notebook").inner_text()
    assert "ClaimFailed" not in said and "claim does not hold" not in said, page_state(page)
    assert "claim holds" in said


def assert_pngs(shots, names):
    for name in names:
        png = (shots / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_notebook_01_renders_a_live_gap_shift_slider(tmp_path, shots):
    with notebook_page(tmp_path, NOTEBOOK) as page:
        slider = shown(page, page.locator(".jp-OutputArea .widget-slider").first, pytest.importorskip("playwright.sync_api"), shots)
        # the widget is what JupyterLab rendered, not the static PNG
        assert "shift" in slider.inner_text()
        readout = slider.locator(".widget-readout")
        before = readout.inner_text().strip()
        assert before == "+0.00"
        view = page.locator(".jp-OutputArea-output", has=page.locator(".widget-slider")).first
        view.screenshot(path=str(shots / "01_gap_shift_slider.png"))

        # moving the slider reaches the kernel and redraws the figure
        first_src = view.locator("img").first.get_attribute("src")
        drag_right(page, slider.locator(".noUi-handle").first)
        wait_until(lambda: view.locator("img").first.get_attribute("src") != first_src, 120)
        after = readout.inner_text().strip()
        assert after != before and float(after) > 0
        view.screenshot(path=str(shots / "01_gap_shift_slider_moved.png"))
        page.screenshot(path=str(shots / "01_notebook.png"))
        assert_claims_hold(page)
    assert_pngs(shots, ("01_gap_shift_slider.png", "01_gap_shift_slider_moved.png", "01_notebook.png"))


def test_notebook_04_renders_a_live_closer_picker(tmp_path, shots):
    with notebook_page(tmp_path, "04_which_way_to_close_the_gap.ipynb") as page:
        picker = shown(page, page.locator(".jp-OutputArea .widget-toggle-buttons").first, pytest.importorskip("playwright.sync_api"), shots)
        chosen = picker.locator(".mod-active")
        assert chosen.inner_text().strip() == "mean-centering"
        view = page.locator(".jp-OutputArea-output", has=page.locator(".widget-toggle-buttons")).first
        view.screenshot(path=str(shots / "04_closer_picker.png"))

        # picking another closer reaches the kernel and redraws the figure
        first_src = view.locator("img").first.get_attribute("src")
        picker.locator("button", has_text="standardization").first.click()
        wait_until(lambda: view.locator("img").first.get_attribute("src") != first_src, 120)
        assert chosen.inner_text().strip() == "standardization"
        view.screenshot(path=str(shots / "04_closer_picker_moved.png"))
        assert_claims_hold(page)
    assert_pngs(shots, ("04_closer_picker.png", "04_closer_picker_moved.png"))


def hover_until(page, canvas, condition, steps=24):
    """Sweep the mouse over ``canvas`` on a grid until ``condition()`` holds."""
    box = canvas.bounding_box()
    for fy in np.linspace(0.15, 0.85, steps // 2):
        for fx in np.linspace(0.1, 0.9, steps):
            page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
            page.wait_for_timeout(60)
            if condition():
                return
    pytest.fail("no point answered the mouse on the map")


def lasso(page, explorer, canvas):
    """Pick jupyter-scatter's lasso in its toolbar and drag a loop around the
    middle of ``canvas``."""
    explorer.locator('button[title="Activate lasso selection"]').first.click()
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    rx, ry = box["width"] * 0.4, box["height"] * 0.4
    page.mouse.move(cx + rx, cy)
    page.mouse.down()
    for t in np.linspace(0, 2 * np.pi, 48):
        page.mouse.move(cx + rx * np.cos(t), cy + ry * np.sin(t), steps=2)
        page.wait_for_timeout(20)
    page.mouse.up()


def test_notebook_01_map_shows_thumbnails_and_hands_the_selection_to_the_kernel(tmp_path, shots):
    sync_api = pytest.importorskip("playwright.sync_api")
    with notebook_page(tmp_path, NOTEBOOK) as page:
        explorer = shown(page, page.locator(".jp-OutputArea .modgap-explorer").first, sync_api, shots)
        canvas = explorer.locator("canvas").first
        canvas.wait_for(state="visible", timeout=60_000)
        preview = explorer.locator(".modgap-preview").first
        caption = explorer.locator(".modgap-caption").first
        assert "hover a point" in caption.inner_text()

        # hovering a point: the kernel answers with the image's thumbnail or the caption
        hover_until(page, canvas, lambda: "hover a point" not in caption.inner_text())
        wait_until(lambda: caption.inner_text().strip().startswith(("image", "text")), 30)
        if caption.inner_text().startswith("text"):
            hover_until(page, canvas, lambda: caption.inner_text().startswith("image"))
        wait_until(lambda: preview.evaluate("img => img.complete && img.naturalWidth > 0"), 30)
        assert "nearest texts" in explorer.inner_text()
        explorer.screenshot(path=str(shots / "01_explorer_hover.png"))

        # a lasso: the kernel counts the selected points and says so beside the map
        label = explorer.locator(".modgap-selection").first
        assert label.inner_text().strip() == "selected: none"
        lasso(page, explorer, canvas)
        wait_until(lambda: label.inner_text().strip() != "selected: none", 60)
        said = label.inner_text().strip()
        n = int(said.split()[1])
        assert n > 0, said
        explorer.screenshot(path=str(shots / "01_explorer_selection.png"))
    assert_pngs(shots, ("01_explorer_hover.png", "01_explorer_selection.png"))


def test_notebook_02_map_plays_the_epochs(tmp_path, shots):
    sync_api = pytest.importorskip("playwright.sync_api")
    with notebook_page(tmp_path, "02_reclip_pseudo_label_dynamics.ipynb") as page:
        explorer = shown(page, page.locator(".jp-OutputArea .modgap-explorer").first, sync_api, shots)
        explorer.locator("canvas").first.wait_for(state="visible", timeout=60_000)
        frame = explorer.locator(".modgap-frame").first
        assert frame.inner_text().strip() == "start"
        explorer.screenshot(path=str(shots / "02_explorer_start.png"))
        explorer.locator(".widget-play button").first.click()
        wait_until(lambda: frame.inner_text().strip().startswith("epoch"), 60)
        page.wait_for_timeout(1500)  # let the points travel
        explorer.screenshot(path=str(shots / "02_explorer_playing.png"))
        # the notebook's key figure: every image and class before and after ReCLIP
        key_figure(page, "viz.plot_embedding_shift(", shots / "02_embedding_shift.png", sync_api)
        assert_claims_hold(page)
    assert_pngs(shots, ("02_explorer_start.png", "02_explorer_playing.png", "02_embedding_shift.png"))


def test_notebook_03_draws_the_pairs_before_and_after_clip_refine(tmp_path, shots):
    sync_api = pytest.importorskip("playwright.sync_api")
    with notebook_page(tmp_path, "03_clip_refine_rafa_hycd.ipynb") as page:
        key_figure(page, "viz.plot_embedding_shift(before, after", shots / "03_embedding_shift.png", sync_api)
        assert_claims_hold(page)
    assert_pngs(shots, ("03_embedding_shift.png",))
