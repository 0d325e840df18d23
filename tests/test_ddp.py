"""DDP with PyTorch's own launcher: ``torchrun --nproc_per_node 2 -m fernb.train`` on CPU (gloo, 127.0.0.1) keeps
the weights identical on both ranks (SAM's two passes and mid-epoch checkpoints included), reduces the metrics over
ranks and lets only rank 0 write and report; every method (ESR across its branch stages) trains this way."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import toys as te

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(cwd: Path, args: list[str]) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m fernb.train ARGS`` on CPU, one thread per rank."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)])}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "fernb.train",
        *args,
    ]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def test_torchrun_two_processes_keep_identical_weights(tmp_path):
    from fernb.data import load_dataset
    from fernb.engine import save_config

    cfg = te.toy_config(
        tmp_path,
        **te.SYNTH,
        **{
            "run.name": "ddp",
            "schedule.epochs": 2,
            "optim.sam": True,
            "run.checkpoint_every_steps": 2,
            "data.batch_size": 8,
        },
    )
    save_config(cfg, tmp_path / "ddp.yaml")
    n_train = len(load_dataset("synthetic", split="train", **cfg.data.options))  # fills the cache before the ranks
    proc = _torchrun(tmp_path, ["--import", "toys_plugin", "--config", str(tmp_path / "ddp.yaml")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "ddp"
    rec = json.loads((run / "run.json").read_text())
    assert rec["world_size"] == 2 and rec["status"] == "completed"
    digests = rec["ddp"]["weight_digests"]  # each rank hashed its own final weights
    assert len(digests) == 2 and digests[0] == digests[1] and rec["ddp"]["consistent"]
    assert rec["steps_per_epoch"] == -(-n_train // 2 // 8)  # each rank trains on its half of the epoch
    from fernb.engine.rundir import RunDir

    rows = RunDir(run).read_metrics()
    assert [r["train_samples"] for r in rows] == [n_train + n_train % 2] * 2  # summed over ranks (padded to even)
    assert proc.stdout.count("run:") == 1 and proc.stdout.count("best epoch") == 1  # only rank 0 reports


def test_a_budget_run_under_torchrun_plans_and_replans_as_one(tmp_path):
    """Both ranks time their own steps; rank 0's plan and re-plan bind both, so they stay in step to the end."""
    from fernb.data import load_dataset
    from fernb.engine import save_config

    cfg = te.toy_config(
        tmp_path,
        **te.SYNTH,
        **{"run.name": "ddp-budget", "schedule.budget_s": 6.0, "schedule.name": "cosine", "data.batch_size": 8},
    )
    save_config(cfg, tmp_path / "budget.yaml")
    load_dataset("synthetic", split="train", **cfg.data.options)  # fills the cache before the ranks
    proc = _torchrun(tmp_path, ["--import", "toys_plugin", "--config", str(tmp_path / "budget.yaml")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads((tmp_path / "ddp-budget" / "run.json").read_text())
    assert rec["world_size"] == 2 and rec["status"] == "completed" and rec["ddp"]["consistent"]
    assert "replan" in rec["budget"] and rec["steps"] == rec["planned_steps"] == rec["budget"]["steps"]


@pytest.mark.parametrize("spec", te.METHOD_SPECS)
def test_every_method_trains_under_torchrun_with_two_processes(tmp_path, spec: str):
    from fernb.engine import StageConfig, save_config

    # ESR: a second branch joins in the second stage (its parameters are unused before)
    cfg = te.spec_config(
        spec,
        [StageConfig(epochs=1), StageConfig(epochs=1, call="add_branch")],
        **{
            "data.train_limit": 32,
            "data.valid_limit": 16,
            "data.batch_size": 4,
            "data.eval_batch_size": 16,
            "schedule.epochs": 1,
            "run.out_dir": str(tmp_path),
            "run.name": "ddp",
        },
    )
    save_config(cfg, tmp_path / "ddp.yaml")
    proc = _torchrun(tmp_path, ["--config", str(tmp_path / "ddp.yaml")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert rec["world_size"] == 2 and rec["status"] == "completed" and rec["ddp"]["consistent"]
    digests = rec["ddp"]["weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]


def _event_files(root: Path) -> list[Path]:
    return sorted(root.rglob("events.out.tfevents.*"))


@pytest.mark.filterwarnings("ignore:fernb POSTER_V2 backbone")
def test_loggers_under_torchrun_write_one_record_from_rank_0(tmp_path, monkeypatch):
    """``run.loggers`` under DDP: one TensorBoard event file (and one MLflow run) in the run folder, written by rank 0
    alone, holding the reduced epoch rows of metrics.csv at their steps and ARBEx's validation confidences averaged
    over both ranks' shares of the validation split (the mean of the last checkpoint's own confidences)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from fernb.engine import save_config
    from fernb.engine.loggers import scalar_tags
    from fernb.engine.rundir import RunDir
    from fernb.explore.reliability import reliability_table

    has_mlflow = importlib.util.find_spec("mlflow") is not None
    loggers = ["tensorboard", "mlflow"] if has_mlflow else ["tensorboard"]
    uri = (tmp_path / "mlruns").as_uri()
    cfg = te.spec_config(
        "arbex",
        [],
        **{
            "data.train_limit": 32,
            "data.valid_limit": 15,  # odd: the ranks validate 8 and 7 samples
            "data.batch_size": 4,
            "data.eval_batch_size": 4,
            "schedule.epochs": 2,
            "run.out_dir": str(tmp_path),
            "run.name": "ddp",
            "run.loggers": loggers,
            "run.mlflow_uri": uri,
        },
    )
    save_config(cfg, tmp_path / "ddp.yaml")
    proc = _torchrun(tmp_path, ["--config", str(tmp_path / "ddp.yaml")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "ddp"
    assert json.loads((run / "run.json").read_text())["world_size"] == 2
    events = _event_files(tmp_path)
    assert events == _event_files(run / "tensorboard") and len(events) == 1, events  # rank 1 wrote nothing
    acc = EventAccumulator(str(events[0]), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    rows = RunDir(run).read_metrics()
    steps = [int(r["step"]) for r in rows]
    assert len(rows) == 2 and steps[0] > 0
    want = [scalar_tags(r) for r in rows]
    for tag in sorted(set(want[0]) - {f"time/{k}" for k in ("epoch_seconds", "samples_per_second")}):
        got = acc.Scalars(tag)
        assert [e.step for e in got] == steps, tag
        np.testing.assert_allclose([e.value for e in got], [w[tag] for w in want], rtol=1e-5, err_msg=tag)
    assert [e.step for e in acc.Scalars("step/loss")] == list(range(1, steps[-1] + 1))  # each step once
    assert [e.step for e in acc.Images("valid/confusion_matrix")] == steps

    last = reliability_table(run, "valid", checkpoint="last")
    assert len(last) == 15
    logged = acc.Scalars("valid/confidence_primary")[-1].value
    np.testing.assert_allclose(logged, last.frame.c_primary.mean(), rtol=1e-4)  # not rank 0's 8 samples alone

    if has_mlflow:
        from mlflow.tracking import MlflowClient

        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # what the logger sets for file stores, in rank 0
        client = MlflowClient(tracking_uri=uri)
        [exp] = [e for e in client.search_experiments() if e.name == "fernb"]
        [mlrun] = client.search_runs([exp.experiment_id])  # one MLflow run, not one per rank
        hist = client.get_metric_history(mlrun.info.run_id, "valid/accuracy")
        assert [m.step for m in hist] == steps
        np.testing.assert_allclose([m.value for m in hist], [r["valid_accuracy"] for r in rows], rtol=1e-6)
        assert mlrun.info.status == "FINISHED"
