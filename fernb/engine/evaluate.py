"""Evaluation protocol: the test split once at the end, cross-dataset tests through the canonical label space,
subject-independent k-fold cross-validation, and repeated runs over seeds.

``fit`` selects models on the validation split only; :func:`evaluate` is the one function that reads the test split,
and it records every use in the run's ``run.json`` (``test_split_used``, ``evaluations``).
:func:`evaluate_checkpoint` scores a checkpoint file without a run folder (a released checkpoint, under the method's
published evaluation transform and image size).
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..data.aligned import align_split, align_summary
from ..data.base import FERDataset, restrict_label_space
from ..data.factory import dataset_info
from ..errors import FernbError
from ..labels import LabelSpace, get_label_space, remap
from ..models import get_pretrained_cfg, list_models, parse_variant
from ..models._errors import CheckpointMismatchError
from ..models._weights import load_checkpoint
from .config import TTA_MODES, TrainConfig
from .data import align_spec, build_test_dataset, run_transform, transform_method
from .distributed import resolve_device
from .factory import build_model, load_run
from .metrics import bootstrap_ci, classification_metrics
from .overrides import apply_overrides
from .predict import Predictions, predict
from .presets import DATASETS, METHODS, config_from_preset
from .rundir import RunDir, atomic_write_bytes, now_iso, write_json

__all__ = ["evaluate", "evaluate_checkpoint", "score", "Scored", "map_predictions"]


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


@dataclass
class Scored:
    """What :func:`score` computed: the metrics, the dataset as scored (restricted to the shared classes in
    cross-dataset evaluation) and the arrays ``eval/<tag>.npz`` keeps (logits, targets, indices, preds, dists)."""

    metrics: dict[str, Any]
    dataset: FERDataset
    arrays: dict[str, np.ndarray]


def score(
    model: nn.Module,
    ds: FERDataset,
    model_space: LabelSpace,
    *,
    restrict_predictions: bool = True,
    batch_size: int = 64,
    bootstrap: int = 1000,
    device: str = "auto",
    order: str = "shuffled",
    tta: str = "none",
) -> Scored:
    """Predict ``ds`` with ``model`` and compute the metrics, mapping classes by name when the spaces differ.

    The scoring :func:`evaluate` (a run folder) and :func:`evaluate_checkpoint` (a checkpoint file) share; ``ds``
    carries its evaluation transform already. The metrics get ``ci`` (with ``bootstrap``) and, when the model's and
    the data's classes differ, ``label_mapping``; ``tta``: :func:`~fernb.engine.predict.predict`'s test-time
    augmentation, recorded as ``tta``.
    """
    cross = ds.label_space.names != model_space.names
    dropped: list[str] = []
    if cross:
        shared = get_label_space([n for n in model_space.names if n in ds.label_space.names])
        dropped = sorted(set(ds.label_space.names) - set(shared.names))
        if len(shared) < len(ds.label_space):
            ds = restrict_label_space(ds, shared)
    pred = predict(model, ds, batch_size=batch_size, device=resolve_device(device), order=order, tta=tta)
    logits = pred.logits
    if cross:
        logits, preds, shared = map_predictions(pred.logits, model_space, ds.label_space, restrict=restrict_predictions)
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
    if cross:
        m["label_mapping"] = {
            "model_classes": list(model_space.names),
            "data_classes_dropped": dropped,
            "shared_classes": list(shared.names),
            "model_classes_unscored": sorted(set(model_space.names) - set(shared.names)),
            "restrict_predictions": restrict_predictions,
        }
    m["tta"] = tta
    dists = {"dists": pred.dists} if pred.dists is not None else {}
    arrays = {
        "logits": logits.astype(np.float32),
        "targets": pred.targets,
        "indices": pred.indices,
        "preds": preds,
        **dists,
    }
    return Scored(m, ds, arrays)


def _score_under(
    cfg: TrainConfig,
    model: nn.Module,
    ds: FERDataset,
    model_space: LabelSpace,
    *,
    dataset: str,
    source: Any,
    checkpoint: str,
    about: Mapping[str, Any],
    restrict_predictions: bool,
    batch_size: int | None,
    bootstrap: int,
    device: str,
) -> Scored:
    """:func:`score` under ``cfg``'s evaluation settings (batch size unless given, sample order), its metrics then
    told what was scored: ``dataset``, ``source``, ``split``, ``checkpoint``, the caller's ``about`` fields,
    ``class_names``, ``fingerprint`` and ``evaluated`` (the time). What :func:`evaluate` and
    :func:`evaluate_checkpoint` share."""
    scored = score(
        model,
        ds,
        model_space,
        restrict_predictions=restrict_predictions,
        batch_size=batch_size or cfg.data.eval_batch_size or cfg.data.batch_size,
        bootstrap=bootstrap,
        device=device,
        order=cfg.data.eval_order,
        tta=cfg.data.eval_tta,
    )
    scored.metrics.update(
        dataset=dataset,
        source=source,
        split=scored.dataset.split,
        checkpoint=checkpoint,
        **about,
        class_names=list(scored.dataset.label_space.names),
        fingerprint=scored.dataset.fingerprint(),
        evaluated=now_iso(),
    )
    return scored


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
    tta: str | None = None,
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
        tta: test-time augmentation (``"none"``, ``"flip"``); None: the run's ``data.eval_tta``. An evaluation with
            test-time augmentation is saved under its own tag (``<dataset>-<split>-<checkpoint>-<tta>``).

    Returns:
        The metrics (see :func:`fernb.engine.metrics.classification_metrics`) plus ``ci`` (bootstrap intervals),
        ``dataset``, ``split``, ``checkpoint``, ``class_names`` and, for cross-dataset runs, ``label_mapping``.
    """
    rd = RunDir(run_dir)
    cfg, model, meta = load_run(rd.path, checkpoint, device=device)
    if tta is not None:
        if tta not in TTA_MODES:
            raise ValueError(f"tta={tta!r}; expected one of {', '.join(TTA_MODES)}")
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, eval_tta=tta))
    model_space = get_label_space(meta["class_names"])
    if data is not None:
        spec = align_spec(cfg)  # the run's data.align applies to any data it scores
        aligned = align_split(data, spec, progress=False) if spec is not None else data
        ds = aligned.with_transform(run_transform(cfg, False)) if transform_method(cfg) else aligned
        source = data.name
    else:
        ds, source = build_test_dataset(cfg, split, dataset=dataset, root=root, options=options)
    name = dataset or (data.name if data is not None else cfg.data.dataset)
    scored = _score_under(
        cfg,
        model,
        ds,
        model_space,
        dataset=name,
        source=source,
        checkpoint=checkpoint,
        about={"checkpoint_epoch": meta.get("epoch")},
        restrict_predictions=restrict_predictions,
        batch_size=batch_size,
        bootstrap=bootstrap,
        device=device,
    )
    m, ds = scored.metrics, scored.dataset
    is_test = data is None and dataset is None and split in ("test", cfg.data.test_split)
    faces = align_summary(ds)
    if faces is not None:
        m["align"] = faces  # how many of the scored images had a face (data.align)
    tag = _eval_tag(name, split, checkpoint)
    if cfg.data.eval_tta != "none":
        tag = f"{tag}-{cfg.data.eval_tta}"
    try:  # the metrics are computed: a folder that cannot take them (read-only, full, busy) costs a warning only
        with rd.lock():
            _save_evaluation(rd, m, scored.arrays if save_predictions else None, tag, name, is_test)
    except (OSError, FernbError) as exc:
        m["saved"] = False
        warnings.warn(f"{rd.path}: the evaluation was not saved: {exc}", stacklevel=2)
    return m


def _save_evaluation(
    rd: RunDir, m: dict[str, Any], arrays: dict[str, np.ndarray] | None, tag: str, name: str, is_test: bool
) -> None:
    """Write ``eval/<tag>.json`` (and the predictions, ``.npz``) and record the evaluation in ``run.json``."""
    rd.eval_dir.mkdir(parents=True, exist_ok=True)
    write_json(rd.eval_dir / f"{tag}.json", m)
    if arrays is not None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy stubs: **kwds also meets allow_pickle: bool
        atomic_write_bytes(rd.eval_dir / f"{tag}.npz", buf.getvalue())
    rec = rd.read_record()
    evals = rec.setdefault("evaluations", [])
    if is_test and rec.get("test_split_used"):
        warnings.warn(
            f"{rd.path}: the test split was already evaluated {rec.get('test_evaluations', 1)} time(s); "
            "repeated test evaluation is no longer an unbiased estimate",
            stacklevel=3,
        )
    evals.append(
        {
            "dataset": name,
            "split": m["split"],
            "checkpoint": m["checkpoint"],
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


def evaluate_checkpoint(
    model: str,
    checkpoint: str | Path,
    dataset: str,
    *,
    preset: str = "official",
    root: str | None = None,
    split: str = "test",
    classes: str | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    options: dict[str, Any] | None = None,
    restrict_predictions: bool = True,
    batch_size: int | None = None,
    bootstrap: int = 1000,
    device: str = "auto",
) -> dict[str, Any]:
    """Score a checkpoint file without a run folder: the first check when numbers disagree with a paper.

    The model is built by name and preset, the file loaded through the family's key converters (official names are
    translated; safetensors, or torch files with ``weights_only=True``; an ESR release folder), and the split scored
    under the method's published evaluation transform and image size (``config_from_preset("<model>/<dataset>")``;
    for another model preset, the image size of its pretrained cfg). Nothing is written.

    Args:
        model: registry name, or a variant (``"esr+diversity"``).
        checkpoint: the file (or ESR's release folder).
        dataset: a dataset preset (``"rafdb"``, ``"affectnet7"``, ``"synthetic"``, ...) or a reader name.
        preset: the model preset the checkpoint was trained with (``"official"`` for released weights).
        root: the data root.
        split: the split to score.
        classes: the label space the checkpoint was trained on (default: the dataset preset's); when it differs from
            the data's, classes are matched by name as in cross-dataset evaluation.
        overrides: dotted ``key=value`` overrides of the evaluation config (``data.img_size=112``,
            ``model.kwargs.behaviour=official``).
        options: reader options.
        restrict_predictions: predict among the classes the model and the data share.
        batch_size: evaluation batch size (default: the recipe's).
        bootstrap: resamples of the 95% bootstrap intervals (0: off).
        device: where to run the model.

    Returns:
        The metrics of :func:`evaluate`, with ``model``, ``preset``, ``img_size``, ``transform`` and ``weights`` (the
        key report: tensors loaded, the naming converted from, official keys dropped).

    Raises:
        FileNotFoundError: the checkpoint does not exist.
        KeyError: an unknown model name (the message lists the registered ones).
        CheckpointMismatchError: the file's keys or shapes do not fit the model (the message names the file, the
            keys, and what to do).
    """
    name, flags = parse_variant(model)
    if name not in list_models():
        raise KeyError(f"unknown model {model!r}; registered models: {', '.join(list_models())}")
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; give the path of a state dict (.safetensors, or a torch file holding "
            "tensors only), or of ESR's release folder"
        )
    base = name if name in METHODS else "resnet18"  # a plugin model: the dataset's data section, its own transform
    ds_preset = dataset if dataset in DATASETS else "synthetic"
    cfg = config_from_preset(f"{base}/{ds_preset}", smoke=False)
    changes: dict[str, Any] = {"model.name": name, "model.preset": preset, "data.root": root, "data.fallback": None}
    if flags:
        changes["model.kwargs"] = {**cfg.model.kwargs, **flags}
    if ds_preset != dataset:
        changes.update({"data.dataset": dataset, "data.label_space": None})
    if options is not None:
        changes["data.options"] = dict(options)
    if preset != "official" or base != name:
        changes["data.img_size"] = get_pretrained_cfg(name, preset).img_size
    if base != name:
        changes["data.transform"] = "auto"
    cfg = apply_overrides(apply_overrides(cfg, changes), overrides)
    space = classes or cfg.data.label_space or dataset_info(cfg.data.dataset).default_label_space
    model_space = get_label_space(space)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-init notices (the checkpoint fills every tensor) and the key report
        net = build_model(cfg.model, len(model_space), cfg.data.img_size, checkpoint=False)
        try:
            report = load_checkpoint(net, path, strict=True)
        except CheckpointMismatchError as exc:
            raise CheckpointMismatchError(
                f"model {model!r}, preset {preset!r}, {len(model_space)} classes ({model_space.name}): {exc}\n"
                "  on the command line: check --model, --preset and --classes (and model.kwargs.* overrides)"
            ) from None
    net.to(resolve_device(device)).eval()
    ds, source = build_test_dataset(cfg, split)
    about = {
        "model": model,
        "preset": preset,
        "img_size": cfg.data.img_size,
        "transform": transform_method(cfg),
        "weights": {"loaded": len(report.loaded), "converted_from": report.converted_from, "dropped": report.dropped},
    }
    return _score_under(
        cfg,
        net,
        ds,
        model_space,
        dataset=cfg.data.dataset,
        source=source,
        checkpoint=str(path),
        about=about,
        restrict_predictions=restrict_predictions,
        batch_size=batch_size,
        bootstrap=bootstrap,
        device=device,
    ).metrics
