"""JSON files the suite trusts (run states, run records, run hand-offs): written atomically, read with errors
that name the file, and a full disk said as such."""
from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping


class UnreadableFile(ValueError):
    """A JSON file of the suite that cannot be read as what it should hold (the message names the file)."""


def plain(value: Any) -> Any:
    """JSON-ready values: numpy/torch scalars to Python, tuples to lists, paths to strings, NaN to None."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def disk_full(err: OSError, path: str | os.PathLike) -> OSError:
    """`err` again, or for a full disk an OSError that says so and names the file."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return OSError(err.errno, f"no space left on device while writing {path}")
    return err


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically (a temporary file in the same folder, then a rename); a full disk is named.

    Not hsnetlib.utils' writer: that module imports torch, and the suite's processes (and the kernels of
    notebooks that only record) need none."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        raise disk_full(err, path) from err
    return path


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON atomically (metrics.json marks a run as done, so it is never half written)."""
    return write_text(path, json.dumps(plain(data), indent=2, allow_nan=False) + "\n")


def read_json_object(path: str | os.PathLike, what: str) -> dict[str, Any] | None:
    """A JSON object from `path` (None when the file does not exist); `what` names it in the error."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UnreadableFile(f"{path}: unreadable {what} ({type(err).__name__}: {err})") from err
    if not isinstance(data, dict):
        raise UnreadableFile(f"{path}: unreadable {what} (a JSON {type(data).__name__}, not an object)")
    return data
