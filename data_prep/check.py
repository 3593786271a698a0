"""Check a data root against the layouts and split lists the loaders read.

    python -m data_prep.check --root DATA [--benchmark pascal|coco|fss|deepglobe|isic|lung|all] [--splits-dir D]
                              [--sample N | --full]

For each benchmark: every image and mask the split lists name must exist (checked for all of them); a
sample of them (--sample per split group, default 300; --full for all) is decoded with the loaders'
own readers: unreadable images or masks, mask values outside the expected set (PASCAL {0..20, 255},
COCO {0..80}), a PASCAL mask that is all 255 (nothing labelled) and mask/image size mismatches are
errors. A listed class that does not appear in its mask (an FSS mask without foreground) is a warning.
The CD-FSS target sets (deepglobe, isic, lung) are listed by their loaders themselves, one group per
class, with the benchmark's default options; a missing folder is named with what to put there. Prints a table and the first offending paths;
exits 1 when anything required is missing or bad. `--benchmark all` (the default) checks the
benchmarks whose top folder exists under the root.
"""
from __future__ import annotations

import argparse
import gzip
import os
import random
import sys
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from data_prep import script_parser
from hsnetlib.data import SHIPPED_SPLITS, DatasetConfig, get_benchmark, read_class_index_mask, read_grey_mask, read_rgb
from hsnetlib.data.cdfss import LUNG_DIR

BENCHMARKS = ("pascal", "coco", "fss", "deepglobe", "isic", "lung")
TOP_FOLDER = {"pascal": "VOC2012", "coco": "COCO2014", "fss": "FSS-1000", "deepglobe": "Deepglobe", "isic": "ISIC",
              "lung": LUNG_DIR}
N_CLASSES = {"pascal": 20, "coco": 80}
README_SECTION = {"pascal": "PASCAL-5i", "coco": "COCO-20i", "fss": "FSS-1000", "deepglobe": "Deepglobe",
                  "isic": "ISIC2018", "lung": "Chest X-ray"}
BINARY_MASKS = ("fss", "deepglobe", "isic", "lung")  # grey >= 128 foreground
SHOW = 5  # offending paths printed per kind


@dataclass(frozen=True)
class Item:
    """One listed image, its mask, and the mask values its list entries promise (empty: FSS foreground)."""

    image: Path
    mask: Path
    values: frozenset[int] = frozenset()


@dataclass
class GroupReport:
    """The outcome for one split group of one benchmark (e.g. PASCAL trn, COCO val2014)."""

    benchmark: str
    group: str
    listed: int = 0
    checked: int = 0
    missing: list[Path] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)  # "path: reason"
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.bad


# ------------------------------------------------------------------------------------------------
# What the split lists promise
# ------------------------------------------------------------------------------------------------
def read_list(path: Path) -> list[str]:
    """Non-empty, non-comment lines of a (possibly gzipped, possibly CRLF) split list."""
    if not path.is_file():
        raise FileNotFoundError(f"split list {path} not found")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def _fold_lines(group_dir: Path, suffix: str) -> Iterator[tuple[Path, int, str]]:
    """(list, line number, line) of each line of the four fold lists ``group_dir/fold{0..3}{suffix}``."""
    for fold in range(4):
        path = group_dir / f"fold{fold}{suffix}"
        for lineno, line in enumerate(read_list(path), 1):
            yield path, lineno, line


def _merge(items: dict[str, Item], key: str, image: Path, mask: Path, value: int) -> None:
    previous = items.get(key)
    items[key] = Item(image, mask, (previous.values if previous else frozenset()) | {value})


def pascal_items(root: Path, splits: Path) -> dict[str, list[Item]]:
    """Per split group (trn, val): every listed VOC name with the class values it is listed under."""
    base = root / "VOC2012"
    groups = {}
    for group in ("trn", "val"):
        items: dict[str, Item] = {}
        for path, lineno, line in _fold_lines(splits / "pascal" / group, ".txt"):
            name, sep, cls = line.rpartition("__")
            if not sep or not cls.isdigit():
                raise ValueError(f"{path}:{lineno}: expected NAME__CLASS, got {line!r}")
            _merge(items, name, base / "JPEGImages" / f"{name}.jpg", base / "SegmentationClassAug" / f"{name}.png", int(cls))
        groups[group] = list(items.values())
    return groups


def coco_items(root: Path, splits: Path) -> dict[str, list[Item]]:
    """Per image folder (train2014, val2014): every listed image with the class values it is listed under."""
    base = root / "COCO2014"
    by_folder: dict[str, dict[str, Item]] = {}
    for group in ("trn", "val"):
        for path, lineno, line in _fold_lines(splits / "coco" / group, ".tsv.gz"):
            cls, sep, name = line.partition("\t")
            if not sep or not cls.isdigit():
                raise ValueError(f"{path}: row {lineno}: expected CLASS<TAB>FOLDER/NAME.jpg, got {line!r}")
            folder = name.split("/", 1)[0]
            mask = (base / "annotations" / name).with_suffix(".png")
            _merge(by_folder.setdefault(folder, {}), name, base / name, mask, int(cls) + 1)
    return {folder: list(items.values()) for folder, items in sorted(by_folder.items())}


def fss_items(root: Path, splits: Path) -> dict[str, list[Item]]:
    """Per split (trn, val, test): every N.jpg of the listed class folders with its N.png.
    A listed class folder that is missing or has no images counts as one missing path."""
    base = root / "FSS-1000"
    groups = {}
    for group in ("trn", "val", "test"):
        items = []
        for class_name in read_list(splits / "fss" / f"{group}.txt"):
            folder = base / class_name
            images = sorted(name for name in listing(folder) if name.endswith(".jpg"))
            if not exists(folder):  # the whole class is missing: reported as its folder
                items.append(Item(folder, folder))
            elif not images:
                items.append(Item(folder / "1.jpg", folder / "1.png"))
            items += [Item(folder / name, folder / f"{name[:-4]}.png") for name in images]
        groups[group] = items
    return groups


def target_items(benchmark: str, root: Path, splits: Path) -> dict[str, list[Item]]:
    """Per class of a CD-FSS target set: its files as the loader lists them (default options)."""
    spec = get_benchmark(benchmark)
    config = DatasetConfig(benchmark=benchmark, root=str(root), fold=0, split="test", shot=1,
                           splits_dir=str(splits), options=spec.resolve_options(None))
    layout = spec.layout(config, spec)
    lists = layout.class_lists()
    return {layout.class_names[c]: [Item(*layout.files[name]) for name in names] for c, names in lists.items()}


TARGET_SETS = ("deepglobe", "isic", "lung")
ITEMS = {"pascal": pascal_items, "coco": coco_items, "fss": fss_items,
         **{name: partial(target_items, name) for name in TARGET_SETS}}


@lru_cache(maxsize=None)
def listing(folder: Path) -> frozenset[str]:
    """File names in a folder (empty when it does not exist): one listdir instead of a stat per file."""
    try:
        return frozenset(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return frozenset()


def exists(path: Path) -> bool:
    return path.name in listing(path.parent)


# ------------------------------------------------------------------------------------------------
# Reading files
# ------------------------------------------------------------------------------------------------
def check_item(benchmark: str, item: Item) -> tuple[str | None, str | None]:
    """(error, warning) for one image/mask pair, read with the loaders' readers."""
    try:
        image = read_rgb(item.image)
        if benchmark in BINARY_MASKS:
            mask = read_grey_mask(item.mask)
        else:
            mask = read_class_index_mask(item.mask, N_CLASSES[benchmark], boundary=benchmark == "pascal")
    except (ValueError, FileNotFoundError) as error:
        return str(error), None
    if mask.shape != (image.height, image.width):
        return f"{item.mask}: mask is {mask.shape[1]}x{mask.shape[0]}, image {item.image} is {image.width}x{image.height}", None
    if benchmark in BINARY_MASKS:
        absent = [] if mask.any() else ["foreground"]
    else:
        absent = [v - 1 for v in sorted(item.values) if not np.any(mask == v)]
    if absent:
        what = "no foreground" if benchmark in BINARY_MASKS else f"listed class(es) {absent} (0-based) do not appear"
        return None, f"{item.mask}: {what}"
    return None, None


def check_group(benchmark: str, group: str, items: list[Item], sample: int | None, progress: bool) -> GroupReport:
    report = GroupReport(benchmark, group, listed=len(items))
    present = []
    for item in items:
        missing = [p for p in dict.fromkeys((item.image, item.mask)) if not exists(p)]
        report.missing += missing
        if not missing:
            present.append(item)
    if sample is not None and len(present) > sample:
        present = sorted(random.Random(0).sample(present, sample), key=lambda item: str(item.image))
    for item in tqdm(present, desc=f"{benchmark} {group}", unit="file", disable=not progress, leave=False):
        error, warning = check_item(benchmark, item)
        report.bad += [error] if error else []
        report.warnings += [warning] if warning else []
    report.checked = len(present)
    return report


def check_benchmark(benchmark: str, root: Path, splits: Path, sample: int | None, progress: bool) -> list[GroupReport]:
    top = root / TOP_FOLDER[benchmark]
    if not top.is_dir():
        return [GroupReport(benchmark, "-", bad=[f"{top}: folder not found (data_prep/README.md, section '{README_SECTION[benchmark]}')"])]
    try:
        groups = ITEMS[benchmark](root, splits)
    except (FileNotFoundError, ValueError) as error:
        where = "" if benchmark in TARGET_SETS else f" (split lists of --splits-dir {splits})"
        return [GroupReport(benchmark, "lists", bad=[f"{error}{where}"])]
    return [check_group(benchmark, group, items, sample, progress) for group, items in groups.items()]


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------
def format_reports(reports: list[GroupReport]) -> str:
    header = f"{'benchmark':<10}{'group':<22}{'listed':>8}{'missing':>9}{'checked':>9}{'bad':>6}{'warn':>6}  status"
    lines = [header, "-" * len(header)]
    for r in reports:
        lines.append(f"{r.benchmark:<10}{r.group:<22}{r.listed:>8}{len(r.missing):>9}{r.checked:>9}"
                     f"{len(r.bad):>6}{len(r.warnings):>6}  {'ok' if r.ok else 'FAIL'}")
    for r in reports:
        for kind, entries in (("missing", [str(p) for p in r.missing]), ("bad", r.bad), ("warnings", r.warnings)):
            if entries:
                lines.append(f"\n{r.benchmark} {r.group}: {kind} ({len(entries)}):")
                lines += [f"  {entry}" for entry in entries[:SHOW]]
                lines += [f"  ... and {len(entries) - SHOW} more"] if len(entries) > SHOW else []
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser("data_prep.check", __doc__)
    parser.add_argument("--root", required=True, type=Path, help="data root (holding VOC2012/, COCO2014/, FSS-1000/)")
    parser.add_argument("--benchmark", choices=(*BENCHMARKS, "all"), default="all")
    parser.add_argument("--splits-dir", type=Path, default=SHIPPED_SPLITS,
                        help="split lists (pascal/, coco/, fss/ inside); default: the lists shipped in hsnetlib/splits")
    parser.add_argument("--sample", type=int, default=300, help="files decoded per split group (default 300)")
    parser.add_argument("--full", action="store_true", help="decode every listed file (slow on COCO)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.sample < 1:
        parser.error(f"--sample {args.sample}: expected a positive count (or --full)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    listing.cache_clear()
    if args.benchmark == "all":
        benchmarks = [b for b in BENCHMARKS if (args.root / TOP_FOLDER[b]).is_dir()]
        if not benchmarks:
            expected = ", ".join(str(args.root / TOP_FOLDER[b]) for b in BENCHMARKS)
            print(f"error: none of {expected} exists (see data_prep/README.md)", file=sys.stderr)
            return 1
    else:
        benchmarks = [args.benchmark]
    sample = None if args.full else args.sample
    reports = [r for b in benchmarks for r in check_benchmark(b, args.root, args.splits_dir, sample, not args.no_progress)]
    print(format_reports(reports))
    if (args.root / "synthetic.json").is_file() and args.splits_dir == SHIPPED_SPLITS:
        print(f"\nnote: {args.root} holds synthetic data, whose split lists are in --splits-dir {args.root / 'splits'}")
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
