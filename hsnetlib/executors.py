"""Where the runs of a grid execute: concurrently on this machine, or as Slurm jobs through submitit.

Both executors keep each run's state in its folder (``suite-state.json``, written atomically by
:func:`hsnetlib.suite.update_state`), so :func:`grid_status` works from any shell or login node.

Local (``--executor local``): every run executes in a process of its own
(``python -m hsnetlib.suite execute GRID RUN``); at most ``--jobs`` at once. With ``--gpus 0,1,2,3`` a
run takes ``resources.gpus`` of them and sees only those (``CUDA_VISIBLE_DEVICES``); a run with several
GPUs is started by torchrun (``torch.distributed.run --standalone``), one process per GPU, and trains with
DistributedDataParallel (the engine reads RANK / WORLD_SIZE / LOCAL_RANK). A run starts once the runs it
needs are done; the runs that need a failed run are "blocked"; one failure stops nothing else. Ctrl-C
(or SIGTERM) interrupts the running notebooks (their kernels are stopped, their records removed) and the
grid stops; a rerun resumes interrupted trainings from their last.pt.

Slurm (``--executor slurm``): every run is one sbatch job (submitit's SlurmExecutor) that executes its
notebook with papermill; the whole grid is submitted at once, in file order, ``needs`` becoming
``afterok`` dependencies (with ``kill-on-invalid-dep``, so the dependants of a failed job leave the
queue: "blocked"). Resources come from the grid (:class:`hsnetlib.suite.Resources`). A run with G GPUs
is one node with G tasks, one per GPU: submitit starts the job function in every task and
:class:`NotebookJob` exports submitit's ``TorchDistributedEnvironment`` (MASTER_ADDR/PORT, RANK,
WORLD_SIZE, LOCAL_RANK) before executing the notebook, so the engine trains with DDP across the tasks.
The job object is checkpointable: when Slurm signals a time limit or a preemption (USR2, 90 s ahead)
submitit calls :meth:`NotebookJob.checkpoint` and requeues the job, which executes the notebook again;
its training resumes from last.pt (the notebook's ``resume``). A job requeued by Slurm itself
(``scontrol requeue``, PreemptMode=REQUEUE) runs the same way. Note that Slurm holds a requeued job
for about two minutes (BeginTime) before it can start again.

Job states come from the state files and ``squeue`` (never ``sacct``: submitit reads job states with
sacct, which clusters without accounting do not have; submitit then only warns, so the suite does not
rely on it). ``status --cancel`` cancels a grid's queued and running jobs with scancel.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import submitit

from hsnetlib import suite
from hsnetlib.suite import METRICS_FILE, Grid, Outcome, Run

POLL_S = 0.2
SLURM_DIR = "slurm"  # submitit's folder inside a run folder: sbatch script, pickles, <job id>_0_log.out
ACTIVE = ("queued", "running")


# -- local -----------------------------------------------------------------------------------------
def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _command(grid: Grid, grid_dir: Path, run: Run, processes: int) -> list[str]:
    execute = ["-m", "hsnetlib.suite", "execute", str(grid.path.resolve()), run.name,
               "--runs-dir", str(grid_dir.parent)]
    if processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                *execute]
    return [sys.executable, *execute]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _finished(run: Run, grid_dir: Path, code: int, seconds: float) -> Outcome:
    state = suite.read_state(run.out_dir(grid_dir))
    if state.get("status") in ("done", "failed"):
        return Outcome(run.name, run.notebook, state["status"], seconds, state.get("detail", ""))
    return Outcome(run.name, run.notebook, "failed", seconds, f"the run's process exited with code {code}")


def run_local(grid: Grid, grid_dir: Path, todo: list[Run], decided: list[Outcome], gpus: list[str] | None,
              jobs: int | None) -> list[Outcome]:
    """Execute `todo` concurrently (see the module doc); `decided` are the outcomes known without running."""
    jobs = jobs or (len(gpus) if gpus else 1)
    done = {r.name for r in grid.runs if r not in todo and (r.out_dir(grid_dir) / METRICS_FILE).is_file()}
    outcomes = list(decided)
    bad = {o.run for o in decided if o.status == "failed"}
    waiting, running, free = list(todo), {}, list(gpus or [])
    total = len(todo)

    def report(outcome: Outcome) -> None:
        outcomes.append(outcome)
        (done if outcome.status == "done" else bad).add(outcome.run)
        print(f"[{len(outcomes) - len(decided)}/{total}] {outcome.run}: {outcome.status} {outcome.seconds:.0f}s "
              f"{outcome.detail}", flush=True)

    previous = signal.getsignal(signal.SIGINT), signal.signal(signal.SIGTERM, _interrupt)
    try:
        while waiting or running:
            planned = {r.name for r in waiting} | set(running)
            for run in list(waiting):
                missing = [n for n in run.needs if n not in done]
                if blocking := [n for n in missing if n in bad or n not in planned]:
                    waiting.remove(run)
                    report(Outcome(run.name, run.notebook, "blocked", detail=f"needs {', '.join(blocking)}"))
                    continue
                need = run.resources.gpus if gpus is not None else 0
                if need > len(gpus or []) and gpus is not None:
                    waiting.remove(run)
                    report(Outcome(run.name, run.notebook, "failed",
                                   detail=f"needs {need} GPUs; --gpus gives {len(gpus)}"))
                    continue
                if missing or len(running) >= jobs or need > len(free):
                    continue
                devices, free = free[:need], free[need:]
                env = dict(os.environ)
                if gpus is not None:
                    env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
                shown = f" on GPU {','.join(devices)}" if devices else ""
                print(f"start {run.name} ({run.notebook}){shown}", flush=True)
                process = subprocess.Popen(_command(grid, grid_dir, run, max(need, 1)), env=env,
                                           cwd=suite.project_root(), start_new_session=True)
                running[run.name] = (run, process, devices, time.perf_counter())
                waiting.remove(run)
            for name, (run, process, devices, start) in list(running.items()):
                if process.poll() is not None:
                    del running[name]
                    free += devices
                    report(_finished(run, grid_dir, process.returncode, time.perf_counter() - start))
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        print(f"\ninterrupted: stopping {len(running)} running run(s) ...", flush=True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave the runs' processes behind
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for run, process, _, start in running.values():
            _signal_group(process, signal.SIGINT)
        for run, process, _, start in running.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
            outcomes.append(_finished(run, grid_dir, process.returncode, time.perf_counter() - start))
        outcomes += [Outcome(r.name, r.notebook, "pending", detail="not started (interrupted)") for r in waiting]
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
    return outcomes


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    """Signal a run's process group (the run's process, and torchrun's workers)."""
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:  # it has just ended
        pass


# -- slurm -----------------------------------------------------------------------------------------
class NotebookJob(submitit.helpers.Checkpointable):
    """The function of a run's Slurm job (submitit pickles it): execute the notebook in every task.

    Checkpointable: submitit calls :meth:`checkpoint` on a time-limit or preemption signal and requeues the
    job. The training's state is its last.pt, so the requeued job simply executes the notebook again.
    """

    def __init__(self, run: Run, grid_dir: Path):
        self.run, self.grid_dir = run, grid_dir

    def __call__(self) -> str:
        if submitit.JobEnvironment().num_tasks > 1:  # one task per GPU: DDP through the job's tasks
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        outcome = suite.execute(self.run, self.grid_dir, executor="slurm")
        if outcome.status != "done":
            raise suite.RunFailed(f"{self.run.name}: {outcome.detail}")
        return outcome.detail

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        if suite.rank() == 0:
            suite.update_state(self.run.out_dir(self.grid_dir), status="queued",
                               detail="requeued after a time limit or preemption; its training resumes")
        return super().checkpoint()


def sbatch_parameters(run: Run, grid: Grid, dependencies: list[str]) -> dict[str, Any]:
    """submitit SlurmExecutor parameters for a run (one node; one task per GPU)."""
    res = run.resources
    extra = {"kill-on-invalid-dep": "yes", "requeue": True, **res.sbatch}
    if dependencies:
        extra["dependency"] = "afterok:" + ":".join(dependencies)
    params = {"job_name": f"{grid.name}/{run.name}", "nodes": 1, "ntasks_per_node": max(res.gpus, 1),
              "time": res.time, "cpus_per_task": res.cpus, "mem": f"{res.mem_gb}GB" if res.mem_gb else None,
              "gpus_per_node": res.gpus or None, "partition": res.partition, "account": res.account,
              "qos": res.qos, "constraint": res.constraint, "stderr_to_stdout": True,
              "additional_parameters": extra}
    return {k: v for k, v in params.items() if v is not None}


def submit_slurm(grid: Grid, grid_dir: Path, todo: list[Run], decided: list[Outcome]) -> list[Outcome]:
    """Submit every run of `todo` as a Slurm job at once, in file order, `needs` as afterok dependencies."""
    done = {r.name for r in grid.runs if r not in todo and (r.out_dir(grid_dir) / METRICS_FILE).is_file()}
    jobs = {name: state["job_id"] for name, state in active_runs(grid, grid_dir).items() if state.get("job_id")}
    outcomes, bad = list(decided), {o.run for o in decided if o.status == "failed"}
    untimed = [r.name for r in todo if r.resources.time is None]
    if untimed:
        raise suite.GridError(f"{grid.path}: run(s) {', '.join(untimed)} have no resources time (minutes), which "
                              "Slurm jobs need (submitit's requeue on a time limit counts on it): set it in "
                              "[resources] or the run's resources")
    for run in todo:
        out_dir = run.out_dir(grid_dir)
        missing = [n for n in run.needs if n not in done and n not in jobs]
        if missing or any(n in bad for n in run.needs):
            bad.add(run.name)
            outcomes.append(Outcome(run.name, run.notebook, "blocked", detail=f"needs {', '.join(missing or run.needs)}"))
            continue
        executor = submitit.SlurmExecutor(folder=out_dir / SLURM_DIR, python=sys.executable)
        executor.update_parameters(**sbatch_parameters(run, grid, [jobs[n] for n in run.needs if n in jobs]))
        job = executor.submit(NotebookJob(run, grid_dir))
        jobs[run.name] = job.job_id
        suite.update_state(out_dir, status="queued", executor="slurm", job_id=job.job_id, notebook=run.notebook,
                           parameters=run.parameters, submitted_at=suite.now(), started_at=None, finished_at=None,
                           cancelled=False, detail="", log=str(job.paths.stdout), job_log=str(job.paths.stdout))
        outcomes.append(Outcome(run.name, run.notebook, "queued", detail=f"job {job.job_id}"))
        print(f"submitted {run.name}: job {job.job_id}", flush=True)
    return outcomes


def squeue(job_ids: list[str]) -> dict[str, tuple[str, str, str]]:
    """job id -> (Slurm state, reason, node) of the given jobs still known to slurmctld."""
    if not job_ids:
        return {}
    if shutil.which("squeue") is None:
        raise RuntimeError("squeue is not installed here: ask for the state of Slurm jobs on a machine of the cluster")
    out = subprocess.run(["squeue", "-h", "-o", "%i|%T|%r|%N", "--jobs", ",".join(job_ids)],
                         capture_output=True, text=True)
    if out.returncode:  # squeue refuses a list when one job is gone: ask for all jobs
        out = subprocess.run(["squeue", "-h", "-o", "%i|%T|%r|%N"], capture_output=True, text=True, check=True)
    rows = (line.split("|") for line in out.stdout.splitlines() if line.strip())
    return {job: (state, reason, node) for job, state, reason, node in rows if job in job_ids}


# -- status ----------------------------------------------------------------------------------------
def _slurm_states(grid: Grid, grid_dir: Path) -> dict[str, dict[str, Any]]:
    """Each run's state, Slurm jobs corrected by squeue (a job gone without an outcome: failed or blocked)."""
    states = {r.name: suite.read_state(r.out_dir(grid_dir)) for r in grid.runs}
    ids = [s["job_id"] for s in states.values() if s.get("executor") == "slurm" and s.get("job_id")]
    queue = squeue(ids) if ids else {}
    result: dict[str, dict[str, Any]] = {}
    for run in grid.runs:
        state, out_dir = dict(states[run.name]), run.out_dir(grid_dir)
        if (out_dir / METRICS_FILE).is_file() and state.get("status", "done") == "done":
            state.update(status="done", detail=state.get("detail") or suite.headline(out_dir / METRICS_FILE))
        elif not state:
            failed_needs = [n for n in run.needs if result.get(n, {}).get("status") in ("failed", "blocked")]
            state = {"status": "blocked", "detail": f"needs {', '.join(failed_needs)}"} if failed_needs \
                else {"status": "pending"}
        elif state.get("executor") == "slurm" and state.get("job_id") in queue and not state.get("cancelled"):
            slurm_state, reason, node = queue[state["job_id"]]
            if slurm_state == "PENDING":
                state.update(status="blocked" if reason == "DependencyNeverSatisfied" else "queued", detail=reason)
            elif slurm_state in ("RUNNING", "COMPLETING"):
                state.update(status="running", node=node or state.get("node"))
        elif state.get("status") in ACTIVE and state.get("executor") == "slurm":
            failed_needs = [n for n in run.needs if result.get(n, {}).get("status") in ("failed", "blocked")]
            if failed_needs and state["status"] == "queued":
                state.update(status="blocked", detail=f"needs {', '.join(failed_needs)}")
            else:
                state.update(status="failed", detail=f"job {state['job_id']} ended without an outcome "
                                                      "(cancelled or killed); see its log")
        elif state.get("status") == "running" and state.get("host") == os.uname().nodename \
                and not _pid_alive(state.get("pid", 0)):
            state.update(status="failed", detail="interrupted (its process is gone); a rerun resumes it")
        result[run.name] = state
    return result


def active_runs(grid: Grid, grid_dir: Path) -> dict[str, dict[str, Any]]:
    """The runs queued or running now (Slurm jobs in the queue, live processes), with their states."""
    here = os.uname().nodename
    return {name: state for name, state in _slurm_states(grid, grid_dir).items()
            if state["status"] in ACTIVE and (state.get("executor") == "slurm" or state.get("host") == here)}


def _elapsed(state: dict[str, Any]) -> float | None:
    if not state.get("started_at"):
        return None
    end = datetime.fromisoformat(state["finished_at"]) if state.get("finished_at") else datetime.now(timezone.utc)
    return (end - datetime.fromisoformat(state["started_at"])).total_seconds()


def grid_status(grid: Grid, grid_dir: Path, only: str | None = None):
    """One row per run: status, Slurm job id and node, elapsed seconds, headline metric or error, log path."""
    import pandas as pd

    states = _slurm_states(grid, grid_dir)
    rows = []
    for run in suite.select(grid.runs, only):
        state = states[run.name]
        rows.append({"run": run.name, "status": state["status"], "job": state.get("job_id") or "",
                     "node": state.get("node") or state.get("host") or "", "elapsed": _elapsed(state),
                     "detail": state.get("detail") or "", "log": state.get("log") or ""})
    return pd.DataFrame(rows, columns=["run", "status", "job", "node", "elapsed", "detail", "log"])


def cancel(grid: Grid, grid_dir: Path, only: str | None = None) -> list[str]:
    """scancel the grid's queued and running Slurm jobs; returns the run names cancelled."""
    states = _slurm_states(grid, grid_dir)
    chosen = [r for r in suite.select(grid.runs, only)
              if states[r.name]["status"] in ACTIVE + ("blocked",) and states[r.name].get("job_id")]
    if chosen:
        subprocess.run(["scancel", *[states[r.name]["job_id"] for r in chosen]], check=True)
    for run in chosen:
        if states[run.name]["status"] == "blocked":  # stays blocked: what it needs failed
            suite.update_state(run.out_dir(grid_dir), status="blocked", cancelled=True,
                               detail=states[run.name].get("detail", ""))
        else:
            suite.update_state(run.out_dir(grid_dir), status="failed", cancelled=True, finished_at=suite.now(),
                               detail="cancelled")
    return [r.name for r in chosen]
