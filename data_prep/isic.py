"""ISIC2018 for CD-FSS: sort the Task 1 training images into class folders 1/2/3 (symbolic links).

    python -m data_prep.isic --root DATA [--convention first-appearance]

Expects `DATA/ISIC/ISIC2018_Task1-2_Training_Input/ISIC_*.jpg` (the unpacked Task 1-2 training input,
2,594 images; `--images` points elsewhere) and `DATA/ISIC/ISIC2018_Task1_Training_GroundTruth/` (the
Task 1 ground truth, used as it is). Each image listed in the class table (default: PATNet's
`hsnetlib/splits/isic/class_id.csv`, `ID,Class`) gets a link `.../ISIC2018_Task1-2_Training_Input/K/ID.jpg`,
K = the class's folder under `--convention` (hsnetlib.data.ISIC_CONVENTIONS; default first-appearance:
1 nevus, 2 melanoma, 3 seborrheic_keratosis). An image missing from the table, or a table entry without
its image, is an error naming them (`--skip-unlisted`, `--allow-missing` to go on). Links are made
atomically and a rerun (also with another convention) leaves exactly one correct link per image. The
per-folder counts are printed and written to `DATA/ISIC/counts.json`.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

from data_prep import exit_status, script_parser
from hsnetlib.data import ISIC_CONVENTIONS, SHIPPED_SPLITS, get_benchmark
from hsnetlib.data.cdfss import ISIC_IMAGES
from hsnetlib.utils import atomic_write

SHIPPED_TABLE = SHIPPED_SPLITS / "isic" / "class_id.csv"
DEFAULT_CONVENTION = get_benchmark("isic").options["isic_convention"].default
SHOW = 5


def read_table(path: Path) -> dict[str, str]:
    """ID -> class name from a CSV with header `ID,Class` (LF or CRLF)."""
    if not path.is_file():
        raise FileNotFoundError(f"class table {path} not found")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0]] != ["ID", "Class"]:
        raise ValueError(f"{path}: expected the header 'ID,Class', got {rows[0] if rows else 'an empty file'}")
    table = {}
    for lineno, row in enumerate(rows[1:], 2):
        if len(row) != 2 or row[0] in table:
            raise ValueError(f"{path}:{lineno}: expected one 'ID,Class' row per ID, got {row}")
        table[row[0].strip()] = row[1].strip()
    return table


def folder_of(class_name: str, convention: str, table: Path) -> str:
    names = ISIC_CONVENTIONS[convention]
    if class_name not in names:
        raise ValueError(f"{table}: class {class_name!r} is none of {names}")
    return str(names.index(class_name) + 1)


def link(target: Path, path: Path) -> bool:
    """Make `path` a relative symbolic link to `target` atomically; False when it already is one."""
    relative = os.path.relpath(target, path.parent)
    if path.is_symlink() and os.readlink(path) == relative:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(relative, tmp)
    os.replace(tmp, path)
    return True


def sort_images(images: Path, dest: Path, table_path: Path, convention: str, skip_unlisted: bool,
                allow_missing: bool) -> dict:
    """Link every listed image of `images` into its class folder `dest/K`; return the counts."""
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: folder not found; unpack ISIC2018_Task1-2_Training_Input.zip there "
                                "(the 2,594 ISIC_*.jpg training images)")
    table = read_table(table_path)
    present = {p.name.split(".")[0]: p for p in images.iterdir() if p.is_file() and p.name.split(".")[1:2] == ["jpg"]}
    unlisted = sorted(set(present) - set(table))
    missing = sorted(set(table) - set(present))
    if unlisted and not skip_unlisted:
        raise ValueError(f"{len(unlisted)} image(s) of {images} are not in the class table {table_path}: "
                         f"{', '.join(unlisted[:SHOW])}{' ...' if len(unlisted) > SHOW else ''} (--skip-unlisted to leave them out)")
    if missing and not allow_missing:
        raise FileNotFoundError(f"{len(missing)} image(s) of the class table {table_path} are not in {images}: "
                                f"{', '.join(f'{m}.jpg' for m in missing[:SHOW])}{' ...' if len(missing) > SHOW else ''} "
                                "(--allow-missing to go on without them)")
    folders = [str(k) for k in range(1, len(ISIC_CONVENTIONS[convention]) + 1)]
    per_folder = dict.fromkeys(folders, 0)
    made = 0
    for image_id, class_name in table.items():
        if image_id not in present:
            continue
        folder = folder_of(class_name, convention, table_path)
        source = present[image_id]
        made += link(source, dest / folder / source.name)
        for other in folders:  # a link left by another convention
            stale = dest / other / source.name
            if other != folder and stale.is_symlink():
                stale.unlink()
        per_folder[folder] += 1
    names = ISIC_CONVENTIONS[convention]
    return {
        "convention": convention, "table": str(table_path), "images": len(present), "unlisted_skipped": len(unlisted),
        "missing": len(missing), "links_made": made,
        "per_folder": {f"{k} {names[int(k) - 1]}": n for k, n in per_folder.items()},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser("data_prep.isic", __doc__)
    parser.add_argument("--root", required=True, type=Path, help="data root holding ISIC/")
    parser.add_argument("--images", type=Path, default=None, help=f"the flat image folder (default ROOT/{ISIC_IMAGES})")
    parser.add_argument("--table", type=Path, default=SHIPPED_TABLE, help="ID,Class table (default: the shipped class_id.csv)")
    parser.add_argument("--convention", choices=tuple(ISIC_CONVENTIONS), default=DEFAULT_CONVENTION,
                        help="class of folders 1/2/3 (the isic benchmark's option isic_convention; default %(default)s)")
    parser.add_argument("--skip-unlisted", action="store_true", help="leave out images the table does not list")
    parser.add_argument("--allow-missing", action="store_true", help="go on when table entries have no image")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    images = args.images if args.images is not None else args.root / ISIC_IMAGES

    def sort_and_count() -> None:
        counts = sort_images(images, args.root / ISIC_IMAGES, args.table, args.convention, args.skip_unlisted, args.allow_missing)
        atomic_write(args.root / "ISIC" / "counts.json", json.dumps(counts, indent=1) + "\n")
        print(json.dumps(counts, indent=1))
    return exit_status(sort_and_count, (FileNotFoundError, ValueError, OSError))


if __name__ == "__main__":
    sys.exit(main())
