"""One-off data preparation scripts: COCO-20i masks, PASCAL SegmentationClassAug from SBD, Deepglobe tiles,
ISIC class folders, a layout checker, and the synthetic benchmark generator. Each runs as
`python -m data_prep.NAME --help`; see data_prep/README.md."""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from hsnetlib.utils import atomic_write


def save_image_atomic(image: Image.Image, path: Path, **save_options) -> None:
    """Encode `image` in the format of `path`'s suffix and write it atomically (hsnetlib.utils.atomic_write), so
    an interrupted run never leaves a truncated file that a resumed run would skip."""
    buffer = io.BytesIO()
    image.save(buffer, format=Image.registered_extensions()[path.suffix.lower()], **save_options)
    atomic_write(path, buffer.getvalue())


def save_png_atomic(array: np.ndarray, path: Path) -> None:
    """A (H, W) uint8 `array` as a greyscale PNG, written atomically."""
    save_image_atomic(Image.fromarray(array, mode="L"), path)


def script_parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The argument parser of ``python -m {module}``, its help `doc` (the module's docstring) as written."""
    return argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_rewrite_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of a script that writes files one by one: --overwrite and --no-progress."""
    parser.add_argument("--overwrite", action="store_true", help="rewrite masks that already exist")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def exit_status(body: Callable[[], None],
                errors: tuple[type[Exception], ...] = (FileNotFoundError, ValueError)) -> int:
    """A script's exit status: 0 when `body` finishes, 1 after "error: ..." on stderr when it raises one of
    `errors` (bad input: a missing file, a malformed one)."""
    try:
        body()
    except errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
