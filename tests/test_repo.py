"""The repository's promises: set-up files agree, notebooks are committed clean, CI runs the README's command."""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import tomllib
from pathlib import Path

import pytest
import torch
import yaml
from conftest import torch_device

from fernb.notebooks import list_notebooks

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _req_name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_installs_the_project_and_nothing_else():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    deps = env["dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1
    assert pip_sections[0] == ["-e .[dev]"], "environment.yml must install the project with its dev extra only"
    assert "dev" in _pyproject()["project"]["optional-dependencies"]
    assert "pip" in conda
    pins = [d for d in conda if d.startswith("python")]
    assert len(pins) == 1
    version = pins[0].split("=")[-1]
    minimum = re.search(r">=\s*(\d+\.\d+)", _pyproject()["project"]["requires-python"]).group(1)
    assert tuple(map(int, version.split("."))) >= tuple(map(int, minimum.split(".")))
    declared = {_req_name(r) for r in _pyproject()["project"]["dependencies"]}
    doubled = {_req_name(d) for d in conda} & declared
    assert not doubled, f"listed in both environment.yml and pyproject.toml: {doubled}"


def test_dependencies_keep_opencv_headless():
    deps = [_req_name(r) for r in _pyproject()["project"]["dependencies"]]
    assert "opencv-python" not in deps and "opencv-contrib-python" not in deps
    assert "opencv-python-headless" in deps
    installed = {d.metadata["Name"].lower() for d in md.distributions()}
    assert "opencv-python" not in installed, "non-headless opencv-python got into the environment"
    assert "opencv-contrib-python" not in installed


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    head = "\n".join(readme.splitlines()[:30])
    assert "make run" in head and "make test" in head, "the README's first lines must give the two commands"
    ci = (REPO / ".ci" / "run").read_text()
    commands = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.strip().startswith(("#", "set ", "cd "))]
    assert commands == ["make browser", "make lint", "make typecheck", "FERNB_REQUIRE_BROWSER=1 make test"]
    assert all(cmd in readme for cmd in ("make browser", "make lint", "make typecheck"))


def test_make_test_runs_pytest_and_nothing_else():
    make = (REPO / "Makefile").read_text()
    recipe = re.search(r"(?m)^test:.*\n((?:\t.*\n)*)", make).group(1).splitlines()
    assert recipe == ["\t$(PY) -m pytest"], "warm-ups belong in session fixtures (tests/conftest.py), not in make test"


@pytest.mark.parametrize("nb", list_notebooks(), ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(nb: Path):
    cells = json.loads(nb.read_text())["cells"]
    dirty = [
        i for i, c in enumerate(cells) if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))
    ]
    assert not dirty, f"{nb.name}: cells {dirty} have outputs; strip them (nbstripout {nb})"


@pytest.mark.parametrize("nb", list_notebooks(), ids=lambda p: p.name)
def test_notebook_has_a_parameters_cell_with_smoke(nb: Path):
    import papermill as pm

    params = pm.inspect_notebook(str(nb))
    assert "SMOKE" in params, f"{nb.name}: the cell tagged 'parameters' must define SMOKE"
    # papermill skips (with a warning) an assignment line holding a second "=", e.g. in its comment
    missing = sorted(set(_parameters(nb)) - set(params))
    assert not missing, f"{nb.name}: papermill cannot read {missing}; keep '=' out of those lines' comments"


def test_there_are_notebooks():
    assert list_notebooks(), "notebooks/ holds no NN_*.ipynb"


def test_code_passes_ruff():
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    res = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "fernb", "tests", "benchmarks"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-1000:]


def test_device_option_names_a_device_this_machine_has():
    assert torch_device("cpu") == torch.device("cpu")
    with pytest.raises(pytest.UsageError, match="not a torch device"):
        torch_device("gpu0")
    with pytest.raises(pytest.UsageError, match="cpu or cuda only"):
        torch_device("meta")
    if torch.cuda.is_available():
        with pytest.raises(pytest.UsageError, match="CUDA device"):
            torch_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(pytest.UsageError, match="CUDA is not available"):
            torch_device("cuda")


def _parameters(nb: Path) -> dict:
    cell = next(c for c in json.loads(nb.read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))
    values: dict = {}
    for line in "".join(cell["source"]).splitlines():
        m = re.match(r"^([A-Z_]+)\s*=\s*(.+?)\s*(#.*)?$", line)
        if m:
            values[m.group(1)] = m.group(2)
    return values


def test_notebooks_share_the_training_length_so_later_ones_reuse_the_runs():
    """A notebook whose BUDGET_S / RECIPE / PRESET differ from 02-03's gives another config for the same run name, so it
    retrains (and replaces) their runs instead of reading them."""
    shared = ("BUDGET_S", "RECIPE", "PRESET", "EPOCHS", "IMG_SIZE", "BATCH_SIZE", "DATASET")
    seen: dict[str, dict[str, str]] = {}
    for nb in list_notebooks():
        if nb.name.startswith("01"):  # data only: it trains nothing
            continue
        params = _parameters(nb)
        for name in shared:
            if name in params:
                seen.setdefault(name, {})[nb.name] = params[name]
    for name, values in seen.items():
        assert len(set(values.values())) == 1, f"{name} differs between notebooks: {values}"
