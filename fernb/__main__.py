"""Command line: ``python -m fernb <command>``.

Commands:
    notebooks [--smoke] [--out DIR] [NOTEBOOK ...]   run notebooks top to bottom with papermill
    train <preset> [key=value ...]                   train a method (see ``fernb.engine``)
    evaluate <run_dir> [--split test]                evaluate a finished run
    evaluate --model NAME --checkpoint FILE --dataset NAME [--root DIR]
                                                     score a checkpoint file (official naming too) without a run
    export <run_dir> --onnx FILE [--extras]          ONNX export, checked against ONNX Runtime, with a model card
    predict SOURCE ... --run DIR [--out faces.csv]   detect, align and classify every face of images, folders,
                                                     videos or a camera (or --model NAME --checkpoint FILE)
    datasets                                         list the dataset readers and their layouts
    models                                           list the registered models

A user's error (a config field out of range, a missing data root, an unreadable checkpoint, a full disk) prints
``error: <message>`` and exits with 2; add ``--debug`` to any command for the traceback.
"""

from __future__ import annotations

import argparse
import sys

from .data import dataset_info, list_datasets
from .engine import cli
from .engine.faces import predict_main
from .models import list_models
from .notebooks import run_notebooks


def _notebooks(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m fernb notebooks", description="Run the notebooks with papermill.")
    p.add_argument("notebooks", nargs="*", help="notebook files (default: every notebooks/NN_*.ipynb)")
    p.add_argument("--smoke", action="store_true", help="smoke mode: tiny data and a few steps")
    p.add_argument("--out", default="outputs/notebooks", help="folder for the executed copies")
    p.add_argument("--keep-going", action="store_true", help="run the remaining notebooks after a failure")
    a = p.parse_args(argv)
    runs = run_notebooks(a.notebooks or None, a.out, smoke=a.smoke, stop_on_error=not a.keep_going)
    return 0 if runs and all(r.ok for r in runs) else 1


def _datasets(argv: list[str]) -> int:
    for name in list_datasets():
        info = dataset_info(name)
        print(
            f"{name}  (splits: {', '.join(info.splits)}; classes: {info.default_label_space}; "
            f"root: ${info.env_var} or $FERNB_DATA_ROOT/{info.dirname})"
        )
        print("\n".join("    " + line for line in info.layout.strip("\n").splitlines()))
    return 0


def _models(argv: list[str]) -> int:
    print("\n".join(list_models()))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "notebooks":
        return _notebooks(rest)
    if cmd == "datasets":
        return _datasets(rest)
    if cmd == "models":
        return _models(rest)
    if cmd == "predict":
        return cli.guarded(predict_main, rest)
    if cmd == "export":
        return cli.export_main(rest)
    if cmd in ("train", "evaluate"):
        return int((cli.train_main if cmd == "train" else cli.evaluate_main)(rest) or 0)
    print(f"unknown command {cmd!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
