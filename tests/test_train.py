"""esc50tf train / evaluate / predict on small synthetic data."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import soundfile as sf

from esc50tf.cli import main
from esc50tf.data.dataset import DatasetOptions, TFRecordFolder
from esc50tf.report import fold_metrics
from esc50tf.run_config import resolve_config
from esc50tf.train import train

SYNTH_SEED = int(os.environ.get("ESC50TF_TEST_SYNTH_SEED", "1"))
SMALL_FRONT = ["--n-fft", "256", "--hop-length", "64", "--n-mels", "32"]


def _cfg(tfr, out, model="cnn_small", epochs=2, augment=None, **train_over):
    over = {"train": {"data": str(tfr), "out": str(out), "protocol": "test-fold", "test_fold": 1,
                      "epochs": epochs, "batch_size": 8, **train_over},
            "features": {"n_fft": 256, "hop_length": 64, "n_mels": 32},
            "augment": augment or {}}
    return resolve_config(model, overrides=over)


@pytest.fixture(scope="module")
def trained_run(tiny_tfrecords, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "cnn"
    assert main(["train", "--model", "cnn_small", "--data", str(tiny_tfrecords), "--out", str(out),
                 "--test-fold", "1", "--epochs", "2", "--batch-size", "8", "--quiet",
                 *SMALL_FRONT]) == 0
    return out


def test_metrics_equal_sklearn():
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    y_true = np.array([0, 0, 1, 1, 2, 2, 2, 1])
    y_pred = np.array([0, 1, 1, 1, 2, 0, 2, 2])
    probs = np.eye(3)[y_pred] * 0.8 + 0.2 / 3
    m = fold_metrics(y_true, probs, ["a", "b", "c"])
    assert m["accuracy"] == accuracy_score(y_true, y_pred) == 5 / 8
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m["weighted_f1"] == pytest.approx(f1_score(y_true, y_pred, average="weighted"))
    assert m["confusion_matrix"] == confusion_matrix(y_true, y_pred).tolist()
    assert m["per_class_accuracy"] == {"a": 0.5, "b": pytest.approx(2 / 3), "c": pytest.approx(2 / 3)}


def test_run_writes_the_full_report(trained_run):
    report = json.loads((trained_run / "report.json").read_text())
    for key in ("accuracy", "accuracy_std", "macro_f1", "weighted_f1", "per_class_accuracy",
                "confusion_matrix", "classes", "folds", "wall_time_s", "config"):
        assert key in report
    assert len(report["classes"]) == 4 and len(report["confusion_matrix"]) == 4
    assert sum(map(sum, report["confusion_matrix"])) == 8  # fold 1 of the tiny data
    assert set(report["per_class_accuracy"]) == set(report["classes"])
    assert report["folds"][0]["split"] == "fold1" and report["folds"][0]["epochs_run"] == 2
    for name in ("report.md", "confusion_matrix.png", "curves.png", "per_class_accuracy.png",
                 "config.json", "fold1/model.keras", "fold1/history.csv",
                 "fold1/saved_model/saved_model.pb", "fold1/predictions.npz"):
        assert (trained_run / name).stat().st_size > 0, name
    assert "cnn_small" in (trained_run / "report.md").read_text()


def test_evaluate_recomputes_the_same_report(trained_run, capsys):
    before = json.loads((trained_run / "report.json").read_text())
    assert main(["evaluate", str(trained_run)]) == 0
    after = json.loads((trained_run / "report.json").read_text())
    assert after["accuracy"] == pytest.approx(before["accuracy"])
    assert after["confusion_matrix"] == before["confusion_matrix"]


def test_config_repeats_a_run(trained_run, tmp_path):
    from esc50tf.cli import build_parser, train_config_from_args

    args = build_parser().parse_args(["train", "--config", str(trained_run / "config.json"),
                                      "--out", str(tmp_path / "again")])
    cfg = train_config_from_args(args)
    saved = json.loads((trained_run / "config.json").read_text())
    again = cfg.to_dict()
    assert again["train"]["out"] == str(tmp_path / "again")
    again["train"]["out"] = saved["train"]["out"]
    assert again == saved


def test_other_config_into_same_folder_needs_overwrite(trained_run, tiny_tfrecords, capsys):
    assert main(["train", "--model", "cnn_small", "--data", str(tiny_tfrecords), "--out",
                 str(trained_run), "--test-fold", "1", "--epochs", "3", "--quiet",
                 *SMALL_FRONT]) == 1
    assert "epochs 2 -> 3" in capsys.readouterr().err


def test_finished_run_is_skipped(trained_run, tiny_tfrecords, capsys):
    assert main(["train", "--model", "cnn_small", "--data", str(tiny_tfrecords), "--out",
                 str(trained_run), "--test-fold", "1", "--epochs", "2", "--batch-size", "8",
                 "--quiet", *SMALL_FRONT]) == 0
    assert "already done" in capsys.readouterr().err


def test_predict_any_rate_length_and_channels(trained_run, tmp_path, capsys):
    rng = np.random.default_rng(0)
    stereo_long = tmp_path / "stereo_22k_2p5s.wav"
    sf.write(stereo_long, rng.uniform(-0.3, 0.3, (55125, 2)), 22050)
    short = tmp_path / "short.flac"
    sf.write(short, rng.uniform(-0.3, 0.3, 2400), 8000, format="FLAC")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all" * 10)
    code = main(["predict", str(trained_run), str(stereo_long), str(bad), str(short),
                 "--top-k", "3", "--json"])
    assert code == 1  # the bad file makes the exit non-zero ...
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert [r["file"] for r in out["results"]] == [str(stereo_long), str(short)]  # ... the rest ran
    assert out["errors"][0]["file"] == str(bad) and "bad.wav" in captured.err
    classes = json.loads((trained_run / "classes.json").read_text())
    for r in out["results"]:
        probs = [t["probability"] for t in r["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)
        assert all(t["class"] in {c["category"] for c in classes} for t in r["top"])
    assert out["results"][0]["seconds"] == pytest.approx(2.5)


def test_predict_windows_long_clips(trained_run):
    from esc50tf.predict import load_predictor

    pred = load_predictor(trained_run)
    n = pred.num_samples
    assert pred.windows(np.zeros(n // 2)).shape == (1, n)
    w = pred.windows(np.arange(int(2.2 * n), dtype=np.float32))
    assert w.shape[1] == n and w[0, 0] == 0 and w[-1, -1] == int(2.2 * n) - 1
    assert w.shape[0] == 4  # starts 0, n/2, n and the flush end


@pytest.mark.slow
def test_resume_continues_from_last_epoch(tiny_tfrecords, tmp_path):
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    class Record(keras.callbacks.Callback):
        epochs = []

        def on_epoch_begin(self, epoch, logs=None):
            self.epochs.append(epoch)

    cfg = _cfg(tiny_tfrecords, tmp_path / "run", epochs=4)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[Interrupt()], verbose=0)
    assert not (tmp_path / "run" / "fold1" / "result.json").exists()
    train(cfg, callbacks=[Record()], verbose=0)
    assert Record.epochs == [2, 3]  # epochs 0 and 1 were not run again
    rows = (tmp_path / "run" / "fold1" / "history.csv").read_text().strip().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [0, 1, 2, 3]


@pytest.mark.slow
def test_test_fold_is_never_read_while_training(tiny_tfrecords, tmp_path, monkeypatch):
    events = []
    real = TFRecordFolder.dataset

    def spy(folder, selection, options=None, batch_fns=()):
        with_metadata = DatasetOptions.from_dict(options or {}).with_metadata
        events.append(("dataset", tuple(selection.folds), with_metadata))
        return real(folder, selection, options, batch_fns)

    class Mark(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            events.append(("fit-done",))

    monkeypatch.setattr(TFRecordFolder, "dataset", spy)
    train(_cfg(tiny_tfrecords, tmp_path / "run", test_fold=3), callbacks=[Mark()], verbose=0)
    done = events.index(("fit-done",))
    before = [e for e in events[:done] if e[0] == "dataset"]
    assert before and all(3 not in folds for _, folds, _ in before)
    after = [e for e in events[done:] if e[0] == "dataset"]
    assert after == [("dataset", (3,), True)]


@pytest.mark.slow
def test_classic_model_run(tiny_tfrecords, tmp_path):
    out = tmp_path / "svm"
    assert main(["train", "--model", "svm", "--data", str(tiny_tfrecords), "--out", str(out),
                 "--cv", "--quiet", *SMALL_FRONT]) == 0
    report = json.loads((out / "report.json").read_text())
    assert len(report["folds"]) == 5
    assert sum(f["num_test_clips"] for f in report["folds"]) == 40
    assert (out / "confusion_matrix.png").stat().st_size > 0
    assert main(["evaluate", str(out)]) == 0


@pytest.mark.slow
def test_small_model_learns_synthetic_data(demo_run):
    """cnn_small with the demo's front end and recipe reaches >= 90% on a held-out fold
    (conftest.TRAINED: 10 classes x 30 clips of 1 s; the fold holds 60 clips)."""
    from esc50tf.presets import DEMO_FEATURES, DEMO_MODEL, DEMO_TRAIN

    run, _, _ = demo_run
    report = json.loads((run / "report.json").read_text())
    cfg = report["config"]
    assert cfg["model"]["name"] == DEMO_MODEL and cfg["augment"]["mix"] == "none"
    assert {k: cfg["features"][k] for k in DEMO_FEATURES} == DEMO_FEATURES
    assert {k: cfg["train"][k] for k in DEMO_TRAIN if k != "epochs"} == {
        k: v for k, v in DEMO_TRAIN.items() if k != "epochs"}
    assert report["folds"][0]["num_test_clips"] == 60 and len(report["classes"]) == 10
    assert report["accuracy"] >= 0.9, report["per_class_accuracy"]


def test_deterministic_training_switches_op_determinism_off_again(tiny_tfrecords, tmp_path):
    from tensorflow.python.framework import config as tf_config

    report = train(_cfg(tiny_tfrecords, tmp_path / "run", model="gru", epochs=1, export=False,
                        deterministic=True), verbose=0)
    # Op determinism is process-wide (and makes Keras drop jit_compile): switched off again.
    assert not tf_config.is_op_determinism_enabled()
    assert report["folds"][0]["epochs_run"] == 1


def test_evaluation_batches_are_never_augmented(tiny_tfrecords, tmp_path):
    """Mixup reaches training labels only; validation waveforms are the stored clips."""
    from esc50tf.data import splits
    from esc50tf.tasks import get_task

    cfg = _cfg(tiny_tfrecords, tmp_path / "run", augment={"mix": "mixup", "mixup_alpha": 1.0})
    folder = TFRecordFolder(tiny_tfrecords)
    split = splits.test_fold_split(folder.index, 1)
    train_ds, val_ds = get_task(cfg.model.name).build_inputs(cfg, split, folder, one_hot=True)
    soft = np.concatenate([y.numpy() for _, y in train_ds])
    assert np.any((soft > 0.01) & (soft < 0.99))  # training labels are mixed
    hard = np.concatenate([y.numpy() for _, y in val_ds])
    assert set(np.unique(hard)) <= {0.0, 1.0}
    plain = folder.dataset(split.val, DatasetOptions(batch_size=8))
    for (a, _), (b, _) in zip(val_ds, plain):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Augmentation layers inside the model are the identity at inference.
    from esc50tf.models.build import build_model

    model = build_model(cfg.model, cfg.features, 4, 8000, cfg.augment, seed=0)
    assert model.get_layer("waveform_augmenter") and model.get_layer("spectrogram_augmenter")
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 8000)).astype("float32")
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))


def test_saved_model_export_serves_waveforms(trained_run):
    import tensorflow as tf

    model = keras.models.load_model(trained_run / "fold1" / "model.keras")
    served = tf.saved_model.load(str(trained_run / "fold1" / "saved_model"))
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (3, 8000)).astype("float32")
    np.testing.assert_allclose(served.serve(x).numpy(), model(x, training=False).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_features_on_host_match_device(tiny_tfrecords, tmp_path):
    from esc50tf.data import splits
    from esc50tf.frontend import make_host_featurizer
    from esc50tf.models.build import build_model
    from esc50tf.tasks import get_task
    from esc50tf.tasks.keras_task import classifier_part

    cfg = _cfg(tiny_tfrecords, tmp_path / "run", augment={})
    folder = TFRecordFolder(tiny_tfrecords)
    split = splits.test_fold_split(folder.index, 1)
    task = get_task(cfg.model.name)
    _, val_host = task.build_inputs(cfg, split, folder,
                                    host_featurize=make_host_featurizer(cfg.features))
    _, val_device = task.build_inputs(cfg, split, folder)
    model = build_model(cfg.model, cfg.features, 4, 8000, seed=0)
    head = classifier_part(model)
    for (f, _), (w, _) in zip(val_host, val_device):
        np.testing.assert_allclose(head(f, training=False), model(w, training=False),
                                   rtol=1e-4, atol=1e-5)


def test_local_backbone_weights_are_loaded(tmp_path):
    from esc50tf.frontend import FeatureConfig
    from esc50tf.models import ModelConfig
    from esc50tf.models.build import build_model

    source = keras.applications.VGG16(include_top=False, weights=None, input_shape=(64, 64, 3))
    path = tmp_path / "vgg16_notop.weights.h5"
    source.save_weights(path)
    cfg = ModelConfig(name="vgg16", weights=str(path), image_size=64, dense_units=16,
                      freeze_backbone=True)
    model = build_model(cfg, FeatureConfig(sample_rate=8000, n_fft=256, hop_length=64,
                                           n_mels=32), 3, 8000)
    backbone = model.get_layer("vgg16")
    assert not backbone.trainable
    for a, b in zip(source.get_weights(), backbone.get_weights()):
        np.testing.assert_array_equal(a, b)


_DETERMINISM_SCRIPT = """
import hashlib, sys, warnings
import numpy as np
warnings.simplefilter("error", RuntimeWarning)
import keras
import tensorflow as tf
from esc50tf.models.build import build_model
from esc50tf.distribute import enable_determinism
from esc50tf.run_config import resolve_config
if sys.argv[1] == "late":
    tf.constant(1.0) + 1.0  # TensorFlow's runtime starts here, with its default pools
enable_determinism()
cfg = resolve_config("cnn_small", overrides={"features": {"n_fft": 1024, "hop_length": 256,
                                                          "n_mels": 64}})
model = build_model(cfg.model, cfg.features, 10, 80000, cfg.augment, seed=0)
x = tf.random.stateless_normal([64, 80000], seed=(1, 2)) * 0.1
y = tf.constant(np.arange(64) % 10)
model.compile(keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
print(hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.get_weights())).hexdigest())
"""


def _determinism_run(when):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_NUM_INTEROP_THREADS"}
    return subprocess.run([sys.executable, "-c", _DETERMINISM_SCRIPT, when], env=env,
                          capture_output=True, text=True)


@pytest.mark.slow
def test_deterministic_reruns_are_bit_identical():
    # Op determinism alone left these weights different in the last digits from
    # run to run (Keras' compiled step with several inter-op threads);
    # enable_determinism also makes the inter-op pool one thread.
    runs = [_determinism_run("early") for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    assert runs[0].stdout.split()[-1] == runs[1].stdout.split()[-1]


def test_determinism_warns_when_tensorflow_already_runs():
    run = _determinism_run("late")
    assert run.returncode != 0
    assert "TF_NUM_INTEROP_THREADS=1" in run.stderr


@pytest.mark.parametrize("flags,message", [
    (["--model", "gru", "--batch-size", "100000"], "fewer than one global batch of 100000"),
    (["--model", "vgg16", "--weights", "no/such/weights.h5"], "no/such/weights.h5"),
    (["--model", "gru", "--weights", "w.h5"], "models that take it: vgg16, resnet50, densenet121"),
    (["--model", "gru", "--hop-length", "5000", "--n-fft", "1024"], "hop_length=5000"),
])
def test_failed_start_leaves_no_folder_and_the_fix_runs(tiny_tfrecords, tmp_path, capsys, flags,
                                                        message):
    out = tmp_path / "a" / "b" / "run"
    base = ["train", "--data", str(tiny_tfrecords), "--out", str(out), "--test-fold", "1",
            "--epochs", "1", "--quiet"]
    assert main([*base, *flags]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # nor the nested parents it would have made


def test_failure_after_the_folder_exists_removes_it(tiny_tfrecords, tmp_path, monkeypatch):
    import esc50tf.models.build as build

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure while building the model")

    monkeypatch.setattr(build, "build_model", broken)
    out = tmp_path / "a" / "run"
    with pytest.raises(RuntimeError):
        train(_cfg(tiny_tfrecords, out, model="gru", epochs=1))
    assert not (tmp_path / "a").exists()
    monkeypatch.undo()
    report = train(_cfg(tiny_tfrecords, out, model="gru", epochs=1), verbose=0)  # the fix runs
    assert report["folds"][0]["epochs_run"] == 1


def test_uneven_folds_refuse_with_the_split_advice_not_a_smaller_batch(tmp_path, capsys):
    from test_cli import _uneven_tfrecords

    tfr = _uneven_tfrecords(tmp_path)
    out = tmp_path / "run"
    assert main(["train", "--model", "gru", "--data", str(tfr), "--out", str(out),
                 "--test-fold", "4", "--batch-size", "8", "--epochs", "1", "--val-fraction", "0",
                 "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "warning: fold(s) 1 (1), 2 (1), 3 (1), 5 (1)" in err
    assert "4 training clips, fewer than one global batch of 8; use --split 0.8" in err
    assert "lower --batch-size" not in err
    assert not out.exists()


@pytest.mark.slow
def test_predict_with_a_scikit_learn_run(tiny_tfrecords, tmp_path, capsys):
    from esc50tf.data.synth import synthesize

    out = tmp_path / "knn"
    assert main(["train", "--model", "knn", "--data", str(tiny_tfrecords), "--out", str(out),
                 "--test-fold", "1", "--quiet", *SMALL_FRONT]) == 0
    report = json.loads((out / "report.json").read_text())
    assert not (out / "curves.png").exists()  # no epochs: no empty placeholder plot
    assert "| fold1 |" in (out / "report.md").read_text() and "None" not in (
        out / "report.md").read_text()
    fresh = tmp_path / "fresh"  # clips the run never saw, one per class
    synthesize(fresh, num_classes=4, clips_per_class=1, num_folds=1, sample_rate=8000, clip_seconds=1.0,
               seed=7, progress=False)
    clips = sorted((fresh / "audio").iterdir())
    capsys.readouterr()
    assert main(["predict", str(out), *map(str, clips), "--json", "--top-k", "4"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["file"] for r in results] == [str(c) for c in clips]
    for r in results:
        probs = [t["probability"] for t in r["top"]]
        assert sorted(t["class"] for t in r["top"]) == sorted(report["classes"])
        assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-5
    split = out / "fold1"
    assert (split / "model.skops").is_file() and not (split / "model.pkl").exists()

    # A run of an older esc50tf (model.pkl) still predicts, with a warning saying how to
    # re-save it, and `evaluate` re-saves it as model.skops.
    import pickle

    from esc50tf.models import classic

    estimator = classic.load_estimator(split / "model.skops")
    (split / "model.pkl").write_bytes(pickle.dumps(estimator))
    (split / "model.skops").unlink()
    with pytest.warns(UserWarning, match="`esc50tf evaluate RUN` re-saves each split"):
        assert main(["predict", str(out), str(clips[0]), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["results"][0]
    assert again == results[0]
    with pytest.warns(UserWarning, match="re-saves"):
        assert main(["evaluate", str(out)]) == 0
    assert "fold1: re-saved" in capsys.readouterr().err
    assert classic.saved_model(split) == split / "model.skops"

    # A shared run folder whose model file names os.system is refused, and nothing runs.
    canary = tmp_path / "canary"
    from conftest import skops_call, write_skops

    write_skops(split / "model.skops", skops_call("os", "system", f"mkdir '{canary}'"))
    assert main(["predict", str(out), str(clips[0])]) == 1
    assert "model.skops: refusing to load: it names os.system" in capsys.readouterr().err
    assert not canary.exists()


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    import pickle

    from esc50tf.errors import Esc50Error
    from esc50tf.models import classic

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(Esc50Error, match="refusing to load: its pickle names posix.system"):
        classic.load_estimator(path)
    assert not (tmp_path / "pwned").exists()
