"""Training several runs side by side (fernb.notebooks.train_many): the plan, the results, reuse and failures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fernb.engine import apply_overrides
from fernb.notebooks import RunSpec, plan_jobs, train_and_test, train_many


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def test_plan_jobs_splits_the_cores():
    assert plan_jobs("auto", 0) == (1, None)
    assert plan_jobs("auto", 1) == (1, None)  # one run keeps torch's own thread count
    assert plan_jobs("auto", 5, "cpu") == (2, max(1, _cores() // 2))
    assert plan_jobs(3, 2, "cpu") == (2, max(1, _cores() // 2))
    assert plan_jobs(1, 5, "cpu") == (1, None)
    for bad in (0, -1, "two", 1.5):
        with pytest.raises(ValueError, match="jobs must be a positive int"):
            plan_jobs(bad, 3)


def _metrics(run_dir: Path) -> dict:
    """The selected epoch's validation metrics (not its timings)."""
    best = json.loads((run_dir / "run.json").read_text())["best"]["metrics"]
    return {k: v for k, v in best.items() if k.startswith("valid_") or k in ("epoch", "step", "train_loss")}


def test_runs_trained_side_by_side_equal_serial_runs_and_are_reused(tmp_path: Path):
    spec = RunSpec(smoke=True, runs=str(tmp_path / "side"))
    cfgs = [spec.config("resnet18", quiet=True), spec.config("scn", quiet=True)]
    out = train_many(cfgs, jobs=2, bootstrap=0, test=False)
    assert [r["run_dir"].name for r in out] == ["resnet18-synthetic-s0-smoke", "scn-synthetic-s0-smoke"]
    assert not any(r["reused"] for r in out)
    for r in out:
        saved = json.loads((r["run_dir"] / "config.json").read_text())
        assert saved["run"]["threads"] == max(1, _cores() // 2)  # recorded, though not part of the run's identity

    # the same config trained alone with the same thread count gives the same metrics
    alone = apply_overrides(RunSpec(smoke=True, runs=str(tmp_path / "alone")).config("resnet18", quiet=True), {})
    alone = apply_overrides(alone, {"run.threads": max(1, _cores() // 2)})
    serial = train_and_test(alone, bootstrap=0, test=False)
    assert _metrics(serial["run_dir"]) == _metrics(out[0]["run_dir"])

    again = train_many(cfgs, jobs=2, bootstrap=0, test=False)
    assert all(r["reused"] for r in again)
    assert [r["best_value"] for r in again] == [r["best_value"] for r in out]


def test_a_failing_run_is_named(tmp_path: Path):
    spec = RunSpec(smoke=True, runs=str(tmp_path))
    good = spec.config("resnet18", quiet=True)
    bad = apply_overrides(spec.config("scn", quiet=True), {"loss.class_weights": "sometimes"})
    with pytest.raises(RuntimeError, match="run 'scn-synthetic-s0-smoke' failed in its training process"):
        train_many([good, bad], jobs=2, bootstrap=0, test=False)
