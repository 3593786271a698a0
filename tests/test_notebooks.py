"""The notebooks: their parameters cells (what papermill and the grids rely on), stripped outputs, the small
model they share, and one ablation notebook run through papermill with injected parameters (finished trainings),
checked through its run record."""
from __future__ import annotations

import ast
import hashlib
import json
import re
from pathlib import Path

import nbformat
import papermill
import pytest

from hsnetlib import suite
from hsnetlib.suite import notebook

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
    assert all(isinstance(node.value, ast.Constant | ast.List | ast.Dict) for node in tree.body), "literal values only"
    lines = code[0].source.splitlines()
    assert all("  # " in line for line in lines), "every parameter has a comment"
    declared = papermill.inspect_notebook(str(path))  # what papermill (and the grids) can inject
    assert list(declared) == [node.target.id for node in tree.body]
    assert "out_dir" in declared
    # committed without outputs
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)


def test_backbone_parameters_name_the_registered_backbones():
    """The registry is the source of truth (the check cells validate a backbone through HSNetConfig's choices,
    hsnetlib.backbones.list_backbones); every `backbone` parameter's comment lists exactly its names, in order,
    so registering a backbone fails here until the comments name it."""
    from hsnetlib.backbones import list_backbones
    found = []
    for path in NOTEBOOKS:
        source = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"][0].source
        for line in source.splitlines():
            if line.startswith("backbone:"):
                found.append(path.name)
                comment = line.split("  # ", 1)[1]
                assert re.findall(r'"(\w+)"', comment) == list_backbones(), path.name
                assert "hsnetlib.backbones.list_backbones()" in comment, path.name
    assert {"01_train.ipynb", "02_evaluate.ipynb", "03_ablation_hypercorrelation.ipynb"} <= set(found)


def test_checks_close_every_notebook():
    """Each notebook ends with the plain asserts its reader relies on (issue 11)."""
    for path in NOTEBOOKS:
        last = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"][-1]
        assert "assert " in last.source, path.name


def test_training_notebook_defaults_are_the_shared_small_model():
    """02, 09, 10 and 11 reuse the training of 01_train.ipynb's defaults through the cache: its parameters cell is
    the small model's one definition, and the beats-the-baselines check holds for it only."""
    defaults = notebook.small_model_params()
    data = notebook.Data("pascal", suite.resolve("data/synthetic"), True)
    config = notebook.train_config(data, "x", defaults)
    assert (config.model.weights, config.device, config.train_episodes, config.epochs) == (None, None, 160, 6)
    assert notebook.is_small_model(defaults) and notebook.is_small_model({**defaults, "device": "cpu", "out_dir": "y"})
    assert not notebook.is_small_model({**defaults, "epochs": 1})
    for name in ("02_evaluate.ipynb", "09_visualize_correlation.ipynb", "10_visualize_predictions.ipynb",
                 "11_results.ipynb", "01_train.ipynb"):
        declared = papermill.inspect_notebook(str(suite.notebook_path(name)))
        assert ast.literal_eval(declared["train_cache"]["default"]) == "runs/notebooks/train-cache", name
    for name in ("02_evaluate.ipynb", "09_visualize_correlation.ipynb", "10_visualize_predictions.ipynb",
                 "12_interactive.ipynb"):  # they show the small model at the size it was trained at
        declared = papermill.inspect_notebook(str(suite.notebook_path(name)))
        assert ast.literal_eval(declared["img_size"]["default"]) == defaults["img_size"], name


def test_training_notebook_variant_is_the_model_options():
    """01_train.ipynb declares every HSNetConfig variant option as a parameter with its default."""
    from hsnetlib.model import HSNetConfig, variant_fields

    defaults = notebook.small_model_params()
    model = HSNetConfig(weights=None)
    for name in variant_fields():
        value = defaults[name]
        assert (tuple(value) if isinstance(value, list) else value) == getattr(model, name), name


def _code(path: Path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


CHECKED = [p for p in NOTEBOOKS if "notebook_params(" in _code(p)[1] and ".check_" in _code(p)[1]]
PARAMETER_ERRORS = [(p.name, {"fold": 9}, "fold=9 out of range for pascal") for p in CHECKED] + [
    ("04_ablation_pyramid.ipynb", {"reference": "1-2"}, "reference='1-2' is none of the variants"),
    ("02_evaluate.ipynb", {"benchmark": "lung", "isic_convention": "ifa"},
     "isic_convention='ifa' is an option of another benchmark, not of 'lung'"),
]


def test_every_notebook_with_a_fold_checks_its_parameters_first():
    """The notebooks whose cell after the parameters reads and checks them: all but 11_results (no fold) and
    12_interactive (its controls change the episode, the model loads in that cell)."""
    assert {p.name for p in NOTEBOOKS} - {p.name for p in CHECKED} == {"11_results.ipynb", "12_interactive.ipynb"}


@pytest.mark.parametrize("name, parameters, message", PARAMETER_ERRORS)
def test_parameter_errors_stop_the_cell_after_the_parameters(tmp_path, name, parameters, message):
    """A bad parameter is reported where the parameters are read, before any data or training: the parameters
    cell, the values papermill would inject, then the next cell, run here as the kernel runs them (its IPython
    magics left out); the kernel's own run of one is the next test."""
    parameters_cell, check_cell = _code(suite.notebook_path(name))[:2]
    namespace: dict = {}
    exec(parameters_cell, namespace)
    namespace.update(parameters, out_dir=str(tmp_path / "run"))
    with pytest.raises(ValueError, match=re.escape(message)):
        exec("\n".join(line for line in check_cell.splitlines() if not line.startswith("%")), namespace)
    assert not (tmp_path / "run").exists(), "nothing written before the check"


def test_a_parameter_error_in_the_kernel_is_in_the_cell_after_the_parameters(tmp_path):
    """The same through papermill and a kernel: the error is that cell's, nothing is recorded."""
    with pytest.raises(papermill.PapermillExecutionError) as err, suite.kernel_options() as kernel:
        papermill.execute_notebook(str(suite.notebook_path("01_train.ipynb")), str(tmp_path / "executed.ipynb"),
                                   parameters={"fold": 9, "out_dir": str(tmp_path / "run")},
                                   **kernel, cwd=str(suite.project_root()), progress_bar=False)
    assert "fold=9 out of range for pascal" in err.value.evalue
    executed = nbformat.read(tmp_path / "executed.ipynb", as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    injected = [i for i, c in enumerate(code) if "injected-parameters" in c.metadata.get("tags", [])]
    failed = [i for i, c in enumerate(code) if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert failed == [injected[0] + 1], "the error is in the cell right after the parameters"
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_ablation_notebook_with_injected_trainings(tmp_path):
    """An ablation notebook gathers finished trainings (label -> run folder), evaluates them on the same episodes
    and records the paired comparison with the reference (contract C3)."""
    data = notebook.prepare_data("pascal", "data/synthetic", True)  # the notebooks' own, generated once
    params = dict(fold=1, backbone="resnet50", weights="none", img_size=64, epochs=2, bsz=2, lr=1e-3,
                  train_episodes=4, val_episodes=4, seed=0, device="cpu")
    runs = {label: tmp_path / f"train-{label}" for label in ("3", "1-2-3")}
    for label, options in (("3", {"pyramid": (3,)}), ("1-2-3", {})):
        notebook.train_model(notebook.train_config(data, runs[label], params, options, resume=False))
    out_dir = tmp_path / "run"
    parameters = {"data_root": "data/synthetic", "fold": 1, "trainings": {k: str(v) for k, v in runs.items()},
                  "reference": "1-2-3", "shots": [1, 2], "episodes": 3, "device": "cpu", "out_dir": str(out_dir)}
    with suite.kernel_options() as kernel:
        papermill.execute_notebook(str(suite.notebook_path("04_ablation_pyramid.ipynb")),
                                   str(tmp_path / "executed.ipynb"), parameters=parameters, **kernel,
                                   cwd=str(suite.project_root()), progress_bar=False)
    params = json.loads((out_dir / "params.json").read_text())
    assert params["notebook"] == "04_ablation_pyramid.ipynb"
    assert {k: params["parameters"][k] for k in parameters} == parameters
    assert params["parameters"]["variants"] == [[3], [2, 3], [1, 2, 3]]  # a default the run did not override

    record = json.loads((out_dir / "metrics.json").read_text())
    assert record["parameters"] == params["parameters"] and record["seed"] == 0
    assert {"code_version", "torch", "torchvision", "device"} <= set(record["provenance"])
    for label, run in runs.items():
        assert record["checkpoints"][label]["path"] == str(run / "best.pt")
        assert record["checkpoints"][label]["sha256"] == hashlib.sha256((run / "best.pt").read_bytes()).hexdigest()
    trainings = {t["label"]: t for t in record["trainings"]}
    assert set(trainings) == {"3", "1-2-3"}
    for label, t in trainings.items():
        assert t["study"] == "pyramid" and t["run_dir"] == str(runs[label]) and len(t["history"]) == 2
        assert isinstance(t["converged"], bool)
    assert trainings["3"]["model"]["pyramid"] == [3]
    evaluations = record["evaluations"]
    assert [(e["label"], e["nshot"], e["fold"], e["episodes"], e["img_size"]) for e in evaluations] == [
        ("1-2-3", 1, 1, 3, 64), ("3", 1, 1, 3, 64), ("1-2-3", 2, 1, 3, 64), ("3", 2, 1, 3, 64)]
    for reference, variant in (evaluations[:2], evaluations[2:]):
        assert "paired" not in reference
        assert variant["paired"]["reference"] == "1-2-3" and variant["paired"]["episodes"] == 3
        assert variant["paired"]["delta_miou"] == pytest.approx(variant["miou"] - reference["miou"])
        low, high = variant["paired"]["ci95"]
        assert low <= high
    assert (out_dir / "ablation.png").is_file()
