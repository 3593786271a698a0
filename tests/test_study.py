"""Comparing ablation variants (hsnetlib.experiments): the paired bootstrap over shared episodes, the training
entries of a study (converged, full history) and gathering finished trainings from their run folders."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from hsnetlib import experiments
from hsnetlib.evaluate import EvalResult
from hsnetlib.metrics import bootstrap_miou


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
    paired = experiments.paired_bootstrap(variant, reference)
    by_hand = (50 / 100 + 60 / 120) / 2 * 100 - (40 / 100 + 50 / 120) / 2 * 100
    assert paired["delta_miou"] == pytest.approx(by_hand)
    assert paired["delta_miou"] == pytest.approx(variant.miou - reference.miou)
    assert paired["episodes"] == 4
    low, high = paired["ci95"]
    assert 0 <= low <= high  # the variant is never worse on any episode


def test_identical_models_differ_by_exactly_zero():
    result = fake_result([5, 7, 1, 9], [10, 10, 10, 10], [0, 1, 0, 1])
    assert experiments.paired_bootstrap(result, result) == {"delta_miou": 0.0, "ci95": [0.0, 0.0], "episodes": 4}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paired_interval_is_tighter_than_separate_intervals(seed):
    """Episode difficulty shared by both models cancels in the paired difference."""
    rng = np.random.default_rng(seed)
    n, classes = 200, rng.integers(0, 4, 200)
    union = rng.integers(50, 100, n)
    difficulty = rng.uniform(0.1, 0.9, n)
    reference = fake_result((union * difficulty).astype(int), union, classes, classes=range(4))
    variant = fake_result((union * np.clip(difficulty + 0.05, 0, 1)).astype(int), union, classes, classes=range(4))
    low, high = experiments.paired_bootstrap(variant, reference)["ci95"]
    separate = [bootstrap_miou(r.episodes["fg_inter"].to_numpy(), r.episodes["fg_union"].to_numpy(),
                               r.episodes["class_id"].to_numpy(), range(4)) for r in (variant, reference)]
    assert 0 < low < high
    assert high - low < min(h - l for l, h in separate) / 3


def test_paired_comparison_refuses_different_episodes():
    a = fake_result([1, 2], [4, 4], [0, 1])
    b = fake_result([1, 2, 3], [4, 4, 4], [0, 1, 1])
    with pytest.raises(ValueError, match="same episodes"):
        experiments.paired_bootstrap(a, b)
    c = fake_result([1, 2], [4, 4], [1, 0])
    with pytest.raises(ValueError, match="same episodes"):
        experiments.paired_bootstrap(a, c)


@pytest.mark.parametrize("history, expected", [
    ([{"val_miou": 0.0}, {"val_miou": 3.0}], False),
    ([{"val_miou": 0.0}, {"val_miou": experiments.CONVERGED_MIOU}, {"val_miou": 4.0}], True),
])
def test_converged_means_validation_left_all_background(history, expected):
    assert experiments.converged(history) is expected


# -- a small study on real trainings -----------------------------------------------------------------------
SETTINGS = experiments.TrainSettings(weights=None, img_size=64, epochs=2, bsz=2, train_episodes=4, val_episodes=4,
                                     device="cpu", progress=False)


@pytest.fixture(scope="module")
def study(pascal_root, tmp_path_factory):
    """Two variants trained alike (fold 0), in their own run folders."""
    data = experiments.Data("pascal", pascal_root, synthetic=True)
    out = tmp_path_factory.mktemp("study")
    summaries = experiments.train_variants(data, 0, out, {"full": {}, "deep": {"hypercorrelation": "deep"}},
                                           SETTINGS, resume=False)
    return data, out, summaries


def test_gathered_trainings_are_the_trained_ones(study):
    data, out, trained = study
    gathered = experiments.gather_trainings({"full": out / "full", "deep": out / "deep"}, data, 0)
    for label, summary in gathered.items():
        pd.testing.assert_frame_equal(pd.DataFrame(summary["history"]), pd.DataFrame(trained[label]["history"]),
                                      check_dtype=False)
        assert (summary["best_epoch"], summary["best_checkpoint"]) == (trained[label]["best_epoch"],
                                                                       trained[label]["best_checkpoint"])
    assert experiments.variant_options(gathered["deep"])["hypercorrelation"] == "deep"


def test_evaluated_study_has_paired_deltas_and_training_curves(study):
    data, out, trained = study
    records = experiments.evaluate_variants(data, 0, "hypercorrelation", trained, "full", [1, 2], 3, device="cpu",
                                            progress=False)
    evaluations = {(e["label"], e["nshot"]): e for e in records["evaluations"]}
    assert set(evaluations) == {("full", 1), ("full", 2), ("deep", 1), ("deep", 2)}
    for shot in (1, 2):
        reference, variant = evaluations["full", shot], evaluations["deep", shot]
        assert "paired" not in reference
        assert variant["paired"]["reference"] == "full" and variant["paired"]["episodes"] == 3
        assert variant["paired"]["delta_miou"] == pytest.approx(variant["miou"] - reference["miou"])
        assert variant["episodes_digest"] == reference["episodes_digest"]
    assert evaluations["full", 1]["episodes_digest"] != evaluations["full", 2]["episodes_digest"]
    for entry in records["trainings"]:
        assert len(entry["history"]) == SETTINGS.epochs and isinstance(entry["converged"], bool)
        assert entry["converged"] == experiments.converged(entry["history"])
    table = experiments.variant_table(records)
    assert table["delta_miou"].isna().tolist() == [True, False, True, False]


def test_gathering_refuses_unfinished_foreign_or_unlike_trainings(study, tmp_path):
    data, out, trained = study
    unfinished = tmp_path / "unfinished"
    shutil.copytree(out / "deep", unfinished)
    config = json.loads((unfinished / "config.json").read_text())
    (unfinished / "config.json").write_text(json.dumps({**config, "epochs": 5}))
    with pytest.raises(ValueError, match="unfinished: 2 of 5 epochs"):
        experiments.gather_trainings({"deep": unfinished}, data, 0)
    with pytest.raises(FileNotFoundError, match="no finished training"):
        experiments.gather_trainings({"deep": tmp_path / "missing"}, data, 0)
    with pytest.raises(ValueError, match="not of pascal fold 1"):
        experiments.gather_trainings({"deep": out / "deep"}, data, 1)
    unlike = tmp_path / "unlike"
    shutil.copytree(out / "deep", unlike)
    (unlike / "config.json").write_text(json.dumps({**config, "lr": 0.01}))
    with pytest.raises(ValueError, match=r"differ in more than the variant \(lr: 0.001 vs 0.01\)"):
        experiments.gather_trainings({"full": out / "full", "deep": unlike}, data, 0)


def test_cached_training_is_reused_and_the_cache_entry_stays_intact(pascal_root, tmp_path):
    """A repeated configuration is found in the cache (not trained again): checkpoints are shared (hard links,
    only ever replaced), metrics.csv is a copy, so a later resume in one run folder cannot change the entry."""
    data = experiments.Data("pascal", pascal_root, synthetic=True)
    settings = experiments.TrainSettings(weights=None, img_size=64, epochs=1, bsz=2, train_episodes=2,
                                         val_episodes=2, device="cpu", progress=False)
    first = experiments.train_model(data, 0, tmp_path / "a", settings, resume="auto", cache_dir=tmp_path / "cache")
    again = experiments.train_model(data, 0, tmp_path / "b", settings, resume="auto", cache_dir=tmp_path / "cache")
    (entry,) = [p for p in (tmp_path / "cache").iterdir()]
    assert "reused_from" not in first and again["reused_from"] == str(entry)
    assert again["history"] == first["history"] and again["best_checkpoint"] == str(tmp_path / "b" / "best.pt")
    assert (tmp_path / "b" / "best.pt").stat().st_ino == (entry / "best.pt").stat().st_ino
    assert (tmp_path / "b" / "metrics.csv").stat().st_ino != (entry / "metrics.csv").stat().st_ino
    assert (tmp_path / "b" / "metrics.csv").read_text() == (tmp_path / "a" / "metrics.csv").read_text()
