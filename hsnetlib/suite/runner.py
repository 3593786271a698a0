"""Running a grid: what to execute (plan), validated for the executor before anything is cleared, then executed
locally or submitted to Slurm.

A run whose record is readable is skipped; a failed run does not stop the grid, runs that need it are
"blocked". A plain rerun continues what an interruption left (interrupted trainings resume); a run whose
parameters differ from those of its last attempt is refused (reported with the differing keys, never mixed);
``force`` clears the runs' folders -- after the grid was validated for the executor -- and starts them afresh.
A run queued or running now (a Slurm job, a process holding the run's lock) is never touched.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from hsnetlib.suite import local, slurm
from hsnetlib.suite.execute import Outcome, check_kernel
from hsnetlib.suite.grid import Grid, Run, select
from hsnetlib.suite.paths import resolve
from hsnetlib.suite.state import changed_parameters, clear_run, converged, headline, is_done, read_record
from hsnetlib.suite.status import run_states

EXECUTORS = ("local", "slurm")


def plan(grid: Grid, grid_dir: Path, only: str | None, force: bool,
         states: Mapping[str, dict[str, Any]]) -> tuple[list[Run], list[Outcome]]:
    """The selected runs to execute, and the outcomes decided without executing: "queued" / "running" (already,
    as a Slurm job or a process), "skipped" (done), "failed" (its configuration changed since its last attempt,
    or its state file is unreadable: --force starts it afresh). Nothing is cleared here."""
    todo, decided = [], []
    for run in select(grid.runs, only):
        out_dir, state = run.out_dir(grid_dir), states[run.name]
        if state["status"] in ("queued", "running"):
            where = f"Slurm job {state['job_id']}" if state.get("job_id") else f"pid {state.get('pid')} on {state.get('host')}"
            decided.append(Outcome(run.name, run.notebook, state["status"], detail=f"already {state['status']} "
                                   f"({where}); cancel it first to start it again"))
        elif force:
            todo.append(run)
        elif state["status"] == "unknown":
            decided.append(Outcome(run.name, run.notebook, "failed", detail=state["detail"]))
        elif changed := changed_parameters(run, out_dir):
            decided.append(Outcome(run.name, run.notebook, "failed", detail="configuration changed since its last "
                                   f"attempt: {'; '.join(changed)}; --force starts it afresh"))
        elif is_done(out_dir):
            note = "" if converged(read_record(out_dir)) else "not converged; "
            decided.append(Outcome(run.name, run.notebook, "skipped", detail=note + headline(out_dir)))
        else:
            todo.append(run)
    return todo, decided


def run_grid(grid: Grid, runs_dir: str | os.PathLike = "runs", only: str | None = None, force: bool = False,
             executor: str = "local", gpus: list[str] | None = None, jobs: int | None = None) -> list[Outcome]:
    """Execute (local) or submit (slurm) the selected runs of a grid; returns one outcome per selected run.
    Raises GridError (before anything is cleared or started) for what the executor cannot run."""
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    check_kernel()
    grid_dir = grid.dir(resolve(runs_dir))
    states = run_states(grid, grid_dir)
    todo, decided = plan(grid, grid_dir, only, force, states)
    if executor == "slurm":
        slurm.validate(grid, todo)
    else:
        local.validate(grid, todo, gpus, jobs)
    if force:
        for run in todo:
            clear_run(run.out_dir(grid_dir))
    if executor == "slurm":
        active = {n: s for n, s in states.items() if s["status"] in ("queued", "running")}
        outcomes = slurm.submit_slurm(grid, grid_dir, todo, decided, active)
    else:
        outcomes = local.run_local(grid, grid_dir, todo, decided, gpus, jobs)
    order = {r.name: i for i, r in enumerate(grid.runs)}
    return sorted(outcomes, key=lambda o: order[o.run])


def summary_table(outcomes: list[Outcome]):
    import pandas as pd

    return pd.DataFrame([vars(o) for o in outcomes], columns=["run", "notebook", "status", "seconds", "detail"])
