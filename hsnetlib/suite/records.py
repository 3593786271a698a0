"""Run records: the params.json and metrics.json a notebook writes into its run folder (read by
:mod:`hsnetlib.results`); a run whose metrics.json is readable is done."""
from __future__ import annotations

import hashlib
import os
from typing import Any, Mapping

from hsnetlib.suite.jsonfile import write_json
from hsnetlib.suite.paths import resolve
from hsnetlib.suite.state import METRICS_FILE, PARAMS_FILE, now, rank, where


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_record(checkpoint: str | os.PathLike | None) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    path = resolve(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return {"path": str(path), "sha256": sha256(path), "bytes": path.stat().st_size}


def _gpu_names() -> list[str]:
    import torch

    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def write_run_record(out_dir: str | os.PathLike, notebook: str, params: Mapping[str, Any],
                     metrics: Mapping[str, Any], checkpoint: str | os.PathLike | None = None,
                     checkpoints: Mapping[str, str | os.PathLike] | None = None, seed: int | None = None,
                     device: Any = None):
    """Write out_dir/params.json and out_dir/metrics.json with provenance; returns the metrics path.

    metrics.json holds ``metrics`` (the sections :mod:`hsnetlib.results` reads: ``summary``,
    ``evaluations``, ``trainings``, ``profiles``) plus the notebook, its parameters, the seed, the
    checkpoint(s) used or written (path and sha256), :func:`hsnetlib.utils.env_info` (code version,
    library versions, device) and where the run ran (host, Slurm job id and node, the visible GPUs and
    their names). In a multi-GPU run only rank 0 writes (the others return the path).
    """
    from hsnetlib.utils import env_info

    out_dir = resolve(out_dir)
    reserved = {"notebook", "parameters", "seed", "checkpoint", "checkpoints", "provenance"} & set(metrics)
    if reserved:
        raise ValueError(f"metrics may not use the reserved key(s) {sorted(reserved)}")
    if rank() != 0:
        return out_dir / METRICS_FILE
    out_dir.mkdir(parents=True, exist_ok=True)
    provenance = {**env_info(device), **where(), "gpus": _gpu_names(), "written_at": now()}
    write_json(out_dir / PARAMS_FILE, {"notebook": notebook, "parameters": dict(params), "seed": seed})
    record = {
        "notebook": notebook, "parameters": dict(params), "seed": seed,
        "checkpoint": checkpoint_record(checkpoint),
        "checkpoints": {k: checkpoint_record(v) for k, v in (checkpoints or {}).items()},
        "provenance": provenance, **metrics,
    }
    return write_json(out_dir / METRICS_FILE, record)
