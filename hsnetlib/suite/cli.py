"""Command line of the suite::

    python -m hsnetlib.suite run GRID [--only PATTERN] [--force] [--runs-dir runs] [--smoke]
                                      [--executor local|slurm] [--gpus 0,1,2,3] [--jobs N]
    python -m hsnetlib.suite status GRID [--only PATTERN] [--cancel]
    python -m hsnetlib.suite list GRID [--only PATTERN]
    python -m hsnetlib.suite execute RUN_FOLDER      # one run in this process (what the executors start)

A summary table is printed at the end of `run` and written to RUNS_DIR/<grid>/summary.csv; the exit status is
1 when any run failed, was blocked or did not start, 2 for a user error (a bad grid, argument or state file:
one line naming the culprit, no traceback).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hsnetlib.suite import runner, smoke, status
from hsnetlib.suite.execute import EXIT_OWNED, execute, honour_stop_signals, read_spec
from hsnetlib.suite.grid import Grid, GridError, load_grid, select
from hsnetlib.suite.jsonfile import UnreadableFile
from hsnetlib.suite.paths import resolve

# what a user can get wrong: said in one line, exit code 2
USER_ERRORS = (GridError, UnreadableFile, FileNotFoundError, RuntimeError)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: at least 1 run at once")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hsnetlib.suite", description="Batch runs of the notebook suite "
                                     "with papermill: grids of runs, locally or on Slurm.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("execute", help="execute one run in this process (what the executors start)")
    p.add_argument("run_dir", help="the run's folder (it holds the run's hand-off, suite-run.json)")
    for name, help_text in (("run", "execute a grid (locally, or submit it to Slurm)"),
                            ("list", "show a grid's expanded runs"),
                            ("status", "show the state of every run of a grid")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("grid", help="grid file (TOML), e.g. grids/demo.toml")
        p.add_argument("--only", metavar="PATTERN", help="only runs whose name matches this glob, e.g. 'train-*'")
        p.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs/)")
        p.add_argument("--smoke", action="store_true",
                       help=f"every run at a tiny budget on CPU on the synthetic benchmark, into RUNS_DIR/{smoke.SMOKE_DIR}/"
                            " (see hsnetlib.suite.smoke)")
        if name == "run":
            p.add_argument("--force", action="store_true",
                           help="clear the runs' folders and start them afresh (else done runs are skipped and "
                                "interrupted trainings resume)")
            p.add_argument("--executor", choices=runner.EXECUTORS, default="local",
                           help="local: on this machine (default); slurm: one sbatch job per run, via submitit")
            p.add_argument("--gpus", type=lambda s: [g for g in s.split(",") if g], metavar="IDS",
                           help="local: GPUs to share out, e.g. 0,1,2,3; a run takes resources.gpus of them")
            p.add_argument("--jobs", type=_positive, metavar="N",
                           help="local: runs at once (default: the number of --gpus, else 1)")
        if name == "status":
            p.add_argument("--cancel", action="store_true",
                           help="stop the grid's queued and running runs (scancel its Slurm jobs, SIGTERM its local "
                                "runs) and mark stale 'running' states failed")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "execute":
            return _execute(Path(args.run_dir))
        runs_dir = smoke.runs_dir(args.runs_dir) if args.smoke else args.runs_dir
        grid = load_grid(args.grid, runs_dir)
        if args.smoke:
            grid = smoke.smoke_grid(grid)
        grid_dir = grid.dir(resolve(runs_dir))
        if args.command == "list":
            for run in select(grid.runs, args.only):
                print(f"{run.name}\t{run.notebook}\t{json.dumps(run.parameters)}")
            return 0
        if args.command == "status":
            return _status(grid, grid_dir, args.only, args.cancel)
        return _run(grid, args, runs_dir)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a folder one may not write: the message names the path
        print(f"error: {err}", file=sys.stderr)
        return 2


def _execute(run_dir: Path) -> int:
    honour_stop_signals()
    run, grid_dir, executor = read_spec(run_dir)
    try:
        outcome = execute(run, grid_dir, executor=executor)
    except KeyboardInterrupt:  # recorded as interrupted; the executor that started it reports it
        return 130
    return {"done": 0, "running": EXIT_OWNED}.get(outcome.status, 1)


def _status(grid: Grid, grid_dir: Path, only: str | None, cancel: bool) -> int:
    if cancel:
        cancelled = status.cancel(grid, grid_dir, only)
        print(f"cancelled {len(cancelled)} run(s): {' '.join(cancelled)}")
    table = status.grid_status(grid, grid_dir, only)
    print(table.to_string(index=False, na_rep="", float_format=lambda x: f"{x:.0f}s",
                          formatters={"detail": lambda d: d[:80]}))
    print("\n" + ", ".join(f"{n} {s}" for s, n in table["status"].value_counts().items()))
    for detail in table.loc[table["status"] == "unknown", "detail"]:  # in full: it names the file
        print(f"warning: {detail}", file=sys.stderr)
    return 0


def _run(grid: Grid, args: argparse.Namespace, runs_dir: str) -> int:
    if args.executor == "slurm" and (args.gpus or args.jobs):
        raise GridError("--gpus and --jobs are for the local executor; Slurm takes resources from the grid")
    start = time.perf_counter()
    outcomes = runner.run_grid(grid, runs_dir, args.only, args.force, args.executor, args.gpus, args.jobs)
    table = runner.summary_table(outcomes)
    grid_dir = grid.dir(resolve(runs_dir))
    grid_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(grid_dir / "summary.csv", index=False)
    print(f"\ngrid {grid.name} ({grid.path}): {len(outcomes)} run(s) in {time.perf_counter() - start:.0f}s")
    shown = table.assign(detail=table["detail"].str.slice(0, 90))
    print(shown.to_string(index=False, float_format=lambda x: f"{x:.0f}"))
    if args.executor == "slurm":
        print(f"\nsubmitted; follow it with: python -m hsnetlib.suite status {grid.path} --runs-dir {runs_dir}")
    bad = table["status"].isin(["failed", "blocked", "pending"])
    if args.smoke:
        print("\n" + smoke.report(table))
    if bad.sum():
        print(f"{bad.sum()} run(s) failed, blocked or not started; the executed notebooks in {grid_dir} keep the errors")
    return 1 if bad.sum() else 0
