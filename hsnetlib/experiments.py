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
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from hsnetlib import synthetic
from hsnetlib.data import FewShotDataset, build_dataset
from hsnetlib.evaluate import EvalResult, evaluate
from hsnetlib.model import FORMAT, HSNet
from hsnetlib.profile import profile_model
from hsnetlib.suite import resolve
from hsnetlib.train import TrainConfig, train

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
def load_model(checkpoint: str, device: str | torch.device | None = None) -> HSNet:
    """An hsnetlib checkpoint (best.pt, HSNet.save) or an authors' released best_model.pt."""
    path = resolve(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    is_ours = isinstance(payload, dict) and payload.get("format") == FORMAT
    del payload
    model = HSNet.load(path) if is_ours else HSNet.from_official_checkpoint(path)
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
    """Hard-link (or copy) a finished training's files from one folder into another."""
    target.mkdir(parents=True, exist_ok=True)
    for name in TRAIN_FILES[:-1]:  # not tb/
        if (source / name).is_file():
            try:
                os.link(source / name, target / name)
            except OSError:
                shutil.copy2(source / name, target / name)


def _from_cache(entry: Path, run_dir: Path) -> dict[str, Any] | None:
    if not (entry / SUMMARY_FILE).is_file():
        return None
    _link_files(entry, run_dir)
    summary = json.loads((entry / SUMMARY_FILE).read_text())
    summary.update(run_dir=str(run_dir), best_checkpoint=str(run_dir / "best.pt"),
                   last_checkpoint=str(run_dir / "last.pt"), reused_from=str(entry))
    return summary


def train_model(data: Data, fold: int, run_dir: str | Path, settings: TrainSettings,
                variant: Mapping[str, Any] | None = None, resume: bool = False,
                cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Train one HSNet variant with :func:`hsnetlib.train.train`; returns its summary (run_dir, history, ...).

    Without `resume`, what an earlier training left in run_dir is removed first, so a notebook re-run
    trains afresh. With `cache_dir`, a training whose configuration (everything but the run folder) was
    already trained there is not repeated: its files are linked into run_dir and the summary says
    ``reused_from``. Ablations share their reference variant this way (same settings, same result).
    """
    run_dir = resolve(run_dir)
    if not resume:
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
    entry = resolve(cache_dir) / cache_key(config) if cache_dir else None
    summary = _from_cache(entry, run_dir) if entry is not None and not resume else None
    if summary is None:
        summary = train(config)
        if entry is not None:
            _clear(entry)
            _link_files(run_dir, entry)
            (entry / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    summary["config"] = config.to_dict()
    return summary


def training_entry(summary: Mapping[str, Any], data: Data, fold: int, study: str, label: str) -> dict[str, Any]:
    """The `trainings` entry of a run record for one training summary."""
    _check_study(study)
    config = summary["config"]
    model = dataclasses.asdict(TrainConfig(**config).model_config())
    return {"study": study, "label": label, "benchmark": data.benchmark, "dataset": data.dataset,
            "synthetic": data.synthetic, "fold": fold, "model": model, "shot": config["shot"],
            "img_size": config["img_size"], "epochs": summary["epochs"], "bsz": config["bsz"], "lr": config["lr"],
            "train_episodes": config["train_episodes_per_epoch"], "val_episodes": config["val_episodes"],
            "best_epoch": summary["best_epoch"], "best_val_miou": summary["best_val_miou"],
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


# -- ablations: train + evaluate each variant --------------------------------------------------------
def run_variants(data: Data, fold: int, out_dir: str | Path, study: str, variants: Mapping[str, Mapping[str, Any]],
                 settings: TrainSettings, shots: Iterable[int], eval_episodes: int | None,
                 ignore_label: bool = True, baselines: bool = False, cache_dir: str | Path | None = None
                 ) -> dict[str, list[dict[str, Any]]]:
    """Train every variant (label -> model options) with the same settings into out_dir/<label>/, then
    evaluate its best checkpoint for every shot (`cache_dir`: see :func:`train_model`). Returns the
    run-record sections {"trainings": [...], "evaluations": [...]} and {"checkpoints": {label: path}}."""
    records: dict[str, Any] = {"trainings": [], "evaluations": [], "checkpoints": {}}
    for label, variant in variants.items():
        summary = train_model(data, fold, resolve(out_dir) / label, settings, variant, cache_dir=cache_dir)
        records["trainings"].append(training_entry(summary, data, fold, study, label))
        model = HSNet.load(summary["best_checkpoint"])
        for shot in shots:
            entry, _ = evaluate_model(model, data, fold, shot, settings.img_size, study=study, label=label,
                                      ignore_label=ignore_label, episodes=eval_episodes, device=settings.device,
                                      baselines=baselines,
                                      checkpoint=summary["best_checkpoint"], progress=settings.progress)
            records["evaluations"].append(entry)
        records["checkpoints"][label] = summary["best_checkpoint"]
    return records


def variant_table(records: Mapping[str, list[dict[str, Any]]]):
    """Evaluations of run_variants as a small frame: label, nshot, mIoU, FB-IoU, CI, learnable params."""
    import pandas as pd

    rows = [{"label": e["label"], "nshot": e["nshot"], "miou": e["miou"], "fbiou": e["fbiou"],
             "ci95_low": e["ci95"][0], "ci95_high": e["ci95"][1], "learnable_params": e["learnable_params"]}
            for e in records["evaluations"]]
    return pd.DataFrame(rows)
