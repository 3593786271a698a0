"""HSNet's benchmark layouts (hsnet-protocol.md, "Episodes"): PASCAL-5i, COCO-20i, FSS-1000 and a user's folder.

* ``PascalLayout``: ``root/VOC2012/JPEGImages/NAME.jpg`` and ``root/VOC2012/SegmentationClassAug/NAME.png``
  (pixel value = class index + 1, 255 = object boundary, 0 = background); split lines ``NAME__CLASS``.
* ``CocoLayout``: ``root/COCO2014/{train2014,val2014}/NAME.jpg`` and
  ``root/COCO2014/annotations/{train2014,val2014}/NAME.png`` (pixel value = class index + 1).
* ``FssLayout``: ``root/FSS-1000/CLASS/N.jpg`` with the mask ``N.png`` (grey >= 128 is foreground).
* ``FolderLayout``: ``root/CLASS/STEM.EXT`` (any image extension) with the mask ``STEM.png`` in the FSS
  style; an image that is itself a PNG takes its mask from ``STEM_mask.png``. The class split is the
  user's: ``class_split={"trn": [...], "val": [...], "test": [...]}`` or a JSON file with that content.

Which classes a fold holds out is the benchmark's (``BenchmarkSpec.class_split``), not the layout's.
"""
from __future__ import annotations

from pathlib import Path

from hsnetlib.data.base import (
    IMAGE_EXTENSIONS, SHIPPED_SPLITS, SPLITS, EpisodeIndex, Layout, Loaded, _check_same_size, _read_lines, _require_dir,
    load_class_split, natural_key, read_class_index_mask, read_grey_mask, read_rgb,
)

PASCAL_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)
COCO_CLASSES = (  # category-id order
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
PASCAL_LIST_FOLDS = 4  # the shipped lists pascal/{trn,val}/fold{0..3}.txt; list j holds classes 5j..5j+4


def classwise(rows: list[tuple[str, int]], class_ids: list[int]) -> dict[int, list[str]]:
    """Names per class in list order."""
    out: dict[int, list[str]] = {c: [] for c in class_ids}
    for name, class_id in rows:
        if class_id not in out:
            raise ValueError(f"split list entry {name!r} has class {class_id}, not one of this split's {class_ids}")
        out[class_id].append(name)
    return out


class PascalLayout(Layout):
    """VOC2012 + SBD (SegmentationClassAug); split lines read NAME__CLASS (1-based).

    Training on fold f uses every class not held out and the trn lists of the folds whose classes are all
    kept: PASCAL-5i's other three lists, or all four when nothing is held out (pascal-all, PATNet's
    "fold 4"). Val/test use fold f's val list."""

    def __init__(self, config, spec):
        super().__init__(config)
        self.spec = spec
        self.base = _require_dir(self.root / "VOC2012", "PASCAL VOC2012 folder")
        self.images = _require_dir(self.base / "JPEGImages", "PASCAL images folder (VOC2012 JPEG images)")
        self.masks = _require_dir(self.base / "SegmentationClassAug", "PASCAL SegmentationClassAug folder (class-index masks)")
        self.splits = self.splits_dir / "pascal"
        self.class_names = list(PASCAL_CLASSES)

    def _read_split(self, split: str, fold: int) -> list[tuple[str, int]]:
        path = self.splits / split / f"fold{fold}.txt"
        rows = []
        for lineno, line in enumerate(_read_lines(path), 1):
            name, sep, cls = line.rpartition("__")
            if not sep or not cls.isdigit() or not 1 <= int(cls) <= len(PASCAL_CLASSES):
                raise ValueError(f"{path}:{lineno}: expected NAME__CLASS with a 1-based class, got {line!r}")
            rows.append((name, int(cls) - 1))
        return rows

    def index(self, fold: int, split: str) -> EpisodeIndex:
        held_out = list(self.spec.class_split(fold))
        if split == "trn":
            class_ids = [c for c in range(len(PASCAL_CLASSES)) if c not in held_out]
            lists = [j for j in range(PASCAL_LIST_FOLDS) if not set(range(5 * j, 5 * j + 5)) & set(held_out)]
            queries = [row for j in lists for row in self._read_split("trn", j)]
        else:
            class_ids = held_out
            queries = self._read_split("val", fold)
        return EpisodeIndex(class_ids, queries, classwise(queries, class_ids), draw_class_first=False, n_episodes=len(queries))

    def load(self, name: str, class_id: int) -> Loaded:
        image_path, mask_path = self.images / f"{name}.jpg", self.masks / f"{name}.png"
        image, label = read_rgb(image_path), read_class_index_mask(mask_path, len(PASCAL_CLASSES), boundary=True)
        _check_same_size(image, label, image_path, mask_path)
        return Loaded(image, label == class_id + 1, label == 255)


class CocoLayout(Layout):
    """COCO-20i; split lists are gzipped TSV rows `class_id<TAB>train2014/NAME.jpg` (0-based class)."""

    def __init__(self, config, spec):
        super().__init__(config)
        self.spec = spec
        self.base = _require_dir(self.root / "COCO2014", "COCO2014 folder")
        self.annotations = _require_dir(self.base / "annotations", "COCO2014 class-index masks folder (data_prep.coco_masks writes it)")
        self.splits = self.splits_dir / "coco"
        self.class_names = list(COCO_CLASSES)

    def index(self, fold: int, split: str) -> EpisodeIndex:
        test_ids = list(self.spec.class_split(fold))
        class_ids = [c for c in range(len(COCO_CLASSES)) if c not in test_ids] if split == "trn" else test_ids
        path = self.splits / ("trn" if split == "trn" else "val") / f"fold{fold}.tsv.gz"
        rows = []
        for lineno, line in enumerate(_read_lines(path), 1):
            cls, sep, name = line.partition("\t")
            if not sep or not cls.isdigit() or int(cls) not in class_ids:
                raise ValueError(f"{path}: row {lineno}: expected 'CLASS<TAB>NAME' with a class of this fold, got {line!r}")
            rows.append((name, int(cls)))
        n = len({name for name, _ in rows})  # training: every image once per epoch
        return EpisodeIndex(class_ids, [], classwise(rows, class_ids), draw_class_first=True, n_episodes=n)

    def load(self, name: str, class_id: int) -> Loaded:
        image_path = self.base / name
        mask_path = (self.annotations / name).with_suffix(".png")
        image, label = read_rgb(image_path), read_class_index_mask(mask_path, len(COCO_CLASSES), boundary=False)
        _check_same_size(image, label, image_path, mask_path)
        return Loaded(image, label == class_id + 1, None)


class FolderLayout(Layout):
    """One folder per class holding image/mask pairs; queries in natural order of the file stems."""

    def __init__(self, config, spec, class_split=None, root: Path | None = None, what: str = "folder benchmark root"):
        super().__init__(config)
        self.spec = spec
        self.folder = _require_dir(self.root if root is None else root, what)
        self.class_split = load_class_split(config.class_split) if class_split is None else class_split
        self.class_names = list(dict.fromkeys(c for s in SPLITS for c in self.class_split.get(s, [])))
        self.files: dict[str, tuple[Path, Path]] = {}  # name -> (image, mask)

    def _class_dir(self, class_name: str) -> Path:
        return _require_dir(self.folder / class_name, f"class folder {class_name!r}")

    def _pairs(self, class_name: str) -> list[tuple[str, Path, Path]]:
        """(stem, image, mask) of a class folder; STEM_mask.png, else STEM.png, is the mask of STEM.*"""
        folder = self._class_dir(class_name)
        by_stem: dict[str, list[Path]] = {}
        for path in folder.iterdir():
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                by_stem.setdefault(path.stem, []).append(path)
        pairs = []
        for stem, paths in by_stem.items():
            if stem.endswith("_mask") and stem[: -len("_mask")] in by_stem:
                continue
            masks = by_stem.get(f"{stem}_mask") or [p for p in paths if p.suffix.lower() == ".png"]
            images = [p for p in paths if p not in masks]
            if len(images) != 1 or len(masks) != 1:
                found = ", ".join(sorted(p.name for p in paths + by_stem.get(f"{stem}_mask", [])))
                raise ValueError(
                    f"{folder}: {found}: expected one image {stem}.EXT and its mask {stem}.png "
                    f"(or {stem}_mask.png when the image is a PNG)"
                )
            pairs.append((stem, images[0], masks[0]))
        return pairs

    def _stems(self, class_name: str) -> list[str]:
        """A class's stems in natural order, the support-candidate order (registering their files)."""
        pairs = sorted(self._pairs(class_name), key=lambda p: natural_key(p[0]))
        for stem, image, mask in pairs:
            self.files[f"{class_name}/{stem}"] = (image, mask)
        return [stem for stem, _, _ in pairs]

    def _split_classes(self, split: str) -> list[str]:
        if split not in self.class_split:
            raise ValueError(f"the class split has no {split!r} list (it has {sorted(self.class_split)})")
        return list(self.class_split[split])

    def index(self, fold: int, split: str) -> EpisodeIndex:
        class_ids, queries, candidates = [], [], {}
        for class_name in self._split_classes(split):
            class_id = self.class_names.index(class_name)
            stems = self._stems(class_name)
            class_ids.append(class_id)
            queries += [(f"{class_name}/{stem}", class_id) for stem in self._query_order(stems)]
            candidates[class_id] = [f"{class_name}/{stem}" for stem in stems]
        return EpisodeIndex(class_ids, queries, candidates, draw_class_first=False, n_episodes=len(queries))

    def _query_order(self, stems: list[str]) -> list[str]:
        return stems

    def load(self, name: str, class_id: int) -> Loaded:
        image_path, mask_path = self.files[name]
        image, fg = read_rgb(image_path), read_grey_mask(mask_path)
        _check_same_size(image, fg, image_path, mask_path)
        return Loaded(image, fg, None)


class FssLayout(FolderLayout):
    """FSS-1000: CLASS/N.jpg with mask N.png; 520/240/240 classes in splits_dir/fss/{trn,val,test}.txt.

    As published, the class names of each split list are sorted with `sorted()` (plain string
    order, not the file's order) and numbered in that order, trn 0-519, val 520-759, test 760-999;
    queries run class by class in that order and, within a class, in string order of the file
    names (1, 10, 2, ...); supports are drawn from the numbers in numeric order (1, 2, ..., 10).
    """

    def __init__(self, config, spec):
        splits_dir = SHIPPED_SPLITS if config.splits_dir is None else Path(config.splits_dir).expanduser()
        class_split = {s: sorted(_read_lines(splits_dir / "fss" / f"{s}.txt")) for s in SPLITS}
        root = Path(config.root).expanduser() / "FSS-1000"
        super().__init__(config, spec, class_split=class_split, root=root, what="FSS-1000 folder")

    def _pairs(self, class_name: str) -> list[tuple[str, Path, Path]]:
        folder = self._class_dir(class_name)
        return [(p.stem, p, p.with_suffix(".png")) for p in folder.glob("*.jpg")]

    def _query_order(self, stems: list[str]) -> list[str]:
        return sorted(stems, key=lambda stem: f"{stem}.jpg")

