"""The local executor: the runs of a grid concurrently on this machine.

Every run executes in a process of its own (``python -m hsnetlib.suite execute RUN_FOLDER``, from the run's
hand-off file), its output going to the run's log.txt; at most ``--jobs`` at once. With ``--gpus 0,1,2,3`` a
run takes ``resources.gpus`` of them and sees only those (``CUDA_VISIBLE_DEVICES``); a run with several GPUs
is started by torchrun (``torch.distributed.run --standalone``), one process per GPU, and trains with
DistributedDataParallel (the engine reads RANK / WORLD_SIZE / LOCAL_RANK); its ``nodes`` are all this machine.
Runs on CPU share its cores: with ``--jobs N`` each gets ``cores // N`` torch threads (``OMP_NUM_THREADS``,
unless the user set it), as more spinning OpenMP threads than cores made trainings ten times slower.
A run starts once the runs it needs are done; the runs that need a failed run are "blocked"; one failure stops
nothing else. Ctrl-C or SIGTERM stops the grid: its runs get SIGTERM (then SIGKILL after STOP_WAIT_S), which
they honour whatever signal dispositions the suite inherited; their kernels are stopped, their records removed,
and a rerun resumes interrupted trainings from their last.pt.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping

from hsnetlib.suite.execute import EXIT_OWNED, Outcome, interrupt, write_spec
from hsnetlib.suite.grid import Grid, GridError, Run
from hsnetlib.suite.jsonfile import UnreadableFile
from hsnetlib.suite.paths import project_root
from hsnetlib.suite.state import is_done, now, read_state, update_state

POLL_S = 0.2
STOP_WAIT_S = 60


def command(run: Run, grid_dir: Path, processes: int) -> list[str]:
    execute = ["-m", "hsnetlib.suite", "execute", str(run.out_dir(grid_dir))]
    if processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                *execute]
    return [sys.executable, *execute]


def run_env(environ: Mapping[str, str], devices: list[str] | None, jobs: int) -> dict[str, str]:
    """A run's environment: only its GPUs visible (`devices`, under --gpus), or on CPU with `jobs` runs at once,
    its share of the cores this process may use as torch threads (OMP_NUM_THREADS, unless already set)."""
    env = dict(environ)
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    elif jobs > 1:
        env.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // jobs)))
    return env


def validate(grid: Grid, todo: list[Run], gpus: list[str] | None, jobs: int | None) -> None:
    """What the local executor cannot run, refused before anything is cleared or started."""
    if jobs is not None and jobs < 1:
        raise GridError(f"--jobs {jobs}: at least 1 run at once")
    if gpus is not None:
        greedy = [f"{r.name} ({r.resources.gpus})" for r in todo if r.resources.gpus > len(gpus)]
        if greedy:
            raise GridError(f"{grid.path}: run(s) {', '.join(greedy)} need more GPUs than --gpus gives ({len(gpus)})")


def _finished(run: Run, grid_dir: Path, code: int, seconds: float) -> Outcome:
    out_dir = run.out_dir(grid_dir)
    if code == EXIT_OWNED:
        return Outcome(run.name, run.notebook, "running", seconds, "started by another process meanwhile; not "
                       "started a second time")
    try:
        state = read_state(out_dir)
    except UnreadableFile as err:
        return Outcome(run.name, run.notebook, "failed", seconds, str(err))
    if state.get("status") in ("done", "failed"):
        return Outcome(run.name, run.notebook, state["status"], seconds, state.get("detail", ""))
    detail = f"the run's process exited with code {code}; see {out_dir / 'log.txt'}"
    try:  # its own last state write failed (a full disk?): the suite writes it
        update_state(out_dir, status="failed", finished_at=now(), detail=detail)
    except OSError as err:
        detail += f" ({err})"
    return Outcome(run.name, run.notebook, "failed", seconds, detail)


def run_local(grid: Grid, grid_dir: Path, todo: list[Run], decided: list[Outcome], gpus: list[str] | None,
              jobs: int | None) -> list[Outcome]:
    """Execute `todo` concurrently (see the module doc); `decided` are the outcomes known without running."""
    jobs = jobs or (len(gpus) if gpus else 1)
    done = {r.name for r in grid.runs if r not in todo and is_done(r.out_dir(grid_dir))}
    outcomes = list(decided)
    bad = {o.run for o in decided if o.status == "failed"}
    waiting, running, free = list(todo), {}, list(gpus or [])
    total = len(todo)

    def report(outcome: Outcome) -> None:
        outcomes.append(outcome)
        (done if outcome.status == "done" else bad).add(outcome.run)
        print(f"[{len(outcomes) - len(decided)}/{total}] {outcome.run}: {outcome.status} {outcome.seconds:.0f}s "
              f"{outcome.detail}", flush=True)

    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, interrupt)
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
                if missing or len(running) >= jobs or need > len(free):
                    continue
                devices, free = free[:need], free[need:]
                env = run_env(os.environ, devices if gpus is not None else None, jobs)
                shown = f" on GPU {','.join(devices)}" if devices else ""
                print(f"start {run.name} ({run.notebook}){shown}", flush=True)
                write_spec(run, grid_dir, "local")
                with open(run.out_dir(grid_dir) / "log.txt", "a") as log:  # the kernel's and the process's chatter
                    process = subprocess.Popen(command(run, grid_dir, max(need, 1)), env=env, cwd=project_root(),
                                               stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                               start_new_session=True)
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
            signal_group(process, signal.SIGTERM)
        for run, process, _, start in running.values():
            try:
                process.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                signal_group(process, signal.SIGKILL)
                process.wait()
            outcomes.append(_finished(run, grid_dir, process.returncode, time.perf_counter() - start))
        outcomes += [Outcome(r.name, r.notebook, "pending", detail="not started (interrupted)") for r in waiting]
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
    return outcomes


def signal_group(process: subprocess.Popen, signum: int) -> None:
    """Signal a run's process group (the run's process, and torchrun's workers)."""
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:  # it has just ended
        pass
