"""``fit(config)``: the one training loop for every method.

A method plugs in its model (``fernb.models``) and its loss (``fernb.losses``); the engine owns everything else:
data order, optimiser (SAM included), schedule, mixed precision, gradient clipping, the trust ramp (every loss call
gets a :class:`~fernb.losses.StepInfo`), staged schedules (ESR's branch-by-branch training), validation and model
selection, checkpoints, exact resume, DDP, progress bars and callbacks.

Hooks a model may define (all optional):

- ``param_groups(lr) -> list[dict]``: its own optimiser groups (each ``{"params": [...], "lr": ...}``).
- ``on_epoch_start(epoch, num_epochs) -> bool | None``: called before every epoch; return True when the set of
  trainable parameters changed, and the engine rebuilds the optimiser.
- any method named by ``schedule.stages[i].call`` (e.g. ``add_branch``), called when stage i starts.

The step loop reads one number per step from the device: the loss, to stop before a non-finite loss updates the
weights (SAM: once per pass). The epoch's running sums (loss, loss terms, correct predictions) stay on the device
(:class:`_EpochSums`) and are read at checkpoints, progress-bar refreshes (at most once a second) and the epoch's end.
With ``run.compile`` the training forward and backward run through ``torch.compile`` (:meth:`Trainer._compile`).
"""

from __future__ import annotations

import copy
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from ..data.base import FERDataset
from ..data.factory import dataset_info
from ..errors import FernbError
from ..labels import get_label_space
from ..losses import StepInfo, create_loss
from .callbacks import Callback, FunctionCallback, History, TrustRamp
from .checkpoint import capture_rng, checkpoint_exists, load_checkpoint, restore_rng, save_checkpoint
from .config import (
    CLASS_WEIGHT_POWERS,
    HARMLESS_CHANGES,
    ConfigError,
    ScheduleConfig,
    StageConfig,
    TrainConfig,
    config_changes,
    config_text,
    load_config,
    validate_config,
)
from .data import DataBundle, build_batch_transform, build_datasets, class_weights, epoch_indices, make_loader
from .distributed import DistEnv, init_distributed
from .factory import build_model, load_run
from .loggers import build_loggers
from .metrics import classification_metrics
from .noise_detection import NoiseDetector
from .optim import SAM, LRSchedule, build_optimizer, optimizer_impl
from .predict import Predictions, autocast_context, float_output, predict
from .rundir import (
    RunDir,
    RunLock,
    RunMissingError,
    atomic_write_many,
    environment_record,
    epoch_tag,
    json_bytes,
    now_iso,
)
from .step import LossScaler

__all__ = [
    "fit",
    "FitResult",
    "Callback",
    "History",
    "NonFiniteLossError",
    "CompileError",
    "Trainer",
    "seed_everything",
    "resolve_precision",
]  # Callback and History live in .callbacks

TIMING_COLUMNS = ("epoch_seconds", "samples_per_second", "elapsed_seconds")


class NonFiniteLossError(FernbError, FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the loss terms."""


class CompileError(FernbError, RuntimeError):
    """``torch.compile`` could not compile the model (``run.compile``); the message says what failed."""


COMPILE_TIMED_STEPS = 12
"""With ``run.compile``, the first steps of a process that are timed to measure the compilation's warm-up."""


def _compile_errors() -> tuple[type[BaseException], ...]:
    """The exception types of a failed compilation (Dynamo's, Inductor's, a C++ compiler's)."""
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import CppCompileError, LoweringException

    return (TorchDynamoException, CppCompileError, LoweringException)


def compile_warmup(times: Sequence[float]) -> dict[str, Any]:
    """The compilation's extra time from the wall times of a process's first steps (compiled on first use).

    The steady step time is the median of the later half of ``times``; the warm-up is what the steps took beyond
    it (with fewer than 4 steps: the first step's excess over the fastest other one, or the whole first step).
    """
    times = [float(t) for t in times]
    if not times:
        return {"warmup_seconds": None, "first_step_seconds": None, "steady_step_seconds": None, "steps_timed": 0}
    steady: float | None
    if len(times) >= 4:
        steady = float(np.median(times[len(times) // 2 :]))
        warmup = sum(max(0.0, t - steady) for t in times)
    else:
        steady = min(times[1:]) if len(times) > 1 else None
        warmup = times[0] - (steady or 0.0)
    return {
        "warmup_seconds": max(0.0, warmup),
        "first_step_seconds": times[0],
        "steady_step_seconds": steady,
        "steps_timed": len(times),
    }


class _EpochSums:
    """An epoch's running training sums, kept on the device: no host read per step.

    ``loss`` and the loss terms are float64 and add each batch's value x batch size as the Python floats of the
    checkpoints do (the same products and sums, bit for bit), so ``metrics.csv`` is what per-step reads gave.
    """

    def __init__(self, device: torch.device, sums: Mapping[str, Any] | None = None) -> None:
        sums = sums or {"n": 0, "loss": 0.0, "correct": 0, "terms": {}}
        self.device = device
        self.dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self.n = int(sums["n"])
        self.loss = self._scalar(float(sums["loss"]))
        self.correct = torch.tensor(int(sums["correct"]), dtype=torch.int64, device=device)
        self.terms = {k: self._scalar(float(v)) for k, v in sums["terms"].items()}

    def _scalar(self, value: float) -> torch.Tensor:
        return torch.tensor(value, dtype=self.dtype, device=self.device)

    def add(self, lo: Any, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch: its loss output, logits ``(B, K)`` and targets ``(B,)`` (on the device)."""
        bs = int(target.shape[0])
        self.n += bs
        self.loss += lo.total.detach().to(self.device, self.dtype) * bs
        self.correct += (logits.detach().argmax(1) == target).sum()
        for k, v in lo.terms.items():
            if k not in self.terms:
                self.terms[k] = self._scalar(0.0)  # 0.0 + x, as the Python sums began (-0.0 becomes 0.0)
            self.terms[k] += torch.as_tensor(v).detach().to(self.device, self.dtype) * bs

    def mean_loss(self) -> float:
        return float(self.loss) / max(1, self.n)

    def accuracy(self) -> float:
        return int(self.correct) / max(1, self.n)

    def to_dict(self) -> dict[str, Any]:
        """The sums as Python numbers (what checkpoints and the epoch row take)."""
        return {
            "n": self.n,
            "loss": float(self.loss),
            "correct": int(self.correct),
            "terms": {k: float(v) for k, v in self.terms.items()},
        }


@dataclass
class FitResult:
    """What ``fit`` returns.

    Attributes:
        run_dir: the run folder.
        config: the config the run used.
        history: one row per epoch (as in ``metrics.csv``).
        best_epoch: 1-based epoch of the best validation value of ``monitor`` (None if never validated).
        best_value: that value.
        best_metrics: the best epoch's row.
        stop_reason: ``"completed"``, ``"max_steps"``, ``"time_budget"`` or ``"early_stop"``.
        model: the model with the last weights (unwrapped from DDP).
        train_seconds: wall time spent training (validation included).
        steps: optimiser steps taken.
    """

    run_dir: Path
    config: TrainConfig
    history: list[dict[str, Any]]
    best_epoch: int | None
    best_value: float | None
    best_metrics: dict[str, Any]
    stop_reason: str
    model: nn.Module
    train_seconds: float
    steps: int
    info: dict[str, Any] = field(default_factory=dict)

    def load_best(self, device: str = "cpu") -> nn.Module:
        """A fresh model with the best checkpoint's weights (eval mode)."""
        return load_run(self.run_dir, "best", device=device)[1]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device, sam: bool = False) -> str:
    """The concrete precision: ``auto`` picks fp16 (+GradScaler) on CUDA (bf16 with SAM where supported, else fp32),
    bf16 on CPUs with native bf16 and fp32 elsewhere. An explicit fp16 also runs on a CPU (CPU autocast and
    GradScaler support it; slower than fp32 there, but the same code path as on CUDA)."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ConfigError(f"run.precision={precision!r}; expected auto, fp32, bf16 or fp16")
    if precision == "auto":
        if device.type == "cuda":
            if sam:
                return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
            return "fp16"
        return "bf16" if _cpu_has_bf16() else "fp32"
    if precision == "fp16" and device.type not in ("cuda", "cpu"):
        raise ConfigError(f"run.precision=fp16 (GradScaler) runs on CUDA or CPU, not {device.type}; use bf16 or fp32")
    if precision == "fp16" and sam:
        raise ConfigError("SAM's two passes are not combined with fp16 loss scaling; use run.precision=bf16 or fp32")
    return precision


def _stage_bounds(stages: Sequence[StageConfig], epochs: int) -> list[tuple[int, int]]:
    """[(first_epoch, last_epoch_exclusive)] per stage (one stage spanning the run without stages)."""
    if not stages:
        return [(0, epochs)]
    out, start = [], 0
    for s in stages:
        out.append((start, start + s.epochs))
        start += s.epochs
    return out


def check_schedule(s: ScheduleConfig) -> None:
    """Refuse contradictory or out-of-range step plans and warm-ups before anything is built."""
    if s.steps is not None and s.budget_s is not None:
        raise ConfigError(
            f"schedule.steps={s.steps} and schedule.budget_s={s.budget_s}: give one (a budget is turned into steps)"
        )
    if s.steps is not None and s.steps < 1:
        raise ConfigError(f"schedule.steps={s.steps}; expected a positive number of optimiser steps")
    if s.first_steps is not None and (s.steps is None or s.first_steps < 1):
        raise ConfigError(
            f"schedule.first_steps={s.first_steps} replays a re-planned budget run and needs schedule.steps (its "
            "budget.steps) and a positive count (its budget.first_steps); give both from the run's run.json"
        )
    if s.budget_s is not None and not s.budget_s > 0:
        raise ConfigError(f"schedule.budget_s={s.budget_s}; expected a positive number of seconds")
    if not 0.0 <= s.warmup_fraction < 1.0:
        raise ConfigError(f"schedule.warmup_fraction={s.warmup_fraction}; expected a fraction in [0, 1)")


def _dry_forward(model: nn.Module, channels: int, side: int) -> str | None:
    """Run ``model`` (eval mode) on a zero batch of two ``side`` x ``side`` images; the error's first line, or None."""
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, channels, side, side))
    except (RuntimeError, ValueError, IndexError, AssertionError) as exc:
        text = str(exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__
    return None


def _timed_enough(times: list[float], min_time: float) -> bool:
    """Enough step timings for a budget plan: the first two (warm-up) left out, 80 steps or ``min_time`` seconds."""
    timed = times[2:]
    return len(timed) >= 80 or (len(timed) >= 5 and sum(timed) >= min_time)


def _count(model: nn.Module, trainable: bool) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


class Trainer:
    """The state of one run. Use :func:`fit`; the class is public for callbacks to inspect."""

    # built by run()
    bundle: DataBundle
    model: nn.Module
    net: nn.Module  # the model as trained: itself, or its DDP wrapper
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer | SAM
    schedule: LRSchedule
    scaler: LossScaler
    steps_per_epoch: int
    total_steps: int

    def __init__(
        self,
        cfg: TrainConfig,
        env: DistEnv,
        train_data: FERDataset | None = None,
        valid_data: FERDataset | None = None,
        callbacks: Sequence[Callback | Callable] = (),
    ) -> None:
        validate_config(cfg)
        self.cfg, self.env = cfg, env
        self.callbacks = [c if isinstance(c, Callback) else FunctionCallback(c) for c in callbacks]
        self.callbacks += build_loggers(cfg)  # run.loggers: TensorBoard, MLflow
        self._engine_callbacks: list[Callback] = []
        self.run_dir = RunDir(cfg.run_dir)
        self._train_data, self._valid_data = train_data, valid_data
        self.device = env.device
        self.precision = resolve_precision(cfg.run.precision, self.device, cfg.optim.sam)
        self.stages: list[StageConfig] = list(cfg.schedule.stages)
        self.total_epochs = cfg.schedule.total_epochs
        self.planned_steps: int | None = None  # schedule.steps, or what schedule.budget_s came to
        self.budget: dict[str, Any] | None = None
        self._next_steps: int | None = None  # the plan after the first epoch (schedule.first_steps replays)
        if self.total_epochs < 1:
            raise ConfigError("schedule.epochs (or the sum of schedule.stages[].epochs) must be >= 1")
        check_schedule(cfg.schedule)
        if cfg.schedule.monitor_mode not in ("max", "min"):
            raise ConfigError(f"schedule.monitor_mode={cfg.schedule.monitor_mode!r}; expected max or min")
        if cfg.run.loss_scale <= 0:
            raise ConfigError(f"run.loss_scale={cfg.run.loss_scale}; expected a positive initial fp16 loss scale")
        self.stage_bounds = _stage_bounds(self.stages, self.total_epochs)
        self.history: list[dict[str, Any]] = []
        self.global_step = 0
        self.epoch = 0
        self.applied_stage = -1
        self.stage_calls: list[str] = []
        self.best: dict[str, Any] = {"epoch": None, "value": None, "metrics": {}}
        self.stage_best: dict[str, Any] = {"value": None, "state": None}
        self.bad_validations = 0
        self.train_seconds = 0.0
        self.stop_reason = "completed"
        self.noise_detector: NoiseDetector | None = None  # set when the training split knows its flipped labels
        self._aside: Path | None = None  # the old run that run.overwrite replaces, until the first epoch ends
        self._config_changes: dict[str, tuple[Any, Any]] = {}
        self.last_validation: Predictions | None = None  # the latest validation's predictions (for loggers)
        self.compile_mode: str | None = (
            None if cfg.run.compile is False else "default" if cfg.run.compile is True else str(cfg.run.compile)
        )
        self.compile_info: dict[str, Any] | None = None  # the warm-up this process measured (run.json: compile)
        self._compiled: tuple[nn.Module, nn.Module] | None = None  # (module, its compiled wrapper), reused
        self._step_times: list[float] | None = None  # wall times of this process's first compiled steps

    # -- building blocks ----------------------------------------------------------------------------------------------
    def _is_better(self, value: float | None, best: float | None) -> bool:
        if value is None or not math.isfinite(value):
            return False
        if best is None:
            return True
        return value > best if self.cfg.schedule.monitor_mode == "max" else value < best

    def _build_model(self, num_classes: int) -> nn.Module:
        m = self.cfg.model
        if m.num_classes is not None and m.num_classes != num_classes:
            raise ConfigError(f"model.num_classes={m.num_classes} but the label space has {num_classes} classes")
        model = build_model(m, num_classes, self.cfg.data.img_size)
        self._check_stage_calls(model)
        return model

    def _check_stage_calls(self, model: nn.Module) -> None:
        """Refuse, before training, a schedule that calls a stage method more often than the model allows (ESR
        cannot add more branches than it has)."""
        stage_call_limits = getattr(model, "stage_call_limits", None)
        limits = stage_call_limits() if stage_call_limits is not None else {}
        calls = [s.call for s in self.stages if s.call]
        for call, limit in limits.items():
            if calls.count(call) > limit:
                raise ConfigError(
                    f"schedule.stages call {call!r} {calls.count(call)} times, but {self.cfg.model.name} "
                    f"({self.cfg.model.preset}) allows {limit} (e.g. ESR can add num_branches - 1 branches); "
                    f"drop stages, or build a larger model (model.kwargs)"
                )

    def _place(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to the run's device (and to channels-last memory with ``run.channels_last``)."""
        model.to(self.device)
        if self.cfg.run.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def _build_loss(self, bundle: DataBundle) -> nn.Module:
        kw = dict(self.cfg.loss.kwargs)
        cw = self.cfg.loss.class_weights
        if cw in CLASS_WEIGHT_POWERS:
            kw["class_weights"] = class_weights(bundle.train.targets, bundle.train.num_classes, CLASS_WEIGHT_POWERS[cw])
        elif cw != "none":
            raise ConfigError(f"loss.class_weights={cw!r}; expected one of none, {', '.join(CLASS_WEIGHT_POWERS)}")
        return create_loss(self.cfg.loss_name, **kw)

    @property
    def _all_callbacks(self) -> list[Callback]:
        """The engine's own callbacks (ARBEx's :class:`TrustRamp`), then the user's."""
        return [*self._engine_callbacks, *self.callbacks]

    def _stage_of(self, epoch: int) -> int:
        for i, (a, b) in enumerate(self.stage_bounds):
            if a <= epoch < b:
                return i
        return len(self.stage_bounds) - 1

    def _stage_lr(self, stage: int) -> float:
        lr = self.stages[stage].lr if self.stages else None
        if lr is not None:
            return float(lr)
        return self.cfg.optim.lr

    def _schedule_epoch(self, epoch: int) -> int:
        stage = self._stage_of(epoch)
        stages = self.stages
        if stages and stages[stage].restart_schedule:
            return epoch - self.stage_bounds[stage][0]
        return epoch

    def _new_optimizer(self, stage: int) -> None:
        self.optimizer = build_optimizer(self.model, self.cfg.optim, self._stage_lr(stage))
        loss_params = [p for p in self.loss_fn.parameters() if p.requires_grad]
        if loss_params:
            base = self.optimizer.base if isinstance(self.optimizer, SAM) else self.optimizer
            lr = self._stage_lr(stage)
            base.add_param_group({"params": loss_params, "lr": lr, "base_lr": lr, "name": "loss"})
        self._new_schedule(stage, keep_state=False)

    def _new_schedule(self, stage: int, keep_state: bool) -> None:
        """The lr schedule of ``stage`` for the current plan; the plateau state carries over unless the stage
        restarts its schedule (``keep_state``: always)."""
        restart = not self.stages or self.stages[stage].restart_schedule
        old = getattr(self, "schedule", None)
        self.schedule = LRSchedule(self.cfg.schedule, self._span(stage, restart), self.steps_per_epoch)
        if old is not None and (keep_state or not restart):
            self.schedule.load_state_dict(old.state_dict())

    def _span(self, stage: int, restart: bool) -> float:
        """Epochs the schedule of ``stage`` spans; fractional when a step plan cuts the last epoch short."""
        first, last = self.stage_bounds[stage] if restart else (0, self.total_epochs)
        if self.planned_steps is None:
            return float(last - first)
        spe = self.steps_per_epoch
        return (min(last * spe, self.planned_steps) - first * spe) / spe

    def _wrap(self) -> None:
        if self.env.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net: nn.Module = DDP(
                self.model, device_ids=ids, find_unused_parameters=self.cfg.run.ddp_find_unused_parameters
            )
        else:
            self.net = self.model
        if self.compile_mode is not None:
            self.net = self._compile(self.net)

    def _compile(self, net: nn.Module) -> nn.Module:
        """``net`` wrapped by ``torch.compile`` in ``run.compile``'s mode (the wrapper of the same module is reused).

        The batch dimension is dynamic from the first call (:meth:`_forward_loss` marks it), every other size is
        static: one graph serves full and partial batches, and the image size stays a number that models may compute
        with (with every size symbolic, ``dynamic=True``, Inductor could not compile ARM's de-albino pooling). Models
        read what changes between steps from tensors, never from Python floats (ARBEx's trust is a buffer), since a new
        float recompiles. With torch's automatic choice a run would switch from a static to a dynamic graph at a point
        that depends on where its process started, so a resumed run would round otherwise; here the graph a step runs
        depends on its input's shape only, and a resumed run is bit-identical. Random numbers are
        torch's eager ones (``fallback_random``: dropout draws what it draws without compiling, and the data order
        and augmentation follow the same random stream). Only the training pass uses the wrapper: checkpoints,
        validation and callbacks see ``self.model``, whose ``state_dict`` has no ``_orig_mod.`` prefix.
        """
        if self._compiled is not None and self._compiled[0] is net:
            return self._compiled[1]
        mode = self.compile_mode or "default"
        try:
            from torch._inductor import list_mode_options

            options = {**list_mode_options(mode), "fallback_random": True}
            compiled = cast(nn.Module, torch.compile(net, dynamic=None, options=options))
        except Exception as exc:  # torch.compile refused before compiling anything (platform, Python, options)
            raise CompileError(self._compile_message(exc)) from exc
        self._compiled = (net, compiled)
        self._step_times = []  # a new wrapper compiles on its first steps: time them
        return compiled

    def _compile_message(self, exc: BaseException) -> str:
        text = str(exc).strip()
        first = text.splitlines()[0] if text else ""
        return (
            f"run.compile={self.cfg.run.compile!r}: torch.compile could not compile {self.cfg.model.name} "
            f"({type(self.model).__name__}) for training on {self.device} ({type(exc).__name__}: {first[:300]}).\n"
            "  what to do: train without compiling (run.compile=false); on a CPU torch.compile needs a working C++ "
            "compiler, on CUDA Triton."
        )

    def _trainable(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _call_stage(self, stage: int) -> None:
        call = self.stages[stage].call if self.stages else None
        if call:
            fn = getattr(self.model, call, None)
            if not callable(fn):
                raise ConfigError(
                    f"schedule.stages[{stage}].call={call!r}: {type(self.model).__name__} has no such method"
                )
            fn()
            self._place(self.model)
            self.stage_calls.append(call)

    def _enter_stage(self, stage: int) -> None:
        """Apply stage ``stage``: reload the previous stage's best weights if asked, call its method, new optimiser."""
        stages = self.stages
        if stages and stages[stage].reload_best and self.stage_best["state"] is not None:
            self.model.load_state_dict(self.stage_best["state"])
        self._call_stage(stage)
        self.applied_stage = stage
        self.stage_best = {"value": None, "state": None}
        self._new_optimizer(stage)
        self._wrap()

    # -- checkpoints --------------------------------------------------------------------------------------------------
    def _train_state(self, batch_in_epoch: int, sums: dict[str, Any], train_seconds: float) -> dict[str, Any]:
        rng = capture_rng()
        rngs: list[dict[str, Any] | None] = [rng]
        if self.env.distributed:
            import torch.distributed as dist

            rngs = [None] * self.env.world_size
            dist.all_gather_object(rngs, rng)
        state: dict[str, Any] = {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "schedule": self.schedule.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "rng": rngs,
            "world_size": self.env.world_size,
            "progress": {
                "epoch": self.epoch,
                "batch": batch_in_epoch,
                "global_step": self.global_step,
                "applied_stage": self.applied_stage,
                "stage_calls": list(self.stage_calls),
                "train_seconds": train_seconds,
                "bad_validations": self.bad_validations,
                "requires_grad": {n: p.requires_grad for n, p in self.model.named_parameters()},
            },
            "sums": sums,
            "history": self.history,
            "best": self.best,
            "stage_best_value": self.stage_best["value"],
            "plan": {"steps": self.planned_steps, "budget": self.budget, "next_steps": self._next_steps},
        }
        if self.noise_detector is not None:
            state["noise_detection"] = self.noise_detector.state_dict(self.env)
        if self.stage_best["state"] is not None:
            state["stage_best_state"] = self.stage_best["state"]
        return state

    def _save_last(self, batch_in_epoch: int, sums: dict[str, Any], train_seconds: float | None = None) -> None:
        if not self.cfg.run.save_last:
            return
        state = self._train_state(batch_in_epoch, sums, self.train_seconds if train_seconds is None else train_seconds)
        if self.env.is_main:
            save_checkpoint(
                self.run_dir.checkpoint("last"),
                self.model.state_dict(),
                meta={
                    "epoch": self.epoch,
                    "batch": batch_in_epoch,
                    "step": self.global_step,
                    "stage_calls": list(self.stage_calls),
                    "saved": now_iso(),
                },
                train_state=state,
            )

    def _save_best(self, row: dict[str, Any]) -> None:
        if self.env.is_main:
            save_checkpoint(
                self.run_dir.checkpoint("best"),
                self.model.state_dict(),
                meta={
                    "epoch": row["epoch"],
                    "step": self.global_step,
                    "monitor": self.cfg.schedule.monitor,
                    "value": row.get(self.cfg.schedule.monitor),
                    "metrics": row,
                    "stage_calls": list(self.stage_calls),
                    "class_names": list(self.bundle.label_space.names),
                    "saved": now_iso(),
                },
            )

    def _save_epoch(self, row: dict[str, Any]) -> None:
        if self.cfg.run.keep_epochs and self.env.is_main:
            save_checkpoint(
                self.run_dir.checkpoint(epoch_tag(int(row["epoch"]))),
                self.model.state_dict(),
                meta={
                    "epoch": row["epoch"],
                    "step": self.global_step,
                    "metrics": row,
                    "stage_calls": list(self.stage_calls),
                    "class_names": list(self.bundle.label_space.names),
                    "saved": now_iso(),
                },
            )

    def _read_last(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        path = self.run_dir.checkpoint("last")
        if not checkpoint_exists(path):
            raise RunMissingError(
                f"{path}: no last checkpoint to resume from (the run stopped before its first "
                "checkpoint); start it again with run.overwrite=true"
            )
        model_state, _, ts = load_checkpoint(path)
        if ts is None:
            raise RunMissingError(f"{path}: the checkpoint has no training state; cannot resume")
        return model_state, ts

    def _resume(self, model_state: dict[str, torch.Tensor], ts: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        path = self.run_dir.checkpoint("last")
        if int(ts["world_size"]) != self.env.world_size:
            raise ConfigError(
                f"{path} was written by {ts['world_size']} processes; resume with the same number "
                f"(now {self.env.world_size})"
            )
        prog = ts["progress"]
        for s in range(int(prog["applied_stage"]) + 1):
            self._call_stage(s)
        self.applied_stage = int(prog["applied_stage"])
        try:
            self.model.load_state_dict(model_state)
        except RuntimeError as exc:
            raise ConfigError(
                f"{path}: the checkpoint does not fit the model this config builds ({str(exc).splitlines()[0]}).\n"
                "  what to do: resume with the model settings the run started with (its config.json)."
            ) from None
        self._place(self.model)
        hook = getattr(self.model, "on_epoch_start", None)
        if callable(hook) and int(prog["batch"]) > 0:  # the interrupted epoch had already called it
            hook(int(prog["epoch"]), self.total_epochs)
        for name, p in self.model.named_parameters():
            p.requires_grad_(bool(prog["requires_grad"].get(name, p.requires_grad)))
        self.loss_fn.load_state_dict(ts["loss"])
        self._new_optimizer(max(self.applied_stage, 0))
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(ts["optimizer"])
        if self._config_changes:  # accepted changes (optim.lr, ...) take effect: config.json tells the truth
            # the update kernel stays the checkpoint's unless optim.impl changed: a run resumes as it trained (one
            # from before optim.impl existed keeps torch's default)
            keep = () if "optim.impl" in self._config_changes else ("fused", "foreach")
            for group, new in zip(self.optimizer.param_groups, fresh):
                group.update({k: v for k, v in new.items() if k not in keep})
        self.schedule.load_state_dict(ts["schedule"])
        self.scaler.load_state_dict(ts["scaler"])
        self.epoch, self.global_step = int(prog["epoch"]), int(prog["global_step"])
        self.train_seconds = float(prog["train_seconds"])
        self.bad_validations = int(prog["bad_validations"])
        self.history = list(ts["history"])
        self.best = dict(ts["best"])
        self.stage_best = {"value": ts.get("stage_best_value"), "state": ts.get("stage_best_state")}
        if self.noise_detector is not None and ts.get("noise_detection") is not None:
            self.noise_detector.load_state_dict(ts["noise_detection"])
        self._rng_to_restore = ts["rng"][self.env.rank]
        return int(prog["batch"]), dict(ts["sums"])

    # -- step plans and time budgets ----------------------------------------------------------------------------------
    def _apply_plan(self, steps: int, budget: dict[str, Any] | None) -> None:
        """Train exactly ``steps`` optimiser steps: derive the epochs, share them out over the stages."""
        if steps < 1:
            raise ConfigError(f"a run needs at least one optimiser step, the plan has {steps}")
        spe = self.steps_per_epoch
        epochs = -(-steps // spe)
        if self.cfg.schedule.stages:
            if epochs < len(self.cfg.schedule.stages):
                need = len(self.cfg.schedule.stages) * spe
                raise ConfigError(
                    f"{steps} steps ({epochs} epochs of {spe} steps) cannot hold the {len(self.cfg.schedule.stages)} "
                    f"stages of schedule.stages (one epoch each at least: {need} steps); give more "
                    "schedule.budget_s or schedule.steps, or fewer stages"
                )
            self.stages = self.cfg.schedule.scaled_stages(epochs)
        self.planned_steps, self.budget, self.total_epochs = int(steps), budget, epochs
        self.stage_bounds = _stage_bounds(self.stages, epochs)
        self.total_steps = int(steps)

    def _after_first_epoch(self, steps: int, train_s: float, valid_s: float | None) -> None:
        """Switch to the plan that follows the first epoch: a budget run's re-plan (``schedule.replan``), or the
        recorded one that ``schedule.first_steps`` replays."""
        new = self._next_steps
        self._next_steps = None
        if new is None and self.budget is not None and self.cfg.schedule.replan and "replan" not in self.budget:
            new = self._replan(steps, train_s, valid_s)
        if new is None or new == self.planned_steps:
            return
        self._apply_plan(new, self.budget)
        if self.cfg.run.max_steps:
            self.total_steps = min(self.total_steps, self.cfg.run.max_steps)
        self._new_schedule(max(self.applied_stage, 0), keep_state=True)

    def _replan(self, steps: int, train_s: float, valid_s: float | None) -> int | None:
        """The step count that ends the budget, from the first epoch's measured cost; None to keep the plan. The
        epoch measured stage 0: later stages' timed costs scale by the same factor."""
        plan = dict(self.budget or {})
        spe, done, first = self.steps_per_epoch, self.global_step, int(self.planned_steps or 0)
        new: int | None = None
        if steps > 0 and self.total_epochs > 1 and plan.get("stage_step_seconds"):
            measured = max(1e-9, train_s - float(plan.get("compile_seconds", 0.0))) / steps
            step_s = float(plan["step_seconds"]) * measured / max(1e-12, float(plan["stage_step_seconds"][0]))
            val_s = float(valid_s if valid_s is not None else plan["validation_seconds"])
            left = float(plan["budget_s"]) - float(plan["calibration_seconds"]) - self.train_seconds  # epoch 1 in
            new = self._steps_within(left, step_s, val_s, done=done, validated=int(valid_s is not None), least=0)
            if self.cfg.schedule.stages:  # the stages shift with the plan; never under one already trained
                epochs = -(-new // spe)
                fits = epochs >= len(self.cfg.schedule.stages)
                if fits:
                    end0 = _stage_bounds(self.cfg.schedule.scaled_stages(epochs), epochs)[0][1]
                    fits = (end0 == 1) == (self.stage_bounds[0][1] == 1)
                new = new if fits else None
            plan["replan"] = {
                "after_epoch": 1,
                "step_seconds": measured,
                "validation_seconds": val_s,
                "seconds_left": left,
                "steps": new if new is not None else first,
            }
        else:
            plan["replan"] = {"after_epoch": 1, "steps": first}
        new = self.env.broadcast_object(new)
        plan = self.env.broadcast_object(plan)
        if new is not None and new != first:
            plan.update(first_steps=first, steps=new, epochs=-(-new // spe))
        self.budget = plan
        return new

    def _steps_within(
        self, seconds: float, step_s: float, valid_s: float, done: int = 0, validated: int = 0, least: int = 1
    ) -> int:
        """The plan's total steps: ``done`` already trained plus as many more (``least`` at least) as fit ``seconds``
        with the validations their epochs add (``validated`` of them already paid)."""
        more = max(least, int(seconds / step_s))
        for _ in range(8):
            epochs = -(-(done + more) // self.steps_per_epoch)
            more = max(least, int((seconds - (self._validations(epochs) - validated) * valid_s) / step_s))
        return done + more

    def _validations(self, epochs: int) -> int:
        every = max(1, self.cfg.schedule.eval_every)
        ends = {
            b
            for _, b in _stage_bounds(
                self.cfg.schedule.scaled_stages(epochs)
                if self.cfg.schedule.stages and epochs >= len(self.cfg.schedule.stages)
                else [],
                epochs,
            )
        }
        return len({e for e in range(1, epochs + 1) if e % every == 0} | ends | {epochs})

    def _calibrate(self) -> tuple[int, dict[str, Any]]:
        """Turn ``schedule.budget_s`` into a step count: time a few training steps (per stage, as stages change the
        model) and a validation on throw-away copies of the model, loss and optimiser, with the run's own batches;
        the RNG states and the run's objects are left as they were."""
        cfg, env = self.cfg, self.env
        assert cfg.schedule.budget_s is not None
        budget = float(cfg.schedule.budget_s)
        t_start = time.perf_counter()
        saved: dict[str, Any] = {
            k: getattr(self, k, None)
            for k in (
                "model",
                "loss_fn",
                "net",
                "optimizer",
                "schedule",
                "scaler",
                "applied_stage",
                "stage_calls",
                "stages",
                "stage_bounds",
            )
        }
        rng = capture_rng()
        # up to 5 % of the budget (8 s at most) for all stages together, 1 s a stage at least: 2 s of timing
        # misjudged a step by 13 % (ARBEx, 480 s) and a 1 s one by up to 60 % (60 s runs); 8 s for each of ESR's 4
        # stages took 21 % of a 120 s budget. The mean, not the median, so that periodic slow steps count.
        min_time = max(1.0, min(8.0, max(1.0, 0.05 * budget)) / max(1, len(self.stages)))
        stage_seconds: list[float] = []
        compile_seconds = 0.0
        try:
            self.model, self.loss_fn = copy.deepcopy(saved["model"]), copy.deepcopy(saved["loss_fn"])
            self.scaler = LossScaler(self.device.type, cfg.run.loss_scale, enabled=self.precision == "fp16")
            self.stage_calls = []
            d = cfg.data
            order = epoch_indices(d, self.bundle.train.targets, cfg.run.seed, 0, env.rank, env.world_size)
            for stage in range(len(self.stages) or 1):
                self._call_stage(stage)
                self._new_optimizer(stage)
                self._wrap()
                self.net.train()
                loader = make_loader(
                    self.bundle.train,
                    order,
                    d.batch_size,
                    seed=cfg.run.seed,
                    epoch=0,
                    drop_last=d.drop_last,
                    stream=env.rank,
                )
                times: list[float] = []
                while not _timed_enough(times, min_time) and len(times) < max(7, 3 * self.steps_per_epoch):
                    tick = time.perf_counter()
                    for j, batch in enumerate(loader):
                        self._step(batch, j, self.steps_per_epoch)
                        now = time.perf_counter()
                        times.append(now - tick)
                        tick = now
                        if _timed_enough(times, min_time):
                            break
                timed = times[2:] or times
                stage_seconds.append(float(np.mean(timed)))
                if self.compile_mode is not None:  # the first two steps compiled: the run will pay that again
                    compile_seconds += max(0.0, sum(times[:2]) - len(times[:2]) * stage_seconds[-1])
            valid = self.bundle.valid
            bs = cfg.data.eval_batch_size or cfg.data.batch_size
            m = min(len(valid), 4 * bs)
            warm = valid.subset(np.arange(min(len(valid), bs)))
            predict(
                self.model,
                warm,
                batch_size=bs,
                device=self.device,
                precision=self.precision,
                channels_last=cfg.run.channels_last,
            )
            tv = time.perf_counter()
            predict(
                self.model,
                valid.subset(np.arange(m)),
                batch_size=bs,
                device=self.device,
                precision=self.precision,
                env=self.env,
                order=cfg.data.eval_order,
                channels_last=cfg.run.channels_last,
                tta=cfg.data.eval_tta,
            )
            valid_seconds = (time.perf_counter() - tv) * len(valid) / max(1, m)
        finally:
            for k, v in saved.items():
                setattr(self, k, v)
            restore_rng(rng)
        calibration = time.perf_counter() - t_start
        shares = (
            [s.epochs / max(1, self.cfg.schedule.total_epochs) for s in self.cfg.schedule.stages]
            if self.cfg.schedule.stages
            else [1.0]
        )
        step_seconds = float(sum(f * t for f, t in zip(shares, stage_seconds)))
        avail = budget - calibration - compile_seconds
        steps = self._steps_within(avail, step_seconds, valid_seconds)
        plan: dict[str, Any] = {
            "budget_s": budget,
            "steps": steps,
            "epochs": -(-steps // self.steps_per_epoch),
            "step_seconds": step_seconds,
            "stage_step_seconds": stage_seconds,
            "validation_seconds": valid_seconds,
            "calibration_seconds": calibration,
            "steps_per_epoch": self.steps_per_epoch,
        }
        if self.compile_mode is not None:
            plan["compile_seconds"] = compile_seconds
        plan = env.broadcast_object(plan)
        return int(plan["steps"]), plan

    # -- one step -----------------------------------------------------------------------------------------------------
    def _forward_loss(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        dist: torch.Tensor | None,
        info: StepInfo,
        index: torch.Tensor | None = None,
    ):
        if self.compile_mode is not None and x.shape[0] > 1:
            torch._dynamo.mark_dynamic(x, 0)  # one graph for every batch size (_compile)
        with autocast_context(self.device, self.precision):
            out = self.net(x)
        out = float_output(out)
        extra = {} if index is None else {"index": index}  # losses with per-sample state (SCN's relabel table)
        return out, self.loss_fn(out, y, dist=dist, info=info, **extra)

    def _check_finite(self, lo: Any, batch_in_epoch: int, n_batches: int, which: str = "") -> float:
        """The loss as a float (the step's one read from the device); raises when it is not finite anywhere."""
        value = float(lo.total.detach())
        bad = not math.isfinite(value)
        if self.env.distributed:
            bad = self.env.any_true(bad)
        if not bad:
            return value
        terms = {k: float(v.detach()) for k, v in lo.terms.items()}
        bad_terms = [f"{k}={v}" for k, v in terms.items() if not math.isfinite(v)]
        last = self.run_dir.checkpoint("last")
        where = f"last good checkpoint: {last}" if checkpoint_exists(last) else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"{self.cfg.loss_name} loss{which} is {value} at epoch {self.epoch + 1}, step {self.global_step + 1} "
            f"(batch {batch_in_epoch + 1}/{n_batches}); "
            f"non-finite terms: {', '.join(bad_terms) or 'none (only the total)'}"
            f"; all terms: {terms}.\n  The run stopped; {where}.\n"
            "  what to do: lower optim.lr, set optim.clip_grad_norm, use run.precision=fp32, or check the inputs."
        )

    def _step(self, batch: dict[str, Any], batch_in_epoch: int, n_batches: int) -> tuple[Any, Any, float, Any, float]:
        """One optimiser update on ``batch``: ``(model output, loss output, lr, targets on the device, loss value)``."""
        try:
            return self._update(batch, batch_in_epoch, n_batches)
        except self._compile_errors as exc:  # empty without run.compile: nothing is caught
            raise CompileError(self._compile_message(exc)) from exc

    @property
    def _compile_errors(self) -> tuple[type[BaseException], ...]:
        return _compile_errors() if self.compile_mode is not None else ()

    def _update(self, batch: dict[str, Any], batch_in_epoch: int, n_batches: int) -> tuple[Any, Any, float, Any, float]:
        x = batch["image"].to(self.device, non_blocking=True)
        if self.cfg.run.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        y = batch["label"].to(self.device, non_blocking=True)
        dist = batch["dist"].to(self.device, non_blocking=True) if "dist" in batch else None
        index = batch["index"] if getattr(self.loss_fn, "needs_index", False) else None
        total_steps = max(1, self.total_steps)
        info = StepInfo(
            epoch=self.epoch,
            step=self.global_step,
            num_epochs=self.total_epochs,
            progress=min(1.0, self.global_step / total_steps),
        )
        lr = self.schedule.apply(self.optimizer, self._schedule_epoch(self.epoch), batch_in_epoch)
        for cb in self._all_callbacks:
            cb.on_train_step_start(self, info)
        self.optimizer.zero_grad(set_to_none=True)
        out, lo = self._forward_loss(x, y, dist, info, index)
        value = self._check_finite(lo, batch_in_epoch, n_batches)

        def second_pass() -> torch.Tensor:
            _, lo2 = self._forward_loss(x, y, dist, info, index)
            self._check_finite(lo2, batch_in_epoch, n_batches, " (SAM's second pass)")
            return lo2.total

        self.scaler(
            lo.total,
            self.optimizer,
            parameters=self._trainable,
            clip_grad=self.cfg.optim.clip_grad_norm,
            second_pass=second_pass,
        )
        return out, lo, lr, y, value

    def _time_compiled_step(self, tick: float) -> None:
        """Add the wall time of a step that began at ``tick`` to the compile warm-up window (CUDA: after a sync, only
        in this window)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        assert self._step_times is not None
        self._step_times.append(time.perf_counter() - tick)
        if len(self._step_times) >= COMPILE_TIMED_STEPS:
            self._record_compile()

    def _record_compile(self) -> None:
        """Close the warm-up window: keep its numbers (``run.json``: ``compile``) and print them."""
        times, self._step_times = self._step_times or [], None
        info = {"mode": self.compile_mode, **compile_warmup(times), "windows": 1}
        if self.compile_info is not None and self.compile_info.get("warmup_seconds") is not None:
            # a later wrapper (a stage's new DDP module) compiled again: add its warm-up to the first one's numbers
            info = {
                **self.compile_info,
                "warmup_seconds": self.compile_info["warmup_seconds"] + (info["warmup_seconds"] or 0.0),
                "windows": int(self.compile_info.get("windows", 1)) + 1,
            }
        self.compile_info = info
        if not self.env.is_main:
            return
        self.run_dir.update_record(compile=info)
        if not self.cfg.run.quiet and info["warmup_seconds"] is not None:
            from tqdm.auto import tqdm

            steady = info["steady_step_seconds"]
            then = f", then {steady:.3f} s a step" if steady is not None else ""
            tqdm.write(
                f"torch.compile ({self.compile_mode}): warm-up {info['warmup_seconds']:.1f} s over the first "
                f"{info['steps_timed']} steps (first step {info['first_step_seconds']:.1f} s{then})"
            )

    # -- validation ---------------------------------------------------------------------------------------------------
    def validate(self) -> dict[str, Any]:
        """Metrics of the current weights on the validation split (keys prefixed ``valid_``)."""
        d = self.cfg.data
        for cb in self._all_callbacks:
            cb.on_validation_start(self)
        pred = predict(
            self.model,
            self.bundle.valid,
            batch_size=d.eval_batch_size or d.batch_size,
            device=self.device,
            precision=self.precision,
            env=self.env,
            order=d.eval_order,
            channels_last=self.cfg.run.channels_last,
            tta=d.eval_tta,
        )
        self.last_validation = pred
        m = classification_metrics(
            pred.targets, probs=pred.probs, dists=pred.dists, num_classes=self.bundle.valid.num_classes
        )
        keys = ("accuracy", "mean_class_accuracy", "macro_f1", "nll", "kl", "js")
        return {f"valid_{k}": m[k] for k in keys if k in m}

    # -- the loop -----------------------------------------------------------------------------------------------------
    def run(self) -> FitResult:
        """Claim the run folder (one writer: rank 0 holds its lock until the run ends), then train."""
        lock = self.run_dir.lock() if self.env.is_main else None
        try:
            return self._run(lock)
        finally:
            if lock is not None:
                lock.release()

    def _claim(self, lock: RunLock | None) -> str:
        """Take the folder's lock and decide new / resume / overwrite (rank 0), and compare a resumed run's config
        with the saved one; every process gets the answer or the same error. Nothing is written."""
        mode, problem = "new", None
        self._config_changes = {}
        if lock is not None:
            try:
                lock.acquire()
                mode = self.run_dir.prepare(resume=self.cfg.run.resume, overwrite=self.cfg.run.overwrite)
                if mode == "resume":
                    self._config_changes = self._resume_changes()
            except FernbError as exc:
                if not self.env.distributed:
                    raise
                problem = exc
        mode, changes, message = self.env.broadcast_object(
            (mode, self._config_changes, None if problem is None else str(problem))
        )
        if problem is not None:
            raise problem
        if message is not None:
            raise FernbError(message)
        self._config_changes = changes
        return mode

    def _resume_changes(self) -> dict[str, tuple[Any, Any]]:
        """What differs between the saved config and this one; refuses changes that alter results unless
        ``run.allow_config_change``."""
        path = self.run_dir.config_path
        if not path.is_file():
            warnings.warn(f"{path} is missing; the resumed run's config cannot be compared with it", stacklevel=4)
            return {}
        changes = config_changes(load_config(path), self.cfg)
        harmful = {k: v for k, v in changes.items() if k not in HARMLESS_CHANGES}
        if harmful and not self.cfg.run.allow_config_change:
            lines = "\n".join(f"    {k}: {old!r} -> {new!r}" for k, (old, new) in harmful.items())
            raise ConfigError(
                f"{self.run_dir.path}: the resumed run's config differs from the saved one ({path}) in what "
                f"changes results:\n{lines}\n  what to do: resume with the saved config (python -m fernb train "
                f"--config {path} --resume), or accept the change(s) with --allow-config-change "
                "(run.allow_config_change=true): they are recorded in run.json (config_changes)."
            )
        return changes

    def _check_input_size(self) -> None:
        """Build the model on the side and run it once on a zero batch at ``data.img_size`` before any data is read,
        so that an input too small for the model is refused at once (the RNG states are left as they were)."""
        cfg = self.cfg
        try:
            if self._train_data is not None:
                num_classes = self._train_data.num_classes
            else:
                space = cfg.data.label_space or dataset_info(cfg.data.dataset).default_label_space
                num_classes = len(get_label_space(space))
            channels = build_batch_transform(cfg, False).channels
        except (KeyError, ValueError, FernbError):
            return  # an unknown dataset or transform: build_datasets says so, with its own message
        num_classes = cfg.model.num_classes or num_classes
        rng = capture_rng()
        try:
            side = cfg.data.img_size
            problem = _dry_forward(build_model(cfg.model, num_classes, side), channels, side)
            if problem is None:
                return
            works = next(
                (
                    s
                    for s in (64, 96, 112, 128, 160, 224)
                    if s > side and _dry_forward(build_model(cfg.model, num_classes, s), channels, s) is None
                ),
                None,
            )
            hint = f" ({works} px works)" if works else ""
            raise ConfigError(
                f"data.img_size={side}: {cfg.model.name} ({cfg.model.preset}) cannot take a {side}x{side} input "
                f"({problem}).\n  what to do: raise data.img_size{hint}, or choose a model preset for small inputs."
            )
        finally:
            restore_rng(rng)

    def _run(self, lock: RunLock | None) -> FitResult:
        cfg, env = self.cfg, self.env
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        mode = self._claim(lock)
        env.barrier()
        seed_everything(cfg.run.seed)
        self._check_input_size()
        self.bundle = build_datasets(cfg, self._train_data, self._valid_data)
        if mode == "resume":
            self._check_resume_data()
        if NoiseDetector.applies(self.bundle.train):
            self.noise_detector = NoiseDetector(self.bundle.train, self.run_dir)
        num_classes = self.bundle.train.num_classes
        self.model = self._place(self._build_model(num_classes))
        self.loss_fn = self._build_loss(self.bundle).to(self.device)
        self._engine_callbacks = [TrustRamp()] if TrustRamp.applies(self.model, self.loss_fn) else []
        self.scaler = LossScaler(self.device.type, cfg.run.loss_scale, enabled=self.precision == "fp16")
        d = cfg.data
        first = epoch_indices(d, self.bundle.train.targets, cfg.run.seed, 0, env.rank, env.world_size)
        n0 = len(first)
        self.steps_per_epoch = max(1, n0 // d.batch_size if d.drop_last else -(-n0 // d.batch_size))
        self.total_steps = self.steps_per_epoch * self.total_epochs
        last = self._read_last() if mode == "resume" else None
        if last is not None:
            plan = last[1].get("plan") or {}
            if plan.get("steps") is not None:
                self._apply_plan(int(plan["steps"]), plan.get("budget"))
                self._next_steps = plan.get("next_steps")
        elif cfg.schedule.first_steps is not None and cfg.schedule.steps is not None:
            self._apply_plan(int(cfg.schedule.first_steps), None)
            self._next_steps = int(cfg.schedule.steps)
        elif cfg.schedule.steps is not None:
            self._apply_plan(int(cfg.schedule.steps), None)
        elif cfg.schedule.budget_s is not None:
            steps, budget = self._calibrate()
            self._apply_plan(steps, budget)
        if cfg.run.max_steps:
            self.total_steps = min(self.total_steps, cfg.run.max_steps)
        start_batch, sums = 0, None
        self._rng_to_restore = None
        if last is not None:
            start_batch, sums = self._resume(*last)
            self._wrap()
        else:
            self._enter_stage(0)
        if env.distributed and env.rank > 0:
            seed_everything(cfg.run.seed + 1_000_003 * env.rank)  # different augmentation per process
        # everything is built and checked: only now is the old run (run.overwrite) moved aside, to come back if the
        # new one fails before its first epoch ends
        self._aside = self.run_dir.set_aside() if env.is_main and mode == "overwrite" else None
        try:
            record = self._start_record(mode)
            for cb in self.callbacks:
                cb.on_fit_start(self)
            if self._rng_to_restore is not None:
                restore_rng(self._rng_to_restore)
            try:
                self._loop(start_batch, sums)
            except NonFiniteLossError as exc:
                self._finish_record(record, status="failed", error=str(exc))
                raise
            except KeyboardInterrupt:
                self._finish_record(record, status="interrupted")
                raise
            except Exception as exc:
                self._finish_record(record, status="failed", error=f"{type(exc).__name__}: {exc}")
                raise
            self._finish_record(record, status="completed")
        except BaseException:
            if self._aside is not None:
                self.run_dir.restore_aside(self._aside)
                warnings.warn(
                    f"{self.run_dir.path}: the new run failed before its first epoch ended; the old run is back",
                    stacklevel=3,
                )
            raise
        self._drop_aside()
        if env.distributed:
            self._check_replicas()
        env.barrier()
        result = FitResult(
            self.run_dir.path,
            cfg,
            list(self.history),
            self.best["epoch"],
            self.best["value"],
            dict(self.best["metrics"]),
            self.stop_reason,
            self.model,
            self.train_seconds,
            self.global_step,
            info={
                "precision": self.precision,
                "device": str(self.device),
                "data": self.bundle.describe(),
                "optimizer_impl": optimizer_impl(self.optimizer),
                "compile": self.compile_info,
            },
        )
        for cb in self.callbacks:
            cb.on_fit_end(result)
        return result

    def _loop(self, start_batch: int, sums: dict[str, Any] | None) -> None:
        cfg, env, d = self.cfg, self.env, self.cfg.data
        from tqdm.auto import tqdm

        quiet = cfg.run.quiet or not env.is_main
        every = cfg.run.checkpoint_every_steps
        budget = cfg.run.time_budget_s
        stop = False
        while self.epoch < self.total_epochs and not stop:
            epoch, first_batch = self.epoch, start_batch
            stage = self._stage_of(epoch)
            if stage > self.applied_stage:
                self._enter_stage(stage)
            hook = getattr(self.model, "on_epoch_start", None)
            if callable(hook) and start_batch == 0 and hook(epoch, self.total_epochs):
                self._new_optimizer(stage)
                self._wrap()
            for cb in self.callbacks:
                cb.on_epoch_start(self, epoch)
            order = epoch_indices(d, self.bundle.train.targets, cfg.run.seed, epoch, env.rank, env.world_size)
            n_batches = len(order) // d.batch_size if d.drop_last else -(-len(order) // d.batch_size)
            if self.planned_steps is not None:  # the plan's last epoch ends at its last step
                n_batches = max(start_batch, min(n_batches, start_batch + self.planned_steps - self.global_step))
            order = order[start_batch * d.batch_size : n_batches * d.batch_size]
            loader = make_loader(
                self.bundle.train,
                order,
                d.batch_size,
                num_workers=d.num_workers,
                seed=cfg.run.seed,
                epoch=epoch,
                drop_last=d.drop_last,
                pin_memory=self.device.type == "cuda",
                stream=env.rank,
                first_batch=start_batch,
            )
            running = _EpochSums(self.device, sums)
            self.net.train()
            self.model.train()
            t0 = time.perf_counter()
            bar = tqdm(
                total=n_batches,
                initial=start_batch,
                desc=f"epoch {epoch + 1}/{self.total_epochs}",
                disable=quiet,
                leave=False,
                dynamic_ncols=True,
            )
            batch_in_epoch = start_batch
            lr = self.optimizer.param_groups[0]["lr"]
            shown = -math.inf  # when the progress bar last showed the running loss
            try:
                for batch in loader:
                    tick = time.perf_counter()
                    out, lo, lr, y, loss_value = self._step(batch, batch_in_epoch, n_batches)
                    if self._step_times is not None:
                        self._time_compiled_step(tick)
                    if self.noise_detector is not None:
                        self.noise_detector.observe(out, batch, epoch)
                    running.add(lo, out.logits, y)
                    self.global_step += 1
                    batch_in_epoch += 1
                    now = time.perf_counter()
                    elapsed = self.train_seconds + (now - t0)
                    bar.update(1)
                    if not quiet and (now - shown >= 1.0 or batch_in_epoch == n_batches):
                        shown = now  # reading the sums waits for the device: once a second is enough to watch
                        bar.set_postfix(
                            loss=f"{running.mean_loss():.4f}", acc=f"{running.accuracy():.3f}", refresh=False
                        )
                    if every and self.global_step % every == 0 and batch_in_epoch < n_batches:
                        self._save_last(batch_in_epoch, running.to_dict(), elapsed)
                    logs = {
                        "epoch": epoch,
                        "batch": batch_in_epoch,
                        "step": self.global_step,
                        "lr": lr,
                        "loss": loss_value,
                    }
                    for cb in self.callbacks:
                        cb.on_step_end(self, logs)
                    max_steps = cfg.run.max_steps or 0
                    hit_steps = max_steps > 0 and self.global_step >= max_steps
                    hit_time = budget is not None and elapsed >= budget
                    if env.any_true(hit_steps or hit_time):
                        self.stop_reason = "max_steps" if hit_steps else "time_budget"
                        stop = True
                        break
            finally:
                bar.close()
            if self._step_times:  # a short epoch ended the timing window
                self._record_compile()
            sums = running.to_dict()
            partial = batch_in_epoch < n_batches
            if env.distributed:
                self._sync_buffers()
            seconds = time.perf_counter() - t0
            train_part, valid_part = seconds, None
            if partial:  # keep the exact mid-epoch position for a later resume
                self.train_seconds += seconds
                self._save_last(batch_in_epoch, sums)
            row = self._epoch_row(epoch, stage, lr, sums, seconds, partial)
            validate = (
                partial
                or (stop and self.stop_reason == "time_budget")  # a run cut at an epoch's end still gets scored
                or (epoch + 1) % max(1, cfg.schedule.eval_every) == 0
                or epoch + 1 == self.total_epochs
                or (self.stage_bounds[stage][1] == epoch + 1)
            )
            if validate:
                tv = time.perf_counter()
                row.update(self.validate())
                valid_part = time.perf_counter() - tv
                seconds += valid_part
                row["epoch_seconds"] = seconds
            if not partial:
                self.train_seconds += seconds
            row["elapsed_seconds"] = self.train_seconds
            value = row.get(cfg.schedule.monitor)
            improved = False
            if validate:
                if value is None:
                    raise ConfigError(
                        f"schedule.monitor={cfg.schedule.monitor!r} is not a column of the epoch row ({', '.join(row)})"
                    )
                self.schedule.observe(value)
                if self._is_better(value, self.best["value"]):
                    self.best = {"epoch": row["epoch"], "value": value, "metrics": dict(row)}
                    self._save_best(row)
                    self.bad_validations = 0
                    improved = True
                else:
                    self.bad_validations += 1
                stages = self.stages
                if (
                    stage + 1 < len(stages)
                    and stages[stage + 1].reload_best
                    and self._is_better(value, self.stage_best["value"])
                ):
                    weights = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
                    self.stage_best = {"value": value, "state": weights}
            if self.noise_detector is not None:
                self.noise_detector.end_epoch(int(row["epoch"]), env, partial=partial, best=improved)
            if epoch == 0 and not partial and not stop:
                self._after_first_epoch(batch_in_epoch - first_batch, train_part, valid_part)
            if not partial:
                self.epoch += 1
                self.history.append(row)
                self._save_epoch(row)
                self._save_last(0, {"n": 0, "loss": 0.0, "correct": 0, "terms": {}})
            rows = self.history + ([row] if partial else [])
            if env.is_main:
                self.run_dir.write_progress(  # metrics.csv and run.json change together or not at all
                    rows,
                    best=self.best,
                    epochs_done=self.epoch,
                    steps=self.global_step,
                    train_seconds=self.train_seconds,
                    updated=now_iso(),
                    **({"planned_steps": self.planned_steps, "budget": self.budget} if self.planned_steps else {}),
                )
                if self.epoch >= 1:
                    self._drop_aside()
                if not cfg.run.quiet:
                    tqdm.write(self._line(row))
            for cb in self.callbacks:
                cb.on_epoch_end(dict(row))
            start_batch, sums = 0, None
            patience = cfg.schedule.early_stop_patience
            if validate and patience is not None and self.bad_validations > patience and not stop:
                self.stop_reason, stop = "early_stop", True

    def _epoch_row(
        self, epoch: int, stage: int, lr: float, sums: dict[str, Any], seconds: float, partial: bool
    ) -> dict[str, Any]:
        totals = self.env.all_reduce_sum(
            [sums["n"], sums["loss"], sums["correct"], *[sums["terms"][k] for k in sorted(sums["terms"])]]
        )
        n = max(1.0, totals[0])
        row: dict[str, Any] = {"epoch": epoch + 1, "step": self.global_step}
        if self.stages:
            row["stage"] = stage
        row["lr"] = lr
        row["train_samples"] = int(totals[0])
        row["train_loss"] = float(totals[1] / n)
        row["train_accuracy"] = float(totals[2] / n)
        for k, v in zip(sorted(sums["terms"]), totals[3:]):
            row[f"train_{k}"] = float(v / n)
        if partial:
            row["partial"] = 1
        row["epoch_seconds"] = seconds
        row["samples_per_second"] = float(totals[0] / max(seconds, 1e-9))
        return row

    def _line(self, row: dict[str, Any]) -> str:
        parts = [
            f"epoch {row['epoch']}/{self.total_epochs}",
            f"loss {row['train_loss']:.4f}",
            f"acc {row['train_accuracy']:.3f}",
        ]
        if "valid_accuracy" in row:
            parts.append(
                f"| valid acc {row['valid_accuracy']:.3f} mca {row['valid_mean_class_accuracy']:.3f} "
                f"f1 {row['valid_macro_f1']:.3f}"
            )
        parts.append(f"lr {row['lr']:.2e}  {row['epoch_seconds']:.1f}s")
        return "  ".join(parts)

    def _sync_buffers(self) -> None:
        """Average floating buffers (BatchNorm running statistics) over processes; DDP only syncs parameters, and
        each process's last forward left its own statistics."""
        import torch.distributed as dist

        for buf in self.model.buffers():
            if buf.is_floating_point():
                dist.all_reduce(buf, op=dist.ReduceOp.SUM)
                buf.div_(self.env.world_size)
            else:
                dist.broadcast(buf, src=0)

    def _check_replicas(self) -> None:
        """Gather a digest of every process's final weights; record them (rank 0) and warn if they differ."""
        import hashlib

        import torch.distributed as dist

        h = hashlib.sha256()
        for k, v in sorted(self.model.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        digests: list[Any] = [None] * self.env.world_size
        dist.all_gather_object(digests, h.hexdigest())
        same = len(set(digests)) == 1
        if self.env.is_main:
            self.run_dir.update_record(
                ddp={"world_size": self.env.world_size, "weight_digests": digests, "consistent": same}
            )
        if not same:
            warnings.warn(f"DDP replicas ended with different weights: {digests}", stacklevel=2)

    # -- run record ---------------------------------------------------------------------------------------------------
    def _drop_aside(self) -> None:
        """The new run has finished an epoch: delete the old run that ``run.overwrite`` replaced."""
        if self._aside is not None:
            aside, self._aside = self._aside, None
            shutil.rmtree(aside, ignore_errors=True)

    def _check_resume_data(self) -> None:
        """Refuse to resume on other training data (another fingerprint) unless ``run.allow_config_change``."""
        if not self.env.is_main:
            return
        old = ((self.run_dir.read_record().get("data") or {}).get("train") or {}).get("fingerprint")
        new = self.bundle.describe()["train"]["fingerprint"]
        if not old or old == new:
            return
        if not self.cfg.run.allow_config_change:
            raise ConfigError(
                f"{self.run_dir.path}: the resumed run would train on other data (training split fingerprint {old} "
                f"-> {new}).\n  what to do: resume on the data it started with, or accept the change with "
                "--allow-config-change (run.allow_config_change=true); it is recorded in run.json."
            )
        self._config_changes["data.train.fingerprint"] = (old, new)

    def _start_record(self, mode: str) -> dict[str, Any]:
        if not self.env.is_main:
            return {}
        rec = self.run_dir.read_record() if mode == "resume" else {}
        if mode == "resume":
            rec.setdefault("resumed", []).append({"at": now_iso(), "epoch": self.epoch, "step": self.global_step})
            if self._config_changes:
                rec.setdefault("config_changes", []).append(
                    {
                        "at": now_iso(),
                        "epoch": self.epoch,
                        "step": self.global_step,
                        "changes": {k: {"old": a, "new": b} for k, (a, b) in self._config_changes.items()},
                        "changes_results": sorted(k for k in self._config_changes if k not in HARMLESS_CHANGES),
                    }
                )
        else:
            rec.update(
                name=self.cfg.run_name,
                created=now_iso(),
                preset=self.cfg.preset,
                smoke=self.cfg.smoke,
                seed=self.cfg.run.seed,
                test_split_used=False,
                evaluations=[],
            )
        if self.planned_steps is not None:
            rec.update(planned_steps=self.planned_steps, budget=self.budget)
        rec.update(
            status="running",
            updated=now_iso(),
            environment=environment_record(),
            device=str(self.device),
            precision=self.precision,
            world_size=self.env.world_size,
            data=self.bundle.describe(),
            model={
                "name": self.cfg.model.name,
                "preset": self.cfg.model.preset,
                "class": type(self.model).__name__,
                "params": _count(self.model, False),
                "trainable_params": _count(self.model, True),
            },
            loss={"name": self.cfg.loss_name, "class": type(self.loss_fn).__name__},
            steps_per_epoch=self.steps_per_epoch,
            total_epochs=self.total_epochs,
            monitor={"metric": self.cfg.schedule.monitor, "mode": self.cfg.schedule.monitor_mode},
            optimizer_impl=optimizer_impl(self.optimizer),
        )
        if self.compile_mode is not None:  # the warm-up is filled in once the first steps are timed
            rec["compile"] = {"mode": self.compile_mode, "warmup_seconds": None}
        else:
            rec.pop("compile", None)
        # config.json, config.yaml and run.json change together: the config on disk is the one in force
        atomic_write_many(
            {
                self.run_dir.config_path: config_text(self.cfg, ".json").encode("utf-8"),
                self.run_dir.path / "config.yaml": config_text(self.cfg, ".yaml").encode("utf-8"),
                self.run_dir.record_path: json_bytes(rec),
            }
        )
        return rec

    def _finish_record(self, record: dict[str, Any], *, status: str, error: str | None = None) -> None:
        if not self.env.is_main:
            return
        if status != "completed":  # the run is failing already: a record that cannot be written must not hide why
            try:
                self._write_finish(status, error)
            except (OSError, FernbError) as exc:
                warnings.warn(f"{self.run_dir.record_path}: could not record the run's end ({exc})", stacklevel=3)
            return
        self._write_finish(status, error)

    def _write_finish(self, status: str, error: str | None) -> None:
        rec = self.run_dir.read_record()
        rec.update(status=status, stop_reason=self.stop_reason if status == "completed" else status, finished=now_iso())
        if status == "completed":  # a failed run keeps the progress its last epoch recorded, as metrics.csv does
            rec.update(
                epochs_done=self.epoch,
                steps=self.global_step,
                train_seconds=self.train_seconds,
                best=self.best,
                last=self.history[-1] if self.history else None,
            )
        if error:
            rec["error"] = error
        self.run_dir.write_record(rec)


def fit(
    config: TrainConfig,
    *,
    train_data: FERDataset | None = None,
    valid_data: FERDataset | None = None,
    callbacks: Iterable[Callback | Callable[[dict[str, Any]], Any]] = (),
) -> FitResult:
    """Train the method ``config`` describes and write its run folder.

    Args:
        config: the run's :class:`TrainConfig` (see :func:`fernb.engine.config_from_preset`).
        train_data: train on this dataset instead of loading ``config.data`` (its transform is replaced by the
            method's unless ``data.transform="keep"``).
        valid_data: validate on this dataset (None with ``train_data``: hold out ``data.valid_fraction``).
        callbacks: :class:`Callback` objects, or functions called with each epoch's metrics row.

    Returns:
        A :class:`FitResult`. The test split is never touched: use :func:`fernb.engine.evaluate` once at the end.

    Raises:
        RunExistsError: the run folder holds a run and neither ``run.resume`` nor ``run.overwrite`` is set.
        NonFiniteLossError: the loss became NaN/inf (the message names the step and the terms; the last good
            checkpoint is kept).
    """
    env = init_distributed(config.run.device)
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    if config.run.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        if env.device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have a deterministic implementation.*")
            return Trainer(config, env, train_data, valid_data, list(callbacks)).run()
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.backends.cudnn.benchmark = prev_bench
        if torch.get_num_threads() != prev_threads:
            torch.set_num_threads(prev_threads)
        env.close()
