"""Small shared utilities: device choice, the atomic file writer, the checkpoint reader and provenance.

torch and numpy are imported inside the functions that need them: the suite's processes (and the kernels of
notebooks that only record) write their JSON files through :func:`atomic_write` without loading torch."""
from __future__ import annotations

import errno
import math
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Mapping

if TYPE_CHECKING:
    import torch


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: the one asked for, else CUDA when available, else CPU."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was asked for, but CUDA is not available on this machine")
    return device


MAX_DEFAULT_WORKERS = 8  # loader workers chosen by default_workers at most (see benchmarks/README.md, "Data loading")


def torchrun_world_size() -> int:
    """The number of processes of the torchrun job this process is a rank of (WORLD_SIZE); 1 outside torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def available_cpus() -> int:
    """CPUs this process can use for itself: its CPU affinity (which follows a Slurm allocation or
    ``taskset``), at most ``SLURM_CPUS_PER_TASK``, shared with the other torchrun ranks of the node
    (``LOCAL_WORLD_SIZE``) unless each rank is a Slurm task of its own (``SLURM_NTASKS`` > 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    slurm_cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if slurm_cpus:
        cpus = min(cpus, int(slurm_cpus))
    own_task = bool(slurm_cpus) and int(os.environ.get("SLURM_NTASKS", "1")) > 1
    sharing = 1 if own_task else int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, cpus // sharing)


def default_workers(device: str | torch.device | None = None) -> int:
    """DataLoader workers for a run on `device` (None: CUDA if available) when none are asked for.

    CUDA: one worker per CPU the process has (:func:`available_cpus`) less one for the main process,
    at most MAX_DEFAULT_WORKERS. CPU: 0 -- the model's step takes all cores and dwarfs the loading,
    so workers only compete with it (measured in benchmarks/README.md, "Data loading")."""
    if pick_device(device).type != "cuda":
        return 0
    return max(0, min(available_cpus() - 1, MAX_DEFAULT_WORKERS))


def plain(value: Any) -> Any:
    """JSON-ready values (run records, metrics.json): numpy/torch scalars to Python, tuples to lists, paths to
    strings, NaN and infinities to None."""
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


def _atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write through ``write(file)`` into a temporary file of the same folder, fsync, then rename: a crash or a
    full disk never leaves half a file, and the file that was there before stays as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if _no_space(err):
            raise OSError(errno.ENOSPC, f"no space left on device: {path} (not written; the previous file, if any, "
                                        "is unchanged)") from err
        raise
    return path


def _no_space(err: BaseException | None) -> bool:
    """Whether ``err`` or what it was raised from is a full disk (torch wraps its writer's OSError in a RuntimeError)."""
    while err is not None:
        if (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "No space left on device" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to ``path`` atomically (see :func:`_atomic`); returns the path."""
    payload = data.encode() if isinstance(data, str) else bytes(data)
    return _atomic(path, lambda f: f.write(payload))


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (see :func:`_atomic`); returns the path."""
    import torch

    return _atomic(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device | None = "cpu",
                    mmap: bool = False) -> Any:
    """``torch.load`` (tensors and plain containers only) of a checkpoint file; a missing file is a
    FileNotFoundError and a truncated or corrupt one a ValueError, both naming the file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:
        raise ValueError(f"cannot read checkpoint {path} (truncated or not a torch file?): "
                         f"{type(err).__name__}: {err}") from err


# What produces a number: a change here marks the code version "-dirty". results/ and runs/ are outputs, which
# a grid writes while it runs (the results run rewrites results/ before recording its own provenance).
CODE_PATHS = ("hsnetlib", "notebooks", "grids", "data_prep", "benchmarks", "pyproject.toml")


def code_version(repo: str | os.PathLike | None = None) -> str:
    """`git describe` of the checkout hsnetlib runs from, with -dirty when its code (CODE_PATHS) has uncommitted
    changes; the package version outside git."""
    repo = Path(repo) if repo is not None else Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        changed = git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
        return git("describe", "--always", "--tags") + ("-dirty" if changed else "")
    except (OSError, subprocess.SubprocessError):
        from hsnetlib import __version__
        return f"hsnetlib-{__version__}"


def env_info(device: str | torch.device | None = None) -> dict[str, Any]:
    """Provenance of a result: code version, library versions and the device it ran on."""
    import numpy as np
    import torch
    import torchvision

    device = pick_device(device)
    info: dict[str, Any] = {
        "code_version": code_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info
