"""Training several runs side by side (fernb.notebooks.train_many): the plan, the results, reuse and failures."""

from __future__ import annotations

import json
import os
import pickle
import traceback
from pathlib import Path

import pytest

from fernb.engine import apply_overrides
from fernb.errors import FernbError
from fernb.notebooks import RunFailedError, RunSpec, _ChildFailure, _run_failed, plan_jobs, train_and_test, train_many


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
    with pytest.raises(RunFailedError, match="run 'scn-synthetic-s0-smoke' failed in its training process") as info:
        train_many([good, bad], jobs=2, bootstrap=0, test=False)
    err = info.value
    assert isinstance(err, FernbError)  # shown as its message alone in a notebook (fernb.errors.short_errors)
    assert (err.run, err.error_type) == ("scn-synthetic-s0-smoke", "ConfigError")
    assert "loss.class_weights='sometimes'" in err.child_message and err.child_message in str(err)
    assert "Traceback" in err.child_traceback and "ConfigError" in err.child_traceback
    assert err.child_traceback.strip() in str(err.__cause__)  # a full traceback shows the child's


def test_an_error_that_does_not_pickle_comes_back_by_name(tmp_path: Path):
    """DataRootError's __init__ needs more than its message, so it cannot be unpickled in the parent as itself; its
    type name, message and traceback still come back."""
    spec = RunSpec(smoke=True, runs=str(tmp_path), dataset="ferplus", data_root=str(tmp_path / "no-such-folder"))
    cfgs = [spec.config("resnet18", quiet=True), spec.config("resnet18", seed=1, quiet=True)]
    with pytest.raises(RunFailedError, match=r"run 'resnet18-ferplus-s[01]-smoke' failed") as info:
        train_many(cfgs, jobs=2, bootstrap=0, test=False)
    assert info.value.error_type == "DataRootError"
    assert "no-such-folder" in info.value.child_message and "what to do" in info.value.child_message


def test_a_failed_run_error_pickles_with_its_fields():
    err = RunFailedError("arbex-synthetic-s0", "ConfigError", "bad field", "Traceback ...")
    back = pickle.loads(pickle.dumps(err))
    assert (back.run, back.error_type, back.child_message, back.child_traceback, str(back)) == (
        err.run,
        err.error_type,
        err.child_message,
        err.child_traceback,
        str(err),
    )


def test_another_error_of_a_run_stays_a_runtime_error_with_its_traceback():
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError as exc:
        child = _ChildFailure(type(exc).__name__, str(exc), traceback.format_exc(), isinstance(exc, FernbError))
    err = _run_failed("esr-synthetic-s0", child)
    assert type(err) is RuntimeError and not isinstance(err, FernbError)
    assert str(err) == "run 'esr-synthetic-s0' failed in its training process: ZeroDivisionError: division by zero"
    assert "raise ZeroDivisionError" in err.child_traceback and "raise ZeroDivisionError" in str(err.__cause__)
