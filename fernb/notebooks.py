"""Run the numbered notebooks top to bottom with papermill (the main job, and CI's notebook tests)."""

from __future__ import annotations

import csv
import functools
import json
import multiprocessing
import os
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .data import dataset_info, load_dataset
from .data.base import resolve_root
from .data.errors import DataRootError, FernbDataError
from .engine import TrainConfig, apply_overrides, config_from_preset, config_to_dict, evaluate, fit
from .engine.distributed import resolve_device
from .engine.metrics import mean_std
from .engine.presets import budget_overrides, merge_model_kwargs, smoke_overrides, split_recipe
from .engine.rundir import RunDir
from .errors import FernbError

__all__ = [
    "NOTEBOOK_DIR",
    "NotebookRun",
    "RunSpec",
    "leaderboard",
    "list_notebooks",
    "run_notebook",
    "run_notebooks",
    "method_config",
    "train_and_test",
    "pick_recipe",
    "noise_tag",
    "injected_noise",
    "noise_grid",
    "noise_grid_configs",
    "plan_jobs",
    "train_many",
    "RunFailedError",
    "fit_splits_to_data",
    "protocol_note",
]

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"


@dataclass
class NotebookRun:
    """The outcome of one executed notebook."""

    notebook: Path
    output: Path
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def list_notebooks(folder: str | Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in order."""
    return sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def run_notebook(
    notebook: str | Path,
    out_dir: str | Path,
    *,
    smoke: bool = False,
    parameters: Mapping[str, Any] | None = None,
    timeout: int | None = None,
    progress: bool = False,
) -> NotebookRun:
    """Execute one notebook with papermill, writing the executed copy to ``out_dir``.

    ``SMOKE`` is injected into the parameters cell; the working directory is the notebook's folder so that relative
    paths behave as in JupyterLab. ``timeout`` bounds each cell (seconds); None: 1800 s in smoke mode and no bound
    in full mode, where a training cell may run for hours.
    """
    import papermill as pm

    nb = Path(notebook).resolve()
    out = Path(out_dir).resolve() / nb.name
    out.parent.mkdir(parents=True, exist_ok=True)
    params = {"SMOKE": bool(smoke), **dict(parameters or {})}
    env_before = os.environ.get("FERNB_SMOKE")
    os.environ["FERNB_SMOKE"] = "1" if smoke else "0"
    t0 = time.perf_counter()
    error = None
    try:
        pm.execute_notebook(
            str(nb),
            str(out),
            parameters=params,
            kernel_name="python3",
            cwd=str(nb.parent),
            execution_timeout=timeout if timeout is not None else (1800 if smoke else None),
            progress_bar=progress,
            log_output=False,
        )
    except pm.PapermillExecutionError as exc:
        error = f"{exc.ename}: {exc.evalue} (cell {exc.exec_count})"
    finally:
        if env_before is None:
            os.environ.pop("FERNB_SMOKE", None)
        else:
            os.environ["FERNB_SMOKE"] = env_before
    return NotebookRun(nb, out, time.perf_counter() - t0, error)


def run_notebooks(
    notebooks: Iterable[str | Path] | None = None,
    out_dir: str | Path = "outputs/notebooks",
    *,
    smoke: bool = False,
    parameters: Mapping[str, Any] | None = None,
    stop_on_error: bool = True,
) -> list[NotebookRun]:
    """Execute notebooks in order (all numbered ones by default), printing one line each."""
    runs: list[NotebookRun] = []
    for nb in list(notebooks) if notebooks is not None else list_notebooks():
        run = run_notebook(nb, out_dir, smoke=smoke, parameters=parameters)
        runs.append(run)
        status = "ok" if run.ok else f"FAILED: {run.error}"
        print(f"{Path(nb).name:40s} {run.seconds:7.1f} s  {status}  -> {run.output}", flush=True)
        if not run.ok and stop_on_error:
            break
    total = sum(r.seconds for r in runs)
    print(f"{len(runs)} notebook(s) in {total:.1f} s ({'smoke' if smoke else 'full'} mode)", flush=True)
    return runs


def notebook_config(preset: str, smoke: bool, **params: Any):
    """A training config for a notebook: the preset, the notebook's parameters, then smoke mode on top.

    Parameters whose value is None keep the preset's value. Smoke mode is applied last so that a notebook run with
    ``SMOKE=True`` is always seconds long, whatever its other parameters say. Keys are dotted config paths given
    with double underscores (``schedule__epochs=12``).
    """
    given = {k.replace("__", "."): v for k, v in params.items() if v is not None}
    cfg = config_from_preset(preset, smoke=False, **given)  # also fits ESR's stages to the model's branches
    if "schedule.epochs" in given and cfg.schedule.stages:  # a staged recipe (ESR) fits its stages to the epochs
        cfg.schedule.stages = cfg.schedule.scaled_stages(int(given["schedule.epochs"]))
    if smoke:
        method, _, dataset = split_recipe(preset)[0].partition("/")
        cfg = apply_overrides(cfg, {**smoke_overrides(method, dataset or "synthetic"), "smoke": True})
    return cfg


def train_and_test(
    cfg, *, bootstrap: int = 1000, reuse: bool = True, callbacks=None, test: bool | str = True
) -> dict[str, Any]:
    """Train ``cfg`` and evaluate it once on its test split; reuse a finished run with the same config.

    ``test=False`` only trains (or reuses) the run, for notebooks that look at its train or validation split, also
    on dataset copies without a test split (such as the shared FER+ subset); ``"test"`` is then None.
    ``test="auto"`` evaluates when the dataset has a test split and leaves ``"test"`` None when its folder lacks
    one.

    Returns:
        ``{"run_dir", "config", "history", "best_epoch", "best_value", "train_seconds", "test": metrics,
        "reused": bool}``.
    """
    if reuse and (found := _finished(cfg, test)) is not None:
        return found
    if test == "auto":
        test = _has_test_split(cfg)
    cfg = _with_overwrite(cfg)
    result = fit(cfg, callbacks=list(callbacks or []))
    metrics = evaluate(result.run_dir, "test", bootstrap=bootstrap) if test else None
    return {
        "run_dir": result.run_dir,
        "config": cfg,
        "history": result.history,
        "best_epoch": result.best_epoch,
        "best_value": result.best_value,
        "train_seconds": result.train_seconds,
        "test": metrics,
        "reused": False,
    }


def _finished(cfg: TrainConfig, test: bool | str) -> dict[str, Any] | None:
    """:func:`train_and_test`'s result for a completed run in ``cfg``'s folder with the same config (and a test
    evaluation when ``test`` asks for one); None when the run must be trained."""
    rd = RunDir(Path(cfg.run.out_dir) / (cfg.run.name or "run"))
    if not (rd.config_path.exists() and (rd.path / "run.json").exists()):
        return None
    record = rd.read_record()
    same = _comparable(json.loads(rd.config_path.read_text())) == _comparable(
        json.loads(json.dumps(config_to_dict(cfg), default=str))
    )
    tests = [e for e in record.get("evaluations", []) if e.get("test")]
    if test == "auto" and not tests:
        test = _has_test_split(cfg)
    if not (same and record.get("status") == "completed" and (tests or not test)):
        return None
    with open(rd.path / "metrics.csv", newline="") as f:
        history = list(csv.DictReader(f))
    best = record.get("best") or {}
    return {
        "run_dir": rd.path,
        "config": cfg,
        "history": history,
        "best_epoch": best.get("epoch"),
        "best_value": best.get("value"),
        "train_seconds": record.get("train_seconds"),
        "test": json.loads((rd.path / tests[-1]["file"]).read_text()) if test and tests else None,
        "reused": True,
    }


def plan_jobs(jobs: int | str, pending: int, device: str = "auto") -> tuple[int, int | None]:
    """How to train ``pending`` runs: ``(processes, torch threads per process)``.

    ``jobs="auto"`` trains two runs side by side on a CPU and one at a time on a GPU. Side by side, each process gets
    an equal share of the cores: on 2 cores, two 1-thread runs train 1.2-1.7x more images per second together than
    one 2-thread run (ResNet-18 378 vs 308 img/s, MA-Net 642 vs 370), because small convolutions do not scale over
    threads. One process (threads None) keeps torch's own thread count.
    """
    if jobs == "auto":
        jobs = 1 if resolve_device(device).type != "cpu" else 2
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int or 'auto', got {jobs!r}")
    n = min(jobs, pending)
    if n <= 1:
        return 1, None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return n, max(1, cores // n)


class RunFailedError(FernbError):
    """A run of :func:`train_many` failed in its training process with one of fernb's own errors.

    The message names the run and repeats the child's message, which says what to do. ``run`` is the run's name,
    ``error_type`` the name of the child's error class (``"ConfigError"``, ``"DataRootError"``, ...),
    ``child_message`` its message and ``child_traceback`` the child's traceback as text (the error object itself
    stays in the child: not every error survives the trip between processes).
    """

    def __init__(self, run: str, error_type: str, child_message: str, child_traceback: str = ""):
        self.run, self.error_type = run, error_type
        self.child_message, self.child_traceback = child_message, child_traceback
        super().__init__(f"run {run!r} failed in its training process: {error_type}: {child_message}")

    def __reduce__(self):  # picklable with its fields, unlike an exception whose __init__ does not take its message
        return type(self), (self.run, self.error_type, self.child_message, self.child_traceback)


class _ChildFailure(Exception):
    """An error in a :func:`train_many` process, as plain strings that cross back to the parent whatever the error
    was (an error whose ``__init__`` needs more than its message, such as ``DataRootError``, does not unpickle)."""

    def __init__(self, error_type: str, message: str, tb: str, fernb_error: bool):
        super().__init__(error_type, message, tb, fernb_error)
        self.error_type, self.message, self.tb, self.fernb_error = error_type, message, tb, fernb_error


def _train_worker(cfg: TrainConfig, bootstrap: int, test: bool | str) -> float:
    """One run of :func:`train_many` in its own process; returns its training seconds.

    Raises:
        _ChildFailure: any error of the run, as its class name, message and traceback text.
    """
    try:
        return float(train_and_test(cfg, bootstrap=bootstrap, test=test)["train_seconds"] or 0.0)
    except Exception as exc:
        raise _ChildFailure(type(exc).__name__, str(exc), traceback.format_exc(), isinstance(exc, FernbError)) from None


class _ChildTraceback(Exception):
    """The traceback text of a :func:`train_many` process, shown as the cause of the error the parent raises."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0]) if self.args else ""


def _run_failed(name: str, exc: BaseException) -> Exception:
    """The error :func:`train_many` raises for run ``name`` whose process raised ``exc``, with the child's traceback
    as its cause: a :class:`RunFailedError` for one of fernb's errors (the user can act on its message), else a
    RuntimeError (a bug, or a process that died)."""
    if not isinstance(exc, _ChildFailure):  # the process itself died (killed, out of memory): BrokenProcessPool
        died = RuntimeError(f"run {name!r} failed in its training process: {type(exc).__name__}: {exc}")
        died.__cause__ = exc
        return died
    err: Exception
    if exc.fernb_error:
        err = RunFailedError(name, exc.error_type, exc.message, exc.tb)
    else:
        err = RuntimeError(f"run {name!r} failed in its training process: {exc.error_type}: {exc.message}")
        err.child_traceback = exc.tb  # type: ignore[attr-defined]
    err.__cause__ = _ChildTraceback(exc.tb)
    return err


def train_many(
    cfgs: Sequence[TrainConfig], *, jobs: int | str = "auto", bootstrap: int = 1000, test: bool | str = True
) -> list[dict[str, Any]]:
    """:func:`train_and_test` for several configs, training the runs that are not finished ``jobs`` at a time.

    Runs that train side by side each get their share of the cores (:func:`plan_jobs`), in their own process, and
    print nothing but one line each when done; the results are then read back from the run folders, in the order of
    ``cfgs``. ``run.threads`` is recorded in each run's ``config.json`` but is not part of what makes two configs the
    same: the thread count changes only the rounding of the sums (the same seed and thread count give the same
    metrics; another thread count gives a run of the same recipe that differs like another seed would, by a point
    or so on the synthetic test split).

    Raises:
        RunFailedError: a run failed in its process with one of fernb's errors (a :class:`~fernb.errors.FernbError`:
            a bad config field, a missing data root, ...); the message names the run and carries the child's
            message, ``error_type`` its class name and ``child_traceback`` its traceback.
        RuntimeError: a run failed in its process with any other error (``child_traceback``: its traceback), or
            the process died. Either error's cause shows the child's traceback.
    """
    folders: dict[Path, TrainConfig] = {}
    for c in cfgs:
        folders.setdefault(Path(c.run.out_dir) / (c.run.name or "run"), c)
    pending = [c for c in folders.values() if _finished(c, test) is None]
    n, threads = plan_jobs(jobs, len(pending), pending[0].run.device if pending else "auto")
    if n > 1:
        print(f"training {len(pending)} runs, {n} at a time, {threads} thread(s) each", flush=True)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(n, mp_context=ctx) as pool:
            futures = {
                pool.submit(
                    _train_worker, apply_overrides(c, {"run.threads": threads, "run.quiet": True}), bootstrap, test
                ): c
                for c in pending
            }
            for fut in as_completed(futures):
                name = futures[fut].run.name
                try:
                    seconds = fut.result()
                except Exception as exc:
                    for waiting in futures:  # the runs not yet started; the running ones finish first
                        waiting.cancel()
                    err = _run_failed(name or "run", exc)
                    raise err from err.__cause__  # the child's traceback
                print(f"  {name}: trained in {seconds:.0f} s", flush=True)
    results = [train_and_test(c, bootstrap=bootstrap, test=test) for c in cfgs]
    trained = {id(c) for c in pending} if n > 1 else set()
    return [r | {"reused": False} if id(c) in trained else r for c, r in zip(cfgs, results, strict=True)]


def _has_test_split(cfg: TrainConfig) -> bool:
    """False when the dataset's folder exists but has no ``data.test_split`` (a folder with a train split only; the
    shared FER+ subset's valid split is its test split, :func:`fit_splits_to_data`); True otherwise: cross-validation
    folds, and a missing folder (left to the run, which falls back or explains)."""
    return bool(cfg.data.folds) or _split_present(cfg, cfg.data.test_split) is not False


def _split_present(cfg: TrainConfig, split: str) -> bool | None:
    """Whether the data folder of ``cfg`` holds ``split``, as its reader reports it: a split outside the reader's
    registered splits is never there, and a reader names a split missing from a folder that exists with a
    DataRootError. None when the folder itself is missing (the run falls back to other data, or explains)."""
    d = cfg.data
    info = dataset_info(d.dataset)
    if info.splits and split not in info.splits:
        return False
    if info.name == "synthetic":  # generated, every registered split
        return True
    try:
        root = resolve_root(info, d.root)
    except DataRootError:
        return None
    return _folder_has_split(info.name, str(root), split, json.dumps(d.options, sort_keys=True, default=str))


@functools.lru_cache(maxsize=64)
def _folder_has_split(dataset: str, root: str, split: str, options: str) -> bool:
    """:func:`_split_present` for a folder that exists (cached: every config of a notebook asks)."""
    try:
        load_dataset(dataset, root, split, **json.loads(options))
    except DataRootError:
        return False
    except FernbDataError:  # the split is there but cannot be read: the run says why
        return True
    return True


def fit_splits_to_data(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its splits fitted to a data folder that lacks the test split, so that models are still selected
    on data the test figure never sees.

    With the published splits present (or the folder missing, or cross-validation) ``cfg`` is returned as it is.
    Without ``data.test_split`` (the shared FER+ subset: a train subset and the valid split, no test split) the model
    is selected on a seeded holdout of the training split (``data.valid_split=None``, ``data.valid_fraction`` of it,
    drawn with the run seed) and the published validation split becomes the test split (``data.test_split``), read
    once at the end by :func:`fernb.engine.evaluate`. A folder with neither keeps the holdout and has no test figure.
    The splits present are what the dataset's reader reports (:func:`_split_present`), not a list of datasets.
    """
    d = cfg.data
    if d.folds or _split_present(cfg, d.test_split) is not False:
        return cfg
    changes: dict[str, Any] = {"data.valid_split": None}
    if d.valid_split is not None and _split_present(cfg, d.valid_split):
        changes["data.test_split"] = d.valid_split
    return apply_overrides(cfg, changes)


def protocol_note(cfg: TrainConfig) -> str:
    """One line for a results table's header: where a run selects its model and which split gives its test figure,
    e.g. ``"model selection on a seeded 10 % holdout of 'train'; test figure on the 'valid' split, read once at the
    end (this ferplus folder has no 'test' split: its 'valid' split stands in for it, and nothing selects on it)"``.
    """
    d = cfg.data
    if d.folds:
        return (
            f"subject-independent {d.folds}-fold cross-validation of {d.fold_split!r}: fold {d.fold} gives the test "
            "figure, the next fold selects the model"
        )
    select = (
        f"the {d.valid_split!r} split"
        if d.valid_split is not None
        else f"a seeded {100 * d.valid_fraction:g} % holdout of {d.train_split!r}"
    )
    if _split_present(cfg, d.test_split) is False:
        return f"model selection on {select}; no test figure (this {d.dataset} folder has no {d.test_split!r} split)"
    note = f"model selection on {select}; test figure on the {d.test_split!r} split, read once at the end"
    if d.test_split != "test" and _split_present(cfg, "test") is False:
        note += (
            f" (this {d.dataset} folder has no 'test' split: its {d.test_split!r} split stands in for it, and nothing "
            "selects on it)"
        )
    return note


def _with_overwrite(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with ``run.overwrite`` on: a run that is not reused is trained afresh in its folder."""
    return apply_overrides(cfg, {"run.overwrite": True})


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """A config dict without the run flags that do not change results (``out_dir`` included: the same runs folder
    reached by another path, as a browser test's absolute path beside a notebook's ``../runs``; ``threads``: see
    :func:`train_many`; ``compile``: the same numbers up to rounding)."""
    out = dict(cfg)
    out["run"] = {
        k: v
        for k, v in (cfg.get("run") or {}).items()
        if k not in ("quiet", "overwrite", "resume", "out_dir", "threads", "compile")
    }
    return out


# Short from-scratch CPU runs of the *published* recipes (``RECIPE = "published"`` with the tiny presets) need other
# steps than the papers', which assume pretrained backbones (POSTER_V2, ARBEx, MA-Net) or hundreds of epochs (ESR).
# Measured: tiny POSTER_V2 on FER+ valid after 300 steps 35% at lr 3e-4 vs 31% at 1e-3; on the synthetic data, 12
# epochs at 64 px (valid accuracy): MA-Net 18.7% with its SGD 0.01 (chance 14%), 27.9% with SGD 0.05, 32.5% with Adam
# 1e-3; ESR 30.8% with its SGD 0.1, 51.1% with Adam 1e-3. ARBEx also holds its trust at 0 for the first half (loss
# ``ramp_start``): its correction weighs the head by its confidence, and a head still uniform when trust arrives stops
# learning (fernb.losses.arbex). The budget recipe (fernb.engine.presets) has its own optimiser and needs none of this.
_ADAM = {"name": "adam", "lr": 1e-3, "weight_decay": 0.0}
SCRATCH_OPTIM: dict[str, dict[str, Any]] = {
    "arbex": {"lr": 3e-4},
    "poster_v2": {"lr": 3e-4},
    "esr": _ADAM,
    "manet": _ADAM,
}
_SCRATCH_LOSS = {"arbex": {"ramp_start": 0.5}}
RECIPE_CHOICES = ("auto", "budget", "published")


def pick_recipe(recipe: str, device: str = "auto") -> str:
    """``"auto"`` -> ``"budget"`` on a CPU, ``"published"`` on a GPU; ``"budget"`` / ``"published"`` as given.

    Raises:
        ValueError: any other value (the notebooks' ``RECIPE`` parameter).
    """
    if recipe not in RECIPE_CHOICES:
        raise ValueError(f"RECIPE={recipe!r}; expected one of {', '.join(RECIPE_CHOICES)}")
    if recipe != "auto":
        return recipe
    return "published" if resolve_device(device).type == "cuda" else "budget"


def method_config(
    method: str,
    dataset: str,
    smoke: bool,
    *,
    seed: int = 0,
    recipe: str = "auto",
    budget_s: float | None = None,
    steps: int | None = None,
    preset: str | None = "tiny",
    epochs: int | None = None,
    img_size: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    root: str | None = None,
    device: str = "auto",
    runs: str = "runs",
    model_kwargs: Mapping[str, Any] | None = None,
    quiet: bool = False,
    label_noise: Mapping[str, Any] | None = None,
):
    """The config the training and comparison notebooks share, so that notebook 04 reuses the runs of 02 and 03.

    ``recipe`` (see :func:`pick_recipe`): ``"budget"`` trains the method's CPU model for ``budget_s`` seconds (or
    ``steps`` optimiser steps, or ``epochs``) with the budget recipe of :mod:`fernb.engine.presets`; ``"published"``
    trains the paper's recipe, where the tiny presets use :data:`SCRATCH_OPTIM` instead of the recipe's optimiser.
    ``img_size``, ``batch_size``, ``lr`` and ``preset`` override either recipe when given; ``model_kwargs`` are added
    to the recipe's model options (the budget ARBEx keeps its backbone unless they name another).

    ``label_noise`` flips training labels (``data.label_noise``, :mod:`fernb.data.noise`); None or a rate of 0: the
    labels as given, the same config as a run without it.

    The run is named ``<method>-<dataset>-s<seed>`` (then ``-<noise_tag>`` with label noise, and ``-smoke`` in smoke
    mode) under ``runs``, so that a noisy run never overwrites the clean one.

    A data folder without the test split (the shared FER+ subset) gets the protocol of :func:`fit_splits_to_data`:
    selection on a seeded holdout of train, the published validation split as the test split.
    """
    noise = _effective_noise(label_noise)
    recipe = pick_recipe(recipe, device)
    loss_kwargs, optim = None, {}
    if recipe == "published" and preset == "tiny":
        optim = {f"optim__{k}": v for k, v in SCRATCH_OPTIM.get(method, {}).items()}
        loss_kwargs = _SCRATCH_LOSS.get(method)
    if lr is not None:
        optim["optim__lr"] = lr
    kwargs = None
    if model_kwargs:
        base = budget_overrides(method, dataset)["model.kwargs"] if recipe == "budget" else {}
        kwargs = merge_model_kwargs(base, model_kwargs)
    cfg = notebook_config(
        f"{method}/{dataset}" + ("@budget" if recipe == "budget" else ""),
        smoke,
        data__root=root,
        data__img_size=img_size,
        data__batch_size=batch_size,
        schedule__epochs=epochs,
        schedule__steps=steps,
        schedule__budget_s=budget_s if recipe == "budget" else None,
        **optim,
        loss__kwargs=loss_kwargs,
        model__preset=preset if recipe == "published" or preset != "tiny" else None,
        model__kwargs=kwargs,
        data__label_noise=noise,
        run__seed=seed,
        run__device=device,
        run__out_dir=runs,
        run__quiet=quiet,
        run__keep_epochs=True,
        run__name=f"{method}-{dataset}-s{seed}"
        + (f"-{noise_tag(noise)}" if noise else "")
        + ("-smoke" if smoke else ""),
    )
    return fit_splits_to_data(cfg)


def _effective_noise(label_noise: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """None for no noise (None, an empty spec, or a rate of 0), else the spec as a plain dict."""
    if not label_noise:
        return None
    if label_noise.get("kind", "symmetric") != "file" and not label_noise.get("rate"):
        return None
    return dict(label_noise)


def noise_tag(label_noise: Mapping[str, Any] | None) -> str:
    """A short name for a label-noise spec, for run names: ``{"rate": 0.3, "kind": "symmetric", "seed": 0}`` ->
    ``"sym30-n0"``, asymmetric -> ``"asym30"``, a file -> ``"file-noise03"``; ``""`` for no noise."""
    noise = _effective_noise(label_noise)
    if noise is None:
        return ""
    kind = str(noise.get("kind") or "symmetric")
    if kind == "file":
        tag = "file-" + Path(str(noise.get("file", "labels"))).stem
    else:
        tag = {"symmetric": "sym", "asymmetric": "asym"}.get(kind, kind) + f"{100 * float(noise['rate']):g}"
    return tag + (f"-n{noise['seed']}" if noise.get("seed") is not None else "")


def injected_noise(dataset: str, noise: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The label noise a notebook injects into ``dataset``'s training labels: ``noise`` on real data, None on the
    synthetic data, which knows its own wrong labels already (10 % of its training labels, ``noise_rate``), so its
    runs stay the ones notebooks 02-03 train."""
    return None if dataset == "synthetic" else _effective_noise(noise)


# Parameters-cell names -> RunSpec fields
_PARAMETERS = {
    "DATASET": "dataset",
    "SMOKE": "smoke",
    "DATA_ROOT": "data_root",
    "RECIPE": "recipe",
    "BUDGET_S": "budget_s",
    "STEPS": "steps",
    "PRESET": "preset",
    "EPOCHS": "epochs",
    "IMG_SIZE": "img_size",
    "BATCH_SIZE": "batch_size",
    "LR": "lr",
    "SEED": "seed",
    "DEVICE": "device",
    "RUNS": "runs",
    "BEHAVIOUR": "behaviour",
}


@dataclass(frozen=True)
class RunSpec:
    """The run parameters notebooks 02-07 share, so that equal parameters give equal configs and a run trained by one
    notebook is reused by the next (:func:`train_and_test` compares the configs).

    Build it from a notebook's parameters cell with :meth:`from_parameters`; ``behaviour`` applies to ARBEx only;
    ``label_noise`` (``data.label_noise``) flips training labels, e.g. ``spec.with_(label_noise={"rate": 0.3})``.
    """

    dataset: str = "synthetic"
    smoke: bool = False
    data_root: str | None = None
    recipe: str = "auto"
    budget_s: float | None = None
    steps: int | None = None
    preset: str | None = "tiny"
    epochs: int | None = None
    img_size: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    device: str = "auto"
    runs: str = "runs"
    behaviour: str = "fixed"
    label_noise: Mapping[str, Any] | None = None

    @classmethod
    def from_parameters(cls, params: Mapping[str, Any]) -> RunSpec:
        """From a parameters cell's names (``RunSpec.from_parameters(globals())``): ``DATASET``, ``SMOKE``,
        ``DATA_ROOT``, ``RECIPE``, ``BUDGET_S``, ``STEPS``, ``PRESET``, ``EPOCHS``, ``IMG_SIZE``, ``BATCH_SIZE``,
        ``LR``, ``SEED``, ``DEVICE``, ``RUNS``, ``BEHAVIOUR``; the names a notebook leaves out keep their defaults."""
        return cls(**{field: params[name] for name, field in _PARAMETERS.items() if name in params})

    def with_(self, **changes: Any) -> RunSpec:
        """A copy with some fields changed (``spec.with_(dataset="ferplus", data_root=folder)``)."""
        return replace(self, **changes)

    def config(
        self,
        method: str,
        *,
        seed: int | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        quiet: bool = False,
    ):
        """The :class:`~fernb.engine.TrainConfig` of ``method`` (a registry name) under this spec."""
        kwargs = {"behaviour": self.behaviour} if method == "arbex" else {}
        kwargs.update(model_kwargs or {})
        return method_config(
            method,
            self.dataset,
            self.smoke,
            seed=self.seed if seed is None else seed,
            recipe=self.recipe,
            budget_s=self.budget_s,
            steps=self.steps,
            preset=self.preset,
            epochs=self.epochs,
            img_size=self.img_size,
            batch_size=self.batch_size,
            lr=self.lr,
            root=self.data_root,
            device=self.device,
            runs=self.runs,
            model_kwargs=kwargs or None,
            quiet=quiet,
            label_noise=self.label_noise,
        )

    def train(
        self,
        method: str,
        *,
        seed: int | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        callbacks=None,
        test: bool | str = True,
        quiet: bool = False,
    ) -> dict[str, Any]:
        """Train ``method`` (or reuse its finished run) and evaluate it once on the test split (``test="auto"``:
        where the dataset has one); see :func:`train_and_test`. The bootstrap interval draws 200 resamples in
        smoke mode, else 1000."""
        cfg = self.config(method, seed=seed, model_kwargs=model_kwargs, quiet=quiet)
        return train_and_test(cfg, bootstrap=200 if self.smoke else 1000, callbacks=callbacks, test=test)

    def train_all(
        self,
        methods: Sequence[str],
        *,
        seeds: Sequence[int] | None = None,
        model_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        jobs: int | str = "auto",
        test: bool | str = True,
    ) -> dict[tuple[str, int], dict[str, Any]]:
        """:meth:`train` for every method and seed (default: the spec's seed), ``jobs`` runs side by side
        (:func:`train_many`); ``model_kwargs`` maps a method to its extra model options.

        Returns:
            ``{(method, seed): result}`` in the order of ``methods`` then ``seeds``.
        """
        keys = [(m, int(s)) for m in methods for s in ([self.seed] if seeds is None else seeds)]
        cfgs = [self.config(m, seed=s, model_kwargs=(model_kwargs or {}).get(m), quiet=True) for m, s in keys]
        results = train_many(cfgs, jobs=jobs, bootstrap=200 if self.smoke else 1000, test=test)
        return dict(zip(keys, results, strict=True))


def leaderboard(runs: Mapping[tuple[str, int], Mapping[str, Any]]) -> pd.DataFrame:
    """One row per method from ``{(method, seed): train_and_test result}``: test accuracy (mean and standard deviation
    over seeds), the bootstrap 95 % interval of the first seed's run, mean class accuracy and macro-F1 (means over
    seeds), sorted by accuracy."""
    by_method: dict[str, list[Mapping[str, Any]]] = {}
    for (method, _seed), result in runs.items():
        by_method.setdefault(method, []).append(result["test"])
    rows = []
    for method, tests in by_method.items():
        acc = mean_std([t["accuracy"] for t in tests])
        ci = tests[0].get("ci", {}).get("accuracy", {})
        rows.append(
            {
                "method": method,
                "accuracy": acc["mean"],
                "acc std": acc["std"],
                "acc CI low": ci.get("low"),
                "acc CI high": ci.get("high"),
                "mean class acc": float(np.mean([t["mean_class_accuracy"] for t in tests])),
                "macro-F1": float(np.mean([t["macro_f1"] for t in tests])),
                "seeds": len(tests),
            }
        )
    return pd.DataFrame(rows).set_index("method").sort_values("accuracy", ascending=False)


def noise_grid_configs(
    spec: RunSpec,
    methods: Sequence[str],
    rates: Sequence[float],
    seeds: Sequence[int],
    *,
    kind: str = "symmetric",
    noise_seed: int | None = None,
    steps: int | None = None,
    budget_s: float | None = None,
) -> tuple[list[tuple[str, float, int]], list[TrainConfig]]:
    """The ``(method, rate, seed)`` keys and configs of :func:`noise_grid` (its arguments), for a notebook that trains
    them together with other runs (:func:`train_many`) before looking at them.

    Raises:
        ValueError: both ``steps`` and ``budget_s`` are given.
    """
    if steps is not None and budget_s is not None:
        raise ValueError(f"steps={steps} and budget_s={budget_s}: give one measure of training length")
    base = spec
    if steps is not None:
        base = spec.with_(steps=steps, budget_s=None)
    elif budget_s is not None:
        base = spec.with_(budget_s=budget_s, steps=None)
    keys, cfgs = [], []
    for method in methods:
        for rate in rates:
            noise = {"rate": float(rate), "kind": kind} | ({} if noise_seed is None else {"seed": int(noise_seed)})
            run_spec = base.with_(label_noise=noise if rate else None)
            for seed in seeds:
                keys.append((method, float(rate), int(seed)))
                cfgs.append(run_spec.config(method, seed=seed, quiet=True))
    return keys, cfgs


def noise_grid(
    spec: RunSpec,
    methods: Sequence[str],
    rates: Sequence[float],
    seeds: Sequence[int],
    *,
    kind: str = "symmetric",
    noise_seed: int | None = None,
    steps: int | None = None,
    budget_s: float | None = None,
    test: bool | str = "auto",
    jobs: int | str = "auto",
) -> dict[tuple[str, float, int], dict[str, Any]]:
    """Train (or reuse) every method at every injected label-noise rate and seed, printing one line per run.

    Args:
        spec: the runs' parameters; its own ``label_noise`` is replaced by each rate's.
        methods: registry names; rates: shares of training labels to flip (0: the labels as given, the same config
            as ``spec``'s clean run, which is reused when it exists); seeds: run seeds.
        kind: ``"symmetric"`` or ``"asymmetric"`` (:mod:`fernb.data.noise`).
        noise_seed: the flips' seed; None: each run's seed, so every seed draws other flips.
        steps: optimiser steps per run (the same on every machine); budget_s: seconds per run instead; both None:
            the spec's length (its ``steps`` / ``budget_s``, else the recipe's).
        test: evaluate on the test split (``"auto"``: where the dataset has one).
        jobs: runs trained side by side (:func:`train_many`).

    Returns:
        ``{(method, rate, seed): train_and_test result}`` for :func:`fernb.explore.robustness.robustness_table`.

    Raises:
        ValueError: both ``steps`` and ``budget_s`` are given.
    """
    keys, cfgs = noise_grid_configs(
        spec, methods, rates, seeds, kind=kind, noise_seed=noise_seed, steps=steps, budget_s=budget_s
    )
    results = train_many(cfgs, jobs=jobs, bootstrap=200 if spec.smoke else 1000, test=test)
    out: dict[tuple[str, float, int], dict[str, Any]] = {}
    for (method, rate, seed), r in zip(keys, results, strict=True):
        out[method, rate, seed] = r
        acc = f"valid acc {float(r['best_value']):.3f}" + (
            f", test acc {r['test']['accuracy']:.3f}" if r.get("test") else ""
        )
        how = "reused" if r["reused"] else f"trained in {r['train_seconds']:.0f} s"
        print(f"{method:10s} noise {100 * rate:4.0f} % seed {seed}: {acc} ({how})", flush=True)
    return out
