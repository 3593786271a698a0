"""CD-FSS target sets (cdfss-protocol.md) on tiny data in their real layouts: listings, episodes drawn as
the spec words them, options recorded, pooled scoring of the one-class set, HSNet's FSS-1000 episodes."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import global_numpy_seed, write_pair
from hsnetlib.data import build_dataset
from hsnetlib.metrics import IoUMeter

DEEPGLOBE_COUNTS = {"1": 3, "2": 2, "3": 4, "4": 2, "5": 3, "6": 2}
ISIC_COUNTS = {"1": 4, "2": 3, "3": 2}


def _mask(rng, shape=(30, 40)):
    mask = np.zeros(shape, np.uint8)
    top, left = int(rng.integers(0, 12)), int(rng.integers(0, 18))
    mask[top: top + 12, left: left + 16] = 255
    return mask


@pytest.fixture(scope="module")
def cdfss_root(tmp_path_factory) -> Path:
    """Deepglobe, ISIC and Chest X-ray trees with a few images per class and files the listings must skip."""
    root = tmp_path_factory.mktemp("cdfss")
    rng = np.random.default_rng(5)
    for folder, n in DEEPGLOBE_COUNTS.items():
        base = root / "Deepglobe" / folder / "test"
        for k in range(n):
            stem = f"{100 + 7 * k:03d}{folder}_{k}{5 - k}"
            write_pair(base / "origin" / f"{stem}.jpg", base / "groundtruth" / f"{stem}.png", _mask(rng), rng)
            rgb = np.repeat(np.asarray(Image.open(base / "groundtruth" / f"{stem}.png"))[..., None], 3, axis=2)
            Image.fromarray(rgb).save(base / "groundtruth" / f"{stem}.png")  # 3-channel, as data_prep writes them
        (base / "origin" / "notes.txt").write_text("not an image")
        write_pair(base / "origin" / "x.b.jpg", base / "groundtruth" / "x.png", _mask(rng), rng)  # 2nd piece "b"
    isic = root / "ISIC"
    for folder, n in ISIC_COUNTS.items():
        for k in range(n):
            image_id = f"ISIC_{int(folder) * 1000 + k:07d}"
            write_pair(isic / "ISIC2018_Task1-2_Training_Input" / folder / f"{image_id}.jpg",
                       isic / "ISIC2018_Task1_Training_GroundTruth" / f"{image_id}_segmentation.png", _mask(rng), rng)
    lung = root / "LungSegmentation"
    for k, name in enumerate(["CHNCXR_0001_0", "MCUCXR_0002_0", "CHNCXR_0003_0", "MCUCXR_0004_0", "CHNCXR_0005_0"]):
        mask_name = f"{name}_mask.png" if name.startswith("CHN") else f"{name}.png"
        write_pair(lung / "CXR_png" / f"{name}.png", lung / "masks" / mask_name, _mask(rng), rng)
        Image.open(lung / "CXR_png" / f"{name}.png").convert("L").save(lung / "CXR_png" / f"{name}.png")
    (lung / "masks" / "Thumbs.db").write_bytes(b"\0")
    return root


def spec_class_lists(root: Path, benchmark: str) -> list[list[str]]:
    """Per class, Python-sorted full paths of the files the spec's filter keeps (section 2)."""
    def keep(folder, extension):
        return sorted(str(p) for p in folder.iterdir() if p.name.split(".")[1:2] == [extension])
    if benchmark == "deepglobe":
        return [keep(root / "Deepglobe" / str(c) / "test" / "origin", "jpg") for c in range(1, 7)]
    if benchmark == "isic":
        return [keep(root / "ISIC" / "ISIC2018_Task1-2_Training_Input" / str(c), "jpg") for c in range(1, 4)]
    return [keep(root / "LungSegmentation" / "masks", "png")]


def spec_episodes(class_lists, n, shot):
    """Section 4, in its words: numpy's legacy generator seeded with 0 once; episode i in index order takes
    class i mod C, draws the query from the class's list, then supports one at a time from the same list,
    discarding a draw equal to the query; every draw is choice(list, 1, replace=False)."""
    out = []
    with global_numpy_seed(0):
        for i in range(n):
            c = i % len(class_lists)
            query = np.random.choice(class_lists[c], 1, replace=False)[0]
            supports = []
            while len(supports) < shot:
                support = np.random.choice(class_lists[c], 1, replace=False)[0]
                if support != query:
                    supports.append(str(support))
            out.append((str(query), tuple(supports), c))
    return out


def dataset_episodes(dataset, benchmark):
    """The data set's episodes as full paths (image paths; mask paths for Chest X-ray, whose pool is masks)."""
    column = 1 if benchmark == "lung" else 0
    path = lambda name: str(dataset.layout.files[name][column])  # noqa: E731
    return [(path(e.query), tuple(map(path, e.supports)), e.class_id) for e in map(dataset.episode, range(len(dataset)))]


@pytest.mark.parametrize("benchmark", ["deepglobe", "isic", "lung"])
@pytest.mark.parametrize("shot", [1, 5])
def test_target_episodes_follow_the_spec(cdfss_root, benchmark, shot):
    dataset = build_dataset(benchmark, cdfss_root, 0, "test", shot, img_size=32)
    assert len(dataset) == 600  # the registered count
    assert dataset_episodes(dataset, benchmark) == spec_episodes(spec_class_lists(cdfss_root, benchmark), 600, shot)
    fewer = build_dataset(benchmark, cdfss_root, 0, "test", shot, img_size=32, episodes=1200)
    assert len(fewer) == 1200 and fewer.config.episodes == 1200


def test_listings_skip_other_files_and_name_classes(cdfss_root):
    deepglobe = build_dataset("deepglobe", cdfss_root, 0, "test", 1, img_size=32)
    assert deepglobe.class_names == ["agriculture", "urban", "rangeland", "forest", "water", "barren"]
    assert [len(deepglobe.index.candidates[c]) for c in range(6)] == list(DEEPGLOBE_COUNTS.values())
    isic = build_dataset("isic", cdfss_root, 0, "test", 1, img_size=32)
    assert isic.class_names == ["nevus", "melanoma", "seborrheic_keratosis"]
    assert isic.config.options == {"isic_convention": "first-appearance"}
    other = build_dataset("isic", cdfss_root, 0, "test", 1, img_size=32, options={"isic_convention": "dr-adapter"})
    assert other.class_names == ["seborrheic_keratosis", "nevus", "melanoma"]
    assert other.describe()["options"] == {"isic_convention": "dr-adapter"} and other.describe()["label"] == "ISIC2018"
    with pytest.raises(ValueError, match="isic_convention='alphabetical', expected one of"):
        build_dataset("isic", cdfss_root, 0, "test", 1, options={"isic_convention": "alphabetical"})
    with pytest.raises(ValueError, match=r"no option\(s\) \['lung_masks'\]; its options: \['isic_convention'\]"):
        build_dataset("isic", cdfss_root, 0, "test", 1, options={"lung_masks": "all"})


def test_lung_mask_policies_and_both_mask_names(cdfss_root):
    everything = build_dataset("lung", cdfss_root, 0, "test", 1, img_size=32)
    assert everything.config.options == {"lung_masks": "all"} and everything.class_ids == [0]
    assert everything.index.candidates[0] == ["CHNCXR_0001_0_mask.png", "CHNCXR_0003_0_mask.png", "CHNCXR_0005_0_mask.png",
                                              "MCUCXR_0002_0.png", "MCUCXR_0004_0.png"]
    assert everything.layout.files["MCUCXR_0002_0.png"][0].name == "MCUCXR_0002_0.png"
    assert everything.layout.files["CHNCXR_0001_0_mask.png"][0].name == "CHNCXR_0001_0.png"
    suffix_only = build_dataset("lung", cdfss_root, 0, "test", 1, img_size=32, options={"lung_masks": "mask-suffix"})
    assert suffix_only.index.candidates[0] == everything.index.candidates[0][:3]
    item = everything[0]  # a grey X-ray becomes 3 identical channels before normalisation
    assert item["query_img"].shape == (3, 32, 32) and item["support_masks"].shape == (1, 32, 32)
    assert "query_ignore_idx" not in item


def test_deepglobe_item_binarises_rgb_masks(cdfss_root):
    dataset = build_dataset("deepglobe", cdfss_root, 0, "test", 5, img_size=40, resize="square")
    item = dataset[3]
    stored = np.asarray(Image.open(dataset.layout.files[dataset.episode(3).query][1]).convert("L")) >= 128
    expected = torch.nn.functional.interpolate(torch.from_numpy(stored.astype(np.float32))[None, None], size=(40, 40),
                                               mode="nearest")[0, 0]
    assert torch.equal(item["query_mask"], expected) and set(item["query_mask"].unique().tolist()) == {0.0, 1.0}
    assert item["support_imgs"].shape == (5, 3, 40, 40)


def test_missing_folders_are_named_with_what_to_put_there(tmp_path, cdfss_root):
    with pytest.raises(FileNotFoundError, match=r"Deepglobe folder \(write it with python -m data_prep.deepglobe\)"):
        build_dataset("deepglobe", tmp_path, 0, "test", 1)
    (tmp_path / "Lung Segmentation").mkdir()
    with pytest.raises(FileNotFoundError, match="the Kaggle copy's name\\): rename or link it to"):
        build_dataset("lung", tmp_path, 0, "test", 1)
    (tmp_path / "ISIC" / "ISIC2018_Task1-2_Training_Input").mkdir(parents=True)
    (tmp_path / "ISIC" / "ISIC2018_Task1_Training_GroundTruth").mkdir()
    with pytest.raises(FileNotFoundError, match="ISIC class folder 1 \\(nevus; sort the images with python -m data_prep.isic\\)"):
        build_dataset("isic", tmp_path, 0, "test", 1)
    with pytest.raises(ValueError, match="benchmark 'deepglobe' has no 'trn' split \\(it has test\\)"):
        build_dataset("deepglobe", cdfss_root, 0, "trn", 1)
    with pytest.raises(ValueError, match="no 'val' split.*select the model on FSS-1000 val"):
        build_dataset("pascal-all", cdfss_root, 0, "val", 1)


def test_one_class_set_scores_pooled_iou_not_a_mean_of_episodes(cdfss_root):
    """Chest X-ray's mIoU is the foreground IoU pooled over its episodes (spec section 5)."""
    dataset = build_dataset("lung", cdfss_root, 0, "test", 1, img_size=32, episodes=6)
    assert not dataset.scoring.ignore_label
    meter = IoUMeter(dataset.class_ids, ignore_label=dataset.scoring.ignore_label)
    inter = union = 0
    episode_ious = []
    for i in range(len(dataset)):
        item = dataset[i]
        gt = item["query_mask"]
        pred = torch.zeros_like(gt)
        pred[: 4 * (i + 1)] = 1  # a prediction that grows with the episode
        meter.update(pred[None], gt[None], [item["class_id"]])
        i_, u_ = int(((pred == 1) & (gt == 1)).sum()), int(((pred == 1) | (gt == 1)).sum())
        inter, union = inter + i_, union + u_
        episode_ious.append(i_ / max(u_, 1))
    assert meter.miou == pytest.approx(100 * inter / union)
    assert abs(meter.miou - 100 * np.mean(episode_ious)) > 1  # the two readings differ on these episodes


@pytest.mark.parametrize("shot", [1, 5])
def test_fss_test_episodes_under_cdfss_are_hsnets(fss_root, shot):
    """Section 4: the query is the i-th image of the listing (classes sorted, file names in string order);
    each support a number drawn from 1..10, made N.jpg in the query's folder, discarded if equal to the query."""
    classes = sorted((fss_root / "splits" / "fss" / "test.txt").read_text().split())
    listing = [f"{c}/{name[:-4]}" for c in classes for name in sorted(p.name for p in (fss_root / "FSS-1000" / c).glob("*.jpg"))]
    expected = []
    with global_numpy_seed(0):
        for query in listing:
            supports = []
            while len(supports) < shot:
                n = np.random.choice(list(range(1, 11)), 1, replace=False)[0]
                support = f"{query.split('/')[0]}/{n}"
                if support != query:
                    supports.append(support)
            expected.append((query, tuple(supports)))
    dataset = build_dataset("fss", fss_root, 0, "test", shot, img_size=32, splits_dir=fss_root / "splits")
    assert len(dataset) == len(listing)
    assert [(e.query, e.supports) for e in map(dataset.episode, range(len(dataset)))] == expected
