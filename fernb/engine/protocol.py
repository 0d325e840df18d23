"""Evaluation protocols over several runs: subject-independent k-fold cross-validation and repeated seeds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .evaluate import evaluate
from .fit import fit
from .metrics import summarize_runs
from .overrides import apply_overrides
from .rundir import write_json

__all__ = ["cross_validate", "repeat_seeds"]


def cross_validate(
    config: TrainConfig,
    *,
    folds: int | None = None,
    fit_fn: Callable[..., Any] | None = None,
    bootstrap: int = 0,
    **fit_kw: Any,
) -> dict[str, Any]:
    """Subject-independent k-fold cross-validation (CK+, JAFFE).

    Fold i trains on the other folds minus fold i+1 (its validation fold, used for model selection) and is tested
    once on fold i. The summary (mean and std over folds) is written to ``<out_dir>/<name>-cv.json``.
    """
    k = folds or config.data.folds
    if not k or k < 2:
        raise ValueError("cross_validate needs data.folds >= 2 (or folds=...)")
    fit_fn = fit_fn or fit
    results = []
    base_name = config.run.name or f"{config.model.name}-{config.data.dataset}-s{config.run.seed}"
    for i in range(k):
        cfg = apply_overrides(config, {"data.folds": k, "data.fold": i, "run.name": f"{base_name}-fold{i}"})
        res = fit_fn(cfg, **fit_kw)
        m = evaluate(res.run_dir, "test", bootstrap=bootstrap)
        results.append(
            {
                "fold": i,
                "run_dir": str(res.run_dir),
                **{key: m[key] for key in ("accuracy", "mean_class_accuracy", "macro_f1", "n")},
            }
        )
    summary = {"kind": "subject_kfold", "folds": k, "runs": results, "summary": summarize_runs(results)}
    write_json(Path(config.run.out_dir) / f"{base_name}-cv.json", summary)
    return summary


def repeat_seeds(
    config: TrainConfig,
    seeds: Sequence[int],
    *,
    split: str = "test",
    fit_fn: Callable[..., Any] | None = None,
    bootstrap: int = 0,
    **fit_kw: Any,
) -> dict[str, Any]:
    """Train once per seed, evaluate each run once on ``split``, and report mean and standard deviation."""
    fit_fn = fit_fn or fit
    results = []
    base_name = config.run.name or f"{config.model.name}-{config.data.dataset}"
    for s in seeds:
        cfg = apply_overrides(config, {"run.seed": int(s), "run.name": f"{base_name}-s{s}"})
        res = fit_fn(cfg, **fit_kw)
        m = evaluate(res.run_dir, split, bootstrap=bootstrap)
        results.append(
            {
                "seed": int(s),
                "run_dir": str(res.run_dir),
                **{key: m[key] for key in ("accuracy", "mean_class_accuracy", "macro_f1", "n")},
            }
        )
    summary = {
        "kind": "seeds",
        "seeds": [int(s) for s in seeds],
        "split": split,
        "runs": results,
        "summary": summarize_runs(results),
    }
    write_json(Path(config.run.out_dir) / f"{base_name}-seeds.json", summary)
    return summary
