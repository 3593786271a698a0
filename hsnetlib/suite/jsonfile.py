"""JSON files the suite trusts (run states, run records, run hand-offs): written atomically
(:func:`hsnetlib.utils.atomic_write`: a full disk is named), read with errors that name the file."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hsnetlib.utils import atomic_write, plain


class UnreadableFile(ValueError):
    """A JSON file of the suite that cannot be read as what it should hold (the message names the file)."""


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON atomically (metrics.json marks a run as done, so it is never half written)."""
    return atomic_write(path, json.dumps(plain(data), indent=2, allow_nan=False) + "\n")


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


def read_json_in(path: str | os.PathLike, file_name: str, what: str, missing: str) -> tuple[Path, dict[str, Any]]:
    """(the file, its JSON object) of `path`, or of `path`/`file_name` when `path` is a folder; a missing file is
    a FileNotFoundError naming it, followed by `missing`; `what` names the file in the other errors."""
    path = Path(path)
    if path.is_dir():
        path = path / file_name
    data = read_json_object(path, what)
    if data is None:
        raise FileNotFoundError(f"{path}{missing}")
    return path, data
