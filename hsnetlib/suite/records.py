"""The run record: what a suite notebook writes into its run folder (``metrics.json``) and what
:mod:`hsnetlib.results` reads back, as typed entries shared by the writer and the reader.

A record is one JSON object::

    {"notebook": ..., "parameters": {...}, "seed": ..., "checkpoint": {...} | null,
     "checkpoints": {label: {...}}, "provenance": {...},
     "summary": {...}, "evaluations": [...], "trainings": [...], "profiles": [...], <other sections>}

:class:`RunRecord` holds it; its entries are :class:`EvaluationEntry`, :class:`TrainingEntry`,
:class:`ProfileEntry` and :class:`CheckpointRef`. Every entry carries a ``study``: :data:`MAIN_STUDY` ("main": training /
evaluation, Tables 1, 2, 3, A1, A2) or the ablation it belongs to (:func:`hsnetlib.suite.study.list_studies`). ``to_dict`` writes
the JSON layout below (optional keys that are None are left out, as older records have them);
``from_dict`` reads it back and names a missing key. :func:`read_record` / :func:`read_records` read
files and name the file in every error; :func:`write_run_record` (what notebooks call: provenance added) and
:func:`write_record` write one atomically. Keys that a reader may miss in older or hand-made records default
to None (an absent ``converged`` reads as converged: :func:`not_converged`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hsnetlib.suite.jsonfile import UnreadableFile, plain, read_json_in, read_json_object, write_json
from hsnetlib.suite.paths import resolve
from hsnetlib.suite.state import METRICS_FILE, PARAMS_FILE, now, rank, where

MAIN_STUDY = "main"  # the study of training / evaluation entries that are no ablation (Tables 1, 2, 3, A1, A2)
# The top-level keys of a record that are not sections of results.
RECORD_KEYS = ("notebook", "parameters", "seed", "checkpoint", "checkpoints", "provenance")


class RecordError(UnreadableFile):
    """A run record (or one of its entries) that does not have the layout of this module."""


def _json(value: Any) -> Any:
    """JSON-ready values: entries through their to_dict, the rest as :func:`hsnetlib.suite.jsonfile.plain` has them."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    return plain(value)


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    """cls(**data) for a dataclass entry; a missing required key or a non-object is a RecordError naming `where`."""
    if not isinstance(data, Mapping):
        raise RecordError(f"{where}: expected a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    missing = sorted(required - set(data))
    if missing:
        raise RecordError(f"{where}: missing key(s) {missing}")
    known = {k: v for k, v in data.items() if k in names}
    extra = {k: v for k, v in data.items() if k not in names}
    entry = cls(**known)
    if "extra" in names:
        entry.extra = extra
    return entry


def _dict(entry: Any, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """An entry's JSON object: its fields (optional ones only when set) and the keys it did not know (``extra``)."""
    out = {}
    for f in dataclasses.fields(entry):
        value = getattr(entry, f.name)
        if f.name == "extra" or (f.name in optional and value is None):
            continue
        out[f.name] = value
    out.update(getattr(entry, "extra", {}))
    return _json(out)


@dataclass
class Scores:
    """Scores of one model on a set of episodes, in percent.

    Keys: ``miou`` (mean foreground IoU over the classes), ``fbiou`` (mean of foreground and background
    IoU), ``ci95`` ([low, high]: the episode bootstrap 95% interval of miou).
    """
    miou: float
    fbiou: float
    ci95: list[float]

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "scores") -> Scores:
        return _build(cls, data, where)


@dataclass
class Paired:
    """An ablation variant against its study's reference on the same episodes (``evaluations[i].paired``).

    Keys: ``reference`` (label of the reference variant), ``delta_miou`` (variant mIoU - reference mIoU,
    points), ``ci95`` ([low, high]: paired bootstrap interval of the difference), ``episodes`` (shared episodes).
    """
    reference: str
    delta_miou: float
    ci95: list[float]
    episodes: int

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "paired") -> Paired:
        return _build(cls, data, where)


@dataclass
class EvaluationEntry:
    """One scored model: an item of the record's ``evaluations``.

    Keys: ``study`` ("main" or an ablation's name), ``label`` (the row: "HSNet" or a variant's label),
    ``dataset`` (the label results use: the benchmark, "synthetic-" prefixed for the synthetic data), ``fold``,
    ``nshot``, ``model`` (the HSNetConfig as a dict), ``miou`` (mean foreground IoU over the classes, percent),
    ``benchmark`` (loader layout: "pascal" | "coco" | "fss" | ...), ``synthetic``, ``ignore_label`` (boundary
    pixels not scored, the authors' protocol), ``img_size``, ``original_size`` (scored at the image's own size),
    ``episodes`` (number scored), ``seed`` (episode seed), ``learnable_params``, ``checkpoint`` (absolute path
    or None), ``fbiou``, ``ci95`` (see :class:`Scores`), ``per_class`` (list of {class_id, class_name,
    episodes, iou}), optional ``baselines`` ({"all_foreground": Scores, "all_background": Scores} on the same
    episodes), ``episodes_digest`` (fingerprint of the episodes, ablation studies) and ``paired``
    (:class:`Paired`, an ablation variant other than the reference), ``train_benchmark`` (the benchmark the
    model was trained on when it is not the evaluated one, e.g. "pascal-all" for the cross-domain targets; None:
    the evaluated one), ``data`` (``FewShotDataset.describe()``: the benchmark's resolved options such as
    isic_convention and lung_masks, the episode count, class names, scoring), ``converged`` (whether the training
    behind the scored model left the all-background solution, as its :class:`TrainingEntry` says; read from the
    checkpoint by :func:`hsnetlib.suite.notebook.checkpoint_training`; None: unknown, e.g. an authors'
    best_model.pt, or an older record). ``extra``: keys of a newer writer, kept.
    """
    study: str
    label: str
    dataset: str
    fold: int
    nshot: int
    model: dict[str, Any]
    miou: float
    benchmark: str | None = None
    synthetic: bool | None = None
    ignore_label: bool | None = None
    img_size: int | None = None
    original_size: bool | None = None
    episodes: int | None = None
    seed: int | None = None
    learnable_params: int | None = None
    checkpoint: str | None = None
    fbiou: float | None = None
    ci95: list[float] | None = None
    per_class: list[dict[str, Any]] = field(default_factory=list)
    baselines: dict[str, Scores] | None = None
    episodes_digest: str | None = None
    paired: Paired | None = None
    train_benchmark: str | None = None
    data: dict[str, Any] | None = None
    converged: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    OPTIONAL = ("baselines", "episodes_digest", "paired", "train_benchmark", "data", "converged")

    def to_dict(self) -> dict[str, Any]:
        return _dict(self, self.OPTIONAL)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "evaluation") -> EvaluationEntry:
        entry = _build(cls, data, where)
        if entry.baselines is not None:
            entry.baselines = {k: Scores.from_dict(v, f"{where}.baselines.{k}") for k, v in entry.baselines.items()}
        if entry.paired is not None:
            entry.paired = Paired.from_dict(entry.paired, f"{where}.paired")
        return entry

    @property
    def scores(self) -> Scores:
        return Scores(self.miou, self.fbiou, list(self.ci95))


@dataclass
class TrainingEntry:
    """One finished training: an item of the record's ``trainings``.

    Keys: ``study``, ``label``, ``dataset``, ``fold`` (as in :class:`EvaluationEntry`), ``model`` (HSNetConfig
    as a dict), ``history`` (one dict per epoch: epoch, train_loss, train_miou, val_loss, val_miou, ...),
    ``benchmark``, ``synthetic``, ``shot``, ``img_size``, ``epochs``, ``bsz``, ``lr``, ``train_episodes``
    (per epoch; None = all), ``val_episodes`` (None = all), ``best_epoch``, ``best_val_miou`` (percent),
    ``converged`` (some epoch's validation mIoU reached hsnetlib.suite.notebook.CONVERGED_MIOU: the training
    left the all-background solution; False is recorded, not failed; None: an older record, read as converged),
    ``run_dir``, ``checkpoint`` (its best.pt), ``reused_from`` (the training cache entry it was taken from).
    """
    study: str
    label: str
    dataset: str
    fold: int
    model: dict[str, Any]
    history: list[dict[str, Any]]
    benchmark: str | None = None
    synthetic: bool | None = None
    shot: int | None = None
    img_size: int | None = None
    epochs: int | None = None
    bsz: int | None = None
    lr: float | None = None
    train_episodes: int | None = None
    val_episodes: int | None = None
    best_epoch: int | None = None
    best_val_miou: float | None = None
    converged: bool | None = None
    run_dir: str | None = None
    checkpoint: str | None = None
    reused_from: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "training") -> TrainingEntry:
        return _build(cls, data, where)


def not_converged(value: Any) -> bool:
    """True only where an entry says ``converged: false``; None, or NaN (a frame's missing value), is unknown and
    reads as converged (older records)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and not bool(value)


@dataclass
class ProfileEntry:
    """Size, time, memory and FLOPs of one model: an item of the record's ``profiles``.

    Keys: ``study``, ``model`` (HSNetConfig as a dict), ``label`` (absent in older records: "") and the fields of
    :class:`hsnetlib.profile.Profile` (``img_size``, ``nshot``, ``device``, ``learnable_params``,
    ``time_ms``, ``memory_gb``, ``gflops``, ``gflops_total``, ...), kept in ``profile``.
    """
    study: str
    label: str
    model: dict[str, Any]
    profile: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _json({"study": self.study, "label": self.label, "model": self.model, **self.profile})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "profile") -> ProfileEntry:
        if not isinstance(data, Mapping) or not {"study", "model"} <= set(data):
            raise RecordError(f"{where}: expected an object with study and model")
        rest = {k: v for k, v in data.items() if k not in ("study", "label", "model")}
        return cls(data["study"], data.get("label", ""), data["model"], rest)


@dataclass
class CheckpointRef:
    """A checkpoint a run used or wrote: ``path`` (absolute), ``sha256``, ``bytes``."""
    path: str
    sha256: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return _dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "checkpoint") -> CheckpointRef:
        return _build(cls, data, where)


@dataclass
class RunRecord:
    """A run's metrics.json.

    Keys: ``notebook`` (file name), ``parameters`` (the notebook's parameter values, injected or default),
    ``seed``, ``checkpoint`` (:class:`CheckpointRef` or None), ``checkpoints`` (label -> CheckpointRef:
    a study's variants), ``provenance`` (hsnetlib.utils.env_info: code_version, library versions,
    device; host, slurm_job_id, node, cuda_visible_devices, gpus, written_at), ``summary`` (scalars the
    suite prints as the run's headline), ``evaluations`` / ``trainings`` / ``profiles`` (the entries
    above), ``sections``: any other top-level key of the notebook (e.g. ``episode``), kept as it is.
    """
    notebook: str
    parameters: dict[str, Any]
    provenance: dict[str, Any]
    seed: int | None = None
    checkpoint: CheckpointRef | None = None
    checkpoints: dict[str, CheckpointRef] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    evaluations: list[EvaluationEntry] = field(default_factory=list)
    trainings: list[TrainingEntry] = field(default_factory=list)
    profiles: list[ProfileEntry] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"notebook": self.notebook, "parameters": self.parameters, "seed": self.seed,
               "checkpoint": self.checkpoint, "checkpoints": self.checkpoints, "provenance": self.provenance}
        for name in ("summary", "evaluations", "trainings", "profiles"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        reserved = (set(RECORD_KEYS) | {"summary", "evaluations", "trainings", "profiles"}) & set(self.sections)
        if reserved:
            raise RecordError(f"sections may not use the reserved key(s) {sorted(reserved)}")
        out.update(self.sections)
        return _json(out)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "record") -> RunRecord:
        if not isinstance(data, Mapping):
            raise RecordError(f"{where}: expected a JSON object, got {type(data).__name__}")
        missing = [k for k in ("notebook", "parameters", "provenance") if k not in data]
        if missing:
            raise RecordError(f"{where}: missing key(s) {missing}")

        def entries(name: str, kind: type) -> list[Any]:
            items = data.get(name) or []
            if not isinstance(items, list):
                raise RecordError(f"{where}: {name} must be a list, got {type(items).__name__}")
            return [kind.from_dict(item, f"{where}: {name}[{i}]") for i, item in enumerate(items)]

        checkpoint = data.get("checkpoint")
        return cls(
            notebook=data["notebook"], parameters=dict(data["parameters"]), provenance=dict(data["provenance"]),
            seed=data.get("seed"),
            checkpoint=None if checkpoint is None else CheckpointRef.from_dict(checkpoint, f"{where}: checkpoint"),
            checkpoints={k: CheckpointRef.from_dict(v, f"{where}: checkpoints.{k}")
                         for k, v in (data.get("checkpoints") or {}).items() if v is not None},
            summary=dict(data.get("summary") or {}),
            evaluations=entries("evaluations", EvaluationEntry), trainings=entries("trainings", TrainingEntry),
            profiles=entries("profiles", ProfileEntry),
            sections={k: v for k, v in data.items()
                      if k not in RECORD_KEYS and k not in ("summary", "evaluations", "trainings", "profiles")})


def is_run_record(data: Any) -> bool:
    """Whether a parsed metrics.json is a suite run record (evaluate's own metrics.json is not)."""
    return isinstance(data, dict) and "notebook" in data and "provenance" in data


def read_record(path: str | os.PathLike) -> RunRecord:
    """The run record in `path` (a metrics.json, or the run folder holding one); every error names the file."""
    path, data = read_json_in(path, METRICS_FILE, "run record", ": no run record (the run has not finished)")
    if not is_run_record(data):
        raise RecordError(f"{path} is not a suite run record (no 'notebook' and 'provenance')")
    return RunRecord.from_dict(data, str(path))


def read_records(runs_dir: str | os.PathLike) -> list[tuple[str, RunRecord]]:
    """(run id, record) of every run record under runs_dir, sorted by run id (the run folder relative to
    runs_dir); other metrics.json files (hsnetlib.evaluate's) are skipped, an unreadable one is an error
    naming it (:class:`hsnetlib.suite.jsonfile.UnreadableFile`)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"runs folder {runs_dir} does not exist (run a grid first: python -m hsnetlib.suite "
                                "run grids/demo.toml)")
    records = []
    for path in sorted(runs_dir.rglob(METRICS_FILE)):
        data = read_json_object(path, "run record")
        if is_run_record(data):
            records.append((path.parent.relative_to(runs_dir).as_posix(), RunRecord.from_dict(data, str(path))))
    return records


def write_record(out_dir: str | os.PathLike, record: RunRecord) -> Path:
    """Write out_dir/params.json and then out_dir/metrics.json (which marks the run done), each atomically;
    returns the metrics path."""
    out_dir = Path(out_dir)
    data = record.to_dict()  # checked before anything is written
    write_json(out_dir / PARAMS_FILE, {"notebook": record.notebook, "parameters": record.parameters,
                                       "seed": record.seed})
    write_json(out_dir / METRICS_FILE, data)
    return out_dir / METRICS_FILE


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_ref(checkpoint: str | os.PathLike) -> CheckpointRef:
    """The record of a checkpoint file (taken from the project root); a missing one is an error naming it."""
    path = resolve(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return CheckpointRef(path=str(path), sha256=sha256(path), bytes=path.stat().st_size)


def _gpu_names() -> list[str]:
    import torch  # only when a record is written: reading records needs no torch

    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def write_run_record(out_dir: str | os.PathLike, notebook: str, params: Mapping[str, Any],
                     metrics: Mapping[str, Any] | None = None, checkpoint: str | os.PathLike | None = None,
                     checkpoints: Mapping[str, str | os.PathLike] | None = None, seed: int | None = None,
                     device: Any = None, **sections: Any) -> Path:
    """Write out_dir/params.json and out_dir/metrics.json (a :class:`RunRecord`) with provenance; returns the
    metrics path. `out_dir` and the checkpoints are taken from the project root.

    The record's sections come from `metrics` and the keyword `sections` (``summary``, ``evaluations``,
    ``trainings``, ``profiles`` -- typed entries or their dicts -- and any other key, e.g. ``episode``); the
    record's own keys (:data:`RECORD_KEYS`) are refused. Provenance: :func:`hsnetlib.utils.env_info` (code
    version, library versions, device), where the run ran (host, Slurm job id and node, the visible GPUs and
    their names) and when. In a multi-GPU run only rank 0 writes (the others return the path).
    """
    from hsnetlib.utils import env_info  # imports torch: only when a record is written

    out_dir = resolve(out_dir)
    content = {**(metrics or {}), **sections}
    reserved = set(RECORD_KEYS) & set(content)
    if reserved:
        raise RecordError(f"metrics may not use the reserved key(s) {sorted(reserved)}")
    if rank() != 0:
        return out_dir / METRICS_FILE
    data = {"notebook": notebook, "parameters": dict(params), "seed": seed,
            "checkpoint": None if checkpoint is None else checkpoint_ref(checkpoint),
            "checkpoints": {k: checkpoint_ref(v) for k, v in (checkpoints or {}).items()},
            "provenance": {**env_info(device), **where(), "gpus": _gpu_names(), "written_at": now()},
            **content}
    return write_record(out_dir, RunRecord.from_dict(_json(data), str(out_dir / METRICS_FILE)))
