"""Where things are: the project root (the checkout holding notebooks/) and paths relative to it."""
from __future__ import annotations

import os
from pathlib import Path

NOTEBOOK_DIR = "notebooks"


def project_root() -> Path:
    """The checkout holding notebooks/ (hsnetlib is installed editable from it); else the working directory."""
    repo = Path(__file__).resolve().parents[2]
    return repo if (repo / NOTEBOOK_DIR).is_dir() else Path.cwd()


def resolve(path: str | os.PathLike) -> Path:
    """An absolute path: relative paths are taken from the project root, wherever the kernel runs."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


def notebook_path(notebook: str, notebooks_dir: str | os.PathLike = NOTEBOOK_DIR) -> Path:
    path = resolve(notebooks_dir) / notebook
    if not path.is_file():
        raise FileNotFoundError(f"notebook {path} does not exist")
    return path
