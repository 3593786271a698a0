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
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from hsnetlib import predict
from hsnetlib.backbones import list_backbones
from hsnetlib.data import list_benchmarks
from hsnetlib.model import PAPER_IMG_SIZE, HSNetConfig, config_from_dict, list_models, option_fields
from hsnetlib.train import ConfigError, TrainConfig, run_name

# The command line's names for config fields whose flag is not --FIELD-NAME: the authors' flags first.
ALIASES = {"shot": ("--nshot",), "epochs": ("--niter", "--epochs"), "run_dir": ("--logpath",),
           "workers": ("--workers", "--nworker"), "progress": ("--no-progress",)}
MODEL_PREFIX = "model."  # namespace attributes of the model config's fields (HSNetConfig's and registered models')


def _weights(value: str) -> str | None:
    return None if value.lower() == "none" else value


def _finite_float(value: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}")
    return number


def _value_type(f: dataclasses.Field) -> Callable[[str], Any]:
    """The argparse type of a config field, from its annotation (strings: ``from __future__ import annotations``)."""
    if f.name == "weights":
        return _weights
    kinds = str(f.type).replace(" ", "").split("|")
    return int if "int" in kinds else _finite_float if "float" in kinds else str


def _add_fields(p: argparse.ArgumentParser, config_fields: Sequence[dataclasses.Field], prefix: str = "",
                skip: Sequence[str] = ()) -> None:
    """One flag per config field, help and choices from the field's metadata; unset flags are not in the
    namespace (``argparse.SUPPRESS``), so that the config's (or a resumed run's) values apply."""
    for f in config_fields:
        if f.name in skip:
            continue
        flags = ALIASES.get(f.name, (f"--{f.name.replace('_', '-')}",))
        meta = f.metadata
        help = meta["help"] + (f" (paper {meta['paper']})" if meta.get("paper") else "")
        kwargs: dict[str, Any] = {}
        if isinstance(f.default, bool):
            flags = (f"--no-{f.name.replace('_', '-')}",) if f.default else flags
            kwargs["action"] = "store_false" if f.default else "store_true"
            help = f"do not {help}" if f.default else help
        else:
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            help += "" if "(default:" in help else f" (default: {default})"
            if isinstance(default, tuple):
                kwargs.update(type=int, nargs="+")
            else:
                kwargs["type"] = _value_type(f)
                choices = meta.get("choices")
                choices = tuple(choices() if callable(choices) else choices) if choices is not None else None
                if choices is not None:
                    kwargs["choices"] = [c for c in choices if c is not None]  # None: the option left unset
        if "action" not in kwargs:
            kwargs["metavar"] = None if "choices" in kwargs else f.name.upper()
        p.add_argument(*flags, dest=prefix + f.name, default=argparse.SUPPRESS, help=help, **kwargs)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=argparse.SUPPRESS,
                        help="torch device, e.g. cpu, cuda, cuda:1 (default: CUDA if available, else CPU)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train HSNet episodically (torchrun for several GPUs)",
                       description="Train HSNet episodically. Unset options take TrainConfig's defaults, or with "
                                   "--resume those of the run being resumed. Several GPUs: "
                                   "torchrun --nproc_per_node N -m hsnetlib train ...")
    p.add_argument("--architecture", dest=MODEL_PREFIX + "architecture", choices=list_models(),
                   default=argparse.SUPPRESS, help="the registered model to train (hsnetlib.model.register_model; "
                                                   f"default: {HSNetConfig.architecture})")
    _add_fields(p, list(option_fields().values()), prefix=MODEL_PREFIX)
    _add_fields(p, dataclasses.fields(TrainConfig), skip=("model", "resume", "device"))
    p.add_argument("--resume", dest="resume", action="store_const", const="auto", default=argparse.SUPPRESS,
                   help="continue the run in --logpath from its last.pt (starts afresh if there is none; a finished "
                        "run is not trained again)")
    _add_common(p)
    p.set_defaults(func=run_train, parser=p)


def _add_eval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--load", required=True, help="checkpoint: hsnetlib (best.pt, last.pt, HSNet.save) or the "
                                                 "authors' best_model.pt (detected automatically)")
    p.add_argument("--backbone", choices=list_backbones(), default=None,
                   help="expected backbone; a checkpoint of another one is an error (default: the checkpoint's)")
    p.add_argument("--img-size", type=int, default=PAPER_IMG_SIZE,
                   help=f"square input size in pixels (default: {PAPER_IMG_SIZE})")


def _add_test(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("test", help="evaluate a checkpoint on a benchmark fold's test episodes",
                       description="Evaluate a checkpoint: fold mIoU, FB-IoU and a bootstrap 95% interval, "
                                   "per-class and per-episode CSV files.")
    _add_eval_options(p)
    p.add_argument("--benchmark", choices=list_benchmarks(), default="pascal", help="benchmark (default: pascal)")
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
    p.add_argument("--episodes", type=int, default=None,
                   help="test episodes (default: the benchmark's registered count, e.g. 600 on the CD-FSS targets)")
    for name, (option, owners) in _benchmark_options().items():  # e.g. --isic-convention, --lung-masks
        p.add_argument("--" + name.replace("_", "-"), dest=name, choices=option.choices, default=None,
                       help=f"{'/'.join(owners)} only: {option.help} (default: {option.default})")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    _add_common(p)
    p.set_defaults(func=run_test, parser=p)


def _benchmark_options() -> dict[str, tuple[Any, list[str]]]:
    """Every registered benchmark's own option: name -> (its BenchmarkOption, the benchmarks that have it)."""
    from hsnetlib.data import get_benchmark

    found: dict[str, tuple[Any, list[str]]] = {}
    for benchmark in list_benchmarks():
        for name, option in get_benchmark(benchmark).options.items():
            found.setdefault(name, (option, []))[1].append(benchmark)
    return found


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment one's own query images given annotated support images (one or "
                                       "several classes)")
    predict.add_arguments(p)
    _add_common(p)
    p.set_defaults(func=predict.run_cli, parser=p)


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
    options = vars(args)
    given = {f.name: options[f.name] for f in dataclasses.fields(TrainConfig) if f.name in options}
    model = {name: options[MODEL_PREFIX + name] for name in ("architecture", *option_fields())
             if MODEL_PREFIX + name in options}
    if given.get("resume"):
        stored = Path(TrainConfig(**given, model=_model_config(model)).run_dir) / "config.json"
        if stored.is_file():
            run = json.loads(stored.read_text())
            given, model = {**run, **given}, {**run.get("model", {}), **model}
    return TrainConfig(**(given | {"model": _model_config(model)}))


def _model_config(options: dict[str, Any]) -> HSNetConfig:
    try:
        return config_from_dict(options)
    except TypeError as err:  # an option of another registered model than --architecture's
        raise ConfigError(f"{err} (--architecture {options.get('architecture', HSNetConfig.architecture)})") from None
    except ValueError as err:
        raise ConfigError(str(err)) from None


def run_train(args: argparse.Namespace) -> int:
    from hsnetlib.train import train

    summary = train(train_config(args))
    if summary["last"] is not None:
        print(f"best epoch {summary['best_epoch']}: val mIoU {summary['best_val_miou']:.2f} "
              f"({summary['selection']}); run in {summary['run_dir']}")
    return 0


def run_test(args: argparse.Namespace) -> int:
    from hsnetlib.data import build_dataset, get_benchmark
    from hsnetlib.evaluate import evaluate
    from hsnetlib.predict import load_model

    given = {name: getattr(args, name) for name in _benchmark_options() if getattr(args, name) is not None}
    foreign = sorted(set(given) - set(get_benchmark(args.benchmark).options))
    if foreign:
        args.parser.error(f"--{foreign[0].replace('_', '-')} is not an option of benchmark {args.benchmark}")
    device = getattr(args, "device", None)
    model = load_model(args.load, backbone=args.backbone)
    dataset = build_dataset(args.benchmark, args.datapath, fold=args.fold, split="test", shot=args.nshot,
                            img_size=args.img_size,
                            use_original_imgsize=args.use_original_imgsize, class_split=args.class_split,
                            splits_dir=args.splits_dir, episodes=args.episodes, options=given)
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
