"""DDP with PyTorch's own launcher: ``torchrun --nproc_per_node 2 -m fernb.train`` on CPU (gloo, 127.0.0.1) keeps
the weights identical on both ranks (SAM's two passes and mid-epoch checkpoints included), reduces the metrics over
ranks and lets only rank 0 write and report; every method (ESR across its branch stages) trains this way."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

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
