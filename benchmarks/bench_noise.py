"""Label-noise robustness under the budget recipes: ResNet-18 with cross-entropy, ARBEx and SCN trained on the FER+
train subset with clean labels, 30 % symmetric and 30 % asymmetric noise (``data.label_noise``, training labels
only), the same wall-clock budget per run or a fixed step count, scored on the clean FER+ valid split.

    python benchmarks/bench_noise.py                                   # 3 methods x 3 noise settings, 480 s each
    python benchmarks/bench_noise.py --steps 1150 --seeds 0,1,2        # a fixed step plan: independent of the load
    python benchmarks/bench_noise.py --methods resnet18,arbex --noise clean,sym30,sym10 --budget-s 120

Noise settings: ``clean``, ``sym<percent>`` (symmetric: another class, uniformly) and ``asym<percent>`` (each class
to its most confusable one, ``fernb.data.FER_CONFUSION``); the flips are seeded by the run seed, so at one seed every
method sees the same flipped samples. Methods as in ``bench_budget.py`` (a registry name, a variant, or
``arbex:<backbone>``). One process at a time; ``--threads`` sets torch's threads.

Columns: the selected epoch's valid accuracy and mean class accuracy (clean labels), ``drop`` (points of valid
accuracy lost from the same method's clean run at the same seed; blank without one), and the selected epoch's
flipped-label detection AUROC (``fernb.engine.noise_detection``: ``loss``, the small-loss criterion of any method;
``disagr``, ARBEx's 1 - corrected probability of the given label), ``fit flip`` (the share of flipped training
labels the model had learnt by its last epoch: its training output's argmax; near 0, the run has not memorised the
noise, ``fernb.explore.fitted_labels``); then the steps and seconds trained. With several
seeds a second table gives the means (and the standard deviation of the accuracy). ``--json`` writes every row.
The issue's targets (issue 13) are printed under the tables against the means, whatever they show.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_budget import DEFAULT_ROOT, parse_method  # noqa: E402  (the same method names as the budget benchmark)

METHODS = ("resnet18", "arbex", "scn")
NOISE = ("clean", "sym30", "asym30")
_KINDS = {"sym": "symmetric", "asym": "asymmetric"}


def parse_noise(name: str) -> dict[str, Any] | None:
    """``"clean"`` -> None; ``"sym30"`` -> ``{"kind": "symmetric", "rate": 0.3}``; ``"asym20"`` -> asymmetric 0.2.

    Raises:
        ValueError: any other name.
    """
    if name == "clean":
        return None
    m = re.fullmatch(r"(sym|asym)(\d+(?:\.\d+)?)", name)
    if not m or not 0 < float(m.group(2)) < 100:
        raise ValueError(f"noise {name!r}: expected clean, sym<percent> or asym<percent> (e.g. sym30, asym30)")
    return {"kind": _KINDS[m.group(1)], "rate": float(m.group(2)) / 100}


def run_config(spec: str, noise: str, args: argparse.Namespace, out_dir: Path, seed: int):
    """The budget recipe of ``spec`` on ``args.dataset`` with the noise setting ``noise`` at ``seed``."""
    from fernb.engine import apply_overrides, config_from_preset
    from fernb.engine.presets import merge_model_kwargs

    method, extra = parse_method(spec)
    label_noise = parse_noise(noise)
    cfg = config_from_preset(
        f"{method}/{args.dataset}@budget",
        run__out_dir=str(out_dir),
        run__name=f"{spec.replace(':', '-').replace('+', '-')}-{noise}-s{seed}",
        run__seed=seed,
        run__quiet=not args.progress,
        run__threads=args.threads or None,
    )
    over: dict[str, Any] = {
        "data.root": str(args.root) if args.dataset == "ferplus" else None,
        "data.label_noise": {**label_noise, "seed": seed} if label_noise else {},
        "data.train_limit": args.train_limit,
        "data.valid_limit": args.valid_limit,
    }
    if args.steps:
        over.update({"schedule.steps": args.steps, "schedule.budget_s": None})
    else:
        over["schedule.budget_s"] = args.budget_s
    cfg = apply_overrides(cfg, over)
    cfg.model.kwargs = merge_model_kwargs(dict(cfg.model.kwargs), extra)
    return cfg


def run_one(spec: str, noise: str, args: argparse.Namespace, out_dir: Path, seed: int) -> dict[str, Any]:
    """Train one run; its row of the table."""
    from fernb.engine import fit
    from fernb.engine.rundir import RunDir
    from fernb.explore.noise_detection import fitted_labels
    from fernb.explore.robustness import best_epoch_detection

    cfg = run_config(spec, noise, args, out_dir, seed)
    t0 = time.perf_counter()
    res = fit(cfg)
    wall = time.perf_counter() - t0
    record = RunDir(res.run_dir).read_record()
    best = res.best_metrics
    detection = best_epoch_detection(res.run_dir)
    noise_record = (record.get("data") or {}).get("label_noise") or {}
    fitted = fitted_labels(res.run_dir) if detection else {}
    return {
        "method": spec,
        "noise": noise,
        "seed": seed,
        "realised_rate": noise_record.get("realised_rate", 0.0),
        "steps": res.steps,
        "seconds": res.train_seconds,
        "wall": wall,
        "best_epoch": res.best_epoch,
        "acc": best.get("valid_accuracy"),
        "mca": best.get("valid_mean_class_accuracy"),
        "f1": best.get("valid_macro_f1"),
        "auroc_loss": detection.get("loss"),
        "auroc_disagreement": detection.get("disagreement"),
        "fit_clean": fitted.get("clean"),
        "fit_flipped": fitted.get("flipped"),
        "run_dir": str(res.run_dir),
    }


def add_drops(rows: list[dict[str, Any]]) -> None:
    """``drop``: points of accuracy lost from the same method's clean run at the same seed (None without one)."""
    clean = {(r["method"], r["seed"]): r["acc"] for r in rows if r["noise"] == "clean"}
    for r in rows:
        base = clean.get((r["method"], r["seed"]))
        r["drop"] = None if base is None or r["acc"] is None else 100 * (base - r["acc"])


def _num(v: Any, width: int, scale: float = 1.0, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return f"{'':>{width}}"
    return f"{scale * float(v):>{width}.{digits}f}"


def _mean(rs: list[dict[str, Any]], key: str) -> float | None:
    vals = [float(r[key]) for r in rs if r.get(key) is not None and np.isfinite(float(r[key]))]
    return float(np.mean(vals)) if vals else None


def means(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method and noise setting: the means over seeds (``acc_std``: the accuracy's std, ddof 1)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["noise"]), []).append(r)
    out = []
    for (method, noise), rs in groups.items():
        accs = [r["acc"] for r in rs if r["acc"] is not None]
        out.append(
            {
                "method": method,
                "noise": noise,
                "seeds": len(rs),
                "acc": _mean(rs, "acc"),
                "acc_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else None,
                "mca": _mean(rs, "mca"),
                "drop": _mean(rs, "drop"),
                "auroc_loss": _mean(rs, "auroc_loss"),
                "auroc_disagreement": _mean(rs, "auroc_disagreement"),
                "fit_flipped": _mean(rs, "fit_flipped"),
                "steps": _mean(rs, "steps"),
            }
        )
    return out


HEAD = (
    f"{'method':<14} {'noise':<7} {'seed':>4} {'acc':>6} {'mca':>6} {'drop':>6} {'auroc loss':>10} {'disagr':>7} "
    f"{'fit flip':>8} {'steps':>6} {'sec':>5}"
)


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [HEAD, "-" * len(HEAD)]
    for r in rows:
        lines.append(
            f"{r['method']:<14} {r['noise']:<7} {r['seed']:>4} {_num(r['acc'], 6, 100)} {_num(r['mca'], 6, 100)} "
            f"{_num(r.get('drop'), 6)} {_num(r['auroc_loss'], 10, digits=3)} "
            f"{_num(r['auroc_disagreement'], 7, digits=3)} {_num(r.get('fit_flipped'), 8, 100)} {r['steps']:>6} "
            f"{r['seconds']:>5.0f}"
        )
    return "\n".join(lines)


def format_means(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'method':<14} {'noise':<7} {'seeds':>5} {'acc':>6} {'± std':>6} {'mca':>6} {'drop':>6} "
        f"{'auroc loss':>10} {'disagr':>7} {'fit flip':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in means(rows):
        lines.append(
            f"{r['method']:<14} {r['noise']:<7} {r['seeds']:>5} {_num(r['acc'], 6, 100)} {_num(r['acc_std'], 6, 100)} "
            f"{_num(r['mca'], 6, 100)} {_num(r['drop'], 6)} {_num(r['auroc_loss'], 10, digits=3)} "
            f"{_num(r['auroc_disagreement'], 7, digits=3)} {_num(r.get('fit_flipped'), 8, 100)}"
        )
    return "\n".join(lines)


def targets(rows: list[dict[str, Any]], noise: str = "sym30") -> list[str]:
    """The issue's targets read from the means under ``noise``: ARBEx loses at most half of ResNet-18's drop and
    scores at least 3 points above it, its detection AUROC reaches 0.85, and SCN beats ResNet-18."""
    m = {(r["method"], r["noise"]): r for r in means(rows)}
    arbex, resnet, scn = m.get(("arbex", noise)), m.get(("resnet18", noise)), m.get(("scn", noise))
    out = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    if arbex and resnet and arbex["drop"] is not None and resnet["drop"] is not None:
        out.append(
            f"ARBEx drop {arbex['drop']:.1f} <= half of ResNet-18's {resnet['drop']:.1f}: "
            f"{verdict(arbex['drop'] <= resnet['drop'] / 2)}"
        )
    if arbex and resnet and arbex["acc"] is not None and resnet["acc"] is not None:
        gap = 100 * (arbex["acc"] - resnet["acc"])
        out.append(f"ARBEx {gap:+.1f} points against ResNet-18 under {noise} (target >= +3): {verdict(gap >= 3)}")
    if arbex:
        best = max((v for v in (arbex["auroc_loss"], arbex["auroc_disagreement"]) if v is not None), default=None)
        if best is not None:
            out.append(f"ARBEx detection AUROC {best:.3f} (target >= 0.85): {verdict(best >= 0.85)}")
    if scn and resnet and scn["acc"] is not None and resnet["acc"] is not None:
        gap = 100 * (scn["acc"] - resnet["acc"])
        out.append(f"SCN {gap:+.1f} points against ResNet-18 under {noise} (target > 0): {verdict(gap > 0)}")
    if arbex and scn and arbex["acc"] is not None and scn["acc"] is not None:
        gap = 100 * (arbex["acc"] - scn["acc"])
        out.append(
            f"ARBEx {gap:+.1f} points against SCN under {noise}: " + ("beats it" if gap > 0 else "does not beat it")
        )
    return out


def print_tables(rows: list[dict[str, Any]]) -> None:
    print(format_rows(rows))
    if any(r["seeds"] > 1 for r in means(rows)):
        print("\nmean over seeds")
        print(format_means(rows))
    lines = targets(rows)
    if lines:
        print("\ntargets (issue 13, sym30, means over seeds)")
        for line in lines:
            print("  " + line)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget per run (s)")
    p.add_argument("--steps", type=int, default=None, help="a fixed number of optimiser steps instead of a budget")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--noise", default=",".join(NOISE), help="clean, sym<percent>, asym<percent>")
    p.add_argument("--seeds", default="0")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="FER+ root (the shared layout)")
    p.add_argument("--dataset", default="ferplus", help="ferplus (default) or synthetic (quick checks)")
    p.add_argument("--train-limit", type=int, default=None, help="train on at most this many samples")
    p.add_argument("--valid-limit", type=int, default=None, help="score on at most this many valid samples")
    p.add_argument("--threads", type=int, default=2, help="torch threads (0: leave torch's setting)")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--json", type=Path, default=None, help="write every row here")
    p.add_argument("--out", type=Path, default=None, help="keep the run folders here (default: a temporary folder)")
    args = p.parse_args(argv)
    if args.dataset == "ferplus" and not (args.root / "train").is_dir():
        sys.exit(f"FER+ not found at {args.root} (needs train/ and valid/); give --root")
    try:
        noises = [n.strip() for n in args.noise.split(",") if n.strip()]
        for n in noises:
            parse_noise(n)
    except ValueError as exc:
        sys.exit(str(exc))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out or Path(tmp)
        for seed in seeds:
            for spec in methods:
                for noise in noises:
                    row = run_one(spec, noise, args, out_dir, seed)
                    rows.append(row)
                    print(
                        f"# {spec} {noise} seed {seed}: acc {100 * row['acc']:.1f} mca {100 * row['mca']:.1f} "
                        f"({row['steps']} steps, {row['seconds']:.0f} s)",
                        flush=True,
                    )
                    add_drops(rows)
                    if args.json:
                        args.json.write_text(json.dumps(rows, indent=1, default=str))
    print()
    print_tables(rows)
    return rows


if __name__ == "__main__":
    main()
