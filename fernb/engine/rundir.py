"""The run directory: config, per-epoch metrics, checkpoints and the run record, all written atomically.

Layout::

    <out_dir>/<name>/
        config.json  config.yaml     the TrainConfig
        metrics.csv                  one row per epoch
        run.json                     the run record (seed, versions, git commit, data fingerprints, timings, best)
        checkpoints/best/  checkpoints/last/   (see fernb.engine.checkpoint)
        eval/<dataset>-<split>.json  written by fernb.engine.evaluate
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__

__all__ = [
    "RunExistsError",
    "RunDir",
    "atomic_write_text",
    "atomic_write_bytes",
    "write_csv",
    "read_json",
    "environment_record",
    "git_commit",
    "epoch_tag",
    "now_iso",
]


class RunExistsError(FileExistsError):
    """A run folder that already holds a run, while neither ``resume`` nor ``overwrite`` was asked for."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(obj: Any) -> Any:
    """Strict JSON: non-finite floats become ``"nan"``, ``"inf"``, ``"-inf"``; numpy scalars become Python numbers."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return _jsonable(obj.item())
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def git_commit(path: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the git checkout holding ``path`` (fernb's own by default), or None."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        st = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return {"commit": sha.stdout.strip(), "dirty": bool(st.stdout.strip()) if st.returncode == 0 else None}
    except (OSError, subprocess.SubprocessError):
        return None


def environment_record() -> dict[str, Any]:
    """Versions of python, torch, numpy and fernb, the platform and the git commit."""
    rec: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "fernb": __version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "argv": list(sys.argv),
    }
    try:
        import torchvision

        rec["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover - torchvision is a dependency
        pass
    if torch.cuda.is_available():
        rec["cuda"] = torch.version.cuda
        rec["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    rec["git"] = git_commit()
    return rec


class RunDir:
    """One run's folder. Only the main process (rank 0) writes through it.

    Args:
        path: the folder.
    """

    CONFIG = "config.json"
    CONFIG_YAML = "config.yaml"
    METRICS = "metrics.csv"
    RECORD = "run.json"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- paths --------------------------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def record_path(self) -> Path:
        return self.path / self.RECORD

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint(self, tag: str | int) -> Path:
        """The folder of checkpoint ``tag``: ``"best"``, ``"last"``, ``"epoch-003"`` or the epoch number ``3``."""
        return self.checkpoint_dir / (epoch_tag(tag) if isinstance(tag, int) else tag)

    def checkpoints(self) -> list[str]:
        """The complete checkpoints of the run: the epoch checkpoints in order, then ``best`` and ``last``."""
        if not self.checkpoint_dir.is_dir():
            return []
        have = {p.name for p in self.checkpoint_dir.iterdir() if (p / "state.json").is_file()}
        return sorted(t for t in have if t.startswith("epoch-")) + [t for t in ("best", "last") if t in have]

    def epoch_checkpoints(self) -> list[int]:
        """Epoch numbers (1-based) with a kept checkpoint (``run.keep_epochs``)."""
        return [int(t.split("-")[1]) for t in self.checkpoints() if t.startswith("epoch-")]

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    def exists(self) -> bool:
        """True when the folder already holds a run (a config or a run record)."""
        return self.config_path.exists() or self.record_path.exists()

    # -- lifecycle ----------------------------------------------------------------------------------------------------
    def prepare(self, *, resume: bool, overwrite: bool) -> str:
        """Create the folder; returns ``"new"``, ``"resume"`` or ``"overwrite"``.

        Raises:
            RunExistsError: the folder holds a run and neither ``resume`` nor ``overwrite`` is set.
            FileNotFoundError: ``resume`` without a run (or without a last checkpoint) to resume.
        """
        if resume and overwrite:
            raise ValueError("run.resume and run.overwrite exclude each other; choose one")
        if self.exists():
            if resume:
                return "resume"
            if overwrite:
                shutil.rmtree(self.path)
                self.path.mkdir(parents=True)
                return "overwrite"
            raise RunExistsError(
                f"{self.path} already holds a run (config.json / run.json).\n"
                "  what to do: pass run.resume=true to continue it, run.overwrite=true to replace it, "
                "or choose another run.name / run.out_dir."
            )
        if resume:
            raise FileNotFoundError(
                f"run.resume=true but {self.path} holds no run to resume; drop run.resume to start it"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        return "new"

    # -- metrics CSV --------------------------------------------------------------------------------------------------
    def write_metrics(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Rewrite ``metrics.csv`` from all epoch rows (atomic; columns are the union, in first-seen order)."""
        write_csv(self.metrics_path, rows)

    def read_metrics(self) -> list[dict[str, Any]]:
        """The rows of ``metrics.csv`` with numbers parsed."""
        if not self.metrics_path.exists():
            return []
        with open(self.metrics_path, newline="", encoding="utf-8") as fh:
            return [{k: _parse_csv(v) for k, v in row.items()} for row in csv.DictReader(fh)]

    # -- run record ---------------------------------------------------------------------------------------------------
    def read_record(self) -> dict[str, Any]:
        return read_json(self.record_path) if self.record_path.exists() else {}

    def write_record(self, record: Mapping[str, Any]) -> None:
        write_json(self.record_path, record)

    def update_record(self, **fields: Any) -> dict[str, Any]:
        rec = self.read_record()
        rec.update(fields)
        self.write_record(rec)
        return rec


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Write ``rows`` as a CSV file atomically: floats in full precision (``repr``), None as an empty cell.

    Args:
        columns: the columns in order; None: the union of the rows' keys, in first-seen order.
    """
    cols: list[str] = list(columns) if columns is not None else []
    if columns is None:
        for r in rows:
            for k in r:
                if k not in cols:
                    cols.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_value(r.get(k)) for k in cols})
    atomic_write_text(path, buf.getvalue())


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return v


def _parse_csv(v: str | None) -> Any:
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def epoch_tag(epoch: int) -> str:
    """The checkpoint tag of 1-based epoch ``epoch``: ``epoch-003``."""
    return f"epoch-{int(epoch):03d}"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
