"""The training cache: a finished training stored by everything its result depends on, so that a repeated
configuration (the same variant in two notebooks or grids) is put into its run folder instead of being trained
again.

An entry is CACHE_DIR/<key>/ holding the training's files (:data:`TRAIN_FILES` but tb/) and summary.json (what
:func:`hsnetlib.train.train` returned). It appears whole or not at all: written aside, then renamed. Checkpoints
are shared by hard links (they are only ever replaced, never written in place), the text files copied
(metrics.csv grows when a run folder resumes).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

from hsnetlib.backbones import get_backbone
from hsnetlib.suite.jsonfile import read_json_object, write_json
from hsnetlib.train import TrainConfig, result_dict

TRAIN_FILES = ("config.json", "env.json", "metrics.csv", "best.pt", "last.pt", "tb")
SUMMARY_FILE = "summary.json"


def weights_key(config: TrainConfig) -> str | None:
    """The backbone weights as the key has them: a tag ("imagenet", a timm tag) or None ("none") as given, a local
    file by its content ("sha256:<hex>", :meth:`hsnetlib.backbones.BackboneSpec.weights_record`), so that the same
    file at another path hits the cache and a changed file at the same path misses it. A file that does not exist
    keeps its path (no entry can have it: its training fails, naming the file)."""
    record = get_backbone(config.model.backbone).weights_record(config.model.weights)
    return record["weights"] if record["sha256"] is None else f"sha256:{record['sha256']}"


def cache_key(config: TrainConfig) -> str:
    """Identifies a training by everything its result depends on (:func:`hsnetlib.train.result_dict`, the backbone
    weights by :func:`weights_key`)."""
    key = result_dict(config)
    key["model"] = {**key["model"], "weights": weights_key(config)}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def clear_training(run_dir: Path) -> None:
    """Remove what a training wrote into run_dir (:data:`TRAIN_FILES`), so that it trains afresh."""
    for name in TRAIN_FILES:
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def _link_files(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in TRAIN_FILES[:-1]:  # not tb/
        if not (source / name).is_file():
            continue
        (target / name).unlink(missing_ok=True)
        if name.endswith(".pt"):
            try:
                os.link(source / name, target / name)
                continue
            except OSError:  # another file system
                pass
        shutil.copy2(source / name, target / name)


def entry_dir(cache_dir: str | os.PathLike, config: TrainConfig) -> Path:
    return Path(cache_dir) / cache_key(config)


LOCKS_DIR = ".locks"  # in the cache folder: a lock file per key, held while that configuration trains


def lock_path(cache_dir: str | os.PathLike, config: TrainConfig) -> Path:
    """The lock that gives one run at a time the training of `config` (:func:`hsnetlib.suite.notebook.train_model`)."""
    return Path(cache_dir) / LOCKS_DIR / f"{cache_key(config)}.lock"


def fetch(cache_dir: str | os.PathLike, config: TrainConfig, run_dir: Path) -> dict[str, Any] | None:
    """The cached training of `config` put into run_dir (its summary, with ``reused_from``), or None when the
    cache does not hold it."""
    entry = entry_dir(cache_dir, config)
    summary = read_json_object(entry / SUMMARY_FILE, "training cache entry")
    if summary is None:
        return None
    clear_training(run_dir)
    _link_files(entry, run_dir)
    summary.update(run_dir=str(run_dir), best_checkpoint=str(run_dir / "best.pt"),
                   last_checkpoint=str(run_dir / "last.pt"), reused_from=str(entry))
    return summary


def store(cache_dir: str | os.PathLike, config: TrainConfig, run_dir: Path, summary: Mapping[str, Any]) -> Path:
    """Add the finished training in run_dir to the cache (nothing when it holds it already); returns the entry.

    Another process storing the same training first is fine (the rename finds the entry there); any other error
    (a full disk, no permission) is raised.
    """
    entry = entry_dir(cache_dir, config)
    if (entry / SUMMARY_FILE).is_file():
        return entry
    staging = entry.parent / f".{entry.name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _link_files(run_dir, staging)
        write_json(staging / SUMMARY_FILE, dict(summary))
        shutil.rmtree(entry, ignore_errors=True)  # an incomplete entry (no summary) of an earlier crash
        os.rename(staging, entry)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        stored_first = err.errno in (errno.EEXIST, errno.ENOTEMPTY) and (entry / SUMMARY_FILE).is_file()
        if not stored_first:
            raise
    return entry
