"""The Slurm executor: every run one sbatch job, through submitit.

The whole grid is submitted at once, in file order, ``needs`` becoming ``afterok`` dependencies (with
``kill-on-invalid-dep``, so the dependants of a failed job leave the queue: "blocked"). Resources come from
the grid (:class:`hsnetlib.suite.grid.Resources`). A run with G GPUs over N nodes is one job of N nodes with
G/N tasks per node, one per GPU: submitit starts the job function in every task and :class:`NotebookJob`
exports submitit's ``TorchDistributedEnvironment`` (MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK) before
executing the notebook, so the engine trains with DDP across all tasks of all nodes (the global batch stays
that of the run's parameters). The job reads its run from the run folder's hand-off file (suite-run.json),
like a local run. The job object is checkpointable: when Slurm signals a time limit or a preemption (USR2,
90 s ahead) submitit calls :meth:`NotebookJob.checkpoint` and requeues the job, which executes the notebook
again; its training resumes from last.pt. A job requeued by Slurm itself (``scontrol requeue``) runs the same
way. Slurm holds a requeued job for about two minutes (BeginTime) before it can start again.

Job states come from the state files and ``squeue`` (never ``sacct``, which clusters without accounting lack).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hsnetlib.suite.execute import Outcome, RunFailed, execute, read_spec, write_spec
from hsnetlib.suite.grid import Grid, GridError, Run
from hsnetlib.suite.state import is_done, now, rank, update_state

SLURM_DIR = "slurm"  # submitit's folder inside a run folder: sbatch script, pickles, <job id>_0_log.out


class NotebookJob:
    """The function of a run's Slurm job: execute the run of a hand-off file in every task.

    Checkpointable (submitit's protocol): on a time-limit or preemption signal submitit calls :meth:`checkpoint`
    and requeues the job. The training's state is its last.pt, so the requeued job executes the notebook again.
    """

    def __init__(self, spec: Path):
        self.spec = Path(spec)

    def __call__(self) -> str:
        import submitit

        if submitit.JobEnvironment().num_tasks > 1:  # one task per GPU: DDP through the job's tasks
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        run, grid_dir, executor = read_spec(self.spec)
        outcome = execute(run, grid_dir, executor=executor)
        if outcome.status != "done":
            raise RunFailed(f"{run.name}: {outcome.detail}")
        return outcome.detail

    def checkpoint(self) -> Any:
        import submitit

        if rank() == 0:
            update_state(self.spec.parent, status="queued",
                         detail="requeued after a time limit or preemption; its training resumes")
        return submitit.helpers.DelayedSubmission(self)


def validate(grid: Grid, todo: list[Run]) -> None:
    """What Slurm jobs cannot be, refused before anything is cleared or submitted."""
    untimed = [r.name for r in todo if r.resources.time is None]
    if untimed:
        raise GridError(f"{grid.path}: run(s) {', '.join(untimed)} have no resources time (minutes), which "
                        "Slurm jobs need (submitit's requeue on a time limit counts on it): set it in "
                        "[resources] or the run's resources")


def sbatch_parameters(run: Run, grid: Grid, dependencies: list[str]) -> dict[str, Any]:
    """submitit SlurmExecutor parameters for a run: `nodes` nodes, one task per GPU on each."""
    res = run.resources
    extra = {"kill-on-invalid-dep": "yes", "requeue": True, **res.sbatch}
    if dependencies:
        extra["dependency"] = "afterok:" + ":".join(dependencies)
    params = {"job_name": f"{grid.name}/{run.name}", "nodes": res.nodes, "ntasks_per_node": res.tasks_per_node,
              "time": res.time, "cpus_per_task": res.cpus, "mem": f"{res.mem_gb}GB" if res.mem_gb else None,
              "gpus_per_node": res.gpus_per_node or None, "partition": res.partition, "account": res.account,
              "qos": res.qos, "constraint": res.constraint, "stderr_to_stdout": True,
              "additional_parameters": extra}
    return {k: v for k, v in params.items() if v is not None}


def submit_slurm(grid: Grid, grid_dir: Path, todo: list[Run], decided: list[Outcome],
                 active: dict[str, dict[str, Any]]) -> list[Outcome]:
    """Submit every run of `todo` as a Slurm job at once, in file order, `needs` as afterok dependencies;
    `active`: the runs queued or running now (their job ids are the dependencies of what needs them)."""
    import submitit

    done = {r.name for r in grid.runs if r not in todo and is_done(r.out_dir(grid_dir))}
    jobs = {name: state["job_id"] for name, state in active.items() if state.get("job_id")}
    outcomes, bad = list(decided), {o.run for o in decided if o.status == "failed"}
    for run in todo:
        out_dir = run.out_dir(grid_dir)
        missing = [n for n in run.needs if n not in done and n not in jobs]
        if missing or any(n in bad for n in run.needs):
            bad.add(run.name)
            outcomes.append(Outcome(run.name, run.notebook, "blocked", detail=f"needs {', '.join(missing or run.needs)}"))
            continue
        spec = write_spec(run, grid_dir, "slurm")
        executor = submitit.SlurmExecutor(folder=out_dir / SLURM_DIR, python=sys.executable)
        executor.update_parameters(**sbatch_parameters(run, grid, [jobs[n] for n in run.needs if n in jobs]))
        job = executor.submit(NotebookJob(spec))
        jobs[run.name] = job.job_id
        update_state(out_dir, status="queued", executor="slurm", job_id=job.job_id, notebook=run.notebook,
                     parameters=run.parameters, submitted_at=now(), started_at=None, finished_at=None,
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


def scancel(job_ids: list[str]) -> None:
    subprocess.run(["scancel", *job_ids], check=True)
