"""hsnetlib.suite and its local executor: grid expansion and checks (every shipped grid), resources,
papermill runs (skip done, continue past a failure, blocked dependants, summary, clear outcomes), runs at
once pinned to their GPUs, `needs`, Ctrl-C and resume on rerun, changed configurations, state files and
status, and the run records notebooks write."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from conftest import training_run
from hsnetlib.suite import cli, execute, runner, status
from hsnetlib.suite.state import changed_parameters, converged, read_state, update_state
from hsnetlib.suite.grid import GridError, Resources, load_grid
from hsnetlib.suite.local import run_env
from hsnetlib.suite.paths import resolve

GRIDS = sorted((Path(__file__).resolve().parent.parent / "grids").glob("*.toml"))


@pytest.fixture()
def notebooks(suite_notebooks):
    return suite_notebooks


def _grid(tmp_path, notebooks, body: str):
    path = tmp_path / "grid.toml"
    path.write_text(f'name = "toy"\nnotebooks_dir = "{notebooks.as_posix()}"\n' + body)
    return path


def test_expansion_formatting_and_defaults(tmp_path, notebooks):
    path = _grid(tmp_path, notebooks, '''
[defaults]
label = "dflt"

[[run]]
name = "r-{value}-{label}"
notebook = "toy.ipynb"
expand = { value = [1, 2], label = ["x", "y"] }

[[run]]
name = "after-{value}"
notebook = "toy.ipynb"
needs = ["r-{value}-x"]
expand = { value = [2] }
parameters = { label = "{grid_dir}/r-{value}-x" }

[[run]]
name = "summary"
notebook = "toy.ipynb"
needs = ["r-*-y", "after-2", "*"]
''')
    grid = load_grid(path, runs_dir=tmp_path / "runs")
    assert [r.name for r in grid.runs] == ["r-1-x", "r-1-y", "r-2-x", "r-2-y", "after-2", "summary"]
    assert grid.runs[-1].needs == ["r-1-y", "r-2-y", "after-2", "r-1-x", "r-2-x"]  # patterns: earlier runs, once
    grid = dataclasses.replace(grid, runs=grid.runs[:-1])
    first, last = grid.runs[0], grid.runs[-1]
    assert first.parameters == {"label": "x", "value": 1, "out_dir": (tmp_path / "runs/toy/r-1-x").as_posix()}
    assert last.needs == ["r-2-x"] and last.parameters["label"] == (tmp_path / "runs/toy/r-2-x").as_posix()
    assert first.parameters["label"] == "x" and grid.runs[1].parameters["label"] == "y"


@pytest.mark.parametrize("body, message", [
    ('[[run]]\nname = "a"\nnotebook = "toy.ipynb"\nparameters = { valu = 1 }\n', "has no parameter 'valu'"),
    ('[[run]]\nname = "a"\nnotebook = "toy.ipynb"\nparameters = { value = "1" }\n', "is not a int"),
    ('[[run]]\nname = "a"\nnotebook = "toy.ipynb"\nparameters = { value = true }\n', "is not a int"),
    ('[[run]]\nname = "a"\nnotebook = "toy.ipynb"\n[[run]]\nname = "a"\nnotebook = "toy.ipynb"\n', "occurs twice"),
    ('[[run]]\nname = "a"\nnotebook = "toy.ipynb"\nneeds = ["b"]\n', "not earlier runs"),
    ('[[run]]\nname = "a"\nnotebook = "toy.ipynb"\nneeds = ["b-*"]\n', r"needs \['b-\*'\], which are not earlier"),
    ('[[run]]\nname = "a"\nnotebook = "missing.ipynb"\n', "does not exist"),
    ('[[run]]\nname = "a-{fold}"\nnotebook = "toy.ipynb"\n', "cannot format"),
    ('[[runs]]\nname = "a"\n', "unknown top-level key"),
    ('[[run]]\nname = "a"\nnotebook = "toy.ipynb"\nresources = { gpu = 1 }\n', r"run 'a': unknown resources key.*'gpu'"),
    ('[resources]\ntime = "2h"\n[[run]]\nname = "a"\nnotebook = "toy.ipynb"\n', r"\[resources\]: resources time='2h'"),
    ('[[run]]\nname = "a"\nnotebook = "toy.ipynb"\nresources = { cpus = 0 }\n', "cpus=0 is not an integer >= 1"),
    ('[[run]]\nname = "a"\nnotebook = "toy.ipynb"\nresources = { gpus = true }\n', "gpus=True is not an integer"),
    ('[[run]]\nname = "a"\nnotebook = "toy.ipynb"\nresources = { gpus = 3, nodes = 2 }\n', "do not divide over nodes=2"),
    ('[defaults]\nvalue = "sixty-four"\n[[run]]\nname = "a"\nnotebook = "toy.ipynb"\n',
     r"\[defaults\]: parameter value='sixty-four' is not a int, as notebook toy.ipynb declares"),
    ('[defaults]\nvalu = 1\n[[run]]\nname = "a"\nnotebook = "toy.ipynb"\n', r"\[defaults\] 'valu' is a parameter of no notebook"),
    ('[[run]]\nname = ".."\nnotebook = "toy.ipynb"\n', r"run name '\.\.' is not a plain folder name"),
    ('[[run]]\nname = "/tmp/x"\nnotebook = "toy.ipynb"\n', "is not a plain folder name"),
    ('[[run]]\nname = ""\nnotebook = "toy.ipynb"\n', "run name '' is not a plain folder name"),
    ('[[run]]\nname = "a/{value}"\nnotebook = "toy.ipynb"\nexpand = { value = [1] }\n', "'a/1' is not a plain"),
])
def test_bad_grids_are_refused_before_anything_runs(tmp_path, notebooks, body, message):
    path = _grid(tmp_path, notebooks, body)
    with pytest.raises(GridError, match=message) as err:
        load_grid(path, runs_dir=tmp_path / "runs")
    assert str(path) in str(err.value) or "cannot format" in message


def test_resources_defaults_and_per_run_overrides(tmp_path, notebooks):
    grid = load_grid(_grid(tmp_path, notebooks, '''
[resources]
gpus = 1
time = 60
partition = "gpu"
sbatch = { exclusive = true, comment = "hsnet" }

[[run]]
name = "big"
notebook = "toy.ipynb"
resources = { gpus = 4, cpus = 32, mem_gb = 200, time = 2880, sbatch = { comment = "train" } }

[[run]]
name = "small"
notebook = "toy.ipynb"
'''), runs_dir=tmp_path / "runs")
    big, small = grid.runs
    assert big.resources == Resources(gpus=4, cpus=32, mem_gb=200, time=2880, partition="gpu",
                                            sbatch={"exclusive": True, "comment": "train"})
    assert small.resources == Resources(gpus=1, time=60, partition="gpu",
                                              sbatch={"exclusive": True, "comment": "hsnet"})


@pytest.mark.parametrize("path", GRIDS, ids=[p.stem for p in GRIDS])
def test_shipped_grids_load_and_expand(path, tmp_path):
    """A typo in a shipped grid (a parameter, a key, a resource, a need) fails here."""
    grid = load_grid(path, runs_dir=tmp_path)
    names = [r.name for r in grid.runs]
    assert grid.runs and len(set(names)) == len(names)
    for run in grid.runs:
        assert run.parameters["out_dir"] == (tmp_path / grid.name / run.name).as_posix()
        assert set(run.needs) <= set(names) and isinstance(run.resources, Resources)


def test_kernels_of_runs_started_at_once_talk_over_ipc_and_share_the_cores(tmp_path, notebooks, monkeypatch):
    """Kernels on TCP pick their ports before binding them, so runs started at once raced for one ("Address
    already in use": the kernel died before replying). Over IPC there is no port, and no TCP warning. CPU runs
    at once split the cores between them (more torch threads than cores: ten times slower), unless the user
    chose a thread count."""
    path = _grid(tmp_path, notebooks, '[[run]]\nname = "r{value}"\nnotebook = "toy.ipynb"\n'
                 'expand = { value = [1, 2, 3, 4] }\n')
    runs = tmp_path / "runs"
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    share = str(max(1, len(os.sched_getaffinity(0)) // 4))
    assert cli.main(["run", str(path), "--runs-dir", str(runs), "--jobs", "4"]) == 0
    for value in (1, 2, 3, 4):
        log = (runs / "toy" / f"r{value}" / "log.txt").read_text()
        assert "over TCP" not in log and "Address already in use" not in log, log
        assert json.loads((runs / "toy" / f"r{value}" / "metrics.json").read_text())["threads"] == share
    assert run_env({"OMP_NUM_THREADS": "3"}, None, 4)["OMP_NUM_THREADS"] == "3"  # the user's choice
    assert "OMP_NUM_THREADS" not in run_env({}, None, 1)  # one run at a time: torch's own default
    on_gpus = run_env({}, ["0", "1"], 4)  # under --gpus: its GPUs, and torch's default threads
    assert on_gpus["CUDA_VISIBLE_DEVICES"] == "0,1" and "OMP_NUM_THREADS" not in on_gpus


def _outcomes(runs_dir, grid="toy"):
    return pd.read_csv(runs_dir / grid / "summary.csv").set_index("run")


def test_run_skip_continue_past_failure_and_summary(tmp_path, notebooks, capsys):
    path = _grid(tmp_path, notebooks, """
[[run]]
name = "bad"
notebook = "toy.ipynb"
parameters = { outcome = "fail", label = "on purpose" }

[[run]]
name = "blocked"
notebook = "toy.ipynb"
needs = ["bad"]

[[run]]
name = "ok"
notebook = "toy.ipynb"
parameters = { value = 7 }
""")
    runs = tmp_path / "runs"
    assert cli.main(["run", str(path), "--runs-dir", str(runs), "--jobs", "2"]) == 1
    out = capsys.readouterr().out
    summary = _outcomes(runs)
    assert summary["status"].to_dict() == {"bad": "failed", "blocked": "blocked", "ok": "done"}
    assert "RuntimeError: boom on purpose" in summary.loc["bad", "detail"]
    assert "value=7" in out and "failed, blocked or not started" in out
    # the failed run's executed notebook keeps the error; it wrote no record
    executed = nbformat.read(runs / "toy" / "bad" / "toy.ipynb", as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors and errors[0].ename == "RuntimeError" and not (runs / "toy" / "bad" / "metrics.json").exists()
    record = json.loads((runs / "toy" / "ok" / "metrics.json").read_text())
    assert record["parameters"] == {"value": 7, "label": "a"} and record["summary"] == {"value": 7}
    state = read_state(runs / "toy" / "ok")
    assert state["status"] == "done" and state["attempt"] == 1 and state["executor"] == "local"
    assert state["parameters"]["value"] == 7 and state["host"] == os.uname().nodename

    # a second invocation skips what is done; --force re-runs it. A marker in the record tells the two apart
    # (file times may not change between two writes on a coarse-timestamp file system).
    metrics = runs / "toy" / "ok" / "metrics.json"
    metrics.write_text(json.dumps({**record, "marker": "left by the test"}))
    marked = metrics.read_bytes()
    outcomes = runner.run_grid(load_grid(path, runs), runs, only="ok")
    assert [(o.run, o.status) for o in outcomes] == [("ok", "skipped")]
    assert metrics.read_bytes() == marked
    (runs / "toy" / "ok" / "leftover.txt").write_text("from an earlier attempt")
    assert cli.main(["run", str(path), "--runs-dir", str(runs), "--only", "o*", "--force"]) == 0
    rewritten = json.loads(metrics.read_text())
    assert "marker" not in rewritten and rewritten["summary"] == {"value": 7}
    assert not (runs / "toy" / "ok" / "leftover.txt").exists()

    # status: every run with its state, from the state files
    capsys.readouterr()
    assert cli.main(["status", str(path), "--runs-dir", str(runs)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:4]}
    assert "failed" in rows["bad"] and "RuntimeError: boom on purpose" in rows["bad"]
    assert "blocked" in rows["blocked"] and "needs bad" in rows["blocked"]
    assert "done" in rows["ok"] and "value=7" in rows["ok"] and str(runs / "toy" / "ok" / "log.txt") in rows["ok"]


def test_changed_configuration_is_reported_not_mixed(tmp_path, notebooks):
    body = '[[run]]\nname = "r"\nnotebook = "toy.ipynb"\nparameters = {{ value = {} }}\n'
    runs = tmp_path / "runs"
    assert cli.main(["run", str(_grid(tmp_path, notebooks, body.format(1))), "--runs-dir", str(runs)]) == 0
    path = _grid(tmp_path, notebooks, body.format(2))
    assert cli.main(["run", str(path), "--runs-dir", str(runs)]) == 1
    detail = _outcomes(runs).loc["r", "detail"]
    assert "configuration changed" in detail and "value (was 1, now 2)" in detail and "--force" in detail
    assert json.loads((runs / "toy" / "r" / "metrics.json").read_text())["summary"] == {"value": 1}
    assert cli.main(["run", str(path), "--runs-dir", str(runs), "--force"]) == 0
    assert json.loads((runs / "toy" / "r" / "metrics.json").read_text())["summary"] == {"value": 2}


def test_clear_outcomes_without_record_dead_kernel_missing_kernel(tmp_path, notebooks, monkeypatch, capsys):
    path = _grid(tmp_path, notebooks, """
[[run]]
name = "silent"
notebook = "toy.ipynb"
parameters = { outcome = "silent" }

[[run]]
name = "dies"
notebook = "toy.ipynb"
parameters = { outcome = "die" }
""")
    runs = tmp_path / "runs"
    assert cli.main(["run", str(path), "--runs-dir", str(runs), "--jobs", "2"]) == 1
    summary = _outcomes(runs)
    assert summary["status"].to_dict() == {"silent": "failed", "dies": "failed"}
    assert summary.loc["silent", "detail"] == "the notebook finished without writing a readable metrics.json"
    assert summary.loc["dies", "detail"].startswith("DeadKernelError")
    assert read_state(runs / "toy" / "dies")["status"] == "failed"
    monkeypatch.setattr(execute, "KERNEL_NAME", "no-such-kernel")
    capsys.readouterr()
    assert cli.main(["run", str(path), "--runs-dir", str(runs)]) == 2
    assert "the Jupyter kernel 'no-such-kernel' is not installed" in capsys.readouterr().err


def test_independent_runs_at_once_on_their_gpus_and_needs(tmp_path, notebooks):
    """a and b each wait for the other to have started (one after the other, they would time out); c needs both."""
    runs = tmp_path / "runs"
    path = _grid(tmp_path, notebooks, f"""
[resources]
gpus = 1

[[run]]
name = "a"
notebook = "toy.ipynb"
parameters = {{ wait_for = "{runs}/toy/b/started" }}

[[run]]
name = "b"
notebook = "toy.ipynb"
parameters = {{ wait_for = "{runs}/toy/a/started" }}

[[run]]
name = "c"
notebook = "toy.ipynb"
needs = ["a", "b"]
""")
    assert cli.main(["run", str(path), "--runs-dir", str(runs), "--gpus", "0,1"]) == 0
    records = {n: json.loads((runs / "toy" / n / "metrics.json").read_text()) for n in "abc"}
    a, b, c = records["a"], records["b"], records["c"]
    assert max(a["started"], b["started"]) < min(a["finished"], b["finished"])  # they overlapped
    assert {a["gpus"], b["gpus"]} == {"0", "1"} and c["gpus"] in ("0", "1")  # each pinned to its own GPU
    assert c["started"] > max(a["finished"], b["finished"])  # c started after what it needs
    assert a["provenance"]["cuda_visible_devices"] == a["gpus"] and a["provenance"]["host"] == os.uname().nodename


def test_run_with_two_gpus_trains_with_ddp_across_two_processes(tmp_path, notebooks, tiny_voc, reference_training,
                                                               reference_dir, monkeypatch):
    """resources.gpus = 2 under --gpus: torchrun starts one process per GPU (gloo here, on CPU), each with half of
    the global batch of 2, and trains as one process does (the same weights after one epoch, 2 steps, and the
    same metrics); rank 0 records."""
    import torch
    from conftest import AFTER_EPOCH0, epochs_of
    from hsnetlib.utils import load_checkpoint

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runs = tmp_path / "runs"
    path = _grid(tmp_path, notebooks, training_run(tiny_voc, epochs=1, resources="gpus = 2"))
    assert cli.main(["run", str(path), "--runs-dir", str(runs), "--gpus", "0,1"]) == 0
    run_dir = runs / "toy" / "train"
    assert json.loads((run_dir / "env.json").read_text())["world_size"] == 2
    assert (run_dir / "rank1" / "train.ipynb").is_file() and not (run_dir / "rank1" / "metrics.json").exists()
    record = json.loads((run_dir / "metrics.json").read_text())
    assert len(record["history"]) == 1 and record["provenance"]["cuda_visible_devices"] == "0,1"
    (epoch,) = epochs_of(run_dir)
    assert epoch == pytest.approx(reference_training[0], rel=1e-5)
    ddp, single = (load_checkpoint(p)["state_dict"] for p in (run_dir / "last.pt", reference_dir / AFTER_EPOCH0))
    assert ddp.keys() == single.keys()
    diff = torch.cat([(ddp[k].float() - v.float()).abs().flatten() for k, v in single.items()])
    # Summation order differs between 1 and 2 processes. Adam turns the resulting float noise of a gradient
    # element near zero (|g| ~ eps) into an update difference of a fraction of lr: bound every weight by 0.1 lr
    # per step, and all but a handful by 1e-6 (a wrong batch split moves nearly all by ~lr).
    config = json.loads((run_dir / "config.json").read_text())
    steps = config["train_episodes"] // config["bsz"]
    assert steps == 2 and diff.max() < 0.1 * config["lr"] * steps
    assert (diff > 1e-6).float().mean() < 1e-4


def test_interrupted_grid_resumes_its_training_on_rerun(tmp_path, notebooks, tiny_voc, reference_training,
                                                        monkeypatch):
    """SIGINT to the suite once the training wrote last.pt: nothing recorded; a rerun resumes (env.json) and
    ends with the metrics of an uninterrupted training."""
    from conftest import epochs_of

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runs = tmp_path / "runs"
    path = _grid(tmp_path, notebooks, training_run(tiny_voc, epochs=4))
    run_dir = runs / "toy" / "train"
    command = [sys.executable, "-m", "hsnetlib.suite", "run", str(path), "--runs-dir", str(runs)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,  # as from a
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # terminal: Ctrl-C works
    deadline = time.monotonic() + 300
    while not (run_dir / "last.pt").exists():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0]
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    out = first.communicate(timeout=120)[0]
    assert first.returncode == 1, out
    assert "interrupted" in out
    state = read_state(run_dir)
    assert state["status"] == "failed" and state["detail"].startswith("interrupted")
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "params.json").exists()
    interrupted_at = len(epochs_of(run_dir))
    assert 1 <= interrupted_at < 4

    assert cli.main(["run", str(path), "--runs-dir", str(runs)]) == 0
    env = json.loads((run_dir / "env.json").read_text())
    assert [r["epoch"] for r in env["resumes"]] == [interrupted_at]
    assert read_state(run_dir)["attempt"] == 2
    resumed = epochs_of(run_dir)
    assert len(resumed) == len(reference_training) == 4
    for row, reference in zip(resumed, reference_training):
        assert row == pytest.approx(reference, rel=1e-6)



def test_relative_runs_dir_gives_the_parameters_a_rerun_compares_with(tmp_path, notebooks):
    """`make demo` passes no --runs-dir ("runs", relative); the executed run records the absolute folder. The
    grid must expand to the same parameters either way, or a finished run reads as "configuration changed"."""
    path = _grid(tmp_path, notebooks, '[[run]]\nname = "r"\nnotebook = "toy.ipynb"\nparameters = { value = 1 }\n')
    relative, absolute = load_grid(path, "runs"), load_grid(path, resolve("runs"))
    assert relative.runs[0].parameters == absolute.runs[0].parameters
    out_dir = Path(relative.runs[0].parameters["out_dir"])
    assert out_dir.is_absolute() and out_dir == resolve("runs") / "toy" / "r"
    state_dir = tmp_path / "r"
    update_state(state_dir, parameters=absolute.runs[0].parameters)
    assert changed_parameters(relative.runs[0], state_dir) == []


# -- issue 18: faults and bad inputs ---------------------------------------------------------------------
def _suite(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """`python -m hsnetlib.suite ARGS` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "hsnetlib.suite", *args], capture_output=True, text=True,
                          timeout=300, **kwargs)


def test_force_validates_for_the_executor_before_clearing_and_user_errors_are_one_line(tmp_path, notebooks):
    runs = tmp_path / "runs"
    path = _grid(tmp_path, notebooks, '[[run]]\nname = "r"\nnotebook = "toy.ipynb"\n')
    done = _suite("run", str(path), "--runs-dir", str(runs))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "without encryption" not in done.stdout + done.stderr  # the kernel's chatter goes to the run's log.txt
    assert "start r (toy.ipynb)" in done.stdout and "[1/1] r: done" in done.stdout
    record = (runs / "toy" / "r" / "metrics.json").read_bytes()
    # Slurm needs a time limit: refused before --force clears anything; one line, exit 2, no traceback
    refused = _suite("run", str(path), "--runs-dir", str(runs), "--executor", "slurm", "--force")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("error: ") and "no resources time" in refused.stderr
    assert (runs / "toy" / "r" / "metrics.json").read_bytes() == record
    for jobs in ("-1", "0"):
        bad = _suite("run", str(path), "--runs-dir", str(runs), "--jobs", jobs)
        assert bad.returncode == 2 and "at least 1 run at once" in bad.stderr and "Traceback" not in bad.stderr
    missing = _suite("status", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: grid file {tmp_path / 'nope.toml'} does not exist"


def test_unreadable_states_corrupt_records_and_stale_running_states(tmp_path, notebooks, capsys):
    runs = tmp_path / "runs"
    names = ("list", "bytes", "corrupt", "stale-pid", "stale-nopid")
    path = _grid(tmp_path, notebooks, "".join(f'[[run]]\nname = "{n}"\nnotebook = "toy.ipynb"\n' for n in names))
    folders = {n: runs / "toy" / n for n in names}
    for folder in folders.values():
        folder.mkdir(parents=True)
    (folders["list"] / "suite-state.json").write_text("[]")
    (folders["bytes"] / "suite-state.json").write_bytes(os.urandom(64))
    (folders["corrupt"] / "metrics.json").write_text('{"summary": {"value": 1')  # a truncated record: not done
    parameters = {r.name: r.parameters for r in load_grid(path, runs).runs}
    update_state(folders["stale-pid"], status="running", pid=os.getppid(), host=os.uname().nodename,  # a live pid,
                 parameters=parameters["stale-pid"])                              # not the run's owner (no lock)
    update_state(folders["stale-nopid"], status="running", parameters=parameters["stale-nopid"])

    assert cli.main(["status", str(path), "--runs-dir", str(runs)]) == 0
    out, err = capsys.readouterr()
    rows = {line.split()[0]: line for line in out.splitlines()[1:6]}
    assert "unknown" in rows["list"] and f"warning: {folders['list'] / 'suite-state.json'}: unreadable run state" in err
    assert "unknown" in rows["bytes"] and "pending" in rows["corrupt"]
    assert "failed" in rows["stale-pid"] and "interrupted" in rows["stale-nopid"]
    assert cli.main(["status", str(path), "--runs-dir", str(runs), "--cancel"]) == 0
    assert "cancelled 2 run(s): stale-pid stale-nopid" in capsys.readouterr().out
    assert read_state(folders["stale-pid"])["status"] == "failed"

    assert cli.main(["run", str(path), "--runs-dir", str(runs), "--jobs", "2"]) == 1
    summary = _outcomes(runs)
    assert summary["status"].to_dict() == {"list": "failed", "bytes": "failed", "corrupt": "done",
                                           "stale-pid": "done", "stale-nopid": "done"}
    assert str(folders["bytes"] / "suite-state.json") in summary.loc["bytes", "detail"]
    assert "--force" in summary.loc["list", "detail"]
    assert json.loads((folders["corrupt"] / "metrics.json").read_text())["summary"] == {"value": 1}
    assert cli.main(["run", str(path), "--runs-dir", str(runs), "--only", "list", "--force"]) == 0
    assert read_state(folders["list"])["status"] == "done"


def test_one_run_one_owner(tmp_path, notebooks):
    """A run whose lock another process holds is not started again: not by a second `suite run` that finds it
    running, nor by one that planned it just before (the executing process checks the lock)."""
    from hsnetlib.suite.execute import execute as execute_run
    from hsnetlib.suite.state import RunLock, lock_owner

    runs = tmp_path / "runs"
    path = _grid(tmp_path, notebooks, '[[run]]\nname = "r"\nnotebook = "toy.ipynb"\n')
    grid = load_grid(path, runs)
    out_dir = grid.runs[0].out_dir(grid.dir(runs))
    with RunLock(out_dir) as lock:
        assert lock.acquire() and not RunLock(out_dir).acquire()
        assert lock_owner(out_dir) == f"{os.uname().nodename} {os.getpid()}"
        outcome = execute_run(grid.runs[0], grid.dir(runs))
        assert outcome.status == "running" and "already running" in outcome.detail
        assert cli.main(["run", str(path), "--runs-dir", str(runs)]) == 0  # its process finds the lock held
        assert _outcomes(runs).loc["r", "status"] == "running"
        assert not (out_dir / "started").exists() and not (out_dir / "suite-state.json").exists()
        update_state(out_dir, status="running", pid=os.getpid(), host=os.uname().nodename)
        assert cli.main(["run", str(path), "--runs-dir", str(runs), "--force"]) == 0
        assert "already running" in _outcomes(runs).loc["r", "detail"]
    assert lock_owner(out_dir) is None  # released: the stale state no longer blocks
    assert cli.main(["run", str(path), "--runs-dir", str(runs)]) == 0 and read_state(out_dir)["status"] == "done"


def test_background_suite_stops_its_runs_on_sigterm(tmp_path, notebooks):
    """Started from a script in the background (SIGINT ignored, inherited by the runs): SIGTERM stops the run
    at once (no 60 s wait and SIGKILL), recorded as interrupted."""
    runs = tmp_path / "runs"
    path = _grid(tmp_path, notebooks, f'[[run]]\nname = "w"\nnotebook = "toy.ipynb"\n'
                                      f'parameters = {{ wait_for = "{tmp_path}/never" }}\n')
    suite_run = subprocess.Popen([sys.executable, "-m", "hsnetlib.suite", "run", str(path), "--runs-dir", str(runs)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 120
    while not (runs / "toy" / "w" / "started").exists():
        assert suite_run.poll() is None and time.monotonic() < deadline, suite_run.communicate()[0]
        time.sleep(0.1)
    stopped = time.monotonic()
    suite_run.send_signal(signal.SIGTERM)
    out = suite_run.communicate(timeout=90)[0]
    assert time.monotonic() - stopped < 40 and suite_run.returncode == 1, out
    assert "code -9" not in out and "interrupted" in out
    state = read_state(runs / "toy" / "w")
    assert state["status"] == "failed" and state["detail"].startswith("interrupted")


def test_unconverged_training_is_done_and_its_dependants_run(tmp_path, notebooks, capsys):
    runs = tmp_path / "runs"
    path = _grid(tmp_path, notebooks, '[[run]]\nname = "train"\nnotebook = "toy.ipynb"\n'
                 'parameters = { converged = false }\n[[run]]\nname = "evaluate"\nnotebook = "toy.ipynb"\n'
                 'needs = ["train"]\n')
    assert cli.main(["run", str(path), "--runs-dir", str(runs), "--jobs", "2"]) == 0
    assert _outcomes(runs)["status"].to_dict() == {"train": "done", "evaluate": "done"}
    capsys.readouterr()
    assert cli.main(["status", str(path), "--runs-dir", str(runs)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:3]}
    assert "done (not converged)" in rows["train"] and "not converged" not in rows["evaluate"]


def test_full_disk_is_named_and_leaves_no_half_file(tmp_path, notebooks, monkeypatch):
    import errno

    from hsnetlib import utils
    from hsnetlib.suite.execute import execute as execute_run

    real_replace = os.replace

    def full(src, dst):
        if str(dst).endswith(".ipynb"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(utils.os, "replace", full)
    with pytest.raises(OSError, match=f"no space left on device: {tmp_path / 'x.ipynb'}"):
        utils.atomic_write(tmp_path / "x.ipynb", "{}")
    assert not list(tmp_path.iterdir())  # no temporary file left
    runs = tmp_path / "runs"
    grid = load_grid(_grid(tmp_path, notebooks, '[[run]]\nname = "r"\nnotebook = "toy.ipynb"\n'), runs)
    outcome = execute_run(grid.runs[0], grid.dir(runs))
    out_dir = grid.runs[0].out_dir(grid.dir(runs))
    assert outcome.status == "failed" and "no space left on device" in outcome.detail
    assert str(out_dir / "toy.ipynb") in outcome.detail and not (out_dir / "toy.ipynb").exists()
    assert read_state(out_dir)["status"] == "failed" and not (out_dir / "metrics.json").exists()


def test_hand_off_and_multi_node_resources(tmp_path, notebooks):
    """One hand-off file for both executors; G GPUs over N nodes: N nodes with G/N tasks and GPUs each."""
    from hsnetlib.suite.execute import read_spec, write_spec
    from hsnetlib.suite.slurm import sbatch_parameters

    grid = load_grid(_grid(tmp_path, notebooks, '[[run]]\nname = "r"\nnotebook = "toy.ipynb"\n'
                           'resources = { gpus = 8, nodes = 2, time = 60 }\n'), tmp_path / "runs")
    run, grid_dir = grid.runs[0], grid.dir(tmp_path / "runs")
    assert read_spec(write_spec(run, grid_dir, "slurm").parent) == (run, grid_dir, "slurm")
    params = sbatch_parameters(run, grid, [])
    assert (params["nodes"], params["ntasks_per_node"], params["gpus_per_node"]) == (2, 4, 4)


TWO_NODE_TRAINING = '''import sys, torch
sys.path.insert(0, {tests!r})
from conftest import TOY_TRAINING
from hsnetlib.train import TrainConfig, train
torch.set_num_threads(1)
train(TrainConfig(**TOY_TRAINING, datapath={data!r}, splits_dir={splits!r}, epochs=1, run_dir={run_dir!r}))
'''


def test_torchrun_over_two_node_groups_trains_as_one_process(tmp_path, tiny_voc, reference_training, monkeypatch):
    """What a 2-node Slurm job does, on this machine: torchrun --nnodes 2 (two node groups of one process each,
    gloo, a localhost rendezvous) trains with the same global batch as one process, to the same metrics."""
    import socket

    from conftest import epochs_of

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    script = tmp_path / "train.py"
    script.write_text(TWO_NODE_TRAINING.format(tests=str(Path(__file__).parent), data=str(tiny_voc),
                                               splits=str(tiny_voc / "splits"), run_dir=str(tmp_path / "run")))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
                               f"--node-rank={rank}", "--master-addr=127.0.0.1", f"--master-port={port}", str(script)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(outputs)
    assert json.loads((tmp_path / "run" / "env.json").read_text())["world_size"] == 2
    (epoch,) = epochs_of(tmp_path / "run")
    assert epoch == pytest.approx(reference_training[0], rel=1e-5)


# -- smoke runs ----------------------------------------------------------------------------------------------
PAPER = Path(__file__).resolve().parent.parent / "grids" / "paper.toml"


def test_smoke_budget_representatives_and_unsmokable_benchmarks(tmp_path):
    from hsnetlib.suite import smoke
    from hsnetlib.suite.notebook import SYNTHETIC

    grid = load_grid(PAPER, smoke.runs_dir(tmp_path))
    smoked = smoke.smoke_grid(grid)
    grid_dir = tmp_path / "smoke" / "paper"
    for before, run in zip(grid.runs, smoked.runs):
        assert run.name == before.name and run.needs == before.needs
        params = run.parameters
        assert params.get("device", "cpu") == "cpu" and params.get("weights", "none") == "none"
        assert params.get("img_size", 32) == 32 and params.get("epochs", 1) == 1
        assert params.get("data_root", "data/synthetic") == "data/synthetic"
        assert params.get("results_dir", f"{grid_dir.as_posix()}/results") == f"{grid_dir.as_posix()}/results"
        assert Path(params["out_dir"]).parent == grid_dir
        if "checkpoint" in params:  # the smoke's own trainings, never the real ones
            assert params["checkpoint"].startswith(grid_dir.as_posix())
    shown = {r.name: r.parameters["show_episodes"] for r in smoked.runs if r.notebook.startswith("10_")}
    assert shown and all(v == [0] for v in shown.values())
    names = smoke.representatives(smoked)
    chosen = [r for r in smoked.runs if r.name in names]
    # every notebook with every benchmark and every notable option value of the grid, and what they need
    assert set().union(*map(smoke._features, chosen)) == set().union(*map(smoke._features, smoked.runs))
    assert {"01_train.ipynb:benchmark='coco'", "02_evaluate.ipynb:shots=10", "01_train.ipynb:kernel='original'",
            "02_evaluate.ipynb:benchmark='fss'", "01_train.ipynb:backbone='vgg16'"} <= set().union(*map(smoke._features, chosen))
    assert {r.notebook for r in chosen} == {r.notebook for r in smoked.runs}
    assert all(set(r.needs) <= set(names) for r in chosen if r.name != "results") and len(names) < len(smoked.runs)
    assert smoke.subgrid(smoked, names).runs[-1].needs == names[:-1]  # results: after every representative
    assert smoke.unsmokable(smoked) == {}  # every benchmark of the paper grid has a synthetic layout
    odd = dataclasses.replace(smoked, runs=[dataclasses.replace(smoked.runs[0], parameters={
        **smoked.runs[0].parameters, "benchmark": "no-such-benchmark"})])  # every registered one has a layout
    assert set(SYNTHETIC) >= {"pascal", "coco", "fss", "deepglobe", "isic", "lung"}
    assert "no synthetic 'no-such-benchmark' layout" in smoke.unsmokable(odd)[smoked.runs[0].name]


def _smoke_paper(tmp_path, names=None):
    from hsnetlib.suite import smoke

    runs = smoke.runs_dir(tmp_path)
    smoked = smoke.smoke_grid(load_grid(PAPER, runs))
    keep = smoke.subgrid(smoked, names or smoke.representatives(smoked)).runs
    outcomes = runner.run_grid(dataclasses.replace(smoked, runs=keep), runs, jobs=2)
    bad = {o.run: f"{o.status}: {o.detail}" for o in outcomes if o.status != "done"}
    assert not bad, bad
    assert len(outcomes) == len(keep) and any(r.notebook == "11_results.ipynb" for r in keep)
    return runs / smoked.name


def test_smoke_of_a_coco_training_its_10_shot_evaluation_and_the_results(tmp_path):
    """Part of `make test` (a smoke run costs 15-30 s of kernel start, imports and tiny training on 2 idle cores;
    the 32 representatives take minutes: `make smoke-test`): the paper grid's COCO-20i training, its 1/5/10-shot
    evaluation and the results run over their records, executed for real at the smoke budget. Unconverged is
    not failed: the training (two episodes) stays at the all-background solution, is done with converged: false
    in its record, and the evaluation that needs it and the results run are done too. The evaluation of its
    best.pt, another run, records that the training did not converge, and the results tables mark its lines."""
    grid_dir = _smoke_paper(tmp_path, ["coco-resnet50-train-fold0", "coco-resnet50-evaluate-fold0", "results"])
    record = json.loads((grid_dir / "coco-resnet50-train-fold0" / "metrics.json").read_text())
    assert record["summary"]["converged"] is False and record["trainings"][0]["converged"] is False
    assert not converged(record)
    evaluations = json.loads((grid_dir / "coco-resnet50-evaluate-fold0" / "metrics.json").read_text())["evaluations"]
    assert [e["nshot"] for e in evaluations] == [1, 5, 10] and all(e["converged"] is False for e in evaluations)
    results_dir = grid_dir / "results"
    for table in ("table2", "backbones"):  # COCO-20i 1/5-shot; HSNet across backbones (ResNet50's line)
        frame = pd.read_csv(results_dir / f"{table}.csv", dtype={"runs": str}, keep_default_na=False)
        ours = frame[frame["runs"] == "coco-resnet50-evaluate-fold0"]
        assert sorted(ours["shot"]) == [1, 5] and set(ours["status"]) == {"not converged"}, (table, ours)
        assert set(ours["curves"]) == {"curves_main.png"} and (results_dir / "curves_main.png").is_file()
        assert "| not converged |" in (results_dir / f"{table}.md").read_text(), table


@pytest.mark.smoke
def test_smoke_of_every_kind_of_paper_run(tmp_path):
    """One run of every notebook with every benchmark and notable option value of grids/paper.toml
    (smoke.representatives), with what they need, executed for real at the smoke budget (`make smoke-test`;
    `make smoke` smokes the whole grid). Every one ends done: a failure is named with its error."""
    _smoke_paper(tmp_path)
