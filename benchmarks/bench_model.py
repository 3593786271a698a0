"""Speed, memory and FLOPs of HSNet per backbone and 4D kernel (the columns of the paper's Table 4).

For every backbone x kernel it measures, on random 400x400 episodes (a backbone that needs another size, a
ViT/14, takes the valid size nearest to ``--img-size``: 406 px; the ``img_size`` column says which):

* learnable parameters;
* 1-shot and 5-shot per-episode inference (``predict_mask``; median, or with ``--stat min`` minimum, of
  ``--repeats`` runs after one warm-up), and the speed-up of the 5-shot episode over five 1-shot episodes;
* a 1-shot breakdown: backbone (query and support), correlation (masking, normalisation, 4D correlation) and
  4D learner + decoder;
* one training step at batch 2 (forward, cross-entropy, backward, Adam step on the learner);
* peak memory of the 1-shot and 5-shot episode and the training step. CUDA: ``torch.cuda.max_memory_allocated``
  after ``reset_peak_memory_stats``. CPU: each measurement runs once in a fresh subprocess; its peak resident
  set size (``VmHWM`` of /proc/self/status, reset through /proc/self/clear_refs just before the run; where that
  is not possible, ``ru_maxrss``) is reported, so the numbers include the process's Python, torch and model.
  ``extra_mem_*`` is the peak minus what was held just before the run (model, inputs; CPU: resident set);
* GFLOPs of a 1-shot episode and of its three stages (``torch.utils.flop_counter.FlopCounterMode``, which counts
  matrix products and convolutions; 1 multiply-add = 2 FLOPs);
* with ``--bf16``: the 1-shot episode and the learner alone under ``torch.autocast(dtype=torch.bfloat16)``,
  their speed-ups, and the agreement of the bf16 masks with fp32 (fraction of equal pixels over the episode's
  five supports, and the largest logit difference relative to the largest fp32 logit).

Random weights (``--weights none``, the default) give the same timings as trained ones; mask agreement is more
telling with real weights (``--weights imagenet``, a timm tag such as ``lvd142m``, a weights file, or
``--checkpoint best_model.pt``). ``--backbones all`` measures every registered backbone.
The 1-minute load average before and after each configuration is recorded: other processes on the machine
inflate every wall time (``--stat min`` helps; ``--threads 1 --clock cpu`` measures one core's CPU time,
which other jobs barely change).

    python benchmarks/bench_model.py --backbones resnet50 resnet101 --kernels center_pivot --csv bench.csv
    python benchmarks/bench_model.py --backbones all --device cuda --csv bench-backbones.csv
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from hsnetlib.backbones import get_backbone, list_backbones
from hsnetlib.model import HSNet
from hsnetlib.utils import env_info, pick_device

KERNELS = ("center_pivot", "separable", "original")
MEMORY_KINDS = ("1shot", "5shot", "train")


@dataclass
class Episode:
    query: torch.Tensor     # (B, 3, S, S)
    supports: torch.Tensor  # (B, K, 3, S, S)
    masks: torch.Tensor     # (B, K, S, S)
    target: torch.Tensor    # (B, S, S) int64, for the training step


def make_episode(size: int, batch: int, shots: int, device: torch.device, seed: int = 0) -> Episode:
    """Random images and box masks covering a different quarter-to-half of each support."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(batch, shots, size, size)
    for b in range(batch):
        for k in range(shots):
            top, left = torch.randint(0, size // 2, (2,), generator=g).tolist()
            masks[b, k, top:top + size // 2, left:left + size // 2] = 1
    target = torch.zeros(batch, size, size, dtype=torch.long)
    target[:, size // 4:3 * size // 4, size // 4:3 * size // 4] = 1
    return Episode(torch.randn(batch, 3, size, size, generator=g).to(device),
                   torch.randn(batch, shots, 3, size, size, generator=g).to(device), masks.to(device), target.to(device))


def build_model(args: argparse.Namespace, backbone: str, kernel: str, device: torch.device) -> HSNet:
    if args.checkpoint:
        model = HSNet.from_official_checkpoint(args.checkpoint, backbone=backbone)
    else:
        weights = None if args.weights.lower() == "none" else args.weights
        model = HSNet.from_config({"backbone": backbone, "weights": weights, "kernel": kernel})
    return model.to(device).eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


STATISTICS = {"median": statistics.median, "min": min}
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
STAT, CLOCK = "median", "wall"  # set from --stat and --clock in main()


def median_time(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Seconds of ``repeats`` calls after one warm-up call: their median (``--stat``) of wall time (``--clock``)."""
    clock = CLOCKS[CLOCK]
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        sync(device)
        times.append(clock() - start)
    return STATISTICS[STAT](times)


# -- the measured operations -------------------------------------------------------------------------------
def one_shot(model: HSNet, ep: Episode) -> torch.Tensor:
    return model.predict_mask(ep.query, ep.supports[:, :1], ep.masks[:, :1])


def five_shot(model: HSNet, ep: Episode) -> torch.Tensor:
    return model.predict_mask(ep.query, ep.supports[:, :5], ep.masks[:, :5])


def make_train_step(model: HSNet, ep: Episode) -> Callable[[], float]:
    optimizer = torch.optim.Adam(model.learner_parameters(), lr=1e-3)

    def step() -> float:
        model.train()
        logits = model(ep.query, ep.supports[:, 0], ep.masks[:, 0])
        loss = F.cross_entropy(logits, ep.target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.eval()
        return loss.item()

    return step


def stages(model: HSNet, ep: Episode) -> dict[str, Callable[[], object]]:
    """The three stages of a 1-shot episode as callables (inputs of each stage precomputed)."""
    query, support, mask = ep.query[:1], ep.supports[:1, 0], ep.masks[:1, 0]
    corr = model.correlation
    q_taps, s_taps = model.extract_taps(query), model.extract_taps(support)
    sizes = model._sizes(q_taps)

    def correlation():
        return corr(corr.query_features(q_taps), corr.support_features(s_taps, mask), sizes)

    pyramid = correlation()
    return {"backbone": lambda: (model.extract_taps(query), model.extract_taps(support)),
            "correlation": correlation,
            "learner": lambda: model.hpn_learner(pyramid)}


@torch.no_grad()
def breakdown(model: HSNet, ep: Episode, repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds of the three stages of a 1-shot episode."""
    return {f"{name}_s": median_time(fn, repeats, device) for name, fn in stages(model, ep).items()}


@torch.no_grad()
def gflops(model: HSNet, ep: Episode) -> dict[str, float]:
    """GFLOPs of a whole 1-shot episode and of its stages."""
    out = {}
    calls = {"1shot": lambda: one_shot(model, Episode(ep.query[:1], ep.supports[:1], ep.masks[:1], ep.target[:1]))}
    for name, fn in (calls | stages(model, ep)).items():
        counter = FlopCounterMode(display=False)
        with counter:
            fn()
        out[f"gflops_{name}"] = counter.get_total_flops() / 1e9
    return out


@torch.no_grad()
def bf16_comparison(model: HSNet, ep: Episode, repeats: int, device: torch.device) -> dict[str, float]:
    query, supports, masks = ep.query[:1], ep.supports[:1, :1], ep.masks[:1, :1]
    learner = stages(model, ep)["learner"]
    with torch.autocast(device.type, dtype=torch.bfloat16):
        seconds = median_time(lambda: model.predict_mask(query, supports, masks), repeats, device)
        learner_seconds = median_time(learner, repeats, device)
    agreement, rel_diff = [], []
    for k in range(ep.supports.shape[1]):  # every support of the episode gives one 1-shot comparison
        s, m = ep.supports[:1, k], ep.masks[:1, k]
        ref = model(query, s, m)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            low = model(query, s, m).float()
        agreement.append((low.argmax(1) == ref.argmax(1)).float().mean().item())
        rel_diff.append(((low - ref).abs().max() / ref.abs().max()).item())
    return {"bf16_1shot_s": seconds, "bf16_learner_s": learner_seconds, "bf16_mask_agreement": statistics.mean(agreement),
            "bf16_max_rel_logit_diff": max(rel_diff)}


# -- peak memory ---------------------------------------------------------------------------------------------
def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024  # kB
    return float("nan")


def peak_rss_mb(reset_worked: bool) -> float:
    if reset_worked:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, kB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale / 1024


def run_once(model: HSNet, ep: Episode, kind: str) -> None:
    if kind == "1shot":
        one_shot(model, ep)
    elif kind == "5shot":
        five_shot(model, ep)
    else:
        make_train_step(model, ep)()


def measure_memory_here(args: argparse.Namespace, backbone: str, kernel: str, kind: str) -> tuple[float, float]:
    """(peak, peak above the memory held before the run: model, inputs, runtime) in MB of one ``kind`` run."""
    device = pick_device(args.device)
    model = build_model(args, backbone, kernel, device)
    ep = make_episode(get_backbone(backbone).nearest_size(args.img_size), 2 if kind == "train" else 1, 5, device)
    if device.type == "cuda":
        sync(device)
        before = torch.cuda.memory_allocated(device) / 2 ** 20
        torch.cuda.reset_peak_memory_stats(device)
        run_once(model, ep, kind)
        sync(device)
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 20
        return peak, peak - before
    before = current_rss_mb()
    reset = reset_peak_rss()
    run_once(model, ep, kind)
    peak = peak_rss_mb(reset)
    return peak, peak - before


def measure_memory(args: argparse.Namespace, backbone: str, kernel: str) -> dict[str, float]:
    """Peak memory per kind; on CPU every run happens in a fresh subprocess (see the module docstring)."""
    out = {}
    for kind in MEMORY_KINDS:
        if pick_device(args.device).type == "cuda":
            out[f"peak_mem_{kind}_mb"], out[f"extra_mem_{kind}_mb"] = measure_memory_here(args, backbone, kernel, kind)
            continue
        cmd = [sys.executable, __file__, "--memory-probe", f"{backbone},{kernel},{kind}",
               "--device", "cpu", "--img-size", str(args.img_size), "--weights", args.weights]
        if args.checkpoint:
            cmd += ["--checkpoint", args.checkpoint]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"memory probe {' '.join(cmd)} failed:\n{result.stderr}")
        probe = json.loads(result.stdout.strip().splitlines()[-1])
        out[f"peak_mem_{kind}_mb"], out[f"extra_mem_{kind}_mb"] = probe["peak_mb"], probe["extra_mb"]
    return out


# -- one configuration ---------------------------------------------------------------------------------------
def bench_config(args: argparse.Namespace, backbone: str, kernel: str, device: torch.device) -> dict[str, object]:
    model = build_model(args, backbone, kernel, device)
    size = get_backbone(backbone).nearest_size(args.img_size)
    ep1 = make_episode(size, 1, 5, device)
    row: dict[str, object] = {"backbone": backbone, "kernel": kernel, "img_size": size,
                              "learnable_params": model.num_learnable_parameters(), "time": f"{args.stat} {args.clock}",
                              "load_avg_before": os.getloadavg()[0]}
    with torch.no_grad():
        row["1shot_s"] = median_time(lambda: one_shot(model, ep1), args.repeats, device)
        row["5shot_s"] = median_time(lambda: five_shot(model, ep1), args.repeats, device)
    row["5shot_speedup_vs_5x1shot"] = 5 * row["1shot_s"] / row["5shot_s"]
    row.update(breakdown(model, ep1, args.repeats, device))
    ep2 = make_episode(size, 2, 1, device, seed=1)
    row["train_step_b2_s"] = median_time(make_train_step(model, ep2), args.repeats, device)
    if not args.skip_memory:
        row.update(measure_memory(args, backbone, kernel))
        row["5shot_vs_1shot_peak_mem"] = row["peak_mem_5shot_mb"] / row["peak_mem_1shot_mb"]
        row["5shot_vs_1shot_extra_mem"] = row["extra_mem_5shot_mb"] / row["extra_mem_1shot_mb"]
    row.update(gflops(model, ep1))
    if args.bf16:
        row.update(bf16_comparison(model, ep1, args.repeats, device))
        row["bf16_speedup"] = row["1shot_s"] / row["bf16_1shot_s"]
        row["bf16_learner_speedup"] = row["learner_s"] / row["bf16_learner_s"]
    row["load_avg_after"] = os.getloadavg()[0]
    return row


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--backbones", nargs="+", default=["resnet50", "resnet101"], choices=["all", *list_backbones()],
                        help="registered backbones to measure, or 'all'")
    parser.add_argument("--kernels", nargs="+", default=["center_pivot"], choices=KERNELS,
                        help="4D kernels to measure; 'original' at 400 px takes minutes per episode on a CPU")
    parser.add_argument("--img-size", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement")
    parser.add_argument("--stat", choices=sorted(STATISTICS), default="median",
                        help="statistic of the timed runs to report; 'min' is the robust choice on a busy machine")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="'cpu' = this process's CPU time: with --threads 1 on a CPU, a stand-in for an idle "
                             "core's wall time when other jobs share the machine")
    parser.add_argument("--bf16", action="store_true", help="also measure bf16 autocast and its mask agreement")
    parser.add_argument("--weights", default="none", help="backbone weights: none (default), a named weight of the "
                                                          "backbone (imagenet, a timm tag) or a file")
    parser.add_argument("--checkpoint", default=None, help="an official best_model.pt (sets the backbone weights "
                                                           "and the learner; kernel must be center_pivot)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--skip-memory", action="store_true", help="do not measure peak memory")
    parser.add_argument("--csv", type=Path, default=None, help="write the table to this CSV file")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)  # internal: one memory run
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> pd.DataFrame | None:
    global STAT, CLOCK
    args = parse_args(argv)
    STAT, CLOCK = args.stat, args.clock
    if args.clock == "cpu" and (pick_device(args.device).type == "cuda" or args.threads != 1):
        raise SystemExit("--clock cpu measures one CPU thread: use it with --device cpu --threads 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        backbone, kernel, kind = args.memory_probe.split(",")
        peak, extra = measure_memory_here(args, backbone, kernel, kind)
        print(json.dumps({"peak_mb": peak, "extra_mb": extra}))
        return None
    if args.checkpoint and args.kernels != ["center_pivot"]:
        raise SystemExit("--checkpoint holds a center-pivot learner: use --kernels center_pivot")
    device = pick_device(args.device)
    info = env_info(device)
    print(json.dumps(info | {"load_average": os.getloadavg()}), flush=True)
    rows = []
    for backbone in list_backbones() if "all" in args.backbones else args.backbones:
        for kernel in args.kernels:
            print(f"-- {backbone} / {kernel} at {get_backbone(backbone).nearest_size(args.img_size)} px", flush=True)
            rows.append(bench_config(args, backbone, kernel, device))
            print(pd.Series(rows[-1]).to_string(), flush=True)
    table = pd.DataFrame(rows)
    table["device"] = info["device"]
    table["threads"] = info["cpu_threads"]
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.float_format", "{:.3f}".format):
        print(table.set_index(["backbone", "kernel"]).T.to_string())
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return table


if __name__ == "__main__":
    main()
