"""Synthetic few-shot segmentation benchmarks in the real FSS-1000, PASCAL VOC2012, COCO-20i and CD-FSS layouts.

`generate(root, layout)` writes a small data set that the real loaders (`hsnetlib.data.build_dataset`
with `splits_dir=root/"splits"`) read exactly like the real benchmark:

* layout "fss":    root/FSS-1000/CLASS/N.jpg + N.png (grey 255 foreground, 0 background), N = 1..images_per_class,
                   and root/splits/fss/{trn,val,test}.txt (one class name a line, disjoint classes).
* layout "pascal": root/VOC2012/JPEGImages/NAME.jpg + root/VOC2012/SegmentationClassAug/NAME.png
                   (class index + 1 on objects, 0 background, 255 on a thin band along object outlines),
                   and root/splits/pascal/{trn,val}/fold{0..3}.txt with lines `NAME__CC` (1-based class);
                   fold i holds classes 5i..5i+4, as in PASCAL-5i.
* layout "coco":   root/COCO2014/{train2014,val2014}/COCO_{subset}_N.jpg + root/COCO2014/annotations/{subset}/NAME.png
                   (class index + 1 on objects, 0 background), and root/splits/coco/{trn,val}/fold{0..3}.tsv.gz
                   with rows `CLASS<TAB>SUBSET/NAME.jpg` (0-based class); fold i tests classes i, i+4, ..., i+76
                   (val2014 images), trains on the others (train2014 images).
* layout "deepglobe": root/Deepglobe/C/test/origin/NAME.jpg + groundtruth/NAME.png (3-channel white on black),
                   C = 1..6, as data_prep.deepglobe writes them.
* layout "isic":   root/ISIC/ISIC2018_Task1-2_Training_Input/K/ISIC_N.jpg, K = 1..3, masks in
                   root/ISIC/ISIC2018_Task1_Training_GroundTruth/ISIC_N_segmentation.png.
* layout "lung":   root/LungSegmentation/CXR_png/NAME.png (grey) + masks/: half of them named NAME_mask.png
                   (Shenzhen style), half NAME.png (Montgomery style).

Each class is a texture (stripes, checker, dots, blotches or rings, with its own period and angle) in a
class colour pair of high saturation. Objects are random ellipses, blobs or polygons pasted on cluttered
backgrounds made of low-saturation non-class patterns, so a model with a frozen, randomly initialised
backbone can learn, on a CPU in minutes, to find the support's texture and colour in the query. With
probability `second_object_prob` an image also holds an object of another class of the same split group
(FSS and the CD-FSS sets: an unlabelled distractor, so the support is needed; PASCAL, COCO: a labelled
second class, listed under both classes). Classes of different split groups (FSS trn/val/test, PASCAL
and COCO folds) never share an image.

Everything is a pure function of the arguments: the same seed gives byte-identical files.
`root/synthetic.json` records the parameters, counts and class styles of every layout generated there.
"""
from __future__ import annotations

import colorsys
import gzip
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from hsnetlib.data.base import SHIPPED_SPLITS

from hsnetlib.data import COCO_CLASSES, DEEPGLOBE_CLASSES, ISIC_CONVENTIONS, PASCAL_CLASSES, get_benchmark
from hsnetlib.data.cdfss import ISIC_IMAGES, ISIC_MASKS, LUNG_DIR

__all__ = ["generate", "LAYOUTS", "TEXTURES"]

LAYOUTS = ("fss", "pascal", "coco", "deepglobe", "isic", "lung")
TEXTURES = ("stripes", "checker", "dots", "blotches", "rings")
FSS_SPLIT_FRACTIONS = (520 / 1000, 240 / 1000)  # trn, val of FSS-1000; test gets the rest
MANIFEST_NAME = "synthetic.json"
_HUE_NAMES = ("red", "orange", "yellow", "lime", "green", "teal", "cyan", "azure", "blue", "violet", "magenta", "pink")
_LAYOUT_CODE = {"fss": 1, "pascal": 2, "coco": 3, "deepglobe": 4, "isic": 5, "lung": 6}
# the layouts whose class names are fixed by their benchmark
_FIXED_CLASSES = {
    "pascal": PASCAL_CLASSES, "coco": COCO_CLASSES, "deepglobe": tuple(name for name, _ in DEEPGLOBE_CLASSES.values()),
    "isic": ISIC_CONVENTIONS[get_benchmark("isic").options["isic_convention"].default], "lung": ("lung",),
}
_CLASS_LISTS = ("pascal", "coco")  # layouts with per-class split lists (and a val_images_per_class)
_SPLIT_CODE = {"trn": 1, "val": 2, "test": 3}
_MIN_SIZE = 32
OBJECT_AREA = (0.1, 0.3)  # range of an object's area as a fraction of the image (before cropping/occlusion)


@dataclass(frozen=True)
class ClassStyle:
    """The look of one class: a texture mixing two colours (RGB in [0, 1])."""

    name: str
    texture: str
    colour_a: tuple[float, float, float]
    colour_b: tuple[float, float, float]
    period: float  # texture period as a fraction of the image's longer side
    angle: float  # radians


@dataclass(frozen=True)
class ImageSpec:
    """One image to render: its main class, an optional second class and whether the second is labelled."""

    name: str
    split: str  # "trn" | "val" | "test"
    index: int  # running index over the layout's images: with the seed, it fixes the image's random stream
    main: int
    second: int | None
    second_labelled: bool


# ----------------------------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------------------------
def generate(
    root: str | Path,
    layout: str = "fss",
    *,
    n_classes: int | None = None,
    images_per_class: int = 10,
    val_images_per_class: int | None = None,
    size: int = 96,
    second_object_prob: float = 0.7,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Write a synthetic few-shot benchmark in the real `layout` under `root`; return its manifest.

    Args:
        root: data root; gets the layout's top folder (FSS-1000/, VOC2012/, COCO2014/, Deepglobe/, ISIC/,
            LungSegmentation/), splits/<layout>/ where the layout has split lists, and synthetic.json.
        layout: one of LAYOUTS.
        n_classes: FSS: number of classes (>= 3; default 20), split 52/24/24 % into trn/val/test like
            FSS-1000. The others have their benchmark's classes (PASCAL 20, COCO 80, Deepglobe 6, ISIC 3,
            Chest X-ray 1): None or that number.
        images_per_class: FSS: images per class (files 1..N; real FSS-1000 has 10). PASCAL, COCO: training
            images per class (the `trn` lists). CD-FSS sets: images per class folder. At least 2; K-shot
            episodes need K + 1.
        val_images_per_class: PASCAL, COCO only: images per class in the `val` lists (default images_per_class).
        size: longer image side in pixels (>= 32). FSS, Deepglobe and Chest X-ray images are square;
            PASCAL, COCO and ISIC images have a shorter side drawn in [0.75, 1] x size.
        second_object_prob: probability that an image also holds an object, as large, of another class of
            its group. It is what makes the support necessary: with 0.7, HSNet (frozen random ResNet50,
            96 px) reaches ~75 % foreground IoU on held-out FSS classes with the right support and ~27 %
            with a support of another class; with 0.3 the latter stays near 55 % (saliency alone).
        seed: every pixel is a function of the seed and the other arguments.
        progress: show a tqdm progress bar.

    Returns:
        The manifest written to root/synthetic.json["layouts"][layout] plus "root" (absolute path).

    Raises:
        ValueError: an argument is out of range. FileExistsError: root already holds this layout and it
        was not written by this generator (real data is never overwritten).
    """
    params = _validate(layout, n_classes, images_per_class, val_images_per_class, size, second_object_prob, seed)
    root = Path(root)
    _clear_previous(root, layout)
    styles = _class_styles(layout, params["n_classes"], seed)
    if layout == "fss":
        groups = _fss_groups(params["n_classes"])
        specs = _fss_specs(styles, groups, images_per_class, second_object_prob, seed)
        files = _render_all(root, layout, specs, styles, size, seed, progress)
        splits = {split: [styles[c].name for c in classes] for split, classes in groups.items()}
        _write_fss_splits(root / "splits" / "fss", splits)
        counts = {"classes": len(styles), "images": files, **{f"{s}_classes": len(c) for s, c in splits.items()}}
        extra = {"class_split": splits}
    elif layout in _FOLD_LAYOUTS:
        make_specs, list_entries, write_lists, entry = _FOLD_LAYOUTS[layout]
        specs = make_specs(images_per_class, params["val_images_per_class"], second_object_prob, seed)
        files = _render_all(root, layout, specs, styles, size, seed, progress)
        entries = list_entries(root, specs)
        write_lists(root / "splits" / layout, entries)
        counts = {"classes": len(styles), "images": files, **{f"{s}_fold{f}_{entry}": len(v) for (s, f), v in entries.items()}}
        extra = {"folds": {f"fold{f}": list(get_benchmark(layout).class_split(f)) for f in range(4)}}
    else:
        specs = _target_specs(layout, len(styles), images_per_class, second_object_prob, seed)
        files = _render_all(root, layout, specs, styles, size, seed, progress)
        counts = {"classes": len(styles), "images": files}
        extra = {}
    manifest = {
        "generator": "hsnetlib.synthetic",
        "layout": layout,
        "seed": seed,
        "params": params,
        "counts": counts,
        "classes": [asdict(s) for s in styles],
        **extra,
    }
    _record_manifest(root, layout, manifest)
    return {**manifest, "root": str(root.resolve())}


# ----------------------------------------------------------------------------------------------------------------
# Arguments and bookkeeping
# ----------------------------------------------------------------------------------------------------------------
def _validate(layout, n_classes, images_per_class, val_images_per_class, size, second_object_prob, seed) -> dict:
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: expected one of {LAYOUTS}")
    if layout in _FIXED_CLASSES:
        fixed = len(_FIXED_CLASSES[layout])
        if n_classes not in (None, fixed):
            raise ValueError(f"n_classes={n_classes!r}: the {layout} layout always has {fixed} classes")
        n_classes = fixed
    else:
        n_classes = 20 if n_classes is None else n_classes
        _check_int("n_classes", n_classes, 3)
    if layout in _CLASS_LISTS:
        val_images_per_class = images_per_class if val_images_per_class is None else val_images_per_class
        _check_int("val_images_per_class", val_images_per_class, 2)
    elif val_images_per_class is not None:
        raise ValueError(f"val_images_per_class only applies to the layouts {_CLASS_LISTS} (FSS classes are whole per split)")
    _check_int("images_per_class", images_per_class, 2)
    _check_int("size", size, _MIN_SIZE)
    _check_int("seed", seed, 0)
    if isinstance(second_object_prob, bool) or not isinstance(second_object_prob, (int, float)) or not 0 <= second_object_prob <= 1:
        raise ValueError(f"second_object_prob={second_object_prob!r}: expected a probability in [0, 1]")
    return {
        "n_classes": n_classes,
        "images_per_class": images_per_class,
        "val_images_per_class": val_images_per_class,
        "size": size,
        "second_object_prob": float(second_object_prob),
    }


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r}: expected an integer >= {minimum}")


_TOP_FOLDER = {"fss": "FSS-1000", "pascal": "VOC2012", "coco": "COCO2014", "deepglobe": "Deepglobe",
               "isic": "ISIC", "lung": LUNG_DIR}


def _layout_paths(root: Path, layout: str) -> list[Path]:
    return [root / _TOP_FOLDER[layout], root / "splits" / layout]


def _read_manifest(root: Path) -> dict:
    path = root / MANIFEST_NAME
    return json.loads(path.read_text()) if path.is_file() else {"layouts": {}}


def _clear_previous(root: Path, layout: str) -> None:
    """Remove an earlier synthetic `layout` under root; refuse to touch one this generator did not write."""
    generated_here = layout in _read_manifest(root)["layouts"]
    for path in _layout_paths(root, layout):
        if not path.exists():
            continue
        if not generated_here:
            raise FileExistsError(
                f"{path} already exists and {root / MANIFEST_NAME} does not record it as synthetic: "
                "refusing to overwrite what may be real data; pick another root"
            )
        shutil.rmtree(path)


def _record_manifest(root: Path, layout: str, manifest: dict) -> None:
    record = _read_manifest(root)
    record["layouts"][layout] = manifest
    record["layouts"] = dict(sorted(record["layouts"].items()))
    (root / MANIFEST_NAME).write_text(json.dumps(record, indent=1) + "\n")


# ----------------------------------------------------------------------------------------------------------------
# Classes, groups and the list of images
# ----------------------------------------------------------------------------------------------------------------
def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    return tuple(round(c, 4) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def _class_styles(layout: str, n_classes: int, seed: int) -> list[ClassStyle]:
    """Distinct looks: hues spread evenly round the wheel (shuffled), textures cycled over the hue order."""
    rng = np.random.default_rng([seed, _LAYOUT_CODE[layout], 0])
    hues = (np.arange(n_classes) + rng.uniform()) / n_classes
    hues = hues[rng.permutation(n_classes)]
    texture_offset = int(rng.integers(len(TEXTURES)))
    styles = []
    for k, hue in enumerate(hues):
        texture = TEXTURES[(k + texture_offset) % len(TEXTURES)]
        colour_a = _hsv(hue, rng.uniform(0.75, 1.0), rng.uniform(0.8, 1.0))
        partner = rng.integers(3)  # complementary hue, dark shade, or pale tint of the same hue
        if partner == 0:
            colour_b = _hsv(hue + 0.5, rng.uniform(0.7, 1.0), rng.uniform(0.6, 1.0))
        elif partner == 1:
            colour_b = _hsv(hue, rng.uniform(0.8, 1.0), rng.uniform(0.2, 0.35))
        else:
            colour_b = _hsv(hue + rng.uniform(-0.05, 0.05), rng.uniform(0.15, 0.3), 1.0)
        hue_name = _HUE_NAMES[int(round(hue * len(_HUE_NAMES))) % len(_HUE_NAMES)]
        name = _FIXED_CLASSES[layout][k] if layout in _FIXED_CLASSES else f"{k:03d}_{texture}_{hue_name}"
        styles.append(
            ClassStyle(
                name=name,
                texture=texture,
                colour_a=colour_a,
                colour_b=colour_b,
                period=round(float(rng.uniform(0.07, 0.14)), 4),
                angle=round(float(rng.uniform(0, np.pi)), 4),
            )
        )
    return styles


def _fss_groups(n_classes: int) -> dict[str, list[int]]:
    """Class indices per FSS split, in FSS-1000's 520/240/240 proportions, each split at least one class."""
    n_trn = max(1, round(n_classes * FSS_SPLIT_FRACTIONS[0]))
    n_val = max(1, round(n_classes * FSS_SPLIT_FRACTIONS[1]))
    n_trn = min(n_trn, n_classes - n_val - 1)
    return {
        "trn": list(range(n_trn)),
        "val": list(range(n_trn, n_trn + n_val)),
        "test": list(range(n_trn + n_val, n_classes)),
    }


def _pick_second(rng: np.random.Generator, main: int, group: list[int], prob: float) -> int | None:
    others = [c for c in group if c != main]
    if not others or rng.uniform() >= prob:
        return None
    return int(others[rng.integers(len(others))])


def _fss_specs(styles, groups, images_per_class, prob, seed) -> list[ImageSpec]:
    rng = np.random.default_rng([seed, _LAYOUT_CODE["fss"], 1])
    specs = []
    for split, classes in groups.items():
        for c in classes:
            for n in range(1, images_per_class + 1):
                second = _pick_second(rng, c, classes, prob)
                name = f"{styles[c].name}/{n}"
                specs.append(ImageSpec(name, split, len(specs), c, second, second_labelled=False))
    return specs


def _pascal_specs(n_trn: int, n_val: int, prob: float, seed: int) -> list[ImageSpec]:
    rng = np.random.default_rng([seed, _LAYOUT_CODE["pascal"], 1])
    specs = []
    for split, per_class in (("trn", n_trn), ("val", n_val)):
        counter = 0
        for c in range(len(PASCAL_CLASSES)):
            fold_classes = list(range(5 * (c // 5), 5 * (c // 5) + 5))
            for _ in range(per_class):
                counter += 1
                second = _pick_second(rng, c, fold_classes, prob)
                specs.append(ImageSpec(f"{split}_{counter:06d}", split, len(specs), c, second, second_labelled=True))
    return specs


def _coco_specs(n_trn: int, n_val: int, prob: float, seed: int) -> list[ImageSpec]:
    """COCO-20i: training images in train2014, test-class images in val2014; a second object of the same fold."""
    rng = np.random.default_rng([seed, _LAYOUT_CODE["coco"], 1])
    specs = []
    for split, subset, per_class in (("trn", "train2014", n_trn), ("val", "val2014", n_val)):
        for c in range(len(COCO_CLASSES)):
            fold_classes = list(range(c % 4, len(COCO_CLASSES), 4))
            for _ in range(per_class):
                second = _pick_second(rng, c, fold_classes, prob)
                name = f"{subset}/COCO_{subset}_{len(specs) + 1:012d}"
                specs.append(ImageSpec(name, split, len(specs), c, second, second_labelled=True))
    return specs


def _target_specs(layout: str, n_classes: int, per_class: int, prob: float, seed: int) -> list[ImageSpec]:
    """A CD-FSS target set: `per_class` images in each class folder, an unlabelled distractor of another class."""
    rng = np.random.default_rng([seed, _LAYOUT_CODE[layout], 1])
    specs = []
    for c in range(n_classes):
        for k in range(per_class):
            second = _pick_second(rng, c, list(range(n_classes)), prob)
            n = len(specs) + 1
            if layout == "deepglobe":
                name = f"{list(DEEPGLOBE_CLASSES)[c]}/{n:06d}_{k % 6}{k // 6 % 6}"
            elif layout == "isic":
                name = f"{c + 1}/ISIC_{n:07d}"
            else:  # Chest X-ray: alternately Shenzhen (NAME_mask.png) and Montgomery (NAME.png) mask names
                name = f"{'CHNCXR' if n % 2 else 'MCUCXR'}_{n:04d}_0"
            specs.append(ImageSpec(name, "test", len(specs), c, second, second_labelled=False))
    return specs


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------
def _render_all(root, layout, specs, styles, size, seed, progress) -> int:
    for spec in tqdm(specs, desc=f"synthetic {layout}", unit="img", disable=not progress):
        rng = np.random.default_rng([seed, _LAYOUT_CODE[layout], 2, spec.index])
        height, width = _image_shape(rng, layout, size)
        image, labels = _render_image(rng, spec, styles, height, width)
        img_path, mask_path = _file_paths(root, layout, spec)
        img_path.parent.mkdir(parents=True, exist_ok=True)
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        if layout == "pascal":
            mask = _with_boundary(labels, width=max(1, size // 96))
        elif layout == "coco":
            mask = labels
        else:  # binary: white foreground on black
            mask = np.where(labels == spec.main + 1, 255, 0).astype(np.uint8)
        if layout == "lung":  # grey X-ray PNGs
            Image.fromarray(image).convert("L").save(img_path)
        else:
            Image.fromarray(image).save(img_path, quality=92)
        if layout == "deepglobe":  # data_prep.deepglobe writes 3-channel masks
            Image.fromarray(np.repeat(mask[..., None], 3, axis=2)).save(mask_path)
        else:
            Image.fromarray(mask, mode="L").save(mask_path)
    return len(specs)


def _file_paths(root: Path, layout: str, spec: ImageSpec) -> tuple[Path, Path]:
    """(image, mask) of an image spec in the layout's real tree."""
    if layout == "fss":
        return root / "FSS-1000" / f"{spec.name}.jpg", root / "FSS-1000" / f"{spec.name}.png"
    if layout == "pascal":
        voc = root / "VOC2012"
        return voc / "JPEGImages" / f"{spec.name}.jpg", voc / "SegmentationClassAug" / f"{spec.name}.png"
    if layout == "coco":
        return root / "COCO2014" / f"{spec.name}.jpg", root / "COCO2014" / "annotations" / f"{spec.name}.png"
    if layout == "deepglobe":
        folder, stem = spec.name.split("/")
        base = root / "Deepglobe" / folder / "test"
        return base / "origin" / f"{stem}.jpg", base / "groundtruth" / f"{stem}.png"
    if layout == "isic":
        folder, stem = spec.name.split("/")
        return root / ISIC_IMAGES / folder / f"{stem}.jpg", root / ISIC_MASKS / f"{stem}_segmentation.png"
    mask_name = f"{spec.name}_mask.png" if spec.name.startswith("CHNCXR") else f"{spec.name}.png"
    return root / LUNG_DIR / "CXR_png" / f"{spec.name}.png", root / LUNG_DIR / "masks" / mask_name


def _image_shape(rng: np.random.Generator, layout: str, size: int) -> tuple[int, int]:
    if layout in ("fss", "deepglobe", "lung"):
        return size, size
    short = int(round(size * rng.uniform(0.75, 1.0)))
    return (short, size) if rng.uniform() < 0.5 else (size, short)


def _render_image(rng, spec: ImageSpec, styles, height, width) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 image and (H, W) uint8 labels (class index + 1 on labelled objects, else 0)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    canvas = _background(rng, yy, xx)
    labels = np.zeros((height, width), np.uint8)
    main_centre = (rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height)
    if spec.second is not None:  # as large, painted first, away from the main object (which may overlap it a little)
        centre = _far_point(rng, main_centre, width, height)
        mask = _shape_mask(rng, centre, rng.uniform(*OBJECT_AREA), width, height)
        canvas[mask] = _class_texture(rng, styles[spec.second], yy, xx)[mask]
        labels[mask] = spec.second + 1 if spec.second_labelled else 0
    mask = _shape_mask(rng, main_centre, rng.uniform(*OBJECT_AREA), width, height)
    canvas[mask] = _class_texture(rng, styles[spec.main], yy, xx)[mask]
    labels[mask] = spec.main + 1
    canvas += rng.normal(0.0, 0.02, canvas.shape).astype(np.float32)
    return (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8), labels


def _far_point(rng, centre, width, height) -> tuple[float, float]:
    """Of a few random points, the one farthest from `centre` (objects rarely overlap much)."""
    points = rng.uniform(0.15, 0.85, (6, 2)) * (width, height)
    far = np.argmax(np.hypot(points[:, 0] - centre[0], points[:, 1] - centre[1]))
    return float(points[far, 0]), float(points[far, 1])


def _shape_mask(rng, centre, area_fraction, width, height) -> np.ndarray:
    """(H, W) bool mask of a random ellipse, blob or polygon of roughly `area_fraction` of the image."""
    radius = np.sqrt(area_fraction * width * height / np.pi)
    kind = rng.integers(3)
    if kind == 2:  # polygon: 3-7 vertices at jittered, evenly spread angles (never a sliver)
        n = int(rng.integers(3, 8))
        angles = (np.arange(n) + rng.uniform(-0.25, 0.25, n)) * 2 * np.pi / n + rng.uniform(0, 2 * np.pi)
        radii = radius * rng.uniform(0.9, 1.3, n)
    else:
        angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        if kind == 0:  # rotated ellipse
            stretch, tilt = np.sqrt(rng.uniform(1.0, 2.2)), rng.uniform(0, np.pi)
            a, b = radius * stretch, radius / stretch
            radii = a * b / np.hypot(b * np.cos(angles - tilt), a * np.sin(angles - tilt))
        else:  # blob: a circle with low-frequency radial wobble
            radii = radius * np.ones_like(angles)
            for k in (2, 3, 4):
                radii += radius * rng.uniform(0, 0.18) * np.cos(k * angles + rng.uniform(0, 2 * np.pi))
    points = [(centre[0] + r * np.cos(t), centre[1] + r * np.sin(t)) for r, t in zip(radii, angles)]
    image = Image.new("L", (width, height), 0)
    ImageDraw.Draw(image).polygon(points, fill=1)
    return np.asarray(image, dtype=bool)


def _mix(t: np.ndarray, colour_a, colour_b) -> np.ndarray:
    """(H, W) pattern in [0, 1] -> (H, W, 3) image: colour_a where t = 0, colour_b where t = 1."""
    a, b = np.asarray(colour_a, np.float32), np.asarray(colour_b, np.float32)
    return a + t[..., None] * (b - a)


def _class_texture(rng, style: ClassStyle, yy, xx) -> np.ndarray:
    """The class pattern over the whole image, with a little per-image jitter of phase, angle, scale, colour."""
    period = style.period * max(yy.shape) * rng.uniform(0.85, 1.15)
    angle = style.angle + rng.uniform(-0.2, 0.2)
    t = _PATTERNS[style.texture](rng, yy, xx, period, angle)
    jitter = rng.uniform(-0.05, 0.05, 3)
    return _mix(t, np.clip(np.add(style.colour_a, jitter), 0, 1), np.clip(np.add(style.colour_b, jitter), 0, 1))


def _rotated(rng, yy, xx, period, angle) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in periods along and across `angle`, with a random phase."""
    u = (xx * np.cos(angle) + yy * np.sin(angle)) / period + rng.uniform()
    v = (-xx * np.sin(angle) + yy * np.cos(angle)) / period + rng.uniform()
    return u, v


def _stripes(rng, yy, xx, period, angle):
    u, _ = _rotated(rng, yy, xx, period, angle)
    return np.clip(0.5 + 2.0 * np.sin(2 * np.pi * u), 0, 1)


def _checker(rng, yy, xx, period, angle):
    u, v = _rotated(rng, yy, xx, period, angle)
    return np.clip(0.5 + 4.0 * np.sin(np.pi * u) * np.sin(np.pi * v), 0, 1)


def _dots(rng, yy, xx, period, angle):
    u, v = _rotated(rng, yy, xx, period, angle)
    distance = np.hypot(u - np.round(u), v - np.round(v))  # in periods, to the nearest lattice point
    return np.clip((0.3 - distance) * 10 + 0.5, 0, 1)


def _blotches(rng, yy, xx, period, angle):
    return np.clip((_smooth_noise(rng, yy.shape, period) - 0.5) * 6 + 0.5, 0, 1)


def _rings(rng, yy, xx, period, angle):
    cy, cx = rng.uniform(0, yy.shape[0]), rng.uniform(0, yy.shape[1])
    return np.clip(0.5 + 2.0 * np.sin(2 * np.pi * np.hypot(yy - cy, xx - cx) / period), 0, 1)


_PATTERNS: dict[str, Callable] = {
    "stripes": _stripes, "checker": _checker, "dots": _dots, "blotches": _blotches, "rings": _rings,
}


def _smooth_noise(rng, shape: tuple[int, int], period: float) -> np.ndarray:
    """(H, W) smooth random field in [0, 1] with features about `period` pixels across."""
    grid = (max(2, int(np.ceil(shape[0] / period)) + 1), max(2, int(np.ceil(shape[1] / period)) + 1))
    coarse = Image.fromarray(rng.uniform(0, 1, grid).astype(np.float32), mode="F")
    return np.asarray(coarse.resize((shape[1], shape[0]), Image.BICUBIC), dtype=np.float32)


def _dull_colour(rng) -> tuple[float, float, float]:
    return _hsv(rng.uniform(), rng.uniform(0.0, 0.25), rng.uniform(0.25, 0.85))


def _background(rng, yy, xx) -> np.ndarray:
    """(H, W, 3) clutter of non-class patterns: dull colours, smooth noise, flat or finely grained patches."""
    height, width = yy.shape
    size = max(height, width)
    canvas = _mix(_smooth_noise(rng, (height, width), size * rng.uniform(0.2, 0.5)), _dull_colour(rng), _dull_colour(rng))
    for _ in range(rng.integers(3, 7)):
        centre = (rng.uniform(0, width), rng.uniform(0, height))
        mask = _shape_mask(rng, centre, rng.uniform(0.02, 0.1), width, height)
        if rng.uniform() < 0.5:  # flat patch
            patch = np.broadcast_to(np.asarray(_dull_colour(rng), np.float32), canvas.shape)
        else:  # grainy patch: pixel noise between two dull colours
            patch = _mix(rng.uniform(0, 1, (height, width)).astype(np.float32), _dull_colour(rng), _dull_colour(rng))
        canvas[mask] = patch[mask]
    return canvas.astype(np.float32)


def _with_boundary(labels: np.ndarray, width: int) -> np.ndarray:
    """VOC-style mask: 255 on pixels within `width` of a pixel with another label, else the label."""
    padded = np.pad(labels, width, mode="edge")
    height, w = labels.shape
    boundary = np.zeros(labels.shape, bool)
    for dy in range(-width, width + 1):
        for dx in range(-width, width + 1):
            boundary |= padded[width + dy: width + dy + height, width + dx: width + dx + w] != labels
    return np.where(boundary, 255, labels).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# Split lists, in the shipped formats
# ----------------------------------------------------------------------------------------------------------------
def _line_ending(shipped: Path) -> str:
    """The line terminator of a shipped list (FSS-1000's test.txt uses CRLF, the others LF)."""
    return "\r\n" if b"\r\n" in shipped.read_bytes()[:4096] else "\n"


def _write_list(path: Path, lines: list[str], shipped: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    eol = _line_ending(shipped)
    path.write_bytes("".join(line + eol for line in lines).encode())


def _write_fss_splits(split_dir: Path, splits: dict[str, list[str]]) -> None:
    for split, names in splits.items():
        _write_list(split_dir / f"{split}.txt", names, SHIPPED_SPLITS / "fss" / f"{split}.txt")


def _pascal_split_lines(root: Path, specs: list[ImageSpec]) -> dict[tuple[str, int], list[str]]:
    """Lines `NAME__CC` per (split, fold): an image is listed under each class with enough unmasked pixels."""
    lines: dict[tuple[str, int], list[tuple[int, str]]] = {(s, f): [] for s in ("trn", "val") for f in range(4)}
    for spec in specs:
        mask = np.asarray(Image.open(root / "VOC2012" / "SegmentationClassAug" / f"{spec.name}.png"))
        min_pixels = 0.01 * mask.size
        for c in sorted({spec.main} | ({spec.second} if spec.second is not None else set())):
            if np.count_nonzero(mask == c + 1) >= min_pixels:
                lines[(spec.split, c // 5)].append((c, f"{spec.name}__{c + 1:02d}"))
    # shipped order: trn lists by class then name, val lists by name (then class)
    order = {"trn": lambda entry: entry, "val": lambda entry: entry[1]}
    return {key: [line for _, line in sorted(entries, key=order[key[0]])] for key, entries in lines.items()}


def _write_pascal_splits(split_dir: Path, lines: dict[tuple[str, int], list[str]]) -> None:
    for (split, fold), entries in lines.items():
        _write_list(split_dir / split / f"fold{fold}.txt", entries, SHIPPED_SPLITS / "pascal" / split / f"fold{fold}.txt")


def _coco_split_rows(root: Path, specs: list[ImageSpec]) -> dict[tuple[str, int], list[str]]:
    """Rows `CLASS<TAB>SUBSET/NAME.jpg` per (split, fold), by class then name: trn fold f lists the training
    images of every class not tested in fold f, val fold f the val2014 images of fold f's classes."""
    rows: dict[tuple[str, int], list[tuple[int, str]]] = {(s, f): [] for s in ("trn", "val") for f in range(4)}
    for spec in specs:
        mask = np.asarray(Image.open(root / "COCO2014" / "annotations" / f"{spec.name}.png"))
        for c in sorted({spec.main} | ({spec.second} if spec.second is not None else set())):
            if np.count_nonzero(mask == c + 1) < 0.01 * mask.size:
                continue
            folds = [f for f in range(4) if (c % 4 == f) == (spec.split == "val")]
            for f in folds:
                rows[(spec.split, f)].append((c, f"{c}\t{spec.name}.jpg"))
    return {key: [row for _, row in sorted(entries)] for key, entries in rows.items()}


def _write_coco_splits(split_dir: Path, rows: dict[tuple[str, int], list[str]]) -> None:
    """Gzipped TSV lists with the shipped header line; gzip's time stamp fixed, so the bytes depend on the seed only."""
    header = (SHIPPED_SPLITS / "coco" / "val" / "fold0.tsv.gz")
    with gzip.open(header, "rt", encoding="utf-8") as f:
        first = f.readline()
    for (split, fold), entries in rows.items():
        path = split_dir / split / f"fold{fold}.tsv.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress((first + "".join(row + "\n" for row in entries)).encode(), mtime=0))


# the layouts with four folds of split lists: (image specs, split lists, their writer, what a list entry is called)
_FOLD_LAYOUTS = {
    "pascal": (_pascal_specs, _pascal_split_lines, _write_pascal_splits, "lines"),
    "coco": (_coco_specs, _coco_split_rows, _write_coco_splits, "rows"),
}
