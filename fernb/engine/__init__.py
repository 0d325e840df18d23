"""The training engine and the evaluation protocol shared by every method.

- :func:`fit` trains any registered model with its registered loss from a :class:`TrainConfig`;
- :func:`config_from_preset` gives the published recipes (``"arbex/ferplus"``, ...), with ``smoke=True`` for CPU;
- :func:`evaluate` scores a finished run on the test split once (or another dataset), and records it;
  :func:`evaluate_checkpoint` scores a checkpoint file (official naming too) without a run folder;
- :func:`export_onnx` exports a run (or a model) to ONNX, checks it against ONNX Runtime and writes its model card;
- :func:`cross_validate` and :func:`repeat_seeds` run the protocols over folds and seeds;
- :mod:`fernb.engine.metrics` holds the metric maths.

Example::

    from fernb.engine import config_from_preset, fit, evaluate
    cfg = config_from_preset("resnet18/ferplus", smoke=True, run__name="demo")
    result = fit(cfg, callbacks=[lambda row: print(row["valid_accuracy"])])
    test = evaluate(result.run_dir, "test")
"""

from __future__ import annotations

from . import metrics
from .callbacks import Callback, History, TrustRamp
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import (
    ConfigError,
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    StageConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
    validate_config,
)
from .evaluate import evaluate, evaluate_checkpoint, map_predictions
from .export import ExportError, ExportResult, export_onnx, write_model_card
from .factory import load_run
from .fit import CompileError, FitResult, NonFiniteLossError, Trainer, fit, seed_everything
from .optim import SAM, LRSchedule, build_optimizer
from .overrides import apply_overrides, parse_overrides
from .predict import Predictions, predict
from .presets import DATASETS, METHODS, config_from_preset, list_presets
from .protocol import cross_validate, repeat_seeds
from .rundir import RunDir, RunExistsError

__all__ = [
    "fit",
    "FitResult",
    "Callback",
    "History",
    "TrustRamp",
    "NonFiniteLossError",
    "CompileError",
    "Trainer",
    "seed_everything",
    "evaluate",
    "evaluate_checkpoint",
    "export_onnx",
    "write_model_card",
    "ExportResult",
    "ExportError",
    "load_run",
    "map_predictions",
    "cross_validate",
    "repeat_seeds",
    "predict",
    "Predictions",
    "TrainConfig",
    "DataConfig",
    "ModelConfig",
    "LossConfig",
    "OptimConfig",
    "ScheduleConfig",
    "StageConfig",
    "RunConfig",
    "ConfigError",
    "apply_overrides",
    "parse_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "validate_config",
    "save_config",
    "config_from_preset",
    "list_presets",
    "METHODS",
    "DATASETS",
    "RunDir",
    "RunExistsError",
    "save_checkpoint",
    "load_checkpoint",
    "CheckpointError",
    "SAM",
    "LRSchedule",
    "build_optimizer",
    "metrics",
]
