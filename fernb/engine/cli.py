"""Command-line entry points: ``python -m fernb train ...``, ``python -m fernb evaluate ...``,
``python -m fernb export ...`` and ``torchrun --nproc_per_node N -m fernb.train ...``."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from ..errors import FernbError
from ..labels import get_label_space
from ..models._errors import CheckpointMismatchError
from .config import TTA_MODES, ConfigError, config_to_dict, load_config, validate_config
from .evaluate import evaluate, evaluate_checkpoint
from .export import ExportError, build_for_export, export_onnx
from .fit import fit
from .overrides import apply_overrides
from .presets import config_from_preset, list_presets, resolve_length
from .rundir import write_json

__all__ = ["train_main", "evaluate_main", "export_main", "format_metrics", "guarded", "error_message"]


def error_message(exc: BaseException) -> str:
    """One message for a user's error: fernb's own say what to do; a bare ``OSError`` gets its file and a hint."""
    if isinstance(exc, FernbError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        what = exc.strerror or str(exc)
        return f"{where}{what}.\n  what to do: check the path, the free disk space and the folder's permissions."
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def guarded(main: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
    """Run a command's ``main(argv)``: a user's error (fernb's errors, file-system errors) prints ``error: <message>``
    on stderr and returns 2; ``--debug`` anywhere in ``argv`` shows the traceback as well."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        return int(main(args) or 0)
    except (FernbError, OSError) as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {error_message(exc)}", file=sys.stderr)
        if not debug:
            print("  (--debug shows the traceback)", file=sys.stderr)
        return 2


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
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="with --resume: accept a config that changes results (optim.lr, data.img_size, ...); every change is "
        "recorded in run.json (run.allow_config_change=true)",
    )
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
    """``python -m fernb train <preset> [key=value ...]``; returns the exit code (2: a user's error, printed as
    ``error: <message>``; ``--debug`` adds the traceback)."""
    return guarded(_train, argv)


def _train(argv: list[str]) -> int:
    args = _train_parser().parse_intermixed_args(argv)
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
            "run.allow_config_change": args.allow_config_change or None,
            "run.quiet": args.quiet or None,
        }
        cfg = apply_overrides(cfg, items)
        if not args.config:  # a preset's time budget or step plan gives way to the length the user asked for
            cfg = resolve_length(cfg, {str(item).partition("=")[0].strip() for item in items})
        cfg = validate_config(apply_overrides(cfg, {k: v for k, v in flags.items() if v is not None}))
    except (ConfigError, KeyError) as exc:
        print(f"error: {error_message(exc)}", file=sys.stderr)
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
    tta = f", test-time augmentation {m['tta']}" if m.get("tta", "none") != "none" else ""
    lines = [f"{m.get('dataset')}/{m.get('split')} ({m['n']} samples, checkpoint {m.get('checkpoint')}{tta})"]
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


_EVALUATE_EPILOG = """examples:
  python -m fernb evaluate runs/arbex-ferplus-s0
  python -m fernb evaluate runs/arbex-ferplus-s0 --dataset rafdb --root /data/raf-db
  python -m fernb evaluate --model poster_v2 --checkpoint raf-db-model_best.pth --dataset rafdb --root /data/raf-db
  python -m fernb evaluate --model resnet18 --preset tiny --checkpoint model.safetensors --dataset synthetic
"""


def _add_import(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (it may register your own models, losses or datasets); repeatable",
    )


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """``python -m fernb evaluate <run_dir> [--split test] ...`` or ``python -m fernb evaluate --model NAME
    --checkpoint FILE --dataset NAME [--root DIR]``; returns the exit code."""
    return guarded(_evaluate, argv)


def _evaluate(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fernb evaluate",
        description="Evaluate a finished run (the test split is meant to be used once), or score a checkpoint file "
        "without a run folder (--model, --checkpoint FILE, --dataset): the model is built by name, the file loaded "
        "through the official key converters, and the split scored under the method's published evaluation "
        "transform and image size.",
        epilog=_EVALUATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", nargs="?", help="the run folder written by training (or give --model)")
    p.add_argument("overrides", nargs="*", help="with --model: dotted key=value overrides, e.g. data.img_size=112")
    p.add_argument("--model", help="score a checkpoint file without a run: registry name (or variant, esr+diversity)")
    p.add_argument("--preset", default="official", help="with --model: the model preset (default: official)")
    p.add_argument(
        "--classes", help="with --model: the label space the checkpoint was trained on (default: the dataset's)"
    )
    p.add_argument("--split", default="test", help="split to score (default: test)")
    p.add_argument(
        "--checkpoint",
        help="a run's best (default), last or kept epoch; with --model: the checkpoint file (safetensors, a torch "
        "state dict, official naming converted) or ESR's release folder",
    )
    p.add_argument("--dataset", help="cross-dataset evaluation: another dataset's reader name; with --model: required")
    p.add_argument("--root", help="data root of --dataset")
    p.add_argument(
        "--no-restrict",
        action="store_true",
        help="cross-dataset: predict among all the model's classes (a class the data lacks is a miss)",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CI (0: off)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--tta",
        choices=TTA_MODES,
        help="test-time augmentation of a run's scoring (default: the run's data.eval_tta; with --model: "
        "data.eval_tta=flip as an override)",
    )
    p.add_argument("--json", action="store_true", help="print the full metrics as JSON")
    p.add_argument("--out", help="with --model: also write the metrics as JSON to this file")
    _add_import(p)
    a = p.parse_intermixed_args(argv)
    _import_plugins(a.imports)
    if a.run_dir and "=" in a.run_dir:  # only overrides, with --model
        a.overrides.insert(0, a.run_dir)
        a.run_dir = None
    if a.model is not None:
        if a.run_dir:
            p.error(f"give a run folder ({a.run_dir}) or --model, not both")
        if not a.checkpoint or a.checkpoint in ("best", "last"):
            p.error("--model needs --checkpoint FILE (the weights to score)")
        if a.tta:
            p.error(f"with --model, test-time augmentation is an override: data.eval_tta={a.tta}")
        if not a.dataset:
            p.error("--model needs --dataset (a dataset preset such as rafdb, ferplus, affectnet7, or synthetic)")
        try:
            m = evaluate_checkpoint(
                a.model,
                a.checkpoint,
                a.dataset,
                preset=a.preset,
                root=a.root,
                split=a.split,
                classes=a.classes,
                overrides=a.overrides,
                restrict_predictions=not a.no_restrict,
                batch_size=a.batch_size,
                bootstrap=a.bootstrap,
                device=a.device,
            )
        except (FileNotFoundError, KeyError, ConfigError, CheckpointMismatchError, ValueError) as exc:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            print(f"error: {msg}", file=sys.stderr)
            return 2
    else:
        if not a.run_dir:
            p.error("give a run folder, or --model NAME --checkpoint FILE --dataset NAME to score a checkpoint file")
        if a.overrides:
            p.error(f"overrides ({' '.join(a.overrides)}) go with --model; a run is scored with its own config")
        m = evaluate(
            a.run_dir,
            a.split,
            checkpoint=a.checkpoint or "best",
            dataset=a.dataset,
            root=a.root,
            restrict_predictions=not a.no_restrict,
            bootstrap=a.bootstrap,
            batch_size=a.batch_size,
            device=a.device,
            tta=a.tta,
        )
    print(json.dumps(m, indent=2) if a.json else format_metrics(m), flush=True)  # the numbers first, then the file
    if a.model is not None and a.out:
        try:
            write_json(a.out, m)
        except OSError as exc:
            print(f"warning: the metrics above were not saved: {error_message(exc)}", file=sys.stderr)
    return 0


_EXPORT_EPILOG = """examples:
  python -m fernb export runs/arbex-ferplus-s0 --onnx out/arbex.onnx
  python -m fernb export runs/arbex-ferplus-s0 --onnx out/arbex.onnx --extras --checkpoint last
  python -m fernb export --model poster_v2 --checkpoint raf-db-model_best.pth --onnx out/poster_v2.onnx
"""


def export_main(argv: Sequence[str] | None = None) -> int:
    """``python -m fernb export <run_dir> --onnx FILE``; returns the exit code (1: the ONNX Runtime check failed)."""
    return guarded(_export, argv)


def _export(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fernb export",
        description="Export a run's checkpoint to ONNX, check the graph against ONNX Runtime (the largest absolute "
        "difference per output on a seeded batch is printed), and write the model card (README.md beside the file) "
        "from the run's record. Needs the export extra: pip install 'fernb[export]'.",
        epilog=_EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", nargs="?", help="the run folder written by training (or give --model)")
    p.add_argument("--onnx", required=True, metavar="FILE", help="the .onnx file to write")
    p.add_argument(
        "--checkpoint", help="a run's best (default), last or kept epoch; with --model: a checkpoint file (optional)"
    )
    p.add_argument("--model", help="export a model without a run: registry name (or variant, esr+diversity)")
    p.add_argument("--preset", default="official", help="with --model: the model preset (default: official)")
    p.add_argument("--classes", help="with --model: its label space (default: the first C canonical classes)")
    p.add_argument("--img-size", type=int, help="with --model: the input side (default: its pretrained cfg's)")
    p.add_argument(
        "--extras", action="store_true", help="also output the model's named per-sample extras (ARBEx: 13 of them)"
    )
    p.add_argument("--exporter", default="torchscript", choices=("torchscript", "dynamo"))
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime check")
    p.add_argument("--atol", type=float, default=1e-5, help="the check's bound (scaled by max(1, max |output|))")
    p.add_argument("--card", help="where to write the model card (default: README.md beside the file)")
    p.add_argument("--no-card", action="store_true", help="write no model card")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_import(p)
    a = p.parse_args(argv)
    _import_plugins(a.imports)
    try:
        if a.model is not None:
            if a.run_dir:
                p.error(f"give a run folder ({a.run_dir}) or --model, not both")
            source: Any = build_for_export(a.model, a.preset, a.checkpoint, classes=a.classes, img_size=a.img_size)
        elif a.run_dir:
            source = a.run_dir
        else:
            p.error("give a run folder, or --model NAME [--checkpoint FILE]")
        names = list(get_label_space(a.classes).names) if a.classes else None
        result = export_onnx(
            source,
            a.onnx,
            checkpoint=a.checkpoint or ("best" if a.model is None else "random init"),
            extras=a.extras,
            class_names=names,
            img_size=a.img_size,
            preset=a.preset if a.model is not None else None,
            opset=a.opset,
            exporter=a.exporter,
            check=not a.no_check,
            atol=a.atol,
            card=False if a.no_card else (a.card or True),
        )
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, KeyError, ConfigError, CheckpointMismatchError, ValueError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=2, default=str) if a.json else result.summary())
    return 0
