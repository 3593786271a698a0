"""hsnetlib.results: the published numbers (transcription consistency) and the tables and figures built from
run records written here through the suite's record writer."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from hsnetlib import results
from hsnetlib.model import HSNetConfig
from hsnetlib.results import collect, figures, paper, registries, render, tables
from hsnetlib.suite import records
from hsnetlib.suite.records import EvaluationEntry, ProfileEntry, RunRecord, TrainingEntry

R101 = {"backbone": "resnet101", "weights": "imagenet", "hypercorrelation": "full", "pyramid": [1, 2, 3],
        "kernel": "center_pivot", "block_layers": 3, "support_masking": True, "finetune_backbone": False}
R50 = {**R101, "backbone": "resnet50"}
SYNTH = {**R50, "weights": None}


# -- the paper's numbers -------------------------------------------------------------------------
def test_published_means_match_their_folds():
    """Each published mean is the mean of the published folds (up to rounding to 0.1)."""
    checked = 0
    for table in paper.TABLES.values():
        if "fold0" not in table.columns:
            continue
        for row in table.rows:
            for shot in table.shots:
                folds = [row.values[(shot, f"fold{i}")] for i in range(4)]
                assert abs(np.mean(folds) - row.values[(shot, "mean")]) <= 0.1 + 1e-9, (table.key, row.label, shot)
                checked += 1
    assert checked == 2 * (4 + 2 + 3 + 3 + 3 + 3)


def test_cross_domain_published_averages_match_their_targets():
    """PATNet's Table 1 (spec section 6): each Average is the mean of the four targets, for both rows."""
    hsnet, patnet = paper.CDFSS.rows
    assert [hsnet.values[(1, t)] for t in paper.CDFSS_TARGETS] == [29.65, 31.20, 51.88, 77.53]
    assert [hsnet.values[(5, t)] for t in paper.CDFSS_TARGETS] == [35.08, 35.10, 54.36, 80.99]
    for row in (hsnet, patnet):
        for shot in (1, 5):
            targets = [row.values[(shot, t)] for t in paper.CDFSS_TARGETS]
            assert abs(np.mean(targets) - row.values[(shot, "mean")]) <= 0.005 + 1e-9, (row.label, shot)
    assert patnet.reference and not hsnet.reference and "fine-tuning" in paper.CDFSS.notes


def test_tables_agree_where_the_paper_repeats_a_number():
    t = paper.TABLES
    full_r101 = t["table1"].rows[2].values
    for key in ("table4", "tableA3", "tableA4"):
        ours = t[key].rows[-1].values
        assert all(ours[(s, c)] == full_r101[(s, c)] for s in (1, 5) for c in paper.FOLD_COLUMNS)
    assert [t["tableA2"].rows[0].values[(s, "mean")] for s in (1, 5)] == [64.0, 69.5]
    assert t["table1"].rows[1].values[(1, "mean")] == 64.0 and t["table2"].rows[0].values[(5, "mean")] == 46.9
    assert t["tableA2"].rows[1].values[(1, "mean")] == t["table2"].rows[0].values[(1, "mean")]
    assert t["table4"].rows[0].values[(None, "gflops")] == 702.35
    assert t["tableA1"].rows[2].values[(None, "params_M")] == 2.6


def test_missing_cells_are_none_and_listed():
    frame = paper.paper_frame()
    missing = frame[frame["value"].isna()]
    listed = {(tb, bm, bb, shot, col) for tb, bm, bb, shot, col in paper.MISSING}
    assert set(zip(missing["table"], missing["benchmark"], missing["backbone"], missing["shot"], missing["column"])) \
        == listed


# -- the interval of a mean ----------------------------------------------------------------------
@pytest.mark.parametrize("values, lows, highs, expected", [
    ([60.0], [58.0], [61.0], (60.0, 58.0, 61.0)),                       # one estimate keeps its interval
    ([60.0, 62.0], [59.0, 61.0], [61.0, 63.0], (61.0, 61 - math.sqrt(2) / 2, 61 + math.sqrt(2) / 2)),
    ([10.0, 20.0, 30.0, 40.0], [8.0, 18.0, 28.0, 38.0], [11.0, 21.0, 31.0, 41.0], (25.0, 24.0, 25.5)),
])
def test_mean_interval_combines_half_widths(values, lows, highs, expected):
    assert tables.mean_interval(values, lows, highs) == pytest.approx(expected)


def test_mean_interval_without_intervals_is_nan():
    mean, low, high = tables.mean_interval([60.0, 62.0], [np.nan, 61.0], [61.0, 63.0])
    assert mean == 61.0 and math.isnan(low) and not math.isnan(high)


# -- a runs folder with every kind of record -----------------------------------------------------
def _eval(fold, nshot, miou, model=R101, dataset="pascal", study="main", label="HSNet", episodes=1000,
          img_size=400, ignore_label=True, half=1.0, **extra):
    benchmark = dataset.removeprefix("synthetic-")
    return EvaluationEntry.from_dict({
        "study": study, "label": label, "benchmark": benchmark, "dataset": dataset,
        "synthetic": dataset.startswith("synthetic"), "fold": fold, "nshot": nshot, "ignore_label": ignore_label,
        "img_size": img_size, "original_size": False, "episodes": episodes, "seed": 0, "model": model,
        "learnable_params": 2_587_394, "miou": miou, "fbiou": miou + 10, "ci95": [miou - half, miou + half], **extra})


def _paired(delta, half=0.5, reference="full"):
    return {"paired": {"reference": reference, "delta_miou": delta, "ci95": [delta - half, delta + half],
                       "episodes": 1000}}


def _write(runs, name, notebook, sections, params=None, seed=0, **checkpoints):
    """A run record written by the suite's writer (the one the notebooks use)."""
    records.write_run_record(runs / name, notebook, {"fold": 0, "nshot": 1} if params is None else params, sections,
                             seed=seed, **checkpoints)


def _training(study, label, model, fold=0, converged=None, curve=(0.0, 20.0, 40.0), dataset="pascal", img_size=400):
    history = [{"epoch": e, "train_loss": 1.0 / (e + 1), "train_miou": v + 5, "val_miou": v}
               for e, v in enumerate(curve)]
    return TrainingEntry(study=study, label=label, benchmark=dataset.removeprefix("synthetic-"), dataset=dataset,
                         fold=fold, model=model, img_size=img_size, history=history, converged=converged)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    checkpoint = runs / "best.pt"
    checkpoint.write_bytes(b"weights")

    def rec(name, notebook="02_evaluate.ipynb", seed=0, **sections):
        _write(runs, name, notebook, sections, seed=seed,
               **({"checkpoint": checkpoint} if notebook == "02_evaluate.ipynb" else {"checkpoints": {"full": checkpoint}}))

    # Table 1, ResNet101: 1-shot on every fold, 5-shot on folds 0-2, a second seed of 5-shot fold 0
    rec("paper/eval-1shot", evaluations=[_eval(f, 1, 60.0 + f) for f in range(4)])
    rec("paper/eval-5shot", evaluations=[_eval(f, 5, 70.0 + f) for f in range(3)])
    rec("paper/eval-5shot-seed1", seed=1, evaluations=[_eval(0, 5, 72.0, half=2.0)])
    rec("paper/noignore", evaluations=[_eval(0, 1, 55.0, ignore_label=False)])
    rec("paper/random-init", evaluations=[_eval(0, 1, 20.0, {**R101, "weights": None})])
    # Table 2 (COCO-20i, ResNet50), Table 3 (FSS-1000), Table A2 (10-shot)
    rec("paper/coco", evaluations=[_eval(f, 1, 30.0 + 2 * f, model=R50, dataset="coco") for f in range(4)])
    rec("paper/fss", evaluations=[_eval(0, 1, 80.0, model=R50, dataset="fss", episodes=2400)])
    rec("paper/kshot", evaluations=[_eval(f, k, 60.0 + k, model=R50) for f in range(4) for k in (1, 5, 10)])
    # Table A3: shallow (paired, converged), deep (did not converge), full (the reference), every 1-shot fold
    hyper = lambda v: {**R101, "hypercorrelation": v}
    rec("paper/hypercorrelation", notebook="03_ablation_hypercorrelation.ipynb",
        trainings=[_training("hypercorrelation", v, hyper(v), f, converged=(v != "deep"))
                   for v in ("shallow", "deep", "full") for f in range(4)],
        evaluations=[_eval(f, 1, 50.0 + f, hyper("shallow"), study="hypercorrelation", label="shallow",
                           **_paired(-10.0 - f)) for f in range(4)]
        + [_eval(f, 1, 0.0, hyper("deep"), study="hypercorrelation", label="deep", **_paired(-60.0))
           for f in range(4)]
        + [_eval(f, 1, 60.0 + f, study="hypercorrelation", label="full") for f in range(4)])
    # Table A4 / Fig. 7 from an older record: no paired difference, no convergence flag, no interval
    pyr = lambda p: {**R101, "pyramid": p}
    old = [_eval(0, 1, m, pyr(p), study="pyramid", label=str(p)) for p, m in (([3], 40.0), ([2, 3], 55.0))]
    rec("paper/pyramid-old", notebook="04_ablation_pyramid.ipynb", evaluations=[dataclasses.replace(e, ci95=None) for e in old],
        trainings=[_training("pyramid", str(p), pyr(p)) for p in ([3], [2, 3])])
    # Table 4 with a profile
    rec("paper/kernel", notebook="05_ablation_kernel.ipynb",
        evaluations=[_eval(0, 1, 61.0, {**R101, "kernel": "original"}, study="kernel", label="original",
                           **_paired(-1.5, reference="center_pivot"))],
        profiles=[ProfileEntry(study="kernel", label="original", model={**R101, "kernel": "original"}, profile={
            "img_size": 400, "nshot": 1, "device": "cpu", "learnable_params": 11_300_000, "time_ms": 900.0,
            "memory_gb": 2.0, "gflops": 700.0})])
    # the synthetic demo: main evaluation with baselines, Fig. 9 and Fig. 10 from training histories
    base = {"all_foreground": {"miou": 20.0, "fbiou": 15.0, "ci95": [19.0, 21.0]},
            "all_background": {"miou": 0.0, "fbiou": 40.0, "ci95": [0.0, 0.0]}}
    rec("demo/eval", evaluations=[_eval(f, 1, 45.0, SYNTH, "synthetic-pascal", img_size=96, episodes=200,
                                        baselines=base) for f in range(4)])
    layers = lambda n: {**SYNTH, "block_layers": n}
    rec("demo/block-layers", notebook="06_ablation_block_layers.ipynb",
        trainings=[_training("block_layers", str(n), layers(n), converged=n > 1, dataset="synthetic-pascal",
                             img_size=96, curve=(0.0, 10.0 * n, 20.0 * n)) for n in (1, 2, 3)],
        evaluations=[_eval(0, 1, 20.0 * n, layers(n), "synthetic-pascal", study="block_layers", label=str(n),
                           img_size=96, episodes=200) for n in (1, 2, 3)])
    rec("demo/finetune", notebook="07_ablation_finetune.ipynb", trainings=[
        _training("finetune", name, {**SYNTH, "finetune_backbone": ft}, fold, dataset="synthetic-pascal", img_size=96,
                  curve=(10.0, 30.0 + 5 * ft, 35.0 - 5 * ft)) for fold in (0, 1) for name, ft in (("frozen", False),
                                                                                                ("finetune", True))])
    # a metrics.json that is not a suite record (e.g. EvalResult.save) is ignored
    (runs / "paper" / "eval-1shot" / "eval").mkdir()
    (runs / "paper" / "eval-1shot" / "eval" / "metrics.json").write_text(json.dumps({"miou": 99.0}))
    return runs


@pytest.fixture(scope="module")
def out(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    assert results.main(["--runs", str(runs), "--out", str(out)]) == 0
    return out


def _cells(out, key, backbone, method, section=tables.PAPER, dataset="pascal"):
    """{(shot, column): CSV row} of one line of a table (the paper protocol on PASCAL-5i by default)."""
    frame = pd.read_csv(out / f"{key}.csv")
    if section == tables.SYNTHETIC:
        dataset = "synthetic-" + dataset
    hit = frame[(frame["backbone"] == backbone) & (frame["method"] == method) & (frame["section"] == section)
                & (frame["dataset"] == dataset)]
    assert len(hit) and not hit.duplicated(["shot", "column"]).any(), hit  # exactly one line
    return {(None if pd.isna(s) else int(s), c): row for s, c, (_, row) in zip(hit["shot"], hit["column"],
                                                                              hit.iterrows())}


def _md_rows(out, key, backbone, method, data="PASCAL-5i"):
    """The markdown rows of the first line of `backbone` and `method` on `data` (up to the next line)."""
    lines = (out / f"{key}.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {data} | {backbone} | {method} |"))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("|  |")), len(lines))
    return lines[start:end]


# -- tables ----------------------------------------------------------------------------------------
def test_table1_paper_ours_and_delta_side_by_side(out):
    cells = _cells(out, "table1", "resnet101", "HSNet")
    fold0 = cells[(1, "fold0")]
    assert (fold0["paper"], fold0["ours"], fold0["ci95_low"], fold0["ci95_high"]) == (67.3, 60.0, 59.0, 61.0)
    assert fold0["delta_vs_paper"] == pytest.approx(60.0 - 67.3) and fold0["status"] == "measured"
    mean = cells[(1, "mean")]
    assert mean["ours"] == pytest.approx(61.5) and mean["delta_vs_paper"] == pytest.approx(61.5 - 66.2)
    assert (mean["ci95_low"], mean["ci95_high"]) == pytest.approx((61.0, 62.0))  # 4 folds of ±1: ±sqrt(4)/4
    assert cells[(1, "fbiou")]["ours"] == pytest.approx(71.5) and cells[(1, "fbiou")]["paper"] == 77.6
    assert cells[(5, "fold3")]["status"] == "no run" and cells[(5, "fold3")]["paper"] == 68.3
    assert cells[(5, "mean")]["status"] == "no run" and math.isnan(cells[(5, "mean")]["ours"])  # needs every fold
    params = cells[(None, "params_M")]
    assert params["ours"] == pytest.approx(2.587394, rel=1e-5) and params["paper"] == 2.6
    assert cells[(1, "fold1")]["runs"] == "paper/eval-1shot"  # not mixed with the ablation's reference
    vgg = _cells(out, "table1", "vgg16", "HSNet")
    assert {c["status"] for c in vgg.values()} == {"no run"} and vgg[(1, "fold0")]["paper"] == 59.6
    rows = _md_rows(out, "table1", "resnet101", "HSNet")
    assert rows[0].startswith("| PASCAL-5i | resnet101 | HSNet | 400 | paper | 67.3 | 72.3 |")
    assert "| 60.0 [59.0, 61.0] | 61.0 [60.0, 62.0] |" in rows[1] and "| – |" in rows[1]
    assert rows[2].startswith("|  |  |  |  | Δ ours − paper | -7.3 | -11.3 | 0.0 | -0.1 | -4.7 |")
    md = (out / "table1.md").read_text()
    assert "| PASCAL-5i | vgg16 | HSNet | 400 | paper (not run here) | 59.6 | 65.7 |" in md and "no run (" not in md


def test_several_runs_of_a_cell_are_averaged_and_said_so(out):
    fold0 = _cells(out, "table1", "resnet101", "HSNet")[(5, "fold0")]
    assert fold0["ours"] == 71.0 and fold0["n_runs"] == 2
    assert fold0["runs"] == "paper/eval-5shot paper/eval-5shot-seed1"
    assert (fold0["ci95_low"], fold0["ci95_high"]) == pytest.approx((71 - math.sqrt(5) / 2, 71 + math.sqrt(5) / 2))
    assert "ours, 1000 episodes, mean of 2 runs" in _md_rows(out, "table1", "resnet101", "HSNet")[1]


def _rec(runs, name, evaluation, seed=0):
    _write(runs, name, "02_evaluate.ipynb", {"evaluations": [evaluation]}, params={}, seed=seed)


def test_runs_with_different_episode_counts_are_not_averaged(tmp_path):
    runs = tmp_path / "runs"
    _rec(runs, "a", _eval(0, 1, 60.0, episodes=1000))
    _rec(runs, "b", _eval(0, 1, 62.0, episodes=200))
    with pytest.raises(ValueError, match=r"table1.*1-shot fold 0.*different episode counts: a \(1000 episodes\), "
                                         r"b \(200 episodes\)"):
        results.write_results(runs, tmp_path / "out")
    assert results.main(["--runs", str(runs), "--out", str(tmp_path / "out")]) == 2


def test_runs_at_different_image_sizes_are_separate_lines(tmp_path):
    runs = tmp_path / "runs"
    _rec(runs, "a", _eval(0, 1, 60.0, img_size=400))
    _rec(runs, "b", _eval(0, 1, 50.0, img_size=200))
    frame = results.build_table(paper.TABLES["table1"], collect.collect(runs)["evaluations"], pd.DataFrame())
    fold0 = frame.query("method == 'HSNet' and backbone == 'resnet101' and shot == 1 and column == 'fold0'")
    assert dict(zip(fold0["img_size"], fold0["ours"])) == {400: 60.0, 200: 50.0}
    assert set(fold0["n_runs"]) == {1} and set(fold0["paper"]) == {67.3}


def test_tables_2_3_and_10_shot_a2(out):
    coco = _cells(out, "table2", "resnet50", "HSNet", dataset="coco")
    assert coco[(1, "fold2")]["ours"] == 34.0 and coco[(1, "fold2")]["paper"] == 38.7
    assert coco[(1, "mean")]["ours"] == 33.0 and coco[(1, "mean")]["delta_vs_paper"] == pytest.approx(33.0 - 39.2)
    assert coco[(5, "fbiou")]["status"] == "no run" and math.isnan(coco[(5, "fbiou")]["paper"])  # lost cell
    assert "| 5-shot FB-IoU |" in (out / "table2.md").read_text()
    assert "n/a" in _md_rows(out, "table2", "resnet50", "HSNet", "COCO-20i")[0]
    fss = _cells(out, "table3", "resnet50", "HSNet", dataset="fss")
    assert fss[(1, "mean")]["ours"] == 80.0 and fss[(1, "mean")]["paper"] == 85.5
    assert fss[(1, "mean")]["episodes"] == 2400 and (fss[(1, "mean")]["ci95_low"], fss[(1, "mean")]["ci95_high"]) \
        == (79.0, 81.0)
    a2 = _cells(out, "tableA2", "resnet50", "HSNet")
    assert [a2[(k, "mean")]["ours"] for k in (1, 5, 10)] == [61.0, 65.0, 70.0]
    assert [a2[(k, "mean")]["paper"] for k in (1, 5, 10)] == [64.0, 69.5, 70.6]
    assert a2[(10, "mean")]["delta_vs_paper"] == pytest.approx(70.0 - 70.6)
    coco_a2 = pd.read_csv(out / "tableA2.csv").query("dataset == 'coco'")
    assert list(coco_a2["paper"]) == [39.2, 46.9, 48.7] and list(coco_a2["status"]) == ["measured", "no run", "no run"]
    assert coco_a2["ours"].iloc[0] == 33.0  # the COCO-20i evaluations of Table 2 also fill Table A2's 1-shot
    md = (out / "tableA2.md").read_text()
    assert md.index("| PASCAL-5i | resnet50 |") < md.index("| COCO-20i | resnet50 |")  # the paper's row order
    r101 = _md_rows(out, "tableA2", "resnet101", "HSNet")  # a line the paper does not have: no paper row, no Δ
    assert len(r101) == 1 and "| 400 | ours, 1000 episodes | 61.5 [61.0, 62.0] | – | – |" in r101[0]


def test_ablation_paired_difference_and_not_converged(out):
    shallow = _cells(out, "tableA3", "resnet101", "C_p^shallow")
    assert shallow[(1, "fold1")]["ours"] == 51.0 and shallow[(1, "fold1")]["paper"] == 64.7
    assert shallow[(1, "fold1")]["reference"] == "full" and shallow[(1, "fold1")]["paired_delta"] == -11.0
    assert (shallow[(1, "fold1")]["paired_ci95_low"], shallow[(1, "fold1")]["paired_ci95_high"]) == (-11.5, -10.5)
    mean = shallow[(1, "mean")]
    assert mean["paired_delta"] == pytest.approx(-11.5) and mean["paired_ci95_low"] == pytest.approx(-11.75)
    rows = _md_rows(out, "tableA3", "resnet101", "C_p^shallow")
    assert rows[3].startswith("|  |  |  |  | Δ vs C_p (ours), paired | -10.0 [-10.5, -9.5] | -11.0 [-11.5, -10.5] |")
    deep = _cells(out, "tableA3", "resnet101", "C_p^deep")
    assert {deep[(1, c)]["status"] for c in paper.FOLD_COLUMNS} == {"not converged"}
    assert math.isnan(deep[(1, "fold0")]["ours"]) and deep[(1, "fold0")]["curves"] == "curves_hypercorrelation.png"
    deep_md = _md_rows(out, "tableA3", "resnet101", "C_p^deep")
    assert "not converged: learning curves in [curves_hypercorrelation.png](curves_hypercorrelation.png)" \
        in deep_md[1] and "| not converged | not converged |" in deep_md[1] and "0.0 [" not in "".join(deep_md)
    assert (out / "curves_hypercorrelation.png").stat().st_size > 0
    full = _cells(out, "tableA3", "resnet101", "C_p (ours)")
    assert full[(1, "mean")]["ours"] == 61.5 and pd.isna(full[(1, "mean")]["reference"])


def test_older_ablation_records_show_numbers_without_paired_difference(out):
    c3 = _cells(out, "tableA4", "resnet101", "C^(3)")[(1, "fold0")]
    assert c3["ours"] == 40.0 and c3["status"] == "measured" and c3["paper"] == 54.3
    assert math.isnan(c3["ci95_low"]) and math.isnan(c3["paired_delta"])
    rows = _md_rows(out, "tableA4", "resnet101", "C^(3)")
    assert "| 40.0 | – |" in rows[1] and not any("paired" in r for r in rows)
    assert (out / "fig7.png").stat().st_size > 0 and (out / "fig6.png").stat().st_size > 0


def test_table4_kernel_profile_and_paired(out):
    original = _cells(out, "table4", "resnet101", "Original 4D kernel [55]")
    assert original[(None, "time_ms")]["ours"] == 900.0 and original[(None, "time_ms")]["paper"] == 512.17
    assert original[(1, "fold0")]["paired_delta"] == -1.5
    assert "Δ vs Center-pivot 4D kernel (ours), paired | -1.5 [-2.0, -1.0]" in "\n".join(
        _md_rows(out, "table4", "resnet101", "Original 4D kernel [55]"))


def test_synthetic_lines_are_labelled_and_never_compared(out):
    synth = _cells(out, "table1", "resnet50", "HSNet (random-init backbone)", section=tables.SYNTHETIC)
    assert synth[(1, "mean")]["ours"] == 45.0 and "synthetic demo" in synth[(1, "mean")]["benchmark"]
    assert all(math.isnan(c["paper"]) and math.isnan(c["delta_vs_paper"]) for c in synth.values())
    other = _cells(out, "table1", "resnet101", "HSNet (random-init backbone)", section=tables.OTHER)[(1, "fold0")]
    assert other["ours"] == 20.0 and math.isnan(other["paper"]) and math.isnan(other["delta_vs_paper"])
    md = (out / "table1.md").read_text()
    assert md.index("**Paper protocol**") < md.index("**Not the paper's setting**") < md.index("**Synthetic demo**")
    demo = md[md.index("**Synthetic demo**"):md.index("Cells:")]
    assert "| synthetic-pascal | resnet50 | HSNet (random-init backbone) | 96 | synthetic demo, 200 episodes |" in demo
    assert "paper" not in demo.split("\n", 1)[1].split("| runs |")[1] and "Δ" not in demo
    base = pd.read_csv(out / "baselines.csv")
    assert len(base) == 4 and (base["margin_miou"] == 25.0).all() and base["benchmark"].str.contains("synthetic").all()


# -- figures -------------------------------------------------------------------------------------
def test_learning_curves_plot_each_training_history(runs):
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    trainings = collect.collect(runs)["trainings"]
    finetune = trainings[(trainings["study"] == "finetune") & (trainings["fold"] == 1)]
    fig, ax = plt.subplots()
    figures.learning_curves(ax, finetune)
    lines = sorted(list(line.get_ydata()) for line in ax.lines if len(line.get_ydata()))
    legend = sorted(t.get_text() for t in ax.get_legend().get_texts())
    plt.close(fig)
    assert lines == [[10.0, 30.0, 35.0], [10.0, 35.0, 30.0], [15.0, 35.0, 40.0], [15.0, 40.0, 35.0]]
    assert {"frozen", "finetune", "train", "val"} <= set(legend)


def test_figures_9_and_10_drawn_from_runs(out, runs, tmp_path):
    assert (out / "fig9.png").stat().st_size > 0 and (out / "fig10.png").stat().st_size > 0
    data = collect.collect(runs)
    three_layers = data["evaluations"][data["evaluations"]["block_layers"] == 3]
    assert figures.block_layers_figure(three_layers, data["trainings"], tmp_path / "f.png") is None
    assert figures.curves_figure(data["trainings"], "kernel", tmp_path / "k.png") is None  # no training


# -- the command ---------------------------------------------------------------------------------
def test_command_writes_every_file_with_readme_and_run_records(out, runs):
    names = {p.name for p in out.iterdir()}
    keys = [*paper.TABLES, "backbones", "baselines"]
    assert {f"{k}.{ext}" for k in keys for ext in ("md", "csv")} | {"README.md", "runs.csv"} <= names
    assert {"fig6.png", "fig7.png", "fig9.png", "fig10.png", "curves_hypercorrelation.png",
            "curves_pyramid.png"} <= names
    readme = (out / "README.md").read_text()
    for key, table in paper.TABLES.items():
        line = next(r for r in readme.splitlines() if r.startswith(f"| [{key}.md]"))
        assert table.title in line and table.source in line
    assert "| paper protocol (2 lines), not the paper's setting (1 line), synthetic demo (1 line) |" in readme.split("[table1.md]")[1].split("\n")[0]
    assert "| 04_ablation_pyramid.ipynb | |" in readme.split("[curves_pyramid.png]")[1].split("\n")[0]
    assert "bootstrap 95% interval" in readme and "paired bootstrap 95% interval" in readme
    assert "never compared with the paper" in readme and "mean of N runs" in readme
    assert "## Tables" in readme and "### Table A3" in readme
    # traceability: every run named in a table is a run record listed with its provenance
    listed = pd.read_csv(out / "runs.csv")
    assert set(listed["run"]) == {p.parent.relative_to(runs).as_posix() for p in runs.rglob("metrics.json")
                                  if "notebook" in json.loads(p.read_text())}
    assert listed.set_index("run").loc["paper/eval-5shot-seed1", "seed"] == 1
    for key in paper.TABLES:
        frame = pd.read_csv(out / f"{key}.csv")
        named = {r for rs in frame["runs"].dropna() for r in rs.split()}
        assert named <= set(listed["run"]), key
        md = (out / f"{key}.md").read_text()
        for run in named:
            note = next(line for line in md.splitlines() if f"`{run}`:" in line)
            assert "seed " in note and f"checkpoints {'full: ' * ('evaluate' not in note)}{runs / 'best.pt'} " \
                "(sha256 " in note and "code " in note
            assert "parameters: fold=0, nshot=1" in note
    a3 = (out / "tableA3.md").read_text()
    assert "03_ablation_hypercorrelation.ipynb" in a3 and "| [1] |" in a3


def test_missing_runs_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        collect.collect(tmp_path / "nope")
    assert results.main(["--runs", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2


def test_no_runs_gives_the_paper_alone(tmp_path):
    (tmp_path / "runs").mkdir()
    written = results.write_results(tmp_path / "runs", tmp_path / "out")
    assert all(p is None for p in written["figures"].values()) and not list((tmp_path / "out").glob("*.png"))
    t1 = written["tables"]["table1"]
    assert set(t1["status"]) == {"no run"} and t1["paper"].notna().all()
    md = (tmp_path / "out" / "table1.md").read_text()
    assert md.count("paper (not run here)") == 4 and "Run records" not in md and "**Synthetic demo**" not in md


def test_run_notes_show_paths_inside_the_project_relative_and_whole_seeds(monkeypatch, tmp_path):
    monkeypatch.setattr(collect, "project_root", lambda: tmp_path)
    record = RunRecord(notebook="02_evaluate.ipynb", seed=3,
                       checkpoint=records.CheckpointRef(str(tmp_path / "runs" / "t" / "best.pt"), "ab" * 32, 7),
                       parameters={"out_dir": str(tmp_path / "runs" / "e"), "data_root": "/elsewhere/data"},
                       provenance={"code_version": "abc1234", "device": "cpu"})
    provenance = collect.provenance("e", record)
    assert provenance["checkpoints"] == "runs/t/best.pt (sha256 abababababab)"
    note = render.run_note(1, pd.Series({**provenance, "seed": 3.0}))  # a float column, as pandas reads it
    assert "seed 3," in note and str(tmp_path) not in note
    assert "data_root='/elsewhere/data'" in note and "out_dir='runs/e'" in note
    assert "seed none," in render.run_note(2, pd.Series({**provenance, "seed": float("nan")}))


# -- variant columns, registries ------------------------------------------------------------------
def test_variant_columns_and_defaults_come_from_the_model_config():
    defaults = registries.variant_defaults()
    config = HSNetConfig()
    assert defaults == {name: getattr(config, name) for name in defaults}
    assert "backbone" not in defaults and {"kernel", "pyramid", "block_layers"} <= set(defaults)
    older = collect.model_columns({"backbone": "resnet50", "weights": None, "pyramid": [2, 3]})  # lacks the rest
    assert older["pyramid"] == (2, 3) and older["kernel"] == config.kernel and older["pretrained"] is False


# -- issue 18: no converged point in Fig. 9 -------------------------------------------------------
def _unconverged_block_layers(runs):
    layers = lambda n: {**SYNTH, "block_layers": n}
    _write(runs, "demo/block-layers", "06_ablation_block_layers.ipynb", {
        "trainings": [_training("block_layers", str(n), layers(n), converged=False, dataset="synthetic-pascal",
                                img_size=96, curve=(0.0, 0.0)) for n in (1, 2, 3)],
        "evaluations": [_eval(0, 1, 0.0, layers(n), "synthetic-pascal", study="block_layers", label=str(n),
                              img_size=96, episodes=200) for n in (1, 2, 3)]})


def test_block_layers_figure_without_a_converged_point_says_so(tmp_path, monkeypatch):
    """Before: ``points`` empty, two lists subtracted (TypeError) and results/ never written."""
    runs = tmp_path / "runs"
    _unconverged_block_layers(runs)
    data = collect.collect(runs)
    said = []
    save = figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, title, path: (
        said.extend(t.get_text() for ax in fig.axes for t in ax.texts), save(fig, title, path))[1])
    assert figures.block_layers_figure(data["evaluations"], data["trainings"], tmp_path / "fig9.png") \
        == tmp_path / "fig9.png" and (tmp_path / "fig9.png").stat().st_size > 0
    assert "no variant converged: no mIoU to plot" in said
    assert results.main(["--runs", str(runs), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "fig9.png").is_file() and (tmp_path / "out" / "README.md").is_file()


def test_figures_and_tables_take_empty_inputs(tmp_path):
    empty = pd.DataFrame()
    assert figures.block_layers_figure(empty, empty, tmp_path / "a.png") is None
    assert figures.curves_figure(empty, "finetune", tmp_path / "b.png") is None
    for table in tables.all_tables().values():
        frame = results.build_table(table, empty, empty)
        assert set(frame["status"]) <= {"no run"}
        if table.figure:
            assert figures.ablation_figure(table, frame, tmp_path / "c.png") is None
        render.render_markdown(table, frame, empty)
    assert tables.baselines_table(empty).empty and tables.benchmark_tables(empty) == {}
    assert not list(tmp_path.iterdir())
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    figures.learning_curves(ax, pd.DataFrame([{"label": "a", "history": []}]))
    assert [t.get_text() for t in ax.texts] == ["no training history"]
    plt.close(fig)


# -- HSNet across backbones (issue 15) ------------------------------------------------------------
@pytest.fixture(scope="module")
def backbone_runs(tmp_path_factory):
    runs = tmp_path_factory.mktemp("backbone-runs")
    swin = {**R50, "backbone": "swin_base_patch4_window12_384"}
    _write(runs, "backbones/swin", "02_evaluate.ipynb", {"evaluations": [
        _eval(f, 1, 70.0 + f, swin, img_size=384) for f in range(4)]})
    vit = {**SYNTH, "backbone": "vit_small_patch14_dinov2"}
    _write(runs, "demo/vit", "02_evaluate.ipynb", {"evaluations": [
        _eval(0, 1, 30.0, vit, "synthetic-pascal", img_size=56, episodes=20)]})
    out = tmp_path_factory.mktemp("backbone-results")
    assert results.main(["--runs", str(runs), "--out", str(out)]) == 0
    return out


def test_backbones_table_sits_beside_the_papers_resnet_rows(backbone_runs):
    out = backbone_runs
    frame = pd.read_csv(out / "backbones.csv")
    lines = list(dict.fromkeys(zip(frame["dataset"], frame["backbone"], frame["section"])))
    new = registries.new_backbones(set(paper.PAPER_BACKBONES))
    assert new[:5] == ("swin_base_patch4_window12_384", "convnext_base", "vit_small_patch14_dinov2",
                       "vit_base_patch14_dinov2", "vit_large_patch14_dinov2")  # then any registered by other tests
    assert lines[:2 + len(new)] == [("pascal", b, tables.PAPER) for b in ("resnet50", "resnet101", *new)]
    assert ("coco", "vit_large_patch14_dinov2", tables.PAPER) in lines
    assert lines[-1] == ("synthetic-pascal", "vit_small_patch14_dinov2", tables.SYNTHETIC)
    swin = _cells(out, "backbones", "swin_base_patch4_window12_384", "HSNet")
    assert swin[(1, "mean")]["ours"] == 71.5 and math.isnan(swin[(1, "mean")]["paper"])
    assert math.isnan(swin[(1, "mean")]["delta_vs_paper"]) and swin[(1, "fold0")]["runs"] == "backbones/swin"
    r50 = _cells(out, "backbones", "resnet50", "HSNet")
    assert r50[(1, "fold0")]["paper"] == 64.3 and r50[(1, "fold0")]["status"] == "no run"
    md = (out / "backbones.md").read_text()
    assert "| PASCAL-5i | resnet50 | HSNet | 400 | paper (not run here) | 64.3 |" in md
    assert "| PASCAL-5i | convnext_base | HSNet | – | no run | – |" in md
    assert "| COCO-20i | resnet101 | HSNet | 400 | paper (not run here) | 37.2 |" in md
    assert "| 384 | ours, 1000 episodes | 70.0 [69.0, 71.0] |" in md
    demo = md[md.index("**Synthetic demo**"):]
    assert "vit_small_patch14_dinov2 | HSNet (random-init backbone) | 56 | synthetic demo, 20 episodes" in demo
    # a new backbone is not a line of the paper's own tables
    assert "swin" not in (out / "table1.md").read_text() and "vit_small" not in (out / "table1.md").read_text()


# -- Cross-domain (PATNet Table 1, issue 16) ------------------------------------------------------
@pytest.fixture(scope="module")
def cdfss_runs(tmp_path_factory):
    runs = tmp_path_factory.mktemp("cdfss-runs")
    values = {"deepglobe": 30.0, "isic": 32.0, "lung": 50.0, "fss": 78.0}
    _write(runs, "cdfss/evaluate", "02_evaluate.ipynb", {"evaluations": [
        _eval(0, 1, v, R50, dataset=b, episodes=600 if b != "fss" else 2400, train_benchmark="pascal-all")
        for b, v in values.items()]})
    _write(runs, "demo/cdfss", "02_evaluate.ipynb", {"evaluations": [
        _eval(0, 1, 20.0, SYNTH, dataset=f"synthetic-{b}", img_size=64, episodes=30, train_benchmark="pascal-all")
        for b in values]})
    _write(runs, "paper/fss", "02_evaluate.ipynb", {"evaluations": [_eval(0, 1, 85.0, R50, dataset="fss",
                                                                          episodes=2400)]})
    out = tmp_path_factory.mktemp("cdfss-results")
    assert results.main(["--runs", str(runs), "--out", str(out)]) == 0
    return out


def test_cross_domain_table_compares_with_hsnets_row_only(cdfss_runs):
    out = cdfss_runs
    ours = _cells(out, "cdfss", "resnet50", "HSNet", dataset="pascal-all")
    assert ours[(1, "deepglobe")]["ours"] == 30.0 and ours[(1, "deepglobe")]["paper"] == 29.65
    assert ours[(1, "lung")]["delta_vs_paper"] == pytest.approx(50.0 - 51.88)
    assert (ours[(1, "lung")]["episodes"], ours[(1, "fss")]["episodes"], ours[(1, "mean")]["episodes"]) \
        == ("600", "2400", "600/2400")
    mean = ours[(1, "mean")]
    assert mean["ours"] == pytest.approx(47.5) and mean["paper"] == 47.57
    assert (mean["ci95_low"], mean["ci95_high"]) == pytest.approx((47.0, 48.0))  # 4 targets of ±1: ±sqrt(4)/4
    assert ours[(5, "isic")]["status"] == "no run" and ours[(5, "mean")]["status"] == "no run"
    patnet = _cells(out, "cdfss", "resnet50", "PATNet (with test-time fine-tuning)", dataset="pascal-all")
    assert patnet[(1, "isic")]["paper"] == 41.16 and {c["status"] for c in patnet.values()} == {"no run"}
    md = (out / "cdfss.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| data |"))
    assert "| 1-shot Deepglobe | 1-shot ISIC2018 | 1-shot Chest X-ray | 1-shot FSS-1000 | 1-shot mean |" in header
    assert "| published, for reference | 37.89 | 41.16 | 66.61 | 78.59 | 56.06 |" in md
    assert "test-time fine-tuning" in md.split("Cells:")[1]
    rows = _md_rows(out, "cdfss", "resnet50", "HSNet", "PASCAL VOC (all 20 classes)")
    assert rows[0].startswith("| PASCAL VOC (all 20 classes) | resnet50 | HSNet | 400 | paper | 29.65 | 31.20 |")
    assert "ours, 600/2400 episodes | 30.0 [29.0, 31.0] |" in rows[1] and rows[2].split("|")[5] == " Δ ours − paper "
    # the synthetic demo line: apart, never compared
    demo = _cells(out, "cdfss", "resnet50", "HSNet (random-init backbone)", tables.SYNTHETIC, "pascal-all")
    assert demo[(1, "mean")]["ours"] == 20.0 and all(math.isnan(c["delta_vs_paper"]) for c in demo.values())
    assert md.index("**Paper protocol**") < md.index("**Synthetic demo**")
    # FSS-1000 scored by the cross-domain model is not a Table 3 number (trained on FSS-1000 itself)
    fss = _cells(out, "table3", "resnet50", "HSNet", dataset="fss")
    assert fss[(1, "mean")]["ours"] == 85.0 and fss[(1, "mean")]["runs"] == "paper/fss"


# -- a benchmark without published numbers ---------------------------------------------------------
def test_a_benchmark_without_paper_tables_gets_its_own_table(tmp_path):
    runs = tmp_path / "runs"
    _write(runs, "toy/study", "03_ablation_hypercorrelation.ipynb", {"evaluations": [
        _eval(f, 1, 40.0 + f, R50, dataset="toy", study="hypercorrelation", label=label,
              **({} if label == "full" else _paired(-1.0))) for f in range(2) for label in ("full", "deep")]})
    assert registries.benchmark("toy").paper_tables == ()
    out = tmp_path / "out"
    assert results.main(["--runs", str(runs), "--out", str(out)]) == 0
    frame = pd.read_csv(out / "benchmark-toy.csv")
    assert set(frame["section"]) == {tables.OTHER} and frame["paper"].isna().all()
    assert frame["delta_vs_paper"].isna().all()
    deep = frame[(frame["method"] == "deep") & (frame["column"] == "mean")].iloc[0]
    assert deep["ours"] == 40.5 and deep["paired_delta"] == -1.0
    assert list(frame.loc[frame["method"] == "full", "column"]) == ["fold0", "fold1", "mean", "fbiou"]
    md = (out / "benchmark-toy.md").read_text()
    assert "### toy: mIoU and FB-IoU (no published numbers)" in md and "| 1-shot fold 1 |" in md
    assert "**Not the paper's setting**" in md and "paper" not in md.split("| runs |")[1].split("Cells:")[0]
    assert "[benchmark-toy.md](benchmark-toy.md)" in (out / "README.md").read_text()
    assert "toy" not in (out / "tableA3.md").read_text()
    # the benchmark's runs gone: its table goes too
    (runs / "toy" / "study" / "metrics.json").unlink()
    assert results.main(["--runs", str(runs), "--out", str(out)]) == 0
    assert not (out / "benchmark-toy.md").exists()


# -- an evaluation of an unconverged training's checkpoint (another run than the training) ------------------
def test_an_evaluation_carries_its_checkpoints_convergence_into_the_tables(tmp_path):
    """02_evaluate of a best.pt records the training's convergence with the evaluation: its line is marked "not
    converged" without the training in the same record; unknown (an authors' checkpoint) is not marked; the
    evaluation's own value wins over a training entry of its run, which is the fallback of older records."""
    runs = tmp_path / "runs"
    _rec(runs, "unconverged", _eval(0, 1, 3.0, converged=False))
    _rec(runs, "authors", _eval(0, 1, 60.0, model=R50))  # no converged: unknown
    _write(runs, "own-wins", "02_evaluate.ipynb", {"evaluations": [_eval(0, 1, 62.0, model=R50, dataset="coco",
                                                                         converged=True)],
                                                   "trainings": [_training("main", "HSNet", R50, converged=False)]},
           params={})
    evals = collect.collect(runs)["evaluations"].set_index("run")
    assert evals.loc["unconverged", "converged"] is False and pd.isna(evals.loc["authors", "converged"])
    assert evals.loc["own-wins", "converged"] is True
    frame = results.build_table(paper.TABLES["table1"], evals.reset_index(), pd.DataFrame(), curve_studies=[])
    status = frame[(frame["shot"] == 1) & (frame["column"] == "fold0") & (frame["n_runs"] == 1)].set_index(
        "backbone")["status"]
    assert status.to_dict() == {"resnet101": tables.NOT_CONVERGED, "resnet50": tables.MEASURED}
    assert frame["curves"].isna().all()  # no training among the runs: no learning-curve figure to name
