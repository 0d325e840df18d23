"""The training configuration: one typed, nested dataclass saved as JSON and YAML with every run.

A :class:`TrainConfig` has six sections: ``data``, ``model``, ``loss``, ``optim``, ``schedule`` and ``run``. Presets
(:mod:`fernb.engine.presets`) fill it with a published recipe; dotted ``key=value`` overrides
(:mod:`fernb.engine.overrides`) change single fields.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from ..data.aligned import AlignError, check_align_fields
from ..data.noise import LabelNoiseError, check_label_noise_fields
from ..errors import FernbError
from .rundir import atomic_write_text

__all__ = [
    "CLASS_WEIGHT_POWERS",
    "LOGGERS",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "LossConfig",
    "OptimConfig",
    "StageConfig",
    "ScheduleConfig",
    "RunConfig",
    "TrainConfig",
    "config_to_dict",
    "config_from_dict",
    "save_config",
    "load_config",
    "validate_config",
    "MONITORS",
    "config_changes",
    "config_text",
    "HARMLESS_CHANGES",
]


class ConfigError(FernbError, ValueError):
    """A configuration key or value that does not fit the typed config."""


@dataclass
class DataConfig:
    """Which data to train on and how to feed it.

    Attributes:
        dataset: a reader name of :func:`fernb.data.load_dataset` (``"synthetic"``, ``"ferplus"``, ``"rafdb"``, ...).
        root: data root; None uses ``$FERNB_<NAME>_ROOT`` / ``$FERNB_DATA_ROOT``.
        train_split: split trained on.
        valid_split: split used for model selection; None holds out ``valid_fraction`` of the train split
            (subject-independent when subjects are known).
        test_split: split touched only by :func:`fernb.engine.evaluate`, never by ``fit``.
        valid_fraction: share of the train split held out when ``valid_split`` is None.
        label_space: restrict to these classes (``"basic7"``, ...); None keeps the dataset's own classes.
        img_size: side of the square network input.
        batch_size: training batch size (per process under DDP).
        eval_batch_size: validation batch size; None uses ``batch_size``.
        eval_order: ``"shuffled"`` (seeded) or ``"sequential"`` batching of validation and test samples; matters for
            batch-dependent models (ARM, ARBEx), whose sequential batches of class-sorted data leak the label.
        eval_tta: test-time augmentation of validation and test scoring: ``"none"``, or ``"flip"`` (the logits of
            each face and of its mirror image averaged; twice the evaluation cost). The same for model selection and
            for :func:`fernb.engine.evaluate`; recorded with each evaluation (``tta``).
        num_workers: DataLoader workers; exact mid-epoch resume is guaranteed with 0 (the default).
        sampler: ``"shuffle"``, ``"sequential"`` or a sampler name of :func:`fernb.data.samplers.build_sampler`.
        sampler_kwargs: extra arguments of the sampler.
        transform: ``"auto"`` (the method's transforms from :mod:`fernb.data.transforms`), a transform preset name
            (``"poster_v2_affectnet"``, ``"arbex_heavy"``, ...) or ``"keep"`` (leave the dataset's own transform).
        options: reader options (e.g. synthetic ``n``/``size``, FER+ ``mode``).
        train_limit: keep at most this many training samples (seeded random subset); None keeps all.
        valid_limit: the same for the validation split.
        drop_last: drop the last incomplete training batch.
        folds: k of subject-independent k-fold cross-validation (0 = off). Fold ``fold`` is the test fold, fold
            ``fold + 1`` (mod k) the validation fold, the rest trains.
        fold: index of the test fold.
        fold_split: split that the folds are cut from.
        fallback: dataset to use when the data root is missing (smoke runs use ``"synthetic"``); None raises.
        pipeline: ``"pil"``: per-sample PIL transforms (the published pipelines, :mod:`fernb.data.transforms`);
            ``"tensor"``: every split decoded once into a uint8 array at ``img_size`` (cached on disk) and augmented
            a whole batch at a time (:mod:`fernb.data.arrays`), with the method's normalisation: the budget recipes'
            fast input on a CPU.
        batch_augment: fields of :class:`fernb.data.arrays.BatchTransform` for the ``tensor`` pipeline's training
            batches (``hflip``, ``degrees``, ``scale``, ``translate``, ``erase_p``, ``erase_scale``, ...).
        label_noise: flip training labels (:mod:`fernb.data.noise`): ``{"rate": 0.3, "kind": "symmetric",
            "seed": 0}``; kinds ``symmetric``, ``asymmetric`` (the FER confusion table) and ``file`` (``{"kind":
            "file", "file": ".../noise03.txt"}``, a noisy label file in RAF-DB's format); ``seed`` left out takes
            ``run.seed``. Only the samples that train get it (never validation, test or a held-out share); empty or
            None: no noise. Recorded in ``run.json`` (``data.label_noise``).
        align: detect, align and crop every image of every split the run reads (train, valid, test, and another
            dataset's split in a cross-dataset evaluation) once, cached on disk (:mod:`fernb.data.aligned`): a
            detector name (``"mtcnn"``, ``"mediapipe"``, ``"haar"``, ``"auto"``) or ``{"detector": ..., "template":
            "auto" | "fer" | "arcface", "size": None, "use_mouth": False, "border": "replicate", "options": {}}``;
            template ``"auto"`` is the method's published preprocessing (``fernb.data.aligned.METHOD_TEMPLATES``).
            None (the default): off. The resolved spec and the share of faces found per split go to ``run.json``
            (``data.align``); per sample, ``meta["face_found"]``.
    """

    dataset: str = "synthetic"
    root: str | None = None
    train_split: str = "train"
    valid_split: str | None = "valid"
    test_split: str = "test"
    valid_fraction: float = 0.1
    label_space: str | None = None
    img_size: int = 64
    batch_size: int = 32
    eval_batch_size: int | None = None
    eval_order: str = "shuffled"
    eval_tta: str = "none"
    num_workers: int = 0
    sampler: str = "shuffle"
    sampler_kwargs: dict[str, Any] = field(default_factory=dict)
    transform: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)
    train_limit: int | None = None
    valid_limit: int | None = None
    drop_last: bool = False
    folds: int = 0
    fold: int = 0
    fold_split: str = "all"
    fallback: str | None = None
    pipeline: str = "pil"
    batch_augment: dict[str, Any] = field(default_factory=dict)
    label_noise: dict[str, Any] | None = field(default_factory=dict)
    align: str | dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # each field on its own (dotted overrides set them one at a time); fit checks the whole spec and the file
        try:
            check_label_noise_fields(self.label_noise, "data.label_noise")
            if isinstance(self.align, str) and self.align.lstrip().startswith("{"):
                # a mapping typed on the command line (data.align={...}) arrives as text: str is a valid type too
                self.align = yaml.safe_load(self.align)
            check_align_fields(self.align, "data.align")
        except (LabelNoiseError, AlignError) as exc:
            raise ConfigError(str(exc)) from None


@dataclass
class ModelConfig:
    """Which registered model to build (:func:`fernb.models.create_model`).

    Attributes:
        name: registry name (``"arbex"``, ``"poster_v2"``, ``"resnet18"``, ``"arm"``, ``"adcorre"``, ``"esr"``,
            ``"manet"``).
        preset: ``"tiny"`` or ``"official"``.
        num_classes: None takes the label space's size.
        checkpoint: weights to start from (safetensors or a tensors-only torch file).
        strict: refuse a checkpoint whose keys do not match.
        kwargs: fields of the model's config dataclass.
    """

    name: str = "resnet18"
    preset: str = "tiny"
    num_classes: int | None = None
    checkpoint: str | None = None
    strict: bool = True
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    """The method's loss (:func:`fernb.losses.create_loss`).

    Attributes:
        name: registry name; None uses the model's name.
        kwargs: arguments of the loss factory.
        class_weights: ``"none"``, ``"inverse"`` (w_c = (N / C_present) / n_c from the train targets, 0 for absent
            classes) or ``"sqrt"`` (the square root of those), passed to the factory as ``class_weights=`` (C,)
            tensor.
    """

    name: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    class_weights: str = "none"


@dataclass
class OptimConfig:
    """Optimiser and gradient handling.

    Attributes:
        name: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        lr: base learning rate.
        weight_decay: L2 (Adam, SGD) or decoupled (AdamW) weight decay.
        momentum: SGD momentum.
        nesterov: SGD Nesterov momentum.
        betas: Adam/AdamW betas.
        eps: Adam/AdamW epsilon.
        sam: wrap the optimiser in Sharpness-Aware Minimisation (two forward/backward passes per step).
        sam_rho: SAM neighbourhood radius.
        sam_adaptive: adaptive SAM (scale the perturbation by |w|).
        clip_grad_norm: clip the global gradient norm to this value (None: off).
        lr_mult: parameter-name prefix -> learning-rate multiplier (first matching prefix wins); a model's own
            ``param_groups(lr)`` method takes precedence.
        decay_norm_bias: apply ``weight_decay`` to every parameter; False exempts norms, biases and other 1-d
            parameters, and what the model's ``no_weight_decay()`` names (ARBEx's anchors), as timm does.
        impl: how torch's Adam/AdamW/SGD update the weights: ``"fused"`` (one kernel over every tensor, on CPU and
            CUDA), ``"foreach"`` (torch's multi-tensor ops), ``"loop"`` (one tensor at a time: torch's own CPU
            choice, what runs trained before this field existed used) or ``"auto"`` (``fused`` where torch has it for
            the optimiser and device, else torch's own choice; ``run.json`` records the choice as ``optimizer_impl``).
            The same maths: another ``impl`` changes only the rounding, like another thread count, and each is
            deterministic for a seed. The default stays ``"loop"`` so that the recipes' measured figures hold: a fused
            AdamW step of the budget ResNet-18 takes 1.2 ms instead of 3.7 ms (ARBEx 2.2 instead of 8.6; 1-3 % of a
            training step), and the changed rounding moved ``make run``'s 306-face synthetic test figures by up to 8
            points (Ad-Corre 68.6 -> 60.1 %, ARM 68.3 -> 75.5 %), below the step plans' 65 % bar for two methods.
    """

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    sam: bool = False
    sam_rho: float = 0.05
    sam_adaptive: bool = False
    clip_grad_norm: float | None = None
    lr_mult: dict[str, float] = field(default_factory=dict)
    decay_norm_bias: bool = True
    impl: str = "loop"


@dataclass
class StageConfig:
    """One stage of a staged schedule (ESR's branch-by-branch training).

    Attributes:
        epochs: epochs in this stage.
        call: name of a model method called (without arguments) when the stage starts, e.g. ``"add_branch"``.
        lr: base learning rate of the stage (None keeps ``optim.lr``).
        reload_best: before ``call``, load the weights that validated best during the previous stage.
        restart_schedule: restart the learning-rate schedule (and the optimiser state) at the stage start.
    """

    epochs: int = 1
    call: str | None = None
    lr: float | None = None
    reload_best: bool = False
    restart_schedule: bool = True


@dataclass
class ScheduleConfig:
    """Training length, learning-rate schedule and model selection.

    Attributes:
        epochs: number of epochs (ignored when ``stages`` is given: their sum is used).
        name: ``"none"``, ``"exponential"`` (lr * gamma^epoch), ``"step"`` (lr * gamma^(epoch // step_size)),
            ``"cosine"`` or ``"linear"`` (per step, down to ``min_lr`` exactly at the last step), or ``"plateau"``
            (multiply by ``plateau_factor`` after ``plateau_patience`` validations without improvement of
            ``monitor``).
        gamma: decay factor of ``exponential`` and ``step``.
        step_size: epochs per decay of ``step``.
        min_lr: floor of ``cosine`` and ``plateau``.
        warmup_epochs: linear warm-up from 0 (per step), before any schedule.
        warmup_fraction: warm-up over this fraction of all steps instead (used when > 0).
        steps: train exactly this many optimiser steps (``epochs`` is then derived, the last epoch cut short, and
            ``cosine``/``linear`` end at the last step); a staged schedule shares them out by its stages' epochs.
        budget_s: train for this many wall-clock seconds (validation included): before training, the engine times
            a few steps and a validation on throw-away copies, turns the budget into ``steps`` and records it in
            ``run.json`` (``budget``); the schedule then ends exactly at the budget's last step. Rerun with
            ``schedule.steps=<recorded>`` for a bit-identical run on any machine (and ``schedule.first_steps``
            where the run re-planned).
        replan: a budget run plans again once, after its first epoch, from what that epoch and its validation
            cost (a few seconds of timing misjudge a step by up to 15 % on a busy machine); ``run.json``'s
            ``budget`` then records the first plan as ``first_steps`` and the measurement as ``replan``.
        first_steps: with ``steps``, replay a re-planned budget run: its first epoch follows a plan of this many
            steps, the rest the plan of ``steps`` (the recorded ``budget.first_steps`` and ``budget.steps``).
        plateau_factor: see ``name``.
        plateau_patience: see ``name``.
        monitor: validation metric that selects the best checkpoint (and drives ``plateau``).
        monitor_mode: ``"max"`` or ``"min"``.
        early_stop_patience: stop after this many validations without improvement (None: never).
        eval_every: validate every this many epochs (the last epoch is always validated).
        stages: staged training (see :class:`StageConfig`); empty for ordinary training.
    """

    epochs: int = 10
    name: str = "none"
    gamma: float = 0.98
    step_size: int = 10
    min_lr: float = 0.0
    warmup_epochs: float = 0.0
    warmup_fraction: float = 0.0
    steps: int | None = None
    budget_s: float | None = None
    replan: bool = True
    first_steps: int | None = None
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    monitor: str = "valid_accuracy"
    monitor_mode: str = "max"
    early_stop_patience: int | None = None
    eval_every: int = 1
    stages: list[StageConfig] = field(default_factory=list)

    @property
    def total_epochs(self) -> int:
        return sum(s.epochs for s in self.stages) if self.stages else self.epochs

    def scaled_stages(self, total: int) -> list[StageConfig]:
        """The stages with their epochs rescaled to sum to ``total`` (each keeps at least one; the remainder goes to
        the first stage), e.g. ESR's 100 + 8 x 60 epochs -> 4 + 8 x 1 for ``total=12``."""
        if not self.stages:
            return []
        if total < len(self.stages):
            raise ConfigError(f"{total} epochs cannot hold {len(self.stages)} stages of at least one epoch each")
        old = self.total_epochs
        epochs = [max(1, s.epochs * total // old) for s in self.stages]
        while sum(epochs) > total:
            epochs[epochs.index(max(epochs))] -= 1
        epochs[0] += total - sum(epochs)
        return [dataclasses.replace(s, epochs=e) for s, e in zip(self.stages, epochs)]


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""What ``run.compile`` may name besides true/false (torch.compile's modes)."""

LOGGERS = ("tensorboard", "mlflow")
"""What ``run.loggers`` may name (:mod:`fernb.engine.loggers`)."""


@dataclass
class RunConfig:
    """Where and how a run executes.

    Attributes:
        name: run folder name; None derives ``<model>-<dataset>-s<seed>`` (plus ``-fold<k>`` in cross-validation).
        out_dir: folder holding the run folders.
        seed: fixes data order, initialisation and augmentation.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        precision: ``"auto"`` (fp16 + GradScaler on CUDA, bf16 autocast on CPUs with native bf16, else fp32),
            ``"fp32"``, ``"bf16"`` or ``"fp16"`` (fp16 also runs on a CPU, slowly: ``auto`` never picks it there).
        loss_scale: GradScaler's initial loss scale under fp16 (halved after each step whose gradients overflow,
            which is then skipped; doubled after 2000 good steps).
        deterministic: ask torch for deterministic algorithms (CPU results are then bit-reproducible).
        resume: continue the run in ``run_dir`` from its last checkpoint.
        overwrite: replace an existing run in ``run_dir``; the old run is kept aside until the new one has
            built its data and model and started, and put back if the new one fails before its first epoch ends.
        allow_config_change: with ``resume``, accept a config that differs from the saved one in fields that change
            results (``optim.lr``, ``data.img_size``, ...); each accepted change is recorded in ``run.json``
            (``config_changes``) and ``config.json`` holds the config in force. Without it, such a resume is refused.
        quiet: no progress bars and no per-epoch lines (CI).
        checkpoint_every_steps: also checkpoint every this many optimiser steps inside an epoch (0: epoch ends only).
        save_last: keep the last checkpoint (needed for resume).
        keep_epochs: also keep the weights after every epoch (``checkpoints/epoch-001``, ...), for explorers that
            show how a model changed during training.
        max_steps: stop after this many optimiser steps (None: no limit).
        time_budget_s: stop once the run has spent this many seconds (training and the validations so far; None:
            no limit); the run still validates and saves at the stop.
        threads: torch intra-op threads (None: leave torch's setting).
        channels_last: keep the model and its inputs in channels-last memory (faster convolutions with oneDNN on
            CPUs; the budget recipes set it).
        compile: train through ``torch.compile`` (False: eager). True or ``"default"``, ``"reduce-overhead"``,
            ``"max-autotune"``, ``"max-autotune-no-cudagraphs"`` (torch's modes). Only the training forward and
            backward are compiled, with a dynamic batch size (other sizes static) and torch's eager random numbers
            (dropout draws what it draws eagerly), so a compiled run differs from an eager one by rounding only, like
            another thread count; checkpoints hold the plain model's weights. The first steps pay the compilation:
            ``run.json`` records it (``compile.warmup_seconds``). Needs a C++ compiler on CPUs (Triton on CUDA).
        ddp_find_unused_parameters: DDP option for models whose forward leaves some trainable parameters unused.
        loggers: logs that other tools read, besides ``metrics.csv``: any of ``"tensorboard"`` (``<run>/tensorboard``)
            and ``"mlflow"`` (:mod:`fernb.engine.loggers`; ``pip install 'fernb[logs]'``).
        mlflow_uri: the MLflow tracking URI (None: ``$MLFLOW_TRACKING_URI``, else the file store
            ``<out_dir>/mlruns``).
    """

    name: str | None = None
    out_dir: str = "runs"
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    loss_scale: float = 2.0**16
    deterministic: bool = True
    resume: bool = False
    overwrite: bool = False
    allow_config_change: bool = False
    quiet: bool = False
    checkpoint_every_steps: int = 0
    save_last: bool = True
    keep_epochs: bool = False
    max_steps: int | None = None
    time_budget_s: float | None = None
    threads: int | None = None
    channels_last: bool = False
    compile: bool | str = False
    ddp_find_unused_parameters: bool = False
    loggers: list[str] = field(default_factory=list)
    mlflow_uri: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.compile, str):  # an override's text ("true", "off") or one of torch's modes
            word = self.compile.strip().lower()
            flags = {"true": True, "on": True, "yes": True, "false": False, "off": False, "no": False}
            if word in flags:
                self.compile = flags[word]
            elif word in COMPILE_MODES:
                self.compile = word
            else:
                raise ConfigError(
                    f"run.compile={self.compile!r}; expected true, false or one of {', '.join(COMPILE_MODES)}"
                )
        unknown = [x for x in self.loggers if x not in LOGGERS]
        if unknown or len(set(self.loggers)) != len(self.loggers):
            raise ConfigError(
                f"run.loggers={self.loggers!r}; expected distinct names among {', '.join(LOGGERS)} (default: none)"
            )


@dataclass
class TrainConfig:
    """Everything a run needs. ``preset`` records the preset it came from (informational)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)
    preset: str | None = None
    smoke: bool = False

    @property
    def run_name(self) -> str:
        if self.run.name:
            return self.run.name
        name = f"{self.model.name}-{self.data.dataset}-s{self.run.seed}"
        return name + (f"-fold{self.data.fold}" if self.data.folds else "")

    @property
    def run_dir(self) -> Path:
        return Path(self.run.out_dir) / self.run_name

    @property
    def loss_name(self) -> str:
        return self.loss.name or self.model.name

    def copy(self) -> TrainConfig:
        return copy.deepcopy(self)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


# -- (de)serialisation ------------------------------------------------------------------------------------------------
def config_to_dict(cfg: Any) -> Any:
    """A JSON-ready copy of a config dataclass (tuples become lists)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {str(k): config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the type hint ``tp`` and convert where lossless (int -> float, list -> tuple)."""
    if tp is Any:
        return value
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} does not fit {_type_name(tp)}")
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value) and isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return _from_mapping(tp, value, where)
    if origin in (list, Sequence) or tp is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or (args and args[-1] is not Ellipsis and len(value) != len(args)):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        if args and args[-1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp) or (Any, Any)
        return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and value.strip().lower() in ("inf", "+inf", "-inf", "nan"):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _unknown_key(cls: type, key: str, where: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{where}: unknown key {key!r}{hint}; {cls.__name__} has {', '.join(names)}")


def _from_mapping(cls: type, data: Mapping[str, Any], where: str) -> Any:
    hints = _hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            raise _unknown_key(cls, key, where)
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where else key)
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` from nested mappings (as saved in ``config.json``), checking every key and type.

    Raises:
        ConfigError: naming the offending key, the expected type and (for typos) the closest valid key.
    """
    return _from_mapping(TrainConfig, data, "")


# -- files ------------------------------------------------------------------------------------------------------------
def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _finite_only(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite_only(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_only(v) for v in obj]
    return obj


def config_text(cfg: TrainConfig, suffix: str = ".json") -> str:
    """``cfg`` as JSON text (``.json``) or YAML (``.yaml``/``.yml``)."""
    data = _finite_only(config_to_dict(cfg))
    if suffix in (".yaml", ".yml"):
        return yaml.safe_dump(data, sort_keys=False)
    return json.dumps(data, indent=2, default=_json_default) + "\n"


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Write ``cfg`` as JSON (``.json``) or YAML (``.yaml``/``.yml``), atomically."""
    path = Path(path)
    atomic_write_text(path, config_text(cfg, path.suffix))


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read a config written by :func:`save_config` (or by hand) from JSON or YAML.

    Raises:
        ConfigError: naming the file and the offending key.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; expected a JSON or YAML config") from None
    try:
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); fix the file, or write it "
            "as YAML (.yaml)"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML ({problem}{where}); fix the file") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


# -- ranges -----------------------------------------------------------------------------------------------------------
MONITORS = (
    "valid_accuracy",
    "valid_mean_class_accuracy",
    "valid_macro_f1",
    "valid_nll",
    "valid_kl",
    "valid_js",
    "train_loss",
    "train_accuracy",
)
"""Epoch-row columns ``schedule.monitor`` may name (also ``train_<term>`` of the method's loss terms)."""

TTA_MODES: tuple[str, ...] = ("none", "flip")
"""Test-time augmentations of ``data.eval_tta``."""

# loss.class_weights mode -> power of the inverse class frequency (fernb.engine.data.class_weights); "none": no weights
CLASS_WEIGHT_POWERS: dict[str, float] = {"inverse": 1.0, "sqrt": 0.5}

_CHOICES: dict[str, tuple[str, ...]] = {
    "data.eval_order": ("shuffled", "sequential"),
    "data.eval_tta": TTA_MODES,
    "data.pipeline": ("pil", "tensor"),
    "optim.name": ("adam", "adamw", "sgd"),
    "optim.impl": ("auto", "fused", "foreach", "loop"),
    "schedule.name": ("none", "exponential", "step", "cosine", "linear", "plateau"),
    "schedule.monitor_mode": ("max", "min"),
    "loss.class_weights": ("none", *CLASS_WEIGHT_POWERS),
    "run.precision": ("auto", "fp32", "bf16", "fp16"),
}

# field -> (low, high, low inclusive, high inclusive); None: unbounded on that side. A None value of an optional
# field is always accepted.
_RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "data.valid_fraction": (0.0, 1.0, False, False),
    "data.img_size": (1, None, True, True),
    "data.batch_size": (1, None, True, True),
    "data.eval_batch_size": (1, None, True, True),
    "data.num_workers": (0, None, True, True),
    "data.train_limit": (1, None, True, True),
    "data.valid_limit": (1, None, True, True),
    "data.folds": (0, None, True, True),
    "data.fold": (0, None, True, True),
    "model.num_classes": (2, None, True, True),
    "optim.lr": (0.0, None, False, True),
    "optim.weight_decay": (0.0, None, True, True),
    "optim.momentum": (0.0, 1.0, True, False),
    "optim.eps": (0.0, None, False, True),
    "optim.sam_rho": (0.0, None, False, True),
    "optim.clip_grad_norm": (0.0, None, False, True),
    "schedule.epochs": (1, None, True, True),
    "schedule.gamma": (0.0, None, False, True),
    "schedule.step_size": (1, None, True, True),
    "schedule.min_lr": (0.0, None, True, True),
    "schedule.warmup_epochs": (0.0, None, True, True),
    "schedule.warmup_fraction": (0.0, 1.0, True, False),
    "schedule.steps": (1, None, True, True),
    "schedule.budget_s": (0.0, None, False, True),
    "schedule.plateau_factor": (0.0, 1.0, False, False),
    "schedule.plateau_patience": (0, None, True, True),
    "schedule.early_stop_patience": (0, None, True, True),
    "schedule.eval_every": (1, None, True, True),
    "run.seed": (0, None, True, True),
    "run.loss_scale": (0.0, None, False, True),
    "run.checkpoint_every_steps": (0, None, True, True),
    "run.max_steps": (1, None, True, True),
    "run.time_budget_s": (0.0, None, False, True),
    "run.threads": (1, None, True, True),
}


def _field(cfg: TrainConfig, key: str) -> Any:
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _range_text(low: float | None, high: float | None, lo_inc: bool, hi_inc: bool) -> str:
    if high is None:
        return f"{'>=' if lo_inc else '>'} {low}"
    if low is None:
        return f"{'<=' if hi_inc else '<'} {high}"
    return f"in {'[' if lo_inc else '('}{low}, {high}{']' if hi_inc else ')'}"


def _check_range(key: str, value: Any, rng: tuple[float | None, float | None, bool, bool]) -> str | None:
    """The complaint about ``value`` (None when it is inside the range; NaN never is)."""
    low, high, lo_inc, hi_inc = rng
    v = float(value)
    ok = not math.isnan(v)
    if ok and low is not None:
        ok = v >= low if lo_inc else v > low
    if ok and high is not None:
        ok = v <= high if hi_inc else v < high
    return None if ok else f"{key}={value!r}; expected a value {_range_text(low, high, lo_inc, hi_inc)}"


def validate_config(cfg: TrainConfig) -> TrainConfig:
    """Check every numeric field against its range and every choice against its options, before anything is read or
    written; returns ``cfg``.

    Raises:
        ConfigError: listing every offending field, its value and what it accepts.
    """
    problems: list[str] = []
    for key, rng in _RANGES.items():
        value = _field(cfg, key)
        if value is not None:
            problem = _check_range(key, value, rng)
            if problem:
                problems.append(problem)
    for key, options in _CHOICES.items():
        value = _field(cfg, key)
        if value not in options:
            close = difflib.get_close_matches(str(value), options, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{key}={value!r}{hint}; expected one of {', '.join(options)}")
    o, s, d = cfg.optim, cfg.schedule, cfg.data
    for i, beta in enumerate(o.betas):
        if not 0.0 <= beta < 1.0:
            problems.append(f"optim.betas[{i}]={beta!r}; expected a value in [0, 1)")
    for prefix, mult in o.lr_mult.items():
        if not mult >= 0.0:
            problems.append(f"optim.lr_mult.{prefix}={mult!r}; expected a multiplier >= 0")
    if d.folds == 1:
        problems.append("data.folds=1; expected 0 (off) or k >= 2 folds")
    if d.folds >= 2 and d.fold >= d.folds:
        problems.append(f"data.fold={d.fold}; expected a fold index in 0..{d.folds - 1} (data.folds={d.folds})")
    if s.monitor not in MONITORS and not s.monitor.startswith("train_"):
        close = difflib.get_close_matches(s.monitor, MONITORS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(
            f"schedule.monitor={s.monitor!r}{hint}; expected one of {', '.join(MONITORS)} or train_<loss term>"
        )
    if s.steps is not None and s.budget_s is not None:
        problems.append(f"schedule.steps={s.steps} and schedule.budget_s={s.budget_s}: give one of them")
    for i, st in enumerate(s.stages):
        if st.epochs < 1:
            problems.append(f"schedule.stages[{i}].epochs={st.epochs}; expected >= 1")
        if st.lr is not None and not st.lr > 0:
            problems.append(f"schedule.stages[{i}].lr={st.lr!r}; expected a learning rate > 0")
    if cfg.run.resume and cfg.run.overwrite:
        problems.append("run.resume and run.overwrite exclude each other; choose one")
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    return cfg


# -- resume: what changed --------------------------------------------------------------------------------------------
HARMLESS_CHANGES = (
    "preset",
    "smoke",
    "data.root",
    "data.num_workers",
    "run.name",
    "run.out_dir",
    "run.device",
    "run.resume",
    "run.overwrite",
    "run.allow_config_change",
    "run.quiet",
    "run.threads",
    "run.compile",
    "optim.impl",
    "run.checkpoint_every_steps",
    "run.save_last",
    "run.keep_epochs",
    "run.time_budget_s",
    "run.loggers",
    "run.mlflow_uri",
)
"""Fields a resumed run may change without ``run.allow_config_change``: where things are, how they are shown and
saved, and when to stop on the clock; none of them changes what a step computes (threads, ``run.compile`` and
``optim.impl`` change how it is computed, hence its rounding only)."""


def _flatten(data: Mapping[str, Any]) -> dict[str, Any]:
    """``{"data": {"img_size": 64}, "smoke": True}`` -> ``{"data.img_size": 64, "smoke": True}`` (one level)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def config_changes(old: TrainConfig, new: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """``{field: (old, new)}`` for every field (dotted, down to the section's fields) that differs."""
    a, b = _flatten(config_to_dict(old)), _flatten(config_to_dict(new))
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
