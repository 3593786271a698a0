"""Grid files: parsing, validation and expansion into runs.

A grid is a TOML file listing notebook runs, executed in file order::

    name = "demo"                      # runs go to RUNS_DIR/demo/<run name>/
    notebooks_dir = "notebooks"        # optional; relative to the project root
    [defaults]                         # given to every run whose notebook has the parameter
    data_root = "data/synthetic"

    [[run]]
    name = "evaluate-fold{fold}-{nshot}shot"     # one run per combination of `expand`
    notebook = "02_evaluate.ipynb"               # under notebooks/
    needs = ["train-fold{fold}"]                 # runs that must have succeeded first ("evaluate-*": every
                                                 # earlier run the pattern matches)
    expand = { fold = [0, 1, 2, 3], nshot = [1, 5] }
    parameters = { checkpoint = "{grid_dir}/train-fold{fold}/best.pt" }
    resources = { gpus = 1, time = 240 }         # overrides [resources] (the defaults of every run)

``[resources]`` and a run's ``resources`` take ``gpus`` (per run, over all its nodes), ``nodes``, ``cpus``
(per task), ``mem_gb`` (per node), ``time`` (minutes), ``partition``, ``account``, ``qos``, ``constraint``
(strings) and ``sbatch`` (a table of extra sbatch options); see :class:`Resources`.

Strings in ``name``, ``needs`` and ``parameters`` are formatted with the expanded values and ``{grid}`` (the
grid's name) and ``{grid_dir}`` (RUNS_DIR/grid); strings in ``defaults`` with the latter two. A run's name is
a plain file name (its folder). Every parameter a run gives, and every default, must be declared by the cell
tagged ``parameters`` of a notebook of the grid, with a value of the type declared there (checked with
``papermill.inspect_notebook`` before anything runs); ``out_dir`` is always injected: the run's folder.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hsnetlib.suite.paths import NOTEBOOK_DIR, notebook_path, resolve

GRID_KEYS = {"name", "notebooks_dir", "defaults", "resources", "run"}
RUN_KEYS = {"name", "notebook", "parameters", "expand", "needs", "resources"}
# [resources] / per-run `resources`: key -> (type, smallest value); time is in minutes
RESOURCE_KEYS = {"gpus": (int, 0), "nodes": (int, 1), "cpus": (int, 1), "mem_gb": (int, 1), "time": (int, 1),
                 "partition": (str, None), "account": (str, None), "qos": (str, None), "constraint": (str, None),
                 "sbatch": (dict, None)}
SIMPLE_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list,),
                "dict": (dict,)}


class GridError(ValueError):
    """A malformed grid file, or one the chosen executor cannot run (the command line exits with code 2)."""


@dataclass(frozen=True)
class Resources:
    """What one run asks for: GPUs (in all), nodes, CPUs per task, memory per node (GB), time limit (minutes),
    and the Slurm partition / account / qos / constraint plus extra sbatch options. None: the cluster's default."""
    gpus: int = 0
    nodes: int = 1
    cpus: int | None = None
    mem_gb: int | None = None
    time: int | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    sbatch: dict[str, Any] = field(default_factory=dict)

    @property
    def gpus_per_node(self) -> int:
        return self.gpus // self.nodes

    @property
    def tasks_per_node(self) -> int:
        """One task (process) per GPU; one task on a node without GPUs."""
        return max(self.gpus_per_node, 1)


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
    """One notebook execution of a grid, after expansion. :meth:`to_dict` / :meth:`from_dict` are the hand-off
    from an executor to the process that executes it (the run folder's suite-run.json, locally and on Slurm)."""
    name: str
    notebook: str
    parameters: dict[str, Any]
    needs: list[str] = field(default_factory=list)
    notebooks_dir: str = NOTEBOOK_DIR
    resources: Resources = field(default_factory=Resources)
    resume_type: str | None = None  # the type of the notebook's `resume` parameter, when the suite sets it

    def out_dir(self, grid_dir: Path) -> Path:
        return grid_dir / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Run":
        return cls(**{**data, "resources": Resources(**data.get("resources", {}))})


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


def check_run_name(name: str, where: str) -> None:
    """A run's name is its folder: a plain path component (not empty, ".", "..", absolute or with a separator)."""
    bad = (not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name
           or (os.altsep and os.altsep in name) or name != name.strip())
    if bad:
        raise GridError(f"{where}: run name {name!r} is not a plain folder name (no '/', '..', leading or "
                        "trailing spaces, not empty)")


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
        check_run_name(name, f"{path}: run #{index + 1}")
        own = _resource_table(entry.get("resources", {}), f"{path}: run {name!r}")
        merged = Resources(**{**resources, **own, "sbatch": {**resources.get("sbatch", {}), **own.get("sbatch", {})}})
        if merged.gpus % merged.nodes:
            raise GridError(f"{path}: run {name!r}: resources gpus={merged.gpus} do not divide over "
                            f"nodes={merged.nodes} (the same number of GPUs on every node)")
        runs.append(Run(name=name, notebook=entry["notebook"], parameters=parameters,
                        needs=_format(list(entry.get("needs", [])), context), notebooks_dir=notebooks_dir,
                        resources=merged))
    return runs


def _is_pattern(need: str) -> bool:
    return any(c in need for c in "*?[")


def load_grid(path: str | os.PathLike, runs_dir: str | os.PathLike = "runs") -> Grid:
    """Read, check and expand a grid file; names must be unique and `needs` must point at earlier runs."""
    path = Path(path)
    if not path.is_file():
        raise GridError(f"grid file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise GridError(f"{path} is not valid TOML: {err}") from err
    unknown = set(raw) - GRID_KEYS
    if unknown:
        raise GridError(f"{path}: unknown top-level key(s) {sorted(unknown)}; allowed: {sorted(GRID_KEYS)}")
    name = raw.get("name", path.stem)
    if not isinstance(name, str):
        raise GridError(f"{path}: name must be a string")
    check_run_name(name, f"{path}: the grid's name")
    grid_dir = resolve(runs_dir) / name  # absolute: the same parameters from any working directory or process
    notebooks_dir = raw.get("notebooks_dir", NOTEBOOK_DIR)
    resources = _resource_table(raw.get("resources", {}), f"{path}: [resources]")
    runs = [run for i, entry in enumerate(raw.get("run", []))
            for run in _expand(entry, i, name, grid_dir, path, notebooks_dir, resources)]
    if not runs:
        raise GridError(f"{path} lists no [[run]]")
    seen: dict[str, None] = {}  # earlier run names, in grid order
    for i, run in enumerate(runs):
        if run.name in seen:
            raise GridError(f"{path}: run name {run.name!r} occurs twice (add the expanded values to the name)")
        needs = [m for n in run.needs for m in (fnmatch.filter(seen, n) if _is_pattern(n) else [n])]
        missing = [n for n in run.needs if not (fnmatch.filter(seen, n) if _is_pattern(n) else n in seen)]
        if missing:
            raise GridError(f"{path}: run {run.name!r} needs {missing}, which are not earlier runs of the grid")
        runs[i] = dataclasses.replace(run, needs=list(dict.fromkeys(needs)))
        seen[run.name] = None
    defaults = raw.get("defaults", {})
    if not isinstance(defaults, dict):
        raise GridError(f"{path}: [defaults] must be a table")
    defaults = _format(defaults, {"grid": name, "grid_dir": grid_dir.as_posix()})
    declared_by_notebook = {nb: notebook_parameters(nb, path, notebooks_dir) for nb in dict.fromkeys(r.notebook for r in runs)}
    _check_defaults(defaults, declared_by_notebook, path)
    for run in runs:
        declared = declared_by_notebook[run.notebook]
        check_parameters(run.parameters, declared, f"{path}: run {run.name!r}", run.notebook)
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
    if "out_dir" not in declared:
        raise GridError(f"notebook {path} has no 'out_dir' parameter, which the suite needs")
    return declared


def check_value(key: str, value: Any, declared: dict[str, dict[str, Any]], where: str, notebook: str) -> None:
    """`value` has the simple type (int, float, str, bool, list, dict) the notebook declares for `key`."""
    wanted = declared[key]["inferred_type_name"]
    types = SIMPLE_TYPES.get(wanted)
    if types and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
        raise GridError(f"{where}: parameter {key}={value!r} is not a {wanted}, as notebook {notebook} declares")


def check_parameters(parameters: Mapping[str, Any], declared: dict[str, dict[str, Any]], where: str,
                     notebook: str) -> None:
    for key, value in parameters.items():
        if key not in declared:
            raise GridError(f"{where}: notebook {notebook} has no parameter {key!r} "
                            f"(it has: {', '.join(sorted(declared))})")
        check_value(key, value, declared, where, notebook)


def _check_defaults(defaults: Mapping[str, Any], declared_by_notebook: dict[str, dict[str, dict[str, Any]]],
                    path: Path) -> None:
    """Every default reaches some notebook of the grid (else it is a misspelling) with the type it declares."""
    for key, value in defaults.items():
        takers = [nb for nb, declared in declared_by_notebook.items() if key in declared]
        if not takers:
            raise GridError(f"{path}: [defaults] {key!r} is a parameter of no notebook of the grid "
                            f"({', '.join(declared_by_notebook)}); misspelt?")
        for notebook in takers:
            check_value(key, value, declared_by_notebook[notebook], f"{path}: [defaults]", notebook)


def select(runs: list[Run], pattern: str | None) -> list[Run]:
    """The runs whose name matches a glob pattern (all without one)."""
    return runs if pattern is None else [r for r in runs if fnmatch.fnmatchcase(r.name, pattern)]
