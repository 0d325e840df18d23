"""Detecting flipped labels while a run trains: per-sample scores that a given label is wrong, scored per epoch
against the known flips.

On training data that knows its truth (``meta["is_noisy"]``: the synthetic data, or any dataset with
``data.label_noise``), :func:`fernb.engine.fit` records, at every training step, for each sample of the batch:

- ``loss`` (any method): the cross-entropy of the model's output distribution ``softmax(logits)`` against the given
  label, as computed in the training step (train mode, augmented input; for ARBEx ``logits = log`` of the
  distribution it trains at the current trust). The small-loss criterion: wrong labels are learnt late, so their
  loss stays high. Costs one ``log_softmax`` of the logits the step already has; no extra forward pass.
- ``disagreement`` (ARBEx): 1 - m[given], with m the corrected distribution (``mixed_dist``, the correction at
  trust 1; see :mod:`fernb.explore.reliability`).
- ``uncertainty_primary``, ``uncertainty_anchor``, ``uncertainty_attention`` (ARBEx): 1 - c_p, 1 - c_g, 1 - c_a,
  one minus ARBEx's confidences of its primary, anchor and attention distributions.

Each score is oriented so that higher means "more likely wrong". A sample's score is the one of its latest training
step up to the epoch's end: with every sample visited once an epoch (the default shuffle), that epoch's. Two flags
also make a plain decision: ``loss`` flags a sample whose output's argmax differs from its given label,
``disagreement`` one whose corrected argmax differs from it.

At each epoch's end the run folder gets, written atomically:

- ``noise_detection.csv``: one row per epoch and score: ``n`` samples scored, ``n_noisy`` of them flipped,
  ``precision_at_k`` and ``recall_at_k`` of the k = ``n_noisy`` highest scores (ties broken by sample index; with k
  equal to the number of flipped samples the two are equal), ``auroc`` (the probability that a flipped sample
  scores above a clean one, ties counting half), and for the scores with a flag ``flagged``, ``flag_precision``,
  ``flag_recall``; ``partial`` is 1 for a row of an epoch cut short by a stop;
- ``noise_scores.npz`` (the last epoch) and ``noise_scores_best.npz`` (the epoch of the best checkpoint): per sample
  ``index``, ``given``, ``true``, ``is_noisy``, every score, the flags (``flag_<score>``), ``epoch_seen``, and the
  scalars ``epoch`` and ``class_names``. :func:`fernb.explore.noise_detection.load_noise_detection` and
  ``load_noise_scores`` read them back as DataFrames.

Recording is on whenever the training split has ``meta["is_noisy"]`` with both flipped and clean samples; otherwise
nothing is recorded and a run is exactly as before. Recording reads the step's outputs only (no random draw), so a
seed still fixes every metric; the scores go into the ``last`` checkpoint, so a run killed and resumed writes the
same files as one that was never interrupted.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.base import FERDataset
from .distributed import DistEnv
from .rundir import RunDir, atomic_write_bytes, write_csv

__all__ = [
    "DETECTION_CSV",
    "SCORES_NPZ",
    "BEST_SCORES_NPZ",
    "SCORE_NAMES",
    "auroc",
    "detection_metrics",
    "NoiseDetector",
]

DETECTION_CSV = "noise_detection.csv"
SCORES_NPZ = "noise_scores.npz"
BEST_SCORES_NPZ = "noise_scores_best.npz"
# score name -> its flag (None: no decision rule of its own)
SCORE_NAMES: dict[str, str | None] = {
    "loss": "flag_loss",
    "disagreement": "flag_disagreement",
    "uncertainty_primary": None,
    "uncertainty_anchor": None,
    "uncertainty_attention": None,
}
_COLUMNS = (
    "epoch",
    "score",
    "n",
    "n_noisy",
    "precision_at_k",
    "recall_at_k",
    "auroc",
    "flagged",
    "flag_precision",
    "flag_recall",
    "partial",
)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the ``positive`` samples: P(score of a positive > score of a
    negative), ties counting half (the Mann-Whitney U over n_pos * n_neg); NaN without both classes."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    sorted_s = s[order]
    ranks = np.empty(len(s), np.float64)
    # average 1-based ranks over runs of equal scores
    bounds = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(s)]])
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def detection_metrics(
    scores: np.ndarray, is_noisy: np.ndarray, flags: np.ndarray | None = None, k: int | None = None
) -> dict[str, float | int]:
    """How well ``scores`` (higher: more likely wrong) find the ``is_noisy`` samples.

    Args:
        scores: (N,) scores; NaN marks a sample not scored (left out).
        is_noisy: (N,) bool, the known flips.
        flags: (N,) bool decisions of the score's own rule, or None.
        k: how many top scores count as detected; None: the number of noisy samples scored.

    Returns:
        ``n``, ``n_noisy``, ``precision_at_k``, ``recall_at_k``, ``auroc``, and with ``flags`` ``flagged``,
        ``flag_precision`` (NaN when nothing is flagged), ``flag_recall``. Ties at the k-th score go to the lower
        sample index.
    """
    s = np.asarray(scores, dtype=np.float64)
    noisy = np.asarray(is_noisy, dtype=bool)
    seen = np.isfinite(s)
    s, noisy = s[seen], noisy[seen]
    n, n_noisy = len(s), int(noisy.sum())
    k = n_noisy if k is None else int(k)
    out: dict[str, float | int] = {"n": n, "n_noisy": n_noisy}
    if k > 0 and n:
        top = np.lexsort((np.arange(n), -s))[:k]  # highest score first, then the lower index
        hits = int(noisy[top].sum())
        out["precision_at_k"] = hits / min(k, n)
        out["recall_at_k"] = hits / n_noisy if n_noisy else float("nan")
    else:
        out["precision_at_k"] = out["recall_at_k"] = float("nan")
    out["auroc"] = auroc(s, noisy)
    if flags is not None:
        f = np.asarray(flags, dtype=bool)[seen]
        out["flagged"] = int(f.sum())
        out["flag_precision"] = float((f & noisy).sum() / f.sum()) if f.any() else float("nan")
        out["flag_recall"] = float((f & noisy).sum() / n_noisy) if n_noisy else float("nan")
    return out


def _batch_scores(out: Any, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-sample scores and flags of one training step's output (detached, float32, on its device)."""
    logits = out.logits.detach().float()
    logp = F.log_softmax(logits, dim=1)
    res = {"loss": -logp.gather(1, y[:, None]).squeeze(1), "flag_loss": (logits.argmax(1) != y).float()}
    mixed = getattr(out, "mixed_dist", None)
    if isinstance(mixed, torch.Tensor):
        m = mixed.detach().float()
        res["disagreement"] = 1.0 - m.gather(1, y[:, None]).squeeze(1)
        res["flag_disagreement"] = (m.argmax(1) != y).float()
    for name, field in (
        ("uncertainty_primary", "confidence_primary"),
        ("uncertainty_anchor", "confidence_anchor"),
        ("uncertainty_attention", "confidence_attention"),
    ):
        c = getattr(out, field, None)
        if isinstance(c, torch.Tensor):
            res[name] = 1.0 - c.detach().float().reshape(len(y))
    return res


class NoiseDetector:
    """Records the scores of the module docstring during a run and writes the detection files (engine-internal:
    :class:`fernb.engine.fit.Trainer` calls it).

    Args:
        train: the training split as trained (``meta["is_noisy"]`` and ``meta["true_label"]`` read).
        run_dir: where the files go.
    """

    def __init__(self, train: FERDataset, run_dir: RunDir) -> None:
        self.run_dir = run_dir
        self.given = np.asarray(train.targets, dtype=np.int64)
        self.is_noisy = np.asarray(train.meta["is_noisy"], dtype=bool)
        true = train.meta.get("true_label")
        self.true = np.asarray(true, dtype=np.int64) if true is not None else np.where(self.is_noisy, -1, self.given)
        self.class_names = list(train.class_names)
        self.values: dict[str, np.ndarray] = {}
        self.epoch_seen = np.zeros(len(self.given), np.int64)
        self.rows: list[dict[str, Any]] = []
        self._pending: list[tuple[torch.Tensor, dict[str, torch.Tensor], int]] = []

    @staticmethod
    def applies(train: FERDataset) -> bool:
        """True when the split knows which labels are wrong and has both wrong and right ones."""
        noisy = train.meta.get("is_noisy")
        if noisy is None:
            return False
        noisy = np.asarray(noisy, dtype=bool)
        return bool(noisy.any()) and not bool(noisy.all())

    # -- recording ----------------------------------------------------------------------------------------------------
    def observe(self, out: Any, batch: Mapping[str, Any], epoch: int) -> None:
        """Keep the scores of one training step (``epoch`` 0-based); nothing leaves the device until the epoch
        ends."""
        labels = torch.as_tensor(batch["label"]).to(out.logits.device, non_blocking=True).long()
        idx = torch.as_tensor(batch["index"]).long().cpu()
        self._pending.append((idx, _batch_scores(out, labels), epoch + 1))

    def _flush(self, env: DistEnv) -> None:
        """Move the pending scores into ``values`` (gathered from every process, merged in rank then step order)."""
        # every process runs the same model, so every process has the same score names
        names = sorted(set(self.values) | {k for _, s, _ in self._pending for k in s})
        if self._pending:
            idx = torch.cat([i for i, _, _ in self._pending]).numpy()
            ep = np.concatenate([np.full(len(i), e, np.int64) for i, _, e in self._pending])
            nan = float("nan")
            cols = {
                k: torch.cat([s[k].cpu() if k in s else torch.full((len(i),), nan) for i, s, _ in self._pending])
                .double()
                .numpy()
                for k in names
            }
        else:
            idx, ep = np.zeros(0, np.int64), np.zeros(0, np.int64)
            cols = {k: np.zeros(0) for k in names}
        self._pending = []
        if env.distributed:
            idx, ep = env.all_gather_array(idx), env.all_gather_array(ep)
            cols = {k: env.all_gather_array(v) for k, v in cols.items()}
        for k, v in cols.items():
            if k not in self.values:
                self.values[k] = np.full(len(self.given), np.nan)
            self.values[k][idx] = v  # a sample seen twice keeps its later score
        self.epoch_seen[idx] = ep

    def end_epoch(self, epoch: int, env: DistEnv, *, partial: bool = False, best: bool = False) -> None:
        """Score epoch ``epoch`` (1-based) and write the files (main process); ``best``: also keep the scores as the
        best checkpoint's."""
        self._flush(env)
        rows = []
        for name, flag in SCORE_NAMES.items():
            if name not in self.values:
                continue
            flags = self.values.get(flag) if flag is not None else None
            m = detection_metrics(self.values[name], self.is_noisy, None if flags is None else flags > 0.5)
            rows.append({"epoch": epoch, "score": name, **m, "partial": 1 if partial else 0})
        if not partial:
            self.rows = [r for r in self.rows if r["epoch"] != epoch] + rows
        if env.is_main:
            self._write_csv(self.rows + (rows if partial else []))
            blob = self._npz(epoch)
            atomic_write_bytes(self.run_dir.path / SCORES_NPZ, blob)
            if best:
                atomic_write_bytes(self.run_dir.path / BEST_SCORES_NPZ, blob)

    def _write_csv(self, rows: Sequence[Mapping[str, Any]]) -> None:
        write_csv(self.run_dir.path / DETECTION_CSV, rows, _COLUMNS)

    def _npz(self, epoch: int) -> bytes:
        buf = io.BytesIO()
        arrays: dict[str, Any] = {
            "index": np.arange(len(self.given)),
            "given": self.given,
            "true": self.true,
            "is_noisy": self.is_noisy,
            "epoch_seen": self.epoch_seen,
            "epoch": np.int64(epoch),
            "class_names": np.asarray(self.class_names),
        }
        for k, v in self.values.items():
            arrays[k] = v > 0.5 if k.startswith("flag_") else v
        np.savez(buf, **arrays)
        return buf.getvalue()

    # -- checkpoints --------------------------------------------------------------------------------------------------
    def state_dict(self, env: DistEnv) -> dict[str, Any]:
        """The scores so far and the rows written (for the ``last`` checkpoint); flushes the pending scores."""
        self._flush(env)
        return {"values": dict(self.values), "epoch_seen": self.epoch_seen.copy(), "rows": list(self.rows)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.values = {k: np.asarray(v, dtype=np.float64).copy() for k, v in state["values"].items()}
        self.epoch_seen = np.asarray(state["epoch_seen"], dtype=np.int64).copy()
        self.rows = [dict(r) for r in state["rows"]]
        self._pending = []
