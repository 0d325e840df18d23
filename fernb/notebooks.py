"""Run the numbered notebooks top to bottom with papermill (the main job, and CI's notebook tests)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["NOTEBOOK_DIR", "NotebookRun", "list_notebooks", "run_notebook", "run_notebooks"]

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"


@dataclass
class NotebookRun:
    """The outcome of one executed notebook."""

    notebook: Path
    output: Path
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def list_notebooks(folder: str | Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in order."""
    return sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def run_notebook(
    notebook: str | Path,
    out_dir: str | Path,
    *,
    smoke: bool = False,
    parameters: Mapping[str, Any] | None = None,
    timeout: int = 1800,
    progress: bool = False,
) -> NotebookRun:
    """Execute one notebook with papermill, writing the executed copy to ``out_dir``.

    ``SMOKE`` is injected into the parameters cell; the working directory is the notebook's folder so that relative
    paths behave as in JupyterLab.
    """
    import papermill as pm

    nb = Path(notebook).resolve()
    out = Path(out_dir).resolve() / nb.name
    out.parent.mkdir(parents=True, exist_ok=True)
    params = {"SMOKE": bool(smoke), **dict(parameters or {})}
    env_before = os.environ.get("FERNB_SMOKE")
    os.environ["FERNB_SMOKE"] = "1" if smoke else "0"
    t0 = time.perf_counter()
    error = None
    try:
        pm.execute_notebook(str(nb), str(out), parameters=params, kernel_name="python3", cwd=str(nb.parent),
                            execution_timeout=timeout, progress_bar=progress, log_output=False)
    except pm.PapermillExecutionError as exc:
        error = f"{exc.ename}: {exc.evalue} (cell {exc.exec_count})"
    finally:
        if env_before is None:
            os.environ.pop("FERNB_SMOKE", None)
        else:
            os.environ["FERNB_SMOKE"] = env_before
    return NotebookRun(nb, out, time.perf_counter() - t0, error)


def run_notebooks(
    notebooks: Iterable[str | Path] | None = None,
    out_dir: str | Path = "outputs/notebooks",
    *,
    smoke: bool = False,
    parameters: Mapping[str, Any] | None = None,
    stop_on_error: bool = True,
) -> list[NotebookRun]:
    """Execute notebooks in order (all numbered ones by default), printing one line each."""
    runs: list[NotebookRun] = []
    for nb in list(notebooks) if notebooks is not None else list_notebooks():
        run = run_notebook(nb, out_dir, smoke=smoke, parameters=parameters)
        runs.append(run)
        status = "ok" if run.ok else f"FAILED: {run.error}"
        print(f"{Path(nb).name:40s} {run.seconds:7.1f} s  {status}  -> {run.output}", flush=True)
        if not run.ok and stop_on_error:
            break
    total = sum(r.seconds for r in runs)
    print(f"{len(runs)} notebook(s) in {total:.1f} s ({'smoke' if smoke else 'full'} mode)", flush=True)
    return runs
