"""What the notebooks call: data (the synthetic benchmark is generated on demand), training and
evaluating a model variant, trivial baselines, profiles, and the entries of a run record.

The entries returned here are the sections of a run's metrics.json that :mod:`hsnetlib.results`
reads (``evaluations``, ``trainings``, ``profiles``); each carries a ``study`` name that says which
table it belongs to: "main" (training / evaluation: Tables 1, 2, 3, A1, A2) or the ablation
("hypercorrelation", "pyramid", "kernel", "block_layers", "finetune", "support_masking").

Notebook parameters cannot be None (TOML grids have no null), so "none" stands for no backbone
weights and 0 for "all" episodes: :func:`weights_arg` and :func:`count_arg` translate them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

import torch
from torch import nn

from hsnetlib import predict, synthetic
from hsnetlib.data import FewShotDataset, build_dataset
from hsnetlib.evaluate import EvalResult, evaluate
from hsnetlib.metrics import ratio
from hsnetlib.model import HSNet
from hsnetlib.profile import profile_model
from hsnetlib.suite.paths import resolve
from hsnetlib.suite.records import write_run_record
from hsnetlib.train import TrainConfig, build_datasets, check_resumable, train

# The synthetic benchmark the notebooks generate when `synthetic` is on and the root lacks it:
# small enough to write in seconds, large enough for the demo (per class: PASCAL-style training and
# validation images; FSS-style images).
SYNTHETIC = {
    "pascal": dict(images_per_class=40, val_images_per_class=12, size=128),
    "fss": dict(n_classes=20, images_per_class=10, size=128),
}
STUDIES = ("main", "hypercorrelation", "pyramid", "kernel", "block_layers", "finetune", "support_masking")
TRAIN_FILES = ("config.json", "env.json", "metrics.csv", "best.pt", "last.pt", "tb")
SUMMARY_FILE = "summary.json"  # in a training cache entry: what train() returned


def weights_arg(weights: str) -> str | None:
    """Notebook value -> HSNet weights: "none" -> None (random init), else "imagenet" or a path."""
    if weights == "none":
        return None
    return weights if weights == "imagenet" else str(resolve(weights))


def device_arg(device: str) -> str | None:
    """Notebook value -> device: "auto" -> None (CUDA when available, else CPU)."""
    return None if device == "auto" else device


def count_arg(count: int) -> int | None:
    """Notebook value -> episode count: 0 means all (None)."""
    if count < 0:
        raise ValueError(f"episode count {count} must be >= 0 (0 = all)")
    return count or None


# -- data ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Data:
    """A benchmark's data root, and whether it is the synthetic stand-in."""
    benchmark: str           # loader layout: "pascal" | "coco" | "fss"
    root: Path
    synthetic: bool

    @property
    def dataset(self) -> str:
        """The label results use: the benchmark, prefixed "synthetic-" for the synthetic data."""
        return f"synthetic-{self.benchmark}" if self.synthetic else self.benchmark

    @property
    def splits_dir(self) -> Path | None:
        return self.root / "splits" if self.synthetic else None

    def build(self, fold: int, split: str, shot: int, img_size: int, **options: Any) -> FewShotDataset:
        return build_dataset(self.benchmark, self.root, fold, split, shot, img_size=img_size,
                             splits_dir=self.splits_dir, **options)


def _synthetic_layouts(root: Path) -> dict[str, Any]:
    manifest = root / synthetic.MANIFEST_NAME
    return json.loads(manifest.read_text()).get("layouts", {}) if manifest.is_file() else {}


def prepare_data(benchmark: str, data_root: str, synthetic_data: bool) -> Data:
    """The data of `benchmark` under `data_root`; with `synthetic_data`, generate it there if missing (or
    written with other settings than :data:`SYNTHETIC`).

    Real data is never generated: a missing real benchmark is an error from the loader naming the path
    (README "Data sets"), and a root that holds the synthetic benchmark cannot be used as real data.
    """
    root = resolve(data_root)
    layouts = _synthetic_layouts(root)
    if synthetic_data:
        if benchmark not in SYNTHETIC:
            raise ValueError(f"there is no synthetic {benchmark!r} benchmark; choose one of {sorted(SYNTHETIC)}")
        written = layouts.get(benchmark, {})
        wanted = SYNTHETIC[benchmark]
        if written.get("seed") != 0 or any(written.get("params", {}).get(k) != v for k, v in wanted.items()):
            print(f"generating the synthetic {benchmark} benchmark under {root} ...")
            synthetic.generate(root, layout=benchmark, seed=0, **SYNTHETIC[benchmark])
    elif benchmark in layouts:
        raise ValueError(f"{root} holds the synthetic {benchmark} benchmark ({synthetic.MANIFEST_NAME}); "
                         "set synthetic=True, or point data_root at the real data")
    return Data(benchmark, root, synthetic_data)


# -- models ----------------------------------------------------------------------------------------
def load_model(checkpoint: str, device: str | torch.device | None = None, backbone: str | None = None) -> HSNet:
    """An hsnetlib checkpoint (best.pt, HSNet.save) or an authors' released best_model.pt, the path taken from
    the project root (:func:`hsnetlib.predict.load_model`; ``backbone``, when given, must match)."""
    model = predict.load_model(resolve(checkpoint), backbone=backbone)
    return model.to(device) if device is not None else model


class ConstantMask(nn.Module):
    """A trivial predictor: every pixel foreground (value 1) or background (value 0)."""

    def __init__(self, value: int):
        super().__init__()
        self.value = value

    def predict_mask(self, query_img: torch.Tensor, support_imgs: torch.Tensor, support_masks: torch.Tensor,
                     original_size: tuple[int, int] | None = None) -> torch.Tensor:
        size = tuple(original_size) if original_size is not None else tuple(query_img.shape[-2:])
        return torch.full((query_img.shape[0], *size), self.value, dtype=torch.long, device=query_img.device)


# -- training --------------------------------------------------------------------------------------
@dataclass
class TrainSettings:
    """Training budget and optimisation shared by the variants of a notebook (paper: 400 px, bsz 20)."""
    backbone: str = "resnet50"
    weights: str | None = None
    shot: int = 1
    img_size: int = 400
    epochs: int = 1
    bsz: int = 20
    lr: float = 1e-3
    backbone_lr: float = 1e-5           # fine-tuning only (Fig. 10)
    train_episodes: int | None = None   # per epoch; None = one pass over the training episodes
    val_episodes: int | None = None     # None = the whole validation split
    seed: int = 0
    device: str | None = None
    progress: bool = True


# Validation mIoU (percent) a training must reach to count as having left the all-background solution
# that training starts from (all-background scores 0; a training still there reads as "not converged").
CONVERGED_MIOU = 10.0
RESUME = {"auto": "auto", "fresh": False, "continue": True}  # notebook value -> TrainConfig.resume


def resume_arg(resume: str) -> bool | str:
    """Notebook value -> TrainConfig.resume: "auto" (continue an interrupted training, else start), "fresh"
    (start afresh: what run_dir holds is removed), "continue" (resume; an error without last.pt)."""
    if resume not in RESUME:
        raise ValueError(f"resume={resume!r}: choose one of {sorted(RESUME)}")
    return RESUME[resume]


def _clear(run_dir: Path) -> None:
    for name in TRAIN_FILES:
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def cache_key(config: TrainConfig) -> str:
    """Identifies a training by everything its result depends on (not where it is written)."""
    relevant = {k: v for k, v in config.to_dict().items() if k not in ("run_dir", "progress", "workers", "resume")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _link_files(source: Path, target: Path) -> None:
    """Put a finished training's files from one folder into another: checkpoints hard-linked (they are only
    ever replaced, never written in place), the small text files copied (metrics.csv grows on resuming)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in TRAIN_FILES[:-1]:  # not tb/
        if not (source / name).is_file():
            continue
        (target / name).unlink(missing_ok=True)
        if name.endswith(".pt"):
            try:
                os.link(source / name, target / name)
                continue
            except OSError:  # another file system
                pass
        shutil.copy2(source / name, target / name)


def _from_cache(entry: Path, run_dir: Path) -> dict[str, Any] | None:
    if not (entry / SUMMARY_FILE).is_file():
        return None
    _clear(run_dir)
    _link_files(entry, run_dir)
    summary = json.loads((entry / SUMMARY_FILE).read_text())
    summary.update(run_dir=str(run_dir), best_checkpoint=str(run_dir / "best.pt"),
                   last_checkpoint=str(run_dir / "last.pt"), reused_from=str(entry))
    return summary


def _store_in_cache(entry: Path, run_dir: Path, summary: Mapping[str, Any]) -> None:
    """Add a finished training to the cache; the entry appears whole (written aside, then renamed) or not at all."""
    if (entry / SUMMARY_FILE).is_file():
        return
    staging = entry.parent / f".{entry.name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    _link_files(run_dir, staging)
    (staging / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(entry, ignore_errors=True)  # an incomplete entry (no summary) of an earlier crash
    try:
        os.rename(staging, entry)
    except OSError:  # another process stored the same training meanwhile
        shutil.rmtree(staging, ignore_errors=True)


def train_model(data: Data, fold: int, run_dir: str | Path, settings: TrainSettings,
                variant: Mapping[str, Any] | None = None, resume: bool | str = False,
                cache_dir: str | Path | None = None,
                on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train one HSNet variant with :func:`hsnetlib.train.train`; returns its summary (run_dir, history, ...).

    `resume` is TrainConfig's: False removes what an earlier training left in run_dir first, so the run
    trains afresh; "auto" continues an interrupted training in run_dir (a finished one is returned as it
    is) and starts one otherwise; True continues and fails without last.pt. With `cache_dir`, a training
    whose configuration (everything but the run folder) was already trained there is not repeated: its files
    are put into run_dir and the summary says ``reused_from``. Identical trainings are shared this way
    (same settings, same result). `on_epoch(row)` is called after every epoch trained here (the row of
    ``summary["history"]``), e.g. to redraw learning curves (:class:`hsnetlib.viz.LiveCurves`).
    """
    run_dir = resolve(run_dir)
    if resume is False:
        _clear(run_dir)
    config = TrainConfig(
        benchmark=data.benchmark, datapath=str(data.root),
        splits_dir=None if data.splits_dir is None else str(data.splits_dir),
        fold=fold, backbone=settings.backbone, weights=settings.weights, shot=settings.shot,
        img_size=settings.img_size, bsz=settings.bsz, lr=settings.lr, backbone_lr=settings.backbone_lr,
        epochs=settings.epochs, seed=settings.seed,
        run_dir=str(run_dir), device=settings.device, val_episodes=settings.val_episodes,
        train_episodes_per_epoch=settings.train_episodes, resume=resume, progress=settings.progress,
        **dict(variant or {}),
    )
    if resume is not False and (run_dir / "last.pt").is_file():
        check_resumable(run_dir, config)  # a different configuration is reported, never replaced or mixed
    entry = resolve(cache_dir) / cache_key(config) if cache_dir else None
    summary = _from_cache(entry, run_dir) if entry is not None and resume is not True else None
    if summary is None:
        summary = train(config, on_epoch=on_epoch)
        if entry is not None:
            _store_in_cache(entry, run_dir, summary)
    summary["config"] = config.to_dict()
    return summary


def validation_baselines(data: Data, summary: Mapping[str, Any]) -> dict[str, float]:
    """mIoU of the all-foreground and all-background predictions on a training's validation episodes (the
    first ``val_episodes`` of its validation split, scored like its validation mIoU)."""
    config = TrainConfig(**summary["config"])
    _, val_ds = build_datasets(config)
    return {name: evaluate(ConstantMask(value), val_ds, nshot=config.shot, max_episodes=config.val_episodes,
                           progress=False).miou
            for name, value in (("all_foreground", 1), ("all_background", 0))}


# The notebooks' small model: 01_train.ipynb's defaults (tests/test_notebooks.py keeps them equal). 02, 09, 10
# and 11 use it when they get no checkpoint: trained once into the training cache, then found there.
NOTEBOOK_MODEL = TrainSettings(backbone="resnet50", weights=None, img_size=96, epochs=6, bsz=8,
                               train_episodes=160, val_episodes=40)


def notebook_model(data: Data, fold: int, run_dir: str | Path, device: str | None,
                   cache_dir: str | Path | None) -> dict[str, Any]:
    """The summary of the notebooks' small model (:data:`NOTEBOOK_MODEL`) on `fold`, trained into run_dir
    unless `cache_dir` already holds it."""
    settings = dataclasses.replace(NOTEBOOK_MODEL, device=device)
    return train_model(data, fold, run_dir, settings, resume="auto", cache_dir=cache_dir)


def results_fixture(runs_dir: str | Path, cache_dir: str | Path | None, episodes: int = 40) -> Path:
    """A small, real set of run records for the results notebook: the notebooks' small model on the synthetic
    benchmark (fold 0), its training and its 1-shot evaluation with baselines, recorded under `runs_dir`."""
    runs_dir = resolve(runs_dir)
    data = prepare_data("pascal", "data/synthetic", True)
    summary = notebook_model(data, 0, runs_dir / "train", None, cache_dir)
    model = HSNet.load(summary["best_checkpoint"])
    entry, _ = evaluate_model(model, data, 0, 1, NOTEBOOK_MODEL.img_size, episodes=episodes,
                              checkpoint=summary["best_checkpoint"])
    fixture = {"runs_dir": "", "fixture": str(runs_dir)}
    write_run_record(runs_dir / "train", "11_results.ipynb", fixture,
                           {"trainings": [training_entry(summary, data, 0, "main", "HSNet")]},
                           checkpoint=summary["best_checkpoint"], seed=NOTEBOOK_MODEL.seed)
    write_run_record(runs_dir / "evaluate", "11_results.ipynb", fixture, {"evaluations": [entry]},
                           checkpoint=summary["best_checkpoint"], seed=0)
    return runs_dir


def converged(history: Iterable[Mapping[str, Any]]) -> bool:
    """Whether a training left the all-background solution: some epoch's validation mIoU reached
    :data:`CONVERGED_MIOU`."""
    return any(row["val_miou"] >= CONVERGED_MIOU for row in history)


def load_training(run_dir: str | Path) -> dict[str, Any]:
    """The summary of a finished training from its run folder (config.json, metrics.csv, best.pt), as
    :func:`train_model` returns it; a missing, unfinished or foreign folder is an error naming it."""
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


def training_entry(summary: Mapping[str, Any], data: Data, fold: int, study: str, label: str) -> dict[str, Any]:
    """The `trainings` entry of a run record for one training summary (with its full history and whether
    it converged: :func:`converged`)."""
    _check_study(study)
    config = summary["config"]
    model = dataclasses.asdict(TrainConfig(**config).model_config())
    return {"study": study, "label": label, "benchmark": data.benchmark, "dataset": data.dataset,
            "synthetic": data.synthetic, "fold": fold, "model": model, "shot": config["shot"],
            "img_size": config["img_size"], "epochs": summary["epochs"], "bsz": config["bsz"], "lr": config["lr"],
            "train_episodes": config["train_episodes_per_epoch"], "val_episodes": config["val_episodes"],
            "best_epoch": summary["best_epoch"], "best_val_miou": summary["best_val_miou"],
            "converged": converged(summary["history"]),
            "history": summary["history"], "run_dir": summary["run_dir"], "checkpoint": summary["best_checkpoint"],
            "reused_from": summary.get("reused_from")}


# -- evaluation ------------------------------------------------------------------------------------
def _check_study(study: str) -> None:
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; choose one of {STUDIES}")


def _scores(result: EvalResult) -> dict[str, Any]:
    return {"miou": result.miou, "fbiou": result.fbiou, "ci95": list(result.ci95)}


def evaluate_model(model: nn.Module, data: Data, fold: int, nshot: int, img_size: int, *, study: str = "main",
                   label: str = "HSNet", ignore_label: bool = True, original_size: bool = False,
                   episodes: int | None = None, seed: int = 0, device: str | torch.device | None = None,
                   baselines: bool = True, checkpoint: str | Path | None = None, progress: bool = True,
                   batch_size: int = 8) -> tuple[dict[str, Any], EvalResult]:
    """Score `model` on the fold's test episodes; returns (the `evaluations` entry, the EvalResult).

    `batch_size` only changes speed (hsnetlib.evaluate scores every episode on its own).
    With `baselines`, all-foreground and all-background predictions are scored on the same episodes
    by the same evaluation (hsnetlib.evaluate and its IoU meter).
    """
    _check_study(study)
    dataset = data.build(fold, "test", nshot, img_size, use_original_imgsize=original_size)
    run = dict(nshot=nshot, seed=seed, device=device, ignore_label=ignore_label, max_episodes=episodes,
               batch_size=batch_size)
    result = evaluate(model, dataset, progress=progress, **run)
    entry = {
        "study": study, "label": label, "benchmark": data.benchmark, "dataset": data.dataset,
        "synthetic": data.synthetic, "fold": fold, "nshot": nshot, "ignore_label": ignore_label,
        "img_size": img_size, "original_size": original_size, "episodes": len(result.episodes), "seed": seed,
        "model": dataclasses.asdict(model.config), "learnable_params": model.num_learnable_parameters(),
        "checkpoint": None if checkpoint is None else str(resolve(checkpoint)),
        **_scores(result),
        "per_class": result.per_class[["class_id", "class_name", "episodes", "iou"]].to_dict("records"),
    }
    if baselines:
        entry["baselines"] = {name: _scores(evaluate(ConstantMask(value), dataset, progress=False, **run))
                              for name, value in (("all_foreground", 1), ("all_background", 0))}
    return entry, result


def profile_entry(model: HSNet, study: str, label: str, img_size: int, device: str | torch.device | None = None,
                  repeats: int = 10) -> dict[str, Any]:
    """The `profiles` entry: size, 1-shot time, memory and FLOPs (hsnetlib.profile)."""
    _check_study(study)
    profile = profile_model(model, img_size=img_size, nshot=1, device=device, repeats=repeats)
    return {"study": study, "label": label, "model": dataclasses.asdict(model.config), **profile.to_dict()}


# -- ablations: gather the trainings of a study's variants, evaluate and compare them -------------------
VARIANT_KEYS = ("hypercorrelation", "pyramid", "kernel", "block_layers", "support_masking", "finetune_backbone")
# TrainConfig fields that may differ between the trainings compared in one study (besides VARIANT_KEYS).
RUN_KEYS = ("run_dir", "progress", "workers", "resume", "device")


def variant_options(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The model options (VARIANT_KEYS) a training was run with."""
    return {k: tuple(v) if k == "pyramid" else v for k, v in summary["config"].items() if k in VARIANT_KEYS}


def train_variants(data: Data, fold: int, out_dir: str | Path, variants: Mapping[str, Mapping[str, Any]],
                   settings: TrainSettings, cache_dir: str | Path | None = None,
                   resume: bool | str = "auto") -> dict[str, dict[str, Any]]:
    """Train every variant (label -> model options) with the same settings into out_dir/<label>/ (one after
    another: a notebook's small default run; grids train each variant in its own run). Returns label -> summary."""
    return {label: train_model(data, fold, resolve(out_dir) / label, settings, variant, resume=resume,
                               cache_dir=cache_dir)
            for label, variant in variants.items()}


def gather_trainings(run_dirs: Mapping[str, str | Path], data: Data, fold: int) -> dict[str, dict[str, Any]]:
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


def check_alike(summaries: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse to compare trainings that differ in anything but their model options (VARIANT_KEYS)."""
    (first_label, first), *others = summaries.items()
    for label, summary in others:
        differing = sorted(k for k in set(first["config"]) | set(summary["config"])
                           if k not in VARIANT_KEYS + RUN_KEYS and first["config"].get(k) != summary["config"].get(k))
        if differing:
            details = "; ".join(f"{k}: {first['config'].get(k)!r} vs {summary['config'].get(k)!r}" for k in differing)
            raise ValueError(f"trainings {first_label!r} and {label!r} differ in more than the variant ({details}): "
                             "train the variants of a study alike")


def episodes_digest(result: EvalResult) -> str:
    """A fingerprint of the episodes an evaluation scored (class, query and supports of each, in order)."""
    keys = result.episodes[["seed", "episode", "class_id", "query", "supports"]].astype(str)
    return hashlib.sha256("\n".join(keys.agg("|".join, axis=1)).encode()).hexdigest()[:16]


def paired_bootstrap(result: EvalResult, reference: EvalResult, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict[str, Any]:
    """The mIoU difference result - reference on the same episodes, with a paired percentile bootstrap interval.

    Each replicate resamples the shared episodes with replacement -- the same draw for both models -- and
    recomputes both fold mIoUs from the resampled per-class sums (as :func:`hsnetlib.metrics.bootstrap_miou`
    does for one model), so the episode-to-episode difficulty that both share cancels in the difference.
    """
    mine, ref = result.episodes, reference.episodes
    keys = ["seed", "episode", "class_id", "query", "supports"]
    if len(mine) != len(ref) or not mine[keys].reset_index(drop=True).equals(ref[keys].reset_index(drop=True)):
        raise ValueError("a paired comparison needs both evaluations on the same episodes (same data, fold, shots, "
                         "episode seed and count)")
    classes = sorted(set(mine["class_id"]) | set(result.per_class["class_id"]))
    onehot = (mine["class_id"].to_numpy()[:, None] == np.asarray(classes)[None]).astype(float)  # (N, C)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(mine), np.full(len(mine), 1 / len(mine)), size=n_boot)  # (n_boot, N)

    def miou(frame: pd.DataFrame, w: np.ndarray) -> np.ndarray:
        inter = w @ (onehot * frame["fg_inter"].to_numpy()[:, None])
        union = w @ (onehot * frame["fg_union"].to_numpy()[:, None])
        return ratio(inter, union).mean(-1) * 100

    delta = miou(mine, weights) - miou(ref, weights)
    point = float(miou(mine, np.ones((1, len(mine))))[0] - miou(ref, np.ones((1, len(ref))))[0])
    alpha = (1 - level) / 2
    low, high = np.quantile(delta, [alpha, 1 - alpha])
    return {"delta_miou": point, "ci95": [float(low), float(high)], "episodes": len(mine)}


def evaluate_variants(data: Data, fold: int, study: str, trainings: Mapping[str, Mapping[str, Any]], reference: str,
                      shots: Iterable[int], episodes: int | None, ignore_label: bool = True, baselines: bool = False,
                      device: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate each training's best checkpoint on the same test episodes for every shot, and compare each
    variant with the study's `reference` (:func:`paired_bootstrap`).

    Returns the run-record sections {"trainings": [...], "evaluations": [...]} plus {"checkpoints": label ->
    best.pt}: every evaluation entry of a variant has ``paired`` = {reference, delta_miou, ci95, episodes}
    and ``episodes_digest``; every training entry ``converged`` and its full ``history``.
    """
    if reference not in trainings:
        raise ValueError(f"reference variant {reference!r} is not one of the trainings {sorted(trainings)}")
    check_alike(trainings)
    img_size = trainings[reference]["config"]["img_size"]
    order = [reference, *(label for label in trainings if label != reference)]
    records: dict[str, Any] = {"trainings": [], "evaluations": [], "checkpoints": {}}
    for label in order:
        records["trainings"].append(training_entry(trainings[label], data, fold, study, label))
        records["checkpoints"][label] = trainings[label]["best_checkpoint"]
    for shot in shots:
        results = {}
        for label in order:
            checkpoint = trainings[label]["best_checkpoint"]
            entry, results[label] = evaluate_model(
                HSNet.load(checkpoint), data, fold, shot, img_size, study=study, label=label,
                ignore_label=ignore_label, episodes=episodes, device=device, baselines=baselines,
                checkpoint=checkpoint, progress=progress)
            entry["episodes_digest"] = episodes_digest(results[label])
            if label != reference:
                entry["paired"] = {"reference": reference, **paired_bootstrap(results[label], results[reference])}
            records["evaluations"].append(entry)
    return records


def variant_table(records: Mapping[str, list[dict[str, Any]]]) -> pd.DataFrame:
    """The evaluations of :func:`evaluate_variants` as a frame: label, nshot, mIoU with its bootstrap interval,
    the paired difference to the reference with its interval, FB-IoU, whether the training converged, size."""
    converged_by_label = {t["label"]: t["converged"] for t in records["trainings"]}
    rows = []
    for e in records["evaluations"]:
        paired = e.get("paired") or {}
        rows.append({"label": e["label"], "nshot": e["nshot"], "miou": e["miou"],
                     "ci95_low": e["ci95"][0], "ci95_high": e["ci95"][1],
                     "delta_miou": paired.get("delta_miou", np.nan),
                     "delta_ci95_low": paired.get("ci95", [np.nan])[0],
                     "delta_ci95_high": paired.get("ci95", [np.nan, np.nan])[1],
                     "fbiou": e["fbiou"], "converged": converged_by_label[e["label"]],
                     "learnable_params": e["learnable_params"]})
    return pd.DataFrame(rows)
