"""Executing one run: its notebook with papermill in this process, owned through the run folder's lock.

The hand-off from an executor (local or Slurm) to the process that executes a run is one file, the run
folder's ``suite-run.json`` (:func:`write_spec` / :func:`read_spec`: the expanded :class:`~hsnetlib.suite.grid.Run`
and its grid folder); ``python -m hsnetlib.suite execute RUN_FOLDER`` and the Slurm job both start from it.

Each run executes with papermill (kernel ``hsnet``, working directory = the project root) into its folder:
the executed notebook (written atomically at every save, so it is never truncated JSON, and it keeps the error
of a failed cell), log.txt (the cells' stdout/stderr, appended per attempt), suite-state.json, and the
params.json / metrics.json the notebook writes (:mod:`hsnetlib.suite.records`) -- kept only when the execution
succeeds. A notebook that declares a ``resume`` parameter (and is not given one by the grid) gets ``"auto"``,
or for a bool parameter whether the run folder holds a training (last.pt), so a rerun resumes its training.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from hsnetlib.suite.grid import Run
from hsnetlib.suite.jsonfile import UnreadableFile, read_json_in, write_json
from hsnetlib.suite.paths import notebook_path, project_root
from hsnetlib.suite.state import (METRICS_FILE, SPEC_FILE, RunLock, clear_record, headline, is_done, lock_owner,
                                  now, rank, read_state, update_state, where)
from hsnetlib.utils import atomic_write

KERNEL_NAME = "hsnet"
# Kernels talk over IPC sockets in a folder of their own, not TCP: runs started at once never race for a port
# ("Address already in use": the kernel died before replying), and the kernel prints no "running over TCP
# without encryption" warning.
KERNEL_TRANSPORT = "ipc"


@contextlib.contextmanager
def kernel_options() -> Iterator[dict[str, Any]]:
    """papermill's keyword arguments for one notebook on the suite's kernel: its name, and the IPC transport with
    the kernel's sockets in a temporary folder of this call (removed afterwards)."""
    from traitlets.config import Config

    with tempfile.TemporaryDirectory(prefix="hsnet-kernel-") as sockets:
        yield {"kernel_name": KERNEL_NAME, "config": Config(
            {"KernelManager": {"transport": KERNEL_TRANSPORT, "ip": os.path.join(sockets, "kernel")}})}


EXIT_OWNED = 75  # `execute` exits with this when another process owns the run (its lock is held)


@dataclass
class Outcome:
    run: str
    notebook: str
    status: str  # "done" | "skipped" | "failed" | "blocked" | "queued" | "running" | "pending"
    seconds: float = 0.0
    detail: str = ""


class RunFailed(RuntimeError):
    """A run that failed (raised inside Slurm jobs, so that jobs that need it do not start)."""


def check_kernel() -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel as err:
        raise RuntimeError(f"the Jupyter kernel {KERNEL_NAME!r} is not installed; run `make setup` "
                           f"(it runs `python -m ipykernel install --sys-prefix --name {KERNEL_NAME}`)") from err


# -- the hand-off ----------------------------------------------------------------------------------
def write_spec(run: Run, grid_dir: Path, executor: str) -> Path:
    """The run folder's suite-run.json: what the process that executes the run reads."""
    return write_json(run.out_dir(grid_dir) / SPEC_FILE,
                      {"run": run.to_dict(), "grid_dir": str(grid_dir), "executor": executor})


def read_spec(path: str | os.PathLike) -> tuple[Run, Path, str]:
    """(run, grid folder, executor) from a run folder's suite-run.json (or the folder itself)."""
    path, spec = read_json_in(path, SPEC_FILE, "run hand-off",
                              " does not exist (an executor writes it before it starts the run)")
    try:
        return Run.from_dict(spec["run"]), Path(spec["grid_dir"]), spec["executor"]
    except (KeyError, TypeError) as err:
        raise UnreadableFile(f"{path}: unreadable run hand-off ({type(err).__name__}: {err})") from err


# -- execution -------------------------------------------------------------------------------------
def resume_parameter(run: Run, out_dir: Path) -> dict[str, Any]:
    """What a notebook that declares `resume` (and is not given one by the grid) gets: "auto" (continue the
    training in its run folder if there is one), or for a bool parameter whether the folder holds one (last.pt)."""
    if run.resume_type is None:
        return {}
    if run.resume_type == "bool":
        return {"resume": (out_dir / "last.pt").is_file()}
    return {"resume": "auto"}


def interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def honour_stop_signals() -> None:
    """Ctrl-C and SIGTERM interrupt this process, whatever it inherited (a suite started in the background
    has SIGINT ignored, and its children inherit that)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)


def _stop_children() -> None:
    """Terminate what this process started (the notebook's kernel runs in a session of its own)."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        child.terminate()
    _, alive = psutil.wait_procs(children, timeout=20)
    for child in alive:
        child.kill()


class _AtomicNotebookWrites:
    """papermill's local writer, writing each save of the executed notebook atomically."""

    def __init__(self, local: Any):
        self.local = local

    def __getattr__(self, name: str) -> Any:
        return getattr(self.local, name)

    def write(self, buf: str, path: str) -> None:
        atomic_write(path, buf)


def _atomic_notebook_writes() -> None:
    """papermill writes local notebooks with its "local" handler (the last one registered under that scheme:
    its registry is LIFO, so the entry is wrapped in place)."""
    from papermill.iorw import papermill_io

    for i, (scheme, handler) in enumerate(papermill_io._handlers):
        if scheme == "local" and not isinstance(handler, _AtomicNotebookWrites):
            papermill_io._handlers[i] = (scheme, _AtomicNotebookWrites(handler))


def _set_state(out_dir: Path, **changes: Any) -> str:
    """update_state, telling (instead of raising) why the state could not be written: the error's line."""
    try:
        update_state(out_dir, **changes)
        return ""
    except OSError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return str(err)


def execute(run: Run, grid_dir: Path, executor: str = "local") -> Outcome:
    """Run one notebook with papermill in this process; the executed copy keeps any error.

    The main rank owns the run (its lock; another owner: outcome "running", nothing touched), keeps the run's
    state file (running, then done or failed) and appends the cells' output to log.txt; other ranks of a
    multi-GPU run write their executed notebook and log under rank<N>/. The record (metrics.json,
    params.json) is removed unless the execution succeeds. An interruption (Ctrl-C, SIGTERM, a Slurm
    requeue) stops the kernel and leaves the run failed ("interrupted") unless a Slurm requeue already
    marked it queued; a rerun resumes its training.
    """
    out_dir = run.out_dir(grid_dir)
    main = rank() == 0
    lock = RunLock(out_dir)
    if main and not lock.acquire():
        return Outcome(run.name, run.notebook, "running", detail=f"already running ({lock_owner(out_dir)}); "
                       "not started a second time")
    try:
        return _execute_owned(run, out_dir, main, executor)
    finally:
        lock.release()


def _execute_owned(run: Run, out_dir: Path, main: bool, executor: str) -> Outcome:
    import papermill

    _atomic_notebook_writes()
    files_dir = out_dir if main else out_dir / f"rank{rank()}"
    files_dir.mkdir(parents=True, exist_ok=True)
    log_path = files_dir / "log.txt"
    if main:
        clear_record(out_dir)
        try:
            attempt = read_state(out_dir).get("attempt", 0) + 1
        except UnreadableFile:
            attempt = 1
        update_state(out_dir, status="running", executor=executor, notebook=run.notebook, parameters=run.parameters,
                     attempt=attempt, started_at=now(), finished_at=None, detail="", pid=os.getpid(),
                     log=str(log_path), **where())
    start = time.perf_counter()
    error = ""
    try:
        with open(log_path, "a") as log, kernel_options() as kernel:
            log.write(f"--- {now()} {run.name} on {socket.gethostname()} ---\n")
            log.flush()
            papermill.execute_notebook(
                str(notebook_path(run.notebook, run.notebooks_dir)), str(files_dir / run.notebook),
                parameters={**run.parameters, **resume_parameter(run, out_dir)}, **kernel,
                cwd=str(project_root()), progress_bar=False, log_output=False, stdout_file=log, stderr_file=log,
            )
    except papermill.PapermillExecutionError as err:
        error = f"{err.ename}: {err.evalue}".strip()
    except Exception as err:  # the kernel died or is missing, a full disk, ...: record it and go on with the grid
        error = f"{type(err).__name__}: {err}".strip()
    except BaseException as err:  # Ctrl-C, SIGTERM, a Slurm requeue: nothing half-recorded, a rerun resumes
        _stop_children()
        if main:
            clear_record(out_dir)
            try:
                requeued = read_state(out_dir).get("status") != "running"
            except UnreadableFile:
                requeued = False
            if not requeued:
                _set_state(out_dir, status="failed", finished_at=now(),
                           detail=f"interrupted ({type(err).__name__}); a rerun resumes it")
        raise
    seconds = time.perf_counter() - start
    if not error and main and not is_done(out_dir):
        error = f"the notebook finished without writing a readable {METRICS_FILE}"
    detail = error.splitlines()[0][:200] if error else headline(out_dir)
    if main:
        if error:
            clear_record(out_dir)
        unwritten = _set_state(out_dir, status="failed" if error else "done", finished_at=now(), detail=detail)
        if unwritten:
            clear_record(out_dir)
            error, detail = unwritten, unwritten
    return Outcome(run.name, run.notebook, "failed" if error else "done", seconds, detail)
