"""Deepglobe for CD-FSS: tile, filter and split the official land-cover training set into per-class folders.

    python -m data_prep.deepglobe --src land-train --root DATA

`--src` holds the Deepglobe 2018 land-cover training release (803 pairs `ID_sat.jpg` + `ID_mask.png`,
2448x2448, colour masks; the Kaggle "DeepGlobe Land Cover Classification Dataset" `train/` folder is the
same). As PATNet's preprocess.py describes (cdfss-protocol.md, section 3):

1. every image and mask is cut into a 6x6 grid; tile (i, j) spans rows floor(i*H/6)..floor((i+1)*H/6)
   and the same columns (408x408 for 2448x2448);
2. a mask tile is dropped when it has a single colour, or when the smallest share of its colours
   (pixel count / `--share-denominator`, 408*408 = 166,464, a fixed constant) is not above
   `--min-share` (0.048); every colour counts, black "unknown" included. A tile with more than 256
   colours (a mask with non-pure values) stops the run (`--many-colours drop` drops it instead);
3. for each kept tile and each class 1..6 (`hsnetlib.data.DEEPGLOBE_CLASSES`), the pixels of exactly the
   class colour become white on black; where at least one pixel matched, the 3-channel mask goes to
   `DATA/Deepglobe/C/test/groundtruth/ID_ij.png` and the image tile to `DATA/Deepglobe/C/test/origin/ID_ij.jpg`.

Choices where preprocess.py is silent: image tiles and masks share the stem `ID_ij` (the loader needs
identical stems); image tiles are JPEG at `--jpeg-quality` 95 (OpenCV's default). Counts (tiles, drops by
reason, kept tiles, entries per class folder) are printed and written to `DATA/Deepglobe/counts.json`,
the per-class stem lists to `DATA/Deepglobe/C/names.txt`. Rerunnable: every file is written atomically,
and a source image whose record `DATA/Deepglobe/.prep/ID.json` exists (written after its tiles) is skipped.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from data_prep import exit_status, save_image_atomic, script_parser
from hsnetlib.data import DEEPGLOBE_CLASSES
from hsnetlib.utils import atomic_write

GRID = 6
SHARE_DENOMINATOR = 408 * 408
MIN_SHARE = 0.048
MAX_COLOURS = 256  # PIL getcolors' default limit, as preprocess.py uses it
IMAGE_SUFFIX, MASK_SUFFIX = "_sat.jpg", "_mask.png"


def tile_bounds(size: int, k: int) -> tuple[int, int]:
    """Start and end of tile k along a side of `size` pixels."""
    return k * size // GRID, (k + 1) * size // GRID


def tile_decision(tile: Image.Image, share_denominator: int, min_share: float, many_colours: str, name: str) -> str:
    """"keep", or why the mask tile is dropped: "single-colour", "small-share", "many-colours"."""
    colours = tile.getcolors(MAX_COLOURS)
    if colours is None:
        if many_colours == "drop":
            return "many-colours"
        raise ValueError(f"mask tile {name} has more than {MAX_COLOURS} colours (not a pure colour mask); "
                         "rerun with --many-colours drop to drop such tiles")
    if len(colours) == 1:
        return "single-colour"
    return "keep" if min(count for count, _ in colours) / share_denominator > min_share else "small-share"


def class_masks(tile: np.ndarray) -> dict[str, np.ndarray]:
    """Class folder -> (H, W, 3) uint8 white-on-black mask, for the classes with at least one pixel."""
    out = {}
    for folder, (_, colour) in DEEPGLOBE_CLASSES.items():
        hit = np.all(tile == np.asarray(colour, np.uint8), axis=-1)
        if hit.any():
            out[folder] = np.repeat(np.where(hit, 255, 0).astype(np.uint8)[..., None], 3, axis=2)
    return out


def source_pairs(src: Path) -> list[tuple[str, Path, Path]]:
    """(ID, image, mask) of every ID_sat.jpg in `src`, sorted; a missing mask is an error."""
    if not src.is_dir():
        raise FileNotFoundError(f"--src {src}: folder not found; it should hold the Deepglobe land-cover training "
                                f"pairs ID{IMAGE_SUFFIX} + ID{MASK_SUFFIX}")
    pairs = []
    for image in sorted(src.glob(f"*{IMAGE_SUFFIX}")):
        image_id = image.name[: -len(IMAGE_SUFFIX)]
        mask = src / f"{image_id}{MASK_SUFFIX}"
        if not mask.is_file():
            raise FileNotFoundError(f"{image}: its mask {mask} is missing")
        pairs.append((image_id, image, mask))
    if not pairs:
        raise FileNotFoundError(f"--src {src}: no *{IMAGE_SUFFIX} found; it should hold the Deepglobe land-cover "
                                f"training pairs ID{IMAGE_SUFFIX} + ID{MASK_SUFFIX}")
    return pairs


def process_image(image_id: str, image_path: Path, mask_path: Path, out: Path, args: argparse.Namespace) -> dict:
    """Tile one source pair, write its class-folder files; return its record (tile -> decision, classes)."""
    with Image.open(image_path) as img:
        image = img.convert("RGB")
    with Image.open(mask_path) as m:
        mask = m.convert("RGB")
    if image.size != mask.size:
        raise ValueError(f"{mask_path} is {mask.width}x{mask.height} but {image_path} is {image.width}x{image.height}")
    tiles = {}
    for i in range(GRID):
        for j in range(GRID):
            top, bottom = tile_bounds(mask.height, i)
            left, right = tile_bounds(mask.width, j)
            stem = f"{image_id}_{i}{j}"
            mask_tile = mask.crop((left, top, right, bottom))
            decision = tile_decision(mask_tile, args.share_denominator, args.min_share, args.many_colours, f"{stem} of {mask_path}")
            classes = class_masks(np.asarray(mask_tile)) if decision == "keep" else {}
            image_tile = image.crop((left, top, right, bottom)) if classes else None
            for folder, class_mask in classes.items():
                base = out / folder / "test"
                save_image_atomic(Image.fromarray(class_mask), base / "groundtruth" / f"{stem}.png")
                save_image_atomic(image_tile, base / "origin" / f"{stem}.jpg", quality=args.jpeg_quality)
            tiles[stem] = {"decision": decision, "classes": sorted(classes)}
    record = {"source": image_path.name, "params": params(args), "tiles": tiles}
    atomic_write(out / ".prep" / f"{image_id}.json", json.dumps(record, indent=1) + "\n")
    return record


def summarise(records: list[dict], out: Path, settings: dict) -> dict:
    """Counts over all records; writes counts.json and each class folder's names.txt."""
    decisions = [t["decision"] for r in records for t in r["tiles"].values()]
    names = {folder: sorted(stem for r in records for stem, t in r["tiles"].items() if folder in t["classes"])
             for folder in DEEPGLOBE_CLASSES}
    counts = {
        "source_images": len(records),
        "tiles": len(decisions),
        "kept_tiles": decisions.count("keep"),
        "dropped": {reason: decisions.count(reason) for reason in ("single-colour", "small-share", "many-colours")},
        "class_folder_entries": sum(len(v) for v in names.values()),
        "per_class": {f"{folder} {DEEPGLOBE_CLASSES[folder][0]}": len(v) for folder, v in names.items()},
        "params": settings,
    }
    for folder, stems in names.items():
        atomic_write(out / folder / "names.txt", "".join(f"{s}\n" for s in stems))
    atomic_write(out / "counts.json", json.dumps(counts, indent=1) + "\n")
    return counts


def params(args: argparse.Namespace) -> dict:
    """The options that change the output (a record written with others is not reused)."""
    return {k: getattr(args, k) for k in ("min_share", "share_denominator", "many_colours", "jpeg_quality")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser("data_prep.deepglobe", __doc__)
    parser.add_argument("--src", required=True, type=Path, help=f"folder of the land-cover training pairs ID{IMAGE_SUFFIX} + ID{MASK_SUFFIX}")
    parser.add_argument("--root", required=True, type=Path, help="data root; Deepglobe/ is written inside")
    parser.add_argument("--min-share", type=float, default=MIN_SHARE, help="keep a tile when its rarest colour's share is above this (0.048)")
    parser.add_argument("--share-denominator", type=int, default=SHARE_DENOMINATOR, help="pixel count a share is taken of (408*408)")
    parser.add_argument("--many-colours", choices=("error", "drop"), default="error", help="a mask tile with > 256 colours: stop (default) or drop it")
    parser.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality of the image tiles (95, OpenCV's default)")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.root / "Deepglobe"

    def write_tiles() -> None:
        records = []
        for image_id, image_path, mask_path in tqdm(source_pairs(args.src), desc="deepglobe", unit="image",
                                                    disable=args.no_progress):
            done = out / ".prep" / f"{image_id}.json"
            if done.is_file():
                record = json.loads(done.read_text())
                if record.get("params") != params(args):
                    raise ValueError(f"{done} was written with other parameters {record['params']}; remove {out} to redo")
                records.append(record)
                continue
            records.append(process_image(image_id, image_path, mask_path, out, args))
        counts = summarise(records, out, params(args))
        print(json.dumps({k: v for k, v in counts.items() if k != "params"}, indent=1))
        print(f"written: {out} (counts in {out / 'counts.json'})")
    return exit_status(write_tiles, (FileNotFoundError, ValueError, OSError))


if __name__ == "__main__":
    sys.exit(main())
