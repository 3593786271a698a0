"""Ablation studies (Sec. 5.2): the one helper every ablation notebook calls.

A study varies one model option (a ``variant=True`` field of HSNetConfig) and compares each variant's
training with the reference (the option's HSNetConfig default, the paper's model): it gathers finished
trainings (or trains them at a small scale), checks that they differ in the option only, scores each
best checkpoint on the same test episodes, compares each variant with the reference by a paired bootstrap
over those shared episodes, and gives the table, the figure and the run record's entries.

A new study is a :func:`register_study` call (name, option, labels) and its grid entries; its notebook is a copy
of an ablation notebook's cells with its name (:func:`run_study` does the work).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from hsnetlib import viz
from hsnetlib.evaluate import EvalResult
from hsnetlib.metrics import PAIRING_KEYS, paired_bootstrap
from hsnetlib.model import HSNet, config_class, option_fields, variant_fields
from hsnetlib.registry import Registry
from hsnetlib.suite import notebook
from hsnetlib.suite.paths import resolve
from hsnetlib.suite.records import EvaluationEntry, Paired, ProfileEntry, TrainingEntry
from hsnetlib.train import TrainConfig, result_dict


# -- the registry ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Study:
    """One ablation: `option` (a variant field of HSNetConfig or of a registered model's config) varied;
    `label(value)` names a variant's row."""
    name: str                              # the run record's ``study``
    option: str
    label: Callable[[Any], str] = str
    paper: str = ""                        # where the paper shows it
    curves_file: str | None = None         # a figure of train / val mIoU per epoch of every variant, written here

    @property
    def reference(self) -> str:
        """The reference variant's label: the option's default (the paper's model)."""
        return self.label(option_fields()[self.option].default)


_STUDIES: Registry[Study] = Registry("study")


def register_study(study: Study, *, replace: bool = False) -> Study:
    """Add `study`; its option must be a variant option of a registered model; a name already taken is an error
    unless `replace`."""
    if study.option not in variant_fields():
        raise ValueError(f"study {study.name!r}: {study.option!r} is not a model variant option; "
                         f"choose one of {variant_fields()}")
    return _STUDIES.register(study.name, study, replace=replace)


def unregister_study(name: str) -> None:
    _STUDIES.unregister(name)


def get_study(name: str) -> Study:
    return _STUDIES.get(name)


def list_studies() -> list[str]:
    return _STUDIES.names()


register_study(Study("hypercorrelation", "hypercorrelation", paper="Fig. 6, Table A3"))
register_study(Study("pyramid", "pyramid", lambda levels: "-".join(map(str, levels)), paper="Fig. 7, Table A4"))
register_study(Study("kernel", "kernel", paper="Table 4"))
register_study(Study("block_layers", "block_layers", lambda n: f"{n}-layer", paper="Fig. 9"))
register_study(Study("finetune", "finetune_backbone", lambda on: "fine-tuned" if on else "frozen", paper="Fig. 10",
                     curves_file="fig10.png"))
register_study(Study("support_masking", "support_masking", lambda on: "masked" if on else "no-masking",
                     paper="Table 1 (dagger)"))


# -- finished trainings --------------------------------------------------------------------------------------
def load_training(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The summary of a finished training from its run folder (config.json, metrics.csv, best.pt), as
    :func:`hsnetlib.suite.notebook.train_model` returns it; a missing, unfinished or foreign folder is an error
    naming it."""
    run_dir = resolve(run_dir)
    for name in ("config.json", "metrics.csv", "best.pt"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir} holds no finished training: {name} is missing "
                                    "(train it first: 01_train.ipynb or python -m hsnetlib train)")
    config = json.loads((run_dir / "config.json").read_text())
    history = pd.read_csv(run_dir / "metrics.csv").to_dict("records")
    if len(history) < config["epochs"]:
        raise ValueError(f"the training in {run_dir} is unfinished: {len(history)} of {config['epochs']} epochs "
                         "(rerun its notebook: it resumes)")
    best = max(history, key=lambda row: row["val_miou"])  # the first best, as train() keeps it
    return {"run_dir": str(run_dir), "epochs": config["epochs"], "best_epoch": int(best["epoch"]),
            "best_val_miou": best["val_miou"], "last": history[-1], "history": history,
            "best_checkpoint": str(run_dir / "best.pt"), "last_checkpoint": str(run_dir / "last.pt"), "config": config}


def variant_options(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The model options (:func:`hsnetlib.model.variant_fields`) a training was run with."""
    return notebook.variant_of(summary["config"]["model"])


def check_alike(summaries: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse to compare trainings that differ in anything but their model options (variant fields) and where they
    ran (:func:`hsnetlib.train.result_dict`)."""
    variants = set(variant_fields())

    def compared(summary: Mapping[str, Any]) -> dict[str, Any]:
        result = result_dict(TrainConfig(**summary["config"]))
        model = result.pop("model")
        return {**result, **{f"model.{k}": v for k, v in model.items() if k not in variants}}

    (first_label, first), *others = summaries.items()
    mine = compared(first)
    for label, summary in others:
        theirs = compared(summary)
        differing = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if differing:
            details = "; ".join(f"{k}: {mine.get(k)!r} vs {theirs.get(k)!r}" for k in differing)
            raise ValueError(f"trainings {first_label!r} and {label!r} differ in more than the variant ({details}): "
                             "train the variants of a study alike")


def gather_trainings(run_dirs: Mapping[str, str | os.PathLike], data: notebook.Data,
                     fold: int) -> dict[str, dict[str, Any]]:
    """label -> summary of the finished trainings in `run_dirs` (label -> run folder, :func:`load_training`).

    They must be trainings of `data`'s benchmark and `fold` that differ in their model options only (same
    budget, optimisation, seed, image size), so that a difference in score is the variant's."""
    if not run_dirs:
        raise ValueError("no trainings given (label -> run folder of a finished training)")
    summaries = {label: load_training(path) for label, path in run_dirs.items()}
    for label, summary in summaries.items():
        config = summary["config"]
        if (config["benchmark"], config["fold"]) != (data.benchmark, fold):
            raise ValueError(f"training {label!r} ({summary['run_dir']}) is of {config['benchmark']} fold "
                             f"{config['fold']}, not of {data.benchmark} fold {fold}")
    check_alike(summaries)
    return summaries


def train_variants(study: Study, data: notebook.Data, out_dir: str | os.PathLike, params: Mapping[str, Any],
                   values: Iterable[Any], cache_dir: str | os.PathLike | None = None,
                   resume: bool | str = "auto") -> dict[str, dict[str, Any]]:
    """Train the variant of every option value with the notebook's training parameters into out_dir/<label>/ (one
    after another: a notebook's small default run; grids train each variant in its own run). Returns label ->
    summary."""
    summaries = {}
    for value in values:
        label = study.label(tuple(value) if isinstance(value, list) else value)
        config = notebook.train_config(data, resolve(out_dir) / label, params, {study.option: value}, resume=resume)
        summaries[label] = notebook.train_model(config, cache_dir=cache_dir)
    return summaries


# -- comparing on shared episodes -----------------------------------------------------------------------------
def episodes_digest(result: EvalResult) -> str:
    """A fingerprint of the episodes an evaluation scored (class, query and supports of each, in order)."""
    keys = result.episodes[list(PAIRING_KEYS)].astype(str)
    return hashlib.sha256("\n".join(keys.agg("|".join, axis=1)).encode()).hexdigest()[:16]


@dataclass
class StudyResult:
    """A study's run-record entries: its trainings (reference first), its evaluations (per shot, reference
    first; every variant's with ``paired`` and all with ``episodes_digest``) and label -> best.pt."""
    study: Study
    reference: str
    trainings: list[TrainingEntry] = field(default_factory=list)
    evaluations: list[EvaluationEntry] = field(default_factory=list)
    checkpoints: dict[str, str] = field(default_factory=dict)
    profiles: list[ProfileEntry] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """The headline scalars: every variant's mIoU per shot and its difference to the reference."""
        out = {f"{e.label}_{e.nshot}shot_miou": e.miou for e in self.evaluations}
        out.update({f"{e.label}_{e.nshot}shot_delta": e.paired.delta_miou for e in self.evaluations if e.paired})
        return out


def evaluate_variants(study: Study, data: notebook.Data, fold: int, trainings: Mapping[str, Mapping[str, Any]],
                      reference: str, shots: Iterable[int], episodes: int | None, ignore_label: bool = True,
                      baselines: bool = False, device: str | None = None, progress: bool = True) -> StudyResult:
    """Evaluate each training's best checkpoint on the same test episodes for every shot, and compare each
    variant with `reference` (:func:`hsnetlib.metrics.paired_bootstrap`, over the fold's classes)."""
    if reference not in trainings:
        raise ValueError(f"reference variant {reference!r} is not one of the trainings {sorted(trainings)}")
    check_alike(trainings)
    img_size = trainings[reference]["config"]["img_size"]
    order = [reference, *(label for label in trainings if label != reference)]
    result = StudyResult(study, reference)
    for label in order:
        result.trainings.append(notebook.training_entry(trainings[label], data, study.name, label))
        result.checkpoints[label] = trainings[label]["best_checkpoint"]
    for shot in shots:
        scored = {}
        for label in order:
            checkpoint = trainings[label]["best_checkpoint"]
            entry, scored[label] = notebook.evaluate_model(
                HSNet.load(checkpoint), data, fold, shot, img_size, study=study.name, label=label,
                ignore_label=ignore_label, episodes=episodes, device=device, baselines=baselines,
                checkpoint=checkpoint, progress=progress, converged=notebook.converged(trainings[label]["history"]))
            entry.episodes_digest = episodes_digest(scored[label])
            if label != reference:
                entry.paired = Paired(reference=reference, **paired_bootstrap(
                    scored[label].episodes, scored[reference].episodes,
                    fold_classes=scored[reference].per_class["class_id"].unique().tolist()))
            result.evaluations.append(entry)
    return result


def variant_table(result: StudyResult) -> pd.DataFrame:
    """The evaluations as a frame: label, nshot, mIoU with its bootstrap interval, the paired difference to the
    reference with its interval, FB-IoU, whether the training converged, size."""
    converged = {t.label: t.converged for t in result.trainings}
    rows = []
    for e in result.evaluations:
        paired = e.paired
        rows.append({"label": e.label, "nshot": e.nshot, "miou": e.miou, "ci95_low": e.ci95[0], "ci95_high": e.ci95[1],
                     "delta_miou": paired.delta_miou if paired else np.nan,
                     "delta_ci95_low": paired.ci95[0] if paired else np.nan,
                     "delta_ci95_high": paired.ci95[1] if paired else np.nan,
                     "fbiou": e.fbiou, "converged": converged[e.label], "learnable_params": e.learnable_params})
    return pd.DataFrame(rows)


def curves_figure(result: StudyResult, title: str = ""):
    """Training and validation mIoU per epoch of every variant (Fig. 10's curves), drawn by
    :func:`hsnetlib.viz.draw_learning_curves`."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    viz.draw_learning_curves(ax, [t.to_dict() for t in result.trainings])
    ax.set_title(title)
    return fig


def profile_variants(result: StudyResult, trainings: Mapping[str, Mapping[str, Any]], img_size: int,
                     device: str | None = None, repeats: int = 3) -> pd.DataFrame:
    """Profile every variant's model (size, time, memory, FLOPs; independent of the weights) into
    ``result.profiles``; returns them as a frame."""
    for label, summary in trainings.items():
        config = dataclasses.replace(TrainConfig(**summary["config"]).model, weights=None)
        model = HSNet.from_config(config)
        result.profiles.append(notebook.profile_entry(model, result.study.name, label, img_size, device,
                                                      repeats=repeats))
    return pd.DataFrame([p.to_dict() for p in result.profiles]).drop(columns=["model", "study"])


# -- what a study notebook calls -------------------------------------------------------------------------------
STUDY_PARAMS = ("trainings", "reference", "variants", "shots", "episodes")


def check_params(name: str, params: Mapping[str, Any]) -> None:
    """Check a study notebook's parameters before any work (the cell after the parameters cell): a bad value is an
    error naming the parameter."""
    study = get_study(name)
    notebook.check_data_params(params)
    if not params["shots"]:
        raise ValueError("shots=[]: give at least one K")
    if params["trainings"]:
        labels = list(params["trainings"])
    else:
        labels = [study.label(tuple(v) if isinstance(v, list) else v) for v in params["variants"]]
        for value in params["variants"]:
            config_class([study.option])(**{study.option: value}, weights=None)  # the option's choices
        notebook.check_train_params(params)
    if params["reference"] not in labels:
        raise ValueError(f"reference={params['reference']!r} is none of the variants {labels}")


def run_study(name: str, params: Mapping[str, Any], out: Path) -> tuple[StudyResult, dict[str, dict[str, Any]]]:
    """A study notebook's work: its data, the finished trainings of ``params["trainings"]`` (label -> run folder)
    or, with none, the ``params["variants"]`` trained into out/<label>/, then every variant evaluated on the same
    test episodes and compared with the reference. Returns (the result, label -> training summary)."""
    study = get_study(name)
    data = notebook.prepare_data(params["benchmark"], params["data_root"], params["synthetic"])
    fold = params["fold"]
    if params["trainings"]:
        summaries = gather_trainings(params["trainings"], data, fold)
    else:
        summaries = train_variants(study, data, out, params, params["variants"], params["train_cache"] or None)
    result = evaluate_variants(study, data, fold, summaries, params["reference"], params["shots"],
                               notebook.count_arg(params["episodes"]), device=notebook.device_arg(params["device"]))
    return result, summaries


def write_figures(result: StudyResult, params: Mapping[str, Any], out: Path) -> list[Path]:
    """ablation.png (mIoU per variant and shot, learning curves) and the study's curves figure, into out/."""
    title = f"{params['benchmark']} fold {params['fold']}: {result.study.name} ablation"
    table = variant_table(result)
    figures = {"ablation.png": viz.ablation_overview(table, [t.to_dict() for t in result.trainings], title)}
    if result.study.curves_file:
        figures[result.study.curves_file] = curves_figure(result, f"fold {params['fold']}")
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=100)
    return [out / name for name in figures]


def write_record(result: StudyResult, notebook_name: str, params: Mapping[str, Any],
                 summaries: Mapping[str, Mapping[str, Any]]) -> Path:
    """The study's run record (metrics.json): summary, trainings, evaluations, profiles, the checkpoints."""
    return notebook.write_run_record(
        params["out_dir"], notebook_name, params, summary=result.summary(), trainings=result.trainings,
        evaluations=result.evaluations, profiles=result.profiles, checkpoints=result.checkpoints,
        seed=summaries[result.reference]["config"]["seed"], device=notebook.device_arg(params["device"]))


def check_result(result: StudyResult, shots: Iterable[int]) -> None:
    """The invariants a study's reader relies on (AssertionError otherwise): every variant scored for every shot on
    the same episodes, each paired difference equal to the mIoU difference, every training's full history."""
    labels = [t.label for t in result.trainings]
    assert {(e.label, e.nshot) for e in result.evaluations} == {(label, k) for label in labels for k in shots}
    for k in shots:
        scored = [e for e in result.evaluations if e.nshot == k]
        assert len({e.episodes_digest for e in scored}) == 1, "every variant evaluated on the same episodes"
        reference_miou = next(e.miou for e in scored if e.label == result.reference)
        for e in scored:
            if e.label != result.reference:
                assert np.isclose(e.paired.delta_miou, e.miou - reference_miou), "the paired delta is the mIoU difference"
                assert e.paired.ci95[0] <= e.paired.ci95[1] and e.paired.episodes == e.episodes
    assert all(len(t.history) == t.epochs for t in result.trainings), "every epoch of every training recorded"
