"""esc50tf.io: files and folders written whole or not at all, JSON read one way."""

import json
import os

import pytest

from esc50tf import io
from esc50tf.errors import Esc50Error


def _siblings(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_json_round_trip_and_no_temporary_left(tmp_path):
    path = tmp_path / "report.json"
    io.write_json(path, {"accuracy": 0.9, "folds": [1, 2]})
    assert path.read_text() == json.dumps({"accuracy": 0.9, "folds": [1, 2]}, indent=2) + "\n"
    assert io.read_json(path) == {"accuracy": 0.9, "folds": [1, 2]}
    io.write_text(tmp_path / "notes.md", "# notes\n")
    assert (tmp_path / "notes.md").read_text() == "# notes\n"
    assert _siblings(tmp_path) == ["notes.md", "report.json"]


def test_read_json_missing_and_corrupt_files_name_the_file(tmp_path):
    missing = tmp_path / "gone.json"
    with pytest.raises(Esc50Error, match="gone.json: not found"):
        io.read_json(missing)
    assert io.read_json(missing, default={}) == {}
    assert io.read_json(missing, default=None) is None
    corrupt = tmp_path / "cut.json"
    corrupt.write_text('{"accuracy": 0.')
    for kwargs in ({}, {"default": {}}):  # a default covers a missing file only
        with pytest.raises(Esc50Error, match="cut.json: unreadable"):
            io.read_json(corrupt, **kwargs)
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(Esc50Error, match="folder.json: unreadable"):
        io.read_json(tmp_path / "folder.json", default={})


def test_a_failed_or_interrupted_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "config.json"
    io.write_json(path, {"old": True})
    with pytest.raises(ValueError):
        io.write_json(path, {"x": float("nan")}, allow_nan=False)
    with pytest.raises(KeyboardInterrupt):
        with io.atomic_path(path) as tmp:
            tmp.write_text('{"new": tr')  # half written when Ctrl-C arrives
            raise KeyboardInterrupt
    assert io.read_json(path) == {"old": True}
    assert _siblings(tmp_path) == ["config.json"]
    with pytest.raises(KeyboardInterrupt):
        with io.atomic_path(tmp_path / "new.json") as tmp:
            tmp.write_text("{")
            raise KeyboardInterrupt
    assert _siblings(tmp_path) == ["config.json"]


def test_atomic_paths_place_a_group_together_or_not_at_all(tmp_path, monkeypatch):
    real = os.replace
    calls = []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full")
        real(src, dst)

    monkeypatch.setattr(io.os, "replace", second_fails)
    with pytest.raises(OSError, match="disk full"):
        with io.atomic_paths(tmp_path / "w.npz", tmp_path / "w.json") as (a, b):
            a.write_bytes(b"weights")
            b.write_text("{}")
    assert _siblings(tmp_path) == []


def _fill(folder, text):
    (folder / "sub").mkdir()
    (folder / "sub" / "file.txt").write_text(text)


def test_atomic_dir_creates_and_replaces_only_with_overwrite(tmp_path):
    out = tmp_path / "deep" / "export"
    with io.atomic_dir(out) as staging:
        assert staging.parent == out.parent and staging.name.startswith(".export.staging-")
        assert not out.exists()
        _fill(staging, "v1")
    assert (out / "sub" / "file.txt").read_text() == "v1"
    with pytest.raises(Esc50Error, match="export: appeared while writing it; nothing was replaced"):
        with io.atomic_dir(out) as staging:
            _fill(staging, "v2")
    assert (out / "sub" / "file.txt").read_text() == "v1"
    with io.atomic_dir(out, overwrite=True) as staging:
        _fill(staging, "v2")
        assert (out / "sub" / "file.txt").read_text() == "v1"  # old kept until done
    assert (out / "sub" / "file.txt").read_text() == "v2"
    assert _siblings(out.parent) == ["export"]  # no staging, no old copy left


def test_atomic_dir_interrupted_leaves_the_old_folder(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    _fill(out, "mine")
    with pytest.raises(KeyboardInterrupt):
        with io.atomic_dir(out, overwrite=True) as staging:
            _fill(staging, "half")
            raise KeyboardInterrupt
    assert (out / "sub" / "file.txt").read_text() == "mine"
    assert _siblings(tmp_path) == ["data"]


def test_atomic_dir_fills_an_empty_folder_and_puts_the_old_back_if_the_swap_fails(
        tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    with io.atomic_dir(out) as staging:  # an empty folder holds nothing to lose
        _fill(staging, "v1")
    assert (out / "sub" / "file.txt").read_text() == "v1"
    real = os.replace

    def staging_in_fails(src, dst):
        if ".staging-" in str(src):
            raise OSError("no space")
        real(src, dst)

    monkeypatch.setattr(io.os, "replace", staging_in_fails)
    with pytest.raises(OSError, match="no space"):
        with io.atomic_dir(out, overwrite=True) as staging:
            _fill(staging, "v2")
    assert (out / "sub" / "file.txt").read_text() == "v1"
    assert _siblings(tmp_path) == ["run"]
