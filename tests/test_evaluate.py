"""evaluate() with a tiny randomly initialized HSNet at 64 px on the tiny layouts."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from hsnetlib.data import build_dataset
from hsnetlib.evaluate import evaluate
from hsnetlib.model import HSNet, HSNetConfig

RUN = dict(device="cpu", progress=False)
# Short runs leave some fold classes without episodes; that warning is tested once below.
pytestmark = pytest.mark.filterwarnings("ignore:.*fold classes without episodes")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return HSNet(HSNetConfig(backbone="resnet50", weights=None))


def fss(root, **kwargs):
    return build_dataset("fss", root, 0, "test", kwargs.pop("shot", 2), img_size=64, splits_dir=root / "splits", **kwargs)


def scored_pixels(episodes):
    # every scored pixel is in exactly one of: foreground intersection, background union
    return (episodes["fg_inter"] + episodes["bg_union"]).tolist()


def test_batched_equals_batch_size_one(fss_root, model):
    dataset = fss(fss_root)
    model.train()
    one = evaluate(model, dataset, batch_size=1, episodes=7, **RUN)
    three = evaluate(model, dataset, batch_size=3, episodes=7, **RUN)
    pd.testing.assert_frame_equal(one.episodes, three.episodes)
    pd.testing.assert_frame_equal(one.per_class, three.per_class)
    assert (one.miou, one.fbiou, one.ci95) == (three.miou, three.fbiou, three.ci95)
    assert one.episodes["fg_inter"].gt(0).any() and one.episodes["fg_inter"].lt(one.episodes["fg_union"]).any()
    assert one.episodes["episode"].tolist() == list(range(7))
    assert one.episodes["query"].tolist() == [dataset.episode(i).query for i in range(7)]
    assert model.training  # evaluation leaves the mode as it found it


def test_original_size_scores_the_model_prediction_at_the_label_resolution(fss_root, model):
    dataset = fss(fss_root, shot=1, use_original_imgsize=True)
    with pytest.warns(UserWarning, match=r"without episodes count as IoU 0 in mIoU: \['fig', 'gnu'\]"):
        result = evaluate(model, dataset, batch_size=2, episodes=4, **RUN)
    sizes = [dataset[i]["org_query_imsize"].prod().item() for i in range(4)]
    assert scored_pixels(result.episodes) == sizes
    item = dataset[3]
    with torch.inference_mode():
        pred = model.eval().predict_mask(item["query_img"][None], item["support_imgs"][None], item["support_masks"][None],
                                         original_size=tuple(item["org_query_imsize"].tolist()))[0].bool()
    gt = item["query_mask"].bool()
    row = result.episodes.iloc[3]
    assert (row.fg_inter, row.fg_union) == ((pred & gt).sum().item(), (pred | gt).sum().item())
    egg = result.per_class.set_index("class_name").loc["egg"]
    assert egg.fg_inter == result.episodes["fg_inter"].sum() and egg.episodes == 4
    assert result.miou == pytest.approx(100 * egg.fg_inter / egg.fg_union / 3)


def test_aspect_resize_scores_only_the_image(fss_root, model):
    dataset = fss(fss_root, shot=1, resize="aspect")
    result = evaluate(model, dataset, episodes=2, **RUN)
    assert scored_pixels(result.episodes) == [dataset[i]["query_valid_size"].prod().item() for i in range(2)]
    assert all(n < 64 * 64 for n in scored_pixels(result.episodes))
    original = evaluate(model, fss(fss_root, shot=1, resize="aspect", use_original_imgsize=True), episodes=2, **RUN)
    assert scored_pixels(original.episodes) == [dataset[i]["org_query_imsize"].prod().item() for i in range(2)]


def test_pascal_ignore_label_on_and_off(pascal_root, model):
    dataset = build_dataset("pascal", pascal_root, 0, "test", 1, img_size=64, splits_dir=pascal_root / "splits")
    on = evaluate(model, dataset, episodes=6, **RUN)
    off = evaluate(model, dataset, ignore_label=False, episodes=6, **RUN)
    boundary = [int(dataset[i]["query_ignore_idx"].sum()) for i in range(6)]
    assert min(boundary) > 0
    assert scored_pixels(on.episodes) == [64 * 64 - b for b in boundary]
    assert scored_pixels(off.episodes) == [64 * 64] * 6
    assert on.episodes["fg_inter"].equals(off.episodes["fg_inter"])  # boundary pixels are never foreground
    assert (off.episodes["fg_union"] >= on.episodes["fg_union"]).all()
    assert on.config["ignore_label"] and not off.config["ignore_label"]


def test_pascal_at_the_original_size_with_the_ignore_label_against_the_raw_masks(pascal_root, model):
    """Scores recomputed from the PNG label files themselves: foreground = the episode's class value,
    boundary (255) pixels in no count; mIoU over the fold's 5 classes, FB-IoU from the summed areas."""
    dataset = build_dataset("pascal", pascal_root, 0, "test", 1, img_size=64, splits_dir=pascal_root / "splits",
                            use_original_imgsize=True)
    n = 8  # classes 0, 1 and 2; episode 1's query shows class 0 as background
    result = evaluate(model, dataset, episodes=n, **RUN)
    sums = {c: np.zeros(4, np.int64) for c in dataset.class_ids}
    for i in range(n):
        ep, item = dataset.episode(i), dataset[i]
        label = np.asarray(Image.open(pascal_root / "VOC2012" / "SegmentationClassAug" / f"{ep.query}.png"))
        gt, scored = label == ep.class_id + 1, label != 255
        assert label.shape != (64, 64) and (~scored).any()  # every query has boundary pixels to ignore
        with torch.inference_mode():
            pred = model.eval().predict_mask(item["query_img"][None], item["support_imgs"][None],
                                             item["support_masks"][None], original_size=label.shape)[0].numpy() == 1
        areas = np.array([(pred & gt & scored).sum(), ((pred | gt) & scored).sum(),
                          (~pred & ~gt & scored).sum(), ((~pred | ~gt) & scored).sum()])
        row = result.episodes.iloc[i]
        assert (row.class_id, row.query) == (ep.class_id, ep.query)
        assert [row.fg_inter, row.fg_union, row.bg_inter, row.bg_union] == areas.tolist(), ep.query
        sums[ep.class_id] += areas
    ious = [s[0] / max(s[1], 1) for s in sums.values()]
    total = sum(sums.values())
    assert result.miou == pytest.approx(100 * np.mean(ious))
    assert result.fbiou == pytest.approx(50 * (total[0] / total[1] + total[2] / total[3]))
    assert 0 < result.miou < 100


def test_seeds_nshot_and_saved_files(fss_root, model, tmp_path):
    dataset = fss(fss_root, shot=1)
    result = evaluate(model, dataset, nshot=2, seeds=[0, 1], episodes=3, **RUN)
    assert result.per_seed["seed"].tolist() == [0, 1]
    assert result.miou == pytest.approx(result.per_seed["miou"].mean())
    assert result.miou_std == pytest.approx(np.std(result.per_seed["miou"], ddof=1))
    assert result.per_seed.eval("ci95_low <= miou <= ci95_high").all()
    for seed in (0, 1):
        expected = dataset.with_episodes(seed=seed, shot=2)
        drawn = result.episodes[result.episodes["seed"] == seed]["supports"].tolist()
        assert drawn == ["|".join(expected.episode(i).supports) for i in range(3)]
    assert set(result.per_class["seed"]) == {0, 1} and len(result.per_class) == 2 * len(dataset.class_ids)

    out = result.save(tmp_path / "eval")
    pd.testing.assert_frame_equal(pd.read_csv(out / "episodes.csv", keep_default_na=False), result.episodes,
                                  check_dtype=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["miou"] == pytest.approx(result.miou) and metrics["ci95"] == list(result.ci95)
    assert metrics["config"]["dataset"]["benchmark"] == "fss" and metrics["config"]["nshot"] == 2
    assert metrics["config"]["model"]["backbone"] == "resnet50" and "torch" in metrics["config"]["env"]
    assert len(metrics["per_seed"]) == 2


def test_bad_arguments(fss_root, model):
    with pytest.raises(ValueError, match="batch_size=0"):
        evaluate(model, fss(fss_root), batch_size=0, **RUN)
    with pytest.raises(ValueError, match="episodes=0"):
        evaluate(model, fss(fss_root), episodes=0, **RUN)
