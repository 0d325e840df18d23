"""TensorBoard and MLflow loggers chosen with ``run.loggers``: the event files and the file store, read back, hold the
epoch rows of ``metrics.csv`` at their steps, the step losses, ARBEx's trust and confidences and a confusion matrix
per validation; a resumed run logs no step twice; only the main process logs; a missing package is named."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import toys as te

from fernb.engine import Callback, ConfigError, TrainConfig, apply_overrides, fit
from fernb.engine import loggers as lg
from fernb.engine.rundir import RunDir

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

# 40 samples / batch 8: 5 steps an epoch, 3 epochs
OVER = {"schedule.epochs": 3, "optim.name": "adam", "data.sampler": "shuffle"}


def _events(path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def _steps(acc, tag: str) -> list[int]:
    return [e.step for e in acc.Scalars(tag)]


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _mlflow_run(tmp_path: Path, run: Path):
    import json

    rec = json.loads((run / "mlflow.json").read_text())
    client = _client(rec["tracking_uri"])
    return client, client.get_run(rec["run_id"])


def _fit(tmp_path: Path, callbacks=(), **over):
    cfg = te.toy_config(tmp_path, **{**OVER, **over})
    return fit(cfg, train_data=te.toy_data(40), valid_data=te.toy_data(14, 1), callbacks=list(callbacks))


def test_loggers_are_off_by_default_and_checked_by_name():
    assert TrainConfig().run.loggers == []
    cfg = apply_overrides(TrainConfig(), ['run.loggers=["tensorboard", "mlflow"]'])
    assert cfg.run.loggers == ["tensorboard", "mlflow"]
    for bad in (["wandb"], ["tensorboard", "tensorboard"]):
        with pytest.raises(ConfigError, match="run.loggers"):
            apply_overrides(TrainConfig(), {"run.loggers": bad})


def test_tensorboard_holds_the_epoch_rows_at_their_steps_and_a_confusion_matrix_per_validation(tmp_path: Path):
    res = _fit(tmp_path, **{"run.loggers": ["tensorboard"]})
    rows = RunDir(res.run_dir).read_metrics()
    acc = _events(res.run_dir / "tensorboard")
    epoch_steps = [int(r["step"]) for r in rows]
    assert epoch_steps == [5, 10, 15]
    for column, tag in [("train_loss", "train/loss"), ("valid_accuracy", "valid/accuracy"), ("lr", "train/lr")]:
        assert _steps(acc, tag) == epoch_steps
        np.testing.assert_allclose([e.value for e in acc.Scalars(tag)], [r[column] for r in rows], rtol=1e-6)
    assert _steps(acc, "step/loss") == list(range(1, 16)) and _steps(acc, "step/lr") == list(range(1, 16))
    images = acc.Images("valid/confusion_matrix")
    assert [e.step for e in images] == epoch_steps
    assert images[0].width > 100 and images[0].height > 100
    assert "config" in "".join(acc.Tags().get("tensors", []))


def test_mlflow_file_store_holds_metrics_params_and_artifacts(tmp_path: Path):
    uri = (tmp_path / "mlruns").as_uri()
    res = _fit(tmp_path, **{"run.loggers": ["mlflow"], "run.mlflow_uri": uri})
    rows = RunDir(res.run_dir).read_metrics()
    client, run = _mlflow_run(tmp_path, res.run_dir)
    assert run.info.status == "FINISHED" and run.info.run_name == "toy"
    hist = client.get_metric_history(run.info.run_id, "valid/accuracy")
    assert [m.step for m in hist] == [5, 10, 15]
    np.testing.assert_allclose([m.value for m in hist], [r["valid_accuracy"] for r in rows], rtol=1e-6)
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "step/loss")) == list(range(1, 16))
    assert run.data.params["optim.name"] == "adam" and run.data.params["data.batch_size"] == "8"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"config.json", "metrics.csv"}


class _Crash(Callback):
    """Flush the loggers' files and raise at step ``at`` (steps after the last checkpoint are logged by then)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, trainer, logs) -> None:
        if logs["step"] == self.at:
            for cb in trainer.callbacks:
                if isinstance(cb, lg.TensorBoardLogger):
                    cb.writer.flush()
            raise RuntimeError("crash")


def test_a_resumed_run_logs_every_step_once(tmp_path: Path):
    uri = (tmp_path / "mlruns").as_uri()
    over = {"run.checkpoint_every_steps": 3, "run.mlflow_uri": uri, "run.loggers": ["tensorboard", "mlflow"]}
    with pytest.raises(RuntimeError, match="crash"):  # last checkpoint at step 6, step 7 logged
        _fit(tmp_path, [_Crash(8)], **over)
    acc = _events(tmp_path / "toy" / "tensorboard")
    assert _steps(acc, "step/loss") == list(range(1, 8))  # the crash came before step 8 was logged
    res = _fit(tmp_path, **{**over, "run.resume": True})
    acc = _events(res.run_dir / "tensorboard")
    assert _steps(acc, "step/loss") == list(range(1, 16))
    assert _steps(acc, "valid/accuracy") == [5, 10, 15]
    client, run = _mlflow_run(tmp_path, res.run_dir)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "step/loss")]
    assert sorted(steps) == list(range(1, 16))
    assert [m.step for m in client.get_metric_history(run.info.run_id, "valid/accuracy")] == [5, 10, 15]
    assert run.info.status == "FINISHED"


@pytest.mark.filterwarnings("ignore:fernb POSTER_V2 backbone")
def test_arbex_trust_and_confidences_are_logged(tmp_path: Path):
    cfg = te.spec_config("arbex", [], **{"run.out_dir": str(tmp_path), "run.loggers": ["tensorboard"]})
    res = fit(cfg)
    acc = _events(res.run_dir / "tensorboard")
    tags = set(acc.Tags()["scalars"])
    assert {"train/trust", "valid/confidence_primary", "valid/confidence_anchor", "valid/confidence_attention"} <= tags
    assert all(0 <= e.value <= 1 for e in acc.Scalars("valid/confidence_primary"))


def test_only_the_main_process_logs(tmp_path: Path):
    trainer = SimpleNamespace(env=SimpleNamespace(is_main=False), global_step=0, run_dir=RunDir(tmp_path / "r"))
    tb = lg.TensorBoardLogger()
    tb.on_fit_start(trainer)
    tb.on_step_end(trainer, {"step": 1, "loss": 1.0, "lr": 0.1})
    tb.on_epoch_end({"epoch": 1, "step": 1, "train_loss": 1.0})
    assert tb.writer is None and not (tmp_path / "r").exists()


def test_a_missing_package_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(lg, "_installed", lambda module: False)
    with pytest.raises(lg.LoggerNotInstalledError, match=r"mlflow-skinny.*fernb\[logs\]"):
        _fit(tmp_path, **{"run.loggers": ["mlflow"]})
    assert not (tmp_path / "toy").exists()  # refused before the run folder is made


def test_scalar_tags_name_columns_by_split():
    row = {"epoch": 2, "step": 10, "lr": 0.1, "train_loss": 1.5, "valid_accuracy": 0.5, "epoch_seconds": 3.0}
    assert lg.scalar_tags({**row, "partial": 1, "note": "x"}) == {
        "progress/epoch": 2.0,
        "train/lr": 0.1,
        "train/loss": 1.5,
        "valid/accuracy": 0.5,
        "time/epoch_seconds": 3.0,
    }


def test_a_run_resumed_with_loggers_turned_on_logs_from_there(tmp_path: Path):
    with pytest.raises(RuntimeError, match="crash"):  # no loggers; last checkpoint at step 6
        _fit(tmp_path, [_Crash(8)], **{"run.checkpoint_every_steps": 3})
    over = {"run.checkpoint_every_steps": 3, "run.resume": True, "run.loggers": ["tensorboard"]}
    res = _fit(tmp_path, **over)  # no run.allow_config_change needed: loggers change no result
    assert _steps(_events(res.run_dir / "tensorboard"), "step/loss") == list(range(7, 16))


def test_validation_confidences_are_averaged_over_every_process():
    """Under DDP each process validates a share of the samples: the logged mean is over all of them (the sums and
    counts of every process are gathered), not over the main process's share."""
    import torch
    from torch import nn

    class Out:
        def __init__(self, c):
            self.c = c

        def extras(self):
            return {"confidence_primary": self.c}

    class Net(nn.Module):
        def forward(self, x):
            return Out(x)

    shares = [torch.tensor([[0.2], [0.4]]), torch.tensor([[0.9]])]
    means = []
    for share in shares:
        m = lg._ConfidenceMeans()
        net = Net()
        m.attach(net)
        net(share)
        means.append(m)
    parts = np.empty(2, dtype=object)
    parts[:] = [(m.sums, m.count) for m in means]
    env = SimpleNamespace(distributed=True, all_gather_array=lambda arr: parts)
    assert means[0].detach(env) == pytest.approx({"valid/confidence_primary": 0.5})
    assert means[1].detach() == pytest.approx({"valid/confidence_primary": 0.9})  # one process: its own samples
