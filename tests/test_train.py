"""Training engine: loss, K-shot loss, checkpoints and model selection, resume, loader workers and
torchrun equivalence.

Short CPU runs on the synthetic PASCAL-layout benchmark (64 px, random frozen ResNet50, 8 training
and 8 validation episodes per epoch, global batch 4). The uninterrupted reference run loads with 2
persistent workers, the resumed ones with none: equal results show both resume and worker
independence.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from hsnetlib.model import HSNet, HSNetConfig
from hsnetlib.synthetic import generate
from hsnetlib.train import (
    RESUMABLE_CHANGES, ConfigError, DistInfo, EpisodeSampler, TrainConfig, TrainingError, _check_setup,
    build_datasets, build_model, build_optimizer, forward_episodes, heldout_split, result_dict, train,
)

MODEL_FIELDS = {f.name for f in dataclasses.fields(HSNetConfig)}


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic_voc")
    generate(root, "pascal", images_per_class=3, size=64, seed=0)
    return root


def tiny(root: Path, run_dir: Path, **overrides) -> TrainConfig:
    """The tiny training; overrides of model options (HSNetConfig fields) go into its model."""
    model = {k: overrides.pop(k) for k in list(overrides) if k in MODEL_FIELDS}
    settings = dict(benchmark="pascal", datapath=str(root), splits_dir=str(root / "splits"), fold=0,
                    model=HSNetConfig(**{"weights": None, **model}), img_size=64, bsz=4, epochs=2, val_episodes=8,
                    train_episodes=8, progress=False, run_dir=str(run_dir))
    return TrainConfig(**{**settings, **overrides})


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def payload(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def runs(voc_root, tmp_path_factory) -> dict[str, Any]:
    """A 2-epoch run straight through (2 persistent loader workers, epochs reported to a callback);
    the same run (no workers) stopped after epoch 0 and resumed with resume=True; and once more,
    interrupted during epoch 1 (Ctrl-C) and rerun with resume="auto"."""
    import hsnetlib.train as engine

    base = tmp_path_factory.mktemp("runs")
    straight, resumed, auto = base / "straight", base / "resumed", base / "auto"
    reported: list[dict] = []
    summary = train(tiny(voc_root, straight, workers=2), on_epoch=reported.append)
    train(tiny(voc_root, resumed, epochs=1))
    shutil.copy(resumed / "last.pt", base / "after_epoch0.pt")
    train(tiny(voc_root, resumed, epochs=2, resume=True))
    steps, real_step = iter(range(100)), engine.train_step

    def interrupted_step(*args, **kwargs):
        if next(steps) == 2:  # the first step of epoch 1 (2 steps per epoch)
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "train_step", interrupted_step)
        with pytest.raises(KeyboardInterrupt):
            train(tiny(voc_root, auto, resume="auto"))
    interrupted_rows = read_metrics(auto)
    train(tiny(voc_root, auto, resume="auto"))
    return {"straight": straight, "resumed": resumed, "auto": auto, "after_epoch0": base / "after_epoch0.pt",
            "summary": summary, "reported": reported, "interrupted_rows": interrupted_rows}


def test_loss_decreases_on_a_fixed_batch(voc_root, tmp_path):
    config = tiny(voc_root, tmp_path)
    train_ds, _ = build_datasets(config)
    batch = next(iter(DataLoader(train_ds, batch_size=4)))
    model = build_model(config, torch.device("cpu"))
    optimizer = build_optimizer(config, model)
    losses = []
    for _ in range(6):
        loss, pred = forward_episodes(model, batch, torch.device("cpu"))
        optimizer.zero_grad()
        loss.mean().backward()
        optimizer.step()
        losses.append(loss.mean().item())
    assert loss.shape == (4,) and pred.shape == (4, 64, 64)
    assert min(losses[-2:]) < 0.9 * losses[0], losses


def test_kshot_loss_is_the_sum_of_one_shot_losses_and_prediction_votes(voc_root, tmp_path):
    config = tiny(voc_root, tmp_path, shot=2)
    train_ds, _ = build_datasets(config)
    batch = next(iter(DataLoader(train_ds, batch_size=3)))
    model = build_model(config, torch.device("cpu")).eval()
    with torch.no_grad():
        loss, pred = forward_episodes(model, batch, torch.device("cpu"))
        target = batch["query_mask"].long()
        expected = sum(
            torch.nn.functional.cross_entropy(
                model(batch["query_img"], batch["support_imgs"][:, k], batch["support_masks"][:, k]), target,
                reduction="none").mean(dim=(1, 2))
            for k in range(2))
        voted = model.predict_mask(batch["query_img"], batch["support_imgs"], batch["support_masks"])
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(pred, voted)


def test_validation_scores_are_those_of_evaluate(voc_root, tmp_path):
    """The trainer's validation loop (batched, K-shot vote) and hsnetlib.evaluate agree on the same episodes."""
    from hsnetlib.data import FewShotDataset
    from hsnetlib.evaluate import evaluate
    from hsnetlib.train import validate

    config = tiny(voc_root, tmp_path, shot=2)
    _, val_ds = build_datasets(config)
    n = len(val_ds.index.queries)  # one pass over the val list: every class has episodes
    val_ds = FewShotDataset(val_ds.config, val_ds.layout, dataclasses.replace(val_ds.index, n_episodes=n))
    model = build_model(config, torch.device("cpu"))
    with torch.no_grad():  # shift the foreground logit so that about half the pixels are foreground
        batch = next(iter(DataLoader(val_ds, batch_size=8)))
        logits = model(batch["query_img"], batch["support_imgs"][:, 0], batch["support_masks"][:, 0])
        model.hpn_learner.decoder2[-1].bias[1] -= (logits[:, 1] - logits[:, 0]).median()
    ours = validate(model, DataLoader(val_ds, batch_size=4), val_ds.class_ids, DistInfo(), "none", "val", False)
    reference = evaluate(model, val_ds, batch_size=3, progress=False)
    with pytest.warns(UserWarning, match="classes without episodes"):  # 6 episodes do not meet every class
        with_workers = evaluate(model, val_ds, batch_size=3, num_workers=2, progress=False, episodes=6)
    pd.testing.assert_frame_equal(with_workers.episodes, reference.episodes.iloc[:6])  # a batch per worker
    assert 0 < ours.miou < 100
    assert ours.miou == pytest.approx(reference.miou, abs=1e-6)
    assert ours.fbiou == pytest.approx(reference.fbiou, abs=1e-6)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_is_refused_on_cpu(voc_root, tmp_path, amp):
    with pytest.raises(ConfigError, match=f"amp='{amp}' needs a CUDA device"):
        train(tiny(voc_root, tmp_path / "run", amp=amp, device="cpu"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides, message", [
    (dict(amp="fp32"), "amp="), (dict(selection="val"), "selection="), (dict(bsz=0), "bsz="),
    (dict(heldout_fraction=1.5), "heldout"), (dict(lr=float("inf")), "lr=inf"), (dict(lr=float("nan")), "lr=nan"),
    (dict(backbone_lr=-1.0), "backbone_lr"), (dict(val_benchmark="mars"), "val_benchmark"),
    (dict(val_benchmark="fss", selection="heldout"), "cannot be combined"), (dict(model={"kernel": "diagonal"}), "kernel"),
])
def test_invalid_configs_are_config_errors(voc_root, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny(voc_root, tmp_path, **overrides)


def test_global_batch_must_split_evenly_over_ranks(voc_root, tmp_path):
    with pytest.raises(ConfigError, match="not divisible by the 3 processes"):
        _check_setup(tiny(voc_root, tmp_path, bsz=4), DistInfo(rank=0, world_size=3))


def test_sampler_shards_form_the_single_process_global_batches():
    single = list(EpisodeSampler(20, 12, seed=3))
    shards = [list(EpisodeSampler(20, 12, seed=3, rank=r, world_size=2)) for r in range(2)]
    per_rank = 2  # global batch 4
    for j in range(3):
        union = sorted(shards[0][j * per_rank:(j + 1) * per_rank] + shards[1][j * per_rank:(j + 1) * per_rank])
        assert union == sorted(single[4 * j:4 * (j + 1)])
    other_epoch = EpisodeSampler(20, 12, seed=3)
    other_epoch.set_epoch(1)
    assert list(other_epoch) != single and list(EpisodeSampler(20, 12, seed=3)) == single
    assert len(set(single)) == 12


def test_run_directory_and_best_checkpoint(runs, voc_root):
    run = runs["straight"]
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [0, 1]
    assert list(rows[0]) == ["epoch", "train_loss", "train_miou", "train_fbiou", "val_loss", "val_miou",
                             "val_fbiou", "time"]
    assert all(np.isfinite(list(r.values())).all() for r in rows)
    config = json.loads((run / "config.json").read_text())
    assert config["selection"] == "test_fold" and config["lr"] == 1e-3 and config["model"]["weights"] is None
    assert TrainConfig(**config) == tiny(voc_root, run, workers=2)  # config.json rebuilds the config
    env = json.loads((run / "env.json").read_text())
    assert {"code_version", "torch", "device"} <= set(env) and env["world_size"] == 1
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert not list(run.glob("*.tmp"))
    best, last = payload(run / "best.pt"), payload(run / "last.pt")
    assert last["epoch"] == 1
    assert best["epoch"] == int(np.argmax([r["val_miou"] for r in rows]))  # first epoch of the maximum
    assert best["best_val_miou"] == max(r["val_miou"] for r in rows) == last["best_val_miou"]
    assert {"optimizer", "rng", "train_config", "scaler"} <= set(last)
    # best.pt holds that epoch's weights: epoch 0's are those of the resumed run's first checkpoint
    reference = payload(runs["after_epoch0"]) if best["epoch"] == 0 else last
    assert all(torch.equal(best["state_dict"][k], v) for k, v in reference["state_dict"].items())
    model = HSNet.load(run / "best.pt")
    assert model.config.backbone == "resnet50" and model.config.weights is None


def test_best_checkpoint_follows_validation_miou(voc_root, tmp_path, monkeypatch):
    """Validation mIoU scripted to 10, 30, 20 (the rest of validation runs for real): best.pt is epoch 1's."""
    import hsnetlib.train as engine

    scripted, real = iter([10.0, 30.0, 20.0]), engine.validate
    monkeypatch.setattr(engine, "validate", lambda *a, **k: dataclasses.replace(real(*a, **k), miou=next(scripted)))
    run = tmp_path / "run"
    summary = train(tiny(voc_root, run, epochs=3, train_episodes=4, val_episodes=4))
    assert [r["val_miou"] for r in read_metrics(run)] == [10.0, 30.0, 20.0]
    assert (summary["best_epoch"], summary["best_val_miou"]) == (1, 30.0)
    assert payload(run / "best.pt")["epoch"] == 1 and payload(run / "last.pt")["best_epoch"] == 1


@pytest.mark.parametrize("resumed", ["resumed", "auto"])
def test_resume_ends_like_an_uninterrupted_run(runs, resumed):
    straight, resumed = runs["straight"], runs[resumed]
    drop_time = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert drop_time(read_metrics(resumed)) == drop_time(read_metrics(straight))
    a, b = payload(straight / "last.pt"), payload(resumed / "last.pt")
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    env = json.loads((resumed / "env.json").read_text())
    assert [r["epoch"] for r in env["resumes"]] == [1]


def test_epochs_are_reported_to_the_callback(runs):
    history = runs["summary"]["history"]
    assert [r["epoch"] for r in runs["reported"]] == [0, 1] and runs["reported"] == history
    assert history == [{k: int(v) if k == "epoch" else v for k, v in r.items()} for r in read_metrics(runs["straight"])]
    assert [r["epoch"] for r in runs["interrupted_rows"]] == [0]  # Ctrl-C during epoch 1 kept epoch 0


def test_finished_run_returns_its_summary_without_training(runs, voc_root, monkeypatch):
    import hsnetlib.train as engine

    def fail(*args, **kwargs):
        raise AssertionError("a finished run was built or trained again")

    monkeypatch.setattr(engine, "build_datasets", fail)
    def stamps():
        return {p.name: p.stat().st_mtime_ns for p in runs["straight"].iterdir() if p.is_file()}

    before = stamps()
    reported: list[dict] = []
    for resume in (True, "auto"):
        again = train(tiny(voc_root, runs["straight"], workers=0, resume=resume), on_epoch=reported.append)
        assert again == runs["summary"]
    assert reported == [] and stamps() == before


@pytest.mark.parametrize("resume", [True, "auto"])
def test_resumed_run_needs_the_same_config(runs, voc_root, resume):
    changed = (r"cannot resume .*: img_size \(run: 64, now: 32\); lr \(run: 0.001, now: 0.01\) .*"
               r"give it another run folder \(a notebook's out_dir\) or delete that one")
    with pytest.raises(ConfigError, match=changed):
        train(tiny(voc_root, runs["straight"], lr=1e-2, img_size=32, resume=resume))


def test_resume_modes(runs, voc_root, tmp_path):
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(tiny(voc_root, runs["straight"]))
    with pytest.raises(FileNotFoundError, match=r"resume=True but there is no .*last\.pt"):
        train(tiny(voc_root, tmp_path / "new", resume=True))
    with pytest.raises(ConfigError, match="resume='yes'"):
        tiny(voc_root, tmp_path, resume="yes")


def test_heldout_selection_never_trains_on_validation_images(voc_root, tmp_path):
    config = tiny(voc_root, tmp_path / "run", selection="heldout", epochs=1, heldout_fraction=0.25)
    full_train, _ = build_datasets(tiny(voc_root, tmp_path))
    train_ds, val_ds = build_datasets(config)
    held = {ep.query for ep in (val_ds.episode(i) for i in range(len(val_ds)))}
    seen = {n for names in train_ds.index.candidates.values() for n in names}
    seen |= {n for n, _ in train_ds.index.queries}
    assert held and not held & seen
    assert set(val_ds.class_ids) <= set(full_train.class_ids)  # training classes only: no test-fold class
    assert len(val_ds) == 8 and len(train_ds) < len(full_train)
    assert all(set(val_ds.episode(i).supports) <= seen for i in range(len(val_ds)))
    summary = train(config)
    assert summary["selection"] == "heldout" and summary["last"]["epoch"] == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["selection"] == "heldout"
    with pytest.raises(ValueError, match="keeps at least 2 for training"):
        heldout_split(_two_per_class(full_train), 0.1, 8)


def _two_per_class(dataset):
    """The training set cut to two images per class."""
    from hsnetlib.data import EpisodeIndex, FewShotDataset

    index = dataset.index
    keep = {c: index.candidates[c][:2] for c in index.class_ids}
    names = {n for v in keep.values() for n in v}
    queries = [(n, c) for n, c in index.queries if n in names]
    return FewShotDataset(dataset.config, dataset.layout,
                          EpisodeIndex(index.class_ids, queries, keep, index.draw_class_first, len(queries)))


@pytest.mark.parametrize("env, cpus, cuda_workers", [
    ({}, 16, 8),                                                     # capped at MAX_DEFAULT_WORKERS
    ({"SLURM_CPUS_PER_TASK": "6"}, 6, 5),                            # the Slurm allocation, one for the main process
    ({"LOCAL_WORLD_SIZE": "4"}, 4, 3),                               # torchrun: ranks share the CPUs
    ({"SLURM_CPUS_PER_TASK": "12", "SLURM_NTASKS": "1", "LOCAL_WORLD_SIZE": "4"}, 3, 2),  # torchrun in one task
    ({"SLURM_CPUS_PER_TASK": "12", "SLURM_NTASKS": "4", "LOCAL_WORLD_SIZE": "4"}, 12, 8),  # a Slurm task per rank
    ({"SLURM_CPUS_PER_TASK": "1"}, 1, 0),
])
def test_default_workers_follow_the_cpus_of_the_process(monkeypatch, env, cpus, cuda_workers):
    import hsnetlib.utils as utils

    for name in ("SLURM_CPUS_PER_TASK", "SLURM_NTASKS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(utils.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert utils.available_cpus() == cpus
    assert utils.default_workers("cpu") == 0  # CPU runs load in the main process
    monkeypatch.setattr(utils, "pick_device", lambda device: torch.device("cuda"))
    assert utils.default_workers() == cuda_workers


# -- the config's metadata ----------------------------------------------------------------------------
def test_result_dict_leaves_out_exactly_the_fields_marked_result_false(voc_root, tmp_path):
    config = tiny(voc_root, tmp_path)
    kept = result_dict(config)
    marked = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata["result"] is False}
    assert marked == {"run_dir", "progress", "workers", "resume", "device"}
    assert set(kept) == set(config.to_dict()) - marked and HSNetConfig(**kept["model"]) == config.model
    assert set(RESUMABLE_CHANGES) == marked | {"epochs"}
    where = dataclasses.replace(config, run_dir="elsewhere", workers=3, progress=True, device="cpu", resume="auto")
    assert result_dict(where) == kept
    assert result_dict(dataclasses.replace(config, model=HSNetConfig(weights=None, kernel="original"))) != kept


def test_a_resumed_run_names_a_changed_model_option(runs, voc_root):
    with pytest.raises(ConfigError, match=r"model\.kernel \(run: 'center_pivot', now: 'original'\)"):
        train(tiny(voc_root, runs["straight"], kernel="original", resume=True))


# -- bugs: each test fails before its fix -------------------------------------------------------------
def test_building_a_model_leaves_the_callers_random_state_alone(voc_root, tmp_path):
    import random

    random.seed(11), np.random.seed(11), torch.manual_seed(11)
    before = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    first = build_model(tiny(voc_root, tmp_path, seed=3), torch.device("cpu"))
    assert random.getstate() == before[0] and np.array_equal(np.random.get_state()[1], before[1])
    assert torch.equal(torch.get_rng_state(), before[2])
    second = build_model(tiny(voc_root, tmp_path, seed=3), torch.device("cpu"))  # the seed alone decides
    other = build_model(tiny(voc_root, tmp_path, seed=4), torch.device("cpu"))
    learner = lambda m: torch.cat([p.flatten() for p in m.learner_parameters()])  # noqa: E731
    assert torch.equal(learner(first), learner(second)) and not torch.equal(learner(first), learner(other))


def test_heldout_validation_set_rebuilds_itself_and_nothing_else(voc_root, tmp_path):
    """Its recorded description is not the fold's val split: redrawing it for another shot keeps its held-out
    queries, the same seed and shot give the same episodes, and build_dataset refuses the description."""
    from hsnetlib.data import build_dataset

    _, val_ds = build_datasets(tiny(voc_root, tmp_path, selection="heldout", heldout_fraction=0.25))
    episodes = [val_ds.episode(i) for i in range(len(val_ds))]
    assert val_ds.config.split == "heldout" and val_ds.config.heldout_fraction == 0.25
    assert [val_ds.with_episodes(seed=0, shot=1).episode(i) for i in range(len(val_ds))] == episodes
    two_shot = val_ds.with_episodes(shot=2)
    assert [two_shot.episode(i).query for i in range(len(val_ds))] == [e.query for e in episodes]
    assert all(len(two_shot.episode(i).supports) == 2 for i in range(len(val_ds)))
    reseeded = val_ds.with_episodes(seed=5)
    assert {reseeded.episode(i).query for i in range(len(val_ds))} <= {e.query for e in episodes}
    with pytest.raises((TypeError, ValueError)):
        build_dataset(**dataclasses.asdict(val_ds.config))


def test_validation_on_another_benchmark(tmp_path):
    """val_benchmark="fss": training on PASCAL, model selection on FSS-1000's val split (the CD-FSS recipe)."""
    root = tmp_path / "data"
    generate(root, "pascal", images_per_class=3, size=64, seed=0)
    generate(root, "fss", images_per_class=3, size=64, seed=0)
    config = tiny(root, tmp_path / "run", val_benchmark="fss", epochs=1, val_episodes=4)
    train_ds, val_ds = build_datasets(config)
    assert (train_ds.benchmark, val_ds.benchmark, val_ds.split) == ("pascal", "fss", "val")
    summary = train(config)
    assert summary["last"]["epoch"] == 0 and np.isfinite(summary["best_val_miou"])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["val_benchmark"] == "fss"


def test_a_non_finite_loss_stops_the_training_naming_the_epoch(voc_root, tmp_path, monkeypatch):
    import hsnetlib.train as engine

    real = engine.train_one_epoch
    calls = iter(range(10))

    def diverging(*args, **kwargs):
        stats = real(*args, **kwargs)
        return dataclasses.replace(stats, loss=float("nan")) if next(calls) == 1 else stats

    monkeypatch.setattr(engine, "train_one_epoch", diverging)
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match="epoch 1: the training loss became nan"):
        train(tiny(voc_root, run, epochs=3, train_episodes=4, val_episodes=4))
    assert [r["epoch"] for r in read_metrics(run)] == [0] and payload(run / "last.pt")["epoch"] == 0


def test_a_full_disk_while_checkpointing_is_named_and_keeps_the_previous_checkpoint(runs, tmp_path, monkeypatch):
    import errno

    run = tmp_path / "run"
    shutil.copytree(runs["straight"], run)
    before = (run / "last.pt").read_bytes()

    def full(obj, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)  # hsnetlib.utils imports torch lazily
    with pytest.raises(OSError, match=f"no space left on device: {run / 'last.pt'}") as err:
        HSNet.load(run / "last.pt").save(run / "last.pt")
    assert err.value.errno == errno.ENOSPC
    assert (run / "last.pt").read_bytes() == before and not list(run.glob(".*.tmp"))


def test_a_truncated_last_checkpoint_on_resume_is_named(runs, voc_root, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["straight"], run)
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"cannot read checkpoint {run / 'last.pt'}"):
        train(tiny(voc_root, run, epochs=3, resume=True))


def test_a_resume_with_another_cpu_thread_count_is_warned_of(runs, voc_root, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["resumed"], run)
    env = json.loads((run / "env.json").read_text())
    assert env["cpu_threads"] == torch.get_num_threads()  # recorded with the run
    env["resumes"][-1]["cpu_threads"] = torch.get_num_threads() + 1
    (run / "env.json").write_text(json.dumps(env))
    with pytest.warns(RuntimeWarning, match="CPU threads"):
        train(tiny(voc_root, run, epochs=3, resume=True))
