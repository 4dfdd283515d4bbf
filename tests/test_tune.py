"""esc50tf tune on the tiny TFRecords: results, resume, no leakage, search spaces, failures."""

import csv
import json
import shutil
import sys
import types

import keras
import numpy as np
import pytest

from esc50tf import models
from esc50tf import train as train_mod
from esc50tf import tune as tune_mod
from esc50tf.cli import build_parser, main, train_config_from_args
from esc50tf.data import splits
from esc50tf.data.dataset import DatasetOptions, TFRecordFolder
from esc50tf.errors import Esc50Error
from esc50tf.models import build as model_build

SMALL = {"train": {"batch_size": 8}, "features": {"kind": "mel", "n_fft": 256, "hop_length": 64,
                                                    "n_mels": 32}}
SMALL_FLAGS = ["--batch-size", "8", "--features", "mel", "--n-fft", "256", "--hop-length", "64",
               "--n-mels", "32"]
SPACE = {
    "optimizer": {"type": "choice", "values": ["adam", "adamw"]},
    "lr": {"type": "float", "min": 1e-3, "max": 1e-2, "sampling": "log"},
    "dropout": {"type": "fixed", "value": 0.25},
    "noise_snr": {"type": "choice", "values": [None, [10, 30]]},
    "freq_mask": {"type": "choice", "values": [0, 4]},
    "time_mask": None,
}
TEST_FOLD = 3

# KerasTuner 1.4.8 calls threading.currentThread() (deprecated) in every oracle call.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras_tuner.*")


def _rows(out):
    with open(out / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def _config(tfr, out, **kw):
    kw.setdefault("models", ("gru",))
    kw.setdefault("epochs", 1)
    kw.setdefault("overrides", SMALL)
    kw.setdefault("retrain", False)
    return tune_mod.TuneConfig(data=str(tfr), out=str(out), **kw)


@pytest.fixture(scope="module")
def searched(tiny_tfrecords, tmp_path_factory):
    """One CLI search (2 trials, 1 epoch, then the retraining) with the datasets spied on."""
    root = tmp_path_factory.mktemp("tune")
    space = root / "space.json"
    space.write_text(json.dumps(SPACE))
    out = root / "out"
    events = []
    real_make = TFRecordFolder.dataset

    def spy(folder, selection, options=None, batch_fns=()):
        with_metadata = DatasetOptions.from_dict(options or {}).with_metadata
        events.append(("dataset", selection, with_metadata))
        return real_make(folder, selection, options, batch_fns)

    real_train = train_mod.train

    def train_spy(cfg, *args, **kwargs):
        events.append(("retrain", cfg))
        return real_train(cfg, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TFRecordFolder, "dataset", spy)
        mp.setattr(train_mod, "train", train_spy)
        code = main(["tune", "--model", "gru", "--data", str(tiny_tfrecords), "--out", str(out),
                     "--max-trials", "2", "--epochs", "1", "--test-fold", str(TEST_FOLD),
                     "--space", str(space), "--no-export", "--quiet", *SMALL_FLAGS])
    assert code == 0
    return out, events


def test_search_writes_every_result(searched, tiny_tfrecords):
    out, _ = searched
    rows = _rows(out)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"completed"}
    scores = [float(r["val_accuracy"]) for r in rows]
    assert scores == sorted(scores, reverse=True)  # best first
    assert all(int(r["epochs"]) == 1 and float(r["wall_seconds"]) > 0 for r in rows)
    md = (out / "trials.md").read_text()
    assert f"test fold {TEST_FOLD}" in md and md.count("| completed |") == 2
    assert (out / "objective.png").stat().st_size > 0
    report = json.loads((out / "best_run" / "report.json").read_text())
    assert report["folds"][0]["split"] == f"fold{TEST_FOLD}"
    assert report["folds"][0]["num_test_clips"] == 8
    assert "Best settings retrained" in md


def test_best_hyperparameters_repeat_as_train_config(searched):
    out, _ = searched
    best = json.loads((out / "best_hyperparameters.json").read_text())
    top = _rows(out)[0]
    assert best["train"]["optimizer"] == top["optimizer"]
    assert best["train"]["lr"] == pytest.approx(float(top["lr"]))
    assert best["train"]["protocol"] == "test-fold" and best["train"]["test_fold"] == TEST_FOLD
    # It is the retrained run's own config, and `train --config` reads it back unchanged.
    assert best == json.loads((out / "best_run" / "config.json").read_text())
    args = build_parser().parse_args(["train", "--config", str(out / "best_hyperparameters.json")])
    assert train_config_from_args(args).to_dict() == best


def test_space_file_and_flags_override_defaults(searched):
    out, _ = searched
    for row in _rows(out):
        assert row["optimizer"] in ("adam", "adamw")
        assert 1e-3 <= float(row["lr"]) <= 1e-2
        assert row["dropout"] == "0.25" and row["noise_snr"] in ("off", "10,30")
        assert row["freq_mask"] in ("0", "4")
        # time_mask was taken out of the search; batch size and front end were set by flags.
        assert "time_mask" not in row and "batch_size" not in row and "n_mels" not in row
    best = json.loads((out / "best_hyperparameters.json").read_text())
    assert best["model"]["dropout"] == 0.25
    assert best["train"]["batch_size"] == 8
    assert (best["features"]["kind"], best["features"]["n_mels"], best["features"]["n_fft"]) == (
        "mel", 32, 256)
    assert best["augment"]["time_mask_param"] == 40  # the preset's value, not searched


def test_test_fold_never_reaches_the_tuner(searched, tiny_tfrecords):
    out, events = searched
    index = splits.load_index(tiny_tfrecords)
    retrain = next(i for i, e in enumerate(events) if e[0] == "retrain")
    search = [e[1] for e in events[:retrain] if e[0] == "dataset"]
    assert len(search) >= 6  # statistics, training and validation sets of each trial
    test_src = set(index[index["fold"] == TEST_FOLD]["src_file"])
    for selection in search:
        assert TEST_FOLD not in selection.folds
        assert not set(selection.rows(index)["src_file"]) & test_src
    # Trials read exactly the training side and the validation set carved from it.
    split = splits.test_fold_split(index, TEST_FOLD)
    assert {s for s in search} == {split.train, split.val}
    # The spy does see the test fold: the retrained model's final prediction reads it.
    after = [e for e in events[retrain:] if e[0] == "dataset"]
    assert [e[1].folds for e in after if e[2]] == [(TEST_FOLD,)]


def test_search_runs_with_the_test_fold_scrambled(tiny_tfrecords, tmp_path):
    data = tmp_path / "tfr"
    shutil.copytree(tiny_tfrecords, data)
    rng = np.random.default_rng(0)
    for shard in data.glob(f"fold{TEST_FOLD}-*.tfrecord"):
        shard.write_bytes(rng.integers(0, 256, shard.stat().st_size, dtype=np.uint8).tobytes())
    with pytest.raises(Exception):  # the scrambled fold cannot be read ...
        list(TFRecordFolder(data).dataset(splits.Selection((TEST_FOLD,))))
    summary = tune_mod.tune(_config(data, tmp_path / "out", max_trials=1, test_fold=TEST_FOLD),
                            verbose=0)
    assert [r["status"] for r in summary["trials"]] == ["completed"]  # ... and was never read


def test_resume_after_interrupt_skips_finished_trials(tiny_tfrecords, tmp_path):
    class Interrupt(keras.callbacks.Callback):
        fits = []

        def on_train_begin(self, logs=None):
            Interrupt.fits.append(1)

        def on_train_batch_begin(self, batch, logs=None):
            if len(Interrupt.fits) == 2:  # Ctrl-C in the second trial
                raise KeyboardInterrupt

    class Count(keras.callbacks.Callback):
        fits = []

        def on_train_begin(self, logs=None):
            Count.fits.append(1)

    out = tmp_path / "out"
    over = {**SMALL, "train": {**SMALL["train"], "strategy": "one_device"}}
    with pytest.raises(KeyboardInterrupt):
        tune_mod.tune(_config(tiny_tfrecords, out, max_trials=2, overrides=over),
                      callbacks=[Interrupt()], verbose=0)
    before = {r["trial"]: r for r in _rows(out)}
    assert [before[t]["status"] for t in ("0", "1")] == ["completed", "interrupted"]
    # Started again with the same settings, the search resumes by itself (as train does).
    summary = tune_mod.tune(_config(tiny_tfrecords, out, max_trials=3, overrides=over),
                            callbacks=[Count()], verbose=0)
    assert len(Count.fits) == 2  # the interrupted trial again, and one new trial
    after = {r["trial"]: r for r in _rows(out)}
    assert sorted(after) == ["0", "1", "2"]
    assert {r["status"] for r in after.values()} == {"completed"}
    assert after["0"] == before["0"] | {"rank": after["0"]["rank"]}  # not run again
    hp = [k for k in before["1"] if k not in ("rank", "status", "val_accuracy", "epochs",
                                               "wall_seconds", "error")]
    assert {k: after["1"][k] for k in hp} == {k: before["1"][k] for k in hp}  # same values
    assert summary["best_trial"] in after


def test_failed_trial_is_recorded_and_the_search_goes_on(tiny_tfrecords, tmp_path, monkeypatch,
                                                         capsys):
    real = model_build.build_model
    calls = []

    def first_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(model_build, "build_model", first_fails)
    out = tmp_path / "out"
    summary = tune_mod.tune(_config(tiny_tfrecords, out, max_trials=2), verbose=0)
    rows = {r["trial"]: r for r in _rows(out)}
    assert rows["0"]["status"] == "failed" and "out of memory" in rows["0"]["error"]
    assert rows["1"]["status"] == "completed" and summary["best_trial"] == "1"
    assert _rows(out)[-1]["trial"] == "0"  # failed trials sort last
    progress = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[trial ")]
    assert len(progress) == 2  # one line per trial
    assert progress[0].startswith("[trial 0, 1/2] FAILED: MemoryError: out of memory")
    assert progress[1].startswith("[trial 1, 2/2] val_accuracy ")
    meta = json.loads((out / "search" / "trial_0" / "esc50tf.json").read_text())
    assert "Traceback" in meta["traceback"]
    assert json.loads((out / "best_hyperparameters.json").read_text())["model"]["name"] == "gru"


def test_consecutive_failures_stop_the_search_under_mixed_precision(tiny_tfrecords, tmp_path,
                                                                    monkeypatch):
    policies = []

    def always_fails(*args, **kwargs):
        policies.append(keras.mixed_precision.global_policy().name)
        raise RuntimeError("boom")

    monkeypatch.setattr(model_build, "build_model", always_fails)
    over = {**SMALL, "train": {**SMALL["train"], "mixed_precision": "bf16"}}
    out = tmp_path / "out"
    with pytest.raises(Esc50Error, match="2 trials in a row failed.*boom"):
        tune_mod.tune(_config(tiny_tfrecords, out, max_trials=4, max_failures=2,
                              overrides=over), verbose=0)
    # Every trial is built under the policy (KerasTuner's clear_session resets it) ...
    assert policies == ["mixed_bfloat16", "mixed_bfloat16"]
    assert keras.mixed_precision.global_policy().name == "float32"  # ... restored after.
    assert [r["status"] for r in _rows(out)] == ["failed", "failed"]


def test_space_resolution():
    space = tune_mod.resolve_space({"lr": {"type": "fixed", "value": 3e-4}, "dropout": None,
                                    "n_mels": {"type": "int", "min": 32, "max": 96, "step": 32}},
                                   fixed=tune_mod.fixed_by_flags({"train": {"batch_size": 16}}))
    assert space["lr"] == {"type": "fixed", "value": 3e-4}
    assert "dropout" not in space and "batch_size" not in space
    assert space["n_mels"]["type"] == "int"
    assert space["optimizer"] == tune_mod.DEFAULT_SPACE["optimizer"]
    assert tune_mod.fixed_by_flags({"augment": {"mix": "none"}}) == {"mixup_alpha": 0.0}
    assert tune_mod.resolve_models(["auto"]) == tuple(s.name for s in models.specs() if s.keras)


def test_space_values_map_to_run_configs():
    base = {"train": {"data": "d", "protocol": "test-fold", "test_fold": 1}}
    space = tune_mod.SearchSpace(tune_mod.resolve_space(), ("hybrid", "cnn_small"), base)
    cfg = space.run_config({"model": "hybrid", "optimizer": "sgd", "lr": 0.003, "momentum": 0.95,
                            "noise_snr": "10,30", "mixup_alpha": 0.0, "rnn_units": 32,
                            "attention_units": 128, "freq_mask": 8}, epochs=5)
    assert (cfg.model.name, cfg.train.optimizer, cfg.train.momentum, cfg.train.epochs) == (
        "hybrid", "sgd", 0.95, 5)
    assert cfg.augment.noise_snr_db == (10.0, 30.0) and cfg.augment.mix == "none"
    assert (cfg.model.rnn_units, cfg.model.attention_units) == (32, 128)
    assert cfg.augment.freq_mask_param == 8
    # Model-specific settings are conditional on the model choice, the rest always searched.
    assert space.condition("rnn_units") == ("model", ["hybrid"])
    assert space.condition("dense_units") is False  # neither candidate has a dense CNN head
    assert space.condition("lr") is None
    assert "freeze_backbone" not in space.space  # no --weights


@pytest.mark.parametrize("mels, kept", [
    ({"features": {"n_mels": 32}}, [20]),  # --n-mels 32: MFCC 40 can never be built
    ({"features": {"n_mels": 16}}, None),  # fewer bands than any choice: fixed at 16
    ({}, [20, 40]),
])
def test_mfcc_choices_never_outnumber_mel_bands(mels, kept):
    base = {"train": {"data": "d", "protocol": "test-fold", "test_fold": 1}, **mels}
    fixed = tune_mod.fixed_by_flags(mels)
    space = tune_mod.SearchSpace(tune_mod.resolve_space(fixed=fixed), ("gru",), base)
    entry = space.space["n_mfcc"]
    if kept is None:
        assert entry == {"type": "fixed", "value": 16}
    else:
        assert entry["values"] == kept
    n_mels = mels.get("features", {}).get("n_mels", space.base_config.features.n_mels)
    for n_mfcc in (kept or [16]):  # every value the search can draw builds a valid config
        cfg = space.run_config({"features": "mfcc", "n_mfcc": n_mfcc}, epochs=1)
        assert cfg.features.n_mfcc <= cfg.features.n_mels == n_mels


def test_hop_and_mel_band_choices_fit_the_smallest_fft():
    base = {"train": {"data": "d", "protocol": "test-fold", "test_fold": 1}}
    user = {"n_fft": {"type": "choice", "values": [128, 256]},  # 65 bins at 128
            "hop_length": {"type": "choice", "values": [64, 256, 512]}}
    space = tune_mod.SearchSpace(tune_mod.resolve_space(user), ("cnn_small",), base)
    assert space.space["hop_length"]["values"] == [64]
    assert space.space["n_mels"]["values"] == [64]
    assert space.space["n_mfcc"]["values"] == [20, 40]
    cfg = space.run_config({"n_fft": 128, "hop_length": 64, "n_mels": 64, "features": "mfcc",
                            "n_mfcc": 40}, epochs=1)
    assert (cfg.features.n_fft, cfg.features.n_mels, cfg.features.n_mfcc) == (128, 64, 40)


def test_yaml_space_file(tmp_path, monkeypatch):
    path = tmp_path / "space.yaml"
    path.write_text('{"lr": {"type": "fixed", "value": 0.001}}')
    monkeypatch.setitem(sys.modules, "yaml", None)  # PyYAML not installed
    with pytest.raises(Esc50Error, match="PyYAML"):
        tune_mod.read_space_file(path)
    fake = types.SimpleNamespace(safe_load=json.loads, YAMLError=ValueError)
    monkeypatch.setitem(sys.modules, "yaml", fake)  # YAML is a superset of this JSON
    assert tune_mod.read_space_file(path) == {"lr": {"type": "fixed", "value": 0.001}}


@pytest.mark.parametrize("space, message", [
    ({"learning_rate": {"type": "fixed", "value": 0.1}}, "unknown setting 'learning_rate'"),
    ({"lr": {"type": "float", "min": 0.1, "max": 0.01}}, "'lr': min 0.1 is larger than max 0.01"),
    ({"weight_decay": {"type": "float", "min": 0, "max": 0.01, "sampling": "log"}},
     "'weight_decay': log sampling needs min > 0"),
    ({"optimizer": {"type": "float", "min": 1, "max": 2}},
     "'optimizer': type 'float' is not allowed"),
    ({"optimizer": {"type": "choice", "values": ["adam", "rmsprop"]}},
     "'optimizer': value 'rmsprop' is not allowed; allowed: adam, adamw, sgd, adagrad"),
    ({"batch_size": {"type": "choice", "values": [8, 16.5]}}, "'batch_size': value 16.5"),
    ({"dropout": {"type": "float", "min": 0.1, "max": 0.5, "scale": "log"}},
     "'dropout': unknown field(s) scale"),
    ({"n_mels": 64}, "'n_mels': expected an object with a \"type\""),
    ({"model": {"type": "fixed", "value": "gru"}}, "choose the models with --model"),
    ("not json", "not valid JSON"),
])
def test_bad_space_file_is_a_clear_error(space, message, tiny_tfrecords, tmp_path, capsys):
    path = tmp_path / "space.json"
    path.write_text(space if isinstance(space, str) else json.dumps(space))
    code = main(["tune", "--model", "gru", "--data", str(tiny_tfrecords), "--out",
                 str(tmp_path / "out"), "--space", str(path)])
    err = capsys.readouterr().err
    assert code == 1 and message in err, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("model, message", [
    ("resnet9", "unknown model 'resnet9'; valid models:"),
    ("gru,svm", "'svm' is a scikit-learn model"),
    ("auto,gru", "--model auto searches every Keras model"),
])
def test_bad_model_is_a_clear_error(model, message, tiny_tfrecords, tmp_path, capsys):
    code = main(["tune", "--model", model, "--data", str(tiny_tfrecords), "--out",
                 str(tmp_path / "out")])
    assert code == 1 and message in capsys.readouterr().err


def test_existing_search_with_other_settings_needs_overwrite(searched, tiny_tfrecords, capsys):
    out, _ = searched
    argv = ["tune", "--model", "gru", "--data", str(tiny_tfrecords), "--out", str(out),
            "--test-fold", str(TEST_FOLD), *SMALL_FLAGS]
    before = sorted(p.name for p in out.rglob("*"))
    for extra in ([], ["--resume"]):  # --resume, no longer needed, is still accepted
        assert main(argv + ["--epochs", "3", *extra]) == 1
        err = capsys.readouterr().err
        assert "holds a search with other settings" in err and "epochs 1 -> 3" in err
        assert "--overwrite" in err
    assert sorted(p.name for p in out.rglob("*")) == before  # nothing touched


def test_split_holds_out_a_ratio_split_instead_of_a_fold(tiny_tfrecords, tmp_path, monkeypatch):
    """--split: the search reads only the ratio split's training side; the retrain tests on
    its test side."""
    index = splits.load_index(tiny_tfrecords)
    held = splits.ratio_split(index, 0.8, 0.1, 0).test.filenames
    seen = []
    real_make = TFRecordFolder.dataset

    def spy(folder, selection, options=None, batch_fns=()):
        seen.append(selection)
        return real_make(folder, selection, options, batch_fns)

    monkeypatch.setattr(TFRecordFolder, "dataset", spy)
    out = tmp_path / "out"
    result = tune_mod.tune(_config(tiny_tfrecords, out, split_ratio=0.8, max_trials=1,
                                   retrain=True, final_epochs=1), verbose=0)
    assert result["best_config"]["train"]["protocol"] == "split"
    assert result["best_config"]["train"]["split_ratio"] == 0.8
    search = seen[:-1]  # the last dataset is the retraining's test side
    assert search and all(s.filenames and not (s.filenames & held) for s in search)
    assert seen[-1].filenames == held and result["report"]["folds"][0]["split"] == "ratio0.8"
    assert "the ratio split's test side was not read" in (out / "trials.md").read_text()
    with pytest.raises(Esc50Error, match="--split"):
        tune_mod.TuneConfig(data="d", out="o", split_ratio=0.8, test_fold=1)


def test_tune_config_is_a_config():
    cfg = tune_mod.TuneConfig.from_dict({"data": "d", "out": "o", "models": ["gru"]})
    assert cfg.replace(epochs=3).to_dict()["epochs"] == 3 and cfg.to_dict()["models"] == ["gru"]
    with pytest.raises(Esc50Error, match="unknown setting.* trials; allowed: data, out"):
        tune_mod.TuneConfig.from_dict({"data": "d", "out": "o", "trials": 3})
    with pytest.raises(Esc50Error, match="tune.tuner='grid' is not allowed; allowed: random"):
        tune_mod.TuneConfig(data="d", out="o", tuner="grid")
