"""Episode loading rate per DataLoader worker against the model's training-step rate: how many workers a GPU needs.

What one worker does per episode is timed in this process, with one torch thread (DataLoader workers
run with ``torch.set_num_threads(1)``): ``FewShotDataset.__getitem__`` on PASCAL-5i test episodes --
decode the query and K support JPEGs and their PNG masks, resize to ``--img-size`` (400 as published),
normalise, label maps -- followed by the default collate of a batch. The images are generated once in
a temporary PASCAL layout with VOC's sizes (500x375 and 375x500 JPEGs of textured content, quality 90,
over 100 KB each; class-index PNG masks with a 255 boundary ring), so nothing has to be
downloaded. The first episodes are a warm-up; the timed ones read files from the page cache, as a
training run's later epochs do.

The training-step time is either given (``--step-s``, e.g. measured with benchmarks/bench_train.py on the
GPU in question; default: the H200 figure in benchmarks/README.md, or measured here when there is none)
or measured here with bench_train's own measurement (:func:`bench_train.measure`, i.e.
:func:`hsnetlib.train.train_step` on random episodes). A GPU step consumes ``bsz`` episodes, so it needs
``workers = ceil(bsz * episode_cpu_s / step_s)`` workers to never wait, for a worker with a core of its
own (what :func:`hsnetlib.utils.default_workers` provides) loads one batch in ``bsz * episode_cpu_s``.
The CPU time is used rather than the wall time because it is what a worker costs on a core of its own
and other jobs on a shared machine change it much less; both are printed. ``--check-workers N`` also
runs a DataLoader with N workers over the same episodes to compare the measured rate with N times the
single-worker rate.

    python benchmarks/bench_data.py                # 1- and 5-shot, 400 px; step: H200_STEP_S, else measured here
    python benchmarks/bench_data.py --step-s 0.35 --bsz 20            # workers for a given GPU step
    python benchmarks/bench_data.py --measure-step --device cuda --amp bf16   # measure the step here
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset, default_collate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import measure  # noqa: E402  (the training step's own benchmark)

from hsnetlib.data import build_dataset  # noqa: E402
from hsnetlib.utils import env_info, pick_device  # noqa: E402

# Seconds per training step of ResNet50, batch 20, 400 px on one H200 (bench_train.py): None until measured.
H200_STEP_S: float | None = None
VOC_SIZES = ((375, 500), (500, 375), (333, 500))  # (H, W) of typical VOC2012 images


def textured_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth colour regions plus fine noise: a JPEG of about VOC's bytes per pixel (not a flat image)."""
    coarse = rng.integers(0, 255, size=(h // 25 + 2, w // 25 + 2, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR), dtype=np.int16)
    return (smooth + rng.normal(0, 18, size=(h, w, 3))).clip(0, 255).astype(np.uint8)


def make_voc_layout(root: Path, n_images: int, seed: int = 0) -> Path:
    """``root/VOC2012/{JPEGImages,SegmentationClassAug}`` with ``n_images`` per fold-0 class, and split
    lists under ``root/splits`` (fold 0's val list holds every image under its class)."""
    rng = np.random.default_rng(seed)
    images, masks = root / "VOC2012" / "JPEGImages", root / "VOC2012" / "SegmentationClassAug"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    lines = []
    for c in range(5):
        for k in range(n_images):
            name = f"2008_{c:02d}{k:04d}"
            h, w = VOC_SIZES[(c + k) % len(VOC_SIZES)]
            Image.fromarray(textured_image(rng, h, w)).save(images / f"{name}.jpg", quality=90)
            label = np.zeros((h, w), np.uint8)
            top, left = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
            label[top:top + h // 2, left:left + w // 2] = 255
            label[top + 2:top + h // 2 - 2, left + 2:left + w // 2 - 2] = c + 1
            Image.fromarray(label).save(masks / f"{name}.png")
            lines.append(f"{name}__{c + 1}")
    for split in ("val", "trn"):
        for fold in range(4):
            path = root / "splits" / "pascal" / split / f"fold{fold}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines if (split, fold) == ("val", 0) else []) + "\n")
    return root


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_episodes(dataset, indices: list[int], bsz: int) -> dict[str, float]:
    """Wall and CPU seconds per episode for loading `indices` one by one and collating them in batches."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    for start in range(0, len(indices), bsz):
        default_collate([dataset[i] for i in indices[start:start + bsz]])
    n = len(indices)
    return {"episode_s": (time.perf_counter() - wall) / n, "episode_cpu_s": (cpu_seconds() - cpu) / n}


def loader_rate(dataset, indices: list[int], bsz: int, workers: int) -> float:
    """Episodes per second through a DataLoader with `workers` workers (worker start-up excluded)."""
    loader = DataLoader(Subset(dataset, indices), batch_size=bsz, num_workers=workers, persistent_workers=True)
    for _ in loader:  # start the workers and warm them up
        pass
    start = time.perf_counter()
    for _ in loader:
        pass
    return len(indices) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 5], help="supports per episode")
    parser.add_argument("--img-size", type=int, default=400, help="input size (default: 400, as published)")
    parser.add_argument("--images", type=int, default=20, help="generated images per class (5 classes)")
    parser.add_argument("--episodes", type=int, default=60, help="timed episodes per shot")
    parser.add_argument("--warmup", type=int, default=5, help="untimed episodes first")
    parser.add_argument("--bsz", type=int, default=20, help="episodes per training step (published: 20)")
    parser.add_argument("--step-s", type=float, default=H200_STEP_S,
                        help="seconds per training step of the GPU in question (default: the H200 measurement)")
    parser.add_argument("--measure-step", action="store_true",
                        help="measure the training step here with bench_train (ResNet50, --bsz, --img-size)")
    parser.add_argument("--backbone", default="resnet50", help="backbone of the measured step")
    parser.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"],
                        help="precision of the measured step")
    parser.add_argument("--device", default=None, help="device of the measured step (default: CUDA if available)")
    parser.add_argument("--check-workers", type=int, default=0, help="also time a DataLoader with this many workers")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    results: dict = {"env": env_info("cpu"), "img_size": args.img_size, "bsz": args.bsz, "shots": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = make_voc_layout(Path(tmp), args.images)
        jpeg_kb = np.mean([p.stat().st_size for p in (root / "VOC2012" / "JPEGImages").iterdir()]) / 1024
        results["jpeg_kb"] = round(float(jpeg_kb), 1)
        for shot in args.shots:
            dataset = build_dataset("pascal", root, 0, "test", shot, img_size=args.img_size, splits_dir=root / "splits")
            for i in range(args.warmup):
                dataset[i]
            indices = list(range(args.warmup, args.warmup + args.episodes))
            row = time_episodes(dataset, indices, args.bsz)
            row["episodes_per_s_per_worker"] = 1 / row["episode_cpu_s"]
            if args.check_workers:
                row[f"episodes_per_s_{args.check_workers}_workers"] = loader_rate(dataset, indices, args.bsz,
                                                                                  args.check_workers)
            results["shots"][shot] = row
            print(json.dumps({"shot": shot, **row}), file=sys.stderr)

    step_s, step_source = args.step_s, "given (--step-s)"
    if args.measure_step or step_s is None:
        torch.set_num_threads(threads)
        step = measure(args.backbone, args.bsz, args.amp, args.img_size, steps=2, warmup=1, device=args.device)
        step_s, step_source = step["step_s"], f"measured here: {args.backbone}, {args.amp}, {pick_device(args.device)}"
    results.update(step_s=step_s, step_source=step_source)

    print(f"episode loading, {args.img_size} px, VOC-sized JPEGs ({results['jpeg_kb']} KB), one worker (1 thread); "
          f"workers needed from the CPU time:")
    print(f"training step: {step_s:.3f} s for {args.bsz} episodes ({step_source}) = {args.bsz / step_s:.1f} episodes/s")
    print("| shot | ms / episode (wall) | ms / episode (CPU) | episodes / s / worker | workers needed |"
          + (f" {args.check_workers} workers, episodes / s |" if args.check_workers else ""))
    print("|---|---|---|---|---|" + ("---|" if args.check_workers else ""))
    for shot, row in results["shots"].items():
        need = math.ceil(args.bsz * row["episode_cpu_s"] / step_s)
        row["workers_needed"] = need
        checked = f" {row[f'episodes_per_s_{args.check_workers}_workers']:.1f} |" if args.check_workers else ""
        print(f"| {shot} | {1e3 * row['episode_s']:.1f} | {1e3 * row['episode_cpu_s']:.1f} | "
              f"{row['episodes_per_s_per_worker']:.1f} | {need} |{checked}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
