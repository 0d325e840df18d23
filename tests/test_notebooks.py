"""Every notebook runs top to bottom with papermill in smoke mode (and notebook 01 on real FER+ where present)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import make_ferplus_shared

from fernb.engine import apply_overrides
from fernb.notebooks import RunSpec, _has_test_split, _split_present, list_notebooks, protocol_note, run_notebook

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


# -- notebook 04 on a data folder without a test split ------------------------------------------------------------

# FER+ vote columns (neutral, happiness, surprise, sadness, anger, disgust, fear, contempt) and the shared copy's
# class folders
_FERPLUS_FOLDERS = ("neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt")


def _fake_ferplus(root: Path, splits: dict[str, int]) -> Path:
    """The shared FER+ layout (class folders + manifest.csv) with ``splits[name]`` images per class and split."""
    rows = []
    for split, per_class in splits.items():
        for c, folder in enumerate(_FERPLUS_FOLDERS):
            votes = [0] * 10
            votes[c] = 10
            rows += [(split, folder, votes)] * per_class
    make_ferplus_shared(root, rows)
    return root


def test_a_folder_without_a_test_split_selects_on_a_holdout_and_tests_on_valid(tmp_path: Path):
    no_test = _fake_ferplus(tmp_path / "subset", {"train": 10, "valid": 4})
    cfg = RunSpec(dataset="ferplus", data_root=str(no_test), smoke=True).config("resnet18")
    assert (cfg.data.valid_split, cfg.data.test_split) == (None, "valid")
    note = protocol_note(cfg)
    assert "seeded 10 % holdout of 'train'" in note and "test figure on the 'valid' split" in note
    assert "no 'test' split" in note

    full = _fake_ferplus(tmp_path / "full", {"train": 3, "valid": 1, "test": 1})
    cfg = RunSpec(dataset="ferplus", data_root=str(full), smoke=True).config("resnet18")
    assert (cfg.data.valid_split, cfg.data.test_split) == ("valid", "test")  # the published splits
    assert (
        protocol_note(cfg)
        == "model selection on the 'valid' split; test figure on the 'test' split, read once at the end"
    )

    train_only = _fake_ferplus(tmp_path / "train-only", {"train": 3})
    cfg = RunSpec(dataset="ferplus", data_root=str(train_only), smoke=True).config("resnet18")
    assert (cfg.data.valid_split, cfg.data.test_split) == (None, "test")
    assert "no test figure" in protocol_note(cfg)


def test_test_split_checks_agree_on_every_kind_of_folder(tmp_path: Path):
    """``train_and_test(test="auto")`` and the protocol line ask the same question of the reader."""
    full = _fake_ferplus(tmp_path / "full", {"train": 3, "valid": 1, "test": 1})
    train_only = _fake_ferplus(tmp_path / "train-only", {"train": 3})
    cases = {
        "full": (str(full), {}, True),
        "train only": (str(train_only), {}, False),
        "missing folder": (str(tmp_path / "nowhere"), {}, True),  # left to the run, which explains
        "folds of a train-only folder": (str(train_only), {"data.folds": 3}, True),
    }
    for name, (root, extra, expected) in cases.items():
        cfg = apply_overrides(RunSpec(dataset="ferplus", data_root=root, smoke=True).config("resnet18"), extra)
        cfg = apply_overrides(cfg, {"data.test_split": "test"})
        assert _has_test_split(cfg) is expected, name
        if not extra:
            assert (_split_present(cfg, "test") is not False) is expected, name


def test_compare_notebook_on_ferplus_without_a_test_split(tmp_path: Path):
    """Notebook 04 on a FER+ folder with train and valid only: every run selected its model on a holdout of train,
    read valid once as its test split, and the leaderboard's header says so."""
    root = _fake_ferplus(tmp_path / "ferplus", {"train": 10, "valid": 4})
    nb = REPO / "notebooks" / "04_compare.ipynb"
    params = {
        "DATASET": "ferplus",
        "DATA_ROOT": str(root),
        "RUNS": str(tmp_path / "runs"),
        "METHODS": ["resnet18", "scn"],
        "NOISE_METHODS": ["resnet18"],
        "JOBS": 1,
    }
    run = run_notebook(nb, tmp_path / "out", smoke=True, parameters=params)
    TIMINGS["04 on FER+ without a test split"] = run.seconds
    assert run.ok, f"{nb.name} on FER+ without a test split failed: {run.error}; executed copy: {run.output}"
    shown = json.dumps([o for c in json.loads(run.output.read_text())["cells"] for o in c.get("outputs", [])])
    assert "Leaderboard on ferplus: model selection on a seeded 10 % holdout of 'train'" in shown
    assert "its 'valid' split stands in for it" in shown
    run_dirs = sorted(d for d in (tmp_path / "runs").iterdir() if d.is_dir())  # not the lock files
    assert [d.name for d in run_dirs] == [
        "resnet18-ferplus-s0-smoke",
        "resnet18-ferplus-s0-sym30-smoke",
        "scn-ferplus-s0-smoke",
    ]
    for d in run_dirs:
        data = json.loads((d / "config.json").read_text())["data"]
        assert (data["valid_split"], data["test_split"]) == (None, "valid")
        record = json.loads((d / "run.json").read_text())
        tests = [e for e in record["evaluations"] if e["test"]]
        assert len(tests) == 1 and tests[0]["split"] == "valid" and record["test_evaluations"] == 1
        assert tests[0]["n"] == 4 * len(_FERPLUS_FOLDERS)  # all of valid, read once
