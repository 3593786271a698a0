"""Write the COCO-20i class-index masks from the official COCO 2014 instance annotations.

    python -m data_prep.coco_masks --root DATA

reads DATA/COCO2014/annotations/instances_{train,val}2014.json and writes one PNG per image,
DATA/COCO2014/annotations/{train2014,val2014}/NAME.png (NAME = the image file's stem, e.g.
COCO_val2014_000000000139), the size of the image, with

    value = class index + 1   (class index = rank of the category id among the file's categories,
                               so COCO's 80 ids 1..90 map to 1..80 in id order)
    value = 0                 elsewhere.

Overlaps: crowd regions (iscrowd=1, RLE) are painted first, then the ordinary instances in ascending
annotation id; a later annotation overwrites an earlier one, so a precise instance always beats a
crowd blob and the last-listed instance wins between instances. Images without annotations get an
all-zero mask. Files already present are skipped (re-runs resume), unless --overwrite; every file is
written to a temporary name and renamed, so an interrupted run never leaves a truncated mask.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from tqdm.auto import tqdm

from data_prep import add_rewrite_options, exit_status, save_png_atomic, script_parser

SPLITS = ("train2014", "val2014")
README_SECTION = "data_prep/README.md, section 'COCO-20i'"


@dataclass
class SplitReport:
    """What one split's run did."""

    split: str
    written: int = 0
    skipped: int = 0


def load_coco(json_path: Path) -> COCO:
    """A pycocotools COCO index of `json_path` (its chatty loading messages are silenced)."""
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path} not found: get the COCO 2014 instance annotations ({README_SECTION})")
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(json_path))


def category_values(coco: COCO) -> dict[int, int]:
    """Category id -> mask value (1-based rank of the id among all categories, in id order)."""
    values = {cat_id: rank + 1 for rank, cat_id in enumerate(sorted(coco.getCatIds()))}
    if len(values) > 255:
        raise ValueError(f"{len(values)} categories do not fit in an 8-bit mask")
    return values


def paint_order(anns: list[dict]) -> list[dict]:
    """Crowd regions first, then instances, each by annotation id: later ones overwrite earlier ones."""
    return sorted(anns, key=lambda ann: (not ann.get("iscrowd", 0), ann["id"]))


def image_mask(coco: COCO, img_id: int, values: dict[int, int]) -> np.ndarray:
    """(H, W) uint8 class-index mask of one image."""
    info = coco.imgs[img_id]
    mask = np.zeros((info["height"], info["width"]), np.uint8)
    for ann in paint_order(coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=None))):
        if ann["category_id"] not in values:
            raise ValueError(f"annotation {ann['id']} of image {info['file_name']} has unknown category {ann['category_id']}")
        instance = coco.annToMask(ann)  # (H, W) {0, 1}
        mask[instance > 0] = values[ann["category_id"]]
    return mask


def write_split(root: Path, split: str, overwrite: bool = False, progress: bool = True) -> SplitReport:
    """Write every image's mask of one split; return how many were written and skipped."""
    annotations = root / "COCO2014" / "annotations"
    coco = load_coco(annotations / f"instances_{split}.json")
    values = category_values(coco)
    out_dir = annotations / split
    out_dir.mkdir(parents=True, exist_ok=True)
    report = SplitReport(split)
    for img_id in tqdm(sorted(coco.imgs), desc=f"COCO {split} masks", unit="img", disable=not progress):
        path = out_dir / f"{Path(coco.imgs[img_id]['file_name']).stem}.png"
        if path.exists() and not overwrite:
            report.skipped += 1
            continue
        save_png_atomic(image_mask(coco, img_id, values), path)
        report.written += 1
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser("data_prep.coco_masks", __doc__)
    parser.add_argument("--root", required=True, type=Path, help="data root holding COCO2014/annotations/instances_*2014.json")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS), help="which splits to write")
    return add_rewrite_options(parser).parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def write_splits() -> None:
        for split in args.splits:
            report = write_split(args.root, split, overwrite=args.overwrite, progress=not args.no_progress)
            print(f"{split}: wrote {report.written} masks, skipped {report.skipped} already present "
                  f"-> {args.root / 'COCO2014' / 'annotations' / split}")
    return exit_status(write_splits)


if __name__ == "__main__":
    sys.exit(main())
