"""The notebooks: their parameters cells (what papermill and the grids rely on), stripped outputs, and
one notebook run through papermill with injected parameters, checked through its run record."""
from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import nbformat
import papermill
import pytest

from hsnetlib import suite

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_the_suite_has_its_notebooks():
    names = {p.name for p in NOTEBOOKS}
    assert {"01_train.ipynb", "02_evaluate.ipynb", "03_ablation_hypercorrelation.ipynb", "04_ablation_pyramid.ipynb",
            "05_ablation_kernel.ipynb", "06_ablation_block_layers.ipynb", "07_ablation_finetune.ipynb",
            "08_no_support_masking.ipynb", "09_visualize_correlation.ipynb", "10_visualize_predictions.ipynb",
            "11_results.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_is_typed_commented_and_fully_parsed(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == suite.KERNEL_NAME
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell must be tagged 'parameters'"
    assert all("parameters" not in c.metadata.get("tags", []) for c in code[1:])
    tree = ast.parse(code[0].source)
    assert all(isinstance(node, ast.AnnAssign) for node in tree.body), "only annotated assignments (name: type = value)"
    assert all(isinstance(node.value, ast.Constant | ast.List) for node in tree.body), "literal values only"
    lines = code[0].source.splitlines()
    assert all("  # " in line for line in lines), "every parameter has a comment"
    declared = papermill.inspect_notebook(str(path))  # what papermill (and the grids) can inject
    assert list(declared) == [node.target.id for node in tree.body]
    assert "out_dir" in declared
    # committed without outputs
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)


def test_evaluate_notebook_with_injected_parameters(tmp_path):
    out_dir = tmp_path / "run"
    parameters = {"data_root": str(tmp_path / "data"), "fold": 1, "img_size": 64, "shots": [1, 2],
                  "eval_episodes": 4, "train_epochs": 1, "train_episodes": 4, "device": "cpu", "out_dir": str(out_dir)}
    papermill.execute_notebook(str(suite.notebook_path("02_evaluate.ipynb")), str(tmp_path / "executed.ipynb"),
                               parameters=parameters, kernel_name=suite.KERNEL_NAME, cwd=str(suite.project_root()),
                               progress_bar=False)
    params = json.loads((out_dir / "params.json").read_text())
    assert params["notebook"] == "02_evaluate.ipynb"
    assert {k: params["parameters"][k] for k in parameters} == parameters
    assert params["parameters"]["baselines"] is True  # a default the grid did not override

    record = json.loads((out_dir / "metrics.json").read_text())
    assert record["parameters"] == params["parameters"] and record["seed"] == 0
    assert {"code_version", "torch", "torchvision", "device"} <= set(record["provenance"])
    checkpoint = Path(record["checkpoint"]["path"])
    assert checkpoint == out_dir / "train" / "best.pt"
    assert record["checkpoint"]["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    evaluations = record["evaluations"]
    assert [(e["nshot"], e["fold"], e["episodes"], e["dataset"], e["img_size"]) for e in evaluations] == [
        (1, 1, 4, "synthetic-pascal", 64), (2, 1, 4, "synthetic-pascal", 64)]
    for e in evaluations:
        assert 0 <= e["miou"] <= 100 and e["ci95"][0] <= e["ci95"][1]
        assert e["baselines"]["all_background"]["miou"] == 0  # never any foreground
        assert e["baselines"]["all_foreground"]["miou"] > 0
        assert e["model"]["backbone"] == "resnet50" and e["model"]["weights"] is None
    assert set(record["summary"]) == {"1shot_miou", "2shot_miou", "1shot_margin_over_baselines",
                                      "2shot_margin_over_baselines"}
    assert (out_dir / "eval_2shot" / "per_class.csv").is_file()
