"""Evaluation protocol: the test split once at the end, cross-dataset tests through the canonical label space,
subject-independent k-fold cross-validation, and repeated runs over seeds.

``fit`` selects models on the validation split only; :func:`evaluate` is the one function that reads the test split,
and it records every use in the run's ``run.json`` (``test_split_used``, ``evaluations``).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..data.aligned import align_split, align_summary
from ..data.base import FERDataset, restrict_label_space
from ..labels import LabelSpace, get_label_space, remap
from .data import align_spec, build_test_dataset, run_transform, transform_method
from .distributed import resolve_device
from .factory import load_run
from .metrics import bootstrap_ci, classification_metrics
from .predict import Predictions, predict
from .rundir import RunDir, atomic_write_bytes, now_iso, write_json

__all__ = ["evaluate", "map_predictions"]


def map_predictions(
    logits: np.ndarray, model_space: LabelSpace, data_space: LabelSpace, *, restrict: bool = True
) -> tuple[np.ndarray, np.ndarray, LabelSpace]:
    """Express a model's (N, C_model) logits in the classes it shares with a dataset.

    Args:
        logits: (N, C_model) logits in the model's label space.
        model_space: the classes the model was trained on.
        data_space: the classes of the evaluation data.
        restrict: predict among the shared classes only (True), or take the argmax over every model class, a
            prediction outside the shared classes then counting as wrong (False).

    Returns:
        ``(shared_logits (N, C_shared), preds (N,) in the shared space (-1 for an unshared class), shared_space)``.
    """
    shared = get_label_space([n for n in model_space.names if n in data_space.names])
    if len(shared) == 0:
        raise ValueError(
            f"the model's classes ({', '.join(model_space.names)}) and the data's "
            f"({', '.join(data_space.names)}) have nothing in common"
        )
    cols = np.array([model_space.names.index(n) for n in shared.names])
    sub = logits[:, cols]
    if restrict:
        return sub, sub.argmax(1), shared
    return sub, remap(logits.argmax(1), model_space, shared), shared


def _eval_tag(dataset: str, split: str, checkpoint: str) -> str:
    return f"{dataset}-{split}-{checkpoint}".replace("/", "_")


def evaluate(
    run_dir: str | Path,
    split: str = "test",
    *,
    checkpoint: str = "best",
    dataset: str | None = None,
    root: str | None = None,
    options: dict[str, Any] | None = None,
    data: FERDataset | None = None,
    restrict_predictions: bool = True,
    batch_size: int | None = None,
    bootstrap: int = 1000,
    device: str = "auto",
    save_predictions: bool = True,
) -> dict[str, Any]:
    """Evaluate a finished run on a split, and record it in the run's ``run.json``.

    Args:
        run_dir: the run folder written by ``fit``.
        split: the split to score; ``"test"`` (the config's ``data.test_split``, or the held-out fold in
            cross-validation) is meant to be used once, at the end.
        checkpoint: ``"best"`` (selected on validation) or ``"last"``.
        dataset: another dataset for cross-dataset evaluation (e.g. train on ``ferplus``, test on ``rafdb``);
            classes are matched by canonical name.
        root: its data root.
        options: its reader options.
        data: score this dataset directly (its transform is replaced by the run's evaluation transform).
        restrict_predictions: in cross-dataset evaluation, predict among the shared classes only.
        batch_size: evaluation batch size (default: the run's).
        bootstrap: resamples of the 95% bootstrap interval of accuracy, mean class accuracy and macro-F1 (0: off).
        device: where to run the model (``"auto"``: CUDA when available).
        save_predictions: write logits, targets and indices next to the metrics (``eval/<tag>.npz``).

    Returns:
        The metrics (see :func:`fernb.engine.metrics.classification_metrics`) plus ``ci`` (bootstrap intervals),
        ``dataset``, ``split``, ``checkpoint``, ``class_names`` and, for cross-dataset runs, ``label_mapping``.
    """
    rd = RunDir(run_dir)
    cfg, model, meta = load_run(rd.path, checkpoint, device=device)
    model_space = get_label_space(meta["class_names"])
    if data is not None:
        spec = align_spec(cfg)  # the run's data.align applies to any data it scores
        aligned = align_split(data, spec, progress=False) if spec is not None else data
        ds = aligned.with_transform(run_transform(cfg, False)) if transform_method(cfg) else aligned
        source = data.name
    else:
        ds, source = build_test_dataset(cfg, split, dataset=dataset, root=root, options=options)
    cross = ds.label_space.names != model_space.names
    if cross:
        shared = get_label_space([n for n in model_space.names if n in ds.label_space.names])
        dropped = sorted(set(ds.label_space.names) - set(shared.names))
        if len(shared) < len(ds.label_space):
            ds = restrict_label_space(ds, shared)
    pred = predict(
        model,
        ds,
        batch_size=batch_size or cfg.data.eval_batch_size or cfg.data.batch_size,
        device=resolve_device(device),
        order=cfg.data.eval_order,
    )
    logits = pred.logits
    mapping: dict[str, Any] | None = None
    if cross:
        logits, preds, shared = map_predictions(pred.logits, model_space, ds.label_space, restrict=restrict_predictions)
        mapping = {
            "model_classes": list(model_space.names),
            "data_classes_dropped": dropped,
            "shared_classes": list(shared.names),
            "model_classes_unscored": sorted(set(model_space.names) - set(shared.names)),
            "restrict_predictions": restrict_predictions,
        }
    else:
        preds = pred.preds
    probs = Predictions(logits, pred.targets, pred.indices).probs
    names = list(ds.label_space.names)
    num_classes = len(names)
    if (preds >= 0).all():
        scored, n_scored = preds, num_classes
        m = classification_metrics(
            pred.targets, preds, num_classes=num_classes, probs=probs, dists=pred.dists, class_names=names
        )
    else:  # restrict_predictions=False: a prediction of a class the data lacks is a miss, kept in an extra column
        scored, n_scored = np.where(preds < 0, num_classes, preds), num_classes + 1
        m = classification_metrics(
            pred.targets, scored, num_classes=n_scored, class_names=[*names, "(class not in data)"]
        )
    if bootstrap:
        m["ci"] = {
            k: bootstrap_ci(pred.targets, scored, k, num_classes=n_scored, n_boot=bootstrap)
            for k in ("accuracy", "mean_class_accuracy", "macro_f1")
        }
    name = dataset or (data.name if data is not None else cfg.data.dataset)
    is_test = data is None and dataset is None and split in ("test", cfg.data.test_split)
    m.update(
        dataset=name,
        source=source,
        split=ds.split,
        checkpoint=checkpoint,
        checkpoint_epoch=meta.get("epoch"),
        class_names=list(ds.label_space.names),
        fingerprint=ds.fingerprint(),
        evaluated=now_iso(),
    )
    if mapping:
        m["label_mapping"] = mapping
    faces = align_summary(ds)
    if faces is not None:
        m["align"] = faces  # how many of the scored images had a face (data.align)
    tag = _eval_tag(name, split, checkpoint)
    rd.eval_dir.mkdir(parents=True, exist_ok=True)
    write_json(rd.eval_dir / f"{tag}.json", m)
    if save_predictions:
        buf = io.BytesIO()
        dists = {"dists": pred.dists} if pred.dists is not None else {}
        arrays = {
            "logits": logits.astype(np.float32),
            "targets": pred.targets,
            "indices": pred.indices,
            "preds": preds,
            **dists,
        }
        np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy stubs: **kwds also meets allow_pickle: bool
        atomic_write_bytes(rd.eval_dir / f"{tag}.npz", buf.getvalue())
    rec = rd.read_record()
    evals = rec.setdefault("evaluations", [])
    if is_test and rec.get("test_split_used"):
        warnings.warn(
            f"{rd.path}: the test split was already evaluated {rec.get('test_evaluations', 1)} time(s); "
            "repeated test evaluation is no longer an unbiased estimate",
            stacklevel=2,
        )
    evals.append(
        {
            "dataset": name,
            "split": ds.split,
            "checkpoint": checkpoint,
            "at": m["evaluated"],
            "accuracy": m["accuracy"],
            "mean_class_accuracy": m["mean_class_accuracy"],
            "macro_f1": m["macro_f1"],
            "n": m["n"],
            "file": f"eval/{tag}.json",
            "test": is_test,
        }
    )
    if is_test:
        rec["test_split_used"] = True
        rec["test_evaluations"] = int(rec.get("test_evaluations", 0)) + 1
    rd.write_record(rec)
    return m
