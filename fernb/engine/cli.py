"""Command-line entry points: ``python -m fernb train ...``, ``python -m fernb evaluate ...`` and
``torchrun --nproc_per_node N -m fernb.train ...``."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from .config import ConfigError, config_to_dict, load_config
from .evaluate import evaluate
from .fit import fit
from .overrides import apply_overrides
from .presets import config_from_preset, list_presets, resolve_length

__all__ = ["train_main", "evaluate_main", "format_metrics"]

_TRAIN_EPILOG = """examples:
  python -m fernb train arbex/ferplus --smoke
  python -m fernb train poster_v2/rafdb data.root=/data/raf-db optim.lr=1e-5 run.name=poster-raf
  python -m fernb train --config runs/old/config.json run.resume=true
  torchrun --nproc_per_node 2 -m fernb.train resnet18/ferplus data.root=../shared/data/ferplus
  python -m fernb train --import mylab.models --config my_model.yaml
"""


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fernb train",
        description="Train a method with the fernb engine.",
        epilog=_TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "preset",
        nargs="?",
        help="<method>/<dataset>, e.g. arbex/ferplus; append @budget for the CPU "
        "budget recipe (resnet18/ferplus@budget schedule.budget_s=300); see --list",
    )
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. optim.lr=1e-3 schedule.epochs=5")
    p.add_argument("--config", help="start from a config file (JSON or YAML) instead of a preset")
    p.add_argument("--smoke", action="store_true", default=None, help="seconds-long CPU run ($FERNB_SMOKE also works)")
    p.add_argument("--resume", action="store_true", help="continue the run in its folder (run.resume=true)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run (run.overwrite=true)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (run.quiet=true)")
    p.add_argument("--test", action="store_true", help="evaluate the best checkpoint on the test split at the end")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("--list", action="store_true", help="list the presets and exit")
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (it may register your own models, losses or datasets); repeatable",
    )
    return p


def _import_plugins(modules: Sequence[str]) -> None:
    for name in modules:
        importlib.import_module(name)


def train_main(argv: Sequence[str] | None = None) -> int:
    """``python -m fernb train <preset> [key=value ...]``; returns the exit code."""
    args = _train_parser().parse_intermixed_args(list(sys.argv[1:] if argv is None else argv))
    _import_plugins(args.imports)
    if args.list:
        print("\n".join(list_presets()))
        return 0
    items = list(args.overrides)
    if args.preset and "=" in args.preset:  # only overrides, with --config
        items.insert(0, args.preset)
        args.preset = None
    try:
        if args.config:
            cfg = load_config(args.config)
            if args.preset:
                raise ConfigError("give either a preset or --config, not both")
        elif args.preset:
            cfg = config_from_preset(args.preset, smoke=args.smoke)
        else:
            print(
                "error: give a preset (e.g. arbex/ferplus) or --config FILE; --list shows the presets", file=sys.stderr
            )
            return 2
        flags = {
            "run.resume": args.resume or None,
            "run.overwrite": args.overwrite or None,
            "run.quiet": args.quiet or None,
        }
        cfg = apply_overrides(cfg, items)
        if not args.config:  # a preset's time budget or step plan gives way to the length the user asked for
            cfg = resolve_length(cfg, {str(item).partition("=")[0].strip() for item in items})
        cfg = apply_overrides(cfg, {k: v for k, v in flags.items() if v is not None})
    except (ConfigError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        return 0
    result = fit(cfg)
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        print(f"run: {result.run_dir}  ({result.stop_reason}, {result.steps} steps, {result.train_seconds:.1f} s)")
        if result.best_epoch is not None:
            keys = [k for k in result.best_metrics if k.startswith("valid_")]
            shown = "  ".join(f"{k[6:]} {result.best_metrics[k]:.4f}" for k in keys)
            print(f"best epoch {result.best_epoch}: {shown}")
    if args.test and main:
        m = evaluate(result.run_dir, "test")
        print(format_metrics(m))
    return 0


def _fmt_ci(m: dict[str, Any], key: str) -> str:
    ci = (m.get("ci") or {}).get(key)
    return f"  [{ci['low']:.4f}, {ci['high']:.4f}]" if ci else ""


def format_metrics(m: dict[str, Any]) -> str:
    """A plain-text report of :func:`fernb.engine.evaluate`'s result."""
    lines = [f"{m.get('dataset')}/{m.get('split')} ({m['n']} samples, checkpoint {m.get('checkpoint')})"]
    for key, label in (
        ("accuracy", "accuracy"),
        ("mean_class_accuracy", "mean class accuracy"),
        ("macro_f1", "macro-F1"),
    ):
        lines.append(f"  {label:<20} {m[key]:.4f}{_fmt_ci(m, key)}")
    for key in ("nll", "kl", "js"):
        if key in m:
            lines.append(f"  {key:<20} {m[key]:.4f}")
    lines.append(f"  {'class':<12} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}")
    for r in m["per_class"]:
        lines.append(
            f"  {r['class']:<12} {r['precision']:>9.3f} {r['recall']:>7.3f} {r['f1']:>7.3f} {r['support']:>8d}"
        )
    names = [r["class"][:5] for r in m["per_class"]]
    lines.append("  confusion (rows true, columns predicted):")
    lines.append("  " + " " * 8 + "".join(f"{n:>7}" for n in names))
    for n, row in zip(names, m["confusion"]):
        lines.append(f"  {n:<8}" + "".join(f"{v:>7d}" for v in row))
    if "label_mapping" in m:
        lines.append(f"  label mapping: {json.dumps(m['label_mapping'])}")
    return "\n".join(lines)


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """``python -m fernb evaluate <run_dir> [--split test] ...``; returns the exit code."""
    p = argparse.ArgumentParser(
        prog="python -m fernb evaluate",
        description="Evaluate a finished run (the test split is meant to be used once).",
    )
    p.add_argument("run_dir", help="the run folder written by training")
    p.add_argument("--split", default="test", help="split to score (default: test)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--dataset", help="cross-dataset evaluation: another dataset's reader name")
    p.add_argument("--root", help="data root of --dataset")
    p.add_argument(
        "--no-restrict",
        action="store_true",
        help="cross-dataset: predict among all the model's classes (a class the data lacks is a miss)",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CI (0: off)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--json", action="store_true", help="print the full metrics as JSON")
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (it may register your own models, losses or datasets); repeatable",
    )
    a = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    _import_plugins(a.imports)
    m = evaluate(
        a.run_dir,
        a.split,
        checkpoint=a.checkpoint,
        dataset=a.dataset,
        root=a.root,
        restrict_predictions=not a.no_restrict,
        bootstrap=a.bootstrap,
        batch_size=a.batch_size,
        device=a.device,
    )
    print(json.dumps(m, indent=2) if a.json else format_metrics(m))
    return 0
