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

import contextlib
import csv
import errno
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
from ..errors import FernbError

__all__ = [
    "RunExistsError",
    "RunBusyError",
    "RunMissingError",
    "RunFileError",
    "RunWriteError",
    "RunLock",
    "RunDir",
    "atomic_write_text",
    "atomic_write_bytes",
    "atomic_write_many",
    "write_csv",
    "read_json",
    "environment_record",
    "git_commit",
    "epoch_tag",
    "now_iso",
]


class RunExistsError(FernbError, FileExistsError):
    """A run folder that already holds a run, while neither ``resume`` nor ``overwrite`` was asked for."""


class RunMissingError(FernbError, FileNotFoundError):
    """``resume`` of a run folder that holds no run (or no checkpoint to resume from)."""


class RunBusyError(FernbError):
    """Another process is writing the same run folder."""


class RunWriteError(FernbError, OSError):
    """A run file that could not be written (disk full, read-only folder, no permission); ``errno`` is the cause's.
    Nothing half-written is left: the file keeps its previous content."""

    def __init__(self, path: str | os.PathLike, cause: OSError) -> None:
        hints = {
            errno.ENOSPC: "free disk space (or point run.out_dir at another disk), then resume with run.resume=true",
            errno.EDQUOT: "free space within your disk quota, then resume with run.resume=true",
            errno.EROFS: "the folder is on a read-only file system; choose a writable run.out_dir",
            errno.EACCES: "you may not write there; fix the folder's permissions or choose another run.out_dir",
            errno.EPERM: "you may not write there; fix the folder's permissions or choose another run.out_dir",
        }
        what = cause.strerror or str(cause)
        hint = hints.get(cause.errno or -1, "check the disk and the folder, then try again")
        super().__init__(f"{path}: cannot write ({what}).\n  what to do: {hint}.")
        self.errno, self.strerror, self.filename = cause.errno, cause.strerror, str(path)

    def __str__(self) -> str:
        return str(self.args[0])


def _umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_temp(path: Path, data: bytes) -> str:
    """``data`` in a temporary file beside ``path`` (flushed to disk, mode 0666 less the umask); returns its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a run file is as readable as any other file
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def atomic_write_many(files: Mapping[str | os.PathLike, bytes]) -> None:
    """Write several files so that they change together: every temporary file is written first, and only when all
    of them are on disk are they renamed into place, so a full disk leaves every file as it was.

    Raises:
        RunWriteError: naming the file that could not be written (its ``errno`` is the cause's).
    """
    done: list[tuple[str, Path]] = []
    current: Path | None = None
    try:
        for p, data in files.items():
            current = Path(p)
            done.append((_write_temp(current, data), current))
        for tmp, path in done:
            current = path
            os.replace(tmp, path)
    except OSError as exc:
        for tmp, _ in done:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, RunWriteError):
            raise
        raise RunWriteError(current if current is not None else "(no file)", exc) from exc
    except BaseException:
        for tmp, _ in done:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace`` (mode 0666 less the
    umask, as ``open`` would give).

    Raises:
        RunWriteError: the file could not be written (disk full, read-only, no permission); it keeps its old content.
    """
    atomic_write_many({path: data})


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


def json_bytes(obj: Any) -> bytes:
    """Strict, indented JSON of ``obj`` (see :func:`_jsonable`) as UTF-8 bytes."""
    return (json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n").encode("utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in ``path``.

    Raises:
        RunFileError: the file is not valid JSON (truncated or edited), naming it.
    """
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunFileError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); the file was truncated "
            "or edited.\n  what to do: restore it from a backup, or start the run again with run.overwrite=true."
        ) from None


class RunFileError(FernbError, ValueError):
    """A run file that exists but cannot be parsed."""


class RunLock:
    """The one-writer lock of a run folder: ``<out_dir>/.<name>.lock``, held with ``fcntl.flock`` (released by the
    kernel when the process dies, so a crashed run leaves no stale lock) and holding the owner's pid and host.
    Where ``fcntl`` is missing, an ``O_EXCL`` lock file whose dead owner (same host, pid gone) marks it stale.

    Use as a context manager, or :meth:`acquire` / :meth:`release`.
    """

    def __init__(self, run_path: str | os.PathLike) -> None:
        run_path = Path(run_path)
        self.run_path = run_path
        self.path = run_path.parent / f".{run_path.name}.lock"
        self._fd: int | None = None

    def _owner(self) -> str:
        try:
            text = self.path.read_text(encoding="utf-8").strip()
        except OSError:
            return "another process"
        return text or "another process"

    def _busy(self) -> RunBusyError:
        return RunBusyError(
            f"{self.run_path} is being written by {self._owner()} (lock {self.path}).\n"
            "  what to do: wait until that run ends, or choose another run.name / run.out_dir."
        )

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunBusyError` at once (never waits)."""
        if self._fd is not None:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunWriteError(self.path.parent, exc) from exc
        me = f"pid {os.getpid()} on {platform.node()} since {now_iso()}"
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            self._fd = self._acquire_excl(me)
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise RunWriteError(self.path, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise self._busy() from None
        os.ftruncate(fd, 0)
        os.write(fd, me.encode())
        self._fd = fd
        return self

    def _acquire_excl(self, me: str) -> int:  # pragma: no cover - not POSIX
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                owner = self._owner().split()
                if len(owner) > 3 and owner[0] == "pid" and owner[3] == platform.node() and not _alive(int(owner[1])):
                    self.path.unlink(missing_ok=True)  # stale: its owner is gone
                    continue
                raise self._busy() from None
            os.write(fd, me.encode())
            return fd
        raise self._busy()

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            os.close(fd)
            self.path.unlink(missing_ok=True)
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _alive(pid: int) -> bool:  # pragma: no cover - not POSIX
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


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
    def lock(self) -> RunLock:
        """The folder's one-writer lock (not yet taken)."""
        return RunLock(self.path)

    def prepare(self, *, resume: bool, overwrite: bool) -> str:
        """Decide what a run does with the folder; returns ``"new"``, ``"resume"`` or ``"overwrite"``. Nothing is
        written or deleted: an old run is only set aside by :meth:`set_aside` once the new one has started.

        Raises:
            RunExistsError: the folder holds a run and neither ``resume`` nor ``overwrite`` is set.
            RunMissingError: ``resume`` without a run to resume.
        """
        if resume and overwrite:
            raise RunExistsError(f"{self.path}: run.resume and run.overwrite exclude each other; choose one")
        if self.exists():
            if resume:
                return "resume"
            if overwrite:
                return "overwrite"
            raise RunExistsError(
                f"{self.path} already holds a run (config.json / run.json).\n"
                "  what to do: pass run.resume=true to continue it, run.overwrite=true to replace it, "
                "or choose another run.name / run.out_dir."
            )
        if resume:
            raise RunMissingError(
                f"run.resume=true but {self.path} holds no run to resume; drop run.resume to start it"
            )
        if self.path.exists() and not self.path.is_dir():
            raise RunExistsError(f"{self.path} is a file, not a run folder; choose another run.name / run.out_dir")
        return "new"

    def set_aside(self) -> Path | None:
        """Move the old run out of the way (``<out_dir>/.<name>.replaced-<pid>``) and return where it went, so that
        :meth:`restore_aside` can put it back if the new run fails before its first epoch ends."""
        if not self.path.exists():
            return None
        aside = self.path.with_name(f".{self.path.name}.replaced-{os.getpid()}")
        if aside.exists():
            shutil.rmtree(aside)
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            raise RunWriteError(self.path, exc) from exc
        return aside

    def restore_aside(self, aside: Path) -> None:
        """Put the run set aside back in place of the new, failed one."""
        if self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)
        os.replace(aside, self.path)

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

    def write_progress(self, rows: Sequence[Mapping[str, Any]], **fields: Any) -> dict[str, Any]:
        """Rewrite ``metrics.csv`` and update ``run.json`` with ``fields`` together: both or neither (a full disk
        leaves both as they were, so they never disagree)."""
        rec = self.read_record()
        rec.update(fields)
        atomic_write_many({self.metrics_path: _csv_bytes(rows), self.record_path: json_bytes(rec)})
        return rec

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
    atomic_write_bytes(path, _csv_bytes(rows, columns))


def _csv_bytes(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> bytes:
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
    return buf.getvalue().encode("utf-8")


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
