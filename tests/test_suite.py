"""hsnetlib.suite: grid expansion and checks, papermill runs (skip done, continue past a failure,
blocked dependants, summary) and the run records notebooks write."""
from __future__ import annotations

import hashlib
import json

import nbformat
import pandas as pd
import pytest

from hsnetlib import suite

PARAMETERS = '''out_dir: str = "runs/x"  # where the record goes
value: int = 1  # a number
label: str = "a"  # a name
fail: bool = False  # raise before writing anything
'''
BODY = '''if fail:
    raise RuntimeError("boom " + label)
from hsnetlib.suite import write_run_record
write_run_record(out_dir, "toy.ipynb", {"value": value, "label": label}, {"summary": {"value": value}})
'''


@pytest.fixture()
def notebooks(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "hsnet", "display_name": "HSNet (hsnet)", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(BODY)]
    folder = tmp_path / "nbs"
    folder.mkdir()
    nbformat.write(nb, folder / "toy.ipynb")
    return folder


def _grid(tmp_path, notebooks, body: str):
    path = tmp_path / "grid.toml"
    path.write_text(f'name = "toy"\nnotebooks_dir = "{notebooks.as_posix()}"\n' + body)
    return path


def test_expansion_formatting_and_defaults(tmp_path, notebooks):
    path = _grid(tmp_path, notebooks, '''
[defaults]
label = "dflt"
unknown_to_the_notebook = 3   # defaults only reach notebooks that declare them

[[run]]
name = "r-{value}-{label}"
notebook = "toy.ipynb"
expand = { value = [1, 2], label = ["x", "y"] }

[[run]]
name = "after-{value}"
notebook = "toy.ipynb"
needs = ["r-{value}-x"]
expand = { value = [2] }
parameters = { label = "{grid_dir}/r-{value}-x" }
''')
    grid = suite.load_grid(path, runs_dir=tmp_path / "runs")
    assert [r.name for r in grid.runs] == ["r-1-x", "r-1-y", "r-2-x", "r-2-y", "after-2"]
    first, last = grid.runs[0], grid.runs[-1]
    assert first.parameters == {"label": "x", "value": 1, "out_dir": (tmp_path / "runs/toy/r-1-x").as_posix()}
    assert last.needs == ["r-2-x"] and last.parameters["label"] == (tmp_path / "runs/toy/r-2-x").as_posix()
    assert "unknown_to_the_notebook" not in last.parameters


@pytest.mark.parametrize("body, message", [
    ('[[run]]\nname = "a"\nnotebook = "toy.ipynb"\nparameters = { valu = 1 }\n', "has no parameter 'valu'"),
    ('[[run]]\nname = "a"\nnotebook = "toy.ipynb"\nparameters = { value = "1" }\n', "is not a int"),
    ('[[run]]\nname = "a"\nnotebook = "toy.ipynb"\nparameters = { value = true }\n', "is not a int"),
    ('[[run]]\nname = "a"\nnotebook = "toy.ipynb"\n[[run]]\nname = "a"\nnotebook = "toy.ipynb"\n', "occurs twice"),
    ('[[run]]\nname = "a"\nnotebook = "toy.ipynb"\nneeds = ["b"]\n', "not earlier runs"),
    ('[[run]]\nname = "a"\nnotebook = "missing.ipynb"\n', "does not exist"),
    ('[[run]]\nname = "a-{fold}"\nnotebook = "toy.ipynb"\n', "cannot format"),
    ('[[runs]]\nname = "a"\n', "unknown top-level key"),
])
def test_bad_grids_are_refused_before_anything_runs(tmp_path, notebooks, body, message):
    with pytest.raises(suite.GridError, match=message):
        suite.load_grid(_grid(tmp_path, notebooks, body), runs_dir=tmp_path / "runs")


def test_run_skip_continue_past_failure_and_summary(tmp_path, notebooks, capsys):
    path = _grid(tmp_path, notebooks, '''
[[run]]
name = "bad"
notebook = "toy.ipynb"
parameters = { fail = true, label = "on purpose" }

[[run]]
name = "blocked"
notebook = "toy.ipynb"
needs = ["bad"]

[[run]]
name = "ok"
notebook = "toy.ipynb"
parameters = { value = 7 }
''')
    runs = tmp_path / "runs"
    assert suite.main(["run", str(path), "--runs-dir", str(runs)]) == 1
    out = capsys.readouterr().out
    summary = pd.read_csv(runs / "toy" / "summary.csv")
    assert summary.set_index("run")["status"].to_dict() == {"bad": "failed", "blocked": "blocked", "ok": "done"}
    assert "RuntimeError: boom on purpose" in summary.set_index("run").loc["bad", "detail"]
    assert "value=7" in out and "failed or blocked" in out
    # the failed run's executed notebook keeps the error; it wrote no record
    executed = nbformat.read(runs / "toy" / "bad" / "toy.ipynb", as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors and errors[0].ename == "RuntimeError" and not (runs / "toy" / "bad" / "metrics.json").exists()
    record = json.loads((runs / "toy" / "ok" / "metrics.json").read_text())
    assert record["parameters"] == {"value": 7, "label": "a"} and record["summary"] == {"value": 7}

    # a second invocation skips what is done; --force re-runs it. A marker in the record tells the two apart
    # (file times may not change between two writes on a coarse-timestamp file system).
    metrics = runs / "toy" / "ok" / "metrics.json"
    metrics.write_text(json.dumps({**record, "marker": "left by the test"}))
    marked = metrics.read_bytes()
    outcomes = suite.run_grid(suite.load_grid(path, runs), runs, only="ok")
    assert [(o.run, o.status) for o in outcomes] == [("ok", "skipped")]
    assert metrics.read_bytes() == marked
    assert suite.main(["run", str(path), "--runs-dir", str(runs), "--only", "o*", "--force"]) == 0
    rewritten = json.loads(metrics.read_text())
    assert "marker" not in rewritten and rewritten["summary"] == {"value": 7}


def test_write_run_record_provenance(tmp_path):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights" * 100)
    path = suite.write_run_record(tmp_path / "run", "02_evaluate.ipynb", {"fold": 1, "pyramid": (2, 3)},
                                  {"summary": {"miou": float("nan")}, "evaluations": []}, checkpoint=checkpoint,
                                  seed=5)
    record = json.loads(path.read_text())
    assert record["checkpoint"]["sha256"] == hashlib.sha256(b"weights" * 100).hexdigest()
    assert record["seed"] == 5 and record["parameters"] == {"fold": 1, "pyramid": [2, 3]}
    assert record["summary"] == {"miou": None}  # NaN is not JSON
    assert {"code_version", "torch", "torchvision", "numpy", "device", "written_at"} <= set(record["provenance"])
    params = json.loads((tmp_path / "run" / "params.json").read_text())
    assert params == {"notebook": "02_evaluate.ipynb", "parameters": {"fold": 1, "pyramid": [2, 3]}, "seed": 5}
    with pytest.raises(ValueError, match="reserved"):
        suite.write_run_record(tmp_path / "run", "x.ipynb", {}, {"seed": 1})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        suite.write_run_record(tmp_path / "run", "x.ipynb", {}, {}, checkpoint=tmp_path / "none.pt")
