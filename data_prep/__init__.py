"""One-off data preparation scripts: COCO-20i masks, PASCAL SegmentationClassAug from SBD, Deepglobe tiles,
ISIC class folders, a layout checker, and the synthetic benchmark generator. Each runs as
`python -m data_prep.NAME --help`; see data_prep/README.md."""
from __future__ import annotations

import io
from pathlib import Path

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
