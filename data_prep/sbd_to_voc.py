"""Build VOC2012/SegmentationClassAug (the PASCAL-5i masks) from SBD and VOC2012's own masks.

    python -m data_prep.sbd_to_voc --root DATA --sbd benchmark_RELEASE/dataset

reads the SBD class masks SBD/cls/NAME.mat (MATLAB struct GTcls, field Segmentation: class index
0..20 per pixel) and VOC2012's DATA/VOC2012/SegmentationClass/NAME.png (palette PNGs: class index
0..20, 255 on object boundaries and "difficult" regions), and writes one greyscale PNG per name of
either set to DATA/VOC2012/SegmentationClassAug/NAME.png. Where VOC2012 has a mask it wins (with its
255 band kept); elsewhere the SBD mask is used as it is (SBD has no 255 band). Values outside
{0..20, 255} are an error naming the file. Files already present are skipped unless --overwrite.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from data_prep import add_rewrite_options, exit_status, save_png_atomic, script_parser

N_CLASSES = 20
IGNORE = 255
README_SECTION = "data_prep/README.md, section 'PASCAL-5i'"


@dataclass
class ConversionReport:
    """How many masks came from each source, and how many were already there."""

    from_voc: int = 0
    from_sbd: int = 0
    skipped: int = 0


def read_sbd(path: Path) -> np.ndarray:
    """(H, W) uint8 class indices of an SBD cls/*.mat file."""
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as error:  # scipy raises several types for a damaged file
        raise ValueError(f"{path}: unreadable .mat file ({error})") from error
    if "GTcls" not in mat or not hasattr(mat["GTcls"], "Segmentation"):
        raise ValueError(f"{path}: no GTcls.Segmentation (is this an SBD cls/ file?)")
    seg = np.asarray(mat["GTcls"].Segmentation)
    if seg.ndim != 2:
        raise ValueError(f"{path}: GTcls.Segmentation has shape {seg.shape}, expected (H, W)")
    check_values(seg, path, allowed_ignore=False)
    return seg.astype(np.uint8)


def read_voc(path: Path) -> np.ndarray:
    """(H, W) uint8 class indices (255 = boundary) of a VOC2012 SegmentationClass palette PNG."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise ValueError(f"{path}: mode {image.mode}, expected a palette (P) or greyscale (L) PNG of class indices")
            seg = np.asarray(image)
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{path}: unreadable image ({error})") from error
    check_values(seg, path, allowed_ignore=True)
    return seg


def check_values(seg: np.ndarray, path: Path, allowed_ignore: bool) -> None:
    values = np.unique(seg)
    bad = [int(v) for v in values if not (0 <= v <= N_CLASSES or (allowed_ignore and v == IGNORE))]
    if bad:
        expected = f"0..{N_CLASSES}" + (f" or {IGNORE}" if allowed_ignore else "")
        raise ValueError(f"{path}: mask values {bad[:10]} outside {expected}")


def convert(root: Path, sbd: Path, overwrite: bool = False, progress: bool = True) -> ConversionReport:
    """Write root/VOC2012/SegmentationClassAug from sbd/cls/*.mat and root/VOC2012/SegmentationClass/*.png."""
    voc_dir, sbd_dir = root / "VOC2012" / "SegmentationClass", sbd / "cls"
    for needed, what in ((voc_dir, "VOC2012 SegmentationClass"), (sbd_dir, "SBD cls/ (benchmark_RELEASE/dataset/cls)")):
        if not needed.is_dir():
            raise FileNotFoundError(f"{needed} not found: the {what} folder is needed ({README_SECTION})")
    voc = {p.stem: p for p in voc_dir.glob("*.png")}
    sbd_files = {p.stem: p for p in sbd_dir.glob("*.mat")}
    if not voc and not sbd_files:
        raise FileNotFoundError(f"no masks in {voc_dir} nor {sbd_dir} ({README_SECTION})")
    out_dir = root / "VOC2012" / "SegmentationClassAug"
    out_dir.mkdir(parents=True, exist_ok=True)
    report = ConversionReport()
    for name in tqdm(sorted(voc.keys() | sbd_files.keys()), desc="SegmentationClassAug", unit="mask", disable=not progress):
        path = out_dir / f"{name}.png"
        if path.exists() and not overwrite:
            report.skipped += 1
        elif name in voc:
            save_png_atomic(read_voc(voc[name]), path)
            report.from_voc += 1
        else:
            save_png_atomic(read_sbd(sbd_files[name]), path)
            report.from_sbd += 1
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = script_parser("data_prep.sbd_to_voc", __doc__)
    parser.add_argument("--root", required=True, type=Path, help="data root holding VOC2012/SegmentationClass")
    parser.add_argument("--sbd", required=True, type=Path, help="SBD dataset folder holding cls/*.mat (benchmark_RELEASE/dataset)")
    return add_rewrite_options(parser).parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def write_masks() -> None:
        report = convert(args.root, args.sbd, overwrite=args.overwrite, progress=not args.no_progress)
        print(f"SegmentationClassAug: {report.from_voc} from VOC2012, {report.from_sbd} from SBD, "
              f"{report.skipped} already present -> {args.root / 'VOC2012' / 'SegmentationClassAug'}")
    return exit_status(write_masks)


if __name__ == "__main__":
    sys.exit(main())
