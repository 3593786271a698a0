"""Evaluate a model on a data set's episodes: fold mIoU and FB-IoU, per class and per episode, a
bootstrap 95% interval, and the spread over several episode seeds.

The model is used only through ``model.predict_mask(query_img, support_imgs, support_masks,
original_size)`` (K-shot voting happens there). Predictions are scored at the resized query size,
or at the query's original size when the data set was built with ``use_original_imgsize=True``.
With ``resize="aspect"`` the padding is cropped away before scoring. Episodes are scored one by one
whatever the batch size, so ``batch_size`` only changes speed: the numbers are those of batch size 1.

The interval is a percentile bootstrap over episodes (1,000 replicates, fixed seed): episodes are
resampled with replacement and the fold mIoU is recomputed from the resampled per-class sums.
With several seeds, each seed's episodes are resampled separately and the statistic is the mean
over seeds.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from hsnetlib.data import FewShotDataset
from hsnetlib.metrics import AREA_COLUMNS, IoUMeter, bootstrap_miou, ratio
from hsnetlib.model import HSNetConfig
from hsnetlib.utils import atomic_write, default_workers, env_info, pick_device, plain

BOOTSTRAP_SEED = 0


@dataclass
class EvalResult:
    """Scores in percent. With several seeds, miou/fbiou are means over seeds and *_std their
    sample standard deviation (None for one seed); per_class and episodes have a `seed` column."""

    miou: float
    fbiou: float
    ci95: tuple[float, float]
    per_class: pd.DataFrame  # seed, class_id, class_name, episodes, fg/bg inter/union, iou
    episodes: pd.DataFrame  # seed, episode, class_id, class_name, query, supports, fg/bg inter/union, fg_iou
    per_seed: pd.DataFrame  # seed, miou, fbiou, ci95_low, ci95_high
    miou_std: float | None = None
    fbiou_std: float | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready Python values (per-episode records are left to the CSV)."""
        return plain({
            "miou": self.miou,
            "fbiou": self.fbiou,
            "ci95": list(self.ci95),
            "miou_std": self.miou_std,
            "fbiou_std": self.fbiou_std,
            "per_seed": self.per_seed.to_dict("records"),
            "per_class": self.per_class.to_dict("records"),
            "config": self.config,
        })

    def save(self, directory: str | Path) -> Path:
        """Write metrics.json, per_class.csv and episodes.csv into `directory`; returns it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / "per_class.csv", self.per_class.to_csv(index=False))
        atomic_write(directory / "episodes.csv", self.episodes.to_csv(index=False))
        atomic_write(directory / "metrics.json", json.dumps(self.to_dict(), indent=2) + "\n")  # last: complete
        return directory


def evaluate(
    model: torch.nn.Module,
    dataset: FewShotDataset,
    nshot: int | None = None,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    num_workers: int | None = None,
    ignore_label: bool | None = None,
    progress: bool = True,
    n_bootstrap: int = 1000,
    episodes: int | None = None,
) -> EvalResult:
    """Score `model` on the episodes of `dataset` redrawn for `nshot` supports (None: the data set's
    shot) and episode seed `seed`, or each of `seeds`. `ignore_label` None is the published choice:
    PASCAL-5i's boundary pixels are not scored (other benchmarks have no ignore label); False
    scores them as background (paper Table A1). `episodes` scores only the first episodes of
    each seed (None: all of the data set's, as published). `num_workers` None takes
    :func:`hsnetlib.utils.default_workers` (0 on CPU); memory is pinned on CUDA. The episodes and
    scores do not depend on the number of workers."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected >= 1")
    if episodes is not None and not (isinstance(episodes, int) and episodes >= 1):
        raise ValueError(f"episodes={episodes!r}: expected an integer >= 1 or None")
    device = pick_device(device)
    num_workers = default_workers(device) if num_workers is None else num_workers
    nshot = dataset.shot if nshot is None else nshot
    seeds = [seed] if seeds is None else [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty")
    ignore_label = True if ignore_label is None else ignore_label
    was_training = model.training
    model.to(device).eval()
    try:
        runs = [
            _run(model, _episodes_for(dataset, s, nshot), s, batch_size, device, num_workers, ignore_label,
                 progress, episodes)
            for s in seeds
        ]
    finally:
        model.train(was_training)
    for run in runs:
        if (run.meter.counts == 0).any():
            missing = [dataset.class_names[c] for c, n in zip(run.meter.class_ids, run.meter.counts) if n == 0]
            warnings.warn(f"seed {run.seed}: fold classes without episodes count as IoU 0 in mIoU: {missing}")
    return _result(runs, dataset, dict(
        dataset=dataclasses.asdict(dataset.config), nshot=nshot, seeds=seeds, batch_size=batch_size,
        ignore_label=ignore_label, episodes=episodes, n_bootstrap=n_bootstrap, bootstrap_seed=BOOTSTRAP_SEED,
        model=_config_dict(getattr(model, "config", None)),
        env=env_info(device),
    ), n_bootstrap)


@dataclass
class _SeedRun:
    seed: int
    meter: IoUMeter
    records: list[dict[str, Any]]


def _episodes_for(dataset: FewShotDataset, seed: int, shot: int) -> FewShotDataset:
    if (seed, shot) == (dataset.seed, dataset.shot):
        return dataset
    return dataset.with_episodes(seed=seed, shot=shot)


def _collate(items: list[dict[str, Any]]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """DataLoader collate: the model inputs stacked (every item has the same input size; stacked in the
    worker, pinned on CUDA) and the rest of each item kept apart (query masks may differ in size)."""
    inputs = {k: torch.stack([it[k] for it in items]) for k in _INPUTS}
    return inputs, [{k: v for k, v in it.items() if k not in _INPUTS} for it in items]


def _run(model, dataset: FewShotDataset, seed: int, batch_size: int, device: torch.device,
         num_workers: int, ignore_label: bool, progress: bool, episodes: int | None) -> _SeedRun:
    """Score the episodes of `dataset` (one seed), the first `episodes` if given."""
    meter = IoUMeter(dataset.class_ids, ignore_label=ignore_label)
    records = []
    scored = Subset(dataset, range(len(dataset) if episodes is None else min(len(dataset), episodes)))
    loader = DataLoader(scored, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_collate,
                        pin_memory=device.type == "cuda")  # one pass per seed: nothing for persistent workers to keep
    desc = f"eval {dataset.benchmark} fold {dataset.fold} {dataset.shot}-shot seed {seed}"
    with torch.inference_mode():
        for inputs, items in tqdm(loader, desc=desc, disable=not progress):
            inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
            for item, pred in zip(items, _predict(model, inputs, items, dataset.use_original_imgsize)):
                gt, ignore = _labels(item, dataset.use_original_imgsize)
                areas = meter.update(pred[None], gt[None], [item["class_id"]], None if ignore is None else ignore[None])[0]
                records.append(_record(seed, item, areas, dataset.class_names))
    return _SeedRun(seed, meter, records)


def _predict(model, inputs: dict[str, torch.Tensor], items: list[dict[str, Any]],
             original_size: bool) -> list[torch.Tensor]:
    """Per item, the predicted mask (H, W) on the CPU over the scored region: the valid (unpadded)
    part of the resized query, or the query's original size."""
    if not original_size:
        pred = model.predict_mask(*[inputs[k] for k in _INPUTS]).cpu()
        return [p[:h, :w] for p, (h, w) in zip(pred, (it["query_valid_size"].tolist() for it in items))]
    preds = []
    side = inputs["query_img"].shape[-1]
    for i, it in enumerate(items):  # each query has its own original size
        (h0, w0), (h, w) = it["org_query_imsize"].tolist(), it["query_valid_size"].tolist()
        canvas = (round(side * h0 / h), round(side * w0 / w))  # the padded square in original pixels
        one = [inputs[k][i:i + 1] for k in _INPUTS]
        preds.append(model.predict_mask(*one, original_size=canvas)[0, :h0, :w0].cpu())
    return preds


_INPUTS = ("query_img", "support_imgs", "support_masks")


def _labels(item: dict[str, Any], original_size: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The query mask and ignore map (or None) over the scored region."""
    h, w = item["org_query_imsize"].tolist() if original_size else item["query_valid_size"].tolist()
    ignore = item.get("query_ignore_idx")
    return item["query_mask"][:h, :w], None if ignore is None else ignore[:h, :w]


def _record(seed: int, item: dict[str, Any], areas: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    return {
        "seed": seed,
        "episode": item["episode"],
        "class_id": item["class_id"],
        "class_name": class_names[item["class_id"]],
        "query": item["query_name"],
        "supports": "|".join(item["support_names"]),
        **dict(zip(AREA_COLUMNS, areas.tolist())),
        "fg_iou": float(ratio(areas[0], areas[1]) * 100),
    }


def _config_dict(config: Any) -> dict[str, Any] | None:
    """A model's config as stored: HSNetConfig.to_dict() (a registered model's names its architecture)."""
    if isinstance(config, HSNetConfig):
        return config.to_dict()
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else None


def _result(runs: list[_SeedRun], dataset: FewShotDataset, config: dict[str, Any], n_bootstrap: int) -> EvalResult:
    episodes = pd.DataFrame([r for run in runs for r in run.records])
    per_class = []
    for run in runs:
        frame = run.meter.per_class
        frame.insert(0, "seed", run.seed)
        frame.insert(2, "class_name", [dataset.class_names[c] for c in frame["class_id"]])
        per_class.append(frame)

    def interval(frame: pd.DataFrame) -> tuple[float, float]:
        return bootstrap_miou(frame["fg_inter"].to_numpy(), frame["fg_union"].to_numpy(), frame["class_id"].to_numpy(),
                              dataset.class_ids, groups=frame["seed"].to_numpy(), n_boot=n_bootstrap, seed=BOOTSTRAP_SEED)

    per_seed = pd.DataFrame([
        {"seed": run.seed, "miou": run.meter.miou, "fbiou": run.meter.fbiou,
         **dict(zip(("ci95_low", "ci95_high"), interval(episodes[episodes["seed"] == run.seed])))}
        for run in runs
    ])
    many = len(runs) > 1
    return EvalResult(
        miou=float(per_seed["miou"].mean()),
        fbiou=float(per_seed["fbiou"].mean()),
        ci95=interval(episodes) if many else (float(per_seed["ci95_low"][0]), float(per_seed["ci95_high"][0])),
        per_class=pd.concat(per_class, ignore_index=True),
        episodes=episodes,
        per_seed=per_seed,
        miou_std=float(per_seed["miou"].std()) if many else None,
        fbiou_std=float(per_seed["fbiou"].std()) if many else None,
        config=config,
    )
