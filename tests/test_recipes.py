"""Training recipes (esc50tf.recipe): schedules, validation size, EMA / SWA, crops, balance."""

import json
import math

import keras
import numpy as np
import pytest

from esc50tf import recipe
from esc50tf.augment import RandomCrop
from esc50tf.cli import main
from esc50tf.data.dataset import DatasetOptions, TFRecordFolder
from esc50tf.errors import Esc50Error
from esc50tf.run_config import TrainConfig, resolve_config
from esc50tf.train import train

SMALL_FRONT = {"n_fft": 256, "hop_length": 64, "n_mels": 32}


def _cfg(tfr, out, model="cnn_small", augment=None, preset="default", **train_over):
    over = {"train": {"data": str(tfr), "out": str(out), "protocol": "test-fold", "test_fold": 1,
                      "batch_size": 8, "export": False, **train_over},
            "features": SMALL_FRONT, "augment": augment or {}}
    return resolve_config(model, preset, overrides=over)


# --- schedules ----------------------------------------------------------------------------

def test_cosine_schedule_warms_up_then_decays_to_min_lr():
    t = TrainConfig(schedule="cosine", warmup_epochs=2, epochs=10, lr=1e-3, min_lr=1e-5)
    lr = recipe.learning_rate(t, 1e-3, steps_per_epoch=10)  # 20 warmup + 80 decay steps

    def at(step):
        return float(lr(step))

    assert at(0) == 0.0
    assert at(10) == pytest.approx(0.5e-3)  # halfway through the linear warmup
    assert at(20) == pytest.approx(1e-3)  # the peak
    assert at(60) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)  # cosine halfway: the mean
    cos_quarter = 0.5 * (1 + math.cos(math.pi * 0.25))
    assert at(40) == pytest.approx(1e-5 + (1e-3 - 1e-5) * cos_quarter)
    assert at(100) == pytest.approx(1e-5)
    assert all(at(s) >= at(s + 5) for s in range(20, 95, 5))  # never rises after the peak


def test_constant_and_plateau_schedules():
    warm = TrainConfig(schedule="constant", warmup_epochs=1, epochs=4, lr=2e-3)
    lr = recipe.learning_rate(warm, 2e-3, steps_per_epoch=4)
    assert [float(lr(s)) for s in (0, 2, 4, 9, 15)] == pytest.approx([0, 1e-3, 2e-3, 2e-3, 2e-3])
    assert recipe.learning_rate(TrainConfig(schedule="constant"), 1e-3, 5) == 1e-3
    assert recipe.learning_rate(TrainConfig(schedule="plateau"), 1e-3, 5) == 1e-3
    # A run shorter than the warmup keeps half its budget for the schedule.
    short = TrainConfig(schedule="cosine", warmup_epochs=5, epochs=2, lr=1e-3)
    assert float(recipe.learning_rate(short, 1e-3, 10)(10)) == pytest.approx(1e-3)
    with pytest.raises(Esc50Error, match="warmup_epochs"):
        TrainConfig(schedule="plateau", warmup_epochs=2)
    with pytest.raises(Esc50Error, match="schedule 'linear'"):
        TrainConfig(schedule="linear")
    with pytest.raises(Esc50Error, match="final_weights"):
        TrainConfig(final_weights="mean")


def test_presets_default_is_fixed_budget_and_seed_is_unchanged():
    default = resolve_config("cnn_small", "default").train
    assert (default.schedule, default.final_weights, default.early_stopping_patience,
            default.min_val_per_class) == ("cosine", "swa", 0, 5.0)
    seed = resolve_config("cnn_small", "seed").train
    assert (seed.schedule, seed.warmup_epochs, seed.final_weights, seed.early_stopping_patience,
            seed.lr_patience, seed.min_val_per_class) == ("plateau", 0.0, "best", 10, 5, 0.0)
    kinds = [type(c).__name__ for c in recipe.decision_callbacks(seed, "val_loss", True)]
    assert kinds == ["ReduceLROnPlateau", "EarlyStopping"]
    assert recipe.decision_callbacks(seed, "val_loss", True)[1].restore_best_weights


# --- validation that knows its size ----------------------------------------------------------

def test_small_validation_decides_nothing():
    t = TrainConfig(schedule="plateau", early_stopping_patience=3, min_val_per_class=5)
    tiny = recipe.judge_validation([0, 1, 2, 2], num_classes=4, min_per_class=5)
    assert not tiny["trusted"] and tiny["per_class"] == 1.0 and tiny["fewest_in_a_class"] == 0
    assert "fewer than 5" in tiny["note"] and "early stopping" in tiny["note"]
    assert recipe.decision_callbacks(t, "val_loss", tiny["trusted"]) == []
    big = recipe.judge_validation(np.repeat(np.arange(4), 6), num_classes=4, min_per_class=5)
    assert big["trusted"]
    assert len(recipe.decision_callbacks(t, "val_loss", big["trusted"])) == 2
    assert "last" in recipe.reported_weights(
        TrainConfig(final_weights="best", min_val_per_class=5), tiny["trusted"])
    none = recipe.judge_validation([], num_classes=4, min_per_class=5)
    assert not none["trusted"] and "--val-fraction 0" in none["note"]
    # The seed preset's threshold 0: decisions follow the training loss, as before.
    assert recipe.judge_validation([], num_classes=4, min_per_class=0)["trusted"]


# --- balance, label smoothing ------------------------------------------------------------

def test_class_weights_balance_counts():
    counts = recipe.class_counts([0, 0, 0, 1, 2, 2], 4)
    assert counts.tolist() == [3, 1, 2, 0]
    w = recipe.class_weights(counts)
    assert set(w) == {0, 1, 2}  # no weight for an absent class
    assert w[1] == pytest.approx(6 / (3 * 1)) and w[0] == pytest.approx(6 / (3 * 3))
    assert sum(w[c] * counts[c] for c in w) == pytest.approx(counts.sum())  # mean weight 1


def test_label_smoothing_changes_the_loss_and_the_labels(tiny_tfrecords, tmp_path):
    from esc50tf.data import splits
    from esc50tf.tasks import get_task

    plain = _cfg(tiny_tfrecords, tmp_path, augment={"mix": "none"})
    smooth = _cfg(tiny_tfrecords, tmp_path, augment={"mix": "none"}, label_smoothing=0.2)
    assert recipe.loss(plain) == "sparse_categorical_crossentropy"
    y, p = np.eye(4, dtype="float32")[[0, 2]], np.array([[0.7, 0.1, 0.1, 0.1]] * 2, "float32")
    hard = float(keras.losses.CategoricalCrossentropy()(y, p))
    soft = recipe.loss(smooth)
    assert soft.label_smoothing == 0.2 and float(soft(y, p)) != pytest.approx(hard)
    # Smoothing needs one-hot training labels even without batch mixing.
    folder = TFRecordFolder(tiny_tfrecords)
    split = splits.test_fold_split(folder.index, 1)
    train_ds, _ = get_task(smooth.model.name).build_inputs(smooth, split, folder,
                                                          one_hot=recipe.soft_labels(smooth))
    _, labels = next(iter(train_ds))
    assert labels.shape == (8, 4) and set(np.unique(labels)) == {0.0, 1.0}


# --- weight averaging ------------------------------------------------------------------

def test_recompute_batch_norm_gives_the_mean_batch_statistics():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.99)(inputs))
    rng = np.random.default_rng(0)
    batches = [(rng.normal(i, 1 + i, (16, 3)).astype("float32"), None) for i in range(4)]
    assert recipe.recompute_batch_norm(model, batches) == 1
    bn = model.layers[-1]
    np.testing.assert_allclose(bn.moving_mean.numpy(),
                               np.mean([x.mean(0) for x, _ in batches], axis=0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(),
                               np.mean([x.var(0) for x, _ in batches], axis=0), rtol=1e-5)
    assert bn.momentum == 0.99  # restored


def _spied_train(cfg, monkeypatch, callbacks=()):
    """Trains with the datasets and Model.fit spied on; returns (report, events, fit kwargs)."""
    events, fit_kwargs = [], {}
    real_make, real_fit = TFRecordFolder.dataset, keras.Model.fit

    def spy(folder, selection, options=None, batch_fns=()):
        with_metadata = DatasetOptions.from_dict(options or {}).with_metadata
        events.append(("dataset", tuple(selection.folds), with_metadata))
        return real_make(folder, selection, options, batch_fns)

    def fit(self, *args, **kwargs):
        fit_kwargs.update(kwargs)
        return real_fit(self, *args, **kwargs)

    class Mark(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            events.append(("fit-done",))

    monkeypatch.setattr(TFRecordFolder, "dataset", spy)
    monkeypatch.setattr(keras.Model, "fit", fit)
    report = train(cfg, callbacks=[*callbacks, Mark()], verbose=0)
    done = events.index(("fit-done",))
    test_fold = cfg.train.test_fold
    assert all(test_fold not in e[1] for e in events[:done] if e[0] == "dataset")
    assert [e for e in events[done:] if e[0] == "dataset"] == [("dataset", (test_fold,), True)]
    return report, events, fit_kwargs


class _Weights(keras.callbacks.Callback):
    """Trainable weights after every batch and every epoch, and BN statistics per epoch."""

    def __init__(self):
        super().__init__()
        self.batches, self.epochs, self.bn, self.rates = [], {}, {}, []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append([v.numpy().copy() for v in self.model.trainable_variables])

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[epoch] = [v.numpy().copy() for v in self.model.trainable_variables]
        self.bn[epoch] = self.model.get_layer("bn1").moving_mean.numpy().copy()
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


@pytest.mark.slow
def test_ema_weights_are_saved_and_small_validation_stops_nothing(tiny_tfrecords, tmp_path,
                                                                  monkeypatch, capsys):
    """EMA (momentum 0.5), plateau + early stopping patience 1 on 3 validation clips, class weights."""
    from esc50tf.predict import load_predictor
    from esc50tf.models.build import predict_dataset

    cfg = _cfg(tiny_tfrecords, tmp_path / "run", augment={"mix": "none"}, epochs=4,
               final_weights="ema", ema_momentum=0.5, schedule="plateau", warmup_epochs=0,
               early_stopping_patience=1, lr_patience=1, min_val_per_class=5,
               balance="class_weights")
    seen = _Weights()
    report, _, fit_kwargs = _spied_train(cfg, monkeypatch, [seen])
    fold = report["folds"][0]
    # Validation too small: announced, recorded, and every epoch ran at one learning rate.
    assert "too few to decide anything" in capsys.readouterr().err
    assert not fold["validation"]["trusted"] and fold["validation"]["clips"] == 3
    assert fold["epochs_run"] == 4
    assert seen.rates == pytest.approx([1e-3] * 4)
    # Class weights from the training side's counts (29 clips: 8, 7, 8, 6).
    counts = list(fold["train_class_counts"].values())
    assert sum(counts) == 29 == fold["num_train_clips"]
    assert fit_kwargs["class_weight"] == pytest.approx(
        {c: 29 / (4 * n) for c, n in enumerate(counts)})
    report_md = (tmp_path / "run" / "report.md").read_text()
    assert "training clips" in report_md and "reported model ema" in report_md
    # The saved weights are the optimizer's moving average of the per-step weights.
    ema = seen.batches[0]
    for step in seen.batches[1:]:
        ema = [0.5 * a + 0.5 * w for a, w in zip(ema, step)]
    model = load_predictor(tmp_path / "run" / "fold1" / "model.keras").models[0]
    saved = [v.numpy() for v in model.trainable_variables]
    for s, e in zip(saved, ema):
        np.testing.assert_allclose(s, e, rtol=1e-4, atol=1e-6)
    assert any(not np.allclose(s, r) for s, r in zip(saved, seen.epochs[3]))
    # ... and what the report evaluated.
    from esc50tf.data import splits

    test = TFRecordFolder(tiny_tfrecords).dataset(splits.Selection((1,)), DatasetOptions(
        batch_size=8, with_metadata=True))
    _, y_prob, _ = predict_dataset(model, test)
    saved_probs = np.load(tmp_path / "run" / "fold1" / "predictions.npz")["y_prob"]
    np.testing.assert_allclose(y_prob, saved_probs, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_swa_averages_last_epochs_and_evaluates_on_crops(tiny_tfrecords, tmp_path, monkeypatch):
    """The default preset with SWA over the last 2 of 4 epochs, 0.5 s crops, 3 test crops."""
    import tensorflow as tf

    from esc50tf.predict import load_predictor

    cfg = _cfg(tiny_tfrecords, tmp_path / "run", epochs=4, swa_fraction=0.5,
               augment={"crop_seconds": 0.5, "test_crops": 3})
    assert cfg.train.final_weights == "swa"
    seen = _Weights()
    crops = []
    real_call = RandomCrop.call

    def call(self, inputs, training=None):
        out = real_call(self, inputs, training=training)
        if not training and tf.executing_eagerly():  # not the compiled validation steps
            crops.append((np.asarray(inputs), np.asarray(out)))
        return out

    monkeypatch.setattr(RandomCrop, "call", call)
    report, _, _ = _spied_train(cfg, monkeypatch, [seen])
    fold = report["folds"][0]
    assert "last 2 epoch(s)" in fold["reported_model"]
    model = load_predictor(tmp_path / "run" / "fold1" / "model.keras").models[0]
    for s, a, b in zip(model.trainable_variables, seen.epochs[2], seen.epochs[3]):
        np.testing.assert_allclose(s.numpy(), (a + b) / 2, rtol=1e-5, atol=1e-7)
    # Batch-norm statistics were measured again for the averaged weights.
    assert not np.allclose(model.get_layer("bn1").moving_mean.numpy(), seen.bn[3])
    assert not (tmp_path / "run" / "fold1" / "swa_state.npz").exists()
    # 8 test clips in one batch, seen through 3 evenly spaced 4000-sample windows of 8000:
    # train's batched predict rolls each clip so that the centre crop falls on each window.
    assert fold["test_crops"] == 3
    assert crops == []  # no eager calls: the test side goes through the compiled predict
    from esc50tf.data import splits
    from esc50tf.models.build import crop_rolls, predict_crops

    assert crop_rolls(model, 8000) == [2000, 0, -2000]
    clips = next(iter(TFRecordFolder(tiny_tfrecords).dataset(
        splits.Selection((1,)), DatasetOptions(batch_size=8))))[0].numpy()
    saved = np.load(tmp_path / "run" / "fold1" / "predictions.npz")
    probs = np.asarray(predict_crops(model, clips))  # eager: the spy sees the 3 crops
    np.testing.assert_allclose(saved["y_prob"], probs, rtol=1e-5, atol=1e-6)
    for (_, out), start in zip(crops, (0, 2000, 4000)):
        np.testing.assert_array_equal(out, clips[:, start:start + 4000])
    assert len(crops) == 3
    assert "evaluated on 3 crops per clip" in (tmp_path / "run" / "report.md").read_text()
    # predict averages the same crops.
    crops.clear()
    predictor = load_predictor(tmp_path / "run")
    predictor.predict_waveform(np.zeros(8000, "float32"))
    assert len(crops) == 3


@pytest.mark.slow
def test_val_fraction_zero_trains_on_the_whole_training_side(tiny_tfrecords, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "gru", "--data", str(tiny_tfrecords), "--out", str(out),
                 "--test-fold", "1", "--epochs", "2", "--batch-size", "8", "--quiet",
                 "--val-fraction", "0", "--label-smoothing", "0.1", "--no-export",
                 "--n-fft", "256", "--hop-length", "64", "--n-mels", "32"]) == 0
    assert "no validation side (--val-fraction 0)" in capsys.readouterr().err
    fold = json.loads((out / "fold1" / "result.json").read_text())
    assert fold["num_val_clips"] == 0 and fold["num_train_clips"] == 32  # folds 2-5, all of them
    assert sum(fold["train_class_counts"].values()) == 32
    rows = (out / "fold1" / "history.csv").read_text().splitlines()
    column = rows[0].split(",").index("val_loss")  # Keras' CSVLogger writes NA without one
    assert {r.split(",")[column] for r in rows[1:]} == {"NA"}
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["val_fraction"] == 0 and config["train"]["label_smoothing"] == 0.1


# --- a default recipe per model family (issue 27) ------------------------------------------

def _settings(cfg, recipe):
    return {(section, key): getattr(getattr(cfg, section), key)
            for section, values in recipe.items() for key in values}


def test_default_preset_for_gru_is_the_rnn_recipe():
    from esc50tf.models import registry

    recipe_rnn = registry.family("rnn").recipe
    assert recipe_rnn, "the rnn family declares its recipe"
    wanted = {(s, k): v for s, values in recipe_rnn.items() for k, v in values.items()}
    for model in ("gru", "bigru", "lstm", "bilstm"):
        cfg = resolve_config(model, "default")
        assert cfg.train.family_recipe == "rnn" and cfg.train.preset == "default"
        assert _settings(cfg, recipe_rnn) == wanted
        plain = resolve_config(model, "default", use_family_recipe=False)
        assert plain.train.family_recipe == ""
        assert _settings(plain, recipe_rnn) != wanted  # the recipe changes something
    # The seed preset keeps the study's settings; the recipe belongs to `default` only.
    seed = resolve_config("gru", "seed")
    assert (seed.train.family_recipe, seed.train.optimizer, seed.train.lr,
            seed.train.clipnorm) == ("", "adam", 1e-3, 0.0)


def test_flags_override_the_family_recipe():
    cfg = resolve_config("gru", "default", overrides={
        "train": {"lr": 0.02, "clipnorm": 0.0, "warmup_epochs": 3.0},
        "augment": {"mix": "mixup", "num_time_masks": 2}})
    assert (cfg.train.lr, cfg.train.clipnorm, cfg.train.warmup_epochs) == (0.02, 0.0, 3.0)
    assert (cfg.augment.mix, cfg.augment.num_time_masks) == ("mixup", 2)
    assert cfg.train.family_recipe == "rnn"  # what the rest of the run started from
    # A saved config.json (base) is layered over the recipe too, as over any preset.
    again = resolve_config("gru", "default", base=cfg.to_dict())
    assert again == cfg


def test_cnn_default_is_the_plain_default_preset():
    from esc50tf import presets

    cnn = resolve_config("cnn_small", "default")
    assert cnn == resolve_config("cnn_small", "default", use_family_recipe=False)
    assert cnn.train.family_recipe == ""
    plain = presets.preset("default")
    assert (cnn.train.lr, cnn.train.schedule, cnn.train.warmup_epochs, cnn.augment.mix,
            cnn.train.clipnorm) == (plain["train"]["lr"], "cosine", 5.0, "mixup", 0.0)


def test_a_family_registered_with_a_recipe_gets_it(tmp_path):
    from esc50tf.models import registry

    registry.families()  # the built-in families first
    registry.register_family("toyfam", "toy", "tab:pink",
                             recipe={"train": {"epochs": 7, "lr": 5e-3},
                                     "augment": {"mix": "none"}})
    try:
        registry.register("toy_model", "toyfam", "a test model")(lambda x, config, n: x)
        cfg = resolve_config("toy_model", "default")
        assert (cfg.train.epochs, cfg.train.lr, cfg.augment.mix,
                cfg.train.family_recipe) == (7, 5e-3, "none", "toyfam")
        assert resolve_config("toy_model", "seed").train.family_recipe == ""
    finally:
        registry.unregister_family("toyfam")


def test_report_names_the_recipe():
    from esc50tf.report import aggregate, report_markdown

    fold = {"split": "fold1", "accuracy": 0.5, "macro_f1": 0.4, "weighted_f1": 0.45,
            "confusion_matrix": [[1, 1], [0, 2]], "num_test_clips": 4,
            "reported_model": "last", "test_crops": 1}
    for model, label in (("gru", "default (rnn recipe)"), ("cnn_small", "default")):
        config = resolve_config(model, "default").to_dict()
        report = aggregate([fold], ["a", "b"], config, 1.0)
        assert report["recipe"] == label
        assert f"- recipe: {label}\n" in report_markdown(report)
    seed = aggregate([fold], ["a", "b"], resolve_config("gru", "seed").to_dict(), 1.0)
    assert seed["recipe"] == "seed"


def test_clipnorm_reaches_the_optimizer():
    from esc50tf.tasks.keras_task import make_optimizer

    for optimizer in ("adam", "adamw", "sgd", "adagrad"):
        assert make_optimizer(TrainConfig(optimizer=optimizer, clipnorm=1.5)).clipnorm == 1.5
        assert make_optimizer(TrainConfig(optimizer=optimizer)).clipnorm is None
    with pytest.raises(Esc50Error, match="clipnorm -1"):
        TrainConfig(clipnorm=-1.0)


def test_a_gru_run_records_and_reports_its_family_recipe(tiny_tfrecords, tmp_path):
    cfg = _cfg(tiny_tfrecords, tmp_path / "run", model="gru", epochs=1)
    report = train(cfg, verbose=0)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["family_recipe"] == "rnn"
    assert saved["train"]["clipnorm"] == cfg.train.clipnorm
    assert report["recipe"] == "default (rnn recipe)"
    assert "- recipe: default (rnn recipe)" in (tmp_path / "run" / "report.md").read_text()


def test_clipnorm_over_several_replicas_is_warned(tiny_tfrecords, capsys):
    """Keras clips each replica's share of the gradient before the all-reduce: train says so
    when --clipnorm meets more than one replica, and stays quiet on one device."""
    import types

    from esc50tf import train as train_mod
    from esc50tf.data.splits import load_index, protocol_splits
    from esc50tf.tasks import get_task

    index = load_index(str(tiny_tfrecords))
    cfg = resolve_config("gru", overrides={"train": {"data": str(tiny_tfrecords),
                                                      "test_fold": 1, "protocol": "test-fold",
                                                      "batch_size": 8},
                                           "features": SMALL_FRONT})
    assert cfg.train.clipnorm == 1.0  # the rnn recipe's
    chosen = protocol_splits(cfg.train, index)
    task = get_task(cfg.model.name)
    for replicas, warned in ((2, True), (1, False)):
        strategy = types.SimpleNamespace(num_replicas_in_sync=replicas)
        train_mod._check_can_start(cfg, task, chosen, index, strategy)
        err = capsys.readouterr().err
        assert ("clips each of the 2 replicas' share" in err) is warned, err
