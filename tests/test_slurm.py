"""The Slurm executor on a real one-node cluster (started here: see slurm_cluster.py): the grid goes
through sbatch with `needs` as afterok dependencies, a training requeued mid-run resumes and ends with
the metrics of an uninterrupted one, a failed run shows as failed in `status` (its dependant blocked)
while the others finish, and `status --cancel` cancels. The cluster has no accounting (no sacct).

Deselect with ``-m "not slurm"``. Without the daemons and without root these tests skip and say why;
in CI (CI=true) that is a failure instead.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from conftest import epochs_of, training_run
from hsnetlib.suite import cli, status
from hsnetlib.suite.state import read_state
from hsnetlib.suite.grid import load_grid
from slurm_cluster import Cluster, unavailable

pytestmark = pytest.mark.slurm
TIMEOUT_S = 240


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A running one-node cluster; SLURM_CONF points sbatch, squeue, scontrol and scancel at it."""
    reason = unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the Slurm tests cannot run in CI: {reason}")
        pytest.skip(reason)
    cluster = Cluster(tmp_path_factory.mktemp("slurm")).start()
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    yield cluster
    cluster.stop()
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous


def _grid(tmp_path: Path, notebooks: Path, body: str) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(f'name = "g"\nnotebooks_dir = "{notebooks.as_posix()}"\n[resources]\ncpus = 1\ntime = 10\n'
                    + body)
    return path


def _wait(condition, message: str, timeout: float = TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, message() if callable(message) else message
        time.sleep(0.2)
    return value


def _statuses(path: Path, runs: Path) -> dict[str, str]:
    grid = load_grid(path, runs)
    return status.grid_status(grid, grid.dir(runs)).set_index("run")["status"].to_dict()


def _settled(path: Path, runs: Path):
    """The statuses once no run is pending, queued or running."""
    statuses = _statuses(path, runs)
    return statuses if not set(statuses.values()) & {"pending", "queued", "running"} else None


def _logs(runs: Path) -> str:
    return "\n".join(f"== {p}\n{p.read_text()[-3000:]}" for p in sorted(runs.rglob("*_log.out")))


REQUEUES = {
    "scontrol requeue": lambda job: ["scontrol", "requeue", job],  # Slurm requeues (admin, PreemptMode=REQUEUE)
    "time limit signal": lambda job: ["scancel", "--signal=USR2", job],  # submitit checkpoints and requeues
}


@pytest.mark.parametrize("requeue", REQUEUES)
def test_grid_through_sbatch_needs_and_requeued_training_resumes(slurm, tmp_path, suite_notebooks, tiny_voc,
                                                                 reference_training, monkeypatch, requeue):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runs = tmp_path / "runs"
    path = _grid(tmp_path, suite_notebooks, training_run(tiny_voc, epochs=4) + """
[[run]]
name = "evaluate"
notebook = "toy.ipynb"
needs = ["train"]
""")
    assert cli.main(["run", str(path), "--runs-dir", str(runs), "--executor", "slurm"]) == 0
    train_dir, evaluate_dir = runs / "g" / "train", runs / "g" / "evaluate"
    job = read_state(train_dir)["job_id"]
    depends = subprocess.run(["squeue", "-h", "-o", "%E", "-j", read_state(evaluate_dir)["job_id"]],
                             capture_output=True, text=True, check=True).stdout
    assert f"afterok:{job}" in depends

    _wait(lambda: (train_dir / "last.pt").exists(), lambda: f"no last.pt\n{_logs(runs)}")
    assert _statuses(path, runs) == {"train": "running", "evaluate": "queued"}
    first_attempt = read_state(train_dir)["pid"]
    subprocess.run(REQUEUES[requeue](job), check=True)
    _wait(lambda: "PENDING" in subprocess.run(["squeue", "-h", "-o", "%T", "-j", job], capture_output=True,
                                              text=True).stdout, "the job was not requeued")
    # Skip Slurm's 2-minute hold, which also keeps a requeued job from starting in the second its old credential
    # was revoked (slurmctld then kills it: "Job credential revoked"): the first attempt ends and a second passes.
    _wait(lambda: not psutil.pid_exists(first_attempt), "the first attempt did not end")
    time.sleep(1.0)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    assert _wait(lambda: _settled(path, runs), lambda: _logs(runs)) == {"train": "done", "evaluate": "done"}

    env = json.loads((train_dir / "env.json").read_text())
    assert len(env["resumes"]) == 1 and 1 <= env["resumes"][0]["epoch"] < 4
    resumed = epochs_of(train_dir)
    assert len(resumed) == len(reference_training) == 4
    for row, reference in zip(resumed, reference_training):
        assert row == pytest.approx(reference, rel=1e-6)
    state = read_state(train_dir)
    assert state["attempt"] == 2 and state["job_id"] == job and state["node"] == slurm.node
    train, evaluate = (json.loads((d / "metrics.json").read_text()) for d in (train_dir, evaluate_dir))
    assert train["provenance"]["slurm_job_id"] == job and train["provenance"]["node"] == slurm.node
    assert evaluate["started"] > train["finished"]  # afterok
    if requeue == "time limit signal":  # submitit called NotebookJob.checkpoint and requeued the job itself
        log = Path(state["job_log"]).read_text()
        assert "Calling checkpoint method" in log and f"Requeued job {job}" in log


def test_failed_run_blocks_its_dependant_the_rest_finish_and_cancel(slurm, tmp_path, suite_notebooks, capsys):
    runs = tmp_path / "runs"
    path = _grid(tmp_path, suite_notebooks, f"""
[[run]]
name = "bad"
notebook = "toy.ipynb"
parameters = {{ outcome = "fail", label = "on purpose" }}

[[run]]
name = "after-bad"
notebook = "toy.ipynb"
needs = ["bad"]

[[run]]
name = "ok"
notebook = "toy.ipynb"
parameters = {{ value = 3 }}

[[run]]
name = "waits"
notebook = "toy.ipynb"
parameters = {{ wait_for = "{tmp_path}/never" }}
""")
    assert cli.main(["run", str(path), "--runs-dir", str(runs), "--executor", "slurm"]) == 0
    waits = runs / "g" / "waits"
    _wait(lambda: (waits / "started").exists() and _statuses(path, runs)["ok"] == "done"
          and _statuses(path, runs)["bad"] == "failed", lambda: _logs(runs))
    assert _statuses(path, runs) == {"bad": "failed", "after-bad": "blocked", "ok": "done", "waits": "running"}
    assert cli.main(["run", str(path), "--runs-dir", str(runs), "--executor", "slurm", "--only", "waits"]) == 0
    assert "already running (Slurm job" in pd.read_csv(runs / "g" / "summary.csv").set_index("run").loc["waits", "detail"]
    capsys.readouterr()
    assert cli.main(["status", str(path), "--runs-dir", str(runs), "--cancel"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in
            ("bad", "after-bad", "ok", "waits")}
    assert "cancelled" in out and "waits" in out.splitlines()[0]
    assert "failed" in rows["bad"] and "RuntimeError: boom on purpose" in rows["bad"]
    assert "blocked" in rows["after-bad"] and "done" in rows["ok"] and "value=3" in rows["ok"]
    assert "failed" in rows["waits"] and "cancelled" in rows["waits"]
    assert read_state(runs / "g" / "ok")["job_id"] in rows["ok"] and slurm.node in rows["ok"]
    _wait(lambda: not subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip(),
          "the cancelled job is still in the queue", timeout=60)


def test_multi_node_sbatch_script_passes_sbatch(slurm, tmp_path, suite_notebooks):
    """The script submitit generates for a run of 2 nodes: sbatch --test-only accepts every option; on this
    one-node cluster only the node count is refused, and with --nodes=1 the same script is accepted."""
    from submitit.slurm.slurm import _make_sbatch_string

    from hsnetlib.suite.slurm import sbatch_parameters

    grid = load_grid(_grid(tmp_path, suite_notebooks, '[[run]]\nname = "r"\nnotebook = "toy.ipynb"\n'
                           'resources = { nodes = 2 }\n'), tmp_path / "runs")
    params = sbatch_parameters(grid.runs[0], grid, [])
    assert params["nodes"] == 2 and params["ntasks_per_node"] == 1
    script = tmp_path / "job.sh"
    script.write_text(_make_sbatch_string(command="true", folder=str(tmp_path / "slurm"), **params))
    assert "#SBATCH --nodes=2" in script.read_text()
    two = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True)
    assert two.returncode != 0 and "node" in two.stderr.lower(), two.stderr
    one = subprocess.run(["sbatch", "--test-only", "--nodes=1", str(script)], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
