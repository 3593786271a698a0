"""Command line end to end on the synthetic FSS-layout benchmark: train (and resume), test, predict,
exit codes and one-line error messages."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from hsnetlib.cli import main
from hsnetlib.predict import load_model
from hsnetlib.synthetic import generate

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic_fss")
    generate(root, "fss", n_classes=10, images_per_class=6, size=64, seed=0)  # 5 trn, 2 val, 3 test classes
    return root


def data_args(root: Path) -> list[str]:
    return ["--benchmark", "fss", "--datapath", str(root), "--splits-dir", str(root / "splits"), "--img-size", "64",
            "--no-progress"]


def train_args(root: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["train", *data_args(root), "--weights", "none", "--bsz", "4", "--train-episodes", "8",
            "--val-episodes", "4", "--logpath", str(run_dir), *extra]


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    """One epoch, then --resume with only --logpath and a larger --niter: the run's own config carries on."""
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    assert main(train_args(data, run_dir, "--niter", "1")) == 0
    assert main(["train", "--resume", "--logpath", str(run_dir), "--niter", "2", "--no-progress"]) == 0
    return run_dir


def class_images(root: Path, split: str = "test") -> list[Path]:
    name = (root / "splits" / "fss" / f"{split}.txt").read_text().split()[0]
    return sorted((root / "FSS-1000" / name).glob("*.jpg"), key=lambda p: int(p.stem))


def test_train_and_resume_write_a_run(run):
    config = json.loads((run / "config.json").read_text())
    assert config["benchmark"] == "fss" and config["model"]["weights"] is None and config["epochs"] == 2
    rows = pd.read_csv(run / "metrics.csv")
    assert rows["epoch"].tolist() == [0, 1]
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1
    assert (run / "best.pt").is_file() and list((run / "tb").iterdir())


def test_test_command_prints_and_saves_scores(run, data, tmp_path, capsys):
    out = tmp_path / "test"
    args = ["test", "--load", str(run / "best.pt"), *data_args(data), "--nshot", "2", "--bsz", "6",
            "--logpath", str(out), "--visualize", "--vis-episodes", "2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"mIoU {metrics['miou']:.2f}" in printed and f"FB-IoU {metrics['fbiou']:.2f}" in printed
    low, high = metrics["ci95"]
    assert low <= metrics["miou"] <= high and f"95% CI {low:.2f}-{high:.2f}" in printed
    episodes = pd.read_csv(out / "episodes.csv")
    assert len(episodes) == 18  # 3 test classes x 6 queries
    assert episodes["supports"].str.count(r"\|").eq(1).all()  # 2 supports each
    assert metrics["config"]["checkpoint"] == str(run / "best.pt")
    panels = sorted((out / "vis").glob("*.png"))
    assert len(panels) == 2
    assert Image.open(panels[0]).size == (4 * 64, 64)  # 2 supports | ground truth | prediction


def test_predict_writes_masks_at_the_original_size(run, data, tmp_path):
    images = class_images(data)
    query = tmp_path / "wide_query.png"
    Image.open(images[2]).resize((80, 50)).save(query)
    out = tmp_path / "pred"
    args = ["predict", "--load", str(run / "best.pt"), "--support", str(images[0]), str(images[0].with_suffix(".png")),
            str(images[1]), str(images[1].with_suffix(".png")), "--query", str(query), str(images[3]),
            "--out", str(out), "--img-size", "64", "--no-progress"]
    assert main(args) == 0
    for stem, size in ((query.stem, (80, 50)), (images[3].stem, (64, 64))):
        mask = Image.open(out / f"{stem}_mask.png")
        assert mask.size == size and mask.mode == "L"
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        assert Image.open(out / f"{stem}_overlay.png").size == size


def test_official_checkpoint_is_detected(run, tmp_path):
    ours = load_model(run / "best.pt")
    official = tmp_path / "best_model.pt"
    torch.save({f"module.{k}": v for k, v in ours.state_dict().items()}, official)
    theirs = load_model(official, backbone="resnet50")
    assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in ours.state_dict().items())
    with pytest.raises(ValueError, match="resnet50 backbone, not vgg16"):
        load_model(official, backbone="vgg16")


def test_missing_checkpoint_exits_1_with_one_line():
    done = subprocess.run([sys.executable, "-m", "hsnetlib", "test", "--load", "no/such/best.pt"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 1
    # Exactly one line of ours, last, and no traceback; a library may add warnings of its own before it.
    ours = [line for line in done.stderr.splitlines() if line.startswith("python -m hsnetlib")]
    assert ours == ["python -m hsnetlib test: error: checkpoint no/such/best.pt does not exist"]
    assert done.stderr.strip().splitlines()[-1] == ours[0]
    assert "Traceback" not in done.stderr and not done.stdout


def runtime_error(args: list[str], capsys) -> str:
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_runtime_errors_are_one_line(run, data, tmp_path, capsys):
    images = class_images(data)
    predict = ["predict", "--load", str(run / "best.pt"), "--query", str(images[2]), "--out", str(tmp_path)]
    err = runtime_error(predict + ["--backbone", "vgg16", "--support", str(images[0]),
                                   str(images[0].with_suffix(".png"))], capsys)
    assert "resnet50 backbone, not vgg16" in err
    empty = tmp_path / "empty.png"
    Image.new("L", Image.open(images[0]).size, 1).save(empty)  # a 0/1 mask: no pixel >= 128
    err = runtime_error(predict + ["--support", str(images[0]), str(empty)], capsys)
    assert f"support mask {empty} has no foreground pixel" in err
    err = runtime_error(train_args(data, tmp_path / "r", "--niter", "1", "--datapath", str(tmp_path / "nowhere")),
                        capsys)
    assert "FSS-1000 folder not found" in err and "README" in err
    err = runtime_error(train_args(data, run, "--niter", "3"), capsys)
    assert "already holds a run" in err and "--resume" in err
    with pytest.raises(FileNotFoundError):
        main(["test", "--load", str(tmp_path / "missing.pt"), "--debug"])


@pytest.mark.parametrize("extra, message", [
    (["--amp", "bf16", "--device", "cpu"], "needs a CUDA device"),
    (["--bsz", "0"], "bsz=0"),
    (["--backbone", "resnet18"], "invalid choice"),
    (["--pyramid", "1", "3"], "pyramid=(1, 3)"),
    (["--lr", "inf"], "argument --lr: expected a finite number"),
    (["--lr", "nan"], "argument --lr: expected a finite number"),
    (["--lr", "0"], "lr=0.0"),
])
def test_usage_errors_exit_2(data, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_:
        main(train_args(data, tmp_path / "run", *extra))
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_support_needs_image_mask_pairs(run, data, tmp_path, capsys):
    images = class_images(data)
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--load", str(run / "best.pt"), "--support", str(images[0]), "--query", str(images[1]),
              "--out", str(tmp_path)])
    assert exit_.value.code == 2 and "IMG MASK pairs" in capsys.readouterr().err
