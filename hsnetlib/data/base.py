"""The parts every benchmark layout shares: file readers, the episode index and draws, the input transform.

Episodes. Splits "val" and "test" hold fixed episodes: they are the published ones for seed 0. A
``numpy.random.RandomState(seed)`` owned by the data set draws them in index order, once, at
construction, so neither global random state nor DataLoader workers change them. Every draw is
``choice(candidates, 1, replace=False)[0]`` (`draw`). Three published orders exist (`draw_episode`):
the query is the episode's line of a list (PASCAL-5i, FSS-1000: only the supports are drawn), or the
class is drawn, then the query (COCO-20i), or the class is the episode index modulo the class count and
the query is drawn (the CD-FSS target sets); then each support, redrawn while equal to the query.

Input transform (the published one): PIL RGB image, torchvision ``Resize((s, s))`` (bilinear), to
tensor, ImageNet normalization; masks resized with nearest-neighbour interpolation on a float tensor.
Images are read as stored (no EXIF orientation), as in the authors' code; a 16-bit grey image is scaled
to 8 bits (not clipped to white).
"""
from __future__ import annotations

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
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

DATA_HELP = "see README section 'Data sets' and data_prep/README.md"
SHIPPED_SPLITS = Path(__file__).resolve().parent.parent / "splits"
SPLITS = ("trn", "val", "test")
PAPER_IMG_SIZE = 400  # the published input size (spec, "Evaluation"): every pyramid level squeezes to a 2x2 support grid
RESIZE_MODES = ("square", "aspect")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


@dataclass(frozen=True)
class DatasetConfig:
    """Everything `build_dataset` was called with, the benchmark's options filled in with their defaults;
    `FewShotDataset.with_episodes` rebuilds from it and a run record stores it."""

    benchmark: str
    root: str
    fold: int
    split: str
    shot: int
    img_size: int = PAPER_IMG_SIZE
    use_original_imgsize: bool = False
    resize: str = "square"
    seed: int = 0
    class_split: Any = None
    splits_dir: str | None = None
    episodes: int | None = None  # None: the benchmark's registered count for val/test, every episode for trn
    options: Mapping[str, Any] | None = None  # the benchmark's own options (`BenchmarkSpec.options`)


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
    queries: list[tuple[str, int]]  # published query order; unused when the class is drawn or cycled
    candidates: dict[int, list[str]]  # per class: query/support candidates in the published order
    draw_class_first: bool  # COCO-20i: draw the class, then the query
    n_episodes: int
    cycle_classes: bool = False  # CD-FSS: class = class_ids[episode % len(class_ids)], then draw the query


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


def open_image(path: Path, mode: str | None) -> Image.Image:
    """Open and fully decode an image (converted to `mode` if given), naming the file on failure.
    A 16-bit grey image converted to 8-bit modes is scaled (value / 257), not clipped to white."""
    if not path.is_file():
        raise _missing("file", path)
    try:
        with Image.open(path) as img:
            img.load()
            img = img.copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err
    if not mode:
        return img
    if img.mode in _SIXTEEN_BIT_MODES:
        return _eight_bit(img, path).convert(mode)
    if img.mode == "F":
        raise ValueError(f"cannot read image {path}: floating-point images (mode F) are not supported; save it as 8-bit")
    return img.convert(mode)


def _eight_bit(img: Image.Image, path: Path) -> Image.Image:
    """A 16-bit grey image (PIL mode I;16* or I with values in 0..65535) as 8-bit grey (L)."""
    values = np.asarray(img).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ValueError(f"cannot read image {path}: mode {img.mode} with values outside 0..65535 (expected a 16-bit image)")
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), mode="L")


def read_rgb(path: Path) -> Image.Image:
    """An image as PIL RGB."""
    return open_image(path, "RGB")


def read_class_index_mask(path: Path, nclass: int, boundary: bool) -> np.ndarray:
    """A single-channel class-index mask (H0, W0) uint8 with values in {0..nclass} (and 255 when
    `boundary`); any other value raises."""
    img = open_image(path, None)
    if img.mode not in ("L", "P"):
        raise ValueError(f"mask {path} has mode {img.mode}: expected a single-channel class-index PNG (L or P)")
    label = np.asarray(img, dtype=np.uint8)
    values = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    bad = values[(values > nclass) & ~((values == 255) & boundary)]
    if bad.size:
        expected = f"{{0..{nclass}{', 255' if boundary else ''}}}"
        raise ValueError(f"mask {path} has values {bad[:10].tolist()} outside the expected set {expected}")
    if boundary and values.tolist() == [255]:
        raise ValueError(f"mask {path} is all 255 (ignore): it labels no pixel, so it cannot be a query or support; "
                         "fix the mask or remove its split-list lines")
    return label


def read_grey_mask(path: Path) -> np.ndarray:
    """An FSS-style mask: grey (L, the luma of an RGB mask) >= 128 is foreground. (H0, W0) bool."""
    return np.asarray(open_image(path, "L")) >= 128


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
# Layouts: one class per directory layout (see layouts.py, cdfss.py), registered with a benchmark
# ---------------------------------------------------------------------------------------------

class Layout:
    """A benchmark's directory layout: class names, episode index, and loading one named image.

    A layout is built from the data set's config (root, split lists, class split, the benchmark's
    options); `index` lists a fold's split, its n_episodes being every query once (the registered
    test-episode count is applied by `build_dataset`)."""

    class_names: list[str]

    def __init__(self, config: DatasetConfig):
        self.config = config

    @property
    def root(self) -> Path:
        return Path(self.config.root).expanduser()

    @property
    def splits_dir(self) -> Path:
        return SHIPPED_SPLITS if self.config.splits_dir is None else Path(self.config.splits_dir).expanduser()

    def option(self, name: str) -> Any:
        return (self.config.options or {})[name]

    def index(self, fold: int, split: str) -> EpisodeIndex:
        raise NotImplementedError

    def load(self, name: str, class_id: int) -> Loaded:
        raise NotImplementedError


def load_class_split(class_split: Any) -> dict[str, list[str]]:
    """The folder benchmark's class split from a dict or a JSON file path, validated."""
    if class_split is None:
        raise ValueError('this benchmark needs class_split={"trn": [...], "val": [...], "test": [...]} or a JSON path')
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
    """Episode `idx`: the class and query (drawn first on COCO-20i; the class cycled and the query drawn on
    the CD-FSS sets; else the idx-th list line), then `shot` supports != query."""
    if index.draw_class_first or index.cycle_classes:
        class_id = index.class_ids[idx % len(index.class_ids)] if index.cycle_classes else int(draw(rng, index.class_ids))
        query = draw(rng, index.candidates[class_id])
    else:
        query, class_id = index.queries[idx % len(index.queries)]
    supports: list[str] = []
    while len(supports) < shot:
        support = draw(rng, index.candidates[class_id])
        if support != query:
            supports.append(support)
    return Episode(query, tuple(supports), class_id)


def image_to_tensor(image: Image.Image, hw: tuple[int, int]) -> torch.Tensor:
    """The published input transform: PIL RGB -> Resize(hw) bilinear -> tensor -> ImageNet normalisation (3, h, w)."""
    resized = TF.resize(image, list(hw), interpolation=InterpolationMode.BILINEAR)
    return TF.normalize(TF.to_tensor(resized), IMAGENET_MEAN, IMAGENET_STD)


def mask_to_tensor(mask: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
    """A (H0, W0) mask -> float (h, w), nearest-neighbour resize on a float tensor, as the spec says."""
    tensor = torch.from_numpy(mask.astype(np.float32))[None, None]  # (1, 1, H0, W0)
    return F.interpolate(tensor, size=tuple(hw), mode="nearest")[0, 0]


