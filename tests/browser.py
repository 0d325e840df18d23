"""Drive a real JupyterLab in headless Chromium (Debian's ``/usr/bin/chromium``) through Playwright.

Used by ``test_browser.py``: :class:`LabServer` starts JupyterLab on 127.0.0.1 with a token in a folder of its own
(never the repository's notebooks: JupyterLab autosaves outputs into the files it opens), and :func:`open_lab`
opens a Chromium page on it. Nothing is downloaded: Playwright only drives the system browser.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = Path(os.environ.get("FERNB_CHROMIUM", "/usr/bin/chromium"))
# Without the background-networking flags Chromium keeps dialling Google hosts that this sandbox refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def missing_requirements() -> str | None:
    """Why a browser test cannot run here, or None when it can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found (Debian: apt-get install chromium; .ci/run installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if shutil.which("jupyter-lab", path=str(Path(sys.executable).parent)) is None:
        return "jupyter-lab is not installed beside this Python"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """A JupyterLab server on 127.0.0.1 serving ``root``; use as a context manager.

    Args:
        root: the folder JupyterLab serves (its notebooks may be modified by autosave).
        env: extra environment variables for the server and its kernels.
        log: file receiving the server's output.
    """

    def __init__(self, root: Path, env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.root, self.port, self.token = Path(root), _free_port(), secrets.token_hex(16)
        self.env = {**os.environ, **(env or {})}
        self.log = log or self.root / "jupyterlab.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lab_url(self, notebook: str) -> str:
        return f"{self.url}/lab/tree/{notebook}?token={self.token}&reset"

    def __enter__(self) -> LabServer:
        lab = Path(sys.executable).parent / "jupyter-lab"
        cmd = [
            str(lab),
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            f"--ServerApp.root_dir={self.root}",
            f"--IdentityProvider.token={self.token}",
            "--ServerApp.disable_check_xsrf=False",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--ServerApp.open_browser=False",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        self._log = open(self.log, "w")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}; see {self.log}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2) as r:
                    if r.status == 200:
                        return self
            time.sleep(0.5)
        self.__exit__(None, None, None)
        raise TimeoutError(f"JupyterLab did not answer on {self.url} within 90 s; see {self.log}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


@contextlib.contextmanager
def open_lab(server: LabServer, notebook: str, *, width: int = 1400, height: int = 1000) -> Iterator[object]:
    """A Playwright page with ``notebook`` open in JupyterLab (the kernel started)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(server.lab_url(notebook), wait_until="domcontentloaded", timeout=90_000)
            page.locator(".jp-Notebook").first.wait_for(timeout=90_000)
            accept_kernel_dialog(page)
            page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(timeout=90_000)
            yield page
        finally:
            browser.close()


@contextlib.contextmanager
def open_page(*, width: int = 1000, height: int = 800) -> Iterator[object]:
    """A blank Playwright page in headless Chromium (no server: for front-end code loaded into the page)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def accept_kernel_dialog(page: object, timeout_s: float = 10) -> None:
    """Accept JupyterLab's "Select Kernel" dialog (the notebook's own kernel is preselected) if it comes up."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    button = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept").first
    with contextlib.suppress(PlaywrightTimeout):
        button.wait_for(timeout=timeout_s * 1000)
        button.click()


def run_all_cells(page: object) -> None:
    """JupyterLab's menu Run > Run All Cells."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def wait_idle(page: object, timeout_s: float) -> None:
    """Wait until the kernel has been busy and is idle again, with no cell left queued."""
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-InputArea-prompt')].map(p => p.textContent);
            const busy = prompts.some(t => t.includes('*'));
            const ind = document.querySelector('.jp-Notebook-ExecutionIndicator');
            return !busy && ind && ind.getAttribute('data-status') === 'idle';
        }""",
        timeout=timeout_s * 1000,
        polling=500,
    )


def cell_errors(page: object) -> list[str]:
    """The text of every traceback shown in the notebook (errors render as stderr text in JupyterLab)."""
    texts = [
        e.inner_text()
        for e in page.locator(
            ".jp-OutputArea-output[data-mime-type*='stderr'], .jp-OutputArea-output[data-mime-type*='error']"
        ).all()
    ]
    return [t[:2000] for t in texts if "Traceback" in t]
