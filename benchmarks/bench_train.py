"""Training throughput (episodes per second) and peak memory per backbone, batch size and precision.

Every configuration runs the trainer's own step (:func:`hsnetlib.train.train_step`: forward of the
K x B (query, support) pairs, cross-entropy, backward, Adam on the learner, GradScaler with fp16) on
random 1-shot episodes whose support masks cover a quarter of the image, in a fresh subprocess so that
its peak memory is its own:

* CUDA: ``peak_mem_mb`` = ``torch.cuda.max_memory_allocated`` over the timed steps (model, Adam state,
  activations; add the CUDA context, about 0.5 GB, for what the card must hold) and ``reserved_mb`` =
  ``max_memory_reserved`` (the caching allocator's pool, what nvidia-smi shows minus the context);
  ``OOM`` where the step runs out of memory.
* CPU: ``peak_mem_mb`` = the peak resident set size (``VmHWM``, reset through /proc/self/clear_refs after
  the warm-up) of the process, which includes Python, torch and the model.

``extra_mem_mb`` is the peak minus the memory held before the first step (model weights and the batch):
what training adds -- gradients, Adam state, activations.

Throughput: ``--steps`` timed steps after ``--warmup`` untimed ones, episodes / second = B x steps / time.
AMP (``--amp none bf16 fp16``) needs CUDA and is skipped on CPU.

    python benchmarks/bench_train.py                                  # GPU: every backbone, B = 1..20, AMP on/off
    python benchmarks/bench_train.py --device cpu --backbones resnet50 --bsz 1 2 4 --steps 2 --amp none
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from hsnetlib.backbones import get_backbone, list_backbones
from hsnetlib.train import TrainConfig, build_model, build_optimizer, train_step
from hsnetlib.utils import env_info, pick_device



def random_batch(bsz: int, size: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch shaped like the data loader's: 1-shot episodes, support masks = a half-side box."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(bsz, 1, size, size)
    target = torch.zeros(bsz, size, size)
    for b in range(bsz):
        top, left = torch.randint(0, size // 2, (2,), generator=g).tolist()
        masks[b, 0, top:top + size // 2, left:left + size // 2] = 1
        target[b, size // 4:3 * size // 4, size // 4:3 * size // 4] = 1
    return {"query_img": torch.randn(bsz, 3, size, size, generator=g).to(device),
            "support_imgs": torch.randn(bsz, 1, 3, size, size, generator=g).to(device),
            "support_masks": masks.to(device), "query_mask": target.to(device)}


def proc_status(field: str) -> float:
    """A memory field of /proc/self/status in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(backbone: str, bsz: int, amp: str, img_size: int, steps: int, warmup: int, device: str | None) -> dict:
    """One configuration, in this process: throughput and peak memory of the training step (at the backbone's valid
    image size nearest to ``img_size``)."""
    img_size = get_backbone(backbone).nearest_size(img_size)
    dev = pick_device(device)
    config = TrainConfig(model={"backbone": backbone, "weights": None}, bsz=bsz, img_size=img_size, amp=amp, device=str(dev))
    model = build_model(config, dev).train()
    optimizer = build_optimizer(config, model)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp == "fp16")
    batch = random_batch(bsz, img_size, dev)
    row = {"backbone": backbone, "bsz": bsz, "amp": amp, "img_size": img_size, "device": str(dev)}
    sync(dev)
    before = torch.cuda.memory_allocated(dev) / 2 ** 20 if dev.type == "cuda" else proc_status("VmRSS")
    try:
        for _ in range(warmup):
            train_step(model, optimizer, scaler, batch, dev, amp)
        sync(dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
        start = time.perf_counter()
        for _ in range(steps):
            train_step(model, optimizer, scaler, batch, dev, amp)
        sync(dev)
        elapsed = time.perf_counter() - start
    except torch.OutOfMemoryError:
        return row | {"status": "OOM"}
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2 ** 20
        row["reserved_mb"] = torch.cuda.max_memory_reserved(dev) / 2 ** 20
    else:
        peak = proc_status("VmHWM")
    return row | {"status": "ok", "step_s": elapsed / steps, "episodes_per_s": bsz * steps / elapsed,
                  "peak_mem_mb": peak, "extra_mem_mb": peak - before}


def run_isolated(args: argparse.Namespace, backbone: str, bsz: int, amp: str) -> dict:
    cmd = [sys.executable, __file__, "--probe", backbone, str(bsz), amp, "--img-size", str(args.img_size),
           "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.device:
        cmd += ["--device", args.device]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        if "MemoryError" in done.stderr or "Killed" in done.stderr or done.returncode == -9:
            return {"backbone": backbone, "bsz": bsz, "amp": amp, "img_size": args.img_size, "status": "OOM"}
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(frame: pd.DataFrame) -> str:
    cols = [c for c in ("backbone", "amp", "bsz", "status", "step_s", "episodes_per_s", "peak_mem_mb", "reserved_mb",
                        "extra_mem_mb")
            if c in frame]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame[cols].iterrows():
        cells = [f"{v:.2f}" if isinstance(v, float) and k in ("step_s", "episodes_per_s")
                 else f"{v:,.0f}" if isinstance(v, float) else str(v) for k, v in row.items()]
        lines.append("| " + " | ".join("" if c == "nan" else c for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=list_backbones(), choices=list_backbones(),
                        help="registered backbones")
    parser.add_argument("--bsz", nargs="+", type=int, default=[1, 2, 4, 8, 12, 16, 20], help="batch sizes")
    parser.add_argument("--amp", nargs="+", default=["none", "bf16", "fp16"], choices=["none", "bf16", "fp16"],
                        help="precisions (bf16/fp16 only on CUDA)")
    parser.add_argument("--img-size", type=int, default=400, help="input size (default: 400, as published)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--device", default=None, help="cpu / cuda (default: CUDA if available)")
    parser.add_argument("--csv", default=None, help="also write the rows to this CSV file")
    parser.add_argument("--probe", nargs=3, metavar=("BACKBONE", "BSZ", "AMP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        backbone, bsz, amp = args.probe
        print(json.dumps(measure(backbone, int(bsz), amp, args.img_size, args.steps, args.warmup, args.device)))
        return
    device = pick_device(args.device)
    amps = [a for a in args.amp if a == "none" or device.type == "cuda"]
    print(json.dumps(env_info(device)), file=sys.stderr)
    rows = []
    for backbone in args.backbones:
        for amp in amps:
            for bsz in sorted(args.bsz):
                row = run_isolated(args, backbone, bsz, amp)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
                if row["status"] == "OOM":
                    break  # larger batches will not fit either
    frame = pd.DataFrame(rows)
    if args.csv:
        frame.to_csv(args.csv, index=False)
    print(markdown(frame))


if __name__ == "__main__":
    main()
