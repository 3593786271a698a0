"""The prepared GPU check: one script, under 10 minutes on one GPU (`make gpu-check`).

Run it whenever a machine with a CUDA GPU is at hand and put its figures in benchmarks/README.md
("GPU check"). The project never depends on it: CI and the tests run on CPU. Sections:

Every section iterates over the registered backbones (``hsnetlib.backbones.list_backbones()``); a backbone that
needs another image size (a ViT/14) takes the valid size nearest to ``--img-size`` (406 px for 400).

1. ``agreement``: CUDA against CPU, same random weights and 400 px episode, per backbone: the
   1-shot logits in fp32 (TF32 off: max |diff| / max |logit| must stay under 1e-4), the 5-shot
   vote on the decided pixels (must be identical), and the fp32 logits with TF32 on and under
   bf16 autocast (reported, not required: they round by design).
   With the golden files of tests/golden/ present, also the CUDA logits against the authors' model.
2. ``train``: the trainer's own step (:func:`hsnetlib.train.train_step`) at the published batch
   (20 episodes at 400 px; 40 for COCO-20i) in fp32, bf16 and fp16: seconds per step, episodes/s,
   peak allocated memory.
3. ``inference``: ``predict_mask`` episodes/s for 1-shot and 5-shot episodes at batch 1 and 16,
   fp32 and bf16 (evaluation throughput), and Table 4's 1-shot episode time per 4D kernel.
   ``backbones``: per backbone, Table 4's columns (learnable parameters, 1-shot and 5-shot episode time,
   peak memory, learner and total GFLOPs) from :func:`hsnetlib.profile.profile_model`.
4. ``ddp``: with two or more GPUs, DistributedDataParallel over NCCL through torchrun: the 2-GPU
   step's loss equals the 1-GPU step's on the same global batch.

    python benchmarks/gpu_check.py --out gpu-check            # writes gpu-check/gpu_check.json + .md

Exit code 1 when a required agreement fails (so a broken CUDA path is loud), 0 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_train, golden recipe
from bench_train import measure as measure_train_step  # noqa: E402

from hsnetlib.backbones import get_backbone, list_backbones  # noqa: E402
from hsnetlib.model import HSNet  # noqa: E402
from hsnetlib.profile import episode_inputs, profile_model  # noqa: E402
from hsnetlib.utils import env_info  # noqa: E402

LOGIT_TOL = 1e-4


def random_model(backbone: str, **options) -> HSNet:
    return HSNet.from_config({"backbone": backbone, "weights": None, **options}).eval()


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def votes_and_decided(model: HSNet, query, supports, masks) -> tuple[torch.Tensor, torch.Tensor]:
    """K-shot vote, and where every support's two logits differ by more than 1e-4 x max |logit|."""
    decided = torch.ones(query.shape[0], *query.shape[-2:], dtype=torch.bool, device=query.device)
    for k in range(supports.shape[1]):
        logits = model(query, supports[:, k], masks[:, k])
        gap = (logits[:, 1] - logits[:, 0]).abs()
        decided &= gap > 1e-4 * logits.abs().max()
    return model.predict_mask(query, supports, masks), decided


@torch.no_grad()
def agreement(size: int) -> list[dict]:
    rows = []
    for backbone in list_backbones():
        query, supports, masks = episode_inputs(get_backbone(backbone).nearest_size(size), nshot=5)
        torch.manual_seed(0)
        model = random_model(backbone)
        ref = model(query, supports[:, 0], masks[:, 0])
        ref_vote, decided = votes_and_decided(model, query, supports, masks)
        model.cuda()
        q, s, m = query.cuda(), supports.cuda(), masks.cuda()
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        fp32 = model(q, s[:, 0], m[:, 0]).cpu()
        vote = model.predict_mask(q, s, m).cpu()
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        tf32 = model(q, s[:, 0], m[:, 0]).cpu()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = model(q, s[:, 0], m[:, 0]).float().cpu()
            bf16_vote = model.predict_mask(q, s, m).cpu()
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        row = {"backbone": backbone, "img_size": query.shape[-1],
               "fp32_rel": relative(fp32, ref), "tf32_rel": relative(tf32, ref), "bf16_rel": relative(bf16, ref),
               "vote5_equal_decided": bool((vote == ref_vote)[decided].all()),
               "decided_frac": float(decided.float().mean()),
               "bf16_vote5_agree": float((bf16_vote == ref_vote).float().mean())}
        row["ok"] = row["fp32_rel"] < LOGIT_TOL and row["vote5_equal_decided"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


@torch.no_grad()
def golden_agreement(workdir: Path) -> list[dict]:
    """CUDA logits and votes against the authors' model (tests/golden/), through a released-layout checkpoint."""
    tests = Path(__file__).resolve().parent.parent / "tests"
    if not (tests / "golden").is_dir():
        return []
    sys.path.insert(0, str(tests))
    import numpy as np
    import test_golden as golden  # the recipe of tests/golden/README.md

    query, supports, masks = (t.cuda() for t in golden.recipe_episode())
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    rows = []
    for backbone in golden.BACKBONES:
        path = workdir / f"golden_{backbone}.pt"
        torch.save({f"module.{k}": v for k, v in golden.recipe_state_dict(backbone).items()}, path)
        model = HSNet.from_official_checkpoint(path).cuda().eval()
        with np.load(golden.GOLDEN / f"{backbone}_{golden.SIZE}px.npz") as npz:
            ref = {k: torch.from_numpy(v) for k, v in npz.items()}
        logits = model(query, supports[:, 0], masks[:, 0]).cpu()
        vote = model.predict_mask(query, supports, masks).cpu()
        decided = ref["decided_3shot"].bool()
        row = {"backbone": backbone, "golden_rel": relative(logits, ref["logits_1shot"]),
               "golden_vote_equal_decided": bool((vote == ref["mask_3shot"].long())[decided].all())}
        row["ok"] = row["golden_rel"] < LOGIT_TOL and row["golden_vote_equal_decided"]
        rows.append(row)
        print(json.dumps(row), flush=True)
        path.unlink()
    return rows


def training(size: int, steps: int, backbones: tuple[str, ...]) -> list[dict]:
    rows = []
    for backbone in backbones:
        for bsz in (20, 40):
            for amp in ("none", "bf16", "fp16"):
                if bsz == 40 and backbone == "vgg16":
                    continue  # COCO-20i was published for the ResNets only
                row = measure_train_step(backbone, bsz, amp, size, steps, warmup=2, device="cuda")
                rows.append(row)
                print(json.dumps(row), flush=True)
                torch.cuda.empty_cache()
    return rows


def timed(fn, repeats: int) -> float:
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


@torch.no_grad()
def inference(size: int, repeats: int) -> list[dict]:
    rows = []
    for backbone in list_backbones():
        torch.manual_seed(0)
        model = random_model(backbone).cuda()
        for shots in (1, 5):
            for batch in (1, 16):
                q, s, m = episode_inputs(get_backbone(backbone).nearest_size(size), shots, device="cuda", batch=batch)
                for amp in ("none", "bf16"):
                    def run():
                        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp == "bf16"):
                            model.predict_mask(q, s, m)
                    seconds = timed(run, repeats)
                    row = {"backbone": backbone, "nshot": shots, "batch": batch, "amp": amp,
                           "ms_per_call": seconds * 1e3, "episodes_per_s": batch / seconds}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        del model
        torch.cuda.empty_cache()
    for kernel in ("center_pivot", "separable", "original"):
        torch.manual_seed(0)
        model = random_model("resnet101", kernel=kernel)
        profile = profile_model(model, img_size=size, nshot=1, device="cuda", warmup=3, repeats=20)
        row = {"table4": kernel} | profile.to_dict()
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


@torch.no_grad()
def backbones(size: int, repeats: int) -> list[dict]:
    """Table 4's columns per registered backbone, at 1 and 5 shots."""
    rows = []
    for backbone in list_backbones():
        torch.manual_seed(0)
        model = random_model(backbone)
        for shots in (1, 5):
            profile = profile_model(model, img_size=get_backbone(backbone).nearest_size(size), nshot=shots,
                                    device="cuda", warmup=3, repeats=repeats)
            rows.append({"backbone": backbone} | profile.to_dict())
            print(json.dumps(rows[-1]), flush=True)
        del model
        torch.cuda.empty_cache()
    return rows


DDP_CHILD = """
import os, torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
import sys; sys.path.insert(0, os.environ["BENCH_DIR"])
from bench_train import random_batch
from hsnetlib.train import TrainConfig, build_model, build_optimizer, forward_episodes
dist.init_process_group("nccl"); rank = dist.get_rank(); world = dist.get_world_size()
dev = torch.device("cuda", int(os.environ["LOCAL_RANK"])); torch.cuda.set_device(dev)
torch.manual_seed(0); model = build_model(TrainConfig(model={"backbone": "resnet50", "weights": None}, img_size=400), dev)
batch = random_batch(8, 400, torch.device("cpu"))
part = {k: v[rank::world] for k, v in batch.items()}
loss, _ = forward_episodes(DistributedDataParallel(model, device_ids=[dev.index]), part, dev)
total = loss.sum().detach(); dist.all_reduce(total)
if rank == 0: print("DDP_LOSS", float(total) / 8)
dist.destroy_process_group()
"""


def ddp_check() -> dict:
    gpus = torch.cuda.device_count()
    if gpus < 2:
        return {"ddp": "not run: one GPU"}
    env = os.environ | {"BENCH_DIR": str(Path(__file__).resolve().parent)}
    out = {}
    for world in (1, 2):
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={world}",
                               "--no-python", sys.executable, "-c", DDP_CHILD],
                              capture_output=True, text=True, env=env, timeout=300)
        line = next((x for x in done.stdout.splitlines() if x.startswith("DDP_LOSS")), None)
        out[f"loss_{world}gpu"] = float(line.split()[1]) if line else done.stderr[-500:]
    out["ok"] = isinstance(out["loss_2gpu"], float) and abs(out["loss_1gpu"] - out["loss_2gpu"]) < 1e-4
    return out


def markdown(report: dict) -> str:
    lines = [f"GPU check on {report['env'].get('gpu')} (torch {report['env']['torch']}, CUDA "
             f"{report['env'].get('cuda')}, code {report['env']['code_version']})", ""]
    lines += ["| backbone | fp32 rel | TF32 rel | bf16 rel | 5-shot vote = CPU (decided) | bf16 5-shot agree |",
              "|---|---|---|---|---|---|"]
    for r in report["agreement"]:
        lines.append(f"| {r['backbone']} | {r['fp32_rel']:.1e} | {r['tf32_rel']:.1e} | {r['bf16_rel']:.1e} | "
                     f"{r['vote5_equal_decided']} ({r['decided_frac']:.4f}) | {r['bf16_vote5_agree']:.4f} |")
    for r in report["golden"]:
        lines.append(f"| golden {r['backbone']} | {r['golden_rel']:.1e} | | | {r['golden_vote_equal_decided']} | |")
    lines += ["", "| backbone | bsz | amp | s/step | episodes/s | peak GB |", "|---|---|---|---|---|---|"]
    for r in report["train"]:
        if r["status"] != "ok":
            lines.append(f"| {r['backbone']} | {r['bsz']} | {r['amp']} | {r['status']} | | |")
            continue
        lines.append(f"| {r['backbone']} | {r['bsz']} | {r['amp']} | {r['step_s']:.3f} | {r['episodes_per_s']:.1f} | "
                     f"{r['peak_mem_mb'] / 1024:.1f} |")
    lines += ["", "| backbone | K | batch | amp | ms/call | episodes/s |", "|---|---|---|---|---|---|"]
    for r in report["inference"]:
        if "table4" in r:
            continue
        lines.append(f"| {r['backbone']} | {r['nshot']} | {r['batch']} | {r['amp']} | {r['ms_per_call']:.1f} | "
                     f"{r['episodes_per_s']:.1f} |")
    lines += ["", "| Table 4 kernel (ResNet101, 1-shot) | params | ms/episode | memory GB | learner GFLOPs |",
              "|---|---|---|---|---|"]
    for r in report["inference"]:
        if "table4" in r:
            lines.append(f"| {r['table4']} | {r['learnable_params']:,} | {r['time_ms']:.1f} | {r['memory_gb']:.2f} | "
                         f"{r['gflops']:.1f} |")
    lines += ["", "| backbone | px | K | learner params | ms/episode | memory GB | learner GFLOPs | total GFLOPs |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["backbones"]:
        lines.append(f"| {r['backbone']} | {r['img_size']} | {r['nshot']} | {r['learnable_params']:,} | "
                     f"{r['time_ms']:.1f} | {r['memory_gb']:.2f} | {r['gflops']:.1f} | {r['gflops_total']:.1f} |")
    lines += ["", f"DDP: {report['ddp']}", f"total: {report['seconds']:.0f} s"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu-check", help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--img-size", type=int, default=400, help="episode size (default: 400, as published)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per configuration")
    parser.add_argument("--repeats", type=int, default=10, help="timed inference calls per configuration")
    parser.add_argument("--train-backbones", nargs="+", default=list_backbones(), choices=list_backbones(),
                        help="backbones of the training-step section")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; this check needs a GPU (the project itself does not)",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    report = {"env": env_info("cuda")}
    print(json.dumps(report["env"]), flush=True)
    report["agreement"] = agreement(args.img_size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report["golden"] = golden_agreement(out)
    report["train"] = training(args.img_size, args.steps, tuple(args.train_backbones))
    report["inference"] = inference(args.img_size, args.repeats)
    report["backbones"] = backbones(args.img_size, args.repeats)
    report["ddp"] = ddp_check()
    report["seconds"] = time.perf_counter() - start
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (out / "gpu_check.md").write_text(text + "\n")
    print(text)
    checks = report["agreement"] + report["golden"] + ([report["ddp"]] if "ok" in report["ddp"] else [])
    return 0 if all(c["ok"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
