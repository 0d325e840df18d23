"""Train each method's ``tiny`` model on the FER+ train subset for a fixed wall-clock budget.

Prints, per method: training throughput (images/s), optimiser steps, and validation accuracy, mean class accuracy
and macro-F1 on FER+ ``valid`` (the model selected on validation is the one scored; the test split is not used).

    python benchmarks/bench_train.py --budget-s 60
    python benchmarks/bench_train.py --budget-s 30 --methods resnet18,arm --valid-limit 1000
    python benchmarks/bench_train.py --methods esr+diversity,manet+diversity    # name+flag: a model option set True

Each method trains with its published recipe (optimiser, learning rate, SAM, sampler; see
``fernb.engine.presets``) on the tiny model at its tiny input size, unless ``--common-optim`` puts every method on
Adam 1e-3 without SAM (fairer for from-scratch tiny models: the published learning rates assume pretrained backbones).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_ROOT = REPO.parent / "shared" / "data" / "ferplus"


def run_method(spec: str, args: argparse.Namespace, out_dir: Path) -> dict:
    """Train one method (a name, or name+flag for a variant) for the budget; returns its row of the table."""
    from fernb.engine import apply_overrides, config_from_preset, fit
    from fernb.engine.presets import smoke_overrides
    from fernb.engine.rundir import RunDir
    from fernb.models import parse_variant

    method, model_kwargs = parse_variant(spec)
    over = {
        "model.preset": "tiny",
        "data.root": str(args.root),
        "data.img_size": args.img_size or smoke_overrides(method, "ferplus")["data.img_size"],
        "data.batch_size": args.batch_size,
        "data.eval_batch_size": 128,
        "data.valid_limit": args.valid_limit,
        "data.train_limit": args.train_limit,
        "schedule.epochs": 10_000,
        "run.time_budget_s": args.budget_s,
        "run.out_dir": str(out_dir),
        "run.name": spec.replace("+", "-"),
        "run.quiet": not args.progress,
        "run.seed": args.seed,
        "run.threads": args.threads,
        "run.checkpoint_every_steps": 0,
    }
    if model_kwargs:
        over["model.kwargs"] = model_kwargs
    if method == "esr":  # one long stage: the branch-by-branch schedule does not fit a short budget
        over.update({"schedule.stages": [], "data.sampler_kwargs": {}})
    if args.common_optim:
        over.update(
            {
                "optim.name": "adam",
                "optim.lr": 1e-3,
                "optim.sam": False,
                "optim.weight_decay": 0.0,
                "schedule.name": "none",
            }
        )
    cfg = apply_overrides(config_from_preset(f"{method}/ferplus"), over)
    t0 = time.perf_counter()
    res = fit(cfg)
    wall = time.perf_counter() - t0
    rows = RunDir(res.run_dir).read_metrics()  # every epoch, the one cut by the budget included
    # a row's samples_per_second is over its training time only (validation excluded)
    samples = sum(r["train_samples"] for r in rows)
    train_time = sum(r["train_samples"] / r["samples_per_second"] for r in rows if r["samples_per_second"])
    rec = RunDir(res.run_dir).read_record()
    best = res.best_metrics
    return {
        "method": spec,
        "params": rec["model"]["params"],
        "img_size": cfg.data.img_size,
        "optim": f"{cfg.optim.name}{'+sam' if cfg.optim.sam else ''} lr={cfg.optim.lr:g}",
        "steps": res.steps,
        "epochs": round(res.steps / max(1, rec["steps_per_epoch"]), 2),
        "train_img_per_s": samples / max(train_time, 1e-9),
        "valid_accuracy": best.get("valid_accuracy"),
        "valid_mean_class_accuracy": best.get("valid_mean_class_accuracy"),
        "valid_macro_f1": best.get("valid_macro_f1"),
        "best_epoch": res.best_epoch,
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-s", type=float, default=60.0, help="seconds per method (the final validation is extra)")
    p.add_argument(
        "--methods",
        default="",
        help="comma-separated methods, name+flag for a variant (default: every "
        "registered one and the diversity variants)",
    )
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="FER+ data root (default ../shared/data/ferplus)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--img-size", type=int, default=None, help="input side (default: each tiny model's)")
    p.add_argument("--valid-limit", type=int, default=None, help="score on this many validation images (default all)")
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--common-optim", action="store_true", help="Adam 1e-3, no SAM, no schedule for every method")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    import fernb
    from fernb.engine import METHODS
    from fernb.losses import list_losses
    from fernb.models import VARIANTS, parse_variant

    if not args.root.is_dir():
        print(f"FER+ data not found at {args.root}; pass --root", file=sys.stderr)
        return 2
    available = [m for m in METHODS if m in fernb.list_models() and m in list_losses()]
    variants = [v for v in VARIANTS if parse_variant(v)[0] in available]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] or [*available, *variants]
    missing = [m for m in methods if parse_variant(m)[0] not in available]
    if missing:
        print(
            f"not registered (model or loss): {', '.join(missing)}; available: {', '.join(available)}", file=sys.stderr
        )
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="fernb-bench-") as tmp:
        for m in methods:
            r = run_method(m, args, Path(tmp))
            r.pop("_unused", None)
            results.append(r)
            print(
                f"{m}: {r['train_img_per_s']:.0f} img/s, {r['steps']} steps, valid acc {r['valid_accuracy']:.4f}",
                file=sys.stderr,
                flush=True,
            )
    head = (
        f"{'method':<16} {'params':>9} {'px':>4} {'optimiser':<22} {'img/s':>7} {'steps':>6} {'epochs':>6} "
        f"{'acc':>6} {'mca':>6} {'f1':>6}"
    )
    print(f"FER+ train ({args.budget_s:.0f} s budget per method, batch {args.batch_size}), scored on FER+ valid")
    print(head)
    print("-" * len(head))
    for r in results:
        print(
            f"{r['method']:<16} {r['params']:>9,} {r['img_size']:>4} {r['optim']:<22} {r['train_img_per_s']:>7.0f} "
            f"{r['steps']:>6} {r['epochs']:>6} {r['valid_accuracy']:>6.3f} {r['valid_mean_class_accuracy']:>6.3f} "
            f"{r['valid_macro_f1']:>6.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
