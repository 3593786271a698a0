"""The training cache (:mod:`hsnetlib.suite.cache`: ``cache_key``; ``notebook.train_model(..., cache_dir=...)``).

A wrong key silently puts one variant's training into another variant's row of a table, so every
option a training's result depends on must change the key, and a reused training must be the very
one that was cached. Tiny CPU trainings on the FSS layout of conftest (64 px, random ResNet50).
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from hsnetlib.suite import cache, notebook
from hsnetlib.suite.cache import cache_key
from hsnetlib.model import HSNetConfig
from hsnetlib.suite.notebook import Data
from hsnetlib.train import TrainConfig, result_dict, train

BASE = dict(benchmark="pascal", datapath="data", fold=0, weights=None, img_size=64, bsz=4, epochs=2,
            val_episodes=8, train_episodes=8, run_dir="runs/a", seed=0)
MODEL_FIELDS = {f.name for f in dataclasses.fields(HSNetConfig)}

# One changed value per TrainConfig field that a training's result depends on.
KEY_CHANGES = {
    # ablation options (the variants of Sec. 5.2)
    "hypercorrelation": "deep", "pyramid": (2, 3), "kernel": "original", "block_layers": 2,
    "support_masking": False, "finetune_backbone": True,
    # the seed
    "seed": 1,
    # the data
    "benchmark": "fss", "datapath": "other-data", "fold": 1, "shot": 5, "img_size": 128, "splits_dir": "splits",
    "class_split": "classes.json", "selection": "heldout", "heldout_fraction": 0.2,
    # the budget and optimisation
    "epochs": 3, "bsz": 8, "lr": 5e-4, "backbone_lr": 1e-4, "train_episodes": 16, "val_episodes": 16,
    "val_benchmark": "fss",
    # the model's backbone and numerics
    "backbone": "vgg16", "weights": "imagenet", "amp": "bf16",
}
# Fields that only say where a training is written, on which device (the same numbers on CPU and CUDA up to
# floating point) or how it is watched (TrainConfig's metadata result=False).
NOT_IN_KEY = {"run_dir": "runs/b", "progress": False, "workers": 2, "resume": True, "device": "cuda"}


def config(**changes) -> TrainConfig:
    """BASE with `changes`; the model's options (HSNetConfig fields) go into TrainConfig.model."""
    given = {**BASE, **changes}
    model = {k: given.pop(k) for k in list(given) if k in MODEL_FIELDS}
    return TrainConfig(model=HSNetConfig(**model), **given)


def _options(cfg: TrainConfig) -> dict:
    return {**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainConfig) if f.name != "model"},
            **{f.name: getattr(cfg.model, f.name) for f in dataclasses.fields(HSNetConfig)}}


def test_every_training_option_is_classified():
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"model"} | MODEL_FIELDS
    assert set(KEY_CHANGES) | set(NOT_IN_KEY) == fields
    assert not set(NOT_IN_KEY) & MODEL_FIELDS  # every model option changes the result
    assert all(_options(config())[name] != value for name, value in {**KEY_CHANGES, **NOT_IN_KEY}.items())


@pytest.mark.parametrize("name, value", list(KEY_CHANGES.items()), ids=list(KEY_CHANGES))
def test_what_the_result_depends_on_changes_the_key(name, value):
    assert cache_key(config(**{name: value})) != cache_key(config())


def test_every_change_gives_its_own_key():
    keys = {cache_key(config(**{name: value})) for name, value in KEY_CHANGES.items()}
    assert len(keys) == len(KEY_CHANGES) and cache_key(config()) not in keys


@pytest.mark.parametrize("name, value", list(NOT_IN_KEY.items()), ids=list(NOT_IN_KEY))
def test_where_and_how_a_run_is_watched_keeps_the_key(name, value):
    assert cache_key(config(**{name: value})) == cache_key(config())


def test_key_is_stable_and_independent_of_how_values_are_spelt():
    assert cache_key(config()) == cache_key(config())
    assert cache_key(config(pyramid=[1, 2, 3])) == cache_key(config(pyramid=(1, 2, 3)))
    assert cache_key(config(pyramid=[3, 2])) == cache_key(config(pyramid=(2, 3)))  # a set of levels


# -- reuse through train_model -----------------------------------------------------------------------------
PARAMS = dict(fold=0, backbone="resnet50", weights="none", shot=1, img_size=64, epochs=1, bsz=2, lr=1e-3,
              train_episodes=2, val_episodes=2, seed=0, device="cpu")


def train_model(data, run_dir, cache_dir, **variant):
    config = dataclasses.replace(notebook.train_config(data, run_dir, PARAMS, variant, resume=False), progress=False)
    return notebook.train_model(config, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def data(fss_root) -> Data:
    return Data("fss", fss_root, synthetic=True)  # synthetic: the split lists under fss_root/splits


@pytest.fixture(scope="module")
def cached(data, tmp_path_factory):
    """A training written into the cache, and the cache folder."""
    base = tmp_path_factory.mktemp("cache")
    summary = train_model(data, base / "first", base / "cache", support_masking=True)
    return summary, base


def test_first_training_is_trained_and_cached(cached):
    summary, base = cached
    assert "reused_from" not in summary and len(summary["history"]) == 1
    entries = [e for e in (base / "cache").iterdir() if e.name != cache.LOCKS_DIR]
    assert [e.name for e in entries] == [cache_key(TrainConfig(**summary["config"]))]
    stored = json.loads((entries[0] / "summary.json").read_text())
    assert stored["history"] == summary["history"]
    assert (entries[0] / "best.pt").read_bytes() == (base / "first" / "best.pt").read_bytes()


def test_same_training_elsewhere_is_reused_identically(cached, data, monkeypatch):
    first, base = cached

    def no_training(config, on_epoch=None):
        raise AssertionError(f"trained again instead of reusing the cache: {config}")

    monkeypatch.setattr(notebook, "train", no_training)
    again = train_model(data, base / "second", base / "cache", support_masking=True)
    assert again["reused_from"] == str(base / "cache" / cache_key(TrainConfig(**first["config"])))
    assert again["history"] == first["history"]
    assert (again["best_epoch"], again["best_val_miou"]) == (first["best_epoch"], first["best_val_miou"])
    assert again["best_checkpoint"] == str(base / "second" / "best.pt")
    for name in ("best.pt", "last.pt", "metrics.csv", "config.json"):
        assert (base / "second" / name).read_bytes() == (base / "first" / name).read_bytes(), name
    assert again["config"] == {**first["config"], "run_dir": str(base / "second")}


def test_another_variant_trains_anew(cached, data, tmp_path):
    first, base = cached
    summary = train_model(data, tmp_path / "run", base / "cache", support_masking=False)
    assert "reused_from" not in summary and summary["config"]["model"]["support_masking"] is False
    assert summary["history"][0]["train_loss"] != first["history"][0]["train_loss"]
    assert (base / "cache" / cache_key(TrainConfig(**summary["config"]))).is_dir()
    assert len([e for e in (base / "cache").iterdir() if e.name != cache.LOCKS_DIR]) == 2


def test_runs_started_together_train_a_configuration_once(data, tmp_path, monkeypatch):
    """Two runs that need the same training at the same time: the first trains it, the other waits for it (the
    key's lock) and reuses it, instead of both fetching nothing and training it twice."""
    trained = []

    def counted(config, on_epoch=None):
        trained.append(config.run_dir)
        return train(config, on_epoch=on_epoch)

    monkeypatch.setattr(notebook, "train", counted)
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(train_model, data, tmp_path / name, tmp_path / "cache", support_masking=True)
                for name in ("a", "b")]
        summaries = [run.result() for run in runs]
    assert len(trained) == 1
    assert sorted("reused_from" in s for s in summaries) == [False, True]
    assert summaries[0]["history"] == summaries[1]["history"]


# -- storing: another process first is fine, a full disk is an error ------------------------------------------
def _store_failing_rename(cached, tmp_path, monkeypatch, code):
    first, base = cached
    config = TrainConfig(**first["config"])

    def rename(src, dst):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(cache.os, "rename", rename)
    return cache.store(tmp_path / "cache", config, base / "first", first)


def test_a_full_disk_while_storing_is_raised_not_taken_for_another_process(cached, tmp_path, monkeypatch):
    with pytest.raises(OSError) as err:
        _store_failing_rename(cached, tmp_path, monkeypatch, errno.ENOSPC)
    assert err.value.errno == errno.ENOSPC
    assert list((tmp_path / "cache").iterdir()) == []  # the staging folder removed, no entry


def test_another_process_storing_first_is_fine(cached, tmp_path, monkeypatch):
    first, base = cached
    config = TrainConfig(**first["config"])
    entry = cache.entry_dir(tmp_path / "cache", config)
    real_rename = os.rename

    def rename(src, dst):  # the other process renames its entry into place just before this one
        real_rename(src, dst)
        raise OSError(errno.ENOTEMPTY, os.strerror(errno.ENOTEMPTY))

    monkeypatch.setattr(cache.os, "rename", rename)
    assert cache.store(tmp_path / "cache", config, base / "first", first) == entry
    assert (entry / "summary.json").is_file()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [entry.name]


# -- a local weights file is keyed by its content, tags by their name ------------------------------------------
def test_a_weights_file_is_keyed_by_its_content_not_its_path(cached, tmp_path):
    """The same file at another path hits the cache entry; a changed file at the same path misses it."""
    first, base = cached
    here, there = tmp_path / "here" / "weights.pth", tmp_path / "there" / "copy.pth"
    for path in (here, there):
        path.parent.mkdir()
        path.write_bytes(b"backbone weights v1")
    at = {path: dataclasses.replace(TrainConfig(**first["config"]),
                                    model=dataclasses.replace(HSNetConfig(**first["config"]["model"]),
                                                              weights=str(path))) for path in (here, there)}
    assert cache.weights_key(at[here]) == f"sha256:{hashlib.sha256(b'backbone weights v1').hexdigest()}"
    assert cache_key(at[here]) == cache_key(at[there])
    entry = cache.store(tmp_path / "cache", at[here], base / "first", first)
    reused = cache.fetch(tmp_path / "cache", at[there], tmp_path / "run")
    assert reused is not None and reused["reused_from"] == str(entry)
    here.write_bytes(b"backbone weights v2")  # retrained or replaced in place
    assert cache_key(at[here]) != cache_key(at[there])
    assert cache.fetch(tmp_path / "cache", at[here], tmp_path / "run2") is None


@pytest.mark.parametrize("weights", ["imagenet", None])
def test_weights_tags_and_none_are_keyed_as_given(weights):
    """A tag or no weights: the key is the result-relevant configuration as it is (entries cached before stay)."""
    cfg = config(weights=weights)
    assert cache.weights_key(cfg) == weights
    assert cache_key(cfg) == hashlib.sha256(json.dumps(result_dict(cfg), sort_keys=True).encode()).hexdigest()[:16]
