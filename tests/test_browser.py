"""End to end in a real browser: JupyterLab serves a notebook, headless Chromium opens it, "Run All Cells"
from the Run menu, and the page must show every code cell run by the "HSNet (hsnet)" kernel without an error
output, with tqdm's widget progress bars (ipywidgets) instead of text bars and the "IProgress not found"
warning.

Needs Debian's ``chromium`` (installed here when running as root, as in CI) and Playwright's Python package
(the ``dev`` extra; its own browser downloads are not used). Deselect locally with ``-m "not browser"``.
A failing test leaves a screenshot of the page in its pytest tmp dir. The JupyterLab and Chromium machinery is
shared with test_interactive_browser.py (jupyterlab_browser.py).
"""
from __future__ import annotations

import re

import nbformat
import pytest
from jupyterlab_browser import KERNEL_DISPLAY_NAME, error_outputs, run_all_cells, screenshot_on_failure
from papermill.iorw import load_notebook_node, write_ipynb
from papermill.parameterize import parameterize_notebook

from hsnetlib import suite
from hsnetlib.model import HSNet, HSNetConfig

pytestmark = pytest.mark.browser

NOTEBOOK = "02_evaluate.ipynb"  # quick with a given checkpoint, and shows progress bars (evaluation)


def test_notebook_runs_in_jupyterlab(page, jupyterlab, tmp_path):
    """NOTEBOOK as a user runs it, its run record written into tmp_path. out_dir, checkpoint and a small episode
    count are injected by papermill as a grid run does (a randomly initialised model: the browser, the kernel and
    the widgets are under test here, not the training or the scores, which nbval runs with the notebooks'
    defaults); every other parameter keeps its default."""
    _, _, served = jupyterlab
    checkpoint = HSNet(HSNetConfig(backbone="resnet50", weights=None)).save(tmp_path / "model.pt")
    notebook = parameterize_notebook(load_notebook_node(str(suite.notebook_path(NOTEBOOK))),
                                     {"checkpoint": str(checkpoint), "episodes": 8, "out_dir": str(tmp_path / "run")})
    write_ipynb(notebook, str(served / NOTEBOOK))
    with screenshot_on_failure(page, tmp_path / "page.png"):
        state, saved = run_all_cells(page, jupyterlab, NOTEBOOK)
        code = [cell for cell in saved.cells if cell.cell_type == "code"]
        assert len(code) == sum(cell.cell_type == "code" for cell in notebook.cells)
        errors = error_outputs(code)
        assert not errors, "error outputs:\n" + "\n".join(errors)
        assert all(cell.execution_count for cell in code), f"cells not run: {state['prompts']}"
        assert not any("IProgress not found" in text for text in state["outputs"])
        assert not any(re.search(r"\d+%\|", text) for text in state["stderr"]), "text progress bars, not widgets"
        assert state["finished_progress_bars"] > 0, "no finished widget progress bar"
    assert (tmp_path / "run" / suite.METRICS_FILE).is_file()


def test_an_error_is_seen(page, jupyterlab, tmp_path):
    """The checks above see an exception as an error (a warning is not one), and a run it stopped."""
    _, _, served = jupyterlab
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in (
        "import warnings\nwarnings.warn('only a warning')", "1 / 0", "print('not reached')")])
    notebook.metadata.update(kernelspec={"name": suite.KERNEL_NAME, "display_name": KERNEL_DISPLAY_NAME,
                                         "language": "python"}, language_info={"name": "python"})
    nbformat.write(notebook, served / "error.ipynb")
    with screenshot_on_failure(page, tmp_path / "page.png"):
        state, saved = run_all_cells(page, jupyterlab, "error.ipynb")
        assert error_outputs(saved.cells) == ["ZeroDivisionError: division by zero"]
        assert [cell.execution_count for cell in saved.cells] == [1, 2, None]  # the run stopped at the error
        assert state["prompts"] == ["[1]:", "[2]:", "[ ]:"]
