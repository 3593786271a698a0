"""What the notebooks call: their parameters' values and run folder, the parameters checked before any work, the
data (the synthetic benchmark is generated on demand), the translation of notebook values into a TrainConfig,
training (with the training cache) and evaluating a model, trivial baselines, profiles, and the entries of the run
record (:mod:`hsnetlib.suite.records`).

Notebook parameters cannot be None (TOML grids have no null), so "none" stands for no backbone weights, "auto"
for the automatic device, 0 for "all" episodes and "" for the default of a benchmark setting: :func:`weights_arg`,
:func:`device_arg`, :func:`count_arg`, :func:`val_benchmark_arg` and :func:`benchmark_options` translate them;
:func:`train_config` is the one place where notebook parameters become a TrainConfig.
"""
from __future__ import annotations

import ast
import contextlib
import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from hsnetlib import predict, synthetic
from hsnetlib.data import FewShotDataset, build_dataset, get_benchmark, list_benchmarks
from hsnetlib.evaluate import EvalResult, evaluate
from hsnetlib.model import HSNet, config_class, variant_fields
from hsnetlib.profile import profile_model
from hsnetlib.suite import cache
from hsnetlib.suite.grid import notebook_parameters
from hsnetlib.suite.paths import resolve
from hsnetlib.suite.records import (MAIN_STUDY, EvaluationEntry, ProfileEntry, Scores, TrainingEntry,
                                    write_run_record)
from hsnetlib.train import TrainConfig, build_datasets, check_resumable, train
from hsnetlib.utils import load_checkpoint, torchrun_world_size


def output_dir(out_dir: str | os.PathLike) -> Path:
    """A notebook's run folder (resolved like :func:`hsnetlib.suite.paths.resolve`), created if missing."""
    path = resolve(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def notebook_params(notebook: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The current values (defaults or injected) of the parameters a notebook declares.

    Call it in the notebook right after the parameters cell: ``params = notebook_params("x.ipynb", globals())``.
    """
    names = notebook_parameters(notebook)
    missing = [n for n in names if n not in namespace]
    if missing:
        raise NameError(f"parameters {missing} of {notebook} are not defined; run its parameters cell first")
    return {n: namespace[n] for n in names}


# -- notebook values -> library values (TOML grids have no null: "none", "auto" and 0 stand for None) ----------
RESUME = {"auto": "auto", "fresh": False, "continue": True}  # notebook value -> TrainConfig.resume


def weights_arg(weights: str) -> str | None:
    """Notebook value -> HSNet weights: "none" -> None (random init), else "imagenet" or a path."""
    if weights == "none":
        return None
    return weights if weights == "imagenet" else str(resolve(weights))


def device_arg(device: str) -> str | None:
    """Notebook value -> device: "auto" -> None (CUDA when available, else CPU)."""
    if device != "auto" and device != "cpu" and not str(device).startswith("cuda"):
        raise ValueError(f"device={device!r}: choose 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return None if device == "auto" else device


def count_arg(count: int, name: str = "episodes") -> int | None:
    """Notebook value -> episode count: 0 means all (None)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"{name}={count!r}: expected an integer >= 0 (0 = all)")
    return count or None


def val_benchmark_arg(val_benchmark: str) -> str | None:
    """Notebook value -> TrainConfig.val_benchmark: "" -> None (the training benchmark's val split), else a
    registered benchmark ("fss": FSS-1000 val, the cross-domain model selection)."""
    if val_benchmark and val_benchmark not in list_benchmarks():
        raise ValueError(f"val_benchmark={val_benchmark!r}: choose '' or one of {list_benchmarks()}")
    return val_benchmark or None


def benchmark_options(benchmark: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The benchmark's own options (``get_benchmark(benchmark).options``, e.g. isic_convention, lung_masks) among a
    notebook's parameters; "" means the registered default. An option of another benchmark set to a value is an
    error naming the parameter (it would be silently ignored)."""
    own = get_benchmark(benchmark).options
    for name in OPTION_PARAMS:
        if params.get(name) and name not in own:
            raise ValueError(f"{name}={params[name]!r} is an option of another benchmark, not of {benchmark!r} "
                             f"(its options: {sorted(own) or 'none'}); set it to \"\"")
    return {name: params[name] for name in own if params.get(name)}


def resume_arg(resume: str) -> bool | str:
    """Notebook value -> TrainConfig.resume: "auto" (continue an interrupted training, else start), "fresh"
    (start afresh: what run_dir holds is removed), "continue" (resume; an error without last.pt)."""
    if resume not in RESUME:
        raise ValueError(f"resume={resume!r}: choose one of {sorted(RESUME)}")
    return RESUME[resume]


def variant_of(params: Mapping[str, Any]) -> dict[str, Any]:
    """The model options (:func:`hsnetlib.model.variant_fields`) among a notebook's parameter values (pyramid as a
    tuple)."""
    return {k: tuple(params[k]) if isinstance(params[k], list) else params[k] for k in variant_fields() if k in params}


# The benchmarks' own options a notebook may declare as parameters (every registered one: "" = its default).
OPTION_PARAMS = tuple(dict.fromkeys(name for b in list_benchmarks() for name in get_benchmark(b).options))

# -- data --------------------------------------------------------------------------------------------------
# The synthetic data the notebooks generate when `synthetic` is on and the root lacks it, per synthetic layout
# (a benchmark's `BenchmarkSpec.synthetic`): small enough to write in seconds, large enough for the demos.
SYNTHETIC = {
    "pascal": dict(images_per_class=40, val_images_per_class=12, size=128),
    "fss": dict(n_classes=20, images_per_class=10, size=128),
    "deepglobe": dict(images_per_class=12, size=128),
    "isic": dict(images_per_class=12, size=128),
    "lung": dict(images_per_class=24, size=128),
    "coco": dict(images_per_class=4, val_images_per_class=11, size=64),  # 80 classes: small; 10-shot needs 11
}
SYNTHETIC_LOCK = ".synthetic.lock"  # in the data root: runs started together generate it once


def synthetic_layout(benchmark: str) -> str | None:
    """The synthetic layout of a registered benchmark that the notebooks can generate (None: none)."""
    layout = get_benchmark(benchmark).synthetic
    return layout if layout in SYNTHETIC else None


def synthetic_benchmarks() -> list[str]:
    """The registered benchmarks the notebooks can generate synthetic data for."""
    return [b for b in list_benchmarks() if synthetic_layout(b) is not None]


@dataclass(frozen=True)
class Data:
    """A benchmark's data root, and whether it is the synthetic stand-in."""
    benchmark: str           # a registered benchmark: "pascal" | "coco" | "fss" | "pascal-all" | "deepglobe" | ...
    root: Path
    synthetic: bool
    options: Mapping[str, Any] = field(default_factory=dict)  # the benchmark's own options (given)

    @property
    def dataset(self) -> str:
        """The label results use: the benchmark, prefixed "synthetic-" for the synthetic data."""
        return f"synthetic-{self.benchmark}" if self.synthetic else self.benchmark

    @property
    def splits_dir(self) -> Path | None:
        return self.root / "splits" if self.synthetic else None

    def build(self, fold: int, split: str, shot: int, img_size: int, **options: Any) -> FewShotDataset:
        return build_dataset(self.benchmark, self.root, fold, split, shot, img_size=img_size,
                             splits_dir=self.splits_dir, options=self.options, **options)


def _synthetic_layouts(root: Path) -> dict[str, Any]:
    manifest = root / synthetic.MANIFEST_NAME
    return json.loads(manifest.read_text()).get("layouts", {}) if manifest.is_file() else {}


def prepare_data(benchmark: str, data_root: str, synthetic_data: bool, val_benchmark: str | None = None,
                 options: Mapping[str, Any] | None = None) -> Data:
    """The data of `benchmark` (and of `val_benchmark`, a training's model-selection benchmark, under the same
    root) under `data_root`; with `synthetic_data`, generate their synthetic layouts there if missing (or written
    with other settings than :data:`SYNTHETIC`). `options`: the benchmark's own options (:func:`benchmark_options`).

    Real data is never generated: a missing real benchmark is an error from the loader naming the path
    (README "Data sets"), and a root that holds the synthetic benchmark cannot be used as real data.
    """
    root = resolve(data_root)
    layouts = _synthetic_layouts(root)
    if synthetic_data:
        root.mkdir(parents=True, exist_ok=True)
    for name in dict.fromkeys(b for b in (benchmark, val_benchmark) if b is not None):
        layout = synthetic_layout(name)
        if synthetic_data:
            if layout is None:
                raise ValueError(f"there is no synthetic {name!r} benchmark; choose one of {synthetic_benchmarks()}")
            with open(root / SYNTHETIC_LOCK, "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be writing it: wait, then read what it wrote
                written = _synthetic_layouts(root).get(layout, {})
                wanted = SYNTHETIC[layout]
                if written.get("seed") != 0 or any(written.get("params", {}).get(k) != v for k, v in wanted.items()):
                    print(f"generating the synthetic {layout} layout ({name}) under {root} ...")
                    synthetic.generate(root, layout=layout, seed=0, **wanted)
        elif layout in layouts:
            raise ValueError(f"{root} holds the synthetic {layout} layout ({synthetic.MANIFEST_NAME}); "
                             "set synthetic=True, or point data_root at the real data")
    return Data(benchmark, root, synthetic_data, dict(options or {}))


def check_data_params(params: Mapping[str, Any]) -> None:
    """The benchmark, fold and (when given) shots and episodes of a notebook's parameters, checked before any work:
    a bad value is an error naming the parameter."""
    benchmark, fold = params["benchmark"], params["fold"]
    if benchmark not in list_benchmarks():
        raise ValueError(f"benchmark={benchmark!r}: choose one of {list_benchmarks()}")
    nfolds = get_benchmark(benchmark).nfolds
    if not (isinstance(fold, int) and not isinstance(fold, bool) and 0 <= fold < nfolds):
        raise ValueError(f"fold={fold!r} out of range for {benchmark} (0..{nfolds - 1})")
    val_benchmark = val_benchmark_arg(params.get("val_benchmark", ""))
    for name in (benchmark, val_benchmark):
        if name is not None and params.get("synthetic") and synthetic_layout(name) is None:
            raise ValueError(f"synthetic=True: there is no synthetic {name!r} benchmark; choose one of "
                             f"{synthetic_benchmarks()}")
    get_benchmark(benchmark).resolve_options(benchmark_options(benchmark, params))
    for k in params.get("shots", []):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"shots={params['shots']!r}: every K must be an integer >= 1")
    if "episodes" in params:
        count_arg(params["episodes"], "episodes")
    if "device" in params:
        device_arg(params["device"])


# -- training ------------------------------------------------------------------------------------------------
# Validation mIoU (percent) a training must reach to count as having left the all-background solution
# that training starts from (all-background scores 0; a training still there reads as "not converged").
CONVERGED_MIOU = 10.0
# Notebook parameters copied to TrainConfig when a notebook declares them (else TrainConfig's default).
OPTIONAL_TRAIN_PARAMS = ("shot", "backbone_lr")


def train_config(data: Data, run_dir: str | os.PathLike, params: Mapping[str, Any],
                 variant: Mapping[str, Any] | None = None, resume: bool | str | None = None) -> TrainConfig:
    """The TrainConfig of a notebook's training parameters (notebook values: weights "none", counts 0 = all,
    device "auto", resume "auto" | "fresh" | "continue"); the model options are those among the parameters
    (:func:`variant_of`) updated by `variant`; `resume` (TrainConfig's) overrides ``params["resume"]``.

    The one place where notebook parameters become a training configuration.
    """
    if resume is None:
        resume = resume_arg(params.get("resume", "fresh"))
    options = {**variant_of(params), **(variant or {})}
    model = config_class(list(options))(backbone=params["backbone"], weights=weights_arg(params["weights"]), **options)
    return TrainConfig(
        model=model, benchmark=data.benchmark, datapath=str(data.root),
        splits_dir=None if data.splits_dir is None else str(data.splits_dir),
        fold=params["fold"], img_size=params["img_size"], epochs=params["epochs"], bsz=params["bsz"], lr=params["lr"],
        train_episodes=count_arg(params["train_episodes"], "train_episodes"),
        val_episodes=count_arg(params["val_episodes"], "val_episodes"), seed=params["seed"],
        val_benchmark=val_benchmark_arg(params.get("val_benchmark", "")),
        device=device_arg(params["device"]), run_dir=str(resolve(run_dir)), resume=resume,
        **{k: params[k] for k in OPTIONAL_TRAIN_PARAMS if k in params})


def check_train_params(params: Mapping[str, Any]) -> TrainConfig:
    """Check a training notebook's parameters before any work (the cell after the parameters cell): the data's
    (:func:`check_data_params`) and everything TrainConfig and HSNetConfig check; returns the TrainConfig
    (of the data root as given, before any synthetic data is generated)."""
    check_data_params(params)
    data = Data(params["benchmark"], resolve(params["data_root"]), bool(params.get("synthetic")))
    return train_config(data, params.get("out_dir", "."), params)


def train_model(config: TrainConfig, cache_dir: str | os.PathLike | None = None,
                on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train with :func:`hsnetlib.train.train`; returns its summary (run_dir, history, ..., config).

    ``config.resume`` False removes what an earlier training left in run_dir first, so the run trains afresh;
    "auto" continues an interrupted training in run_dir (a finished one is returned as it is) and starts one
    otherwise; True continues and fails without last.pt. With `cache_dir` (taken from the project root), a
    training whose result-relevant configuration was trained there before is not repeated
    (:mod:`hsnetlib.suite.cache`): its files are put into run_dir and the summary says ``reused_from``.
    `on_epoch(row)` is called after every epoch trained here.
    """
    run_dir = Path(config.run_dir)
    cache_dir = resolve(cache_dir) if cache_dir else None  # from the project root, wherever the kernel runs
    if config.resume is False:
        cache.clear_training(run_dir)
    if config.resume is not False and (run_dir / "last.pt").is_file():
        check_resumable(run_dir, config)  # a different configuration is reported, never replaced or mixed
    with _cache_turn(cache_dir, config):
        summary = cache.fetch(cache_dir, config, run_dir) if cache_dir and config.resume is not True else None
        if summary is None:
            summary = train(config, on_epoch=on_epoch)
            if cache_dir:
                cache.store(cache_dir, config, run_dir, summary)
    summary["config"] = config.to_dict()
    return summary


@contextlib.contextmanager
def _cache_turn(cache_dir: Path | None, config: TrainConfig) -> Iterator[None]:
    """One training of a configuration at a time in a cache: an exclusive lock (released when its holder dies)
    on its key, so runs started together that need the same training wait for the first and reuse it.
    Not under torchrun: the ranks of one training take part in it together."""
    if cache_dir is None or torchrun_world_size() > 1:
        yield
        return
    path = cache.lock_path(cache_dir, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def left_background(val_miou: float) -> bool:
    """Whether a validation mIoU (percent) is past the all-background solution: :data:`CONVERGED_MIOU` reached."""
    return val_miou >= CONVERGED_MIOU


def converged(history: Iterable[Mapping[str, Any]]) -> bool:
    """Whether a training left the all-background solution: some epoch's validation mIoU reached
    :data:`CONVERGED_MIOU`."""
    return any(left_background(row["val_miou"]) for row in history)


class ConstantMask(nn.Module):
    """A trivial predictor: every pixel foreground (value 1) or background (value 0)."""

    def __init__(self, value: int):
        super().__init__()
        self.value = value

    def predict_mask(self, query_img: torch.Tensor, support_imgs: torch.Tensor, support_masks: torch.Tensor,
                     original_size: tuple[int, int] | None = None) -> torch.Tensor:
        size = tuple(original_size) if original_size is not None else tuple(query_img.shape[-2:])
        return torch.full((query_img.shape[0], *size), self.value, dtype=torch.long, device=query_img.device)


BASELINES = (("all_foreground", 1), ("all_background", 0))


def validation_baselines(summary: Mapping[str, Any]) -> dict[str, float]:
    """mIoU of the all-foreground and all-background predictions on a training's validation episodes (the
    first ``val_episodes`` of its validation split, scored like its validation mIoU)."""
    config = TrainConfig(**summary["config"])
    _, val_ds = build_datasets(config)
    return {name: evaluate(ConstantMask(value), val_ds, nshot=config.shot, episodes=config.val_episodes,
                           progress=False).miou for name, value in BASELINES}


def training_entry(summary: Mapping[str, Any], data: Data, study: str, label: str) -> TrainingEntry:
    """The `trainings` entry of a run record for one training summary (its full history, whether it converged)."""
    config = summary["config"]
    return TrainingEntry(
        study=study, label=label, benchmark=data.benchmark, dataset=data.dataset, synthetic=data.synthetic,
        fold=config["fold"], model=dict(config["model"]), shot=config["shot"],
        img_size=config["img_size"], epochs=summary["epochs"], bsz=config["bsz"], lr=config["lr"],
        train_episodes=config["train_episodes"], val_episodes=config["val_episodes"],
        best_epoch=summary["best_epoch"], best_val_miou=summary["best_val_miou"],
        converged=converged(summary["history"]), history=list(summary["history"]), run_dir=summary["run_dir"],
        checkpoint=summary["best_checkpoint"], reused_from=summary.get("reused_from"))


# The notebooks' small model is 01_train.ipynb's defaults: 02, 09, 10 and 11 use it when they get no checkpoint,
# trained once into the training cache, then found there.
TRAIN_NOTEBOOK = "01_train.ipynb"


def small_model_params() -> dict[str, Any]:
    """The default parameter values of 01_train.ipynb (its parameters cell): the notebooks' small model."""
    return {name: ast.literal_eval(p["default"]) for name, p in notebook_parameters(TRAIN_NOTEBOOK).items()}


def notebook_model(data: Data, fold: int, run_dir: str | os.PathLike, device: str,
                   cache_dir: str | os.PathLike | None) -> dict[str, Any]:
    """The summary of the notebooks' small model (:func:`small_model_params`) on `data` and `fold`, trained into
    run_dir unless `cache_dir` already holds it."""
    params = {**small_model_params(), "fold": fold, "device": device}
    return train_model(train_config(data, run_dir, params, resume="auto"), cache_dir=cache_dir)


# -- evaluation ----------------------------------------------------------------------------------------------
def load_model(checkpoint: str, device: str | torch.device | None = None, backbone: str | None = None) -> HSNet:
    """An hsnetlib checkpoint (best.pt, HSNet.save) or an authors' released best_model.pt, the path taken from
    the project root (:func:`hsnetlib.predict.load_model`; ``backbone``, when given, must match)."""
    model = predict.load_model(resolve(checkpoint), backbone=backbone)
    return model.to(device) if device is not None else model


@dataclass(frozen=True)
class CheckpointTraining:
    """What a checkpoint says of the training that wrote it; None where it does not say."""
    benchmark: str | None   # the benchmark it was trained on (its TrainConfig)
    converged: bool | None  # whether that training left the all-background solution (see checkpoint_training)


def checkpoint_training(checkpoint: str | os.PathLike) -> CheckpointTraining:
    """The training behind an hsnetlib checkpoint (best.pt, last.pt of :func:`hsnetlib.train.train`): its training
    benchmark, from the TrainConfig it holds, and whether it converged, from the best validation mIoU it holds
    (best.pt is written whenever validation improves, so it holds the best of every epoch so far: the same test
    as :func:`converged` on the training's history). Both None for a checkpoint without a training (an authors'
    best_model.pt, HSNet.save): unknown, not false.

    Read from the checkpoint, not from the training's run record beside it: the checkpoint is what was scored (its
    sha256 is in the evaluation's record), and it keeps what it says when it is copied, linked from the training
    cache or moved, where a record beside it may be missing, another run's, or older than the file.
    """
    payload = load_checkpoint(resolve(checkpoint))
    if not isinstance(payload, Mapping):
        return CheckpointTraining(None, None)
    best = payload.get("best_val_miou")
    return CheckpointTraining(benchmark=(payload.get("train_config") or {}).get("benchmark"),
                              converged=None if best is None else left_background(best))


def _scores(result: EvalResult) -> Scores:
    return Scores(miou=result.miou, fbiou=result.fbiou, ci95=list(result.ci95))


def evaluate_model(model: nn.Module, data: Data, fold: int, nshot: int, img_size: int, *, study: str = MAIN_STUDY,
                   label: str = "HSNet", ignore_label: bool = True, original_size: bool = False,
                   episodes: int | None = None, seed: int = 0, device: str | torch.device | None = None,
                   baselines: bool = True, checkpoint: str | os.PathLike | None = None, progress: bool = True,
                   batch_size: int = 8, train_benchmark: str | None = None, converged: bool | None = None
                   ) -> tuple[EvaluationEntry, EvalResult]:
    """Score `model` on the fold's test episodes; returns (the `evaluations` entry, the EvalResult).

    `episodes`: how many test episodes (None: the benchmark's test-episode count). `batch_size` only changes
    speed. With `baselines`, all-foreground and all-background predictions are scored on the same episodes by
    the same evaluation. `train_benchmark`: the benchmark the model was trained on (e.g. "pascal-all" for a
    cross-domain target; None: unknown, taken as the evaluated one). `converged`: whether the model's training
    converged (:func:`checkpoint_training`; None: unknown), recorded so that tables mark an unconverged model's
    numbers. The entry's ``data`` is ``dataset.describe()``: the benchmark's resolved options (isic_convention,
    lung_masks) and episode count.
    """
    dataset = data.build(fold, "test", nshot, img_size, use_original_imgsize=original_size, episodes=episodes)
    run = dict(nshot=nshot, seed=seed, device=device, ignore_label=ignore_label, episodes=episodes,
               batch_size=batch_size)
    result = evaluate(model, dataset, progress=progress, **run)
    scores = _scores(result)
    entry = EvaluationEntry(
        study=study, label=label, benchmark=data.benchmark, dataset=data.dataset, synthetic=data.synthetic,
        fold=fold, nshot=nshot, ignore_label=ignore_label, img_size=img_size, original_size=original_size,
        episodes=len(result.episodes), seed=seed, model=model.config.to_dict(),
        train_benchmark=train_benchmark, data=dataset.describe(), converged=converged,
        learnable_params=model.num_learnable_parameters(),
        checkpoint=None if checkpoint is None else str(resolve(checkpoint)),
        miou=scores.miou, fbiou=scores.fbiou, ci95=scores.ci95,
        per_class=result.per_class[["class_id", "class_name", "episodes", "iou"]].to_dict("records"))
    if baselines:
        entry.baselines = {name: _scores(evaluate(ConstantMask(value), dataset, progress=False, **run))
                           for name, value in BASELINES}
    return entry, result


def profile_entry(model: HSNet, study: str, label: str, img_size: int, device: str | torch.device | None = None,
                  repeats: int = 10) -> ProfileEntry:
    """The `profiles` entry: size, 1-shot time, memory and FLOPs (:func:`hsnetlib.profile.profile_model`)."""
    profile = profile_model(model, img_size=img_size, nshot=1, device=device, repeats=repeats)
    return ProfileEntry(study=study, label=label, model=model.config.to_dict(), profile=profile.to_dict())


# Parameters that say where and how a notebook runs, not what it trains.
RUN_PARAMS = ("device", "resume", "train_cache", "out_dir")


def is_small_model(params: Mapping[str, Any]) -> bool:
    """Whether a training notebook's parameters are 01_train.ipynb's defaults (up to :data:`RUN_PARAMS`): the
    notebooks' small model, which is expected to learn (beat the trivial baselines)."""
    return all(params.get(k) == v for k, v in small_model_params().items() if k not in RUN_PARAMS)


def example_records(runs_dir: str | os.PathLike, cache_dir: str | os.PathLike | None, episodes: int = 40) -> Path:
    """A small, real set of run records for 11_results.ipynb's default run (no runs folder given): the notebooks'
    small model on the synthetic benchmark (fold 0), its training and its 1-shot evaluation with baselines,
    recorded under `runs_dir`."""
    runs_dir = resolve(runs_dir)
    data = prepare_data("pascal", "data/synthetic", True)
    summary = notebook_model(data, 0, runs_dir / "train", "auto", cache_dir)
    entry, _ = evaluate_model(HSNet.load(summary["best_checkpoint"]), data, 0, 1, summary["config"]["img_size"],
                              episodes=episodes, checkpoint=summary["best_checkpoint"],
                              converged=converged(summary["history"]))
    params = {"runs_dir": "", "example": str(runs_dir)}
    write_run_record(runs_dir / "train", "11_results.ipynb", params,
                     trainings=[training_entry(summary, data, MAIN_STUDY, "HSNet")],
                     checkpoint=summary["best_checkpoint"], seed=summary["config"]["seed"])
    write_run_record(runs_dir / "evaluate", "11_results.ipynb", params, evaluations=[entry],
                     checkpoint=summary["best_checkpoint"], seed=0)
    return runs_dir
