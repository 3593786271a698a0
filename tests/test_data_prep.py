"""data_prep: COCO masks from a tiny instances JSON, SegmentationClassAug from SBD .mat files, Deepglobe tiles,
ISIC class folders, the checker."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from pycocotools import mask as mask_utils

from data_prep import check, coco_masks, deepglobe, isic, sbd_to_voc
from hsnetlib.synthetic import generate

H, W = 20, 30
# pycocotools' decode trips numpy 2's copy-keyword deprecation; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


# ------------------------------------------------------------------------------------------------
# COCO
# ------------------------------------------------------------------------------------------------
def box(top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """(H, W) uint8 mask with ones in rows top..bottom-1, columns left..right-1."""
    m = np.zeros((H, W), np.uint8)
    m[top:bottom, left:right] = 1
    return m


def uncompressed_rle(m: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths of the column-major flattening, starting with zeros."""
    flat = m.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": [H, W], "counts": counts}


POLYGON = [[2.0, 2.0, 14.0, 2.0, 14.0, 9.0, 2.0, 9.0]]  # x, y pairs: a rectangle
RLE_BOX = box(5, 13, 10, 21)  # overlaps the polygon: drawn later (higher id), so it wins
CROWD_BOX = box(10, 16, 15, 30)  # crowd with the highest id: still painted first, the RLE box wins


def coco_json(path: Path, split: str, anns: list[dict], n_images: int) -> None:
    images = [{"id": 139 + i, "file_name": f"COCO_{split}_{139 + i:012d}.jpg", "height": H, "width": W}
              for i in range(n_images)]
    categories = [{"id": cid, "name": name} for cid, name in ((90, "toothbrush"), (1, "person"), (3, "car"))]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))


@pytest.fixture()
def coco_root(tmp_path) -> Path:
    compressed = mask_utils.encode(np.asfortranarray(RLE_BOX))
    compressed["counts"] = compressed["counts"].decode()
    anns = [
        {"id": 7, "image_id": 139, "category_id": 3, "segmentation": POLYGON, "iscrowd": 0, "area": 84, "bbox": [2, 2, 12, 7]},
        {"id": 8, "image_id": 139, "category_id": 90, "segmentation": compressed, "iscrowd": 0, "area": 88, "bbox": [10, 5, 11, 8]},
        {"id": 9, "image_id": 139, "category_id": 1, "segmentation": uncompressed_rle(CROWD_BOX), "iscrowd": 1,
         "area": 90, "bbox": [15, 10, 15, 6]},
    ]
    annotations = tmp_path / "COCO2014" / "annotations"
    coco_json(annotations / "instances_val2014.json", "val2014", anns, n_images=2)  # image 140 has no annotation
    train_ann = {"id": 1, "image_id": 139, "category_id": 90, "segmentation": uncompressed_rle(box(0, 3, 0, 4)),
                 "iscrowd": 0, "area": 12, "bbox": [0, 0, 4, 3]}
    coco_json(annotations / "instances_train2014.json", "train2014", [train_ann], n_images=1)
    return tmp_path


def test_coco_masks_pixelwise(coco_root, capsys):
    assert coco_masks.main(["--root", str(coco_root), "--no-progress"]) == 0
    out = coco_root / "COCO2014" / "annotations"
    polygon = mask_utils.decode(mask_utils.frPyObjects(POLYGON, H, W))[..., 0]
    assert polygon[3:9, 3:14].all() and not polygon[10:].any() and not polygon[:, 15:].any()
    # category ids 1, 3, 90 -> values 1, 2, 3 (id order, whatever the file's order)
    expected = np.zeros((H, W), np.uint8)
    expected[CROWD_BOX == 1] = 1
    expected[polygon == 1] = 2
    expected[RLE_BOX == 1] = 3
    got = Image.open(out / "val2014" / "COCO_val2014_000000000139.png")
    assert got.mode == "L" and got.size == (W, H)
    np.testing.assert_array_equal(np.asarray(got), expected)
    assert not np.asarray(Image.open(out / "val2014" / "COCO_val2014_000000000140.png")).any()
    np.testing.assert_array_equal(np.asarray(Image.open(out / "train2014" / "COCO_train2014_000000000139.png")),
                                  box(0, 3, 0, 4) * 3)
    assert "val2014: wrote 2 masks" in capsys.readouterr().out


def test_coco_masks_skip_existing_unless_overwrite(coco_root):
    path = coco_root / "COCO2014" / "annotations" / "val2014" / "COCO_val2014_000000000139.png"
    assert coco_masks.main(["--root", str(coco_root), "--splits", "val2014", "--no-progress"]) == 0
    right = path.read_bytes()
    Image.fromarray(np.zeros((H, W), np.uint8)).save(path)
    report = coco_masks.write_split(coco_root, "val2014", progress=False)
    assert (report.written, report.skipped) == (0, 2) and path.read_bytes() != right
    report = coco_masks.write_split(coco_root, "val2014", overwrite=True, progress=False)
    assert report.written == 2 and path.read_bytes() == right
    assert not list(path.parent.glob(".*"))  # no temporary files left


def test_coco_masks_missing_json_names_path(tmp_path, capsys):
    assert coco_masks.main(["--root", str(tmp_path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "instances_train2014.json" in err and "README" in err


# ------------------------------------------------------------------------------------------------
# SBD -> SegmentationClassAug
# ------------------------------------------------------------------------------------------------
def save_mat(path: Path, seg: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"GTcls": {"Segmentation": seg, "Boundaries": np.zeros((1, 20), object),
                                      "CategoriesPresent": np.unique(seg[seg > 0])}})


def save_voc_png(path: Path, seg: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(seg, mode="P")
    image.putpalette([v for i in range(256) for v in (i * 37 % 256, i * 91 % 256, i * 53 % 256)])
    image.save(path)


@pytest.fixture()
def sbd_root(tmp_path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    seg = {
        "voc_a": box(2, 8, 3, 12) * 1, "sbd_a": box(1, 9, 2, 14) * 7,  # same name "a" in both sets
        "voc_b": np.where(box(4, 12, 4, 20), 255, 0).astype(np.uint8),
        "sbd_c": box(10, 20, 0, 30) * 15,
    }
    seg["voc_b"][6:10, 6:18] = 20  # class 20 inside a 255 band
    save_voc_png(tmp_path / "VOC2012" / "SegmentationClass" / "a.png", seg["voc_a"])
    save_voc_png(tmp_path / "VOC2012" / "SegmentationClass" / "b.png", seg["voc_b"])
    save_mat(tmp_path / "sbd" / "cls" / "a.mat", seg["sbd_a"])
    save_mat(tmp_path / "sbd" / "cls" / "c.mat", seg["sbd_c"])
    return tmp_path, tmp_path / "sbd", seg


def test_sbd_to_voc_voc_wins_and_values_kept(sbd_root, capsys):
    root, sbd, seg = sbd_root
    assert sbd_to_voc.main(["--root", str(root), "--sbd", str(sbd), "--no-progress"]) == 0
    out = root / "VOC2012" / "SegmentationClassAug"
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]
    for name, source in (("a", "voc_a"), ("b", "voc_b"), ("c", "sbd_c")):
        got = Image.open(out / f"{name}.png")
        assert got.mode == "L"
        np.testing.assert_array_equal(np.asarray(got), seg[source])
    assert "2 from VOC2012, 1 from SBD" in capsys.readouterr().out


def test_sbd_bad_value_names_file(sbd_root, capsys):
    root, sbd, _ = sbd_root
    save_mat(sbd / "cls" / "d.mat", box(0, 5, 0, 5) * 30)
    assert sbd_to_voc.main(["--root", str(root), "--sbd", str(sbd), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "d.mat" in err and "[30]" in err


def test_sbd_missing_folder_names_path(sbd_root, capsys):
    root, _, _ = sbd_root
    assert sbd_to_voc.main(["--root", str(root), "--sbd", str(root / "nowhere"), "--no-progress"]) == 1
    assert str(root / "nowhere" / "cls") in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# Checker
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("good")
    generate(root, "fss", n_classes=6, images_per_class=3, size=40)
    generate(root, "pascal", images_per_class=2, size=40)
    return root


def run_check(root: Path, *extra: str) -> int:
    return check.main(["--root", str(root), "--splits-dir", str(root / "splits"), "--no-progress", *extra])


def test_check_good_tree(good_root, capsys):
    assert run_check(good_root) == 0
    out = capsys.readouterr().out
    assert "pascal    trn" in out and "fss       test" in out and "FAIL" not in out
    assert run_check(good_root, "--benchmark", "coco") == 1  # asked for, not there
    assert "COCO2014: folder not found" in capsys.readouterr().out


def test_check_broken_tree_names_files(good_root, tmp_path, capsys):
    root = tmp_path / "broken"
    shutil.copytree(good_root, root)
    lines = (root / "splits" / "pascal" / "val" / "fold2.txt").read_text().split()
    missing_jpg = root / "VOC2012" / "JPEGImages" / f"{lines[0].split('__')[0]}.jpg"
    bad_mask = root / "VOC2012" / "SegmentationClassAug" / f"{lines[-1].split('__')[0]}.png"
    fss_class = (root / "splits" / "fss" / "trn.txt").read_text().split()[0]
    corrupt_jpg = root / "FSS-1000" / fss_class / "2.jpg"
    empty_mask = root / "FSS-1000" / fss_class / "3.png"
    missing_jpg.unlink()
    mask = np.asarray(Image.open(bad_mask)).copy()
    mask[0, 0] = 50
    Image.fromarray(mask).save(bad_mask)
    corrupt_jpg.write_bytes(b"this is not a jpeg")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(empty_mask)
    ignored_mask = root / "VOC2012" / "SegmentationClassAug" / f"{lines[len(lines) // 2].split('__')[0]}.png"
    Image.fromarray(np.full(np.asarray(Image.open(ignored_mask)).shape, 255, np.uint8)).save(ignored_mask)

    assert run_check(root, "--full") == 1
    out = capsys.readouterr().out
    for path in (missing_jpg, bad_mask, corrupt_jpg, empty_mask, ignored_mask):
        assert str(path) in out, path
    assert "[50]" in out and "no foreground" in out
    assert f"mask {ignored_mask} is all 255" in out.split("bad (")[1]  # an error, not a warning


def test_check_sample_reads_fewer_files(good_root, capsys):
    assert run_check(good_root, "--benchmark", "pascal", "--sample", "7") == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("pascal")]
    assert [(r[1], int(r[2]), int(r[4])) for r in rows] == [("trn", 40, 7), ("val", 40, 7)]


def test_check_empty_root_fails(tmp_path, capsys):
    assert check.main(["--root", str(tmp_path), "--no-progress"]) == 1
    assert "FSS-1000" in capsys.readouterr().err


def test_check_cdfss_sets(tmp_path, capsys):
    for layout in ("deepglobe", "isic", "lung"):
        generate(tmp_path, layout, images_per_class=3, size=32)
    assert run_check(tmp_path, "--benchmark", "lung") == 0
    out = capsys.readouterr().out
    assert "lung      lung" in out and "FAIL" not in out
    image = next((tmp_path / "LungSegmentation" / "CXR_png").iterdir())
    image.unlink()
    assert run_check(tmp_path) == 1  # all: the three sets found
    out = capsys.readouterr().out
    assert "deepglobe agriculture" in out and "isic      seborrheic_keratosis" in out and str(image) in out
    shutil.rmtree(tmp_path / "ISIC" / "ISIC2018_Task1-2_Training_Input" / "2")
    assert run_check(tmp_path, "--benchmark", "isic") == 1
    assert "ISIC class folder 2 (melanoma; sort the images with python -m data_prep.isic)" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------
# Deepglobe
# ------------------------------------------------------------------------------------------------
YELLOW, CYAN, GREEN, BLUE, WHITE, BLACK = (255, 255, 0), (0, 255, 255), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def deepglobe_source(src: Path) -> None:
    """Two 48x48 pairs (8x8 tiles): A has a one-colour tile, a tile whose rarest colour is 1/64 and two tiles
    to keep (agriculture + urban; barren + unknown); B has one tile to keep (forest, water, unknown)."""
    src.mkdir()
    a = np.zeros((48, 48, 3), np.uint8)
    a[0:8, 0:8] = YELLOW
    a[0:8, 8:16] = YELLOW
    a[0, 8] = GREEN
    a[0:8, 16:24] = YELLOW
    a[4:8, 16:24] = CYAN
    a[0:8, 24:32] = WHITE
    a[0:3, 24:32] = BLACK
    b = np.zeros((48, 48, 3), np.uint8)
    b[40:48, 40:48] = GREEN
    b[40:43, 40:48] = BLUE
    b[46:48, 40:48] = BLACK
    rng = np.random.default_rng(0)
    for image_id, mask in (("100", a), ("200", b)):
        Image.fromarray(mask).save(src / f"{image_id}_mask.png")
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(src / f"{image_id}_sat.jpg")


def run_deepglobe(src: Path, root: Path, *extra: str) -> int:
    return deepglobe.main(["--src", str(src), "--root", str(root), "--share-denominator", "64", "--no-progress", *extra])


def test_deepglobe_tiles_filters_and_counts(tmp_path, capsys):
    deepglobe_source(tmp_path / "src")
    root = tmp_path / "data"
    assert run_deepglobe(tmp_path / "src", root) == 0
    assert '"kept_tiles": 3' in capsys.readouterr().out
    out = root / "Deepglobe"
    counts = json.loads((out / "counts.json").read_text())
    assert counts["tiles"] == 72 and counts["kept_tiles"] == 3
    assert counts["dropped"] == {"single-colour": 68, "small-share": 1, "many-colours": 0}
    assert counts["per_class"] == {"1 agriculture": 1, "2 urban": 1, "3 rangeland": 0, "4 forest": 1, "5 water": 1, "6 barren": 1}
    assert counts["class_folder_entries"] == 5
    assert (out / "1" / "names.txt").read_text() == "100_02\n" and (out / "4" / "names.txt").read_text() == "200_55\n"
    agriculture = np.asarray(Image.open(out / "1/test/groundtruth/100_02.png"))
    assert agriculture.shape == (8, 8, 3) and (agriculture[:4] == 255).all() and (agriculture[4:] == 0).all()
    assert Image.open(out / "1/test/origin/100_02.jpg").size == (8, 8) and (out / "2/test/origin/100_02.jpg").is_file()
    assert sorted(p.name for p in (out / "6/test/groundtruth").iterdir()) == ["100_03.png"]  # black is no class
    assert not (out / "1/test/groundtruth/100_01.png").exists()  # dropped: rarest colour 1/64 < 0.048

    # rerun: everything recorded is skipped; an image interrupted before its record is redone
    written = out / "4/test/origin/200_55.jpg"
    stamp = (out / "1/test/origin/100_02.jpg").stat().st_mtime_ns
    (out / ".prep" / "200.json").unlink()
    written.unlink()
    assert run_deepglobe(tmp_path / "src", root) == 0
    assert written.is_file() and (out / "1/test/origin/100_02.jpg").stat().st_mtime_ns == stamp
    assert json.loads((out / "counts.json").read_text())["kept_tiles"] == 3
    assert run_deepglobe(tmp_path / "src", root, "--min-share", "0.01") == 1
    assert "written with other parameters" in capsys.readouterr().err


def test_deepglobe_tile_rules_and_errors(tmp_path, capsys):
    assert [deepglobe.tile_bounds(50, k) for k in range(6)] == [(0, 8), (8, 16), (16, 25), (25, 33), (33, 41), (41, 50)]
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 20, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="more than 256 colours.*--many-colours drop"):
        deepglobe.tile_decision(noisy, 400, 0.048, "error", "t")
    assert deepglobe.tile_decision(noisy, 400, 0.048, "drop", "t") == "many-colours"
    (tmp_path / "src").mkdir()
    Image.new("RGB", (12, 12)).save(tmp_path / "src" / "7_sat.jpg")
    assert run_deepglobe(tmp_path / "src", tmp_path / "data") == 1
    assert f"its mask {tmp_path / 'src' / '7_mask.png'} is missing" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# ISIC
# ------------------------------------------------------------------------------------------------
def test_shipped_isic_table_counts():
    table = isic.read_table(isic.SHIPPED_TABLE)
    assert len(table) == 2594 and min(table) == "ISIC_0000000" and max(table) == "ISIC_0016072"
    assert {c: list(table.values()).count(c) for c in set(table.values())} == {
        "nevus": 1867, "melanoma": 519, "seborrheic_keratosis": 208}
    assert list(dict.fromkeys(table.values())) == list(isic.ISIC_CONVENTIONS[isic.DEFAULT_CONVENTION])


def test_isic_sorting_links_idempotent_and_unlisted_named(tmp_path, capsys):
    root = tmp_path / "data"
    flat = root / "ISIC" / "ISIC2018_Task1-2_Training_Input"
    flat.mkdir(parents=True)
    table = tmp_path / "table.csv"
    rows = [("ISIC_0000001", "nevus"), ("ISIC_0000002", "melanoma"), ("ISIC_0000003", "nevus"),
            ("ISIC_0000004", "seborrheic_keratosis")]
    table.write_bytes(b"ID,Class\r\n" + b"".join(f"{i},{c}\r\n".encode() for i, c in rows))  # CRLF like PATNet's
    for image_id, _ in rows + [("ISIC_0009999", None)]:
        Image.new("RGB", (4, 4)).save(flat / f"{image_id}.jpg")
    run = lambda *extra: isic.main(["--root", str(root), "--table", str(table), *extra])  # noqa: E731
    assert run() == 1
    assert "not in the class table" in (err := capsys.readouterr().err) and "ISIC_0009999" in err
    assert run("--skip-unlisted") == 0
    counts = json.loads((root / "ISIC" / "counts.json").read_text())
    assert counts["per_folder"] == {"1 nevus": 2, "2 melanoma": 1, "3 seborrheic_keratosis": 1} and counts["links_made"] == 4
    assert sorted(p.name for p in (flat / "1").iterdir()) == ["ISIC_0000001.jpg", "ISIC_0000003.jpg"]
    assert (flat / "1" / "ISIC_0000001.jpg").is_symlink() and (flat / "1" / "ISIC_0000001.jpg").resolve() == (flat / "ISIC_0000001.jpg").resolve()
    capsys.readouterr()
    assert run("--skip-unlisted") == 0 and '"links_made": 0' in capsys.readouterr().out
    assert run("--skip-unlisted", "--convention", "dr-adapter") == 0  # 1 seborrheic_keratosis, 2 nevus, 3 melanoma
    assert sorted(p.name for p in (flat / "2").iterdir()) == ["ISIC_0000001.jpg", "ISIC_0000003.jpg"]
    assert sorted(p.name for p in (flat / "1").iterdir()) == ["ISIC_0000004.jpg"]
    (flat / "ISIC_0000002.jpg").unlink()
    assert run("--skip-unlisted") == 1 and "ISIC_0000002.jpg" in capsys.readouterr().err
    assert run("--skip-unlisted", "--allow-missing") == 0
