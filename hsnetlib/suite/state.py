"""A run's folder and its state: suite-state.json (what `status` reads from any shell), the lock that makes one
process its owner, whether the run is done, and clearing it.

suite-state.json (written atomically): ``status`` (queued / running / done / failed / blocked; a run without one
is pending), ``executor``, ``attempt``, ``parameters``, ``submitted_at`` / ``started_at`` / ``finished_at``,
``host``, ``pid``, ``slurm_job_id`` / ``job_id``, ``node``, ``cuda_visible_devices``, ``detail`` (the headline
metrics or the error's line), ``log`` and, for Slurm, ``job_log``.

One run, one owner: the process that executes a run holds an exclusive ``flock`` on RUN/suite.lock for as long
as it runs (the kernel releases it when the process dies, however it dies), so a second ``suite run`` of the
same grid never trains the same run, and a state saying "running" whose lock nobody holds is stale.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsnetlib.suite.jsonfile import UnreadableFile, plain, read_json_object, write_json

if TYPE_CHECKING:
    from hsnetlib.suite.grid import Run

STATE_FILE = "suite-state.json"
LOCK_FILE = "suite.lock"
SPEC_FILE = "suite-run.json"  # the expanded run an executor hands to the process that executes it
METRICS_FILE = "metrics.json"
PARAMS_FILE = "params.json"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def where() -> dict[str, Any]:
    """Where this process runs: host, Slurm job id and node (None outside Slurm), visible GPUs (None: all)."""
    return {"host": socket.gethostname(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "node": os.environ.get("SLURMD_NODENAME"), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def rank() -> int:
    """This process's rank in a multi-GPU run (RANK, set by torchrun or the Slurm job's tasks); 0 otherwise."""
    return int(os.environ.get("RANK", "0"))


def read_state(out_dir: Path) -> dict[str, Any]:
    """A run's state file (empty when the run never started); UnreadableFile names a corrupt one."""
    return read_json_object(Path(out_dir) / STATE_FILE, "run state") or {}


def update_state(out_dir: Path, **changes: Any) -> dict[str, Any]:
    """Merge `changes` into a run's state file, written atomically (status works from any shell)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        before = read_state(out_dir)
    except UnreadableFile:  # the owner of a run rewrites what it cannot read
        before = {}
    state = {**before, **changes, "updated_at": now()}
    write_json(out_dir / STATE_FILE, state)
    return state


def read_record(out_dir: Path) -> dict[str, Any] | None:
    """A run's metrics.json, or None when it has none or it is unreadable (then the run is not done)."""
    try:
        return read_json_object(Path(out_dir) / METRICS_FILE, "run record")
    except UnreadableFile:
        return None


def is_done(out_dir: Path) -> bool:
    """A run is done when its folder holds a readable record (metrics.json, written last and atomically)."""
    return read_record(out_dir) is not None


def converged(record: dict[str, Any] | None) -> bool:
    """False when a training's record says it did not converge (``summary.converged``, written by 01_train)."""
    return (record or {}).get("summary", {}).get("converged", True) is not False


def headline(out_dir: Path) -> str:
    """The `summary` scalars of a run's metrics.json, as 'key=value' pairs."""
    summary = (read_record(out_dir) or {}).get("summary", {})
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items())


def changed_parameters(run: Run, out_dir: Path) -> list[str]:
    """The parameters that differ from those of the run's previous attempt (its state file, else params.json)."""
    before = read_state(out_dir).get("parameters")
    current = json.loads(json.dumps(plain(run.parameters)))
    if before is None:
        try:
            before = (read_json_object(out_dir / PARAMS_FILE, "run parameters") or {})["parameters"]
        except (UnreadableFile, KeyError, TypeError):
            return []
        keys = [k for k in current if k in before]  # params.json lists every parameter the notebook declares
    else:
        keys = sorted(set(before) | set(current))
    return [f"{k} (was {before.get(k)!r}, now {current.get(k)!r})" for k in keys if before.get(k) != current.get(k)]


class RunLock:
    """The exclusive lock of a run folder (see the module doc). ``acquire`` does not wait."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lock_owner(out_dir: Path) -> str | None:
    """"HOST PID" of the process that holds the run's lock now; None when nobody holds it."""
    path = Path(out_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return path.read_text().strip() or "another process"
    finally:
        os.close(fd)
    return None


def clear_run(out_dir: Path) -> None:
    """Remove everything a run wrote (``--force``); the lock file stays, held meanwhile, so nobody starts it."""
    if not out_dir.is_dir():
        return
    with RunLock(out_dir) as lock:
        if not lock.acquire():
            raise RuntimeError(f"{out_dir} is being run by {lock_owner(out_dir)}; not cleared")
        for entry in out_dir.iterdir():
            if entry.name == LOCK_FILE:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def clear_record(out_dir: Path) -> None:
    """A run's record exists only after a successful execution."""
    for name in (METRICS_FILE, PARAMS_FILE):
        (out_dir / name).unlink(missing_ok=True)
