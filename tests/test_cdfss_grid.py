"""The cross-domain (CD-FSS) path: grids/cdfss.toml smoked for real (one source training on pascal-all with
FSS-1000 val selection, one evaluation of each target), and a cross-domain evaluation record read into the
"Cross-domain (PATNet Table 1)" table with its training benchmark and the data set's resolved options."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hsnetlib.suite.grid import load_grid
from hsnetlib.suite.paths import resolve

CDFSS_GRID = resolve("grids/cdfss.toml")
TARGETS = ("deepglobe", "isic", "lung", "fss")


def test_cdfss_grid_trains_on_pascal_all_and_evaluates_every_target_at_1_and_5_shots():
    grid = load_grid(CDFSS_GRID)
    trainings = [r for r in grid.runs if r.notebook == "01_train.ipynb"]
    assert {r.parameters["backbone"] for r in trainings} >= {"resnet50"}
    assert all(r.parameters["benchmark"] == "pascal-all" and r.parameters["val_benchmark"] == "fss"
               and r.resources.gpus == 4 for r in trainings)
    for training in trainings:
        evaluations = [r for r in grid.runs if training.name in r.needs]
        assert sorted(r.parameters["benchmark"] for r in evaluations) == sorted(TARGETS)
        assert all(r.parameters["shots"] == [1, 5] and r.parameters["episodes"] == 0 for r in evaluations)


def test_notebook_options_and_val_benchmark_translation():
    from hsnetlib.suite import notebook

    assert notebook.val_benchmark_arg("") is None and notebook.val_benchmark_arg("fss") == "fss"
    with pytest.raises(ValueError, match="val_benchmark='nope'"):
        notebook.val_benchmark_arg("nope")
    assert notebook.benchmark_options("isic", {"isic_convention": "ifa", "lung_masks": ""}) == {"isic_convention": "ifa"}
    assert notebook.benchmark_options("isic", {"isic_convention": ""}) == {}
    with pytest.raises(ValueError, match="lung_masks='all' is an option of another benchmark"):
        notebook.benchmark_options("isic", {"lung_masks": "all"})
    with pytest.raises(ValueError, match="isic_convention='x'"):
        notebook.check_data_params({"benchmark": "isic", "fold": 0, "isic_convention": "x"})
    assert {"deepglobe", "isic", "lung", "pascal-all"} <= set(notebook.synthetic_benchmarks())


def test_cross_domain_evaluation_lands_in_the_cdfss_table_with_train_benchmark_and_options(tmp_path):
    """An ISIC evaluation (isic_convention "ifa") of a model trained on pascal-all: its record holds
    train_benchmark and dataset.describe(); results put it on the cross-domain table's synthetic demo line, the
    run note naming the options and episode count; the same evaluation without train_benchmark stays out."""
    from hsnetlib import synthetic
    from hsnetlib.model import HSNet, HSNetConfig
    from hsnetlib.results import collect, paper, render, tables
    from hsnetlib.suite import notebook, records

    synthetic.generate(tmp_path / "data", layout="isic", images_per_class=3, size=32)
    data = notebook.Data("isic", tmp_path / "data", True, {"isic_convention": "ifa"})
    model = HSNet(HSNetConfig(backbone="resnet50", weights=None)).eval()
    runs = tmp_path / "runs"
    for name, trained_on in (("cross", "pascal-all"), ("same", None)):
        entry, _ = notebook.evaluate_model(model, data, 0, 1, 32, episodes=3, baselines=False, progress=False,
                                           train_benchmark=trained_on)
        records.write_run_record(runs / name, "02_evaluate.ipynb", {"benchmark": "isic"}, evaluations=[entry])
    stored = json.loads((runs / "cross" / "metrics.json").read_text())["evaluations"][0]
    assert stored["train_benchmark"] == "pascal-all"
    assert stored["data"]["options"] == {"isic_convention": "ifa"} and stored["data"]["n_episodes"] == 3
    assert stored["data"]["class_names"] == ["nevus", "seborrheic_keratosis", "melanoma"]
    assert "train_benchmark" not in json.loads((runs / "same" / "metrics.json").read_text())["evaluations"][0]

    frames = collect.collect(runs)
    evals = frames["evaluations"].set_index("run")
    assert evals.loc["cross", "train_benchmark"] == "pascal-all" and evals.loc["same", "train_benchmark"] == "isic"
    assert json.loads(evals.loc["cross", "data_options"]) == {"isic_convention": "ifa"}
    table = tables.build_table(paper.CDFSS, frames["evaluations"], frames["profiles"])
    ours = table[(table["section"] != tables.PAPER) & (table["status"] == "measured")]
    assert list(ours["column"]) == ["isic"] and list(ours["runs"]) == ["cross"]
    assert set(ours["dataset"]) == {"synthetic-pascal-all"}
    markdown = render.render_markdown(paper.CDFSS, table, frames["runs"])
    assert "`cross`" in markdown and "data: isic, isic_convention=ifa, 3 episodes" in markdown
    assert "`same`" not in markdown


@pytest.mark.smoke
def test_smoke_of_the_cdfss_grid(tmp_path):
    """`python -m hsnetlib.suite run grids/cdfss.toml --smoke` for the ResNet50 training on synthetic pascal-all
    (FSS-1000 val selection) and its evaluation on each synthetic target, executed for real."""
    from hsnetlib.suite import runner, smoke

    runs = smoke.runs_dir(tmp_path)
    smoked = smoke.smoke_grid(load_grid(CDFSS_GRID, runs))
    assert not smoke.unsmokable(smoked)
    keep = [r for r in smoked.runs if "resnet50" in r.name]
    outcomes = runner.run_grid(type(smoked)(smoked.name, smoked.path, keep), runs, jobs=2)
    bad = {o.run: o.detail for o in outcomes if o.status != "done"}
    assert not bad, bad
    grid_dir = runs / "cdfss"
    train = json.loads((grid_dir / "pascal-all-resnet50-train" / "metrics.json").read_text())
    assert train["parameters"]["val_benchmark"] == "fss" and train["trainings"][0]["benchmark"] == "pascal-all"
    for target in TARGETS:
        record = json.loads((grid_dir / f"{target}-resnet50-evaluate" / "metrics.json").read_text())
        assert [e["nshot"] for e in record["evaluations"]] == [1, 5]
        assert all(e["train_benchmark"] == "pascal-all" and e["benchmark"] == target and "options" in e["data"]
                   for e in record["evaluations"])


def test_cli_test_takes_the_benchmark_options_and_refuses_another_benchmarks(capsys):
    from hsnetlib import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["test", "--load", "missing.pt", "--benchmark", "lung", "--isic-convention", "ifa"])
    assert exit_.value.code == 2
    assert "--isic-convention is not an option of benchmark lung" in capsys.readouterr().err
