"""Shared fixtures. Tests that need ``../shared`` (real data, fidelity fixtures) skip with a reason where it is
absent. ``pytest --device cuda`` runs the model, loss and training-step tests that take the ``device`` fixture on a
GPU (default ``cpu``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: see fernb/__init__.py

import time  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import toys  # noqa: E402

from fernb.data.synthetic import SyntheticConfig, cache_path, get_synthetic  # noqa: E402
from fernb.explore.embeddings import warm_numba_cache  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FERNB_SHARED", REPO.parent / "shared"))
DEVICE = pytest.StashKey[torch.device]()
WARM_UPS: dict[str, str] = {}  # what the warm-up fixtures did and how long it took, for the terminal summary


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default="cpu",
        help="torch device of the model, loss and training-step tests: cpu (default), cuda or cuda:N",
    )


def torch_device(name: str) -> torch.device:
    """The ``--device`` value as a ``torch.device``.

    Raises:
        pytest.UsageError: not a device name, not cpu or cuda, or CUDA (that GPU) is not available here.
    """
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise pytest.UsageError(f"--device {name!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise pytest.UsageError(f"--device {name!r}: the tests run on cpu or cuda only")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(
            f"--device {name!r}: CUDA is not available (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda or 'none'}); leave --device out to test on the CPU"
        )
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise pytest.UsageError(f"--device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def pytest_configure(config: pytest.Config) -> None:
    config.stash[DEVICE] = torch_device(config.getoption("--device"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked ``shared`` skips where ``../shared`` is absent, whether or not it takes a fixture that needs it."""
    if item.get_closest_marker("shared") is not None:
        _need(SHARED, "the shared folder")


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (it lives in ../shared beside the checkout; CI has it)")
    return path


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config) -> torch.device:
    """The device of ``--device`` (default cpu), for tests that build and run models, losses and train steps."""
    return pytestconfig.stash[DEVICE]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _need(SHARED, "the shared folder")


@pytest.fixture(scope="session")
def ferplus_root() -> Path:
    return _need(SHARED / "data" / "ferplus", "FER+ data")


@pytest.fixture(scope="session")
def ckplus_root() -> Path:
    return _need(SHARED / "data" / "ckplus48", "CK+48 data")


@pytest.fixture(scope="session")
def fidelity_dir() -> Path:
    return _need(SHARED / "fidelity", "fidelity fixtures")


@pytest.fixture(scope="session")
def specs_dir() -> Path:
    return _need(SHARED / "specs", "specifications")


@pytest.fixture(autouse=True, scope="session")
def synthetic_cache() -> None:
    """The default synthetic data (what smoke runs and notebooks train on) in the persistent cache before the first
    test, so that no test or notebook times its generation (a few seconds in a fresh checkout)."""
    cfg = SyntheticConfig()
    made = not cache_path(cfg).is_file()
    t0 = time.perf_counter()
    get_synthetic(cfg)
    WARM_UPS[f"synthetic faces (n={cfg.n}, {cfg.size} px)"] = (
        f"{'generated' if made else 'loaded from the cache'} in {time.perf_counter() - t0:.1f} s"
    )


@pytest.fixture(scope="session")
def numba_cache() -> None:
    """UMAP's numba kernels compiled into (or loaded from) the persistent numba cache, once, before the tests that run
    UMAP here or in a notebook kernel: so that no timed test or notebook pays the compile (about 40 s in a fresh
    checkout)."""
    WARM_UPS["UMAP kernels"] = f"compiled or loaded from the numba cache in {warm_numba_cache():.1f} s"


@pytest.fixture(autouse=True, scope="session")
def _toys() -> Iterator[None]:
    """The engine's toy model and loss (``toys.py``) stay registered for the whole session."""
    with toys.registered():
        yield


@pytest.fixture(autouse=True, scope="session")
def _threads() -> None:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    """Print what the warm-up fixtures did, the notebook suite's wall time (the smoke suite must finish in under 5
    minutes on 2 cores), and what the real-data and browser tests measured."""
    import sys

    if WARM_UPS:
        terminalreporter.section("warm-ups (session fixtures, outside every test's time)")
        for name, what in WARM_UPS.items():
            terminalreporter.write_line(f"{name:40s} {what}")
    module = sys.modules.get("test_notebooks")
    TIMINGS = getattr(module, "TIMINGS", None)
    if TIMINGS:
        terminalreporter.section("notebook timings (smoke mode)")
        for name, sec in TIMINGS.items():
            terminalreporter.write_line(f"{name:40s} {sec:7.1f} s")
        smoke = [v for k, v in TIMINGS.items() if k.endswith(".ipynb")]
        if smoke:
            terminalreporter.write_line(f"smoke notebook suite total: {sum(smoke):.1f} s (target < 300 s)")
    for name, title in (("test_realdata", "real-data smoke runs (FER+ valid)"), ("test_browser", "browser test")):
        lines = getattr(sys.modules.get(name), "REPORT", None)
        if lines:
            terminalreporter.section(title)
            for line in lines:
                terminalreporter.write_line(line)
