"""The explorers in a real browser: JupyterLab + Debian's headless Chromium, driven by Playwright. Notebook 05 runs
and a widget is moved (the plot must change); 06 and 07 run top to bottom without an error and show their figures.

Skipped with a message where Chromium or Playwright is missing; ``.ci/run`` installs Chromium and sets
``FERNB_REQUIRE_BROWSER=1``, which turns that skip into a failure so that CI cannot pass without running it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from browser import LabServer, cell_errors, missing_requirements, open_lab, run_all_cells, wait_idle

REPO = Path(__file__).resolve().parents[1]
EXPLORERS = ["05_anchor_embeddings.ipynb", "06_attention_gradcam.ipynb", "07_reliability.ipynb"]
NOTEBOOK = REPO / "notebooks" / EXPLORERS[0]
SHOTS = REPO / "outputs" / "browser"
REPORT: list[str] = []  # printed in the terminal summary (tests/conftest.py)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def browser_ready() -> None:
    why = missing_requirements()
    if why is None:
        return
    if os.environ.get("FERNB_REQUIRE_BROWSER") == "1":
        pytest.fail(f"FERNB_REQUIRE_BROWSER=1 but the browser test cannot run: {why}")
    pytest.skip(f"browser test skipped: {why}")


def smoke_copy(notebook: Path, folder: Path, runs: Path) -> Path:
    """A copy of ``notebook`` in ``folder`` whose parameters cell ends with ``SMOKE = True`` and ``RUNS = runs``
    (JupyterLab autosaves what it runs, so the repository's notebook is never opened)."""
    nb = json.loads(notebook.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    cell["source"] = "".join(cell["source"]) + f"\nSMOKE = True\nRUNS = {str(runs)!r}\n"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / notebook.name
    out.write_text(json.dumps(nb))
    return out


def _src(locator) -> str | None:
    return locator.get_attribute("src") if locator.count() else None


@pytest.fixture(scope="module")
def lab(browser_ready, numba_cache, tmp_path_factory) -> LabServer:
    """One JupyterLab for the module, serving smoke copies of the explorer notebooks (UMAP's kernels compiled before:
    05's run is timed)."""
    folder = tmp_path_factory.mktemp("lab")
    for name in EXPLORERS:
        smoke_copy(REPO / "notebooks" / name, folder, REPO / "runs")
    with LabServer(folder, env={"FERNB_SMOKE": "1"}) as server:
        yield server


def test_embedding_explorer_replots_when_a_widget_moves(lab):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with open_lab(lab, NOTEBOOK.name) as page:
        t0 = time.perf_counter()
        run_all_cells(page)
        explorer = page.locator(".widget-vbox", has=page.locator("label", has_text="Colour by")).first
        explorer.wait_for(timeout=300_000)
        wait_idle(page, timeout_s=300)
        ran = time.perf_counter() - t0
        errors = cell_errors(page)
        assert not errors, f"cells raised in JupyterLab:\n{errors[0]}"
        image = explorer.locator("img").first
        image.wait_for(timeout=30_000)
        page.screenshot(path=str(SHOTS / "05_before.png"), full_page=True)
        before = _src(image)
        assert before and before.startswith("data:image/png"), "the explorer shows no inline figure"

        select = explorer.locator(".widget-dropdown", has=page.locator("label", has_text="Colour by")).locator("select")
        options = select.locator("option").all_inner_texts()
        assert {"label", "prediction", "confidence"} <= set(options), options
        t1 = time.perf_counter()
        select.select_option("confidence" if select.input_value() != "confidence" else "label")
        after = before
        while after == before and time.perf_counter() - t1 < 30:
            time.sleep(0.2)
            after = _src(explorer.locator("img").first)
        replot = time.perf_counter() - t1
        page.screenshot(path=str(SHOTS / "05_after.png"), full_page=True)
        assert after and after != before, "moving the 'Colour by' dropdown did not change the plot"
    REPORT.append(f"05 ran in {ran:.1f} s in JupyterLab; re-plot seen after {replot:.2f} s; screenshots in {SHOTS}")


@pytest.mark.parametrize("name", EXPLORERS[1:])
def test_explorer_notebook_runs_in_jupyterlab(lab, name: str):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with open_lab(lab, name) as page:
        t0 = time.perf_counter()
        run_all_cells(page)
        page.locator(".widget-vbox img, .widget-hbox img").first.wait_for(timeout=300_000)
        wait_idle(page, timeout_s=300)
        errors = cell_errors(page)
        page.screenshot(path=str(SHOTS / f"{name[:2]}.png"), full_page=True)
        assert not errors, f"{name}: cells raised in JupyterLab:\n{errors[0]}"
        assert page.locator(".jp-OutputArea-output img").count() >= 2, "no figures rendered"
    REPORT.append(f"{name[:2]} ran in {time.perf_counter() - t0:.1f} s in JupyterLab")
