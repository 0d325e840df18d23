"""Training logs that the ecosystem reads: TensorBoard event files and an MLflow tracking store.

Both are :class:`~fernb.engine.callbacks.Callback` objects, chosen with ``run.loggers`` (``["tensorboard",
"mlflow"]``; default none) and added by ``fit``. ``metrics.csv`` stays the run's record: the loggers copy its epoch
rows (losses and loss terms, accuracy, learning rate, ARBEx's trust ``train/trust``), add the step loss and learning
rate, the mean validation confidences of models that output them (ARBEx's ``confidence_primary`` / ``_anchor`` /
``_attention``) and, in TensorBoard, a confusion-matrix image of every validation.

- TensorBoard writes to ``<run>/tensorboard`` (``tensorboard --logdir runs`` lists every run); a resumed run opens
  its writer with ``purge_step`` = the resumed step + 1, so that what an interrupted run logged after its last
  checkpoint is dropped and no step is shown twice.
- MLflow logs to ``run.mlflow_uri`` (default ``$MLFLOW_TRACKING_URI``, else the file store ``<run.out_dir>/mlruns``:
  ``mlflow ui --backend-store-uri runs/mlruns``), experiment ``fernb``, one MLflow run per run folder (its id is kept
  in ``<run>/mlflow.json``); a resumed run reopens it and skips the steps it already holds. The config is logged as
  parameters, ``config.json`` and ``metrics.csv`` as artifacts. MLflow 3 refuses a file store unless
  ``MLFLOW_ALLOW_FILE_STORE`` is set: fernb sets it for ``file:`` URIs (the file store still works; MLflow no longer
  develops it).

Only the main process logs under DDP: one set of event files, one MLflow run. The epoch rows are the reduced ones
of ``metrics.csv``; the validation confidences are averaged over every process's share of the validation split; the
step loss is the main process's own batch loss (its share of the global batch). A logger whose package is missing
raises :class:`LoggerNotInstalledError` naming the package to install, before training starts.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .callbacks import Callback
from .config import LOGGERS, TrainConfig

if TYPE_CHECKING:
    from .fit import FitResult, Trainer

__all__ = [
    "LOGGER_PACKAGES",
    "LoggerNotInstalledError",
    "TensorBoardLogger",
    "MLflowLogger",
    "build_loggers",
    "scalar_tags",
    "confusion_image",
]

# run.loggers name -> (module that must import, pip requirement to install)
LOGGER_PACKAGES: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow-skinny"),
}
TIME_COLUMNS = ("epoch_seconds", "samples_per_second", "elapsed_seconds")
SKIPPED_COLUMNS = ("step", "partial")
MLFLOW_EXPERIMENT = "fernb"


class LoggerNotInstalledError(ImportError):
    """A logger named in ``run.loggers`` whose package is not installed."""


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _require(name: str) -> None:
    module, requirement = LOGGER_PACKAGES[name]
    if not _installed(module):
        raise LoggerNotInstalledError(
            f"run.loggers includes {name!r}, which needs the {requirement} package: "
            f"pip install {requirement} (or pip install 'fernb[logs]'), or drop {name!r} from run.loggers"
        )


def build_loggers(cfg: TrainConfig) -> list[Callback]:
    """The callbacks of ``cfg.run.loggers``, in order; raises :class:`LoggerNotInstalledError` for a missing package."""
    out: list[Callback] = []
    for name in cfg.run.loggers:
        if name not in LOGGER_PACKAGES:  # the config checks the names too; a hand-built config may skip that
            raise ValueError(f"run.loggers: unknown logger {name!r}; expected some of {', '.join(LOGGERS)}")
        _require(name)
        out.append(TensorBoardLogger() if name == "tensorboard" else MLflowLogger(cfg.run.mlflow_uri))
    return out


def scalar_tags(row: Mapping[str, Any]) -> dict[str, float]:
    """An epoch row of ``metrics.csv`` as ``{tag: value}``: ``train_loss`` -> ``train/loss``, ``valid_accuracy`` ->
    ``valid/accuracy``, ``lr`` -> ``train/lr``, timings under ``time/``, ``epoch`` (and ``stage``) under
    ``progress/``; ``step`` (the x axis) and non-numbers are left out."""
    out: dict[str, float] = {}
    for key, value in row.items():
        if key in SKIPPED_COLUMNS or isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            continue
        if key.startswith(("train_", "valid_")):
            tag = key.replace("_", "/", 1)
        elif key == "lr":
            tag = "train/lr"
        elif key in TIME_COLUMNS:
            tag = f"time/{key}"
        else:
            tag = f"progress/{key}"
        out[tag] = float(value)
    return out


def confusion_image(targets: np.ndarray, preds: np.ndarray, class_names: Sequence[str], title: str = "") -> np.ndarray:
    """A row-normalised confusion matrix (rows: true class, cells: share of the row, counts in brackets) as an
    (H, W, 3) uint8 image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    c = len(class_names)
    counts = np.zeros((c, c), dtype=np.int64)
    np.add.at(counts, (np.asarray(targets, dtype=np.int64), np.asarray(preds, dtype=np.int64)), 1)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = 1.6 + 0.55 * c
    fig = Figure(figsize=(size, size), dpi=80, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(c):
        for j in range(c):
            color = "white" if share[i, j] > 0.5 else "black"
            ax.text(j, i, f"{share[i, j]:.2f}\n({counts[i, j]})", ha="center", va="center", fontsize=6, color=color)
    ax.set_xticks(range(c), class_names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(c), class_names, fontsize=7)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("true", fontsize=8)
    if title:
        ax.set_title(title, fontsize=8)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class _ConfidenceMeans:
    """A forward hook on the model during validation: the mean of every ``confidence_*`` output (ARBEx's)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self._handle: Any = None

    def attach(self, model: nn.Module) -> None:
        self.detach()
        self.sums, self.count = {}, 0
        self._handle = model.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        extras = output.extras() if hasattr(output, "extras") else {}
        found = {k: v for k, v in extras.items() if k.startswith("confidence_") and isinstance(v, torch.Tensor)}
        if not found:
            return
        n = 0
        for k, v in found.items():
            v = v.detach().float().reshape(len(v), -1).mean(1)
            self.sums[k] = self.sums.get(k, 0.0) + float(v.sum())
            n = len(v)
        self.count += n

    def detach(self, env: Any = None) -> dict[str, float]:
        """Remove the hook; returns ``{"valid/<name>": mean}`` over what it saw, on every process.

        Under DDP (``env.distributed``) each process validates its share of the samples, so the sums and counts of
        all processes are gathered first: every process must call this after a validation (a collective call)."""
        attached = self._handle is not None
        if attached:
            self._handle.remove()
            self._handle = None
        sums, count = self.sums, self.count
        if attached and env is not None and getattr(env, "distributed", False):
            parts = np.empty(1, dtype=object)
            parts[0] = (dict(sums), count)
            sums, count = {}, 0
            for part_sums, part_count in env.all_gather_array(parts):
                for k, v in part_sums.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += part_count
        return {f"valid/{k}": s / count for k, s in sums.items()} if count else {}


class _RunLogger(Callback):
    """What both loggers share: main process only, the trainer, step scalars, epoch rows and confidences."""

    def __init__(self) -> None:
        self.trainer: Trainer | None = None
        self.active = False
        self._confidences = _ConfidenceMeans()

    def on_fit_start(self, trainer: Trainer) -> None:
        self.trainer, self.active = trainer, bool(trainer.env.is_main)
        if self.active:
            self.open(trainer)

    def on_validation_start(self, trainer: Trainer) -> None:
        # every process, not only the main one: under DDP each validates a share of the samples (detach gathers them)
        self._confidences.attach(trainer.model)

    def on_step_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if self.active:
            self.log_scalars({"step/loss": float(logs["loss"]), "step/lr": float(logs["lr"])}, int(logs["step"]))

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        confidences = self._confidences.detach(self.trainer.env if self.trainer is not None else None)
        if not self.active:
            return
        step = int(metrics["step"])
        self.log_scalars({**scalar_tags(metrics), **confidences}, step)
        self.log_epoch_extra(metrics, step)
        self.flush()

    def on_fit_end(self, result: FitResult) -> None:
        if self.active:
            self.close(result)
            self.active = False

    # -- what each logger implements ----------------------------------------------------------------------------------
    def open(self, trainer: Trainer) -> None:
        raise NotImplementedError

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        raise NotImplementedError

    def log_epoch_extra(self, metrics: Mapping[str, Any], step: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self, result: FitResult) -> None:
        pass


class TensorBoardLogger(_RunLogger):
    """TensorBoard event files in ``<run>/tensorboard`` (or ``log_dir``): every epoch row's numbers, the step loss and
    learning rate, validation confidences, and a confusion-matrix image per validation (``confusion=True``)."""

    def __init__(self, log_dir: str | os.PathLike | None = None, confusion: bool = True) -> None:
        super().__init__()
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.confusion = confusion
        self.writer: Any = None

    def open(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        path = self.log_dir or trainer.run_dir.path / "tensorboard"
        resumed = trainer.global_step > 0
        # a resumed run drops what was logged after its last checkpoint: events at steps >= purge_step
        self.writer = SummaryWriter(str(path), purge_step=trainer.global_step + 1 if resumed else None)
        if not resumed:
            text = json.dumps(trainer.cfg.to_dict(), indent=2, default=str)
            self.writer.add_text("config", "```\n" + text + "\n```", 0)

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        for tag, value in scalars.items():
            if math.isfinite(value):
                self.writer.add_scalar(tag, value, step)

    def log_epoch_extra(self, metrics: Mapping[str, Any], step: int) -> None:
        pred = getattr(self.trainer, "last_validation", None)
        if not self.confusion or pred is None or "valid_accuracy" not in metrics or self.trainer is None:
            return
        names = list(self.trainer.bundle.valid.class_names)
        title = f"epoch {metrics['epoch']}, step {step}: valid accuracy {float(metrics['valid_accuracy']):.3f}"
        image = confusion_image(pred.targets, pred.preds, names, title)
        self.writer.add_image("valid/confusion_matrix", image, step, dataformats="HWC")

    def flush(self) -> None:
        self.writer.flush()

    def close(self, result: FitResult) -> None:
        self.writer.close()


def _tracking_uri(uri: str | None, out_dir: Path) -> str:
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or (out_dir / "mlruns").resolve().as_uri()
    if uri.startswith("file:") or "://" not in uri and not uri.startswith(("sqlite:", "databricks")):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses file stores without it
    return uri


def _flat_params(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flat_params(v, key + "."))
        else:
            out[key] = json.dumps(v, default=str)[:500] if not isinstance(v, str) else v[:500]
    return out


class MLflowLogger(_RunLogger):
    """An MLflow run per run folder: the epoch rows' numbers, step loss and learning rate and validation confidences
    as metrics, the config as parameters, ``config.json`` and ``metrics.csv`` as artifacts at the end."""

    RECORD = "mlflow.json"

    def __init__(self, tracking_uri: str | None = None, experiment: str = MLFLOW_EXPERIMENT) -> None:
        super().__init__()
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.client: Any = None
        self.run_id = ""
        self.logged_through = -1  # steps up to this one are already in the store (a resumed run)

    def open(self, trainer: Trainer) -> None:
        from mlflow.tracking import MlflowClient

        cfg = trainer.cfg
        uri = _tracking_uri(self.tracking_uri, Path(cfg.run.out_dir))
        self.client = MlflowClient(tracking_uri=uri)
        record = trainer.run_dir.path / self.RECORD
        old = json.loads(record.read_text()) if trainer.global_step > 0 and record.exists() else {}
        if old.get("tracking_uri") == uri and self._reopen(old["run_id"]):
            return
        exp = self.client.get_experiment_by_name(self.experiment)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(self.experiment)
        tags = {
            "fernb.run_dir": str(trainer.run_dir.path.resolve()),
            "model": cfg.model.name,
            "dataset": cfg.data.dataset,
        }
        run = self.client.create_run(exp_id, run_name=cfg.run_name, tags=tags)
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in _flat_params(cfg.to_dict()).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters a batch
            self.client.log_batch(self.run_id, params=params[i : i + 100])
        record.write_text(json.dumps({"tracking_uri": uri, "run_id": self.run_id}, indent=2) + "\n")

    def _reopen(self, run_id: str) -> bool:
        try:
            run = self.client.get_run(run_id)
        except Exception:  # deleted or another store: start a new MLflow run
            return False
        self.run_id = run_id
        steps = [m.step for key in run.data.metrics for m in self.client.get_metric_history(run_id, key)]
        self.logged_through = max(steps, default=-1)
        self.client.update_run(run_id, status="RUNNING")
        return True

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        if step <= self.logged_through:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in scalars.items() if math.isfinite(v)]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, result: FitResult) -> None:
        for name in ("config.json", "metrics.csv"):
            path = Path(result.run_dir) / name
            if path.exists():
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status="FINISHED")
