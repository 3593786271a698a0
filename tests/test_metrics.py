"""IoUMeter and the bootstrap interval on hand-computed cases."""
import numpy as np
import pytest
import torch

from hsnetlib.metrics import IoUMeter, bootstrap_miou, episode_areas


def t(rows):
    return torch.tensor(rows)[None]  # (1, H, W)


# One 2x4 episode:           pred        gt          ignore
PRED = t([[1, 1, 0, 0], [1, 0, 0, 0]])
GT = t([[1, 0, 0, 0], [1, 1, 0, 0]])
IGNORE = t([[0, 0, 0, 1], [0, 1, 0, 0]])


def test_episode_areas_by_hand():
    # fg: inter {(0,0),(1,0)} = 2, union adds (0,1),(1,1) = 4; bg: inter (0,2),(0,3),(1,2),(1,3) = 4, union 6
    assert episode_areas(PRED, GT).tolist() == [[2, 4, 4, 6]]
    # ignoring (0,3) and (1,1): fg union loses (1,1) -> 3; bg inter/union lose (0,3), bg union also (1,1)
    assert episode_areas(PRED, GT, IGNORE).tolist() == [[2, 3, 3, 4]]


def test_meter_miou_fbiou_and_ignore_switch():
    on, off = IoUMeter([3, 7], ignore_label=True), IoUMeter([3, 7], ignore_label=False)
    second_pred, second_gt = t([[1, 1, 1, 1], [0, 0, 0, 0]]), t([[0, 0, 1, 1], [0, 0, 1, 1]])  # fg 2/6, bg 2/6
    for meter in (on, off):
        meter.update(torch.cat([PRED, second_pred]), torch.cat([GT, second_gt]), [3, 7], torch.cat([IGNORE, 0 * IGNORE]))
    # with ignore: class 3 fg 2/3, class 7 fg 2/6; FB: fg (2+2)/(3+6), bg (3+2)/(4+6)
    assert on.miou == pytest.approx((2 / 3 + 2 / 6) / 2 * 100)
    assert on.fbiou == pytest.approx((4 / 9 + 5 / 10) / 2 * 100)
    # without: class 3 fg 2/4
    assert off.miou == pytest.approx((2 / 4 + 2 / 6) / 2 * 100)
    assert off.fbiou == pytest.approx((4 / 10 + 6 / 12) / 2 * 100)
    assert on.per_class[["class_id", "episodes", "fg_inter", "fg_union"]].values.tolist() == [[3, 1, 2, 3], [7, 1, 2, 6]]


def test_sums_accumulate_per_class_before_the_ratio():
    meter = IoUMeter([0])
    meter.update(t([[1, 1, 1, 1]]), t([[1, 1, 1, 1]]), [0])  # 4/4
    meter.update(t([[1, 0, 0, 0]]), t([[0, 1, 0, 0]]), [0])  # 0/2
    assert meter.miou == pytest.approx(4 / 6 * 100)  # not the mean of per-episode IoUs (50)


def test_empty_union_counts_as_zero_and_stays_in_the_mean():
    meter = IoUMeter([1, 2, 5])
    meter.update(t([[1, 1], [0, 0]]), t([[1, 1], [0, 0]]), [1])  # perfect: 100
    meter.update(t([[0, 0], [0, 0]]), t([[0, 0], [0, 0]]), [2])  # empty foreground union
    # class 5 never seen: union 0 too
    assert meter.miou == pytest.approx(100 / 3)
    table = meter.per_class.set_index("class_id")
    assert table.loc[2, "fg_union"] == 0 and table.loc[2, "iou"] == 0
    assert table.loc[5, "episodes"] == 0 and table.loc[5, "iou"] == 0
    assert IoUMeter([0]).fbiou == 0  # nothing at all: both ratios 0, no division by zero


def test_meter_rejects_bad_input():
    meter = IoUMeter([0, 1])
    with pytest.raises(ValueError, match="not one of the meter's classes"):
        meter.update(PRED, GT, [4])
    with pytest.raises(ValueError, match="only 0 and 1"):
        meter.update(PRED * 255, GT, [0])
    with pytest.raises(ValueError, match="must both be"):
        meter.update(PRED, GT[:, :1], [0])
    with pytest.raises(ValueError, match="distinct"):
        IoUMeter([1, 1])


def test_bootstrap_interval():
    rng = np.random.default_rng(0)
    classes = np.repeat([0, 1], 50)
    union = rng.integers(50, 100, size=100)
    inter = (union * rng.uniform(0.2, 0.8, size=100)).astype(int)
    low, high = bootstrap_miou(inter, union, classes, [0, 1], n_boot=500)
    point = np.mean([inter[classes == c].sum() / union[classes == c].sum() for c in (0, 1)]) * 100
    assert low < point < high and high - low < 20
    assert bootstrap_miou(inter, union, classes, [0, 1], n_boot=500) == (low, high)  # fixed seed
    # identical episodes per class: every replicate equals the point estimate
    same = bootstrap_miou(np.full(100, 30), np.full(100, 60), classes, [0, 1], n_boot=200)
    assert same == pytest.approx((50.0, 50.0))
    # two groups (seeds) with different per-class IoU: the statistic is the mean over groups
    groups = np.repeat([0, 1], 100)
    both = bootstrap_miou(np.r_[np.full(100, 30), np.full(100, 60)], np.full(200, 60), np.r_[classes, classes],
                          [0, 1], groups=groups, n_boot=200)
    assert both == pytest.approx((75.0, 75.0))


def test_paired_bootstrap_of_shared_episodes():
    import pandas as pd

    from hsnetlib.metrics import paired_bootstrap

    rng = np.random.default_rng(1)
    n = 80
    union = rng.integers(50, 100, size=n)
    base = pd.DataFrame({"seed": 0, "episode": range(n), "class_id": np.repeat([0, 1], n // 2), "query": "q",
                         "supports": "s", "fg_union": union, "fg_inter": (union * rng.uniform(0.1, 0.5, n)).astype(int)})
    better = base.assign(fg_inter=np.minimum(union, base["fg_inter"] + 10))
    same = paired_bootstrap(base, base, n_boot=200)
    assert same == {"delta_miou": 0.0, "ci95": [0.0, 0.0], "episodes": n}
    paired = paired_bootstrap(better, base, fold_classes=[0, 1], n_boot=500)
    point = np.mean([(better["fg_inter"][base["class_id"] == c].sum() - base["fg_inter"][base["class_id"] == c].sum())
                     / union[base["class_id"] == c].sum() for c in (0, 1)]) * 100
    assert paired["delta_miou"] == pytest.approx(point) and paired["ci95"][0] > 0
    # pairing removes the shared episode difficulty: narrower than either model's own interval
    own = bootstrap_miou(better["fg_inter"].to_numpy(), union, base["class_id"].to_numpy(), [0, 1], n_boot=500)
    assert paired["ci95"][1] - paired["ci95"][0] < own[1] - own[0]
    # an extra fold class without episodes counts as IoU 0 in both means
    assert paired_bootstrap(better, base, fold_classes=[0, 1, 2], n_boot=500)["delta_miou"] == pytest.approx(point * 2 / 3)
    with pytest.raises(ValueError, match="same episodes"):
        paired_bootstrap(better.iloc[1:], base)
