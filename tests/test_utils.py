"""Provenance: the code version a run records."""
from __future__ import annotations

import subprocess

from hsnetlib import __version__
from hsnetlib.utils import code_version


def git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_code_version_is_dirty_only_for_code_changes(tmp_path):
    for path in ("hsnetlib/model.py", "results/table1.md", "README.md"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("v1\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "first")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tmp_path, capture_output=True,
                          text=True, check=True).stdout.strip()
    assert code_version(tmp_path) == head
    (tmp_path / "results" / "table1.md").write_text("rewritten by a results run\n")  # an output
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "metrics.json").write_text("{}")
    assert code_version(tmp_path) == head
    (tmp_path / "hsnetlib" / "model.py").write_text("v2\n")  # the code that produced the numbers
    assert code_version(tmp_path) == f"{head}-dirty"


def test_code_version_outside_git_is_the_package_version(tmp_path):
    assert code_version(tmp_path / "not-a-checkout") == f"hsnetlib-{__version__}"


def test_atomic_write_replaces_a_file_whole_or_not_at_all(tmp_path, monkeypatch):
    import errno

    import pytest
    import torch

    import hsnetlib.utils as utils
    from hsnetlib.utils import atomic_save, atomic_write, load_checkpoint

    path = atomic_write(tmp_path / "sub" / "a.json", "{}\n")
    assert path.read_text() == "{}\n" and atomic_write(path, b"\x00\x01").read_bytes() == b"\x00\x01"
    atomic_save({"x": torch.arange(3)}, tmp_path / "c.pt")
    assert torch.equal(load_checkpoint(tmp_path / "c.pt")["x"], torch.arange(3))

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(utils.os, "fsync", full)
    with pytest.raises(OSError, match=f"no space left on device: {path}"):
        atomic_write(path, "new")
    assert path.read_bytes() == b"\x00\x01" and sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_an_unreadable_checkpoint_is_named(tmp_path):
    import pytest

    from hsnetlib.utils import load_checkpoint

    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        load_checkpoint(tmp_path / "nothere.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=f"cannot read checkpoint {tmp_path / 'bad.pt'}"):
        load_checkpoint(tmp_path / "bad.pt")
