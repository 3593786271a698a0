"""Synthetic few-shot segmentation benchmarks in the real FSS-1000 and PASCAL VOC2012 layouts.

`generate(root, layout)` writes a small data set that the real loaders (`hsnetlib.data.build_dataset`
with `splits_dir=root/"splits"`) read exactly like the real benchmark:

* layout "fss":    root/FSS-1000/CLASS/N.jpg + N.png (grey 255 foreground, 0 background), N = 1..images_per_class,
                   and root/splits/fss/{trn,val,test}.txt (one class name a line, disjoint classes).
* layout "pascal": root/VOC2012/JPEGImages/NAME.jpg + root/VOC2012/SegmentationClassAug/NAME.png
                   (class index + 1 on objects, 0 background, 255 on a thin band along object outlines),
                   and root/splits/pascal/{trn,val}/fold{0..3}.txt with lines `NAME__CC` (1-based class);
                   fold i holds classes 5i..5i+4, as in PASCAL-5i.

Each class is a texture (stripes, checker, dots, blotches or rings, with its own period and angle) in a
class colour pair of high saturation. Objects are random ellipses, blobs or polygons pasted on cluttered
backgrounds made of low-saturation non-class patterns, so a model with a frozen, randomly initialised
backbone can learn, on a CPU in minutes, to find the support's texture and colour in the query. With
probability `second_object_prob` an image also holds an object of another class of the same split group
(FSS: an unlabelled distractor, so the support is needed; PASCAL: a labelled second class, listed under
both classes). Classes of different split groups (FSS trn/val/test, PASCAL folds) never share an image.

Everything is a pure function of the arguments: the same seed gives byte-identical files.
`root/synthetic.json` records the parameters, counts and class styles of every layout generated there.
"""
from __future__ import annotations

import colorsys
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

__all__ = ["generate", "LAYOUTS", "PASCAL_CLASSES", "TEXTURES"]

LAYOUTS = ("fss", "pascal")
PASCAL_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
TEXTURES = ("stripes", "checker", "dots", "blotches", "rings")
FSS_SPLIT_FRACTIONS = (520 / 1000, 240 / 1000)  # trn, val of FSS-1000; test gets the rest
MANIFEST_NAME = "synthetic.json"
SHIPPED_SPLITS = Path(__file__).parent / "splits"
_HUE_NAMES = ("red", "orange", "yellow", "lime", "green", "teal", "cyan", "azure", "blue", "violet", "magenta", "pink")
_LAYOUT_CODE = {"fss": 1, "pascal": 2}
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
        root: data root; gets FSS-1000/ or VOC2012/, splits/<layout>/ and synthetic.json.
        layout: "fss" or "pascal".
        n_classes: FSS: number of classes (>= 3; default 20), split 52/24/24 % into trn/val/test like
            FSS-1000. PASCAL: must be 20 (the default); fold i holds classes 5i..5i+4.
        images_per_class: FSS: images per class (files 1..N; real FSS-1000 has 10). PASCAL: training
            images per class (the `trn` lists). At least 2; K-shot episodes need K + 1.
        val_images_per_class: PASCAL only: images per class in the `val` lists (default images_per_class).
        size: longer image side in pixels (>= 32). FSS images are square; PASCAL images have a shorter
            side drawn in [0.75, 1] x size, like VOC's mixed aspect ratios.
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
    else:
        specs = _pascal_specs(images_per_class, params["val_images_per_class"], second_object_prob, seed)
        files = _render_all(root, layout, specs, styles, size, seed, progress)
        lines = _pascal_split_lines(root, specs)
        _write_pascal_splits(root / "splits" / "pascal", lines)
        counts = {"classes": len(styles), "images": files, **{f"{s}_fold{f}_lines": len(v) for (s, f), v in lines.items()}}
        extra = {"folds": {f"fold{f}": [5 * f + i for i in range(5)] for f in range(4)}}
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
    if layout == "pascal":
        if n_classes not in (None, len(PASCAL_CLASSES)):
            raise ValueError(f"n_classes={n_classes!r}: the pascal layout always has {len(PASCAL_CLASSES)} classes (4 folds of 5)")
        n_classes = len(PASCAL_CLASSES)
        val_images_per_class = images_per_class if val_images_per_class is None else val_images_per_class
        _check_int("val_images_per_class", val_images_per_class, 2)
    else:
        if val_images_per_class is not None:
            raise ValueError("val_images_per_class only applies to layout='pascal' (FSS classes are whole per split)")
        n_classes = 20 if n_classes is None else n_classes
        _check_int("n_classes", n_classes, 3)
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


def _layout_paths(root: Path, layout: str) -> list[Path]:
    data_dir = root / ("FSS-1000" if layout == "fss" else "VOC2012")
    return [data_dir, root / "splits" / layout]


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
        name = PASCAL_CLASSES[k] if layout == "pascal" else f"{k:03d}_{texture}_{hue_name}"
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


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------
def _render_all(root, layout, specs, styles, size, seed, progress) -> int:
    if layout == "fss":
        out_dir = root / "FSS-1000"
    else:
        (root / "VOC2012" / "JPEGImages").mkdir(parents=True, exist_ok=True)
        (root / "VOC2012" / "SegmentationClassAug").mkdir(parents=True, exist_ok=True)
    for spec in tqdm(specs, desc=f"synthetic {layout}", unit="img", disable=not progress):
        rng = np.random.default_rng([seed, _LAYOUT_CODE[layout], 2, spec.index])
        height, width = _image_shape(rng, layout, size)
        image, labels = _render_image(rng, spec, styles, height, width)
        if layout == "fss":
            img_path, mask_path = out_dir / f"{spec.name}.jpg", out_dir / f"{spec.name}.png"
            img_path.parent.mkdir(parents=True, exist_ok=True)
            mask = np.where(labels == spec.main + 1, 255, 0).astype(np.uint8)
        else:
            img_path = root / "VOC2012" / "JPEGImages" / f"{spec.name}.jpg"
            mask_path = root / "VOC2012" / "SegmentationClassAug" / f"{spec.name}.png"
            mask = _with_boundary(labels, width=max(1, size // 96))
        Image.fromarray(image).save(img_path, quality=92)
        Image.fromarray(mask, mode="L").save(mask_path)
    return len(specs)


def _image_shape(rng: np.random.Generator, layout: str, size: int) -> tuple[int, int]:
    if layout == "fss":
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
