"""Command line: ``python -m hsnetlib {train,test,predict} ...``.

The authors' flags keep their names and meaning (``--benchmark --fold --backbone --nshot --bsz --lr
--niter --nworker --datapath --logpath --load --use_original_imgsize --visualize``); the project's
options use hyphens. ``--logpath`` is the run (train) or results (test) directory itself.

Exit codes: 0 success; 2 usage error (bad or contradictory options, printed with the usage line);
1 runtime error (missing checkpoint or data, wrong backbone, unreadable file), printed as one line --
``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Sequence

from hsnetlib.backbones import list_backbones
from hsnetlib.conv4d import KERNELS
from hsnetlib.data import BENCHMARKS
from hsnetlib.model import HYPERCORRELATIONS
from hsnetlib.train import AMP_MODES, SELECTIONS, ConfigError, TrainConfig, run_name

TRAIN_DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}


def _weights(value: str) -> str | None:
    return None if value.lower() == "none" else value


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=argparse.SUPPRESS,
                        help="torch device, e.g. cpu, cuda, cuda:1 (default: CUDA if available, else CPU)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train HSNet episodically (torchrun for several GPUs)",
                       description="Train HSNet episodically. Unset options take TrainConfig's defaults, or with "
                                   "--resume those of the run being resumed. Several GPUs: "
                                   "torchrun --nproc_per_node N -m hsnetlib train ...")

    def opt(*flags: str, dest: str, help: str, **kwargs: Any) -> None:
        default = TRAIN_DEFAULTS[dest]
        if dest == "run_dir":
            default = "runs/BENCHMARK-foldF-BACKBONE-Kshot"
        flag_only = kwargs.get("action") in ("store_true", "store_false", "store_const")
        shown = "" if flag_only or "(default:" in help else f" (default: {default})"
        p.add_argument(*flags, dest=dest, default=argparse.SUPPRESS, help=help + shown, **kwargs)

    opt("--benchmark", dest="benchmark", choices=BENCHMARKS, help="benchmark to train on")
    opt("--datapath", dest="datapath", help="data root holding the benchmark (README section 'Data sets')")
    opt("--fold", dest="fold", type=int, help="fold whose classes are held out for testing")
    opt("--backbone", dest="backbone", choices=list_backbones(), help="frozen feature extractor")
    opt("--weights", dest="weights", type=_weights,
        help="backbone initialisation: 'imagenet', 'none' (random) or the path of a torchvision state dict")
    opt("--hypercorrelation", dest="hypercorrelation", choices=HYPERCORRELATIONS,
        help="which backbone layers are correlated (paper Fig. 6)")
    opt("--pyramid", dest="pyramid", type=int, nargs="+", help="pyramid levels used, 1 = finest (paper Fig. 7)")
    opt("--kernel", dest="kernel", choices=sorted(KERNELS), help="4D convolution kernel (paper Table 4)")
    opt("--block-layers", dest="block_layers", type=int, help="(4D conv, GN, ReLU) layers per block (paper Fig. 9)")
    opt("--no-support-masking", dest="support_masking", action="store_false",
        help="do not mask the support features (paper Table 1, dagger)")
    opt("--finetune-backbone", dest="finetune_backbone", action="store_true",
        help="train the backbone too, with --backbone-lr (paper Fig. 10)")
    opt("--nshot", dest="shot", type=int, help="supports per training episode; K > 1 sums K 1-shot losses")
    opt("--img-size", dest="img_size", type=int, help="square input size in pixels")
    opt("--bsz", dest="bsz", type=int, help="global batch size (episodes per step, over all processes)")
    opt("--lr", dest="lr", type=float, help="Adam learning rate of the learner")
    opt("--backbone-lr", dest="backbone_lr", type=float, help="Adam learning rate of the backbone with --finetune-backbone")
    opt("--niter", dest="epochs", type=int, help="number of epochs")
    opt("--workers", "--nworker", dest="workers", type=int,
        help="DataLoader worker processes per process (default: on CUDA one per CPU of the process less one, "
             "at most 8; 0 on CPU)")
    opt("--seed", dest="seed", type=int, help="seed of the learner's initialisation and the training episodes")
    opt("--logpath", dest="run_dir",
        help="run directory: config.json, env.json, metrics.csv, tb/, last.pt, best.pt")
    opt("--amp", dest="amp", choices=AMP_MODES, help="mixed precision on CUDA: bf16, or fp16 with a gradient scaler")
    opt("--selection", dest="selection", choices=SELECTIONS,
        help="model selection: validate on the test fold's episodes (published) or on held-out images of the "
             "training classes (leak-free)")
    opt("--heldout-fraction", dest="heldout_fraction", type=float,
        help="share of each training class's images held out with --selection heldout")
    opt("--val-episodes", dest="val_episodes", type=int,
        help="validation episodes per epoch (default: all of the validation split, 1000 on PASCAL/COCO; "
             "1000 with --selection heldout)")
    opt("--train-episodes", dest="train_episodes_per_epoch", type=int,
        help="training episodes per epoch (default: one pass over all of them)")
    opt("--resume", dest="resume", action="store_const", const="auto",
        help="continue the run in --logpath from its last.pt (starts afresh if there is none; a finished run "
             "is not trained again)")
    opt("--splits-dir", dest="splits_dir",
        help="directory of split lists replacing the shipped ones (synthetic data: ROOT/splits)")
    opt("--class-split", dest="class_split", help="benchmark 'folder': JSON file {\"trn\": [...], \"val\": [...], "
                                                  "\"test\": [...]} of class folder names")
    opt("--no-progress", dest="progress", action="store_false", help="no progress bars or per-epoch lines")
    _add_common(p)
    p.set_defaults(func=run_train, parser=p)


def _add_eval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--load", required=True, help="checkpoint: hsnetlib (best.pt, last.pt, HSNet.save) or the "
                                                 "authors' best_model.pt (detected automatically)")
    p.add_argument("--backbone", choices=list_backbones(), default=None,
                   help="expected backbone; a checkpoint of another one is an error (default: the checkpoint's)")
    p.add_argument("--img-size", type=int, default=400, help="square input size in pixels (default: 400)")


def _add_test(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("test", help="evaluate a checkpoint on a benchmark fold's test episodes",
                       description="Evaluate a checkpoint: fold mIoU, FB-IoU and a bootstrap 95% interval, "
                                   "per-class and per-episode CSV files.")
    _add_eval_options(p)
    p.add_argument("--benchmark", choices=BENCHMARKS, default="pascal", help="benchmark (default: pascal)")
    p.add_argument("--datapath", default="data", help="data root (default: data; README section 'Data sets')")
    p.add_argument("--fold", type=int, default=0, help="fold to test (default: 0)")
    p.add_argument("--nshot", type=int, default=1, help="supports per episode, K-shot voting (default: 1)")
    p.add_argument("--bsz", type=int, default=1, help="episodes per forward pass; does not change the scores "
                                                      "(default: 1)")
    p.add_argument("--workers", "--nworker", dest="workers", type=int, default=None,
                   help="DataLoader worker processes (default: one per CPU less one on CUDA, at most 8; 0 on CPU)")
    p.add_argument("--seed", type=int, default=0, help="episode seed; 0 gives the published episodes (default: 0)")
    p.add_argument("--use_original_imgsize", action="store_true",
                   help="score predictions at each query's original size instead of the input size")
    p.add_argument("--logpath", default=None,
                   help="results directory (default: runs/test/BENCHMARK-foldF-BACKBONE-Kshot): metrics.json, "
                        "per_class.csv, episodes.csv, vis/")
    p.add_argument("--visualize", action="store_true", help="also write overlay PNGs of the first episodes to vis/")
    p.add_argument("--vis-episodes", type=int, default=10, help="episodes drawn with --visualize (default: 10)")
    p.add_argument("--splits-dir", default=None,
                   help="directory of split lists replacing the shipped ones (synthetic data: ROOT/splits)")
    p.add_argument("--class-split", default=None, help="benchmark 'folder': JSON file of the class split")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    _add_common(p)
    p.set_defaults(func=run_test, parser=p)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment one's own query images given annotated support images",
                       description="Segment query images with K support (image, mask) pairs. Masks are greyscale, "
                                   "foreground >= 128 (e.g. 0/255 PNG). Writes STEM_mask.png (0/255) and "
                                   "STEM_overlay.png per query, at the query's original size.")
    _add_eval_options(p)
    p.add_argument("--support", nargs="+", action="extend", required=True, metavar="IMG MASK",
                   help="support image and mask pairs: --support IMG MASK [IMG MASK ...] (repeatable)")
    p.add_argument("--query", nargs="+", action="extend", required=True, metavar="IMG", help="query images")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    _add_common(p)
    p.set_defaults(func=run_predict, parser=p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hsnetlib", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,test,predict}")
    _add_train(sub)
    _add_test(sub)
    _add_predict(sub)
    return parser


# ---------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------

def train_config(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from the explicitly given options over the defaults -- or, with --resume and an
    existing run, over the run's config.json."""
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    if given.get("resume"):
        stored = Path(TrainConfig(**given).run_dir) / "config.json"
        if stored.is_file():
            given = {**json.loads(stored.read_text()), **given}
    return TrainConfig(**given)


def run_train(args: argparse.Namespace) -> int:
    from hsnetlib.train import train

    summary = train(train_config(args))
    if summary["last"] is not None:
        print(f"best epoch {summary['best_epoch']}: val mIoU {summary['best_val_miou']:.2f} "
              f"({summary['selection']}); run in {summary['run_dir']}")
    return 0


def run_test(args: argparse.Namespace) -> int:
    from hsnetlib.data import build_dataset
    from hsnetlib.evaluate import evaluate
    from hsnetlib.predict import load_model

    device = getattr(args, "device", None)
    model = load_model(args.load, backbone=args.backbone)
    dataset = build_dataset(args.benchmark, args.datapath, args.fold, "test", args.nshot, img_size=args.img_size,
                            use_original_imgsize=args.use_original_imgsize, class_split=args.class_split,
                            splits_dir=args.splits_dir)
    out = Path(args.logpath or Path("runs") / "test" / run_name(args.benchmark, args.fold, model.config.backbone,
                                                                 args.nshot))
    result = evaluate(model, dataset, nshot=args.nshot, seed=args.seed, batch_size=args.bsz, device=device,
                      num_workers=args.workers, progress=args.progress)
    result.config["checkpoint"] = str(args.load)
    result.save(out)
    if args.visualize:
        visualize(model, dataset, out / "vis", args.vis_episodes, device)
    low, high = result.ci95
    print(f"{args.benchmark} fold {args.fold} {args.nshot}-shot, {len(result.episodes)} episodes: "
          f"mIoU {result.miou:.2f} (95% CI {low:.2f}-{high:.2f})  FB-IoU {result.fbiou:.2f}")
    print(f"results in {out}")
    return 0


def visualize(model, dataset, out_dir: Path, n: int, device) -> None:
    """Overlay panels (supports | query ground truth | prediction) of the first ``n`` episodes."""
    import torch

    from hsnetlib.predict import episode_panel
    from hsnetlib.utils import pick_device

    device = pick_device(device)
    model = model.to(device).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    for idx in range(min(n, len(dataset))):
        item = dataset[idx]
        with torch.inference_mode():
            pred = model.predict_mask(item["query_img"][None].to(device), item["support_imgs"][None].to(device),
                                      item["support_masks"][None].to(device))[0]
        name = dataset.class_names[item["class_id"]].replace("/", "_").replace(" ", "_")
        episode_panel(item, pred).save(out_dir / f"episode{idx:04d}_{name}.png")


def run_predict(args: argparse.Namespace) -> int:
    from hsnetlib.predict import load_model, predict

    if len(args.support) % 2:
        args.parser.error(f"--support takes IMG MASK pairs; got {len(args.support)} paths")
    pairs = list(zip(args.support[0::2], args.support[1::2]))
    model = load_model(args.load, backbone=args.backbone)
    records = predict(model, pairs, args.query, args.out, img_size=args.img_size,
                      device=getattr(args, "device", None), progress=args.progress)
    for r in records:
        print(f"{r['query']}: foreground {100 * r['foreground']:.1f}% -> {r['mask']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.func
    try:
        return command(args)
    except ConfigError as err:
        if args.debug:
            raise
        args.parser.error(str(err))  # exits with code 2
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # runtime errors: one line, unless --debug
        if args.debug:
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"python -m hsnetlib {args.command}: error: {message}", file=sys.stderr)
        return 1
