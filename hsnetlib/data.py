"""Episodic few-shot segmentation data sets: PASCAL-5i, COCO-20i, FSS-1000 and a user's own folder.

Every benchmark is read from its real directory layout under ``root``:

* ``pascal``: ``root/VOC2012/JPEGImages/NAME.jpg`` and ``root/VOC2012/SegmentationClassAug/NAME.png``
  (pixel value = class index + 1, 255 = object boundary, 0 = background).
* ``coco``: ``root/COCO2014/{train2014,val2014}/NAME.jpg`` and
  ``root/COCO2014/annotations/{train2014,val2014}/NAME.png`` (pixel value = class index + 1).
* ``fss``: ``root/FSS-1000/CLASS/N.jpg`` with the mask ``N.png`` (grey >= 128 is foreground).
* ``folder``: ``root/CLASS/STEM.EXT`` (any image extension) with the mask ``STEM.png`` in the FSS
  style; an image that is itself a PNG takes its mask from ``STEM_mask.png``. The class split is the
  user's: ``class_split={"trn": [...], "val": [...], "test": [...]}`` or a JSON file with that content.

Episodes. Splits "val" and "test" hold fixed episodes: they are the published ones for seed 0. A
``numpy.random.RandomState(seed)`` owned by the data set draws them in index order, once, at
construction, so neither global random state nor DataLoader workers change them. Every draw is
``choice(candidates, 1, replace=False)[0]``; PASCAL-5i and FSS-1000 draw only the supports (one call
per support, redrawn while equal to the query), COCO-20i draws the class, then the query, then each
support. On PASCAL-5i and COCO-20i "val" and "test" are the same 1,000 episodes over the fold's val
list (the published test protocol). Split "trn" holds training episodes: episode ``i`` of epoch
``e`` is drawn from ``RandomState([seed, e, i])`` when it is loaded, so it is random per epoch,
reproducible from (seed, epoch) and independent of the worker that loads it. Index the data set
with the key ``(e, i)`` -- what the trainer's sampler yields, so that persistent DataLoader workers,
whose copies of the data set never see the main process again, load the right epoch -- or with
``i`` after ``set_epoch(e)`` (non-persistent workers copy the data set at every epoch).

Input transform (the published one): PIL RGB image, torchvision ``Resize((s, s))`` (bilinear), to
tensor, ImageNet normalization; masks resized with nearest-neighbour interpolation on a float tensor.
``resize="aspect"`` instead scales the longer side to ``img_size`` and pads bottom/right to
``img_size x img_size`` (image padding 0 after normalization, mask padding 0); ``query_valid_size``
says which top-left region is real so that evaluation ignores the padding.
``use_original_imgsize=True`` keeps the query mask (and ignore map) at the original resolution.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

DATA_HELP = "see README section 'Data sets'"
SHIPPED_SPLITS = Path(__file__).resolve().parent / "splits"
BENCHMARKS = ("pascal", "coco", "fss", "folder")
SPLITS = ("trn", "val", "test")
RESIZE_MODES = ("square", "aspect")
N_TEST_EPISODES = 1000  # PASCAL-5i and COCO-20i test episodes per fold
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")

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
NFOLDS = {"pascal": 4, "coco": 4, "fss": 1, "folder": 1}


@dataclass(frozen=True)
class DatasetConfig:
    """Everything `build_dataset` was called with; `FewShotDataset.with_episodes` rebuilds from it."""

    benchmark: str
    root: str
    fold: int
    split: str
    shot: int
    img_size: int = 400
    use_original_imgsize: bool = False
    resize: str = "square"
    seed: int = 0
    class_split: Any = None
    splits_dir: str | None = None


@dataclass(frozen=True)
class Episode:
    """One episode by name: the query, its K supports and the class id (see `class_names`)."""

    query: str
    supports: tuple[str, ...]
    class_id: int


@dataclass
class EpisodeIndex:
    """What a benchmark split offers to draw episodes from; names are keys of the layout."""

    class_ids: list[int]
    queries: list[tuple[str, int]]  # published query order; unused when the class is drawn first
    candidates: dict[int, list[str]]  # per class: query/support candidates in the published order
    draw_class_first: bool
    n_episodes: int


@dataclass
class Loaded:
    """One image with its label at original resolution: binary foreground and boundary (or None)."""

    image: Image.Image
    fg: np.ndarray  # (H0, W0) bool
    boundary: np.ndarray | None  # (H0, W0) bool, PASCAL-5i's 255 pixels


# ---------------------------------------------------------------------------------------------
# File reading
# ---------------------------------------------------------------------------------------------

def _missing(what: str, path: Path) -> FileNotFoundError:
    return FileNotFoundError(f"{what} not found: expected {path} ({DATA_HELP})")


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise _missing(what, path)
    return path


def _open(path: Path, mode: str | None) -> Image.Image:
    """Open and fully decode an image (converted to `mode` if given), naming the file on failure."""
    if not path.is_file():
        raise _missing("file", path)
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode) if mode else img.copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def read_rgb(path: Path) -> Image.Image:
    """An image as PIL RGB."""
    return _open(path, "RGB")


def read_class_index_mask(path: Path, nclass: int, boundary: bool) -> np.ndarray:
    """A single-channel class-index mask (H0, W0) uint8 with values in {0..nclass} (and 255 when
    `boundary`); any other value raises."""
    img = _open(path, None)
    if img.mode not in ("L", "P"):
        raise ValueError(f"mask {path} has mode {img.mode}: expected a single-channel class-index PNG (L or P)")
    label = np.asarray(img, dtype=np.uint8)
    values = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    bad = values[(values > nclass) & ~((values == 255) & boundary)]
    if bad.size:
        expected = f"{{0..{nclass}{', 255' if boundary else ''}}}"
        raise ValueError(f"mask {path} has values {bad[:10].tolist()} outside the expected set {expected}")
    return label


def read_grey_mask(path: Path) -> np.ndarray:
    """An FSS-style mask: grey (L) >= 128 is foreground. (H0, W0) bool."""
    return np.asarray(_open(path, "L")) >= 128


def _check_same_size(image: Image.Image, label: np.ndarray, image_path: Path, mask_path: Path) -> None:
    if label.shape != (image.height, image.width):
        raise ValueError(
            f"mask {mask_path} is {label.shape[1]}x{label.shape[0]} but image {image_path} is "
            f"{image.width}x{image.height}"
        )


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise _missing("split list", path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def natural_key(text: str) -> list[Any]:
    """Sort key that orders embedded numbers numerically ('2' before '10')."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


# ---------------------------------------------------------------------------------------------
# Layouts: one class per benchmark, each turning (fold, split) into an EpisodeIndex and a name into files
# ---------------------------------------------------------------------------------------------

class Layout:
    """A benchmark's directory layout: class names, episode index, and loading one named image."""

    class_names: list[str]

    def index(self, fold: int, split: str) -> EpisodeIndex:
        raise NotImplementedError

    def load(self, name: str, class_id: int) -> Loaded:
        raise NotImplementedError


class PascalLayout(Layout):
    """PASCAL-5i over VOC2012 + SBD (SegmentationClassAug); split lines read NAME__CLASS (1-based)."""

    def __init__(self, root: Path, splits_dir: Path):
        self.base = _require_dir(root / "VOC2012", "PASCAL VOC2012 folder")
        self.images = _require_dir(self.base / "JPEGImages", "PASCAL images folder")
        self.masks = _require_dir(self.base / "SegmentationClassAug", "PASCAL SegmentationClassAug folder")
        self.splits = splits_dir / "pascal"
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
        test_ids = list(range(5 * fold, 5 * fold + 5))
        if split == "trn":
            class_ids = [c for c in range(len(PASCAL_CLASSES)) if c not in test_ids]
            queries = [row for f in range(4) if f != fold for row in self._read_split("trn", f)]
        else:
            class_ids = test_ids
            queries = self._read_split("val", fold)
        candidates = _classwise(queries, class_ids)
        n = len(queries) if split == "trn" else N_TEST_EPISODES
        return EpisodeIndex(class_ids, queries, candidates, draw_class_first=False, n_episodes=n)

    def load(self, name: str, class_id: int) -> Loaded:
        image_path, mask_path = self.images / f"{name}.jpg", self.masks / f"{name}.png"
        image, label = read_rgb(image_path), read_class_index_mask(mask_path, len(PASCAL_CLASSES), boundary=True)
        _check_same_size(image, label, image_path, mask_path)
        return Loaded(image, label == class_id + 1, label == 255)


class CocoLayout(Layout):
    """COCO-20i; split lists are gzipped TSV rows `class_id<TAB>train2014/NAME.jpg` (0-based class)."""

    def __init__(self, root: Path, splits_dir: Path):
        self.base = _require_dir(root / "COCO2014", "COCO2014 folder")
        self.annotations = _require_dir(self.base / "annotations", "COCO2014 class-index masks folder")
        self.splits = splits_dir / "coco"
        self.class_names = list(COCO_CLASSES)

    def index(self, fold: int, split: str) -> EpisodeIndex:
        test_ids = [fold + 4 * v for v in range(20)]
        class_ids = [c for c in range(80) if c not in test_ids] if split == "trn" else test_ids
        path = self.splits / ("trn" if split == "trn" else "val") / f"fold{fold}.tsv.gz"
        rows = []
        for lineno, line in enumerate(_read_lines(path), 1):
            cls, sep, name = line.partition("\t")
            if not sep or not cls.isdigit() or int(cls) not in class_ids:
                raise ValueError(f"{path}: row {lineno}: expected 'CLASS<TAB>NAME' with a class of this fold, got {line!r}")
            rows.append((name, int(cls)))
        candidates = _classwise(rows, class_ids)
        n = len({name for name, _ in rows}) if split == "trn" else N_TEST_EPISODES
        return EpisodeIndex(class_ids, [], candidates, draw_class_first=True, n_episodes=n)

    def load(self, name: str, class_id: int) -> Loaded:
        image_path = self.base / name
        mask_path = (self.annotations / name).with_suffix(".png")
        image, label = read_rgb(image_path), read_class_index_mask(mask_path, len(COCO_CLASSES), boundary=False)
        _check_same_size(image, label, image_path, mask_path)
        return Loaded(image, label == class_id + 1, None)


class FolderLayout(Layout):
    """One folder per class holding image/mask pairs; queries in natural order of the file stems."""

    def __init__(self, root: Path, class_split: Mapping[str, Sequence[str]], what: str):
        self.root = _require_dir(root, what)
        self.class_split = class_split
        self.class_names = list(dict.fromkeys(c for s in SPLITS for c in class_split.get(s, [])))
        self.files: dict[str, tuple[Path, Path]] = {}  # name -> (image, mask)

    def _class_dir(self, class_name: str) -> Path:
        return _require_dir(self.root / class_name, f"class folder {class_name!r}")

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

    def __init__(self, root: Path, splits_dir: Path):
        class_split = {s: sorted(_read_lines(splits_dir / "fss" / f"{s}.txt")) for s in SPLITS}
        super().__init__(root / "FSS-1000", class_split, "FSS-1000 folder")

    def _pairs(self, class_name: str) -> list[tuple[str, Path, Path]]:
        folder = self._class_dir(class_name)
        return [(p.stem, p, p.with_suffix(".png")) for p in folder.glob("*.jpg")]

    def _query_order(self, stems: list[str]) -> list[str]:
        return sorted(stems, key=lambda stem: f"{stem}.jpg")


def _classwise(rows: list[tuple[str, int]], class_ids: list[int]) -> dict[int, list[str]]:
    """Names per class in list order."""
    out: dict[int, list[str]] = {c: [] for c in class_ids}
    for name, class_id in rows:
        if class_id not in out:
            raise ValueError(f"split list entry {name!r} has class {class_id}, not one of this split's {class_ids}")
        out[class_id].append(name)
    return out


def load_class_split(class_split: Any) -> dict[str, list[str]]:
    """The folder benchmark's class split from a dict or a JSON file path, validated."""
    if class_split is None:
        raise ValueError('benchmark="folder" needs class_split={"trn": [...], "val": [...], "test": [...]} or a JSON path')
    if isinstance(class_split, (str, Path)):
        path = Path(class_split)
        if not path.is_file():
            raise _missing("class split JSON", path)
        try:
            class_split = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"class split {path} is not valid JSON: {err}") from err
    if not isinstance(class_split, Mapping) or not set(class_split) <= set(SPLITS) or not all(
        isinstance(v, (list, tuple)) and all(isinstance(c, str) for c in v) for v in class_split.values()
    ):
        raise ValueError(f"class_split must map some of {SPLITS} to lists of class folder names, got {class_split!r}")
    return {k: list(v) for k, v in class_split.items()}


# ---------------------------------------------------------------------------------------------
# Episodes
# ---------------------------------------------------------------------------------------------

def draw(rng: np.random.RandomState, candidates: Sequence[Any]) -> Any:
    """One published draw, `rng.choice(candidates, 1, replace=False)[0]` (it permutes the whole list)."""
    return candidates[rng.choice(len(candidates), 1, replace=False)[0]]


def draw_episode(index: EpisodeIndex, idx: int, shot: int, rng: np.random.RandomState) -> Episode:
    """Episode `idx`: the class and query (drawn first on COCO-20i), then `shot` supports != query."""
    if index.draw_class_first:
        class_id = int(draw(rng, index.class_ids))
        query = draw(rng, index.candidates[class_id])
    else:
        query, class_id = index.queries[idx % len(index.queries)]
    supports: list[str] = []
    while len(supports) < shot:
        support = draw(rng, index.candidates[class_id])
        if support != query:
            supports.append(support)
    return Episode(query, tuple(supports), class_id)


# ---------------------------------------------------------------------------------------------
# The data set
# ---------------------------------------------------------------------------------------------

class FewShotDataset(Dataset):
    """Episodes of one benchmark fold and split; an item is a dict (see `__getitem__`)."""

    def __init__(self, config: DatasetConfig, layout: Layout, index: EpisodeIndex):
        self.config = config
        self.layout = layout
        self.index = index
        self.epoch = 0
        self.fixed_episodes = config.split != "trn"
        self._episodes: list[Episode] = []
        if self.fixed_episodes:
            rng = np.random.RandomState(config.seed)
            self._episodes = [draw_episode(index, i, config.shot, rng) for i in range(index.n_episodes)]

    benchmark = property(lambda self: self.config.benchmark)
    fold = property(lambda self: self.config.fold)
    split = property(lambda self: self.config.split)
    shot = property(lambda self: self.config.shot)
    seed = property(lambda self: self.config.seed)
    img_size = property(lambda self: self.config.img_size)
    use_original_imgsize = property(lambda self: self.config.use_original_imgsize)
    class_ids = property(lambda self: list(self.index.class_ids))
    class_names = property(lambda self: list(self.layout.class_names))
    nclass = property(lambda self: len(self.layout.class_names))

    def __len__(self) -> int:
        return self.index.n_episodes

    def set_epoch(self, epoch: int) -> None:
        """Redraw the training episodes for `epoch` (no effect on the fixed val/test episodes)."""
        self.epoch = int(epoch)

    def with_episodes(self, seed: int | None = None, shot: int | None = None) -> "FewShotDataset":
        """The same data with episodes drawn for another seed and/or shot."""
        changes = {k: v for k, v in (("seed", seed), ("shot", shot)) if v is not None}
        return build_dataset(**dataclasses.asdict(dataclasses.replace(self.config, **changes)))

    def episode(self, idx: int, epoch: int | None = None) -> Episode:
        """Episode `idx` (of training epoch `epoch`, None: the one `set_epoch` chose) by name, without
        loading any image."""
        if not 0 <= idx < len(self):
            raise IndexError(f"episode {idx} out of range for {len(self)} episodes")
        if self.fixed_episodes:
            return self._episodes[idx]
        rng = np.random.RandomState([self.config.seed, self.epoch if epoch is None else epoch, idx])
        return draw_episode(self.index, idx, self.config.shot, rng)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """The episode `key` = idx or (epoch, idx) (see `episode`) as tensors:

        query_img (3,s,s), query_mask (s,s) [or (H0,W0)], query_name, org_query_imsize (2,) = (H0,W0),
        query_valid_size (2,) = the (h,w) top-left region holding the image, support_imgs (K,3,s,s),
        support_masks (K,s,s), support_names, class_id, episode; on PASCAL-5i also query_ignore_idx
        (like query_mask) and support_ignore_idxs (K,s,s), 1 on boundary pixels."""
        epoch, idx = key if isinstance(key, tuple) else (None, key)
        ep = self.episode(idx, epoch)
        query = self.layout.load(ep.query, ep.class_id)
        h0, w0 = query.image.height, query.image.width
        hw = self._resized_size(h0, w0)
        supports = [self._support_tensors(self.layout.load(name, ep.class_id)) for name in ep.supports]
        item: dict[str, Any] = {
            "query_img": self._image_tensor(query.image, hw),
            "query_mask": self._query_label(query.fg, hw),
            "query_name": ep.query,
            "org_query_imsize": torch.tensor([h0, w0]),
            "query_valid_size": torch.tensor(hw),
            "support_imgs": torch.stack([s[0] for s in supports]),
            "support_masks": torch.stack([s[1] for s in supports]),
            "support_names": list(ep.supports),
            "class_id": ep.class_id,
            "episode": idx,
        }
        if query.boundary is not None:
            item["query_ignore_idx"] = self._query_label(query.boundary, hw)
            item["support_ignore_idxs"] = torch.stack([s[2] for s in supports])
        return item

    def _support_tensors(self, support: Loaded) -> tuple[torch.Tensor, ...]:
        """(image (3,s,s), mask (s,s)[, boundary (s,s)]) of one support."""
        hw = self._resized_size(support.image.height, support.image.width)
        tensors = (self._image_tensor(support.image, hw), self._mask_tensor(support.fg, hw))
        if support.boundary is not None:
            tensors += (self._mask_tensor(support.boundary, hw),)
        return tensors

    # -- transforms ----------------------------------------------------------------------------

    def _resized_size(self, h0: int, w0: int) -> tuple[int, int]:
        s = self.config.img_size
        if self.config.resize == "square":
            return s, s
        scale = s / max(h0, w0)
        return max(1, round(h0 * scale)), max(1, round(w0 * scale))

    def _pad(self, tensor: torch.Tensor) -> torch.Tensor:
        s = self.config.img_size
        return F.pad(tensor, (0, s - tensor.shape[-1], 0, s - tensor.shape[-2]))

    def _image_tensor(self, image: Image.Image, hw: tuple[int, int]) -> torch.Tensor:
        return self._pad(image_to_tensor(image, hw))

    def _mask_tensor(self, mask: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
        return self._pad(mask_to_tensor(mask, hw))

    def _query_label(self, mask: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
        if self.config.use_original_imgsize:
            return torch.from_numpy(mask.astype(np.float32))
        return self._mask_tensor(mask, hw)


def image_to_tensor(image: Image.Image, hw: tuple[int, int]) -> torch.Tensor:
    """The published input transform: PIL RGB -> Resize(hw) bilinear -> tensor -> ImageNet normalisation (3, h, w)."""
    resized = TF.resize(image, list(hw), interpolation=InterpolationMode.BILINEAR)
    return TF.normalize(TF.to_tensor(resized), IMAGENET_MEAN, IMAGENET_STD)


def mask_to_tensor(mask: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
    """A (H0, W0) mask -> float (h, w), nearest-neighbour resize on a float tensor, as the spec says."""
    tensor = torch.from_numpy(mask.astype(np.float32))[None, None]  # (1, 1, H0, W0)
    return F.interpolate(tensor, size=tuple(hw), mode="nearest")[0, 0]


def _layout(config: DatasetConfig) -> Layout:
    root = Path(config.root).expanduser()
    splits_dir = Path(config.splits_dir).expanduser() if config.splits_dir is not None else SHIPPED_SPLITS
    if config.benchmark == "pascal":
        return PascalLayout(root, splits_dir)
    if config.benchmark == "coco":
        return CocoLayout(root, splits_dir)
    if config.benchmark == "fss":
        return FssLayout(root, splits_dir)
    return FolderLayout(root, load_class_split(config.class_split), "folder benchmark root")


def _validate(config: DatasetConfig) -> None:
    if config.benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark={config.benchmark!r}: expected one of {BENCHMARKS}")
    if config.split not in SPLITS:
        raise ValueError(f"split={config.split!r}: expected one of {SPLITS}")
    nfolds = NFOLDS[config.benchmark]
    if not (isinstance(config.fold, int) and 0 <= config.fold < nfolds):
        raise ValueError(f"fold={config.fold!r} out of range for {config.benchmark} (0..{nfolds - 1})")
    if not (isinstance(config.shot, int) and config.shot >= 1):
        raise ValueError(f"shot={config.shot!r}: expected an integer >= 1")
    if not (isinstance(config.img_size, int) and config.img_size >= 1):
        raise ValueError(f"img_size={config.img_size!r}: expected an integer >= 1")
    if config.resize not in RESIZE_MODES:
        raise ValueError(f"resize={config.resize!r}: expected one of {RESIZE_MODES}")
    if not (isinstance(config.seed, int) and 0 <= config.seed < 2**32):
        raise ValueError(f"seed={config.seed!r}: expected an integer in [0, 2**32)")


def _check_index(index: EpisodeIndex, layout: Layout, config: DatasetConfig) -> None:
    """Every class must offer a query and another image, or the support draw could never end."""
    for class_id in index.class_ids:
        n = len(set(index.candidates[class_id]))
        if n < 2:
            raise ValueError(
                f"{config.benchmark} fold {config.fold} split {config.split}: class "
                f"{layout.class_names[class_id]!r} has {n} image(s); an episode needs at least 2"
            )


def build_dataset(
    benchmark: str,
    root: str | Path,
    fold: int,
    split: str,
    shot: int,
    img_size: int = 400,
    use_original_imgsize: bool = False,
    resize: str = "square",
    seed: int = 0,
    class_split: Mapping[str, Sequence[str]] | str | Path | None = None,
    splits_dir: str | Path | None = None,
) -> FewShotDataset:
    """The episodes of `benchmark` fold `fold`, split `split`, with `shot` supports each.

    `splits_dir` None reads the split lists shipped in hsnetlib/splits; otherwise a directory with
    the same structure (pascal/{trn,val}/foldF.txt, coco/{trn,val}/foldF.tsv.gz, fss/{trn,val,test}.txt).
    `class_split` is the folder benchmark's {"trn": [...], "val": [...], "test": [...]} (or a JSON path).
    """
    config = DatasetConfig(
        benchmark=benchmark, root=str(root), fold=fold, split=split, shot=shot, img_size=img_size,
        use_original_imgsize=use_original_imgsize, resize=resize, seed=seed,
        class_split=str(class_split) if isinstance(class_split, Path) else class_split,
        splits_dir=None if splits_dir is None else str(splits_dir),
    )
    _validate(config)
    layout = _layout(config)
    index = layout.index(fold, split)
    _check_index(index, layout, config)
    return FewShotDataset(config, layout, index)
