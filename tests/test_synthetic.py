"""hsnetlib.synthetic: determinism, the real FSS-1000 / VOC2012 / COCO-20i / CD-FSS layouts, split lists, the
loaders reading it."""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep import synthetic as synthetic_cli
from hsnetlib.data import build_dataset
from hsnetlib.synthetic import LAYOUTS, SHIPPED_SPLITS, generate

SMALL = {"fss": dict(n_classes=8, images_per_class=4, size=48), "pascal": dict(images_per_class=3, size=48),
         "coco": dict(images_per_class=2, size=32), **{k: dict(images_per_class=3, size=32) for k in ("deepglobe", "isic", "lung")}}


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fss_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fss")
    generate(root, "fss", seed=0, **SMALL["fss"])
    return root


@pytest.fixture(scope="module")
def pascal_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pascal")
    generate(root, "pascal", seed=0, second_object_prob=0.5, **SMALL["pascal"])
    return root


@pytest.mark.parametrize("layout", LAYOUTS)
def test_same_seed_same_bytes_other_seed_differs(tmp_path, layout):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate(tmp_path / name, layout, seed=seed, **SMALL[layout])
    a, b, c = (tree_bytes(tmp_path / name) for name in "abc")
    assert a == b
    assert len(a) > 6
    jpgs = lambda tree: [v for k, v in tree.items() if k.endswith(".jpg") or "CXR_png" in k]  # images
    assert jpgs(a) != jpgs(c)
    assert json.loads(a["synthetic.json"])["layouts"][layout]["seed"] == 5


def test_fss_layout_masks_and_splits(fss_root):
    splits = {s: (fss_root / "splits" / "fss" / f"{s}.txt").read_bytes() for s in ("trn", "val", "test")}
    classes = {s: data.decode().split() for s, data in splits.items()}
    for s, data in splits.items():  # same line terminator as the shipped list (test.txt is CRLF)
        assert (b"\r\n" in data) == (b"\r\n" in (SHIPPED_SPLITS / "fss" / f"{s}.txt").read_bytes())
    assert [len(classes[s]) for s in ("trn", "val", "test")] == [4, 2, 2]  # FSS-1000's 52/24/24 %
    everything = classes["trn"] + classes["val"] + classes["test"]
    assert len(set(everything)) == 8
    assert sorted(p.name for p in (fss_root / "FSS-1000").iterdir()) == sorted(everything)
    for class_name in everything:
        folder = fss_root / "FSS-1000" / class_name
        assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.{e}" for n in range(1, 5) for e in ("jpg", "png"))
        for n in range(1, 5):
            assert Image.open(folder / f"{n}.jpg").size == (48, 48)
            mask = Image.open(folder / f"{n}.png")
            assert mask.mode == "L" and mask.size == (48, 48)
            values = np.unique(np.asarray(mask))
            assert values.tolist() == [0, 255], (class_name, n, values)


def test_fss_manifest_matches_files(fss_root):
    record = json.loads((fss_root / "synthetic.json").read_text())
    manifest = record["layouts"]["fss"]
    assert manifest["counts"]["images"] == 32 and manifest["params"]["images_per_class"] == 4
    for split, names in manifest["class_split"].items():
        assert names == (fss_root / "splits" / "fss" / f"{split}.txt").read_text().split()
    assert [c["name"] for c in manifest["classes"]] == sorted(manifest["class_split"]["trn"] + manifest["class_split"]["val"]
                                                             + manifest["class_split"]["test"])


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_pascal_layout_lists_and_values(pascal_root):
    voc, splits = pascal_root / "VOC2012", pascal_root / "splits" / "pascal"
    names = {"trn": set(), "val": set()}
    for split in ("trn", "val"):
        for fold in range(4):
            lines = read_lines(splits / split / f"fold{fold}.txt")
            assert (splits / split / f"fold{fold}.txt").read_bytes().endswith(b"\n")
            parsed = [(line.split("__")[0], int(line.split("__")[1])) for line in lines]
            assert all(len(line.split("__")[1]) == 2 for line in lines)  # NAME__01 as shipped
            fold_classes = set(range(5 * fold + 1, 5 * fold + 6))
            assert {c for _, c in parsed} == fold_classes
            key = (lambda nc: (nc[1], nc[0])) if split == "trn" else (lambda nc: nc)
            assert parsed == sorted(parsed, key=key)  # shipped order: trn by class, val by name
            for name, cls in parsed:
                names[split].add(name)
                mask = np.asarray(Image.open(voc / "SegmentationClassAug" / f"{name}.png"))
                assert Image.open(voc / "JPEGImages" / f"{name}.jpg").size == mask.shape[::-1]
                assert np.count_nonzero(mask == cls) >= 0.01 * mask.size
                assert set(np.unique(mask).tolist()) <= {0, 255} | {c for c in fold_classes}
    assert names["trn"].isdisjoint(names["val"])
    assert len(names["trn"]) == 60 and len(names["val"]) == 60  # 20 classes x 3 images
    two_class = [n for n in names["val"] if len(set(np.unique(np.asarray(
        Image.open(voc / "SegmentationClassAug" / f"{n}.png"))).tolist()) - {0, 255}) == 2]
    assert two_class, "second_object_prob=0.5 should give some images with two classes"


def test_pascal_boundary_band_separates_labels(pascal_root):
    for path in sorted((pascal_root / "VOC2012" / "SegmentationClassAug").glob("*.png"))[:40]:
        mask = np.asarray(Image.open(path)).astype(int)
        assert (mask == 255).any()
        for a, b in ((mask[1:], mask[:-1]), (mask[:, 1:], mask[:, :-1])):  # 4-neighbours
            touching = (a != b) & (a != 255) & (b != 255)
            assert not touching.any(), f"{path}: labels touch without a 255 band"


def test_loaders_read_synthetic_data(fss_root, pascal_root):
    fss = build_dataset("fss", fss_root, fold=0, split="test", shot=1, img_size=48, splits_dir=fss_root / "splits")
    assert len(fss) == 2 * 4
    item = fss[0]
    assert item["query_img"].shape == (3, 48, 48) and item["query_mask"].sum() > 0
    pascal = build_dataset("pascal", pascal_root, fold=1, split="val", shot=2, img_size=48,
                           splits_dir=pascal_root / "splits")
    item = pascal[0]
    assert item["class_id"] in range(5, 10)
    assert item["support_imgs"].shape == (2, 3, 48, 48)
    assert item["query_mask"].sum() > 0 and item["query_ignore_idx"].sum() > 0


@pytest.mark.parametrize("kwargs, word", [
    (dict(layout="voc"), "layout"),
    (dict(layout="pascal", n_classes=10), "n_classes"),
    (dict(layout="fss", n_classes=2), "n_classes"),
    (dict(layout="fss", images_per_class=1), "images_per_class"),
    (dict(layout="fss", val_images_per_class=3), "val_images_per_class"),
    (dict(layout="pascal", val_images_per_class=1), "val_images_per_class"),
    (dict(layout="fss", size=16), "size"),
    (dict(layout="fss", second_object_prob=1.5), "second_object_prob"),
    (dict(layout="fss", seed=-1), "seed"),
])
def test_bad_arguments_name_the_argument(tmp_path, kwargs, word):
    with pytest.raises(ValueError, match=word):
        generate(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


def test_never_overwrites_real_data_and_regenerates_cleanly(tmp_path):
    (tmp_path / "real" / "FSS-1000" / "cat").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="FSS-1000"):
        generate(tmp_path / "real", "fss", **SMALL["fss"])
    assert (tmp_path / "real" / "FSS-1000" / "cat").is_dir()
    root = tmp_path / "synthetic"
    generate(root, "fss", n_classes=5, images_per_class=4, size=48)
    generate(root, "fss", n_classes=5, images_per_class=3, size=48)  # smaller: no stale 4.jpg left behind
    assert not list(root.glob("FSS-1000/*/4.jpg")) and len(list(root.glob("FSS-1000/*/3.jpg"))) == 5


def test_cli_writes_both_layouts(tmp_path, capsys):
    argv = ["--root", str(tmp_path), "--layout", "both", "--n-classes", "6", "--images-per-class", "2", "--size", "40"]
    assert synthetic_cli.main(argv) == 0
    record = json.loads((tmp_path / "synthetic.json").read_text())
    assert sorted(record["layouts"]) == ["fss", "pascal"]
    assert record["layouts"]["fss"]["params"]["n_classes"] == 6 and record["layouts"]["pascal"]["params"]["n_classes"] == 20
    assert synthetic_cli.main(["--root", str(tmp_path / "x"), "--layout", "pascal", "--n-classes", "6"]) == 2
    assert "n_classes" in capsys.readouterr().err


# sha256 over the sorted (path, bytes) of the SMALL trees at seed 0: the notebooks' small model and the tests
# depend on these exact images (pinned when COCO / CD-FSS layouts were added, output unchanged)
PINNED = {
    "fss": "e77a6493e99077f357895980f18028667dc6fbf8102e42b9d4856e6bb49b5c26",
    "pascal": "18a4c0a2dbea923cbcd0c003d4346db736e8add13b6c0bc5fd2ff9a4beab4b83",
}


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for name, data in tree_bytes(root).items():
        digest.update(name.encode() + b"\0" + data)
    return digest.hexdigest()


@pytest.mark.parametrize("layout", sorted(PINNED))
def test_fss_and_pascal_output_is_pinned(tmp_path, layout):
    generate(tmp_path, layout, seed=0, **SMALL[layout])
    assert tree_hash(tmp_path) == PINNED[layout]


def test_coco_layout_rows_masks_and_loader(tmp_path):
    manifest = generate(tmp_path, "coco", seed=0, **SMALL["coco"])
    assert manifest["counts"]["images"] == 80 * 4 and manifest["folds"]["fold1"] == list(range(1, 80, 4))
    for split in ("trn", "val"):
        for fold in range(4):
            with gzip.open(tmp_path / "splits/coco" / split / f"fold{fold}.tsv.gz", "rt") as f:
                header, *rows = f.read().splitlines()
            assert header.startswith("# class_id")
            classes = {int(row.split("\t")[0]) for row in rows}
            assert classes == ({c for c in range(80) if c % 4 == fold} if split == "val" else {c for c in range(80) if c % 4 != fold})
            for row in rows[:5]:
                cls, name = row.split("\t")
                assert name.startswith("val2014/" if split == "val" else "train2014/")
                mask = np.asarray(Image.open((tmp_path / "COCO2014/annotations" / name).with_suffix(".png")))
                assert (mask == int(cls) + 1).mean() >= 0.01 and set(np.unique(mask)) <= {0, *range(1, 81)}
    dataset = build_dataset("coco", tmp_path, 2, "test", 1, img_size=32, splits_dir=tmp_path / "splits")
    assert len(dataset) == 1000 and dataset[0]["query_mask"].shape == (32, 32)


def test_cdfss_layouts_are_read_by_their_loaders(tmp_path):
    for layout in ("deepglobe", "isic", "lung"):
        generate(tmp_path, layout, seed=0, **SMALL[layout])
        dataset = build_dataset(layout, tmp_path, 0, "test", 1, img_size=32)
        assert len(dataset) == 600 and all(len(v) == 3 for v in dataset.index.candidates.values())
        assert dataset[1]["query_mask"].sum() > 0
    masks = sorted(p.name for p in (tmp_path / "LungSegmentation/masks").iterdir())
    assert masks == ["CHNCXR_0001_0_mask.png", "CHNCXR_0003_0_mask.png", "MCUCXR_0002_0.png"]  # both naming styles
    assert Image.open(tmp_path / "LungSegmentation/CXR_png/MCUCXR_0002_0.png").mode == "L"
    assert Image.open(tmp_path / "Deepglobe/1/test/groundtruth" / next((tmp_path / "Deepglobe/1/test/groundtruth").iterdir()).name).mode == "RGB"
