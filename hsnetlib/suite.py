"""Batch runs of the notebook suite with papermill, and the run records the notebooks write.

Command line::

    python -m hsnetlib.suite run GRID [--only PATTERN] [--force] [--runs-dir runs]
                                      [--executor local|slurm] [--gpus 0,1,2,3] [--jobs N]
    python -m hsnetlib.suite status GRID [--only PATTERN] [--cancel]
    python -m hsnetlib.suite list GRID [--only PATTERN]
    python -m hsnetlib.suite execute GRID RUN     # one run in this process (what the executors start)

A grid is a TOML file listing notebook runs, executed in file order::

    name = "demo"                      # runs go to RUNS_DIR/demo/<run name>/
    notebooks_dir = "notebooks"        # optional; relative to the project root
    [defaults]                         # given to every run whose notebook has the parameter
    data_root = "data/synthetic"

    [[run]]
    name = "evaluate-fold{fold}-{nshot}shot"     # one run per combination of `expand`
    notebook = "02_evaluate.ipynb"               # under notebooks/
    needs = ["train-fold{fold}"]                 # runs that must have succeeded first
    expand = { fold = [0, 1, 2, 3], nshot = [1, 5] }
    parameters = { checkpoint = "{grid_dir}/train-fold{fold}/best.pt" }
    resources = { gpus = 1, time = 240 }         # overrides [resources] (the defaults of every run)

``[resources]`` and a run's ``resources`` take ``gpus`` (per run), ``cpus``, ``mem_gb``, ``time``
(minutes), ``partition``, ``account``, ``qos``, ``constraint`` (strings) and ``sbatch`` (a table of
extra sbatch options); see :class:`Resources`. The local executor uses ``gpus`` (with ``--gpus``), the
Slurm executor all of them (and needs ``time``).

Strings in ``name``, ``needs`` and ``parameters`` are formatted with the expanded values and
``{grid}`` (the grid's name) and ``{grid_dir}`` (RUNS_DIR/grid); strings in ``defaults`` with the
latter two. Every parameter a run gives explicitly must exist in its notebook's cell tagged
``parameters`` (checked with ``papermill.inspect_notebook`` before anything runs, together with simple
types); ``out_dir`` is always injected: the run's folder.

Each run executes with papermill (kernel ``hsnet``, working directory = the project root) into
RUNS_DIR/<grid>/<run>/: the executed notebook (which keeps the error of a failed cell), log.txt
(the cells' stdout/stderr, appended per attempt), suite-state.json (the run's state: see below), and
the params.json / metrics.json that the notebook writes with :func:`write_run_record` -- kept only
when the execution succeeds. Where and how runs execute (concurrently on this machine's GPUs, or as
Slurm jobs) is :mod:`hsnetlib.executors`. A run whose metrics.json exists is skipped; a failed run
does not stop the grid, runs that need it are "blocked". A summary table is printed at the end and
written to RUNS_DIR/<grid>/summary.csv; the exit status is 1 when any run failed, was blocked or did
not start.

Reruns: a plain rerun continues what an interruption (Ctrl-C, a killed machine, a preempted job) left:
a notebook that declares a ``resume`` parameter (and is not given one by the grid) gets ``"auto"``, or
for a bool parameter whether the run folder holds a training (last.pt), so its training resumes from
last.pt. A run whose parameters differ from those of its last attempt is refused (reported with the
differing keys, never mixed); ``--force`` clears the runs' folders and starts them afresh.

suite-state.json (written atomically; read by ``status`` from any shell): ``status`` (queued / running
/ done / failed / blocked; a run without one is pending), ``executor``, ``attempt``, ``parameters``,
``submitted_at`` / ``started_at`` / ``finished_at``, ``host``, ``pid``, ``slurm_job_id`` / ``job_id``,
``node``, ``cuda_visible_devices``, ``detail`` (the headline metrics or the error's line), ``log`` and,
for Slurm, ``job_log``.

Notebook-side helpers: :func:`notebook_params` (the values of a notebook's parameters, after
injection), :func:`resolve` (paths relative to the project root), :func:`output_dir` and
:func:`write_run_record`.
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import itertools
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

KERNEL_NAME = "hsnet"
NOTEBOOK_DIR = "notebooks"
PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.json"
STATE_FILE = "suite-state.json"
GRID_KEYS = {"name", "notebooks_dir", "defaults", "resources", "run"}
RUN_KEYS = {"name", "notebook", "parameters", "expand", "needs", "resources"}
# [resources] / per-run `resources`: key -> (type, smallest value); time is in minutes (contract C2)
RESOURCE_KEYS = {"gpus": (int, 0), "cpus": (int, 1), "mem_gb": (int, 1), "time": (int, 1), "partition": (str, None),
                 "account": (str, None), "qos": (str, None), "constraint": (str, None), "sbatch": (dict, None)}
SIMPLE_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list,),
                "dict": (dict,)}


class GridError(ValueError):
    """A malformed grid file (the command line exits with code 2)."""


# -- paths -----------------------------------------------------------------------------------------
def project_root() -> Path:
    """The checkout holding notebooks/ (hsnetlib is installed editable from it); else the working directory."""
    repo = Path(__file__).resolve().parent.parent
    return repo if (repo / NOTEBOOK_DIR).is_dir() else Path.cwd()


def resolve(path: str | os.PathLike) -> Path:
    """An absolute path: relative paths are taken from the project root, wherever the kernel runs."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


def output_dir(out_dir: str | os.PathLike) -> Path:
    """A notebook's run folder (resolved like :func:`resolve`), created if missing."""
    path = resolve(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def notebook_path(notebook: str, notebooks_dir: str | os.PathLike = NOTEBOOK_DIR) -> Path:
    path = resolve(notebooks_dir) / notebook
    if not path.is_file():
        raise FileNotFoundError(f"notebook {path} does not exist")
    return path


# -- grids -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Resources:
    """What one run asks for (contract C2): GPUs (per run), CPUs, memory (GB), time limit (minutes), and the
    Slurm partition / account / qos / constraint plus extra sbatch options. None: the cluster's default."""
    gpus: int = 0
    cpus: int | None = None
    mem_gb: int | None = None
    time: int | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    sbatch: dict[str, Any] = field(default_factory=dict)


def _resource_table(table: Any, where: str) -> dict[str, Any]:
    """A checked `resources` table; `where` names the grid file and the run (or [resources])."""
    if not isinstance(table, dict):
        raise GridError(f"{where}: resources must be a table, e.g. {{ gpus = 1, time = 120 }}")
    unknown = set(table) - set(RESOURCE_KEYS)
    if unknown:
        raise GridError(f"{where}: unknown resources key(s) {sorted(unknown)}; allowed: {sorted(RESOURCE_KEYS)}")
    for key, value in table.items():
        kind, least = RESOURCE_KEYS[key]
        if not isinstance(value, kind) or isinstance(value, bool) or (least is not None and value < least):
            wanted = f"an integer >= {least}" if kind is int else f"a {kind.__name__}"
            raise GridError(f"{where}: resources {key}={value!r} is not {wanted}")
    return table


@dataclass
class Run:
    """One notebook execution of a grid, after expansion."""
    name: str
    notebook: str
    parameters: dict[str, Any]
    needs: list[str] = field(default_factory=list)
    notebooks_dir: str = NOTEBOOK_DIR
    resources: Resources = field(default_factory=Resources)
    resume_type: str | None = None  # the type of the notebook's `resume` parameter, when the suite sets it

    def out_dir(self, grid_dir: Path) -> Path:
        return grid_dir / self.name


@dataclass
class Grid:
    name: str
    path: Path
    runs: list[Run]

    def dir(self, runs_dir: Path) -> Path:
        return runs_dir / self.name


def _format(value: Any, values: Mapping[str, Any]) -> Any:
    """Format strings (recursively in lists and dicts) with the run's expanded values."""
    if isinstance(value, str):
        try:
            return value.format_map(values)
        except (KeyError, IndexError, ValueError) as err:
            raise GridError(f"cannot format {value!r} with {dict(values)}: {err}") from err
    if isinstance(value, list):
        return [_format(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _format(v, values) for k, v in value.items()}
    return value


def _expand(entry: dict[str, Any], index: int, grid_name: str, grid_dir: Path, path: Path,
            notebooks_dir: str, resources: dict[str, Any]) -> list[Run]:
    unknown = set(entry) - RUN_KEYS
    if unknown:
        raise GridError(f"{path}: run #{index + 1} has unknown key(s) {sorted(unknown)}; allowed: {sorted(RUN_KEYS)}")
    for key in ("name", "notebook"):
        if not isinstance(entry.get(key), str):
            raise GridError(f"{path}: run #{index + 1} needs a string '{key}'")
    expand = entry.get("expand", {})
    if not isinstance(expand, dict) or not all(isinstance(v, list) and v for v in expand.values()):
        raise GridError(f"{path}: run {entry['name']!r}: 'expand' must map parameter names to non-empty lists")
    runs = []
    for combo in itertools.product(*expand.values()):
        values = dict(zip(expand, combo))
        context = {**values, "grid": grid_name, "grid_dir": grid_dir.as_posix()}
        parameters = {**_format(entry.get("parameters", {}), context), **values}
        name = _format(entry["name"], context)
        own = _resource_table(entry.get("resources", {}), f"{path}: run {name!r}")
        merged = {**resources, **own, "sbatch": {**resources.get("sbatch", {}), **own.get("sbatch", {})}}
        runs.append(Run(name=name, notebook=entry["notebook"], parameters=parameters,
                        needs=_format(list(entry.get("needs", [])), context), notebooks_dir=notebooks_dir,
                        resources=Resources(**merged)))
    return runs


def load_grid(path: str | os.PathLike, runs_dir: str | os.PathLike = "runs") -> Grid:
    """Read and expand a grid file; names must be unique and `needs` must point at earlier runs."""
    path = Path(path)
    if not path.is_file():
        raise GridError(f"grid file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise GridError(f"{path} is not valid TOML: {err}") from err
    unknown = set(raw) - GRID_KEYS
    if unknown:
        raise GridError(f"{path}: unknown top-level key(s) {sorted(unknown)}; allowed: {sorted(GRID_KEYS)}")
    name = raw.get("name", path.stem)
    grid_dir = resolve(runs_dir) / name  # absolute: the same parameters from any working directory or process
    notebooks_dir = raw.get("notebooks_dir", NOTEBOOK_DIR)
    resources = _resource_table(raw.get("resources", {}), f"{path}: [resources]")
    runs = [run for i, entry in enumerate(raw.get("run", []))
            for run in _expand(entry, i, name, grid_dir, path, notebooks_dir, resources)]
    if not runs:
        raise GridError(f"{path} lists no [[run]]")
    seen: set[str] = set()
    for run in runs:
        if run.name in seen:
            raise GridError(f"{path}: run name {run.name!r} occurs twice (add the expanded values to the name)")
        missing = [n for n in run.needs if n not in seen]
        if missing:
            raise GridError(f"{path}: run {run.name!r} needs {missing}, which are not earlier runs of the grid")
        seen.add(run.name)
    defaults = _format(raw.get("defaults", {}), {"grid": name, "grid_dir": grid_dir.as_posix()})
    declared_by_notebook: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        if run.notebook not in declared_by_notebook:
            declared_by_notebook[run.notebook] = notebook_parameters(run.notebook, path, run.notebooks_dir)
        declared = declared_by_notebook[run.notebook]
        _check_parameters(run, declared, path)
        run.parameters = {**{k: v for k, v in defaults.items() if k in declared}, **run.parameters,
                          "out_dir": run.out_dir(grid_dir).as_posix()}
        if "resume" in declared and "resume" not in run.parameters:
            run.resume_type = declared["resume"]["inferred_type_name"]
    return Grid(name=name, path=path, runs=runs)


def notebook_parameters(notebook: str, grid_path: Path | None = None,
                        notebooks_dir: str | os.PathLike = NOTEBOOK_DIR) -> dict[str, dict[str, Any]]:
    """The parameters declared in a notebook's cell tagged `parameters`: name -> papermill's description."""
    import papermill

    try:
        path = notebook_path(notebook, notebooks_dir)
    except FileNotFoundError as err:
        raise GridError(f"{grid_path}: {err}" if grid_path else str(err)) from err
    declared = papermill.inspect_notebook(str(path))
    if not declared:
        raise GridError(f"notebook {path} has no cell tagged 'parameters'")
    return declared


def _check_parameters(run: Run, declared: dict[str, dict[str, Any]], path: Path) -> None:
    if "out_dir" not in declared:
        raise GridError(f"notebook {run.notebook} has no 'out_dir' parameter, which the suite needs")
    for key, value in run.parameters.items():
        if key not in declared:
            raise GridError(f"{path}: run {run.name!r}: notebook {run.notebook} has no parameter {key!r} "
                            f"(it has: {', '.join(sorted(declared))})")
        types = SIMPLE_TYPES.get(declared[key]["inferred_type_name"])
        if types and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
            raise GridError(f"{path}: run {run.name!r}: parameter {key}={value!r} is not a "
                            f"{declared[key]['inferred_type_name']}, as notebook {run.notebook} declares")


def select(runs: list[Run], pattern: str | None) -> list[Run]:
    """The runs whose name matches a glob pattern (all without one)."""
    return runs if pattern is None else [r for r in runs if fnmatch.fnmatchcase(r.name, pattern)]


# -- run state -------------------------------------------------------------------------------------
def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_state(out_dir: Path) -> dict[str, Any]:
    """A run's state file (written by the executors; empty when the run never started)."""
    try:
        return json.loads((out_dir / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def update_state(out_dir: Path, **changes: Any) -> dict[str, Any]:
    """Merge `changes` into a run's state file, written atomically (status works from any shell)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {**read_state(out_dir), **changes, "updated_at": now()}
    _write_json(out_dir / STATE_FILE, state)
    return state


def where() -> dict[str, Any]:
    """Where this process runs: host, Slurm job id and node (None outside Slurm), visible GPUs (None: all)."""
    return {"host": socket.gethostname(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "node": os.environ.get("SLURMD_NODENAME"), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def rank() -> int:
    """This process's rank in a multi-GPU run (RANK, set by torchrun or the Slurm job's tasks); 0 otherwise."""
    return int(os.environ.get("RANK", "0"))


def changed_parameters(run: Run, out_dir: Path) -> list[str]:
    """The parameters that differ from those of the run's previous attempt (its state file, else params.json)."""
    before = read_state(out_dir).get("parameters")
    current = json.loads(json.dumps(_plain(run.parameters)))
    if before is None:
        try:
            before = json.loads((out_dir / PARAMS_FILE).read_text())["parameters"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            return []
        keys = [k for k in current if k in before]  # params.json lists every parameter the notebook declares
    else:
        keys = sorted(set(before) | set(current))
    return [f"{k} (was {before.get(k)!r}, now {current.get(k)!r})" for k in keys if before.get(k) != current.get(k)]


def clear_run(out_dir: Path) -> None:
    """Remove everything a run wrote (``--force``)."""
    if out_dir.is_dir():
        shutil.rmtree(out_dir)


def _clear_record(out_dir: Path) -> None:
    """A run's record exists only after a successful execution."""
    for name in (METRICS_FILE, PARAMS_FILE):
        (out_dir / name).unlink(missing_ok=True)


def resume_parameter(run: Run, out_dir: Path) -> dict[str, Any]:
    """What a notebook that declares `resume` (and is not given one by the grid) gets: "auto" (continue the
    training in its run folder if there is one), or for a bool parameter whether the folder holds one (last.pt)."""
    if run.resume_type is None:
        return {}
    if run.resume_type == "bool":
        return {"resume": (out_dir / "last.pt").is_file()}
    return {"resume": "auto"}


def _stop_children() -> None:
    """Terminate what this process started (the notebook's kernel runs in a session of its own)."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        child.terminate()
    _, alive = psutil.wait_procs(children, timeout=20)
    for child in alive:
        child.kill()


# -- execution -------------------------------------------------------------------------------------
@dataclass
class Outcome:
    run: str
    notebook: str
    status: str  # "done" | "skipped" | "failed" | "blocked" | "queued" (submitted to Slurm)
    seconds: float = 0.0
    detail: str = ""


class RunFailed(RuntimeError):
    """A run that failed (raised inside Slurm jobs, so that jobs that need it do not start)."""


def _check_kernel() -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel as err:
        raise RuntimeError(f"the Jupyter kernel {KERNEL_NAME!r} is not installed; run `make setup` "
                           f"(it runs `python -m ipykernel install --sys-prefix --name {KERNEL_NAME}`)") from err


def headline(metrics_path: Path) -> str:
    """The `summary` scalars of a run's metrics.json, as 'key=value' pairs."""
    try:
        summary = json.loads(metrics_path.read_text()).get("summary", {})
    except (OSError, json.JSONDecodeError):
        return ""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items())


def execute(run: Run, grid_dir: Path, executor: str = "local") -> Outcome:
    """Run one notebook with papermill in this process; the executed copy keeps any error.

    The main rank keeps the run's state file (running, then done or failed) and appends the cells' output
    to log.txt; other ranks of a multi-GPU run write their executed notebook and log under rank<N>/. The
    record (metrics.json, params.json) is removed unless the execution succeeds. An interruption (Ctrl-C,
    SIGTERM, a Slurm requeue) stops the kernel and leaves the run failed ("interrupted") unless a Slurm
    requeue already marked it queued; a rerun resumes its training.
    """
    import papermill

    out_dir = run.out_dir(grid_dir)
    main = rank() == 0
    files_dir = out_dir if main else out_dir / f"rank{rank()}"
    files_dir.mkdir(parents=True, exist_ok=True)
    log_path = files_dir / "log.txt"
    if main:
        _clear_record(out_dir)
        attempt = read_state(out_dir).get("attempt", 0) + 1
        update_state(out_dir, status="running", executor=executor, notebook=run.notebook, parameters=run.parameters,
                     attempt=attempt, started_at=now(), finished_at=None, detail="", pid=os.getpid(),
                     log=str(log_path), **where())
    start = time.perf_counter()
    error = ""
    try:
        with open(log_path, "a") as log:
            log.write(f"--- {now()} {run.name} on {socket.gethostname()} ---\n")
            log.flush()
            papermill.execute_notebook(
                str(notebook_path(run.notebook, run.notebooks_dir)), str(files_dir / run.notebook),
                parameters={**run.parameters, **resume_parameter(run, out_dir)}, kernel_name=KERNEL_NAME,
                cwd=str(project_root()), progress_bar=False, log_output=False, stdout_file=log, stderr_file=log,
            )
    except papermill.PapermillExecutionError as err:
        error = f"{err.ename}: {err.evalue}".strip()
    except Exception as err:  # the kernel died or is missing, ...: record it and go on with the grid
        error = f"{type(err).__name__}: {err}".strip()
    except BaseException as err:  # Ctrl-C, SIGTERM, a Slurm requeue: nothing half-recorded, a rerun resumes
        _stop_children()
        if main and read_state(out_dir).get("status") == "running":
            _clear_record(out_dir)
            update_state(out_dir, status="failed", finished_at=now(),
                         detail=f"interrupted ({type(err).__name__}); a rerun resumes it")
        raise
    seconds = time.perf_counter() - start
    if not error and main and not (out_dir / METRICS_FILE).is_file():
        error = f"the notebook finished without writing {METRICS_FILE}"
    detail = error.splitlines()[0][:200] if error else headline(out_dir / METRICS_FILE)
    if main:
        if error:
            _clear_record(out_dir)
        update_state(out_dir, status="failed" if error else "done", finished_at=now(), detail=detail)
    return Outcome(run.name, run.notebook, "failed" if error else "done", seconds, detail)


def plan(grid: Grid, grid_dir: Path, only: str | None, force: bool,
         active: Mapping[str, dict[str, Any]]) -> tuple[list[Run], list[Outcome]]:
    """The selected runs to execute, and the outcomes decided without executing: "queued" / "running" (already,
    as a Slurm job or a process: `active`, never touched), "skipped" (done), "failed" (its configuration changed
    since its last attempt: reported, never mixed; --force starts afresh). With `force` the folders of the
    runs to execute are cleared."""
    todo, decided = [], []
    for run in select(grid.runs, only):
        out_dir = run.out_dir(grid_dir)
        if run.name in active:
            state = active[run.name]
            where_ = f"Slurm job {state['job_id']}" if state.get("job_id") else f"pid {state.get('pid')} on {state.get('host')}"
            decided.append(Outcome(run.name, run.notebook, state["status"], detail=f"already {state['status']} "
                                   f"({where_}); cancel it first to start it again"))
            continue
        if force:
            clear_run(out_dir)
        elif changed := changed_parameters(run, out_dir):
            decided.append(Outcome(run.name, run.notebook, "failed", detail="configuration changed since its last "
                                   f"attempt: {'; '.join(changed)}; --force starts it afresh"))
            continue
        elif (out_dir / METRICS_FILE).is_file():
            decided.append(Outcome(run.name, run.notebook, "skipped", detail=headline(out_dir / METRICS_FILE)))
            continue
        todo.append(run)
    return todo, decided


def run_grid(grid: Grid, runs_dir: str | os.PathLike = "runs", only: str | None = None, force: bool = False,
             executor: str = "local", gpus: list[str] | None = None, jobs: int | None = None) -> list[Outcome]:
    """Execute (local) or submit (slurm) the selected runs of a grid; returns one outcome per selected run."""
    from hsnetlib import executors

    _check_kernel()
    grid_dir = grid.dir(resolve(runs_dir))
    todo, decided = plan(grid, grid_dir, only, force, executors.active_runs(grid, grid_dir))
    if executor == "slurm":
        outcomes = executors.submit_slurm(grid, grid_dir, todo, decided)
    else:
        outcomes = executors.run_local(grid, grid_dir, todo, decided, gpus, jobs)
    order = {r.name: i for i, r in enumerate(grid.runs)}
    return sorted(outcomes, key=lambda o: order[o.run])


def summary_table(outcomes: list[Outcome]):
    import pandas as pd

    return pd.DataFrame([vars(o) for o in outcomes], columns=["run", "notebook", "status", "seconds", "detail"])


# -- run records -----------------------------------------------------------------------------------
def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """JSON-ready values: numpy/torch scalars to Python, tuples to lists, paths to strings, NaN to None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (metrics.json marks a run as done, so it is never half written)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_plain(data), f, indent=2, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def checkpoint_record(checkpoint: str | os.PathLike | None) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    path = resolve(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return {"path": str(path), "sha256": sha256(path), "bytes": path.stat().st_size}


def _gpu_names() -> list[str]:
    import torch

    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def write_run_record(out_dir: str | os.PathLike, notebook: str, params: Mapping[str, Any],
                     metrics: Mapping[str, Any], checkpoint: str | os.PathLike | None = None,
                     checkpoints: Mapping[str, str | os.PathLike] | None = None, seed: int | None = None,
                     device: Any = None) -> Path:
    """Write out_dir/params.json and out_dir/metrics.json with provenance; returns the metrics path.

    metrics.json holds ``metrics`` (the sections :mod:`hsnetlib.results` reads: ``summary``,
    ``evaluations``, ``trainings``, ``profiles``) plus the notebook, its parameters, the seed, the
    checkpoint(s) used or written (path and sha256), :func:`hsnetlib.utils.env_info` (code version,
    library versions, device) and where the run ran (:func:`where`: host, Slurm job id and node, the
    visible GPUs and their names). In a multi-GPU run only rank 0 writes (the others return the path).
    """
    from hsnetlib.utils import env_info

    out_dir = resolve(out_dir)
    reserved = {"notebook", "parameters", "seed", "checkpoint", "checkpoints", "provenance"} & set(metrics)
    if reserved:
        raise ValueError(f"metrics may not use the reserved key(s) {sorted(reserved)}")
    if rank() != 0:
        return out_dir / METRICS_FILE
    out_dir.mkdir(parents=True, exist_ok=True)
    provenance = {**env_info(device), **where(), "gpus": _gpu_names(), "written_at": now()}
    _write_json(out_dir / PARAMS_FILE, {"notebook": notebook, "parameters": dict(params), "seed": seed})
    record = {
        "notebook": notebook, "parameters": dict(params), "seed": seed,
        "checkpoint": checkpoint_record(checkpoint),
        "checkpoints": {k: checkpoint_record(v) for k, v in (checkpoints or {}).items()},
        "provenance": provenance, **metrics,
    }
    _write_json(out_dir / METRICS_FILE, record)
    return out_dir / METRICS_FILE


def notebook_params(notebook: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The current values (defaults or injected) of the parameters a notebook declares.

    Call it in the notebook right after the parameters cell: ``params = notebook_params("x.ipynb", globals())``.
    """
    names = notebook_parameters(notebook)
    missing = [n for n in names if n not in namespace]
    if missing:
        raise NameError(f"parameters {missing} of {notebook} are not defined; run its parameters cell first")
    return {n: namespace[n] for n in names}


# -- command line ----------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hsnetlib.suite", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    commands = (("run", "execute a grid (locally, or submit it to Slurm)"), ("list", "show a grid's expanded runs"),
                ("status", "show the state of every run of a grid"),
                ("execute", "execute one run of a grid in this process (what the executors start)"))
    for name, help_text in commands:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("grid", help="grid file (TOML), e.g. grids/demo.toml")
        if name == "execute":
            p.add_argument("run", help="the run's name")
        else:
            p.add_argument("--only", metavar="PATTERN", help="only runs whose name matches this glob, e.g. 'train-*'")
        p.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs/)")
        if name == "run":
            p.add_argument("--force", action="store_true",
                           help="clear the runs' folders and start them afresh (else done runs are skipped and "
                                "interrupted trainings resume)")
            p.add_argument("--executor", choices=("local", "slurm"), default="local",
                           help="local: on this machine (default); slurm: one sbatch job per run, via submitit")
            p.add_argument("--gpus", type=lambda s: [g for g in s.split(",") if g], metavar="IDS",
                           help="local: GPUs to share out, e.g. 0,1,2,3; a run takes resources.gpus of them")
            p.add_argument("--jobs", type=int, metavar="N",
                           help="local: runs at once (default: the number of --gpus, else 1)")
        if name == "status":
            p.add_argument("--cancel", action="store_true", help="scancel the grid's queued and running Slurm jobs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        grid = load_grid(args.grid, args.runs_dir)
    except (GridError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    grid_dir = grid.dir(resolve(args.runs_dir))
    if args.command == "list":
        for run in select(grid.runs, args.only):
            print(f"{run.name}\t{run.notebook}\t{json.dumps(run.parameters)}")
        return 0
    if args.command == "execute":
        runs = [r for r in grid.runs if r.name == args.run]
        if not runs:
            print(f"error: {grid.path} has no run {args.run!r}", file=sys.stderr)
            return 2
        try:
            return 0 if execute(runs[0], grid_dir).status == "done" else 1
        except KeyboardInterrupt:  # recorded as interrupted; the executor that started it reports it
            return 130
    if args.command == "status":
        return _status(grid, grid_dir, args.only, args.cancel)
    return _run(grid, args)


def _status(grid: Grid, grid_dir: Path, only: str | None, cancel: bool) -> int:
    from hsnetlib import executors

    if cancel:
        cancelled = executors.cancel(grid, grid_dir, only)
        print(f"cancelled {len(cancelled)} job(s): {' '.join(cancelled)}")
    table = executors.grid_status(grid, grid_dir, only)
    print(table.to_string(index=False, na_rep="", float_format=lambda x: f"{x:.0f}s",
                          formatters={"detail": lambda d: d[:80]}))
    print("\n" + ", ".join(f"{n} {s}" for s, n in table["status"].value_counts().items()))
    return 0


def _run(grid: Grid, args: argparse.Namespace) -> int:
    if args.executor == "slurm" and (args.gpus or args.jobs):
        print("error: --gpus and --jobs are for the local executor; Slurm takes resources from the grid",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        outcomes = run_grid(grid, args.runs_dir, args.only, args.force, args.executor, args.gpus, args.jobs)
    except (RuntimeError, GridError) as err:  # no kernel, no Slurm, a run without a time limit for Slurm
        print(f"error: {err}", file=sys.stderr)
        return 2
    table = summary_table(outcomes)
    grid_dir = grid.dir(resolve(args.runs_dir))
    grid_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(grid_dir / "summary.csv", index=False)
    print(f"\ngrid {grid.name} ({grid.path}): {len(outcomes)} run(s) in {time.perf_counter() - start:.0f}s")
    shown = table.assign(detail=table["detail"].str.slice(0, 90))
    print(shown.to_string(index=False, float_format=lambda x: f"{x:.0f}"))
    if args.executor == "slurm":
        print(f"\nsubmitted; follow it with: python -m hsnetlib.suite status {grid.path} --runs-dir {args.runs_dir}")
    bad = table["status"].isin(["failed", "blocked", "pending"]).sum()
    if bad:
        print(f"{bad} run(s) failed, blocked or not started; the executed notebooks in {grid_dir} keep the errors")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
