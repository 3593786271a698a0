"""The state of every run of a grid, from the run folders (state files and locks) and ``squeue``: what
``status`` shows from any shell or login node, what ``run`` must not start twice, and ``status --cancel``.

A state saying "running" whose run lock nobody holds is stale (its process died, the machine rebooted, a pid was
reused): it shows as failed ("interrupted") and neither ``run`` nor ``run --force`` waits for it.
"""
from __future__ import annotations

import os
import signal
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hsnetlib.suite.grid import Grid, select
from hsnetlib.suite.jsonfile import UnreadableFile
from hsnetlib.suite.state import converged, headline, lock_owner, now, read_record, read_state, update_state

ACTIVE = ("queued", "running")
STALE = "interrupted (its process is gone); a rerun resumes it"


def _blocked_by(run, result: dict[str, dict[str, Any]]) -> list[str]:
    return [n for n in run.needs if result.get(n, {}).get("status") in ("failed", "blocked")]


def run_states(grid: Grid, grid_dir: Path) -> dict[str, dict[str, Any]]:
    """Each run's state, corrected by its lock and by squeue (a job gone without an outcome: failed or blocked).
    An unreadable state file gives status "unknown" with the file named in ``detail``."""
    from hsnetlib.suite import slurm

    states: dict[str, dict[str, Any]] = {}
    for run in grid.runs:
        try:
            states[run.name] = read_state(run.out_dir(grid_dir))
        except UnreadableFile as err:
            states[run.name] = {"status": "unknown", "detail": f"{err}; --force starts it afresh"}
    ids = [s["job_id"] for s in states.values() if s.get("executor") == "slurm" and s.get("job_id")]
    queue = slurm.squeue(ids) if ids else {}
    result: dict[str, dict[str, Any]] = {}
    for run in grid.runs:
        state, out_dir = dict(states[run.name]), run.out_dir(grid_dir)
        record = read_record(out_dir)
        if record is not None and state.get("status", "done") == "done":
            state.update(status="done", converged=converged(record), detail=state.get("detail") or headline(out_dir))
        elif not state:
            failed_needs = _blocked_by(run, result)
            state = {"status": "blocked", "detail": f"needs {', '.join(failed_needs)}"} if failed_needs \
                else {"status": "pending"}
        elif state.get("executor") == "slurm" and state.get("job_id") in queue and not state.get("cancelled"):
            slurm_state, reason, node = queue[state["job_id"]]
            if slurm_state == "PENDING":
                state.update(status="blocked" if reason == "DependencyNeverSatisfied" else "queued", detail=reason)
            elif slurm_state in ("RUNNING", "COMPLETING"):
                state.update(status="running", node=node or state.get("node"))
        elif state.get("status") in ACTIVE and state.get("executor") == "slurm":
            failed_needs = _blocked_by(run, result)
            if failed_needs and state["status"] == "queued":
                state.update(status="blocked", detail=f"needs {', '.join(failed_needs)}")
            else:
                state.update(status="failed", detail=f"job {state['job_id']} ended without an outcome "
                                                      "(cancelled or killed); see its log")
        elif state.get("status") in ACTIVE and lock_owner(out_dir) is None:
            state.update(status="failed", stale=True, detail=STALE)
        result[run.name] = state
    return result


def active_runs(grid: Grid, grid_dir: Path) -> dict[str, dict[str, Any]]:
    """The runs queued or running now (Slurm jobs in the queue, processes holding their run's lock)."""
    return {name: state for name, state in run_states(grid, grid_dir).items() if state["status"] in ACTIVE}


def _elapsed(state: dict[str, Any]) -> float | None:
    try:
        end = datetime.fromisoformat(state["finished_at"]) if state.get("finished_at") else datetime.now(timezone.utc)
        return (end - datetime.fromisoformat(state["started_at"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def shown_status(state: dict[str, Any]) -> str:
    """A state's status as `status` shows it: a finished training that did not converge is "done (not converged)"."""
    return "done (not converged)" if state["status"] == "done" and state.get("converged") is False else state["status"]


def grid_status(grid: Grid, grid_dir: Path, only: str | None = None):
    """One row per run: status, Slurm job id and node, elapsed seconds, headline metric or error, log path."""
    import pandas as pd

    states = run_states(grid, grid_dir)
    rows = []
    for run in select(grid.runs, only):
        state = states[run.name]
        rows.append({"run": run.name, "status": shown_status(state), "job": state.get("job_id") or "",
                     "node": state.get("node") or state.get("host") or "", "elapsed": _elapsed(state),
                     "detail": state.get("detail") or "", "log": state.get("log") or ""})
    return pd.DataFrame(rows, columns=["run", "status", "job", "node", "elapsed", "detail", "log"])


def cancel(grid: Grid, grid_dir: Path, only: str | None = None) -> list[str]:
    """Stop the grid's queued and running runs: scancel its Slurm jobs, SIGTERM the local processes that own a
    run (on this host), and mark stale "running" states failed. Returns the run names handled."""
    from hsnetlib.suite import slurm

    states = run_states(grid, grid_dir)
    chosen = [r for r in select(grid.runs, only)
              if states[r.name]["status"] in ACTIVE + ("blocked",) and states[r.name].get("job_id")]
    if chosen:
        slurm.scancel([states[r.name]["job_id"] for r in chosen])
    for run in chosen:
        if states[run.name]["status"] == "blocked":  # stays blocked: what it needs failed
            update_state(run.out_dir(grid_dir), status="blocked", cancelled=True,
                         detail=states[run.name].get("detail", ""))
        else:
            update_state(run.out_dir(grid_dir), status="failed", cancelled=True, finished_at=now(), detail="cancelled")
    handled = [r.name for r in chosen]
    for run in select(grid.runs, only):
        state, out_dir = states[run.name], run.out_dir(grid_dir)
        if run.name in handled or state.get("job_id"):
            continue
        if state.get("stale"):
            update_state(out_dir, status="failed", finished_at=now(), detail=f"cancelled: {STALE}")
            handled.append(run.name)
        elif state["status"] in ACTIVE and (owner := lock_owner(out_dir)):
            host, _, pid = owner.partition(" ")
            if host == socket.gethostname() and pid.isdigit():
                try:
                    os.kill(int(pid), signal.SIGTERM)  # the run's process records itself as interrupted
                    handled.append(run.name)
                except ProcessLookupError:
                    pass
    return handled
