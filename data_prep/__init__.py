"""One-off data preparation scripts: COCO-20i masks, PASCAL SegmentationClassAug from SBD, a layout checker,
and the synthetic benchmark generator. Each runs as `python -m data_prep.NAME --help`; see data_prep/README.md."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def save_png_atomic(array: np.ndarray, path: Path) -> None:
    """Write a (H, W) uint8 `array` as a greyscale PNG through a temporary file and a rename,
    so an interrupted run never leaves a truncated mask that a resumed run would skip."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    try:
        Image.fromarray(array, mode="L").save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
