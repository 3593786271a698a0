"""JupyterLab in headless Chromium, for the browser tests (test_browser.py, test_interactive_browser.py): a
JupyterLab server of its own (fixture ``jupyterlab``), Debian's Chromium driven by Playwright (``browser``), a
fresh tab (``page``), Run All Cells (:func:`run_all_cells`), and screenshots of a failure
(:func:`screenshot_on_failure`). The fixtures are the session's, through conftest.py: one server and one
browser serve every browser test (one worker runs them, the "browser" group); the tests import the helpers.

Needs Debian's ``chromium`` (installed here when running as root, as in CI) and Playwright's Python package
(the ``dev`` extra; its own browser downloads are not used).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from conftest import stop_process
from hsnetlib import suite

KERNEL_DISPLAY_NAME = "HSNet (hsnet)"
CHROMIUM = Path("/usr/bin/chromium")
SERVER_START_TIMEOUT_S = 60
RUN_TIMEOUT_S = 600  # Run All Cells of a test notebook on 2 shared CPU cores

# The notebook's state as a user sees it, read from the DOM (JupyterLab 4 keeps every cell in it).
NOTEBOOK_STATE_JS = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const texts = sel => [...panel.querySelectorAll(sel)].map(e => e.innerText);
  const indicator = panel.querySelector('.jp-Notebook-ExecutionIndicator');
  return {
    prompts: [...panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.innerText.trim()),
    stderr: texts('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'),
    outputs: texts('.jp-OutputArea-output'),
    finished_progress_bars: panel.querySelectorAll('.widget-hprogress .progress-bar-success').length,
    kernel_name: (panel.querySelector('.jp-KernelName') || {}).innerText,
    kernel_status: indicator ? indicator.dataset.status : null,
    kernel_status_bar: (document.querySelector('.jp-StatusBar-TextItem[title^="Change kernel"]') || {}).innerText,
    dialogs: [...document.querySelectorAll('.jp-Dialog')].map(e => e.innerText),
  };
}"""

# The notebook's kernel has started ("<kernel> | Idle" in the status bar), or a dialog asks for one.
KERNEL_READY_JS = """() => {
  const state = (%s)();
  return state && (state.dialogs.length > 0 || / \\| Idle$/.test(state.kernel_status_bar || ''));
}""" % NOTEBOOK_STATE_JS

# Run All Cells has finished (or stopped at an error): nothing queued or running, kernel idle.
RUN_FINISHED_JS = """() => {
  const state = (%s)();
  if (!state) return false;
  if (state.dialogs.length) return true;  // a dialog blocks the run: report it instead of waiting
  return state.kernel_status === 'idle' && !state.prompts.some(p => p.includes('*'))
         && state.prompts.some(p => /\\d/.test(p));
}""" % NOTEBOOK_STATE_JS


def _unavailable(reason: str) -> None:
    """Skip locally; in CI (CI=true) a missing browser is a failure, never a silent skip."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def chromium() -> Path:
    """Debian's chromium, installed with apt-get when running as root (a fresh CI machine)."""
    if not CHROMIUM.exists() and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run("apt-get update && apt-get install -y chromium",
                       shell=True, check=True, env=env, stdout=subprocess.DEVNULL)
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} missing: install Debian's chromium package (apt-get install chromium)")
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, token: str, path: str, method: str = "GET"):
    request = urllib.request.Request(f"{base}{path}", method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read()
    return json.loads(body) if body else None


@pytest.fixture(scope="session")
def jupyterlab(tmp_path_factory):
    """JupyterLab on a free local port with a token, serving a temp folder, with its own config, data,
    runtime, settings and workspace dirs (the user's do not interfere) and this checkout's hsnetlib on the
    kernel's path. Yields (base URL, token, served folder); always shuts its kernels and itself down."""
    home = tmp_path_factory.mktemp("jupyterlab")
    served = home / "notebooks"
    served.mkdir()
    settings = home / "settings"
    # no "get notified about Jupyter news?" toast over the page
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    runtime = Path(tempfile.mkdtemp(prefix="jl-"))  # short: the kernels' IPC socket paths must fit in 107 bytes
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(home / "data"),
               JUPYTER_RUNTIME_DIR=str(runtime), JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(suite.project_root()), os.environ.get("PYTHONPATH")])))
    port, token = _free_port(), secrets.token_hex(16)
    base = f"http://127.0.0.1:{port}"
    log = (home / "jupyterlab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={served}",
         "--KernelManager.transport=ipc"],  # no kernel port to race the tests' other kernels for
        cwd=served, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            with contextlib.suppress(OSError):
                _api(base, token, "/api/status")
                break
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start (exit code {server.poll()}); log: {home / 'jupyterlab.log'}")
            time.sleep(0.2)
        yield base, token, served
    finally:
        with contextlib.suppress(OSError):
            for kernel in _api(base, token, "/api/kernels"):
                _api(base, token, f"/api/kernels/{kernel['id']}", method="DELETE")
        stop_process(server, timeout=20)
        log.close()
        shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium driven by Playwright."""
    executable = chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright missing: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable), headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def screenshot_on_failure(page, path: Path):
    """On any failure inside, save what the page shows, scrolled to the last cell run (where a run stopped)."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            page.locator(".jp-NotebookPanel .jp-CodeCell", has=page.locator(".jp-InputPrompt", has_text=re.compile(
                r"\[[\d*]+\]"))).last.scroll_into_view_if_needed(timeout=2000)
            page.screenshot(path=str(path))
            print(f"screenshot of the page: {path}")
        raise


@pytest.fixture
def page(browser, jupyterlab):
    """A fresh browser tab; afterwards the notebooks it opened are closed on the server (kernels shut down)."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    yield page
    page.close()
    base, token, _ = jupyterlab
    for session in _api(base, token, "/api/sessions"):
        _api(base, token, f"/api/sessions/{session['id']}", method="DELETE")


def run_all_cells(page, jupyterlab, name: str) -> tuple[dict, nbformat.NotebookNode]:
    """Open notebook `name` of the served folder, wait for its kernel, Run > Run All Cells, wait until the
    run is over, save it: the notebook's state as read from the page, and the saved notebook."""
    base, token, _ = jupyterlab
    # a workspace of its own: JupyterLab would otherwise reopen the notebooks of earlier tabs
    page.goto(f"{base}/lab/workspaces/{secrets.token_hex(8)}/tree/{name}?token={token}")
    page.wait_for_function(KERNEL_READY_JS, timeout=SERVER_START_TIMEOUT_S * 1000, polling=250)
    state = page.evaluate(NOTEBOOK_STATE_JS)
    assert not state["dialogs"], f"a dialog instead of the notebook's kernel: {state['dialogs']}"
    assert state["kernel_status_bar"] == f"{KERNEL_DISPLAY_NAME} | Idle"
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_function(RUN_FINISHED_JS, timeout=RUN_TIMEOUT_S * 1000, polling=500)
    state = page.evaluate(NOTEBOOK_STATE_JS)
    assert not state["dialogs"], f"a dialog blocks the notebook: {state['dialogs']}"
    assert state["kernel_name"] == KERNEL_DISPLAY_NAME  # the notebook toolbar's
    page.keyboard.press("Control+S")  # save, to read the outputs' types (the page draws errors as stderr)
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current:not(.jp-mod-dirty)").wait_for(timeout=10_000)
    saved = nbformat.read(jupyterlab[2] / name, as_version=4)
    assert saved.metadata.kernelspec.name == suite.KERNEL_NAME
    return state, saved


def error_outputs(cells) -> list[str]:
    """'<ename>: <evalue>' of every error output of `cells`."""
    return [f"{out.ename}: {out.evalue}" for cell in cells for out in cell.get("outputs", [])
            if out.output_type == "error"]
