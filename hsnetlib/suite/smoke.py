"""Smoke runs: every run of a grid executed for real -- papermill, the same notebooks, ``needs``, run records,
the results run -- at a tiny budget on CPU, on the synthetic benchmark in the layouts the grid uses, into a
runs folder of its own (RUNS_DIR/smoke/<grid>/), to learn which runs would fail before GPU-days are spent::

    python -m hsnetlib.suite run grids/paper.toml --smoke

The budget is :data:`SMOKE_PARAMETERS`, one table of notebook parameter -> smoke value (applied to every run
whose notebook declares the parameter with that value's type; over the grid's values). Strings are formatted
with ``{grid_dir}`` (the smoke grid's folder) and ``{smoke_dir}`` (RUNS_DIR/smoke). Each benchmark is smoked
on the synthetic layout :func:`synthetic_layout` finds for it; a benchmark without one fails its runs with an
error that says so.
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
    "data_root": "{smoke_dir}/data",         # ... once for every smoked grid
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
    """The synthetic layout that stands in for `benchmark` (its ``BenchmarkSpec.synthetic``; None: the generator
    has none yet, or the benchmark is not registered)."""
    from hsnetlib import synthetic
    from hsnetlib.data import get_benchmark, list_benchmarks

    layout = get_benchmark(benchmark).synthetic if benchmark in list_benchmarks() else None
    return layout if layout in synthetic.LAYOUTS else None


def _smoke_value(value: Any, declared_type: str, context: dict[str, str]) -> tuple[bool, Any]:
    types = SIMPLE_TYPES.get(declared_type)
    if types and not isinstance(value, types):
        return False, None
    return True, value.format_map(context) if isinstance(value, str) else value


def smoke_run(run: Run, grid_dir: Path, declared: dict[str, dict[str, Any]]) -> Run:
    """`run` at the smoke budget (its grid already expanded into the smoke runs folder)."""
    context = {"grid_dir": grid_dir.as_posix(), "smoke_dir": grid_dir.parent.as_posix()}
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
    from hsnetlib import synthetic

    return {r.name: f"no synthetic {r.parameters['benchmark']!r} layout (hsnetlib.synthetic has "
                    f"{', '.join(synthetic.LAYOUTS)})"
            for r in grid.runs if "benchmark" in r.parameters and synthetic_layout(r.parameters["benchmark"]) is None}


def report(table) -> str:
    """The smoke's verdict from a run summary table: the runs that would fail (or be blocked), else all clear."""
    bad = table[table["status"].isin(["failed", "blocked", "pending"])]
    if bad.empty:
        return f"smoke: all {len(table)} run(s) ran through"
    lines = [f"smoke: {len(bad)} of {len(table)} run(s) would fail:"]
    lines += [f"  {row.run} ({row.status}): {row.detail}" for row in bad.itertuples()]
    return "\n".join(lines)


# The options that make a run of a notebook different to smoke (other than the notebook and the benchmark).
NOTABLE = ("backbone", "shots", "ignore_label", "original_size", "hypercorrelation", "pyramid", "kernel",
           "block_layers", "finetune_backbone", "support_masking")


def representatives(grid: Grid) -> list[str]:
    """One run of every distinct (notebook, benchmark, notable options) combination of `grid`, with the runs
    they need, in grid order: the names of a smaller smoke that still executes every kind of run."""
    import json

    chosen: dict[str, str] = {}
    for run in grid.runs:
        key = json.dumps([run.notebook, run.parameters.get("benchmark"),
                          {k: run.parameters[k] for k in NOTABLE if k in run.parameters}], sort_keys=True)
        chosen.setdefault(key, run.name)
    by_name = {r.name: r for r in grid.runs}
    needed, todo = set(), list(chosen.values())
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo += by_name[name].needs
    return [r.name for r in grid.runs if r.name in needed]
