"""Episodic data sets on tiny data in the real layouts: published draws, transforms, labels, errors."""
import gzip
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

from conftest import global_numpy_seed, write_pair
from hsnetlib.data import build_dataset

SPEC_TRANSFORM = transforms.Compose([  # the published input transform, spelled out
    transforms.Resize((64, 64)), transforms.ToTensor(),
    transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
])


def published_supports(candidates, query, shot):
    """One np.random.choice(..., 1, replace=False) call per support, redrawn while equal to the query."""
    supports = []
    while len(supports) < shot:
        support = np.random.choice(candidates, 1, replace=False)[0]
        if support != query:
            supports.append(str(support))
    return tuple(supports)


def episodes(dataset):
    return [(e.query, e.supports, e.class_id) for e in map(dataset.episode, range(len(dataset)))]


def nearest(mask, size=64):
    return F.interpolate(torch.as_tensor(mask)[None, None].float(), size=size, mode="nearest")[0, 0]


# -- published test episodes --------------------------------------------------------------------

def test_pascal_test_episodes_are_the_published_draws(pascal_root):
    lines = (pascal_root / "splits/pascal/val/fold1.txt").read_text().split()
    rows = [(name, int(cls) - 1) for name, cls in (line.split("__") for line in lines)]
    classwise = {}
    for name, cls in rows:
        classwise.setdefault(cls, []).append(name)
    with global_numpy_seed(0):
        expected = []
        for i in range(1000):  # episode i takes line i modulo the list length
            query, cls = rows[i % len(rows)]
            expected.append((query, published_supports(classwise[cls], query, 5), cls))
    state = np.random.get_state()
    dataset = build_dataset("pascal", pascal_root, 1, "test", 5, img_size=64, splits_dir=pascal_root / "splits")
    assert episodes(dataset) == expected
    assert np.array_equal(np.random.get_state()[1], state[1])  # global state untouched
    val = build_dataset("pascal", pascal_root, 1, "val", 5, img_size=64, splits_dir=pascal_root / "splits")
    assert episodes(val) == expected and dataset.class_ids == [5, 6, 7, 8, 9]
    other = dataset.with_episodes(seed=1)
    assert other.seed == 1 and episodes(other) != expected and [e[0] for e in episodes(other)] == [e[0] for e in expected]


def test_coco_test_episodes_are_the_published_draws(coco_root):
    with gzip.open(coco_root / "splits/coco/val/fold2.tsv.gz", "rt") as f:
        rows = [line.rstrip("\n").split("\t") for line in f if not line.startswith("#")]
    classwise = {}
    for cls, name in rows:
        classwise.setdefault(int(cls), []).append(name)
    class_ids = [2 + 4 * v for v in range(20)]
    with global_numpy_seed(0):
        expected = []
        for _ in range(1000):  # class, then query, then each support
            cls = int(np.random.choice(class_ids, 1, replace=False)[0])
            query = str(np.random.choice(classwise[cls], 1, replace=False)[0])
            expected.append((query, published_supports(classwise[cls], query, 2), cls))
    dataset = build_dataset("coco", coco_root, 2, "test", 2, img_size=64, splits_dir=coco_root / "splits")
    assert episodes(dataset) == expected and dataset.class_ids == class_ids and dataset.nclass == 80


FSS_SPLITS = {  # in no sorted order; sorted() gives "Zebra" < "apple" < "apple2" < "apple_pie" (not natural order)
    "trn": ["bus", "Zebra", "apple_pie"], "val": ["cup", "apple2"], "test": ["egg", "apple_pie2", "Fig", "apple10"],
}


@pytest.fixture(scope="module")
def fss_unsorted(tmp_path_factory):
    """FSS-1000 layout with 10 tiny images per class and split lists in the files' own (unsorted) order."""
    root = tmp_path_factory.mktemp("fss_unsorted")
    rng = np.random.default_rng(3)
    mask = np.zeros((12, 16), np.uint8)
    mask[2:8, 3:11] = 255
    for split, names in FSS_SPLITS.items():
        for name in names:
            for n in range(1, 11):
                write_pair(root / "FSS-1000" / name / f"{n}.jpg", root / "FSS-1000" / name / f"{n}.png", mask, rng)
        (root / "splits" / "fss").mkdir(parents=True, exist_ok=True)
        (root / "splits" / "fss" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


def published_fss_episodes(root, split, shot):
    """The published FSS loader: sorted() class names numbered after the earlier splits (trn 0-519,
    val 520-759, test 760-999 on FSS-1000), every .jpg of the sorted glob as query in turn, one
    np.random.choice(range(1, 11), 1, replace=False) call per support, redrawn while equal to the query."""
    offset = {"trn": 0, "val": len(FSS_SPLITS["trn"]), "test": len(FSS_SPLITS["trn"]) + len(FSS_SPLITS["val"])}[split]
    categories = sorted((root / "splits" / "fss" / f"{split}.txt").read_text().split("\n")[:-1])
    queries = [p for c in categories for p in sorted(map(str, (root / "FSS-1000" / c).glob("*"))) if p.endswith(".jpg")]
    expected = []
    with global_numpy_seed(0):
        for query in queries:
            class_sample = categories.index(Path(query).parent.name) + offset
            supports = []
            while len(supports) < shot:
                support = str(Path(query).parent / f"{np.random.choice(range(1, 11), 1, replace=False)[0]}.jpg")
                if support != query:
                    supports.append(support)
            expected.append((query, supports, class_sample))
    return expected


def _fss_name(path):
    return f"{Path(path).parent.name}/{Path(path).stem}"


@pytest.mark.parametrize("split, shot", [("test", 1), ("test", 5), ("val", 3)])
def test_fss_episodes_are_the_published_draws(fss_unsorted, split, shot):
    expected = published_fss_episodes(fss_unsorted, split, shot)
    dataset = build_dataset("fss", fss_unsorted, 0, split, shot, img_size=32, splits_dir=fss_unsorted / "splits")
    assert episodes(dataset) == [(_fss_name(q), tuple(map(_fss_name, s)), c) for q, s, c in expected]
    assert len(dataset) == 10 * len(FSS_SPLITS[split])


def test_fss_classes_numbered_in_sorted_order_and_queries_in_string_order(fss_unsorted):
    splits = fss_unsorted / "splits"
    test = build_dataset("fss", fss_unsorted, 0, "test", 1, img_size=32, splits_dir=splits)
    assert test.class_names == [*sorted(FSS_SPLITS["trn"]), *sorted(FSS_SPLITS["val"]), *sorted(FSS_SPLITS["test"])]
    assert test.class_ids == [5, 6, 7, 8]
    assert [test.class_names[c] for c in test.class_ids] == ["Fig", "apple10", "apple_pie2", "egg"]
    assert [test.episode(i).query for i in range(4)] == ["Fig/1", "Fig/10", "Fig/2", "Fig/3"]
    assert [test.episode(i).class_id for i in (0, 9, 10, 39)] == [5, 5, 6, 8]
    trn = build_dataset("fss", fss_unsorted, 0, "trn", 1, img_size=32, splits_dir=splits)
    assert trn.class_ids == [0, 1, 2]
    assert [(q, c) for q, _, c in episodes(trn)] == [
        (_fss_name(q), c) for q, _, c in published_fss_episodes(fss_unsorted, "trn", 1)
    ]
    item = test[10]
    assert item["class_id"] == 6 and item["query_name"] == "apple10/1" and item["support_imgs"].shape == (1, 3, 32, 32)


# -- training episodes --------------------------------------------------------------------------

def _names(batch):
    return [(item["query_name"], tuple(item["support_names"])) for item in batch]


def test_training_episodes_random_per_epoch_reproducible_and_worker_independent(pascal_root):
    splits = pascal_root / "splits"
    dataset = build_dataset("pascal", pascal_root, 0, "trn", 2, img_size=32, splits_dir=splits)
    lines = [line.split("__")[0] for f in (1, 2, 3) for line in (splits / f"pascal/trn/fold{f}.txt").read_text().split()]
    assert len(dataset) == len(lines) and dataset.class_ids == list(range(5, 20))
    epoch0 = episodes(dataset)
    assert [e[0] for e in epoch0] == lines  # the query is line i; only the supports are drawn
    assert episodes(dataset) == epoch0 == episodes(build_dataset("pascal", pascal_root, 0, "trn", 2, splits_dir=splits))
    keys = {e: [(e, i) for i in range(len(dataset))] for e in (0, 3)}  # (epoch, episode) keys, as the trainer's
    persistent = {e: DataLoader(dataset, batch_size=4, sampler=keys[e], num_workers=2, persistent_workers=True,
                                collate_fn=_names) for e in (0, 3)}
    first_pass = [[n for batch in persistent[e] for n in batch] for e in (0, 3)]
    dataset.set_epoch(3)  # the main copy only: persistent workers keep theirs
    epoch3 = episodes(dataset)
    assert epoch3 != epoch0 and episodes(dataset.with_episodes(seed=1)) != epoch0
    assert [dataset[key]["query_name"] for key in keys[0]] == [q for q, _, _ in epoch0]
    assert first_pass == [[n for batch in persistent[e] for n in batch] for e in (0, 3)]  # second pass, same workers
    assert first_pass == [[(q, s) for q, s, _ in epoch] for epoch in (epoch0, epoch3)]
    loaded = [n for batch in DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=_names) for n in batch]
    assert loaded == [(q, s) for q, s, _ in epoch3]  # plain indices after set_epoch (workers copy it per pass)


def test_coco_training_episodes_draw_training_classes(coco_root):
    dataset = build_dataset("coco", coco_root, 0, "trn", 1, img_size=32, splits_dir=coco_root / "splits")
    assert len(dataset) == 60 * 2  # distinct training images
    drawn = episodes(dataset)
    assert {c for _, _, c in drawn} <= set(dataset.class_ids) and len({c for _, _, c in drawn}) > 30
    assert all(q != s[0] and q.startswith("train2014/") for q, s, _ in drawn)
    dataset.set_epoch(1)
    assert episodes(dataset) != drawn


# -- items: transform and labels ----------------------------------------------------------------

def test_pascal_item_transform_labels_and_ignore_idx(pascal_root):
    dataset = build_dataset("pascal", pascal_root, 0, "test", 2, img_size=64, splits_dir=pascal_root / "splits")
    item, episode = dataset[0], dataset.episode(0)
    voc = pascal_root / "VOC2012"
    cls = episode.class_id
    assert item["class_id"] == cls and item["query_name"] == episode.query and item["support_names"] == list(episode.supports)
    image = Image.open(voc / "JPEGImages" / f"{episode.query}.jpg").convert("RGB")
    assert torch.equal(item["query_img"], SPEC_TRANSFORM(image))
    label = nearest(np.array(Image.open(voc / "SegmentationClassAug" / f"{episode.query}.png")))
    assert set(label.unique().tolist()) == {0, cls + 1, cls + 2, 255}  # this image also shows the next class
    assert torch.equal(item["query_mask"], (label == cls + 1).float())
    assert torch.equal(item["query_ignore_idx"], (label == 255).float())
    assert item["query_ignore_idx"].sum() > 0 and (item["query_ignore_idx"] * item["query_mask"]).sum() == 0
    assert item["org_query_imsize"].tolist() == [image.height, image.width]
    assert item["query_valid_size"].tolist() == [64, 64]
    for k, name in enumerate(episode.supports):
        assert torch.equal(item["support_imgs"][k], SPEC_TRANSFORM(Image.open(voc / "JPEGImages" / f"{name}.jpg").convert("RGB")))
        support_label = nearest(np.array(Image.open(voc / "SegmentationClassAug" / f"{name}.png")))
        assert torch.equal(item["support_masks"][k], (support_label == cls + 1).float())
        assert torch.equal(item["support_ignore_idxs"][k], (support_label == 255).float())
    # the same image listed under the next class gives that class's mask
    other = next(i for i in range(len(dataset)) if dataset.episode(i).query == episode.query and i != 0)
    assert torch.equal(dataset[other]["query_mask"], (label == cls + 2).float())


def test_fss_threshold_and_original_size(fss_root):
    dataset = build_dataset("fss", fss_root, 0, "val", 1, img_size=64, use_original_imgsize=True, splits_dir=fss_root / "splits")
    item, episode = dataset[0], dataset.episode(0)
    grey = np.array(Image.open(fss_root / "FSS-1000" / f"{episode.query}.png").convert("L"))
    assert set(np.unique(grey)) == {127, 128}
    assert item["query_mask"].shape == grey.shape and item["org_query_imsize"].tolist() == list(grey.shape)
    assert torch.equal(item["query_mask"], torch.from_numpy(grey == 128).float())
    assert item["query_img"].shape == (3, 64, 64) and item["support_masks"].shape == (1, 64, 64)
    support_grey = np.array(Image.open(fss_root / "FSS-1000" / f"{episode.supports[0]}.png"))
    assert torch.equal(item["support_masks"][0], nearest(support_grey >= 128))


def test_aspect_resize_pads_and_reports_the_valid_region(fss_root):
    dataset = build_dataset("fss", fss_root, 0, "test", 1, img_size=64, resize="aspect", splits_dir=fss_root / "splits")
    item = dataset[4]
    image = Image.open(fss_root / "FSS-1000" / f"{dataset.episode(4).query}.jpg").convert("RGB")
    scale = 64 / max(image.size)
    h, w = round(image.height * scale), round(image.width * scale)
    assert item["query_valid_size"].tolist() == [h, w] and max(h, w) == 64 and min(h, w) < 64
    expected = transforms.Compose([transforms.Resize((h, w)), *SPEC_TRANSFORM.transforms[1:]])(image)
    assert torch.equal(item["query_img"][:, :h, :w], expected)
    assert item["query_img"].shape == (3, 64, 64) and item["query_img"][:, h:, w:].abs().sum() == 0
    assert item["query_mask"][h:].sum() == 0 and item["query_mask"][:, w:].sum() == 0
    assert item["query_mask"].sum() > 0


# -- the folder benchmark -------------------------------------------------------------------------

def make_folder(root: Path) -> dict:
    """cat: 1/2/10 .jpg|.jpeg with .png masks; fish: PNG images with _mask.png and a .bmp; owl: 2 images."""
    rng = np.random.default_rng(5)
    mask = np.zeros((30, 40), np.uint8)
    mask[5:20, 10:30] = 255
    for stem, ext in (("1", ".jpg"), ("10", ".jpg"), ("2", ".jpeg")):
        write_pair(root / "cat" / f"{stem}{ext}", root / "cat" / f"{stem}.png", mask, rng)
    write_pair(root / "fish" / "a.png", root / "fish" / "a_mask.png", mask, rng)
    write_pair(root / "fish" / "b.bmp", root / "fish" / "b.png", 255 - mask, rng)
    for stem in ("x", "y"):
        write_pair(root / "owl" / f"{stem}.webp", root / "owl" / f"{stem}.png", mask, rng)
    return {"trn": ["owl"], "test": ["cat", "fish"]}


def test_folder_benchmark(tmp_path):
    split = make_folder(tmp_path / "mine")
    (tmp_path / "split.json").write_text(json.dumps(split))
    dataset = build_dataset("folder", tmp_path / "mine", 0, "test", 1, img_size=32, class_split=str(tmp_path / "split.json"))  # a plain string, as grids pass it
    assert [dataset.episode(i).query for i in range(len(dataset))] == ["cat/1", "cat/2", "cat/10", "fish/a", "fish/b"]
    assert dataset.class_names == ["owl", "cat", "fish"] and dataset.class_ids == [1, 2]
    fish_a, fish_b = dataset[3], dataset[4]
    assert fish_a["class_id"] == 2 and fish_a["support_names"] == ["fish/b"]
    assert torch.equal(fish_a["query_mask"], 1 - fish_b["query_mask"])  # b's mask is the inverse of a's
    assert len(build_dataset("folder", tmp_path / "mine", 0, "trn", 1, class_split=split)) == 2
    with pytest.raises(ValueError, match="no 'val' list"):
        build_dataset("folder", tmp_path / "mine", 0, "val", 1, class_split=split)
    with pytest.raises(ValueError, match="fold=1 out of range"):
        build_dataset("folder", tmp_path / "mine", 1, "test", 1, class_split=split)
    with pytest.raises(ValueError, match="needs class_split"):
        build_dataset("folder", tmp_path / "mine", 0, "test", 1)
    with pytest.raises(FileNotFoundError, match=r"class folder 'cow'.*README section 'Data sets'"):
        build_dataset("folder", tmp_path / "mine", 0, "test", 1, class_split={"test": ["cow"]})
    (tmp_path / "mine" / "cat" / "2.png").unlink()
    with pytest.raises(ValueError, match=r"2\.jpeg.*expected one image 2\.EXT and its mask 2\.png"):
        build_dataset("folder", tmp_path / "mine", 0, "test", 1, class_split=split)
    (tmp_path / "mine" / "cat" / "2.jpeg").unlink()
    (tmp_path / "mine" / "cat" / "10.jpg").unlink()
    (tmp_path / "mine" / "cat" / "10.png").unlink()
    with pytest.raises(ValueError, match="'cat' has 1 image"):
        build_dataset("folder", tmp_path / "mine", 0, "test", 1, class_split=split)


# -- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("benchmark, expected", [("pascal", "VOC2012"), ("coco", "COCO2014"), ("fss", "FSS-1000")])
def test_missing_root_names_the_path_and_the_readme(tmp_path, benchmark, expected):
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(str(tmp_path / 'nowhere' / expected))}.*README section 'Data sets'"):
        build_dataset(benchmark, tmp_path / "nowhere", 0, "test", 1)


def test_argument_and_split_list_errors(pascal_root, tmp_path):
    splits = pascal_root / "splits"
    for kwargs, message in [
        (dict(fold=4), "fold=4 out of range for pascal"), (dict(split="train"), "split='train'"),
        (dict(shot=0), "shot=0"), (dict(resize="crop"), "resize='crop'"), (dict(benchmark="voc"), "unknown benchmark 'voc'; registered: pascal, coco"),
    ]:
        args = dict(benchmark="pascal", root=pascal_root, fold=0, split="test", shot=1, splits_dir=splits) | kwargs
        with pytest.raises(ValueError, match=message):
            build_dataset(**args)
    with pytest.raises(FileNotFoundError, match=r"split list not found: expected .*pascal/val/fold0\.txt"):
        build_dataset("pascal", pascal_root, 0, "test", 1, splits_dir=tmp_path)
    bad = tmp_path / "pascal" / "val" / "fold0.txt"
    bad.parent.mkdir(parents=True)
    bad.write_text("2007_000033__1\n2007_000061\n")
    with pytest.raises(ValueError, match=r"fold0\.txt:2: expected NAME__CLASS"):
        build_dataset("pascal", pascal_root, 0, "test", 1, splits_dir=tmp_path)


def test_bad_files_are_named(pascal_root, coco_root, tmp_path):
    root = Path(shutil.copytree(pascal_root, tmp_path / "pascal"))
    dataset = build_dataset("pascal", root, 0, "test", 1, img_size=32, splits_dir=root / "splits")
    query = dataset.episode(0).query
    image, mask = root / "VOC2012/JPEGImages" / f"{query}.jpg", root / "VOC2012/SegmentationClassAug" / f"{query}.png"
    label = np.array(Image.open(mask))
    label[0, 0] = 21
    Image.fromarray(label).save(mask)
    with pytest.raises(ValueError, match=rf"mask {re.escape(str(mask))} has values \[21\] outside the expected set \{{0\.\.20, 255\}}"):
        dataset[0]
    image.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=rf"cannot read image {re.escape(str(image))}"):
        dataset[0]
    image.unlink()
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(str(image))}.*README section 'Data sets'"):
        dataset[0]

    root = Path(shutil.copytree(coco_root, tmp_path / "coco"))
    dataset = build_dataset("coco", root, 0, "test", 1, img_size=32, splits_dir=root / "splits")
    mask = (root / "COCO2014/annotations" / dataset.episode(0).query).with_suffix(".png")
    Image.fromarray(np.full((30, 30), 255, np.uint8)).save(mask)
    with pytest.raises(ValueError, match=r"values \[255\] outside the expected set \{0\.\.80\}"):
        dataset[0]
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(mask)
    with pytest.raises(ValueError, match="has mode RGB: expected a single-channel class-index PNG"):
        dataset[0]


def test_sixteen_bit_png_is_scaled_not_white(tmp_path):
    """A 16-bit grey PNG (PIL mode I;16) keeps its picture: value v becomes round(v * 255 / 65535)."""
    from hsnetlib.data import read_grey_mask, read_rgb
    ramp = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 257)  # 0..65535 in steps of 257
    path = tmp_path / "xray16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = np.asarray(read_rgb(path))
    assert rgb.shape == (16, 16, 3) and np.array_equal(rgb[..., 0], (ramp // 257).astype(np.uint8))
    assert np.array_equal(rgb[..., 0], rgb[..., 2])
    assert read_grey_mask(path).mean() == pytest.approx(0.5)  # >= 128 of 0..255: half
    Image.fromarray(np.zeros((4, 4), np.float32), mode="F").save(tmp_path / "float.tiff")
    with pytest.raises(ValueError, match=rf"cannot read image {re.escape(str(tmp_path / 'float.tiff'))}: floating-point"):
        read_rgb(tmp_path / "float.tiff")


def test_all_ignore_pascal_mask_is_an_error_naming_the_file(pascal_root, tmp_path):
    root = Path(shutil.copytree(pascal_root, tmp_path / "pascal"))
    dataset = build_dataset("pascal", root, 0, "test", 1, img_size=32, splits_dir=root / "splits")
    mask = root / "VOC2012/SegmentationClassAug" / f"{dataset.episode(0).supports[0]}.png"
    shape = np.asarray(Image.open(mask)).shape
    Image.fromarray(np.full(shape, 255, np.uint8)).save(mask)
    with pytest.raises(ValueError, match=rf"mask {re.escape(str(mask))} is all 255 \(ignore\)"):
        dataset[0]


def test_benchmark_images_follow_the_stored_pixels_not_exif(tmp_path):
    """As in the authors' code, benchmark loading ignores EXIF orientation (masks follow the stored pixels)."""
    from hsnetlib.data import read_rgb
    image = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert Image.open(tmp_path / "rotated.jpg").getexif()[0x0112] == 6
    assert read_rgb(tmp_path / "rotated.jpg").size == (40, 20)
