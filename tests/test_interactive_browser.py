"""notebooks/12_interactive.ipynb in a real browser: JupyterLab in Debian's Chromium (Playwright), Run All, a
brush stroke on support 1's canvas with mouse events until the prediction image changes, a click on the query
until the slice figure changes. Screenshots of every step are kept in the test's tmp dir (printed) when it fails;
the last one, the widget alone, is the README's docs/interactive.png.

Fast: 64 px inputs and an injected checkpoint (a randomly initialised model whose last decoder bias is set so
that about half of an episode's pixels are foreground, so that a new mask visibly changes the prediction; the
widgets and the browser are under test, not the training). The JupyterLab / Chromium machinery is shared with
test_browser.py (jupyterlab_browser.py).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from jupyterlab_browser import error_outputs, run_all_cells
from papermill.iorw import load_notebook_node, write_ipynb
from papermill.parameterize import parameterize_notebook

from hsnetlib import suite
from hsnetlib.model import HSNet, HSNetConfig
from hsnetlib.suite import notebook as suite_notebook

pytestmark = pytest.mark.browser

NOTEBOOK = "12_interactive.ipynb"
IMG_SIZE = 64
CHANGE_TIMEOUT_MS = 120_000

# A picture of an <img> element's pixels (a data URL), to tell a changed image from a re-sent one.
IMAGE_PIXELS_JS = """(selector) => {
  const img = document.querySelector(selector);
  if (!img || !img.complete || !img.naturalWidth) return null;
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  canvas.getContext('2d').drawImage(img, 0, 0);
  return canvas.toDataURL();
}"""
IMAGE_CHANGED_JS = "([selector, before]) => { const now = (%s)(selector); return now !== null && now !== before; }" % (
    IMAGE_PIXELS_JS)


def balanced_checkpoint(path: Path, img_size: int = IMG_SIZE) -> Path:
    """A random-weight model whose foreground / background logit margin has median 0 on test episode 0 of the
    synthetic benchmark (the notebook's first episode): a changed mask moves the decision boundary visibly."""
    torch.manual_seed(0)
    model = HSNet(HSNetConfig(backbone="resnet50", weights=None)).eval()
    item = suite_notebook.prepare_data("pascal", "data/synthetic", True).build(0, "test", 1, img_size)[0]
    with torch.no_grad():
        logits = model(item["query_img"][None], item["support_imgs"][:1], item["support_masks"][:1])
        model.hpn_learner.decoder2[-1].bias[1] -= (logits[:, 1] - logits[:, 0]).median()
    return model.save(path)


class Steps:
    """Screenshots of the page after each step, kept (and their folder printed) when the test fails."""

    def __init__(self, page, folder: Path):
        self.page, self.folder, self.taken = page, folder, []

    def shot(self, name: str, element=None) -> Path:
        """The page (or one element of it) as STEP_name.png."""
        path = self.folder / f"{len(self.taken) + 1:02d}_{name}.png"
        with contextlib.suppress(Exception):
            (element or self.page).screenshot(path=str(path))
            self.taken.append(path)
        return path

    @contextlib.contextmanager
    def recorded(self):
        try:
            yield self
        except BaseException:
            self.shot("failure")
            print(f"screenshots of every step: {self.folder}")
            raise


def prepare(served: Path, tmp_path: Path, **extra) -> None:
    notebook = parameterize_notebook(load_notebook_node(str(suite.notebook_path(NOTEBOOK))), {
        "checkpoint": str(balanced_checkpoint(tmp_path / "model.pt")), "img_size": IMG_SIZE,
        "out_dir": str(tmp_path / "run"), **extra})
    write_ipynb(notebook, str(served / NOTEBOOK))


def image_pixels(page, selector: str) -> str | None:
    return page.evaluate(IMAGE_PIXELS_JS, selector)


def wait_for_change(page, selector: str, before: str) -> None:
    page.wait_for_function(IMAGE_CHANGED_JS, arg=[selector, before], timeout=CHANGE_TIMEOUT_MS, polling=250)


def test_draw_a_mask_and_click_the_query(page, jupyterlab, tmp_path):
    _, _, served = jupyterlab
    prepare(served, tmp_path)
    page.set_viewport_size({"width": 1400, "height": 1500})  # the whole widget in view
    with Steps(page, tmp_path).recorded() as steps:
        _, saved = run_all_cells(page, jupyterlab, NOTEBOOK)
        errors = error_outputs(saved.cells)
        assert not errors, "error outputs:\n" + "\n".join(errors)
        assert all(cell.execution_count for cell in saved.cells if cell.cell_type == "code")
        steps.shot("run_all")
        prediction, slices = "img.hsnet-prediction", "img.hsnet-slices"
        before = image_pixels(page, prediction)
        assert before, "the prediction image is not shown"
        support = page.locator(".hsnet-support-0").first
        support.scroll_into_view_if_needed()
        box = support.bounding_box()
        page.mouse.move(box["x"] + 0.15 * box["width"], box["y"] + 0.85 * box["height"])
        page.mouse.down()
        for i in range(1, 11):  # a stroke across the support, bottom left to top right
            page.mouse.move(box["x"] + (0.15 + 0.07 * i) * box["width"], box["y"] + (0.85 - 0.07 * i) * box["height"])
        page.mouse.up()
        wait_for_change(page, prediction, before)
        steps.shot("stroke")
        slices_before = image_pixels(page, slices)
        query = page.locator(".hsnet-query").first
        query.scroll_into_view_if_needed()
        query.click(position={"x": 0.2 * query.bounding_box()["width"], "y": 0.3 * query.bounding_box()["height"]})
        wait_for_change(page, slices, slices_before)
        steps.shot("query_click")
        widget = page.locator(".jp-OutputArea-output", has=page.locator(".hsnet-query")).first
        steps.shot("widget", widget)  # the README's screenshot (docs/interactive.png)
