"""Run records (hsnetlib.suite.records): the layout of metrics.json that the notebooks write and the results read.

A record of the layout written so far reads into typed entries and writes back to the same JSON; a broken or
foreign file is an error naming it.
"""
from __future__ import annotations

import copy
import json

import pytest

from hsnetlib.suite.jsonfile import UnreadableFile
from hsnetlib.suite.records import (EvaluationEntry, Paired, ProfileEntry, RecordError, RunRecord, Scores,
                                    TrainingEntry, not_converged, read_record, read_records, write_record)

MODEL = {"backbone": "resnet50", "weights": None, "hypercorrelation": "full", "pyramid": [1, 2, 3],
         "kernel": "center_pivot", "block_layers": 3, "support_masking": True, "finetune_backbone": False}
EVALUATION = {
    "study": "pyramid", "label": "3", "benchmark": "pascal", "dataset": "synthetic-pascal", "synthetic": True,
    "fold": 1, "nshot": 1, "ignore_label": True, "img_size": 64, "original_size": False, "episodes": 3, "seed": 0,
    "model": {**MODEL, "pyramid": [3]}, "learnable_params": 1234, "checkpoint": "/runs/a/best.pt",
    "miou": 12.5, "fbiou": 40.0, "ci95": [10.0, 15.0],
    "per_class": [{"class_id": 5, "class_name": "bus", "episodes": 3, "iou": 12.5}],
    "baselines": {"all_foreground": {"miou": 8.0, "fbiou": 20.0, "ci95": [7.0, 9.0]},
                  "all_background": {"miou": 0.0, "fbiou": 45.0, "ci95": [0.0, 0.0]}},
    "episodes_digest": "abc", "paired": {"reference": "1-2-3", "delta_miou": -2.5, "ci95": [-4.0, -1.0], "episodes": 3},
}
TRAINING = {
    "study": "pyramid", "label": "3", "benchmark": "pascal", "dataset": "synthetic-pascal", "synthetic": True,
    "fold": 1, "model": {**MODEL, "pyramid": [3]}, "shot": 1, "img_size": 64, "epochs": 2, "bsz": 2, "lr": 0.001,
    "train_episodes": 4, "val_episodes": None, "best_epoch": 1, "best_val_miou": 3.0, "converged": False,
    "history": [{"epoch": 0, "train_loss": 0.7, "val_miou": 1.0}, {"epoch": 1, "train_loss": 0.6, "val_miou": 3.0}],
    "run_dir": "/runs/a", "checkpoint": "/runs/a/best.pt", "reused_from": None,
}
PROFILE = {"study": "kernel", "label": "original", "model": MODEL, "img_size": 64, "nshot": 1, "device": "cpu",
           "learnable_params": 10, "time_ms": 1.5, "memory_gb": 0.1, "gflops": 2.0}
RECORD = {
    "notebook": "04_ablation_pyramid.ipynb", "parameters": {"fold": 1, "shots": [1]}, "seed": 0,
    "checkpoint": None, "checkpoints": {"3": {"path": "/runs/a/best.pt", "sha256": "00", "bytes": 10}},
    "provenance": {"code_version": "abc", "device": "cpu"},
    "summary": {"3_1shot_miou": 12.5}, "trainings": [TRAINING], "evaluations": [EVALUATION], "profiles": [PROFILE],
    "episode": {"query": "q.jpg"},
}


def test_a_record_reads_into_typed_entries_and_writes_back_the_same_json():
    record = RunRecord.from_dict(copy.deepcopy(RECORD))
    (evaluation,), (training,), (profile,) = record.evaluations, record.trainings, record.profiles
    assert isinstance(evaluation, EvaluationEntry) and evaluation.paired == Paired("1-2-3", -2.5, [-4.0, -1.0], 3)
    assert evaluation.baselines["all_foreground"] == Scores(8.0, 20.0, [7.0, 9.0])
    assert isinstance(training, TrainingEntry) and training.converged is False and len(training.history) == 2
    assert isinstance(profile, ProfileEntry) and profile.profile["time_ms"] == 1.5
    assert record.checkpoints["3"].sha256 == "00" and record.sections == {"episode": {"query": "q.jpg"}}
    assert record.to_dict() == RECORD
    assert json.loads(json.dumps(record.to_dict())) == RECORD


def test_optional_keys_of_older_records_stay_absent():
    older = {k: v for k, v in EVALUATION.items() if k not in ("baselines", "paired", "episodes_digest")}
    entry = EvaluationEntry.from_dict(older)
    assert (entry.baselines, entry.paired, entry.episodes_digest) == (None, None, None)
    assert entry.to_dict() == older


def test_an_evaluation_records_whether_its_training_converged_and_none_stays_absent():
    entry = EvaluationEntry.from_dict({**EVALUATION, "converged": False})
    assert entry.converged is False and entry.to_dict() == {**EVALUATION, "converged": False}
    unknown = EvaluationEntry.from_dict(EVALUATION)  # an authors' checkpoint, or an older record
    assert unknown.converged is None and "converged" not in unknown.to_dict()


@pytest.mark.parametrize("value, marked", [(False, True), (True, False), (None, False), (float("nan"), False)])
def test_only_a_recorded_false_is_not_converged(value, marked):
    assert not_converged(value) is marked


def test_keys_of_a_newer_writer_are_kept():
    entry = TrainingEntry.from_dict({**TRAINING, "threads": 2})
    assert entry.extra == {"threads": 2} and entry.to_dict()["threads"] == 2


def test_a_missing_key_is_named():
    broken = {k: v for k, v in EVALUATION.items() if k != "miou"}
    with pytest.raises(RecordError, match=r"evaluations\[0\]: missing key\(s\) \['miou'\]"):
        RunRecord.from_dict({**RECORD, "evaluations": [broken]}, "x/metrics.json")


def test_numbers_from_numpy_and_tuples_are_written_plainly(tmp_path):
    np = pytest.importorskip("numpy")
    entry = TrainingEntry.from_dict({**TRAINING, "best_val_miou": np.float32(3.0), "model": {**MODEL, "pyramid": (3,)},
                                     "lr": float("nan")})
    data = entry.to_dict()
    assert data["best_val_miou"] == 3.0 and type(data["best_val_miou"]) is float
    assert data["model"]["pyramid"] == [3] and data["lr"] is None


def test_write_then_read(tmp_path):
    record = RunRecord.from_dict(copy.deepcopy(RECORD))
    path = write_record(tmp_path / "run", record)
    assert path == tmp_path / "run" / "metrics.json"
    assert json.loads((tmp_path / "run" / "params.json").read_text()) == {
        "notebook": RECORD["notebook"], "parameters": RECORD["parameters"], "seed": 0}
    assert read_record(tmp_path / "run") == record == read_record(path)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["metrics.json", "params.json"]  # no leftovers


def test_sections_may_not_shadow_the_record_keys(tmp_path):
    record = RunRecord(notebook="x.ipynb", parameters={}, provenance={}, sections={"seed": 1})
    with pytest.raises(RecordError, match="reserved"):
        write_record(tmp_path, record)
    assert not (tmp_path / "metrics.json").exists()


def test_read_records_skips_foreign_files_and_names_broken_ones(tmp_path):
    write_record(tmp_path / "b", RunRecord.from_dict(copy.deepcopy(RECORD)))
    write_record(tmp_path / "a" / "inner", RunRecord(notebook="01_train.ipynb", parameters={}, provenance={}))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "metrics.json").write_text(json.dumps({"miou": 1.0}))  # hsnetlib.evaluate's own file
    found = read_records(tmp_path)
    assert [run for run, _ in found] == ["a/inner", "b"]
    assert found[1][1].evaluations[0].label == "3"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "metrics.json").write_bytes(b"\x00\xff{")
    with pytest.raises(UnreadableFile, match=r"d/metrics.json: unreadable run record"):
        read_records(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_records(tmp_path / "missing")
    with pytest.raises(RecordError, match=r"c/metrics.json is not a suite run record"):
        read_record(tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="no run record"):
        read_record(tmp_path / "missing")
