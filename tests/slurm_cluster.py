"""A real one-node Slurm cluster for the tests: munged, slurmctld and slurmd with a generated config.

Debian's ``slurm-wlm`` and ``munge`` are installed with apt when they are missing and the tests run as
root (as in CI); otherwise :func:`unavailable` says why the Slurm tests cannot run. The node advertises
this machine's real CPUs and memory (``slurmd -C``); everything the daemons write lives under one
temporary folder, ports are free ones, and ``SLURM_CONF`` points the client commands (sbatch, squeue,
scontrol, scancel) at the generated slurm.conf. No accounting (slurmdbd) is configured.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from conftest import stop_process

DAEMONS = ("munged", "slurmctld", "slurmd")
PACKAGES = ("slurm-wlm", "munge")


def missing() -> list[str]:
    return [d for d in DAEMONS if shutil.which(d) is None and not Path(f"/usr/sbin/{d}").is_file()]


def unavailable() -> str | None:
    """Why a cluster cannot be started here (None if it can), installing the packages as root."""
    if not missing():
        return None
    if os.geteuid() != 0:
        return f"{', '.join(missing())} not installed and not root (apt-get install {' '.join(PACKAGES)})"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            return f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}"
    return None if not missing() else f"still missing after apt-get install: {missing()}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class Cluster:
    """Start with :meth:`start`, stop with :meth:`stop`; :attr:`env` is what client commands need."""

    def __init__(self, root: Path):
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def _config(self) -> str:
        node = subprocess.run([_sbin("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
        node_line = next(line for line in node.splitlines() if line.startswith("NodeName="))
        self.node = node_line.split()[0].split("=", 1)[1]
        r = self.root
        return "\n".join([
            "ClusterName=hsnettest", f"SlurmctldHost={self.node}(127.0.0.1)",
            "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={r / 'munge.socket'}",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            f"StateSaveLocation={r / 'state'}", f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}", f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'slurmctld.log'}", f"SlurmdLogFile={r / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/backfill", "SchedulerParameters=sched_interval=1,bf_interval=1",
            "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none", "MpiDefault=none", "ReturnToService=2", "KillWait=5",
            "MinJobAge=300", "SlurmdTimeout=30", "InactiveLimit=0", "Waittime=0",
            f"{node_line.split(' UpTime')[0]} NodeAddr=127.0.0.1 State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ])

    def start(self, timeout: float = 60) -> "Cluster":
        for sub in ("state", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.conf.write_text(self._config())
        logs = open(self.root / "daemons.log", "ab")
        self._spawn([_sbin("munged"), "--foreground", "--force", f"--key-file={key}",
                     f"--socket={self.root / 'munge.socket'}", f"--pid-file={self.root / 'munged.pid'}",
                     f"--log-file={self.root / 'munged.log'}", f"--seed-file={self.root / 'munged.seed'}"], logs)
        self._wait(lambda: (self.root / "munge.socket").exists(), timeout, "munged did not create its socket")
        self._spawn([_sbin("slurmctld"), "-D", "-c", "-f", str(self.conf)], logs)
        self._spawn([_sbin("slurmd"), "-D", "-f", str(self.conf), "-N", self.node], logs)
        self._wait(self._idle, timeout, f"the node did not become idle; see {self.root}/*.log")
        return self

    def _spawn(self, command: list[str], logs) -> None:
        self.procs.append(subprocess.Popen(command, stdout=logs, stderr=subprocess.STDOUT, env=self.env))

    def _idle(self) -> bool:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}; see {self.root}/*.log")
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=self.env)
        return out.returncode == 0 and out.stdout.strip() == "idle"

    @staticmethod
    def _wait(condition, timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(message)
            time.sleep(0.2)

    def stop(self) -> None:
        subprocess.run(["scancel", "--user=root"], env=self.env, capture_output=True)
        for proc in reversed(self.procs):
            stop_process(proc, timeout=15)
