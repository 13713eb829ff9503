"""Durable writes: data reaches the disk before the rename that publishes it, and the rename
reaches the disk after it (issue 22). Recorded by wrapping os.fsync and os.replace, naming each
flushed descriptor by its /proc path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import convnet
from convnet import files
from convnet.files import replace_durably, write_atomic


@pytest.fixture
def disk_log(monkeypatch) -> list[tuple[str, str]]:
    """("fsync", path) and ("replace", destination) in the order convnet.files makes them."""
    log = []
    fsync, replace = os.fsync, os.replace

    def logged_fsync(fd):
        log.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def logged_replace(src, dst):
        replace(src, dst)
        log.append(("replace", str(Path(dst).resolve())))

    monkeypatch.setattr(files.os, "fsync", logged_fsync)
    monkeypatch.setattr(files.os, "replace", logged_replace)
    return log


def test_an_atomic_write_is_flushed_before_and_after_its_rename(tmp_path, disk_log):
    path = write_atomic(tmp_path / "metrics.json", "{}")
    folder, target = str(tmp_path.resolve()), str(path.resolve())
    assert [event for event, _ in disk_log] == ["fsync", "replace", "fsync"]
    flushed_file = disk_log[0][1]
    assert Path(flushed_file).parent == tmp_path.resolve() and flushed_file.endswith(".tmp")
    assert disk_log[1:] == [("replace", target), ("fsync", folder)]
    assert path.read_text() == "{}"


def test_a_folder_is_flushed_file_by_file_before_its_rename(tmp_path, disk_log):
    staging = tmp_path / ".export.tmp"
    (staging / "variables").mkdir(parents=True)
    (staging / "saved_model.pb").write_bytes(b"pb")
    (staging / "variables" / "v.data").write_bytes(b"v")
    replace_durably(staging, tmp_path / "export")
    replaced = disk_log.index(("replace", str((tmp_path / "export").resolve())))
    before = {Path(path).relative_to(staging.resolve()) for _, path in disk_log[:replaced]}
    assert before == {
        Path("."),
        Path("variables"),
        Path("saved_model.pb"),
        Path("variables/v.data"),
    }
    assert disk_log[replaced + 1 :] == [("fsync", str(tmp_path.resolve()))]


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path, monkeypatch):
    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", no_space)
    with pytest.raises(OSError):
        write_atomic(tmp_path / "config.yaml", "a: 1\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.trains
def test_training_flushes_the_model_before_publishing_it(tmp_path, tiny_npz, disk_log):
    out = tmp_path / "run"
    convnet.train(train=str(tiny_npz), epochs=1, batch_size=64, out=str(out), verbose=0)
    model = ("replace", str((out / "model.keras").resolve()))
    assert model in disk_log
    at = disk_log.index(model)
    assert disk_log[at - 1][0] == "fsync" and disk_log[at - 1][1].endswith("model.keras")
    assert disk_log[at + 1] == ("fsync", str(out.resolve()))
