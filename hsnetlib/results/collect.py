"""Reading run records into frames: every evaluation, profile and training of a runs folder.

:func:`collect` reads every run record (``metrics.json`` of a suite run) under a runs folder as the
typed entries of :mod:`hsnetlib.suite.records` (through :func:`read_records`, the one place records
are read) and returns one frame per kind of entry with the model options as columns
(:func:`hsnetlib.results.registries.variant_defaults`: a record that predates an option holds its
default). Entries are read through their ``to_dict`` (the JSON layout), so a key a newer writer
adds (kept in the entry's ``extra``) becomes a column. What is read of a record:

* the record: ``notebook``, ``seed``, ``parameters``, ``checkpoint`` / ``checkpoints`` (path,
  sha256), ``provenance`` (code_version, device);
* ``evaluations``: study, label, benchmark, dataset (the benchmark, ``synthetic-`` prefixed on
  generated data), train_benchmark (the training benchmark when it is not the test's, e.g.
  ``pascal-all`` for the cross-domain targets), fold, nshot, ignore_label, img_size,
  original_size, episodes, model (HSNetConfig fields), learnable_params, miou, fbiou, ci95,
  baselines, ``data`` (the data set's description: its resolved options, as the column
  ``data_options``, JSON, and in the run's provenance) and, for an ablation variant, ``paired``:
  {reference, delta_miou, ci95};
* ``profiles``: study, model, img_size, nshot, device, learnable_params, time_ms, memory_gb, gflops;
* ``trainings``: study, label, model, dataset, fold, img_size, converged, history (one dict per
  epoch: epoch, train_miou, val_miou, ...).

An evaluation's ``converged`` is its own (what the scored checkpoint says of its training: 02_evaluate of a
``best.pt``), else that of its training in the same record (matched by run, study, label and fold). Older
records without ``ci95``, ``paired`` or ``converged`` read without that interval, without the paired
difference, and as converged (unknown: :func:`hsnetlib.suite.records.not_converged`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hsnetlib.results.registries import LINE_MODEL_FIELDS, variant_defaults
from hsnetlib.suite import records
from hsnetlib.suite.paths import project_root
from hsnetlib.suite.records import RunRecord

SECTIONS = ("evaluations", "profiles", "trainings")


def read_records(runs_dir: str | Path) -> list[tuple[str, RunRecord]]:
    """(run id: its folder relative to runs_dir, typed record) of every suite run record under runs_dir (other
    metrics.json files are skipped; an unreadable one is a ValueError naming it). The one place records are read."""
    return records.read_records(runs_dir)


def model_columns(model: dict[str, Any] | None) -> dict[str, Any]:
    """The backbone, weights and every variant option of an entry's model (defaults where it lacks one), with
    ``pretrained``. Lists (JSON) become tuples, so that options compare with their defaults."""
    model = dict(model or {})
    defaults = {"backbone": None, "weights": None, **variant_defaults()}
    row = {k: model.get(k, default) for k, default in defaults.items()}
    row.update({k: tuple(v) for k, v in row.items() if isinstance(v, list)})
    row["pretrained"] = row["weights"] is not None
    return row


def model_fields() -> tuple[str, ...]:
    """The model columns of the frames: the backbone, its weights and the variant options."""
    return (*LINE_MODEL_FIELDS, *variant_defaults())


def in_project(text: str) -> str:
    """Paths inside the project written relative to its root, so tables read the same on every machine."""
    return text.replace(f"{project_root()}{os.sep}", "")


def data_settings(record: RunRecord) -> str:
    """The data every evaluation of a record scored: benchmark, its resolved options (e.g. isic_convention,
    lung_masks) and episode count, one "; "-separated item per distinct setting ("" for older records)."""
    items = []
    for entry in record.evaluations:
        if entry.data is not None:
            options = "".join(f", {k}={v}" for k, v in (entry.data.get("options") or {}).items())
            items.append(f"{entry.benchmark}{options}, {entry.data.get('n_episodes')} episodes")
    return "; ".join(dict.fromkeys(items))


def provenance(run: str, record: RunRecord) -> dict[str, Any]:
    """Where a run record came from: notebook, parameters, seed, checkpoints, code version, device, the data
    settings of its evaluations (:func:`data_settings`)."""
    checkpoints = {"": record.checkpoint, **record.checkpoints}
    return {"run": run, "notebook": record.notebook, "seed": record.seed,
            "checkpoints": in_project("; ".join(f"{name + ': ' if name else ''}{c.path} (sha256 {c.sha256[:12]})"
                                                for name, c in checkpoints.items() if c is not None)),
            "code_version": record.provenance.get("code_version"), "device": record.provenance.get("device"),
            "parameters": in_project(json.dumps(record.parameters, sort_keys=True)), "data": data_settings(record)}


def _interval(entry: dict[str, Any], prefix: str) -> dict[str, float]:
    """A ``ci95: [lo, hi]`` of an entry as two floats (NaN where the entry has none)."""
    low, high = entry.get("ci95") or (np.nan, np.nan)
    return {f"{prefix}ci95_low": float(low), f"{prefix}ci95_high": float(high)}


def _evaluation_columns(entry: dict[str, Any]) -> dict[str, Any]:
    """An evaluation's interval, paired difference, training benchmark and baselines as columns."""
    paired = entry.get("paired") or {}
    row = {**_interval(entry, ""), "reference": paired.get("reference"),
           "paired_delta": float(paired.get("delta_miou", np.nan)), **_interval(paired, "paired_"),
           "train_benchmark": entry.get("train_benchmark") or entry["benchmark"],
           "data_options": json.dumps((entry.get("data") or {}).get("options") or {}, sort_keys=True)}
    for name, scores in (entry.get("baselines") or {}).items():
        row[f"{name}_miou"], row[f"{name}_fbiou"] = scores["miou"], scores["fbiou"]
    return row


def collect(runs_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Every evaluation, profile and training of the runs, one frame each (model options as columns), and
    ``runs``: the provenance of every run record. Evaluations carry their training's ``converged``
    (:func:`_with_convergence`)."""
    rows: dict[str, list[dict[str, Any]]] = {**{s: [] for s in SECTIONS}, "runs": []}
    for run, record in read_records(runs_dir):
        source = provenance(run, record)
        rows["runs"].append(source)
        common = {"run": run, "notebook": source["notebook"], "code_version": source["code_version"],
                  "device": source["device"], "study": "main", "label": "HSNet"}
        for section in SECTIONS:
            for entry in (e.to_dict() for e in getattr(record, section)):
                row = {**common, **{k: v for k, v in entry.items() if k not in ("model", "ci95", "paired", "data")},
                       **model_columns(entry.get("model"))}
                if section == "evaluations":
                    row.update(_evaluation_columns(entry))
                rows[section].append(row)
    frames = {k: pd.DataFrame(v) for k, v in rows.items()}
    frames["evaluations"] = _with_convergence(frames["evaluations"], frames["trainings"])
    return frames


def _with_convergence(evals: pd.DataFrame, trainings: pd.DataFrame) -> pd.DataFrame:
    """evals with ``converged`` of the training behind each evaluation: the evaluation's own (read from its
    checkpoint) where it has one, else that of the training entry of the same run, study, label and fold; NaN
    (unknown) where neither says."""
    keys = ["run", "study", "label", "fold"]
    if evals.empty:
        return evals.assign(converged=np.nan)
    known = {} if trainings.empty or "converged" not in trainings else {
        tuple(key): value for *key, value in trainings[keys + ["converged"]].drop_duplicates(keys).itertuples(
            index=False)}
    own = evals["converged"] if "converged" in evals else pd.Series(np.nan, index=evals.index, dtype=object)
    from_training = [known.get(tuple(key), np.nan) for key in evals[keys].itertuples(index=False)]
    return evals.assign(converged=[o if not pd.isna(o) else t for o, t in zip(own, from_training)])
