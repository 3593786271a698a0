"""Ablation studies (hsnetlib.suite.study): the registry, the paired bootstrap over shared episodes, the training
entries of a study (converged, full history) and gathering finished trainings from their run folders."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from hsnetlib.evaluate import EvalResult
from hsnetlib.model import HSNetConfig, variant_fields
from hsnetlib.suite import cache, notebook, study
from hsnetlib.suite.records import TrainingEntry
from hsnetlib.metrics import bootstrap_miou, paired_bootstrap


def compare(result: EvalResult, reference: EvalResult) -> dict:
    """The comparison a study makes (hsnetlib.suite.study.evaluate_variants): over the fold's classes."""
    return paired_bootstrap(result.episodes, reference.episodes, fold_classes=reference.per_class["class_id"].tolist())


def fake_result(fg_inter, fg_union, class_ids, classes=(0, 1)) -> EvalResult:
    """An EvalResult holding the given per-episode foreground areas (the fields the comparison reads)."""
    n = len(fg_inter)
    episodes = pd.DataFrame({"seed": 0, "episode": range(n), "class_id": class_ids, "query": [f"q{i}" for i in range(n)],
                             "supports": [f"s{i}" for i in range(n)], "fg_inter": fg_inter, "fg_union": fg_union})
    sums = episodes.groupby("class_id")[["fg_inter", "fg_union"]].sum().reindex(list(classes), fill_value=0)
    iou = (sums["fg_inter"] / sums["fg_union"].clip(lower=1) * 100).to_numpy()
    per_class = pd.DataFrame({"seed": 0, "class_id": list(classes), "iou": iou})
    return EvalResult(miou=float(iou.mean()), fbiou=0.0, ci95=(0.0, 0.0), per_class=per_class, episodes=episodes,
                      per_seed=pd.DataFrame())


def test_paired_delta_is_the_miou_difference_by_hand():
    classes = [0, 0, 1, 1]
    reference = fake_result([10, 30, 0, 50], [40, 60, 20, 100], classes)  # class IoUs 40/100, 50/120
    variant = fake_result([20, 30, 10, 50], [40, 60, 20, 100], classes)   # 50/100, 60/120
    paired = compare(variant, reference)
    by_hand = (50 / 100 + 60 / 120) / 2 * 100 - (40 / 100 + 50 / 120) / 2 * 100
    assert paired["delta_miou"] == pytest.approx(by_hand)
    assert paired["delta_miou"] == pytest.approx(variant.miou - reference.miou)
    assert paired["episodes"] == 4
    low, high = paired["ci95"]
    assert 0 <= low <= high  # the variant is never worse on any episode


def test_identical_models_differ_by_exactly_zero():
    result = fake_result([5, 7, 1, 9], [10, 10, 10, 10], [0, 1, 0, 1])
    assert compare(result, result) == {"delta_miou": 0.0, "ci95": [0.0, 0.0], "episodes": 4}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paired_interval_is_tighter_than_separate_intervals(seed):
    """Episode difficulty shared by both models cancels in the paired difference."""
    rng = np.random.default_rng(seed)
    n, classes = 200, rng.integers(0, 4, 200)
    union = rng.integers(50, 100, n)
    difficulty = rng.uniform(0.1, 0.9, n)
    reference = fake_result((union * difficulty).astype(int), union, classes, classes=range(4))
    variant = fake_result((union * np.clip(difficulty + 0.05, 0, 1)).astype(int), union, classes, classes=range(4))
    low, high = compare(variant, reference)["ci95"]
    separate = [bootstrap_miou(r.episodes["fg_inter"].to_numpy(), r.episodes["fg_union"].to_numpy(),
                               r.episodes["class_id"].to_numpy(), range(4)) for r in (variant, reference)]
    assert 0 < low < high
    assert high - low < min(h - l for l, h in separate) / 3


def test_paired_comparison_refuses_different_episodes():
    a = fake_result([1, 2], [4, 4], [0, 1])
    b = fake_result([1, 2, 3], [4, 4, 4], [0, 1, 1])
    with pytest.raises(ValueError, match="same episodes"):
        compare(a, b)
    c = fake_result([1, 2], [4, 4], [1, 0])
    with pytest.raises(ValueError, match="same episodes"):
        compare(a, c)


@pytest.mark.parametrize("history, expected", [
    ([{"val_miou": 0.0}, {"val_miou": 3.0}], False),
    ([{"val_miou": 0.0}, {"val_miou": notebook.CONVERGED_MIOU}, {"val_miou": 4.0}], True),
])
def test_converged_means_validation_left_all_background(history, expected):
    assert notebook.converged(history) is expected


# -- the registry ---------------------------------------------------------------------------------------------
def test_every_study_varies_a_model_option_and_its_reference_is_the_default():
    defaults = HSNetConfig(weights=None)
    assert {study.get_study(name).option for name in study.list_studies()} == set(variant_fields())
    pyramid = study.get_study("pyramid")
    assert pyramid.reference == pyramid.label(defaults.pyramid) == "1-2-3"
    assert study.get_study("finetune").reference == "frozen"


def test_an_unknown_study_lists_the_registered_ones():
    with pytest.raises(ValueError, match="registered: hypercorrelation, pyramid"):
        study.get_study("pyramids")
    with pytest.raises(ValueError, match="not a model variant option"):
        study.register_study(study.Study("lr", "lr"))


# -- a small study on real trainings -----------------------------------------------------------------------
PARAMS = dict(fold=0, backbone="resnet50", weights="none", img_size=64, epochs=2, bsz=2, lr=1e-3, train_episodes=4,
              val_episodes=4, seed=0, device="cpu")


@pytest.fixture(scope="module")
def trained(pascal_root, tmp_path_factory):
    """Two variants of the hypercorrelation study trained alike (fold 0), in their own run folders."""
    data = notebook.Data("pascal", pascal_root, synthetic=True)
    out = tmp_path_factory.mktemp("study")
    summaries = study.train_variants(study.get_study("hypercorrelation"), data, out, PARAMS, ["full", "deep"],
                                     resume=False)
    return data, out, summaries


def test_gathered_trainings_are_the_trained_ones(trained):
    data, out, summaries = trained
    gathered = study.gather_trainings({"full": out / "full", "deep": out / "deep"}, data, 0)
    for label, summary in gathered.items():
        pd.testing.assert_frame_equal(pd.DataFrame(summary["history"]), pd.DataFrame(summaries[label]["history"]),
                                      check_dtype=False)
        assert (summary["best_epoch"], summary["best_checkpoint"]) == (summaries[label]["best_epoch"],
                                                                       summaries[label]["best_checkpoint"])
    assert study.variant_options(gathered["deep"])["hypercorrelation"] == "deep"


def test_evaluated_study_has_paired_deltas_and_training_curves(trained):
    data, out, summaries = trained
    result = study.evaluate_variants(study.get_study("hypercorrelation"), data, 0, summaries, "full", [1, 2], 3,
                                     device="cpu", progress=False)
    evaluations = {(e.label, e.nshot): e for e in result.evaluations}
    assert set(evaluations) == {("full", 1), ("full", 2), ("deep", 1), ("deep", 2)}
    for shot in (1, 2):
        reference, variant = evaluations["full", shot], evaluations["deep", shot]
        assert reference.paired is None
        assert variant.paired.reference == "full" and variant.paired.episodes == 3
        assert variant.paired.delta_miou == pytest.approx(variant.miou - reference.miou)
        assert variant.episodes_digest == reference.episodes_digest
    assert evaluations["full", 1].episodes_digest != evaluations["full", 2].episodes_digest
    for entry in result.trainings:
        assert len(entry.history) == PARAMS["epochs"] and isinstance(entry.converged, bool)
        assert entry.converged == notebook.converged(entry.history)
    converged = {t.label: t.converged for t in result.trainings}
    assert all(e.converged is converged[e.label] for e in result.evaluations)  # each number knows its training's
    table = study.variant_table(result)
    assert table["delta_miou"].isna().tolist() == [True, False, True, False]
    study.check_result(result, [1, 2])
    assert set(result.summary()) == {f"{label}_{k}shot_miou" for label in ("full", "deep") for k in (1, 2)} | {
        "deep_1shot_delta", "deep_2shot_delta"}


def test_gathering_refuses_unfinished_foreign_or_unlike_trainings(trained, tmp_path):
    data, out, summaries = trained
    unfinished = tmp_path / "unfinished"
    shutil.copytree(out / "deep", unfinished)
    config = json.loads((unfinished / "config.json").read_text())
    (unfinished / "config.json").write_text(json.dumps({**config, "epochs": 5}))
    with pytest.raises(ValueError, match="unfinished: 2 of 5 epochs"):
        study.gather_trainings({"deep": unfinished}, data, 0)
    with pytest.raises(FileNotFoundError, match="no finished training"):
        study.gather_trainings({"deep": tmp_path / "missing"}, data, 0)
    with pytest.raises(ValueError, match="not of pascal fold 1"):
        study.gather_trainings({"deep": out / "deep"}, data, 1)
    unlike = tmp_path / "unlike"
    shutil.copytree(out / "deep", unlike)
    (unlike / "config.json").write_text(json.dumps({**config, "lr": 0.01}))
    with pytest.raises(ValueError, match=r"differ in more than the variant \(lr: 0.001 vs 0.01\)"):
        study.gather_trainings({"full": out / "full", "deep": unlike}, data, 0)
    elsewhere = tmp_path / "elsewhere"  # where a training ran (its folder, device) does not matter
    shutil.copytree(out / "deep", elsewhere)
    (elsewhere / "config.json").write_text(json.dumps({**config, "device": "cuda", "workers": 3}))
    study.gather_trainings({"full": out / "full", "deep": elsewhere}, data, 0)


def test_cached_training_is_reused_and_the_cache_entry_stays_intact(pascal_root, tmp_path):
    """A repeated configuration is found in the cache (not trained again): checkpoints are shared (hard links,
    only ever replaced), metrics.csv is a copy, so a later resume in one run folder cannot change the entry."""
    data = notebook.Data("pascal", pascal_root, synthetic=True)
    params = {**PARAMS, "epochs": 1, "train_episodes": 2, "val_episodes": 2}
    first = notebook.train_model(notebook.train_config(data, tmp_path / "a", params, resume="auto"),
                                 cache_dir=tmp_path / "cache")
    again = notebook.train_model(notebook.train_config(data, tmp_path / "b", params, resume="auto"),
                                 cache_dir=tmp_path / "cache")
    (entry,) = [p for p in (tmp_path / "cache").iterdir() if p.name != cache.LOCKS_DIR]
    assert "reused_from" not in first and again["reused_from"] == str(entry)
    assert again["history"] == first["history"] and again["best_checkpoint"] == str(tmp_path / "b" / "best.pt")
    assert (tmp_path / "b" / "best.pt").stat().st_ino == (entry / "best.pt").stat().st_ino
    assert (tmp_path / "b" / "metrics.csv").stat().st_ino != (entry / "metrics.csv").stat().st_ino
    assert (tmp_path / "b" / "metrics.csv").read_text() == (tmp_path / "a" / "metrics.csv").read_text()


# -- learning curves: one drawing (hsnetlib.viz.draw_learning_curves) behind every figure ---------------------------
HISTORIES = {"full": [{"epoch": 0, "train_loss": 0.9, "val_loss": 0.8, "train_miou": 5.0, "val_miou": 12.0},
                      {"epoch": 1, "train_loss": 0.7, "val_loss": 0.6, "train_miou": 20.0, "val_miou": 30.0}],
             "deep": [{"epoch": 0, "train_loss": 0.9, "val_loss": 0.9, "train_miou": 1.0, "val_miou": 0.0},
                      {"epoch": 1, "train_loss": 0.9, "val_loss": 0.9, "train_miou": 2.0, "val_miou": 0.0}]}


def _curves(ax) -> dict[tuple[str, str], list[float]]:
    """(colour, line style) -> y values of every drawn line of a panel."""
    import matplotlib.colors

    return {(matplotlib.colors.to_hex(line.get_color()), line.get_linestyle()): list(line.get_ydata())
            for line in ax.lines}


def test_the_studies_curves_and_overview_draw_through_the_one_learning_curves_function():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from hsnetlib import viz

    result = study.StudyResult(study.get_study("hypercorrelation"), "full", trainings=[
        TrainingEntry(study="hypercorrelation", label=label, dataset="pascal", fold=0, model={},
                            history=history, converged=notebook.converged(history))
        for label, history in HISTORIES.items()])
    fig = study.curves_figure(result, "fold 0")
    ax, = fig.axes
    fig_ref, ax_ref = plt.subplots()
    assert viz.draw_learning_curves(ax_ref, [t.to_dict() for t in result.trainings])
    assert _curves(ax) == _curves(ax_ref) and len(_curves(ax)) == 4  # train and val of each variant
    assert sorted(map(sorted, _curves(ax).values())) == sorted(
        sorted(r[f"{split}_miou"] for r in h) for h in HISTORIES.values() for split in ("train", "val"))
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["full", "deep (not converged)", "val", "train"] and ax.get_title() == "fold 0"

    table = pd.DataFrame([{"label": label, "nshot": 1, "miou": 10.0, "ci95_low": 9.0, "ci95_high": 11.0,
                           "converged": label == "full"} for label in HISTORIES])
    overview = viz.ablation_overview(table, [t.to_dict() for t in result.trainings])
    assert sorted(_curves(overview.axes[1]).values()) == [[0.0, 0.0], [12.0, 30.0]]  # validation only
    one = viz.learning_curves(HISTORIES["full"])
    loss, miou = one.axes
    assert sorted(_curves(loss).values()) == [[0.8, 0.6], [0.9, 0.7]] and loss.get_ylabel() == "loss"
    assert sorted(_curves(miou).values()) == [[5.0, 20.0], [12.0, 30.0]] and miou.get_ylabel() == "mIoU (%)"
    for f in (fig, fig_ref, overview, one):
        plt.close(f)
