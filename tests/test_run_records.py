"""What a run records: its data folder as an absolute path with the TFRecords' identity (a
moved folder is found by it), and the warm-up it used."""

import shutil
import sys

import pytest

from esc50tf.errors import Esc50Error


def test_run_records_absolute_data_path_and_capped_warmup(monkeypatch, tmp_path, capsys):
    from esc50tf import recipe
    from esc50tf.run_config import resolve_config, used_config

    monkeypatch.chdir(tmp_path)
    cfg = resolve_config("cnn_small", overrides={
        "train": {"data": "tfr", "epochs": 5, "warmup_epochs": 5.0, "schedule": "cosine"}})
    used = used_config(cfg, log=lambda m: print(m, file=sys.stderr))
    assert used.train.data == str(tmp_path / "tfr")
    assert used.train.warmup_epochs == 2.5 == recipe.warmup_epochs(cfg.train)
    assert used_config(used) == used  # idempotent: train() applies it to tune's best settings
    err = capsys.readouterr().err
    assert "warning: --warmup-epochs 5 is more than half of --epochs 5; warming up for 2.5" in err
    quiet = resolve_config("cnn_small", overrides={"train": {"data": "tfr", "epochs": 20}})
    assert used_config(quiet).train.warmup_epochs == quiet.train.warmup_epochs
    assert "warning" not in capsys.readouterr().err


def test_report_states_the_warmup_that_ran():
    from esc50tf.report import _recipe_lines

    report = {"config": {"train": {"schedule": "cosine", "warmup_epochs": 2.5}},
              "folds": [{"split": "fold1", "reported_model": "last", "test_crops": 1}]}
    assert "cosine after 2.5 warmup epochs" in _recipe_lines(report)[0]


def test_moved_tfrecords_are_found_by_their_identity(tiny_tfrecords, tmp_path):
    from esc50tf.data.dataset import TFRecordFolder, locate_tfrecords

    identity = TFRecordFolder(tiny_tfrecords).identity
    moved = tmp_path / "elsewhere" / "data"
    shutil.copytree(tiny_tfrecords, moved)
    assert TFRecordFolder(moved).identity == identity
    gone = str(tmp_path / "was-here")
    assert locate_tfrecords(gone) is None
    assert locate_tfrecords(str(tiny_tfrecords)) == str(tiny_tfrecords)
    assert locate_tfrecords(gone, str(moved), identity) == str(moved)
    assert locate_tfrecords(gone, str(tmp_path), identity) == str(moved)  # two levels down
    assert locate_tfrecords(gone, str(tmp_path / "nothing"), identity) is None
    with pytest.raises(Esc50Error, match="not the ones the run used"):
        locate_tfrecords(gone, str(moved), "0" * 16)


@pytest.mark.slow
def test_export_a_run_from_another_folder(demo_run, tmp_path, monkeypatch):
    """The run's config holds an absolute data path: export works from any folder."""
    import json

    from esc50tf import cli

    run, _, _ = demo_run
    assert json.loads((run / "config.json").read_text())["train"]["data"].startswith("/")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["export", str(run), "--out", "exp"]) == 0
