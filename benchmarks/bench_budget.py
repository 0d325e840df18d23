"""Every method trained with its budget recipe for the same wall-clock budget on the FER+ train subset, one process
at a time, scored on FER+ valid; the plain reference loop (``reference_loop.py``) trains in the same run as the
yardstick row.

    python benchmarks/bench_budget.py                                  # every method, 480 s each
    python benchmarks/bench_budget.py --budget-s 120 --methods reference,resnet18,arbex:resnet18
    python benchmarks/bench_budget.py --methods resnet18,arbex --seeds 0,1,2

Methods: a registry name (``resnet18``, ``arm``, ``adcorre``, ``esr``, ``manet``, ``poster_v2``, ``arbex``), a
variant (``esr+diversity``, ``manet+diversity``), ARBEx on a given backbone (``arbex:poster_v2``,
``arbex:resnet18``, ``arbex:timm:resnet10t``), or ``reference``. Columns: training throughput (img/s, validation
excluded), optimiser steps, epochs, seconds spent (training + validation, calibration not included), and the
selected epoch's valid accuracy, mean class accuracy and macro-F1. For ARBEx it also prints each branch's accuracy
on valid (primary, anchor, attention, corrected), their median confidences, and per epoch the nearest-anchor
accuracy, the anchor separation and how far the anchors moved. ``--json`` writes every row. ``--tta flip`` selects
and scores fernb's runs with test-time flips (``data.eval_tta``; the reference loop stays as the issue wrote it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

DEFAULT_ROOT = REPO.parent / "shared" / "data" / "ferplus"
ALL_METHODS = (
    "reference",
    "resnet18",
    "arbex",
    "arbex:resnet18",
    "arbex:poster_v2",
    "poster_v2",
    "arm",
    "adcorre",
    "esr",
    "manet",
    "esr+diversity",
    "manet+diversity",
)


def parse_method(spec: str) -> tuple[str, dict[str, Any]]:
    """``"arbex:resnet18"`` -> ``("arbex", {"backbone": "resnet18"})``; ``"esr+diversity"`` -> ``("esr",
    {"diversity": True})``."""
    from fernb.models import parse_variant

    if spec.startswith("arbex:"):
        return "arbex", {"backbone": spec.split(":", 1)[1]}
    return parse_variant(spec)


def method_config(spec: str, args: argparse.Namespace, out_dir: Path, seed: int):
    from fernb.engine import config_from_preset
    from fernb.engine.presets import merge_model_kwargs

    method, extra = parse_method(spec)
    cfg = config_from_preset(
        f"{method}/ferplus@budget",
        data__root=str(args.root),
        schedule__budget_s=args.budget_s,
        run__out_dir=str(out_dir),
        run__name=f"{spec.replace(':', '-').replace('+', '-')}-s{seed}",
        run__seed=seed,
        run__quiet=not args.progress,
        run__threads=args.threads,
        run__keep_epochs=method == "arbex",
        data__eval_tta=args.tta,
    )
    cfg.model.kwargs = merge_model_kwargs(dict(cfg.model.kwargs), extra)
    return cfg


def run_fernb(spec: str, args: argparse.Namespace, out_dir: Path, seed: int) -> dict[str, Any]:
    from fernb.engine import fit
    from fernb.engine.rundir import RunDir

    cfg = method_config(spec, args, out_dir, seed)
    t0 = time.perf_counter()
    res = fit(cfg)
    wall = time.perf_counter() - t0
    rows = RunDir(res.run_dir).read_metrics()
    samples = sum(r["train_samples"] for r in rows)
    train_time = sum(r["train_samples"] / r["samples_per_second"] for r in rows if r["samples_per_second"])
    best = res.best_metrics
    record = RunDir(res.run_dir).read_record()
    out = {
        "method": spec,
        "seed": seed,
        "img_s": samples / max(train_time, 1e-9),
        "steps": res.steps,
        "epochs": len(rows),
        "seconds": res.train_seconds,
        "wall": wall,
        "best_epoch": res.best_epoch,
        "acc": best.get("valid_accuracy"),
        "mca": best.get("valid_mean_class_accuracy"),
        "f1": best.get("valid_macro_f1"),
        "precision": record.get("precision"),
        "budget": record.get("budget"),
        "run_dir": str(res.run_dir),
    }
    if cfg.model.name == "arbex":
        out["arbex"] = arbex_report(res.run_dir)
    return out


def arbex_report(run_dir: Path) -> dict[str, Any]:
    """Branch accuracies and confidences of the selected checkpoint on valid; anchors per epoch."""
    from fernb.explore.embeddings import anchor_summary, collect_checkpoints, list_checkpoints
    from fernb.explore.reliability import reliability_table

    table = reliability_table(run_dir, "valid", "best")
    f, given = table.frame, table.codes("given")
    branches = {
        name: float((table.codes(name) == given).mean()) for name in ("primary", "anchor", "attention", "corrected")
    }
    conf = {name: float(np.median(f[f"c_{name}"])) for name in ("primary", "anchor", "attention", "corrected")}
    epochs = [c for c in list_checkpoints(run_dir) if c.startswith("epoch-")]
    summary = anchor_summary(collect_checkpoints(run_dir, epochs, cache=False))
    per_epoch = summary[
        ["epoch", "accuracy", "nearest_anchor_accuracy", "anchor_separation", "anchor_drift", "embedding_scale"]
    ].to_dict("records")
    return {"branch_accuracy": branches, "median_confidence": conf, "per_epoch": per_epoch}


def run_reference(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """The plain loop on the same decoded arrays fernb trains on (gray, 48 px)."""
    from reference_loop import reference_loop
    from sklearn.metrics import balanced_accuracy_score, f1_score

    from fernb.data import load_dataset
    from fernb.data.arrays import materialize

    def arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
        ds = materialize(load_dataset("ferplus", str(args.root), split, label_space="ferplus8"), 48, progress=False)
        px = np.asarray(ds.pixels)
        return (px[:, None] if px.ndim == 3 else px.transpose(0, 3, 1, 2)).copy(), ds.targets

    tx, ty = arrays("train")
    vx, vy = arrays("valid")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    r = reference_loop(tx, ty, vx, vy, 8, args.budget_s, seed=seed)
    pred = r.valid_logits.argmax(1)
    return {
        "method": "reference",
        "seed": seed,
        "img_s": r.images_per_second,
        "steps": r.steps,
        "epochs": r.epochs,
        "seconds": r.train_seconds,
        "wall": r.train_seconds,
        "best_epoch": r.best_epoch,
        "acc": r.best_valid_accuracy,
        "mca": float(balanced_accuracy_score(vy, pred)),
        "f1": float(f1_score(vy, pred, average="macro")),
    }


def _paired(rows: list[dict[str, Any]], ref: list[dict[str, Any]]) -> str:
    """Per-seed img/s ratios to the reference run of the same seed (run next to it), when there are any."""
    by_seed = {r["seed"]: r["img_s"] for r in ref}
    ratios = [r["img_s"] / by_seed[r["seed"]] for r in rows if r["seed"] in by_seed]
    if len(ratios) < 2:
        return ""
    each = ", ".join(f"{x:.3f}" for x in ratios)
    return f"  (img/s per seed x{each}; geometric mean x{float(np.exp(np.mean(np.log(ratios)))):.3f})"


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'method':<18} {'seed':>4} {'img/s':>7} {'steps':>6} {'epochs':>6} {'sec':>6} {'best':>4} "
        f"{'acc':>6} {'mca':>6} {'f1':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['method']:<18} {r['seed']:>4} {r['img_s']:>7.0f} {r['steps']:>6} {r['epochs']:>6} "
            f"{r['seconds']:>6.0f} {r['best_epoch'] or 0:>4} {100 * r['acc']:>6.1f} {100 * r['mca']:>6.1f} "
            f"{100 * r['f1']:>6.1f}"
        )
    means: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        means.setdefault(r["method"], []).append(r)
    multi = {m: rs for m, rs in means.items() if len(rs) > 1}
    if multi:
        print("\nmean over seeds")
        for m, rs in multi.items():
            acc, mca = np.mean([r["acc"] for r in rs]), np.mean([r["mca"] for r in rs])
            print(f"{m:<18} n={len(rs)}  acc {100 * acc:.1f}  mca {100 * mca:.1f}")
    ref = [r for r in rows if r["method"] == "reference"]
    if ref:
        acc, speed = np.mean([r["acc"] for r in ref]), np.mean([r["img_s"] for r in ref])
        print("\nratios to the reference loop (accuracy, img/s)")
        for m, rs in means.items():
            if m != "reference":
                print(
                    f"{m:<18} acc x{np.mean([r['acc'] for r in rs]) / acc:.3f}  "
                    f"img/s x{np.mean([r['img_s'] for r in rs]) / speed:.3f}" + _paired(rs, ref)
                )
    for r in rows:
        if "arbex" not in r:
            continue
        a = r["arbex"]
        print(
            f"\n{r['method']} seed {r['seed']}: branch accuracy on valid "
            + ", ".join(f"{k} {100 * v:.1f}" for k, v in a["branch_accuracy"].items())
            + "; median confidence "
            + ", ".join(f"{k} {v:.2f}" for k, v in a["median_confidence"].items())
        )
        print(f"  {'epoch':>5} {'acc':>6} {'nearest-anchor':>14} {'separation':>10} {'drift':>8} {'scale':>8}")
        for e in a["per_epoch"]:
            print(
                f"  {e['epoch']:>5} {100 * e['accuracy']:>6.1f} {100 * e['nearest_anchor_accuracy']:>14.1f} "
                f"{e['anchor_separation']:>10.3f} {e['anchor_drift']:>8.3f} {e['embedding_scale']:>8.3f}"
            )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    from fernb.engine.config import TTA_MODES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget per run (s)")
    p.add_argument("--methods", default=",".join(ALL_METHODS))
    p.add_argument("--seeds", default="0")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="FER+ root (the shared layout)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--tta", choices=TTA_MODES, default="none", help="test-time augmentation of fernb's runs")
    p.add_argument("--json", type=Path, default=None, help="write every row here")
    p.add_argument("--out", type=Path, default=None, help="keep the run folders here (default: a temporary folder)")
    args = p.parse_args(argv)
    if not (args.root / "train").is_dir():
        sys.exit(f"FER+ not found at {args.root} (needs train/ and valid/); give --root")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out or Path(tmp)
        specs = [m.strip() for m in args.methods.split(",") if m.strip()]
        for seed in seeds:  # methods alternate within a seed, so a slow spell of the machine hits each of them
            for spec in specs:
                row = run_reference(args, seed) if spec == "reference" else run_fernb(spec, args, out_dir, seed)
                rows.append(row)
                print(
                    f"# {spec} seed {seed}: acc {100 * row['acc']:.1f} mca {100 * row['mca']:.1f} "
                    f"({row['img_s']:.0f} img/s, {row['steps']} steps)",
                    flush=True,
                )
                if args.json:
                    args.json.write_text(json.dumps(rows, indent=1, default=str))
    print()
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
