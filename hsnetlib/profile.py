"""Model size, per-episode inference time, peak memory and FLOPs of an HSNet (paper Table 4).

All measurements are for one 1-shot episode (batch 1), as in the paper:

* ``learnable_params``: parameters of the learner (4D encoder + 2D decoder), the paper's "# learnable params".
* ``time_ms``: median wall time of ``model.predict_mask`` (backbone, correlation, learner, vote) after
  warm-up; CUDA is synchronised around each call.
* ``memory_gb``: on CUDA, ``torch.cuda.max_memory_allocated`` during the episode (weights included);
  on CPU, the bytes of the model's parameters and buffers and the inputs plus the peak of tensor
  storage alive at once during the episode, tracked op by op (allocator overhead not included).
* ``gflops``: FLOPs of the learner (multiply-adds count 2, ``torch.utils.flop_counter``);
  ``gflops_total`` adds the backbone and the correlation. The paper's FLOPs (20.56 G for the
  center-pivot ResNet101 model at 400 px) are below the backbone's own, so they count the learner:
  compare ``gflops`` with them.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from hsnetlib.model import PAPER_IMG_SIZE
from hsnetlib.utils import pick_device


@dataclass
class Profile:
    learnable_params: int
    time_ms: float
    time_ms_iqr: float      # interquartile range of the timed repeats
    memory_gb: float
    gflops: float           # learner only, comparable with the paper's FLOPs column
    gflops_total: float     # backbone + correlation + learner
    img_size: int
    nshot: int
    device: str
    memory_method: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PeakLiveTensors(TorchDispatchMode):
    """Peak bytes of tensor storage alive at once among the tensors created inside the mode."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def _release(self) -> None:
        for key, (ref, nbytes) in list(self.live.items()):
            if ref.expired():
                del self.live[key]
                self.current -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._release()
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                storage = leaf.untyped_storage()
                key, nbytes = storage.data_ptr(), storage.nbytes()
                if nbytes and key not in self.live:
                    self.live[key] = (StorageWeakRef(storage), nbytes)
                    self.current += nbytes
        self.peak = max(self.peak, self.current)
        return out


def episode_inputs(img_size: int, nshot: int = 1, device: str | torch.device = "cpu", seed: int = 0,
                   batch: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random episodes: query (B, 3, S, S), supports (B, K, 3, S, S), support masks (B, K, S, S) in {0, 1}."""
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, 3, img_size, img_size, generator=g)
    supports = torch.randn(batch, nshot, 3, img_size, img_size, generator=g)
    masks = (torch.rand(batch, nshot, img_size, img_size, generator=g) > 0.5).float()
    return query.to(device), supports.to(device), masks.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _tensor_bytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def measure_time(model, inputs, device: torch.device, warmup: int, repeats: int) -> tuple[float, float]:
    """(median, interquartile range) of predict_mask wall time in ms."""
    times = []
    for i in range(warmup + repeats):
        _sync(device)
        start = time.perf_counter()
        model.predict_mask(*inputs)
        _sync(device)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return statistics.median(times), quartiles[2] - quartiles[0]


def measure_memory(model, inputs, device: torch.device) -> tuple[float, str]:
    """Peak memory of one episode in GB, and how it was measured."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        model.predict_mask(*inputs)
        _sync(device)
        return torch.cuda.max_memory_allocated(device) / 1e9, "cuda max_memory_allocated"
    with PeakLiveTensors() as tracker:
        model.predict_mask(*inputs)
    static = _tensor_bytes(*model.parameters(), *model.buffers(), *inputs)
    return (static + tracker.peak) / 1e9, "cpu: weights + inputs + peak live tensors"


def measure_flops(model, inputs) -> tuple[float, float]:
    """(learner GFLOPs, total GFLOPs) of one predict_mask call."""
    with FlopCounterMode(display=False) as counter:
        model.predict_mask(*inputs)
    per_module = counter.get_flop_counts()
    # predict_mask calls the learner directly, so it is counted under its class name (via forward: under HSNet)
    names = (type(model.hpn_learner).__name__, f"{type(model).__name__}.hpn_learner")
    learner = next((sum(per_module[n].values()) for n in names if n in per_module), 0)
    return learner / 1e9, counter.get_total_flops() / 1e9


@torch.no_grad()
def profile_model(model, img_size: int = PAPER_IMG_SIZE, nshot: int = 1, device: str | torch.device | None = None,
                  warmup: int = 2, repeats: int = 10, seed: int = 0) -> Profile:
    """Size, time, memory and FLOPs of one `nshot`-shot episode at `img_size` (Table 4 uses 1-shot, 400 px)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} must be >= 1 and warmup={warmup} >= 0")
    device = pick_device(device)
    was_training = model.training
    model.to(device).eval()
    try:
        inputs = episode_inputs(img_size, nshot, device, seed)
        time_ms, iqr = measure_time(model, inputs, device, warmup, repeats)
        memory_gb, method = measure_memory(model, inputs, device)
        gflops, gflops_total = measure_flops(model, inputs)
    finally:
        model.train(was_training)
    return Profile(learnable_params=model.num_learnable_parameters(), time_ms=time_ms, time_ms_iqr=iqr,
                   memory_gb=memory_gb, gflops=gflops, gflops_total=gflops_total, img_size=img_size, nshot=nshot,
                   device=str(device), memory_method=method)
