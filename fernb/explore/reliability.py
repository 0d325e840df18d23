"""ARBEx's reliability balancing sample by sample: what each branch predicts, how sure it is, and what the correction
does to the label.

For every sample, ARBEx (:mod:`fernb.models.arbex`) forms three label distributions over C classes: the primary
``p`` of the MLP head, the anchor distribution ``l_g`` and the attention distribution ``l_a``. Each has a confidence
``c = 1 - H / log C``. The correction and the corrected distribution are::

    l_corr = (c_g l_g + c_a l_a) / (c_g + c_a)        ("correction")
    m      = c_p p + (1 - c_p) l_corr                  ("corrected": ARBEx's final distribution at trust t = 1)

Definitions used throughout (N samples):

- *primary label*: argmax p; *corrected label*: argmax m (whatever the run's behaviour predicts at evaluation:
  ``official`` evaluates argmax p, ``fixed`` argmax m);
- *changed*: the corrected label differs from the primary label (the correction changed the prediction);
- *flagged* (detected noise): the corrected label differs from the GIVEN label (the label the sample was trained
  with); on data with known truth (the synthetic data's ``meta["true_label"]``), a sample is *noisy* when its given
  label differs from its true label;
- noise-detection precision = P(noisy | flagged), recall = P(flagged | noisy);
- *repaired*: a noisy sample whose corrected label is its true label; *broken*: a clean sample that is flagged (its
  correct given label would be replaced);
- accuracy with / without correction: corrected / primary label against the true labels (the given labels where no
  truth is known).

The same rates are reported for the primary label too (a primary label that differs from the given one also
"flags" the sample), so the effect of the correction is the difference of the two columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data.base import FERDataset
from ..engine import load_config, load_run, predict
from ..engine.data import run_split
from ..engine.distributed import resolve_device
from ..engine.metrics import js_divergence, kl_divergence
from ..engine.rundir import RunDir

__all__ = [
    "DISTRIBUTIONS",
    "ReliabilitySample",
    "ReliabilityTable",
    "reliability_table",
    "reliability_from_predictions",
    "confidence",
    "noise_report",
    "correction_effect",
    "accuracy_table",
    "divergence_by_class",
]

# our name -> the ARBExOutput field it is read from
DISTRIBUTIONS: dict[str, str] = {
    "primary": "primary_dist",
    "anchor": "anchor_dist",
    "attention": "attention_dist",
    "correction": "correction",
    "corrected": "mixed_dist",
}
_CONFIDENCES = {"primary": "confidence_primary", "anchor": "confidence_anchor", "attention": "confidence_attention"}


def confidence(dist: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """ARBEx's confidence 1 - H(l) / log C of (N, C) distributions -> (N,) (probabilities clamped at ``eps``)."""
    d = np.asarray(dist, dtype=np.float64)
    h = -(d * np.log(np.clip(d, eps, None))).sum(-1)
    return 1.0 - h / np.log(d.shape[-1])


@dataclass
class ReliabilitySample:
    """One sample's distributions and labels, what :func:`fernb.viz.reliability.plot_reliability_sample` draws.

    Attributes:
        index: the sample's position in its split.
        class_names: the C classes.
        dists: ``{"primary": (C,), "anchor": ..., "attention": ..., "correction": ..., "corrected": ...}``.
        confidences: ``{"primary": c_p, "anchor": c_g, "attention": c_a, "corrected": c(m)}``.
        given: the given (training) label, or None for a face without one (your own photographs); true: the true
            label or None; reference: (C,) reference distribution (FER+ votes, synthetic ground truth) or None.
        image: the untransformed image (PIL image or array) or None.
    """

    index: int
    class_names: list[str]
    dists: dict[str, np.ndarray]
    confidences: dict[str, float]
    given: int | None
    true: int | None = None
    reference: np.ndarray | None = None
    image: Any = None

    @property
    def is_noisy(self) -> bool | None:
        return None if self.true is None or self.given is None else self.given != self.true


@dataclass
class ReliabilityTable:
    """Per-sample reliability data of one run on one split.

    Attributes:
        frame: one row per sample, indexed by the sample's position in its split (``index``). Columns: ``given``
            (and ``true``, ``is_noisy`` when the truth is known) and the argmax labels ``primary``, ``anchor``,
            ``attention``, ``corrected`` (Categoricals over ``class_names``); confidences ``c_primary``,
            ``c_anchor``, ``c_attention``, ``c_corrected``; ``gain`` = c_corrected - c_primary; top probabilities
            ``p_primary``, ``p_corrected``; ``p_given`` (corrected probability of the given label); flags ``changed``,
            ``flagged`` (and ``repaired``, ``broken`` with truth); ``kl_*``/``js_*`` against the reference
            distribution for primary and corrected when the data has one.
        dists: ``{name: (N, C)}`` for the names of :data:`DISTRIBUTIONS`, rows in frame order.
        class_names: the C classes.
        reference: (N, C) reference label distributions or None.
        dataset: the split's dataset (``frame.index`` indexes it; ``load_image`` gives the untransformed image).
        run_dir, split, checkpoint, behaviour: where the numbers come from.
    """

    frame: pd.DataFrame
    dists: dict[str, np.ndarray]
    class_names: list[str]
    reference: np.ndarray | None = None
    dataset: FERDataset | None = None
    run_dir: Path | None = None
    split: str = ""
    checkpoint: str = "best"
    behaviour: str = ""

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def has_truth(self) -> bool:
        return "true" in self.frame.columns

    @property
    def name(self) -> str:
        run = Path(self.run_dir).name if self.run_dir is not None else "predictions"
        return f"{run} / {self.split}"

    def codes(self, column: str) -> np.ndarray:
        """Integer class indices (N,) of a label column (``given``, ``true``, ``primary``, ``corrected``, ...)."""
        return self.frame[column].cat.codes.to_numpy().astype(np.int64)

    def sample(self, index: int, image: bool = True) -> ReliabilitySample:
        """The :class:`ReliabilitySample` of the sample at split position ``index`` (a ``frame.index`` value)."""
        pos = self.frame.index.get_loc(index)
        row = self.frame.iloc[pos]
        conf = {k: float(row[f"c_{k}"]) for k in ("primary", "anchor", "attention", "corrected")}
        img = None
        if image and self.dataset is not None:
            img = self.dataset.load_image(int(index))
        return ReliabilitySample(
            index=int(index),
            class_names=list(self.class_names),
            dists={k: v[pos] for k, v in self.dists.items()},
            confidences=conf,
            given=int(self.codes("given")[pos]),
            true=int(self.codes("true")[pos]) if self.has_truth else None,
            reference=None if self.reference is None else self.reference[pos],
            image=img,
        )

    def examples(
        self, kinds: Sequence[str] = ("repaired", "broken", "changed"), by: str = "gain", ascending: bool = False
    ) -> dict[str, int]:
        """One sample of each kind (a boolean column: ``repaired``, ``broken``, ``changed``, ``flagged``, ...), the
        first by ``by``: ``{kind: split position}``; kinds without any sample (or unknown here) are left out."""
        out = {}
        for kind in kinds:
            if kind in self.frame.columns:
                rows = self.frame[self.frame[kind].to_numpy(dtype=bool)]
                if len(rows):
                    out[kind] = int(rows.sort_values(by, ascending=ascending, kind="stable").index[0])
        return out

    def noise_report(self) -> pd.DataFrame:
        """:func:`noise_report` of this table's given, true, primary and corrected labels."""
        if not self.has_truth:
            raise ValueError(
                f"{self.name}: the true labels are unknown (no meta['true_label']), so label noise "
                "cannot be scored; the synthetic data keeps them"
            )
        return noise_report(
            self.codes("given"),
            self.codes("true"),
            {"primary": self.codes("primary"), "corrected": self.codes("corrected")},
        )

    def correction_effect(self) -> pd.Series:
        """:func:`correction_effect` against the true labels (the given labels where no truth is known)."""
        ref = self.codes("true") if self.has_truth else self.codes("given")
        out = correction_effect(ref, self.codes("primary"), self.codes("corrected"))
        out["labels"] = "true" if self.has_truth else "given"
        return out

    def divergence_by_class(self, names: Sequence[str] = ("primary", "corrected")) -> pd.DataFrame:
        """:func:`divergence_by_class` of the named distributions against the reference, grouped by given label."""
        if self.reference is None:
            raise ValueError(f"{self.name}: the dataset has no reference label distributions (dists)")
        return divergence_by_class(
            self.reference, {n: self.dists[n] for n in names}, self.codes("given"), self.class_names
        )


def _categorical(codes: np.ndarray, names: Sequence[str]) -> pd.Categorical:
    return pd.Categorical.from_codes(np.asarray(codes, dtype=np.int64), categories=list(names))


def reliability_from_predictions(
    extras: Mapping[str, np.ndarray],
    given: np.ndarray,
    class_names: Sequence[str],
    *,
    true: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    index: np.ndarray | None = None,
    **info: Any,
) -> ReliabilityTable:
    """Build a :class:`ReliabilityTable` from ARBEx's per-sample outputs.

    Args:
        extras: ARBExOutput extras by field name (``primary_dist``, ``anchor_dist``, ``attention_dist``,
            ``correction``, ``mixed_dist`` (N, C); ``confidence_primary/anchor/attention`` (N, 1) or (N,)), as
            ``fernb.engine.predict(..., extras=True).extras`` gives them.
        given: (N,) given labels; true: (N,) true labels or None (a value outside 0..C-1 is kept as an unknown
            class, -1 in ``codes("true")``: such a sample counts as noisy and cannot be repaired).
        reference: (N, C) reference distributions or None.
        index: (N,) sample positions (default 0..N-1).
        **info: fields of :class:`ReliabilityTable` (``dataset``, ``run_dir``, ``split``, ...).
    """
    missing = [f for f in (*DISTRIBUTIONS.values(), *_CONFIDENCES.values()) if f not in extras]
    if missing:
        raise KeyError(f"outputs lack {missing}: reliability tables need ARBEx outputs (fernb.models.arbex)")
    names = list(class_names)
    dists = {k: np.asarray(extras[f], dtype=np.float32) for k, f in DISTRIBUTIONS.items()}
    given = np.asarray(given, dtype=np.int64)
    n = len(given)
    idx = np.arange(n) if index is None else np.asarray(index, dtype=np.int64)
    prim, corr = dists["primary"].argmax(1), dists["corrected"].argmax(1)
    cols: dict[str, Any] = {"given": _categorical(given, names)}
    if true is not None:
        true = np.asarray(true, dtype=np.int64)
        true = np.where((true >= 0) & (true < len(names)), true, -1)  # a true class outside the label space: -1
        cols["true"] = _categorical(true, names)
        cols["is_noisy"] = given != true
    for k in ("primary", "anchor", "attention", "corrected"):
        cols[k] = _categorical(dists[k].argmax(1), names)
    for k, f in _CONFIDENCES.items():
        cols[f"c_{k}"] = np.asarray(extras[f], dtype=np.float64).reshape(n)
    cols["c_corrected"] = confidence(dists["corrected"])
    cols["gain"] = cols["c_corrected"] - cols["c_primary"]
    cols["p_primary"] = dists["primary"].max(1)
    cols["p_corrected"] = dists["corrected"].max(1)
    cols["p_given"] = dists["corrected"][np.arange(n), given]
    cols["changed"] = corr != prim
    cols["flagged"] = corr != given
    if true is not None:
        cols["repaired"] = (given != true) & (corr == true)
        cols["broken"] = (given == true) & (corr != given)
    if reference is not None:
        reference = np.asarray(reference, dtype=np.float32)
        for k in ("primary", "corrected"):
            cols[f"kl_{k}"] = kl_divergence(reference, dists[k], reduce=False)
            cols[f"js_{k}"] = js_divergence(reference, dists[k], reduce=False)
    frame = pd.DataFrame(cols, index=pd.Index(idx, name="index"))
    return ReliabilityTable(frame=frame, dists=dists, class_names=names, reference=reference, **info)


def reliability_table(
    run_dir: str | Path,
    split: str = "train",
    checkpoint: str | int = "best",
    limit: int | None = None,
    *,
    seed: int = 0,
    batch_size: int | None = None,
    device: str = "cpu",
    order: str | None = None,
) -> ReliabilityTable:
    """Run an ARBEx run's checkpoint over one split and tabulate its reliability balancing per sample.

    Args:
        run_dir: a fernb run folder of an ARBEx run.
        split: ``"train"`` or ``"valid"`` give the samples the run trained / validated on (its ``train_limit``,
            ``valid_limit`` and held-out validation applied; training samples without augmentation); any other
            split (``"test"``) is loaded as ``fernb.engine.evaluate`` loads it.
        checkpoint: ``"best"``, ``"last"`` or a kept epoch.
        limit: at most this many samples, drawn with ``seed`` (kept in split order).
        batch_size: default the run's evaluation batch size.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        order: batch order (default the run's ``data.eval_order``, ``"shuffled"``); it matters for the
            ``official`` behaviour only, whose attention mixes the samples of a batch.

    Raises:
        ValueError: the run is not an ARBEx run (other methods have no correction).
    """
    rd = RunDir(run_dir)
    cfg = load_config(rd.config_path)
    if cfg.model.name != "arbex":
        raise ValueError(
            f"{rd.path.name}: method {cfg.model.name!r} has no reliability balancing; reliability "
            "tables need an ARBEx run (model.name='arbex')"
        )
    ds = run_split(cfg, split)
    keep = np.arange(len(ds))
    if limit is not None and limit < len(ds):
        keep = np.sort(np.random.default_rng([seed, 13]).permutation(len(ds))[:limit])
    sub = ds.subset(keep) if len(keep) < len(ds) else ds
    dev = resolve_device(device)
    cfg, model, meta = load_run(rd.path, checkpoint, device=str(dev))
    names = list(meta["class_names"])
    if list(ds.class_names) != names:
        raise ValueError(f"{rd.path.name}: split {split!r} has classes {ds.class_names}, the model {names}")
    pred = predict(
        model,
        sub,
        batch_size=batch_size or cfg.data.eval_batch_size or cfg.data.batch_size,
        device=dev,
        order=order or cfg.data.eval_order,
        seed=seed,
        extras=[*DISTRIBUTIONS.values(), *_CONFIDENCES.values()],
    )
    true = sub.meta.get("true_label")
    return reliability_from_predictions(
        pred.extras,
        pred.targets,
        names,
        true=None if true is None else np.asarray(true),
        reference=pred.dists,
        index=keep,
        dataset=ds,
        run_dir=rd.path,
        split=split,
        checkpoint=str(checkpoint),
        behaviour=getattr(model, "behaviour", ""),
    )


def _rate(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def noise_report(given: np.ndarray, true: np.ndarray, predictions: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """How well predicted labels detect and repair label noise (see the module docstring for the definitions).

    Args:
        given: (N,) given labels; true: (N,) true labels (noisy = given != true).
        predictions: ``{"primary": (N,), "corrected": (N,)}`` predicted labels, one column each.

    Returns:
        Rows ``n``, ``noisy``, ``flagged``, ``detected`` (flagged and noisy), ``precision``, ``recall``, ``f1``,
        ``repaired``, ``repair_rate`` (repaired / noisy), ``broken``, ``break_rate`` (broken / clean),
        ``accuracy`` (vs true), ``agreement`` (vs given); one column per prediction. Undefined rates are NaN.
    """
    given = np.asarray(given, dtype=np.int64)
    true = np.asarray(true, dtype=np.int64)
    noisy = given != true
    out = {}
    for name, pred in predictions.items():
        pred = np.asarray(pred, dtype=np.int64)
        flagged = pred != given
        detected = int((flagged & noisy).sum())
        precision, recall = _rate(detected, flagged.sum()), _rate(detected, noisy.sum())
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else float("nan")
        repaired = int((noisy & (pred == true)).sum())
        broken = int((~noisy & flagged).sum())
        out[name] = {
            "n": len(given),
            "noisy": int(noisy.sum()),
            "flagged": int(flagged.sum()),
            "detected": detected,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "repaired": repaired,
            "repair_rate": _rate(repaired, noisy.sum()),
            "broken": broken,
            "break_rate": _rate(broken, (~noisy).sum()),
            "accuracy": _rate((pred == true).sum(), len(true)),
            "agreement": _rate((pred == given).sum(), len(given)),
        }
    return pd.DataFrame(out)


def correction_effect(labels: np.ndarray, primary: np.ndarray, corrected: np.ndarray) -> pd.Series:
    """What the correction did to the predictions, against reference ``labels`` (N,).

    Returns:
        ``n``, ``changed`` (corrected != primary), ``fixed`` (primary wrong, corrected right), ``spoiled`` (primary
        right, corrected wrong), ``accuracy_primary``, ``accuracy_corrected``.
    """
    y, p, c = (np.asarray(a, dtype=np.int64) for a in (labels, primary, corrected))
    return pd.Series(
        {
            "n": len(y),
            "changed": int((p != c).sum()),
            "fixed": int(((p != y) & (c == y)).sum()),
            "spoiled": int(((p == y) & (c != y)).sum()),
            "accuracy_primary": _rate((p == y).sum(), len(y)),
            "accuracy_corrected": _rate((c == y).sum(), len(y)),
        },
        dtype=object,
    )


def accuracy_table(tables: Mapping[str, ReliabilityTable]) -> pd.DataFrame:
    """:meth:`ReliabilityTable.correction_effect` of several tables (e.g. train / valid / test), one row each."""
    return pd.DataFrame({name: t.correction_effect() for name, t in tables.items()}).T


def divergence_by_class(
    reference: np.ndarray,
    dists: Mapping[str, np.ndarray],
    labels: np.ndarray,
    class_names: Sequence[str],
) -> pd.DataFrame:
    """Mean KL(reference || d) and JS(reference, d) per class, for each predicted distribution d.

    Args:
        reference: (N, C) reference label distributions (FER+ crowd votes, synthetic ground truth).
        dists: ``{"primary": (N, C), "corrected": (N, C), ...}``.
        labels: (N,) the class each sample is grouped under (its given label).
        class_names: the C classes.

    Returns:
        Rows: the classes, then ``all`` (the mean over every sample); columns ``("n", "")`` and
        ``("KL" | "JS", name)`` for each name of ``dists``. A class without samples has NaN divergences.
    """
    labels = np.asarray(labels, dtype=np.int64)
    per = {("KL", k): kl_divergence(reference, d, reduce=False) for k, d in dists.items()}
    per.update({("JS", k): js_divergence(reference, d, reduce=False) for k, d in dists.items()})
    rows, index = [], []
    for c, name in enumerate(class_names):
        m = labels == c
        rows.append(
            {("n", ""): int(m.sum()), **{k: float(v[m].mean()) if m.any() else float("nan") for k, v in per.items()}}
        )
        index.append(name)
    rows.append({("n", ""): len(labels), **{k: float(v.mean()) if len(v) else float("nan") for k, v in per.items()}})
    index.append("all")
    frame = pd.DataFrame(rows, index=pd.Index(index, name="class"))
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    return frame
