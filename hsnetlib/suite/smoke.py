"""Smoke runs: every run of a grid executed for real -- papermill, the same notebooks, ``needs``, run records,
the results run -- at a tiny budget on CPU, on the synthetic benchmark in the layouts the grid uses, into a
runs folder of its own (RUNS_DIR/smoke/<grid>/), to learn which runs would fail before GPU-days are spent::

    python -m hsnetlib.suite run grids/paper.toml --smoke

The budget is :data:`SMOKE_PARAMETERS`, one table of notebook parameter -> smoke value (applied to every run
whose notebook declares the parameter with that value's type; over the grid's values). Strings are formatted
with ``{grid_dir}`` (the smoke grid's folder). Each benchmark is smoked on the synthetic layout
:func:`synthetic_layout` finds for it, in the notebooks' own synthetic data root (generated once per clone);
a benchmark without one fails its runs with an error that says so. :func:`representatives` picks the runs
that still execute every kind of run of a grid (``make test`` smokes those of grids/paper.toml).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from hsnetlib.suite.grid import SIMPLE_TYPES, Grid, Run, notebook_parameters

SMOKE_DIR = "smoke"


# The tiny budget: notebook parameter -> smoke value.
SMOKE_PARAMETERS: dict[str, Any] = {
    "synthetic": True,                       # the synthetic benchmark, generated on demand ...
    "data_root": "data/synthetic",           # ... once per clone: the notebooks' own synthetic root
    "weights": "none",                       # random backbone weights (no download)
    "device": "cpu",
    "img_size": 32,
    "profile_img_size": 32,
    "profile_repeats": 1,
    "epochs": 1,
    "train_episodes": 2,
    "val_episodes": 2,
    "bsz": 2,
    "episodes": 2,                           # evaluation episodes per shot
    "show_episodes": [0],                    # the episodes a visualisation draws
    "max_layers": 1,
    "train_cache": "{grid_dir}/train-cache",
    "results_dir": "{grid_dir}/results",     # never the project's results/
}


def runs_dir(runs: str | os.PathLike) -> Path:
    """Where the smoke runs of grids go for a runs folder: RUNS_DIR/smoke."""
    return Path(runs) / SMOKE_DIR


def synthetic_layout(benchmark: str) -> str | None:
    """The synthetic layout that stands in for `benchmark` (its ``BenchmarkSpec.synthetic`` when the notebooks
    generate it; None: they generate none for it yet, or the benchmark is not registered)."""
    from hsnetlib.data import list_benchmarks
    from hsnetlib.suite.notebook import synthetic_layout as notebook_layout

    return notebook_layout(benchmark) if benchmark in list_benchmarks() else None


def _smoke_value(value: Any, declared_type: str, context: dict[str, str]) -> tuple[bool, Any]:
    types = SIMPLE_TYPES.get(declared_type)
    if types and not isinstance(value, types):
        return False, None
    return True, value.format_map(context) if isinstance(value, str) else value


def smoke_run(run: Run, grid_dir: Path, declared: dict[str, dict[str, Any]]) -> Run:
    """`run` at the smoke budget (its grid already expanded into the smoke runs folder)."""
    context = {"grid_dir": grid_dir.as_posix()}
    parameters = dict(run.parameters)
    for key, value in SMOKE_PARAMETERS.items():
        if key in declared:
            applies, smoked = _smoke_value(value, declared[key]["inferred_type_name"], context)
            if applies:
                parameters[key] = smoked
    return dataclasses.replace(run, parameters=parameters)


def smoke_grid(grid: Grid) -> Grid:
    """The grid's runs at the smoke budget; `grid` must have been loaded with runs_dir(RUNS_DIR)."""
    grid_dir = Path(grid.runs[0].parameters["out_dir"]).parent
    declared = {nb: notebook_parameters(nb, grid.path, r.notebooks_dir)
                for nb, r in {r.notebook: r for r in grid.runs}.items()}
    return dataclasses.replace(grid, runs=[smoke_run(r, grid_dir, declared[r.notebook]) for r in grid.runs])


def unsmokable(grid: Grid) -> dict[str, str]:
    """Run name -> why it cannot be smoked here (its benchmark has no synthetic layout yet)."""
    from hsnetlib.suite.notebook import SYNTHETIC

    return {r.name: f"no synthetic {r.parameters['benchmark']!r} layout (the notebooks generate "
                    f"{', '.join(SYNTHETIC)})"
            for r in grid.runs if "benchmark" in r.parameters and synthetic_layout(r.parameters["benchmark"]) is None}


def report(table) -> str:
    """The smoke's verdict from a run summary table: the runs that would fail (or be blocked), else all clear."""
    bad = table[table["status"].isin(["failed", "blocked", "pending"])]
    if bad.empty:
        return f"smoke: all {len(table)} run(s) ran through"
    lines = [f"smoke: {len(bad)} of {len(table)} run(s) would fail:"]
    lines += [f"  {row.run} ({row.status}): {row.detail}" for row in bad.itertuples()]
    return "\n".join(lines)


# Notable options: the notebook parameters whose values take a code path of their own -- another backbone's taps
# and level schedule (vgg16, resnet50, resnet101), the original or separable 4D kernel, a fine-tuned backbone, no
# support masking, Table A1's scoring without the ignore label, scoring at the query's original size, a K-shot
# count (10-shot: K supports averaged per episode). Values that only change sizes along one code path
# (hypercorrelation subsets, pyramid levels, layers per block) are not notable: their study notebooks need every
# such training anyway. A list-valued option (shots) contributes each of its values.
NOTABLE = ("backbone", "kernel", "finetune_backbone", "support_masking", "ignore_label", "original_size", "shots")


def _features(run: Run) -> set[str]:
    """What `run` exercises: its benchmark and every notable option value, each a "notebook:key=value" string."""
    values = [("benchmark", run.parameters.get("benchmark"))]
    for key in NOTABLE:
        value = run.parameters.get(key)
        values += [(key, v) for v in value] if isinstance(value, list) else [(key, value)] if key in run.parameters else []
    return {f"{run.notebook}:{key}={value!r}" for key, value in values}


def representatives(grid: Grid) -> list[str]:
    """The runs of `grid` that exercise every notebook with every benchmark and every notable option value it is
    run with (the first run of the grid that brings a new one; benchmarks and options are separate code paths, so
    they are covered one by one, not in every combination), with the runs they need, in grid order: the names
    of a smaller smoke that still executes every kind of run."""
    covered: set[str] = set()
    chosen: list[str] = []
    summaries = {r.name for i, r in enumerate(grid.runs) if i and len(r.needs) == i}  # needs = ["*"]: results
    for run in grid.runs:
        new = _features(run) - covered
        if new:
            covered |= new
            chosen.append(run.name)
    by_name = {r.name: r for r in grid.runs}
    needed, todo = set(), chosen
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo += [] if name in summaries else by_name[name].needs  # a summary: of the representatives only
    return [r.name for r in grid.runs if r.name in needed]


def subgrid(grid: Grid, names: list[str]) -> Grid:
    """The runs of `grid` named in `names`, each needing only those of its needs that are among them."""
    keep = set(names)
    return dataclasses.replace(grid, runs=[dataclasses.replace(r, needs=[n for n in r.needs if n in keep])
                                           for r in grid.runs if r.name in keep])
