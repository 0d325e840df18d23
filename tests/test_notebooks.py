"""Every notebook runs top to bottom with papermill in smoke mode (and notebook 01 on real FER+ where present)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fernb.notebooks import list_notebooks, run_notebook

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "outputs" / "test-notebooks"
TIMINGS: dict[str, float] = {}

pytestmark = [pytest.mark.notebook, pytest.mark.timeout(900)]


@pytest.mark.usefixtures("numba_cache")  # 05 runs UMAP in its kernel: compiled before, not in its timing
@pytest.mark.parametrize("nb", list_notebooks(), ids=lambda p: p.name)
def test_notebook_runs_in_smoke_mode(nb: Path):
    run = run_notebook(nb, OUT, smoke=True)
    TIMINGS[nb.name] = run.seconds
    assert run.ok, f"{nb.name} failed: {run.error}; executed copy: {run.output}"


@pytest.mark.shared
def test_data_notebook_runs_on_real_ferplus(ferplus_root: Path):
    nb = REPO / "notebooks" / "01_data_and_preprocessing.ipynb"
    run = run_notebook(
        nb, OUT / "ferplus", smoke=True, parameters={"DATASET": "ferplus", "DATA_ROOT": str(ferplus_root)}
    )
    TIMINGS["01 on ferplus"] = run.seconds
    assert run.ok, f"{nb.name} on FER+ failed: {run.error}; executed copy: {run.output}"


@pytest.mark.shared
def test_reliability_notebook_compares_with_ferplus_votes(ferplus_root: Path):
    """Notebook 07 on FER+ itself: the crowd-vote comparison, and the injected label noise (``NOISE``, 30 %
    symmetric by default) with its corrections, detection curves and suspects, on a folder without a test split."""
    nb = REPO / "notebooks" / "07_reliability.ipynb"
    params = {"DATASET": "ferplus", "DATA_ROOT": str(ferplus_root), "FERPLUS_ROOT": str(ferplus_root)}
    run = run_notebook(nb, OUT / "ferplus", smoke=True, parameters=params)
    TIMINGS["07 on FER+ with noise"] = run.seconds
    assert run.ok, f"{nb.name} with FER+ failed: {run.error}; executed copy: {run.output}"
    cells = json.loads(run.output.read_text())["cells"]
    shown = json.dumps([o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])])
    assert "FER+ comparison skipped" not in shown and "kl_primary" in shown, "the FER+ section did not run"
    assert "training labels are wrong (injected" in shown and "of which repaired" in shown, "no injected noise"
    by_id = {c.get("id"): c for c in cells}
    for cell in ("c06d", "c06f", "c06h"):  # detection curves, ROC / precision-recall, suspects' faces
        assert any("image/png" in o.get("data", {}) for o in by_id[cell]["outputs"]), f"cell {cell} drew no figure"
