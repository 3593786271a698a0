"""Shared fixtures: tiny benchmarks written with PIL in the real directory layouts.

Each fixture is session-scoped and returns the data root; split lists in the shipped formats are
under ``root/"splits"`` (pass ``splits_dir=root / "splits"`` to ``build_dataset``). Images are small
and not square so that resizing and original-size code paths are exercised.
"""
from __future__ import annotations

import gzip
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # One thread per process under pytest-xdist (`make test`): the workers, the kernels and the subprocesses they
    # start share the cores, and torch's spinning OpenMP threads, more of them than cores, made trainings 10x slower.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@contextmanager
def global_numpy_seed(seed):
    """The authors' setting: numpy's legacy global generator seeded once; restored afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def write_pair(image_path: Path, mask_path: Path, mask: np.ndarray, rng: np.random.Generator) -> None:
    """A noisy RGB image whose colour follows `mask` (H, W), and `mask` itself as a greyscale PNG."""
    image_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    noise = rng.integers(0, 60, size=(*mask.shape, 3))
    colour = np.where(mask[..., None] > 0, [200, 60, 40], [40, 90, 160])
    Image.fromarray((noise + colour).clip(0, 255).astype(np.uint8)).save(image_path)
    Image.fromarray(mask.astype(np.uint8)).save(mask_path)  # greyscale (L)


def random_resnet50():
    """HSNet on a ResNet50 with random frozen weights, torch's generator seeded 0, in eval mode."""
    import torch

    from hsnetlib.model import HSNet, HSNetConfig
    torch.manual_seed(0)
    return HSNet(HSNetConfig(backbone="resnet50", weights=None)).eval()


def stop_process(process: subprocess.Popen, timeout: float) -> None:
    """Terminate `process`; kill it if it has not exited after `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def training_run(data_root: Path, epochs: int, resources: str = "") -> str:
    """A grid's run "train" of train.ipynb (TRAIN_BODY) on `data_root` for `epochs` epochs; `resources`: the fields
    of its resources table, if any (e.g. "gpus = 2")."""
    lines = ["[[run]]", 'name = "train"', 'notebook = "train.ipynb"']
    if resources:
        lines.append(f"resources = {{ {resources} }}")
    lines.append(f'parameters = {{ data_root = "{data_root}", epochs = {epochs} }}')
    return "\n".join(lines) + "\n"


def _shape(rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(28, 44)), int(rng.integers(46, 60))  # (H, W), always wider than high


def _box_mask(shape: tuple[int, int], value: int, rng: np.random.Generator, ring: bool = False) -> np.ndarray:
    """A rectangle of `value` on 0 in the upper-left part, optionally inside a 1-pixel ring of 255."""
    h, w = shape
    mask = np.zeros(shape, np.uint8)
    top, left = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    bottom, right = top + h // 3 + 2, left + w // 3 + 2
    if ring:
        mask[top:bottom, left:right] = 255
        top, left, bottom, right = top + 1, left + 1, bottom - 1, right - 1
    mask[top:bottom, left:right] = value
    return mask


@pytest.fixture(scope="session")
def pascal_root(tmp_path_factory) -> Path:
    """VOC2012 layout. Per fold f: 3 val and 3 trn images for each class 5f..5f+4 (mask value
    class+1 with a 255 ring around it); the first val image of a class also shows the next class
    of the fold and is listed under both."""
    root = tmp_path_factory.mktemp("pascal")
    rng = np.random.default_rng(0)
    voc = root / "VOC2012"
    for fold in range(4):
        lines: dict[str, list[str]] = {"trn": [], "val": []}
        for split, n_images in (("val", 3), ("trn", 3)):
            for c in range(5 * fold, 5 * fold + 5):
                for k in range(n_images):
                    name = f"{2007 + fold}_{split}{c:02d}{k}"
                    mask = _box_mask(_shape(rng), c + 1, rng, ring=True)
                    lines[split].append(f"{name}__{c + 1:02d}")
                    if split == "val" and k == 0 and c < 5 * fold + 4:
                        mask[-3:, -3:] = c + 2  # clear of the box
                        lines[split].append(f"{name}__{c + 2:02d}")
                    write_pair(voc / "JPEGImages" / f"{name}.jpg", voc / "SegmentationClassAug" / f"{name}.png", mask, rng)
        for split, rows in lines.items():
            path = root / "splits" / "pascal" / split / f"fold{fold}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="session")
def coco_root(tmp_path_factory) -> Path:
    """COCO2014 layout: 3 val2014 and 2 train2014 images per class (mask value class+1)."""
    root = tmp_path_factory.mktemp("coco")
    rng = np.random.default_rng(1)
    base = root / "COCO2014"
    rows: dict[str, dict[int, list[str]]] = {"trn": {}, "val": {}}
    for split, subset, n_images in (("val", "val2014", 3), ("trn", "train2014", 2)):
        for c in range(80):
            for k in range(n_images):
                name = f"{subset}/COCO_{subset}_{c * 10 + k:012d}.jpg"
                write_pair(base / name, (base / "annotations" / name).with_suffix(".png"),
                           _box_mask(_shape(rng), c + 1, rng), rng)
                rows[split].setdefault(c, []).append(name)
    for fold in range(4):
        test = {fold + 4 * v for v in range(20)}
        for split, classes in (("val", sorted(test)), ("trn", sorted(set(range(80)) - test))):
            path = root / "splits" / "coco" / split / f"fold{fold}.tsv.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            with gzip.open(path, "wt") as f:
                f.write("# class_id (0-based, COCO category order 1..80 minus 1)\timage path under COCO2014/\n")
                f.writelines(f"{c}\t{name}\n" for c in classes for name in rows[split][c])
    return root


@pytest.fixture(scope="session")
def fss_root(tmp_path_factory) -> Path:
    """FSS-1000 layout: 10 images (1..10.jpg + .png) per class; 2/2/3 trn/val/test classes. Masks are
    grey 127 (background) and 128 (foreground) to pin the >= 128 threshold."""
    root = tmp_path_factory.mktemp("fss")
    rng = np.random.default_rng(2)
    classes = {"trn": ["apple", "bus"], "val": ["cup", "dog"], "test": ["egg", "fig", "gnu"]}
    for split, names in classes.items():
        for name in names:
            for n in range(1, 11):
                mask = np.where(_box_mask(_shape(rng), 1, rng) > 0, 128, 127)
                write_pair(root / "FSS-1000" / name / f"{n}.jpg", root / "FSS-1000" / name / f"{n}.png", mask, rng)
        path = root / "splits" / "fss" / f"{split}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(names) + "\n")
    return root


# -- notebooks for the suite's tests (hsnetlib.suite) ----------------------------
# A tiny training, the same in the notebook and in the in-process reference (one thread: the machine is
# shared, and torch's thread pool under contention costs more than it brings).
TOY_TRAINING = dict(benchmark="pascal", fold=0, model={"weights": None}, img_size=32, bsz=2, val_episodes=4,
                    train_episodes=4, progress=False, device="cpu")
TOY_PARAMETERS = '''out_dir: str = "runs/x"  # where the record goes
value: int = 1  # a number
label: str = "a"  # a name
outcome: str = "record"  # "record" | "fail" (raise) | "silent" (no record) | "die" (the kernel kills itself)
wait_for: str = ""  # a file to wait for (at most 120 s) before finishing
converged: bool = True  # what the record says of the (pretended) training
'''
TOY_BODY = '''import os, signal, time
from pathlib import Path
from hsnetlib.suite.jsonfile import write_json  # a record the suite reads, without torch: kernels start faster
from hsnetlib.suite.state import where
started = time.time()
Path(out_dir, "started").write_text(str(started))
if outcome == "fail":
    raise RuntimeError("boom " + label)
if outcome == "die":
    os.kill(os.getpid(), signal.SIGKILL)
while wait_for and not Path(wait_for).exists():
    assert time.time() < started + 120, f"{wait_for} did not appear"
    time.sleep(0.1)
if outcome == "record":
    write_json(Path(out_dir, "metrics.json"), {
        "notebook": "toy.ipynb", "parameters": {"value": value, "label": label}, "provenance": where(),
        "summary": {"value": value, **({} if converged else {"converged": False})},
        "started": started, "finished": time.time(), "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "threads": os.environ.get("OMP_NUM_THREADS")})
'''
TRAIN_PARAMETERS = '''out_dir: str = "runs/x"  # run folder
data_root: str = "data"  # the synthetic benchmark
epochs: int = 4  # training epochs
resume: bool = False  # continue the training in out_dir
'''
TRAIN_BODY = f'''import time
from hsnetlib.suite.records import write_run_record
from hsnetlib.train import TrainConfig, train
config = TrainConfig(**{TOY_TRAINING!r}, datapath=data_root, splits_dir=data_root + "/splits", epochs=epochs,
                     run_dir=out_dir, resume=resume)
summary = train(config)  # under DDP, ranks other than 0 get no history (and write_run_record writes nothing)
last = summary["last"] or {{}}
write_run_record(out_dir, "train.ipynb", {{"epochs": epochs}}, summary={{"val_loss": last.get("val_loss")}},
                 history=summary["history"], finished=time.time())
'''


def write_notebook(path: Path, parameters: str, body: str) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "hsnet", "display_name": "HSNet (hsnet)", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="session")
def suite_notebooks(tmp_path_factory) -> Path:
    """A folder with toy.ipynb (records, fails, stays silent or dies; can wait for a file) and train.ipynb
    (a tiny hsnetlib training that resumes when the suite passes resume=True)."""
    folder = tmp_path_factory.mktemp("notebooks")
    write_notebook(folder / "toy.ipynb", TOY_PARAMETERS, TOY_BODY)
    write_notebook(folder / "train.ipynb", TRAIN_PARAMETERS, TRAIN_BODY)
    return folder


@pytest.fixture(scope="session")
def tiny_voc(tmp_path_factory) -> Path:
    from hsnetlib.synthetic import generate

    root = tmp_path_factory.mktemp("tiny_voc")
    generate(root, "pascal", images_per_class=3, size=64, seed=0)
    return root


@pytest.fixture(scope="session")
def reference_dir(tmp_path_factory) -> Path:
    """The run folder of reference_training; its weights after epoch 0 are kept in AFTER_EPOCH0 there."""
    return tmp_path_factory.mktemp("reference")


AFTER_EPOCH0 = "after_epoch0.pt"


@pytest.fixture(scope="session")
def reference_training(tiny_voc, reference_dir) -> list[dict]:
    """The epochs (metrics.csv rows without their times) of the toy training run without interruption."""
    import shutil

    import torch
    from hsnetlib.train import TrainConfig, train

    def keep_first(row: dict) -> None:
        if row["epoch"] == 0:  # last.pt is written before the epoch is reported
            shutil.copy(reference_dir / "last.pt", reference_dir / AFTER_EPOCH0)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = train(TrainConfig(**TOY_TRAINING, datapath=str(tiny_voc), splits_dir=str(tiny_voc / "splits"),
                                    epochs=4, run_dir=str(reference_dir)), on_epoch=keep_first)
    finally:
        torch.set_num_threads(threads)
    return [{k: v for k, v in row.items() if k != "time"} for row in summary["history"]]


def epochs_of(run_dir: Path) -> list[dict]:
    """A training's metrics.csv rows without their times."""
    import csv

    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: int(v) if k == "epoch" else float(v) for k, v in row.items() if k != "time"}
                for row in csv.DictReader(f)]


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config, items):
    """`make test` runs tests/ and the notebooks (nbval) in one session on pytest-xdist workers (``--dist
    loadgroup``). The notebooks' cells are one group, run in order on one worker with one kernel at a time
    (01_train.ipynb trains the small model that 02, 09, 10 and 12 reuse); the tests that start a Slurm cluster
    share one worker (one munged, one slurmctld for the session), and so do the browser tests. The tests of a
    module that use one of its module-scoped fixtures (a training, built models) share a worker too, so that
    the fixture is built once, not once per worker. Groups are handed out first (see the end)."""
    for item in items:
        if item.path.suffix == ".ipynb":
            group = "notebooks"
        else:
            group = next((m for m in ("slurm", "browser") if item.get_closest_marker(m)), None)
        if group is None and any(d.scope == "module" for defs in item._fixtureinfo.name2fixturedefs.values()
                                 for d in defs if d.baseid):
            group = f"module:{item.path.name}"
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
    # The groups first, in their order, the single tests after them: xdist hands out work in this order, so the
    # long groups start early and the short tests fill both workers at the end (no worker idles on a late group).
    items.sort(key=lambda item: item.get_closest_marker("xdist_group") is None)


# The browser tests' fixtures, here so that the session has one JupyterLab server and one Chromium for all of them
# (imported last: jupyterlab_browser imports stop_process from this module).
from jupyterlab_browser import browser, jupyterlab, page  # noqa: E402,F401
