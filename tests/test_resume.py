"""Exact resume: a run killed in a subprocess (mid-epoch or right after an epoch) and resumed reaches the same
metrics and the same final weights, bit for bit on CPU, as an uninterrupted run with the same seed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import toys as te

from fernb.engine import fit
from fernb.engine.checkpoint import (
    CheckpointError,
    capture_rng,
    load_checkpoint,
    pack_state,
    restore_rng,
    save_checkpoint,
    unpack_state,
)

TESTS = Path(__file__).resolve().parent
OVER = {
    "schedule.epochs": 3,
    "run.checkpoint_every_steps": 3,
    "run.threads": 1,
    "optim.name": "adam",
    "schedule.name": "cosine",
    "data.sampler": "shuffle",
}

# 40 samples / batch 8 = 5 steps per epoch; checkpoints at every epoch end and at steps 3, 6, 9, 12 (mid-epoch).
SCRIPT = """
import os, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import toys as te
import toys_plugin  # noqa: F401  (registers the toy model and loss)
from fernb.engine import Callback, fit

over = {over!r}
cfg = te.toy_config(Path({out!r}), **{{**over, "run.name": {name!r}}})

class Kill(Callback):
    def on_step_end(self, trainer, logs):
        if logs["step"] == {kill_step}:
            os._exit(3)

fit(cfg, train_data=te.toy_data(40), valid_data=te.toy_data(14, 1), callbacks=[Kill()])
"""


def _comparable(rows):
    return [
        {k: v for k, v in r.items() if k not in ("epoch_seconds", "samples_per_second", "elapsed_seconds")}
        for r in rows
    ]


def _csv_rows(run: Path):
    from fernb.engine.rundir import RunDir

    return _comparable(RunDir(run).read_metrics())


# fp16 with GradScaler (on CPU here, the code path CUDA takes): a start scale of 2^24 overflows the toy's fp16
# gradients for the first steps, so the scale is halved and steps skipped on both sides of the kill.
FP16 = {"run.precision": "fp16", "run.loss_scale": 2.0**24}


def _reference(tmp_path: Path, extra: dict | None = None):
    return fit(
        te.toy_config(tmp_path, **{**OVER, **(extra or {}), "run.name": "ref"}),
        train_data=te.toy_data(40),
        valid_data=te.toy_data(14, 1),
    )


def _resume_and_compare(tmp_path: Path, ref, extra: dict | None = None) -> None:
    run = tmp_path / "cut"
    res = fit(
        te.toy_config(tmp_path, **{**OVER, **(extra or {}), "run.name": "cut", "run.resume": True}),
        train_data=te.toy_data(40),
        valid_data=te.toy_data(14, 1),
    )
    assert _comparable(res.history) == _comparable(ref.history)
    assert _csv_rows(run) == _csv_rows(tmp_path / "ref")
    assert te.weights_digest(res.model) == te.weights_digest(ref.model)
    best_a, _, _ = load_checkpoint(run / "checkpoints" / "best")
    best_b, _, _ = load_checkpoint(tmp_path / "ref" / "checkpoints" / "best")
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)
    rec = json.loads((run / "run.json").read_text())
    assert rec["status"] == "completed" and len(rec["resumed"]) == 1


@pytest.mark.parametrize("extra", [{}, FP16], ids=["fp32", "fp16-gradscaler"])
def test_run_killed_mid_epoch_in_a_subprocess_resumes_bit_identically(tmp_path, extra: dict):
    ref = _reference(tmp_path, extra)
    script = tmp_path / "run.py"
    script.write_text(
        SCRIPT.format(tests=str(TESTS), over={**OVER, **extra}, out=str(tmp_path), name="cut", kill_step=8)
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-2000:]
    _, meta, _ = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last")
    assert (meta["epoch"], meta["batch"], meta["step"]) == (1, 1, 6)  # the mid-epoch checkpoint of step 6
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["status"] == "running"  # killed, not finished
    _resume_and_compare(tmp_path, ref, extra)


def test_run_interrupted_after_an_epoch_resumes_bit_identically(tmp_path):
    from fernb.engine import Callback

    class Stop(Callback):
        def on_epoch_end(self, metrics):
            if metrics["epoch"] == 1:
                raise KeyboardInterrupt

    ref = _reference(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        fit(
            te.toy_config(tmp_path, **{**OVER, "run.name": "cut"}),
            train_data=te.toy_data(40),
            valid_data=te.toy_data(14, 1),
            callbacks=[Stop()],
        )
    _, meta, _ = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last")
    assert (meta["epoch"], meta["batch"]) == (1, 0)
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["status"] == "interrupted"
    _resume_and_compare(tmp_path, ref)


def test_fp16_skips_overflowing_steps_and_keeps_training(tmp_path):
    from fernb.engine.checkpoint import load_checkpoint as load

    res = fit(
        te.toy_config(tmp_path, **{**OVER, **FP16, "run.name": "half"}),
        train_data=te.toy_data(40),
        valid_data=te.toy_data(14, 1),
    )
    losses = [r["train_loss"] for r in res.history]
    assert all(map(torch.isfinite, torch.tensor(losses))) and losses[-1] < losses[0]
    assert res.history[-1]["valid_accuracy"] > 2 / 7  # it learned despite the skipped steps
    _, _, state = load(tmp_path / "half" / "checkpoints" / "last")
    assert 1.0 <= state["scaler"]["scale"] < 2.0**24  # overflowing steps halved the scale; training went on
    rec = json.loads((tmp_path / "half" / "run.json").read_text())
    assert rec["precision"] == "fp16" and rec["status"] == "completed"


def test_resume_without_a_run_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run to resume"):
        fit(te.toy_config(tmp_path, **{"run.resume": True}), train_data=te.toy_data(16))


def test_checkpoint_state_round_trips_without_pickle(tmp_path):
    import numpy as np

    opt_state = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(4)}},
        "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0], "best": float("inf")}],
    }
    tree, tensors = pack_state({"opt": opt_state, "rng": capture_rng(), "arr": np.arange(3, dtype=np.uint32)})
    json.dumps(tree, allow_nan=False)  # strict JSON
    back = unpack_state(tree, tensors)
    assert back["opt"]["param_groups"][0]["betas"] == (0.9, 0.999) and back["opt"]["param_groups"][0]["best"] == float(
        "inf"
    )
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], opt_state["state"][0]["exp_avg"])
    assert back["arr"].dtype == np.uint32 and back["arr"].tolist() == [0, 1, 2]
    state = capture_rng()
    a = torch.rand(3)
    restore_rng(unpack_state(*pack_state(state)))
    assert torch.equal(torch.rand(3), a)
    with pytest.raises(TypeError, match="pickling"):
        pack_state({"f": object()})


def test_checkpoint_swap_survives_a_crash_between_renames_and_detects_corruption(tmp_path):
    path = tmp_path / "last"
    save_checkpoint(path, {"w": torch.ones(2)}, {"epoch": 1}, {"x": torch.zeros(1)})
    path.rename(tmp_path / "last.old")  # as if the process died between the two renames
    w, meta, ts = load_checkpoint(path)
    assert meta["epoch"] == 1 and torch.equal(w["w"], torch.ones(2)) and torch.equal(ts["x"], torch.zeros(1))
    save_checkpoint(path, {"w": torch.ones(2) * 2}, {"epoch": 2})
    assert not (tmp_path / "last.old").exists()
    blob = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(blob[:-4] + b"\x00\x00\x00\x01")
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)


# -- every method on its tiny model: interrupted mid-epoch, resumed, equal to an uninterrupted run ---------------------
def _method_config(tmp_path: Path, spec: str, name: str, **extra):
    from fernb.engine import StageConfig

    # ESR: the interruption falls in the second branch's stage, after add_branch
    stages = [StageConfig(epochs=1), StageConfig(epochs=1, call="add_branch", reload_best=True)]
    return te.spec_config(
        spec,
        stages,
        **{
            "data.train_limit": 48,
            "data.valid_limit": 16,
            "data.batch_size": 8,
            "data.eval_batch_size": 16,
            "schedule.epochs": 2,
            "run.checkpoint_every_steps": 4,
            "run.out_dir": str(tmp_path),
            "run.name": name,
            **extra,
        },
    )


@pytest.mark.parametrize("spec", te.METHOD_SPECS)
def test_every_method_resumes_identically_after_an_interruption(tmp_path, spec: str):
    from fernb.engine import Callback

    class Interrupt(Callback):  # 6 steps per epoch: stop at step 9 (epoch 2), the last checkpoint is step 8's
        def on_step_end(self, trainer, logs):
            if logs["step"] == 9:
                raise KeyboardInterrupt

    ref = fit(_method_config(tmp_path, spec, "ref"))
    with pytest.raises(KeyboardInterrupt):
        fit(_method_config(tmp_path, spec, "cut"), callbacks=[Interrupt()])
    _, meta, _ = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last")
    assert (meta["epoch"], meta["step"]) == (1, 8)

    class Steps(Callback):
        seen: list[int] = []

        def on_step_end(self, trainer, logs):
            self.seen.append(logs["step"])

    res = fit(_method_config(tmp_path, spec, "cut", **{"run.resume": True}), callbacks=[Steps()])
    assert Steps.seen == [9, 10, 11, 12]  # it went on from step 8's checkpoint, not from the start
    assert _comparable(res.history) == _comparable(ref.history)
    assert te.weights_digest(res.model) == te.weights_digest(ref.model)
    if spec.startswith("esr"):
        assert res.model.num_active_branches == 2  # the resumed run is in the second branch's stage


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
