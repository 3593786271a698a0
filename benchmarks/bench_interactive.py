"""Redraw time of notebooks/12_interactive.ipynb after a brush stroke (hsnetlib.interactive).

A stroke on one support of a K-shot episode at the notebook's image size: the mask is resized to the input, that
support's correlation and learner pass run (backbone taps are cached), the K-shot vote is taken over the cached
logits of the other supports, and the 1-shot | K-shot panel is drawn as a PNG -- :meth:`InteractiveDemo.stroke`
end to end, with the backbone pass count checked to stay the same. Reported per (img_size, precision): median and
minimum over the strokes, and a first redraw with nothing cached (every image through the backbone).

Random weights (timings do not depend on them) unless --checkpoint is given.

    python benchmarks/bench_interactive.py --img-size 96 400 --shots 2 --strokes 10
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from hsnetlib.interactive import InteractiveDemo, Session, bf16_supported
from hsnetlib.model import HSNet, HSNetConfig
from hsnetlib.predict import load_model


def measure(model: HSNet, img_size: int, shots: int, strokes: int, bf16: bool) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    session = Session(model, img_size, device="cpu", bf16=bf16)
    demo = InteractiveDemo(session)
    start = time.perf_counter()
    demo.load_image(torch.randn(3, img_size, img_size, generator=g), None)
    for k in range(shots):
        demo.load_image(torch.randn(3, img_size, img_size, generator=g), k)
        demo.box(k, (0.2, 0.2), (0.7, 0.8))
    cold = time.perf_counter() - start
    passes = session.backbone_passes
    rng = np.random.default_rng(0)
    for _ in range(strokes):
        y, x = rng.uniform(0.1, 0.9, size=2)
        demo.stroke(int(rng.integers(shots)), [(y, x), (min(y + 0.2, 1.0), min(x + 0.2, 1.0))])
    assert session.backbone_passes == passes, "a stroke must not run the backbone"
    times = demo.redraw_seconds[-strokes:]
    return {"img_size": img_size, "shots": shots, "bf16": bf16, "cold_first_s": cold,
            "stroke_median_s": statistics.median(times), "stroke_min_s": min(times),
            "load_avg": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--img-size", type=int, nargs="+", default=[96], help="input sides (default: 96, the notebook's)")
    parser.add_argument("--shots", type=int, default=2, help="supports of the episode (default: 2)")
    parser.add_argument("--strokes", type=int, default=10, help="timed strokes per configuration (default: 10)")
    parser.add_argument("--checkpoint", default=None, help="a checkpoint instead of random weights")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_model(args.checkpoint) if args.checkpoint else HSNet(HSNetConfig(backbone="resnet50", weights=None))
    precisions = [False] + ([True] if bf16_supported(torch.device("cpu")) else [])
    print("img_size shots bf16 cold_first_s stroke_median_s stroke_min_s load_avg")
    for size in args.img_size:
        for bf16 in precisions:
            row = measure(model, size, args.shots, args.strokes, bf16)
            print(" ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()), flush=True)


if __name__ == "__main__":
    main()
