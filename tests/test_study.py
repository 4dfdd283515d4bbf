"""esc50tf study: a small grid on the tiny synthetic dataset, resumed, with a failing run."""

import json

import pandas as pd
import pytest

from esc50tf import study
from esc50tf.cli import main
from esc50tf.models import registry

# One epoch, a tiny front end, one test fold, no SavedModel export: seconds per run.
SMALL = ["--protocol", "test-fold", "1", "--epochs", "1", "--batch-size", "8", "--n-fft", "256",
         "--hop-length", "64", "--n-mels", "32", "--no-export", "--quiet", "--preset", "seed"]
OUTPUTS = ("comparison.md", "comparison.csv", "comparison.png", "per_class.csv", "per_class.png",
           "failures.json", "study.json")


def _study(tfr, out, *extra, models="gru,svm"):
    return main(["study", "--data", str(tfr), "--out", str(out), "--models", models, *SMALL,
                 *extra])


@pytest.fixture(scope="module")
def finished_study(tiny_tfrecords, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "s"
    assert _study(tiny_tfrecords, out) == 0
    return out


def test_study_trains_every_run_and_writes_the_comparison(finished_study):
    runs = sorted(p.name for p in (finished_study / "runs").iterdir())
    assert runs == ["gru-mel-seed", "svm-image-seed"]
    for run in runs:
        report = json.loads((finished_study / "runs" / run / "report.json").read_text())
        assert report["protocol"] == "test fold 1"
        assert sum(map(sum, report["confusion_matrix"])) == 8  # fold 1 of the tiny data
    for name in OUTPUTS:
        assert (finished_study / name).stat().st_size > 0, name
    assert json.loads((finished_study / "failures.json").read_text()) == []
    rows = pd.read_csv(finished_study / "comparison.csv")
    assert sorted(rows["run"]) == runs and rows["comparable"].all()
    assert list(rows["accuracy"]) == sorted(rows["accuracy"], reverse=True)
    per_class = pd.read_csv(finished_study / "per_class.csv", index_col="class")
    assert per_class.shape == (4, 2) and sorted(per_class.columns) == runs
    config = json.loads((finished_study / "runs" / "gru-mel-seed" / "config.json").read_text())
    assert config["train"]["epochs"] == 1 and config["features"]["n_mels"] == 32
    assert config["train"]["preset"] == "seed" and config["train"]["optimizer"] == "adam"


def test_rerun_skips_finished_runs_and_resumes_unfinished_ones(finished_study, tiny_tfrecords,
                                                               capsys):
    svm_report = finished_study / "runs" / "svm-image-seed" / "report.json"
    gru_report = finished_study / "runs" / "gru-mel-seed" / "report.json"
    svm_mtime = svm_report.stat().st_mtime_ns
    gru_model_mtime = (finished_study / "runs" / "gru-mel-seed" / "fold1" / "model.keras"
                       ).stat().st_mtime_ns
    gru_report.unlink()  # as if interrupted after its last split, before the report
    capsys.readouterr()
    assert _study(tiny_tfrecords, finished_study) == 0
    err = capsys.readouterr().err
    assert "gru-mel-seed: resuming" in err
    assert "fold1: already done" in err  # train's own resume: the split is not trained again
    assert "svm-image-seed: already done" in err
    assert svm_report.stat().st_mtime_ns == svm_mtime
    assert (finished_study / "runs" / "gru-mel-seed" / "fold1" / "model.keras"
            ).stat().st_mtime_ns == gru_model_mtime
    assert gru_report.is_file()


def test_other_settings_into_the_same_study_need_overwrite(finished_study, tiny_tfrecords,
                                                           capsys):
    assert main(["study", "--data", str(tiny_tfrecords), "--out", str(finished_study),
                 "--models", "svm", *SMALL, "--n-mels", "16"]) == 1
    err = capsys.readouterr().err
    assert "svm-image-seed: features.n_mels 32 -> 16" in err and "--overwrite" in err


def test_a_failing_run_is_recorded_and_the_study_goes_on(tiny_tfrecords, tmp_path, capsys):
    # A batch of 64 is more than fold 1's training side: the Keras model fails,
    # the scikit-learn model (no batches) still trains.
    out = tmp_path / "s"
    assert _study(tiny_tfrecords, out, "--batch-size", "64") == 1
    failures = json.loads((out / "failures.json").read_text())
    assert [f["name"] for f in failures] == ["gru-mel-seed"]
    assert "fewer than one global batch of 64" in failures[0]["error"]
    assert (out / "runs" / "svm-image-seed" / "report.json").is_file()
    assert not (out / "runs" / "gru-mel-seed" / "report.json").exists()
    md = (out / "comparison.md").read_text()
    assert "svm-image-seed" in md and "## Skipped runs" in md and "global batch of 64" in md
    err = capsys.readouterr().err
    assert "gru-mel-seed: FAILED" in err and "1 failed" in err


def test_plan_names_every_grid_point(tiny_tfrecords, tmp_path):
    runs = study.plan_study(tiny_tfrecords, tmp_path, models="gru,svm", preset="seed",
                            kinds=["mel", "mfcc"], grid=True)
    names = [r.name for r in runs]
    assert len(names) == 2 * 9 + 1 and len(set(names)) == len(names)
    assert "gru-mfcc-seed-sgd-lr0.01" in names and "gru-mel-seed-adagrad-lr0.0001" in names
    assert names[-1] == "svm-image-seed"  # classic models run once, with no grid point
    point = runs[names.index("gru-mfcc-seed-sgd-lr0.01")].config
    assert (point.train.optimizer, point.train.lr, point.features.kind) == ("sgd", 0.01, "mfcc")
    assert point.train.out == str(tmp_path / "runs" / "gru-mfcc-seed-sgd-lr0.01")
    plain = study.plan_study(tiny_tfrecords, tmp_path, models="rnn", preset="default")
    assert [r.name for r in plain] == ["lstm-mel-default", "bilstm-mel-default",
                                       "gru-mel-default", "bigru-mel-default"]
    assert {r.config.train.optimizer for r in plain} == {"adamw"}  # the preset's own


def test_every_model_resolves_under_both_presets(tiny_tfrecords, tmp_path):
    for preset in ("seed", "default"):
        runs = study.plan_study(tiny_tfrecords, tmp_path, models="all", preset=preset)
        # The pretrained models (PANNs 32 / 16 kHz, EfficientAT 32 kHz) are left out of
        # "all" on these 8 kHz clips.
        assert {r.model for r in runs} == {m for m in study.select_models("all")
                                            if not registry.get(m).pretrained}


@pytest.mark.parametrize("args, message", [
    (["--models", "gru,nope"], "unknown model 'nope'"),
    (["--models", "gru", "--features", "mel,wavelet"], "unknown feature kind 'wavelet'"),
    (["--models", "gru", "--protocol", "test-fold"], "--protocol 'test-fold' is not allowed"),
    (["--models", "gru", "--grid", "--lr", "0.1"], "cannot be combined with --grid"),
    (["--models", "gru", "--grid-optimizers", "adam,rmsprop"], "unknown grid optimizer(s) rmsprop"),
])
def test_bad_settings_stop_before_anything_runs(tiny_tfrecords, tmp_path, capsys, args, message):
    out = tmp_path / "s"
    assert main(["study", "--data", str(tiny_tfrecords), "--out", str(out), *args]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    assert main(["study", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "s"),
                 "--models", "svm"]) == 1
    assert "nope: no manifest.json" in capsys.readouterr().err


def test_estimate_uses_the_mean_time_of_finished_runs():
    def run(model):
        return study.StudyRun(f"{model}-x", model, "rnn", "mel", None, None, None)

    assert study.estimate_seconds([run("gru")], {}) is None
    durations = {"gru": [10.0, 20.0], "svm": [3.0]}
    # gru at its own mean (15 s); lstm has none finished: the mean of all (11 s).
    assert study.estimate_seconds([run("gru"), run("lstm")], durations) == pytest.approx(26.0)
    assert study.format_duration(3725) == "1 h 02 min"


def test_study_runs_are_configs(tiny_tfrecords, tmp_path):
    from esc50tf.errors import Esc50Error

    run = study.plan_study(str(tiny_tfrecords), str(tmp_path / "s"), models="gru,svm")[0]
    assert isinstance(run, study.Config) and run.keras
    again = study.StudyRun.from_dict(json.loads(json.dumps(run.to_dict())))
    assert again == run and again.config.model.name == "gru"
    with pytest.raises(Esc50Error, match="unknown setting.* preset"):
        study.StudyRun.from_dict({**run.to_dict(), "preset": "seed"})
