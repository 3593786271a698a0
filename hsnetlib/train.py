"""Episodic training of HSNet: one config dataclass, ``train(config)``, resumable runs, DDP via torchrun.

Protocol (spec, "Training"): the loss is the mean pixel-wise cross-entropy between the 2-channel
logits and the query mask; Adam with lr 1e-3 on the learner (the frozen backbone gets lr 1e-5 when
``finetune_backbone``); each epoch is one pass over the training episodes followed by validation,
and the checkpoint with the best validation mIoU is kept (``best.pt``).

Choices the spec leaves open, made here:

* PASCAL-5i boundary pixels (255) are not ignored by the loss, as in the authors' training: the
  query mask is used as the data set gives it (boundary = background). The mIoU of the training and
  validation meters does ignore them, as the published evaluation does.
* K-shot training (``shot > 1``): one 1-shot loss per support, summed. The K (query, support) pairs
  go through the model as one batch of K x B, so memory grows like the batch size. Validation
  episodes have the same K. Predictions for the training/validation mIoU use the K-shot vote of
  :func:`hsnetlib.model.vote`, as :meth:`HSNet.predict_mask` does.
* Validation runs in the trainer's own loop (it also gives the validation loss, and splits the
  episodes over the ranks): :class:`hsnetlib.metrics.IoUMeter` sums, so its mIoU / FB-IoU are those
  :func:`hsnetlib.evaluate.evaluate` reports for the same episodes at the input size.
* Validation ("selection"): ``"test_fold"`` (published) scores the split "val" -- on PASCAL-5i and
  COCO-20i the fold's 1,000 test episodes (seed 0), on FSS-1000 the separate val classes, as the
  authors' training does; ``val_benchmark`` (e.g. "fss") validates on another benchmark's val split
  instead (cross-domain model selection). ``"heldout"`` is leak-free: a fixed ``heldout_fraction`` of each training
  class's images (chosen with seed 0, the same for every training seed) is removed from training
  altogether and serves as validation queries, with supports drawn from the class's training images.
* Mixed precision, CUDA only: ``amp="bf16"`` (autocast) or ``amp="fp16"`` (autocast + GradScaler);
  the loss is computed in float32. On CPU both are refused with a ConfigError: CPU bf16 autocast
  runs, but its convolution backward is orders of magnitude slower than float32 there.
* Reproducibility: the learner's initialisation comes from ``seed``; the episodes of epoch ``e`` and
  their order depend only on ``(seed, e)`` (:class:`EpisodeSampler` yields ``(e, i)`` keys), so a
  run interrupted and resumed from ``last.pt`` ends, on CPU, with the same metrics and weights, and
  the number of loader workers changes nothing.
* Data path: ``workers`` None takes :func:`hsnetlib.utils.default_workers` (the CPUs the process has,
  less one, on CUDA; 0 on CPU); the training and validation loaders keep their workers for the whole
  run (persistent) and pin memory on CUDA.
* Non-finite training loss (e.g. a too large learning rate): the run stops with a TrainingError naming the
  epoch; its checkpoints keep the last finite epoch.
* Resume: ``resume=False`` starts a run and refuses a run directory that holds one; ``True`` continues
  the run in it from ``last.pt`` (FileNotFoundError if there is none); ``"auto"`` continues it if there
  is one and starts afresh otherwise. Resuming refuses (ConfigError naming the keys) a configuration
  that differs from the run's in anything but RESUMABLE_CHANGES; a run whose epochs are all done
  returns its summary without building anything or training again.
* Multi-GPU: launched by ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK), DistributedDataParallel,
  each rank takes ``bsz / world_size`` episodes of every global batch of ``bsz``; only rank 0 writes.

A run directory holds config.json, env.json, metrics.csv (one row per epoch), tb/ (TensorBoard),
last.pt and best.pt (written atomically; model config and weights, optimizer, epoch, best score and
RNG states; ``HSNet.load`` reads them).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
import warnings
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler, Subset
from tqdm.auto import tqdm

from hsnetlib.data import list_benchmarks, DatasetConfig, EpisodeIndex, FewShotDataset, build_dataset
from hsnetlib.metrics import IoUMeter
from hsnetlib.model import PAPER_IMG_SIZE, HSNet, HSNetConfig, config_from_dict, vote
from hsnetlib.utils import (atomic_write, default_workers, env_info, load_checkpoint, pick_device,
                            torchrun_world_size)

AMP_MODES = ("none", "bf16", "fp16")
SELECTIONS = ("test_fold", "heldout")
HELDOUT_SEED = 0  # the held-out images are the same whatever the training seed
HELDOUT_EPISODES = 1000  # validation episodes with selection="heldout" when val_episodes is None
METRIC_COLUMNS = ("epoch", "train_loss", "train_miou", "train_fbiou", "val_loss", "val_miou", "val_fbiou", "time")


class ConfigError(ValueError):
    """An invalid training configuration or option combination (the command line exits with code 2)."""


class TrainingError(RuntimeError):
    """A training that cannot go on (a non-finite loss); the command line exits with code 1."""


def setting(default: Any = dataclasses.MISSING, *, help: str, choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None,
            result: bool = True, default_factory: Callable[[], Any] | Any = dataclasses.MISSING) -> Any:
    """A training option with its help text, its admissible values and whether it can change a result
    (``result=False``: where or how verbosely a run is done, not what it computes; see :func:`result_dict`)."""
    return field(default=default, default_factory=default_factory,
                 metadata={"help": help, "choices": choices, "result": result})


@dataclass(kw_only=True)
class TrainConfig:
    """Everything a training run depends on. Defaults are the published protocol (PASCAL-5i, ResNet50)."""

    model: HSNetConfig = setting(default_factory=HSNetConfig, help="the model (hsnetlib.model.HSNetConfig, or the "
                                                                    "config of a registered model built on it)")
    benchmark: str = setting("pascal", choices=list_benchmarks, help="benchmark to train on")
    datapath: str = setting("data", help="data root holding the benchmark (README section 'Data sets')")
    fold: int = setting(0, help="fold whose classes are held out for testing")
    shot: int = setting(1, help="supports per training episode; K > 1 sums K 1-shot losses")
    img_size: int = setting(PAPER_IMG_SIZE, help="square input size in pixels")
    bsz: int = setting(20, help="global batch size (episodes per step, over all processes)")
    lr: float = setting(1e-3, help="Adam learning rate of the learner")
    backbone_lr: float = setting(1e-5, help="Adam learning rate of the backbone (model.finetune_backbone only)")
    epochs: int = setting(2000, help="number of epochs")
    workers: int | None = setting(None, result=False,
                                  help="DataLoader worker processes per process (default: on CUDA one per CPU of "
                                       "the process less one, at most 8; 0 on CPU)")
    seed: int = setting(0, help="seed of the learner's initialisation and the training episodes")
    run_dir: str | None = setting(None, result=False, help="run directory (default: runs/BENCHMARK-foldF-BACKBONE-"
                                                           "Kshot): config.json, env.json, metrics.csv, tb/, last.pt, best.pt")
    device: str | None = setting(None, result=False,
                                 help="torch device (default: CUDA if available, cuda:LOCAL_RANK under torchrun, else CPU)")
    amp: str = setting("none", choices=AMP_MODES, help="mixed precision on CUDA: bf16, or fp16 with a gradient scaler")
    val_episodes: int | None = setting(None, help="validation episodes per epoch (default: all of the validation "
                                                  "split, 1000 on PASCAL/COCO; 1000 with selection heldout)")
    val_benchmark: str | None = setting(None, choices=lambda: (None, *list_benchmarks()),
                                        help="benchmark whose val split (fold 0) selects the model (default: the "
                                             "training benchmark's; 'fss': FSS-1000's, the cross-domain recipe)")
    selection: str = setting("test_fold", choices=SELECTIONS,
                             help="model selection: validate on the val split (published; on PASCAL/COCO the test "
                                  "fold's episodes) or on held-out images of the training classes (leak-free)")
    heldout_fraction: float = setting(0.1, help="share of each training class's images held out with selection "
                                                "heldout")
    resume: bool | str = setting(False, result=False, choices=(False, True, "auto"),
                                 help="False: new run | True: continue last.pt | 'auto': either")
    train_episodes: int | None = setting(None, help="training episodes per epoch (default: one pass over all of them)")
    splits_dir: str | None = setting(None, help="directory of split lists replacing the shipped ones (synthetic "
                                                "data: ROOT/splits)")
    class_split: str | None = setting(None, help="benchmark 'folder': JSON file {\"trn\": [...], \"val\": [...], "
                                                 "\"test\": [...]} of class folder names")
    progress: bool = setting(True, result=False, help="show tqdm bars and a line per epoch (rank 0)")

    def __post_init__(self) -> None:
        if isinstance(self.model, Mapping):  # a config.json / summary["config"] read back
            try:
                self.model = config_from_dict(self.model)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"model: {err}") from None
        if not isinstance(self.model, HSNetConfig):
            raise ConfigError(f"model={self.model!r}: expected an HSNetConfig (or its to_dict())")
        if self.run_dir is None:
            self.run_dir = str(Path("runs") / run_name(self.benchmark, self.fold, self.model.backbone, self.shot))
        for name in ("datapath", "run_dir", "splits_dir", "class_split"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                setattr(self, name, str(value))
        self._check()

    def _check(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices is not None:
                choices = tuple(choices() if callable(choices) else choices)
                value = getattr(self, f.name)
                need(any(value == c and type(value) is type(c) for c in choices),
                     f"{f.name}={value!r}: choose one of {', '.join(map(repr, choices))}")
        for name in ("shot", "img_size", "bsz", "epochs"):
            need(_is_int(getattr(self, name)) and getattr(self, name) >= 1,
                 f"{name}={getattr(self, name)!r}: expected an integer >= 1")
        need(self.workers is None or (_is_int(self.workers) and self.workers >= 0),
             f"workers={self.workers!r}: expected None (automatic) or an integer >= 0")
        for name in ("val_episodes", "train_episodes"):
            value = getattr(self, name)
            need(value is None or (_is_int(value) and value >= 1), f"{name}={value!r}: expected None or an integer >= 1")
        for name in ("lr", "backbone_lr"):
            value = getattr(self, name)
            need(isinstance(value, (int, float)) and math.isfinite(value) and value > 0,
                 f"{name}={value!r}: expected a finite positive learning rate")
        need(0 < self.heldout_fraction < 1, f"heldout_fraction={self.heldout_fraction!r}: expected a value in (0, 1)")
        need(self.val_benchmark is None or self.selection == "test_fold",
             f"val_benchmark={self.val_benchmark!r} selects on that benchmark's val split; it cannot be combined "
             f"with selection={self.selection!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, the model's nested as {"model": {...}} (config.json, summary["config"])."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} | {"model": self.model.to_dict()}
        return json.loads(json.dumps(fields))  # tuples -> lists, as stored


def result_dict(config: TrainConfig) -> dict[str, Any]:
    """``config.to_dict()`` without the fields marked ``result=False``: what a training's result depends on
    (the training cache's key, the studies' "trained alike" check and the resume check derive from it)."""
    kept = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("result", True)}
    return {k: v for k, v in config.to_dict().items() if k in kept}


# Fields that may change when a run is resumed: those that change no result, and the number of epochs.
RESUMABLE_CHANGES = tuple(f.name for f in dataclasses.fields(TrainConfig) if not f.metadata["result"]) + ("epochs",)


def run_name(benchmark: str, fold: int, backbone: str, shot: int) -> str:
    """The default name of a run (or test results) directory."""
    return f"{benchmark}-fold{fold}-{backbone}-{shot}shot"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------------
# Distributed set-up (torchrun)
# ---------------------------------------------------------------------------------------------------

@dataclass
class DistInfo:
    """This process's place in the job; world_size 1 without torchrun."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialized: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, returned on the CPU (through this rank's device: NCCL reduces CUDA tensors only)."""
        if not self.initialized:
            return tensor
        on_device = tensor.to(self.device)
        torch_dist.all_reduce(on_device)
        return on_device.cpu()

    def barrier(self) -> None:
        if self.initialized:
            torch_dist.barrier()

    def close(self) -> None:
        if self.initialized:
            torch_dist.destroy_process_group()


def setup_distributed(device: str | None) -> DistInfo:
    """Join the torchrun job described by RANK / WORLD_SIZE / LOCAL_RANK (nccl on CUDA, gloo on CPU)."""
    world_size = torchrun_world_size()
    if world_size == 1:
        return DistInfo(device=pick_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    chosen = pick_device(device)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    backend = "nccl" if chosen.type == "cuda" else "gloo"
    torch_dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank=rank, world_size=world_size, device=chosen, initialized=True)


def unwrap(model: nn.Module) -> HSNet:
    return model.module if isinstance(model, DistributedDataParallel) else model


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------

class EpisodeSampler(Sampler[tuple[int, int]]):
    """This rank's share of an epoch's episode order, a function of (seed, epoch) only.

    The epoch's order is a permutation of the episodes drawn from ``RandomState([seed, epoch])``,
    cut to ``per_epoch`` episodes and padded (by repeating its start) to a multiple of the world size;
    rank r takes positions r, r + W, ... With a per-rank batch of b = B / W, the union of the ranks'
    j-th batches is positions jB .. (j+1)B - 1: the global batch of a single-process run.
    """

    def __init__(self, n_episodes: int, per_epoch: int | None = None, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        per_epoch = n_episodes if per_epoch is None else per_epoch
        if per_epoch > n_episodes:
            raise ValueError(f"train_episodes={per_epoch} exceeds the {n_episodes} training episodes")
        self.n_episodes, self.per_epoch, self.seed = n_episodes, per_epoch, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_order(self) -> list[int]:
        order = np.random.RandomState([self.seed, self.epoch]).permutation(self.n_episodes)[: self.per_epoch].tolist()
        padding = -len(order) % self.world_size
        return order + order[:padding]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """(epoch, episode) keys of this rank's share (see FewShotDataset.__getitem__)."""
        return ((self.epoch, i) for i in self.epoch_order()[self.rank:: self.world_size])

    def __len__(self) -> int:
        return math.ceil(self.per_epoch / self.world_size)


def build_datasets(config: TrainConfig) -> tuple[FewShotDataset, FewShotDataset]:
    """(training episodes, validation episodes) for the config's benchmark, fold and selection.

    ``val_benchmark`` set: the validation episodes are that benchmark's val split (fold 0, seed 0), e.g.
    FSS-1000's for a cross-domain training on PASCAL VOC.
    """
    common = dict(root=config.datapath, shot=config.shot, img_size=config.img_size, splits_dir=config.splits_dir)
    train_ds = build_dataset(config.benchmark, fold=config.fold, split="trn", seed=config.seed,
                             class_split=config.class_split, **common)
    if config.selection == "heldout":
        return heldout_split(train_ds, config.heldout_fraction, config.val_episodes or HELDOUT_EPISODES)
    if config.val_benchmark is not None:
        return train_ds, build_dataset(config.val_benchmark, fold=0, split="val", seed=0, **common)
    return train_ds, build_dataset(config.benchmark, fold=config.fold, split="val", seed=0,
                                   class_split=config.class_split, **common)


@dataclass(frozen=True)
class HeldoutConfig(DatasetConfig):
    """The description of held-out validation episodes (split "heldout"): the training data they are cut from,
    the held-out share, the number of episodes and their seed. :func:`heldout_dataset` rebuilds them;
    ``build_dataset`` refuses it (it describes no split of the benchmark)."""

    heldout_fraction: float = 0.1
    episodes: int = HELDOUT_EPISODES


class HeldoutEpisodes(FewShotDataset):
    """Validation episodes on held-out training images; ``with_episodes`` redraws them from the same images."""

    def with_episodes(self, seed: int | None = None, shot: int | None = None) -> FewShotDataset:
        changes = {k: v for k, v in (("seed", seed), ("shot", shot)) if v is not None}
        return heldout_dataset(dataclasses.replace(self.config, **changes))


def heldout_dataset(config: HeldoutConfig) -> FewShotDataset:
    """The held-out validation episodes ``config`` describes (see :func:`heldout_split`)."""
    plain = {f.name: getattr(config, f.name) for f in dataclasses.fields(DatasetConfig)}
    train_ds = build_dataset(**(plain | {"split": "trn", "seed": 0, "episodes": None}))
    return heldout_split(train_ds, config.heldout_fraction, config.episodes, seed=config.seed)[1]


def heldout_split(train_ds: FewShotDataset, fraction: float, n_episodes: int,
                  seed: int = 0) -> tuple[FewShotDataset, FewShotDataset]:
    """Hold out ``fraction`` of every training class's images for leak-free model selection.

    Returns (training episodes without the held-out images, neither as query nor as support;
    ``n_episodes`` fixed validation episodes whose queries are the held-out images, in an order
    shuffled once so that every class is met early, and whose supports are the class's training
    images, drawn with episode seed ``seed``). The held-out images do not depend on the training seed
    (HELDOUT_SEED). The validation set's config is a :class:`HeldoutConfig`, so what an evaluation records
    of it describes these episodes, and its ``with_episodes`` redraws them from the same held-out images.
    """
    index = train_ds.index
    names = {c: list(dict.fromkeys(index.candidates[c])) for c in index.class_ids}
    classes_of: dict[str, list[int]] = {}
    for c, class_names in names.items():
        for n in class_names:
            classes_of.setdefault(n, []).append(c)
    left = {c: len(names[c]) for c in index.class_ids}  # training images each class keeps
    rng = np.random.RandomState(HELDOUT_SEED)
    held: set[str] = set()
    for c in index.class_ids:
        want, have = max(1, round(fraction * len(names[c]))), sum(n in held for n in names[c])
        for i in rng.permutation(len(names[c])):
            n = names[c][i]
            if have >= want:
                break
            if n in held or any(left[d] <= 2 for d in classes_of[n]):
                continue  # every class keeps 2 training images: a query and a support
            held.add(n)
            have += 1
            for d in classes_of[n]:
                left[d] -= 1
        if have == 0:
            raise ValueError(
                f"selection='heldout': no image of class {train_ds.class_names[c]!r} ({len(names[c])} training "
                "images) can be held out while every class keeps at least 2 for training; use selection='test_fold'")
    keep = {c: [n for n in index.candidates[c] if n not in held] for c in index.class_ids}
    queries = [(n, c) for n, c in index.queries if n not in held]
    n_train = len({n for c in keep for n in keep[c]}) if index.draw_class_first else len(queries)
    train_index = EpisodeIndex(list(index.class_ids), queries, keep, index.draw_class_first, n_train)
    rows = [(n, c) for c in index.class_ids for n in names[c] if n in held]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    val_classes = sorted({c for _, c in rows})
    val_index = EpisodeIndex(val_classes, rows, {c: keep[c] for c in val_classes}, False, n_episodes)
    plain = {f.name: getattr(train_ds.config, f.name) for f in dataclasses.fields(DatasetConfig)}
    val_config = HeldoutConfig(**(plain | {"split": "heldout", "seed": seed, "episodes": n_episodes}),
                               heldout_fraction=fraction)
    return (FewShotDataset(train_ds.config, train_ds.layout, train_index),
            HeldoutEpisodes(val_config, train_ds.layout, val_index))


def first_episodes(dataset: FewShotDataset, n: int | None) -> FewShotDataset | Subset:
    """The first ``n`` episodes (all when None or more than there are)."""
    return dataset if n is None or n >= len(dataset) else Subset(dataset, range(n))


# ---------------------------------------------------------------------------------------------------
# The model and one step
# ---------------------------------------------------------------------------------------------------

def build_model(config: TrainConfig, device: torch.device) -> HSNet:
    """HSNet with the config's model; its initialisation is a function of the seed alone. torch's CPU generator
    is seeded inside ``fork_rng``, so the caller's Python, NumPy and torch random states are left as they were."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(config.seed)
        model = HSNet.from_config(config.model)  # the model registered for the config's architecture
    return model.to(device)


def build_optimizer(config: TrainConfig, model: HSNet) -> torch.optim.Adam:
    groups = [{"params": list(model.learner_parameters()), "lr": config.lr}]
    if config.model.finetune_backbone:
        groups.append({"params": list(model.backbone_parameters()), "lr": config.backbone_lr})
    return torch.optim.Adam(groups)


def autocast(device: torch.device, amp: str):
    if amp == "none":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def forward_episodes(model: nn.Module, batch: dict[str, Any], device: torch.device,
                     amp: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """Loss per episode (B,) -- the 1-shot losses of the K supports, summed -- and the K-shot vote (B, H, W).

    The K (query, support) pairs run as one batch of K x B (support-major), i.e. one forward pass.
    """
    query = batch["query_img"].to(device, non_blocking=True)  # (B, 3, H, W)
    supports = batch["support_imgs"].to(device, non_blocking=True)  # (B, K, 3, H, W)
    masks = batch["support_masks"].to(device, non_blocking=True)  # (B, K, H, W)
    target = batch["query_mask"].to(device, non_blocking=True).long()  # (B, H, W), boundary = background
    B, K, _, H, W = supports.shape
    with autocast(device, amp):
        logits = model(query.repeat(K, 1, 1, 1), supports.transpose(0, 1).reshape(K * B, 3, H, W),
                       masks.transpose(0, 1).reshape(K * B, H, W))  # (K*B, 2, H, W)
    pixel_loss = F.cross_entropy(logits.float(), target.repeat(K, 1, 1), reduction="none")  # (K*B, H, W)
    loss = pixel_loss.mean(dim=(1, 2)).view(K, B).sum(dim=0)  # (B,)
    votes = logits.detach().argmax(dim=1).view(K, B, H, W).sum(dim=0)  # (B, H, W)
    return loss, vote(votes.float())


@dataclass
class EpochStats:
    loss: float
    miou: float
    fbiou: float


class Scores:
    """Loss sum, episode count and an IoU meter, summed over ranks by ``reduce``."""

    def __init__(self, class_ids: list[int]):
        self.meter = IoUMeter(class_ids, ignore_label=True)
        self.loss_sum, self.count = 0.0, 0

    def update(self, loss: torch.Tensor, pred: torch.Tensor, batch: dict[str, Any]) -> None:
        self.loss_sum += float(loss.detach().sum())
        self.count += len(loss)
        ignore = batch.get("query_ignore_idx")
        self.meter.update(pred.cpu(), batch["query_mask"], batch["class_id"], ignore)

    @property
    def running(self) -> dict[str, str]:
        return {"loss": f"{self.loss_sum / max(self.count, 1):.4f}", "miou": f"{self.meter.miou:.1f}"}

    def reduce(self, dist: DistInfo) -> EpochStats:
        totals = dist.all_reduce(torch.tensor([self.loss_sum, float(self.count)], dtype=torch.float64))
        sums = dist.all_reduce(torch.from_numpy(self.meter.sums.copy()))
        counts = dist.all_reduce(torch.from_numpy(self.meter.counts.copy()))
        self.meter.sums, self.meter.counts = sums.numpy(), counts.numpy()
        return EpochStats(float(totals[0] / max(totals[1], 1)), self.meter.miou, self.meter.fbiou)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               batch: dict[str, Any], device: torch.device, amp: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on a batch of episodes: the mean episode loss, backward, Adam (through the
    GradScaler, a no-op unless amp="fp16"). Returns the per-episode losses and predictions."""
    loss, pred = forward_episodes(model, batch, device, amp)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss.mean()).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), pred


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    loader: DataLoader, class_ids: list[int], dist: DistInfo, amp: str, desc: str,
                    progress: bool) -> EpochStats:
    """One pass over the loader's episodes; returns the epoch's mean episode loss and training mIoU/FB-IoU."""
    model.train()
    scores = Scores(class_ids)
    bar = tqdm(loader, desc=desc, disable=not (progress and dist.main), leave=False, dynamic_ncols=True)
    for batch in bar:
        loss, pred = train_step(model, optimizer, scaler, batch, dist.device, amp)
        scores.update(loss, pred, batch)
        bar.set_postfix(scores.running)
    return scores.reduce(dist)


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, class_ids: list[int], dist: DistInfo, amp: str, desc: str,
             progress: bool) -> EpochStats:
    """Mean episode loss, mIoU and FB-IoU (boundary pixels ignored) of the validation episodes of every rank."""
    model = unwrap(model).eval()
    scores = Scores(class_ids)
    bar = tqdm(loader, desc=desc, disable=not (progress and dist.main), leave=False, dynamic_ncols=True)
    for batch in bar:
        loss, pred = forward_episodes(model, batch, dist.device, amp)
        scores.update(loss, pred, batch)
        bar.set_postfix(scores.running)
    return scores.reduce(dist)


# ---------------------------------------------------------------------------------------------------
# Run directory: checkpoints, metrics, provenance
# ---------------------------------------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """Python, NumPy (legacy global), torch and CUDA generator states, as checkpoint-safe values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Progress:
    """Where a run stands: the next epoch and the best validation mIoU so far."""

    next_epoch: int = 0
    best_epoch: int = -1
    best_val_miou: float = -math.inf


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    config: TrainConfig, epoch: int, state: Progress) -> None:
    unwrap(model).save(path, train_config=config.to_dict(), selection=config.selection, epoch=epoch,
                       best_epoch=state.best_epoch, best_val_miou=state.best_val_miou,
                       optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), rng=rng_state())


def restore_checkpoint(path: Path, model: HSNet, optimizer: torch.optim.Optimizer,
                       scaler: torch.amp.GradScaler) -> Progress:
    """Restore model, optimizer, scaler and RNG states from a training checkpoint; returns the progress."""
    payload = load_checkpoint(path, map_location="cpu")
    if not isinstance(payload, dict) or "optimizer" not in payload or "epoch" not in payload:
        raise ValueError(f"{path} is not a training checkpoint of hsnetlib.train (no optimizer/epoch)")
    model.load_state_dict(payload["state_dict"])
    optimizer.load_state_dict(payload["optimizer"])
    scaler.load_state_dict(payload["scaler"])
    set_rng_state(payload["rng"])
    return Progress(payload["epoch"] + 1, payload["best_epoch"], payload["best_val_miou"])


def read_progress(path: Path) -> Progress:
    """The progress stored in a training checkpoint, without reading its tensors."""
    payload = load_checkpoint(path, map_location="cpu", mmap=True)
    if not isinstance(payload, dict) or "epoch" not in payload:
        raise ValueError(f"{path} is not a training checkpoint of hsnetlib.train (no epoch)")
    return Progress(payload["epoch"] + 1, payload["best_epoch"], payload["best_val_miou"])


def check_resumable(run_dir: Path, config: TrainConfig) -> None:
    """A resumed run must have the config it started with (up to RESUMABLE_CHANGES)."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir / 'last.pt'} exists but {path} does not: not a run directory of hsnetlib")
    stored = _flat(json.loads(path.read_text()))
    current = _flat(result_dict(config))
    changed = [f"{k} (run: {stored.get(k)!r}, now: {v!r})" for k, v in current.items()
               if k not in RESUMABLE_CHANGES and stored.get(k) != v]
    changed += [f"{k} (run: {stored[k]!r}, now: not an option)" for k in stored
                if k not in current and k.split(".")[0] not in RESUMABLE_CHANGES]
    if changed:
        raise ConfigError(f"cannot resume {run_dir} with a different configuration: {'; '.join(changed)} "
                          f"(only {', '.join(RESUMABLE_CHANGES)} may change); to train this configuration, "
                          "give it another run folder (a notebook's out_dir) or delete that one")


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"kernel": ...}, ...} -> {"model.kernel": ..., ...}"""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[prefix + key] = value
    return flat


def write_env(path: Path, dist: DistInfo, resumed_at: int | None) -> None:
    """env.json: the provenance of the run's start; a resumed run adds an entry to its "resumes" list.

    On CPU the weights a run reaches depend on torch's thread count (its reductions are split over the
    threads), so a resume equals an uninterrupted run only with the same ``cpu_threads``: a change is warned of.
    """
    env = env_info(dist.device) | {"world_size": dist.world_size}
    if resumed_at is not None and path.is_file():
        first = json.loads(path.read_text())
        before = (first.get("resumes") or [first])[-1].get("cpu_threads")
        if before is not None and before != env["cpu_threads"]:
            message = (f"resuming {path.parent} with {env['cpu_threads']} CPU threads; it ran with {before} until "
                       f"epoch {resumed_at}: the result may differ slightly from an uninterrupted run "
                       "(torch.set_num_threads to keep it equal)")
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        env = first | {"resumes": first.get("resumes", []) + [env | {"epoch": resumed_at}]}
    atomic_write(path, json.dumps(env, indent=2) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.csv ([] if there is none); floats are written exactly, so they read back equal."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


class MetricsLog:
    """metrics.csv (one row per epoch) and TensorBoard scalars of rank 0."""

    def __init__(self, run_dir: Path, start_epoch: int):
        from torch.utils.tensorboard import SummaryWriter

        self.path = run_dir / "metrics.csv"
        # drop the epochs redone after resuming
        self.rows = [r for r in read_metrics(self.path) if r["epoch"] < start_epoch]
        self._write_all()
        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=start_epoch)

    def _write_all(self) -> None:
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, METRIC_COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, METRIC_COLUMNS).writerow(row)
        for key, value in row.items():
            if key != "epoch":
                self.writer.add_scalar(key.replace("_", "/", 1), value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


# ---------------------------------------------------------------------------------------------------
# The main loop
# ---------------------------------------------------------------------------------------------------

def train(config: TrainConfig, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train HSNet episodically as ``config`` says; returns a summary of the run.

    ``on_epoch(row)``, if given, is called on rank 0 after every finished epoch (its checkpoints
    written) with that epoch's metrics row -- equal to the row ``summary["history"]`` will hold --
    so that a caller can train in one call and still show each epoch (e.g. redraw learning curves).

    Summary keys: run_dir, selection, epochs (the configured number), best_epoch, best_val_miou,
    last (the last metrics.csv row), history (all rows), best_checkpoint, last_checkpoint; under
    torchrun, ranks other than 0 get history [] and last None. A finished run resumed (``resume``
    True or "auto") returns the summary its training returned, without training again. Raises
    ConfigError for an invalid option combination or a resumed run whose configuration differs,
    FileExistsError for a run directory that already holds a run (``resume=False``),
    FileNotFoundError for nothing to resume (``resume=True``) and for missing data, ValueError for
    malformed data and checkpoints.
    """
    dist = setup_distributed(config.device)
    try:
        return _train(config, dist, on_epoch)
    finally:
        dist.close()


def _check_setup(config: TrainConfig, dist: DistInfo) -> None:
    if config.bsz % dist.world_size:
        raise ConfigError(f"bsz={config.bsz} is not divisible by the {dist.world_size} processes: the global "
                          "batch is split evenly over the ranks")
    if config.amp != "none" and dist.device.type != "cuda":
        raise ConfigError(f"amp={config.amp!r} needs a CUDA device (running on {dist.device}); use amp='none'")


def _resuming(config: TrainConfig, run_dir: Path) -> bool:
    """Whether the run continues from run_dir/last.pt, as ``config.resume`` says (see the module docstring)."""
    last_path = run_dir / "last.pt"
    if not last_path.is_file():
        if config.resume is True:
            raise FileNotFoundError(f"resume=True but there is no {last_path} to continue (resume='auto' starts "
                                    "afresh when there is none)")
        return False
    if config.resume is False:
        raise FileExistsError(f"{run_dir} already holds a run (last.pt); pass resume=True or 'auto' (--resume) to "
                              "continue it or choose another run directory")
    check_resumable(run_dir, config)
    return True


def _loaders(config: TrainConfig, dist: DistInfo, train_ds: FewShotDataset,
             val_ds: FewShotDataset) -> tuple[DataLoader, DataLoader, EpisodeSampler]:
    per_rank = config.bsz // dist.world_size
    sampler = EpisodeSampler(len(train_ds), config.train_episodes, config.seed, dist.rank, dist.world_size)
    workers = default_workers(dist.device) if config.workers is None else config.workers
    options = dict(num_workers=workers, persistent_workers=workers > 0, pin_memory=dist.device.type == "cuda")
    train_loader = DataLoader(train_ds, batch_size=per_rank, sampler=sampler, **options)
    val_part = first_episodes(val_ds, config.val_episodes)
    val_shard = Subset(val_part, range(dist.rank, len(val_part), dist.world_size))
    val_loader = DataLoader(val_shard, batch_size=per_rank, shuffle=False, **options)
    return train_loader, val_loader, sampler


def _summary(config: TrainConfig, state: Progress, history: list[dict[str, Any]]) -> dict[str, Any]:
    run_dir = Path(config.run_dir)
    return {
        "run_dir": str(run_dir),
        "selection": config.selection,
        "epochs": config.epochs,
        "best_epoch": state.best_epoch,
        "best_val_miou": state.best_val_miou,
        "last": history[-1] if history else None,
        "history": history,
        "best_checkpoint": str(run_dir / "best.pt"),
        "last_checkpoint": str(run_dir / "last.pt"),
    }


def _train(config: TrainConfig, dist: DistInfo, on_epoch: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    _check_setup(config, dist)
    run_dir = Path(config.run_dir)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    resuming = _resuming(config, run_dir)
    log = dist.main and config.progress
    if resuming:
        done = read_progress(last_path)
        if done.next_epoch >= config.epochs:
            if log:
                tqdm.write(f"{run_dir} is finished ({done.next_epoch} epochs): nothing to train")
            return _summary(config, done, read_metrics(run_dir / "metrics.csv") if dist.main else [])

    train_ds, val_ds = build_datasets(config)
    train_loader, val_loader, sampler = _loaders(config, dist, train_ds, val_ds)
    model = build_model(config, dist.device)
    optimizer = build_optimizer(config, model)
    scaler = torch.amp.GradScaler(dist.device.type, enabled=config.amp == "fp16")
    state = restore_checkpoint(last_path, model, optimizer, scaler) if resuming else Progress()
    if dist.initialized:
        model = DistributedDataParallel(model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)

    metrics = None
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(run_dir / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
        write_env(run_dir / "env.json", dist, state.next_epoch if resuming else None)
        metrics = MetricsLog(run_dir, state.next_epoch)
    if log and resuming:
        tqdm.write(f"resuming {run_dir} at epoch {state.next_epoch}")

    try:
        for epoch in range(state.next_epoch, config.epochs):
            start = time.perf_counter()
            sampler.set_epoch(epoch)
            trn = train_one_epoch(model, optimizer, scaler, train_loader, train_ds.class_ids, dist, config.amp,
                                  f"train {epoch}", config.progress)
            if not math.isfinite(trn.loss):
                raise TrainingError(f"epoch {epoch}: the training loss became {trn.loss} (lr={config.lr}); training "
                                    f"stopped; the checkpoints in {run_dir} (if any) hold the last finite epoch")
            val = validate(model, val_loader, val_ds.class_ids, dist, config.amp, f"val {epoch}", config.progress)
            row = {"epoch": epoch, "train_loss": trn.loss, "train_miou": trn.miou, "train_fbiou": trn.fbiou,
                   "val_loss": val.loss, "val_miou": val.miou, "val_fbiou": val.fbiou,
                   "time": time.perf_counter() - start}
            improved = val.miou > state.best_val_miou
            if improved:
                state.best_epoch, state.best_val_miou = epoch, val.miou
            if dist.main:
                metrics.append(row)
                if improved:
                    save_checkpoint(best_path, model, optimizer, scaler, config, epoch, state)
                save_checkpoint(last_path, model, optimizer, scaler, config, epoch, state)
            if log:
                tqdm.write(f"epoch {epoch}: train loss {trn.loss:.4f} mIoU {trn.miou:.2f} | val loss {val.loss:.4f} "
                           f"mIoU {val.miou:.2f} FB-IoU {val.fbiou:.2f}{' (best)' if improved else ''}")
            if dist.main and on_epoch is not None:
                on_epoch(dict(row))
            dist.barrier()
    finally:
        if metrics is not None:
            metrics.close()

    return _summary(config, state, metrics.rows if metrics is not None else [])
