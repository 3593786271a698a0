"""The cross-domain few-shot segmentation target sets (PATNet, Lei et al., ECCV 2022; cdfss-protocol.md).

A model trained on all of PASCAL VOC (``pascal-all``) is tested on:

* ``DeepglobeLayout``: ``root/Deepglobe/C/test/origin/STEM.jpg`` with the mask
  ``root/Deepglobe/C/test/groundtruth/STEM.png``, C = 1..6 (``DEEPGLOBE_CLASSES``; data_prep.deepglobe
  writes these folders from the official land-cover release).
* ``IsicLayout``: ``root/ISIC/ISIC2018_Task1-2_Training_Input/K/ID.jpg``, K = 1..3, with the mask
  ``root/ISIC/ISIC2018_Task1_Training_GroundTruth/ID_segmentation.png``; which class is folder K is the
  option ``isic_convention`` (``ISIC_CONVENTIONS``; data_prep.isic sorts the images by it).
* ``LungLayout`` (Chest X-ray): ``root/LungSegmentation/masks/*.png`` and the images
  ``root/LungSegmentation/CXR_png/NAME.png``; the option ``lung_masks`` is the mask policy
  (``LUNG_MASK_POLICIES``).

As in PATNet's code: a listing keeps a file whose base name's second dot-separated piece is ``jpg``
(``png`` for Chest X-ray), sorted by name (code-point order); a file's stem is its base name up to
the first dot. Masks: grey (luma) >= 128 is foreground; no ignore label. Test episode i: class
i mod C, the query drawn from that class's list, each support drawn from the same list, redrawn
while equal to the query (supports may repeat) -- ``EpisodeIndex.cycle_classes``.
"""
from __future__ import annotations

from pathlib import Path

from hsnetlib.data.base import EpisodeIndex, Layout, Loaded, _check_same_size, _missing, _require_dir, read_grey_mask, read_rgb

# Deepglobe class folder -> (name, RGB colour in the official land-cover masks); preprocess.py's triples
# are OpenCV BGR, read here as RGB. Unknown (black) is never a class.
DEEPGLOBE_CLASSES = {
    "1": ("agriculture", (255, 255, 0)),
    "2": ("urban", (0, 255, 255)),
    "3": ("rangeland", (255, 0, 255)),
    "4": ("forest", (0, 255, 0)),
    "5": ("water", (0, 0, 255)),
    "6": ("barren", (255, 255, 255)),
}
# ISIC class name per image folder 1, 2, 3; PATNet never says which. "first-appearance" (the order of
# first appearance in class_id.csv; GF-SAM, ABCDFSS's class-wise copy) is the default.
ISIC_CONVENTIONS = {
    "first-appearance": ("nevus", "melanoma", "seborrheic_keratosis"),
    "ifa": ("nevus", "seborrheic_keratosis", "melanoma"),
    "dr-adapter": ("seborrheic_keratosis", "nevus", "melanoma"),
}
ISIC_IMAGES = "ISIC/ISIC2018_Task1-2_Training_Input"
ISIC_MASKS = "ISIC/ISIC2018_Task1_Training_GroundTruth"
# Chest X-ray masks: "all" keeps the 704 masks of the Kaggle copy (a mask's image is its name without a
# trailing "_mask", DR-Adapter's reading); "mask-suffix" keeps only the masks named NAME_mask.png (the 566
# Shenzhen ones), the only ones PATNet's 9-character rule can load.
LUNG_MASK_POLICIES = ("all", "mask-suffix")
LUNG_DIR = "LungSegmentation"


def listing(folder: Path, extension: str) -> list[str]:
    """File names in `folder` whose second dot-separated piece is `extension`, in code-point order."""
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.split(".")[1:2] == [extension])


def stem(name: str) -> str:
    """A base name up to its first dot."""
    return name.split(".", 1)[0]


class _TargetLayout(Layout):
    """A CD-FSS target set: one list of names per class, test episodes with the class cycled."""

    files: dict[str, tuple[Path, Path]]  # name -> (image, mask)

    def __init__(self, config, spec):
        super().__init__(config)
        self.spec = spec
        self.files = {}

    def class_lists(self) -> dict[int, list[str]]:
        raise NotImplementedError

    def _class_images(self, prefix: str, images: Path, masks: Path, mask_suffix: str) -> list[str]:
        """The names ``prefix/NAME`` of the jpg images in ``images``, each recorded with its mask
        ``masks/STEM{mask_suffix}``."""
        names = []
        for name in listing(images, "jpg"):
            key = f"{prefix}/{name}"
            self.files[key] = (images / name, masks / f"{stem(name)}{mask_suffix}")
            names.append(key)
        return names

    def index(self, fold: int, split: str) -> EpisodeIndex:
        candidates = self.class_lists()
        class_ids = list(candidates)
        return EpisodeIndex(class_ids, [], candidates, draw_class_first=False,
                            n_episodes=sum(map(len, candidates.values())), cycle_classes=True)

    def load(self, name: str, class_id: int) -> Loaded:
        image_path, mask_path = self.files[name]
        if not mask_path.is_file():
            raise _missing(f"mask of {image_path}", mask_path)
        image, fg = read_rgb(image_path), read_grey_mask(mask_path)
        _check_same_size(image, fg, image_path, mask_path)
        return Loaded(image, fg, None)


class DeepglobeLayout(_TargetLayout):
    """Deepglobe land cover, 6 classes, one folder of white-on-black binary masks per class."""

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.base = _require_dir(self.root / "Deepglobe", "Deepglobe folder (write it with python -m data_prep.deepglobe)")
        self.class_names = [name for name, _ in DEEPGLOBE_CLASSES.values()]

    def class_lists(self) -> dict[int, list[str]]:
        lists = {}
        for class_id, folder in enumerate(DEEPGLOBE_CLASSES):
            origin = _require_dir(self.base / folder / "test" / "origin", f"Deepglobe class {folder} image folder")
            groundtruth = _require_dir(self.base / folder / "test" / "groundtruth", f"Deepglobe class {folder} mask folder")
            lists[class_id] = self._class_images(folder, origin, groundtruth, ".png")
        return lists


class IsicLayout(_TargetLayout):
    """ISIC2018 Task 1 training images sorted into folders 1..3 by class; one flat mask folder."""

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.images = _require_dir(self.root / ISIC_IMAGES, "ISIC2018 Task 1-2 training input folder")
        self.masks = _require_dir(self.root / ISIC_MASKS, "ISIC2018 Task 1 training ground-truth folder")
        self.class_names = list(ISIC_CONVENTIONS[self.option("isic_convention")])

    def class_lists(self) -> dict[int, list[str]]:
        lists = {}
        for class_id in range(len(self.class_names)):
            folder = _require_dir(self.images / str(class_id + 1),
                                  f"ISIC class folder {class_id + 1} ({self.class_names[class_id]}; sort the images "
                                  "with python -m data_prep.isic)")
            lists[class_id] = self._class_images(str(class_id + 1), folder, self.masks, "_segmentation.png")
        return lists


class LungLayout(_TargetLayout):
    """Chest X-ray lung segmentation, 1 class; the episode pool is the sorted list of mask files."""

    def __init__(self, config, spec):
        super().__init__(config, spec)
        base = self.root / LUNG_DIR
        if not base.is_dir() and (self.root / "Lung Segmentation").is_dir():
            raise FileNotFoundError(f"{base} not found, but {self.root / 'Lung Segmentation'} exists (the Kaggle copy's "
                                    f"name): rename or link it to {base}")
        self.base = _require_dir(base, "Chest X-ray folder (LungSegmentation with CXR_png/ and masks/)")
        self.images = _require_dir(self.base / "CXR_png", "Chest X-ray images folder")
        self.masks = _require_dir(self.base / "masks", "Chest X-ray masks folder")
        self.class_names = ["lung"]

    def class_lists(self) -> dict[int, list[str]]:
        policy = self.option("lung_masks")
        names = []
        for name in listing(self.masks, "png"):
            image_stem = stem(name)
            if image_stem.endswith("_mask"):
                image_stem = image_stem[: -len("_mask")]
            elif policy == "mask-suffix":
                continue
            self.files[name] = (self.images / f"{image_stem}.png", self.masks / name)
            names.append(name)
        return {0: names}
