"""esc50tf.models.memory: peak memory estimated before anything is allocated; train refuses
and tune shrinks or skips what cannot fit."""

import csv

import pytest

from esc50tf.errors import Esc50Error
from esc50tf.models import memory
from esc50tf.run_config import resolve_config

SMALL_FRONT = {"n_fft": 256, "hop_length": 64, "n_mels": 32}


def _cfg(model="cnn_small", batch=8, features=None, **train):
    return resolve_config(model, overrides={
        "train": {"batch_size": batch, "epochs": 1, "protocol": "test-fold", "test_fold": 1,
                  **train},
        "features": {**SMALL_FRONT, "sample_rate": 8000, **(features or {})}})


@pytest.fixture
def no_base(monkeypatch):
    """Estimates without this process's resident set (which changes as tests run)."""
    monkeypatch.setattr(memory, "_rss_bytes", lambda: 0)


def test_frontend_bytes_follow_the_settings():
    from esc50tf.frontend import FeatureConfig

    f = FeatureConfig(kind="mel", sample_rate=8000, n_fft=256, hop_length=64, n_mels=32)
    kept, batch = memory.frontend_bytes(f, 8000, 4)
    frames, bins = f.num_frames(8000), 129
    assert kept == 44 * 32 * bins  # float32 filterbank + five float64 arrays while it is made
    assert batch == 4 * frames * (4 * 256 + 12 * bins + 4 * 32 + 8 * 32)
    stft = FeatureConfig(kind="stft", sample_rate=8000, n_fft=256, hop_length=64)
    assert memory.frontend_bytes(stft, 8000, 4)[0] == 0  # no filterbank


def test_estimate_grows_with_batch_and_shapes(no_base):
    small = memory.estimate_memory(_cfg(batch=8), 8000, 4, 24)
    double = memory.estimate_memory(_cfg(batch=16), 8000, 4, 24)
    assert double.parts["activations"] == 2 * small.parts["activations"] > 0
    assert double.parts["parameters"] == small.parts["parameters"] > 0
    wide = memory.estimate_memory(_cfg(batch=8, features={"n_mels": 64}), 8000, 4, 24)
    assert wide.parts["activations"] > small.parts["activations"]
    assert small.total == sum(small.parts.values())
    assert "activations" in small.describe() and "at batch 8" in small.describe()


def test_estimate_counts_every_layer_output_and_the_optimizer(no_base):
    """Activations: every layer's output per example (the model's own shapes) times the
    batch, plus twice the largest for the backward pass; parameters: AdamW keeps 2 slots."""
    import keras
    import numpy as np

    from esc50tf.models.build import build_model

    cfg = _cfg(batch=4)
    model = build_model(cfg.model, cfg.features, 4, 8000)  # no augmenters: flat layers
    sizes = [int(np.prod(layer.output.shape[1:])) * 4 for layer in model.layers[1:]]
    est = memory.estimate_memory(cfg, 8000, 4, 24, model=model)
    assert est.parts["activations"] == 4 * (sum(sizes) + 2 * max(sizes))
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    assert cfg.train.optimizer == "adamw"
    assert est.parts["parameters"] == 4 * (4 * trainable + frozen)
    keras.backend.clear_session()


def test_a_huge_filterbank_is_refused_before_the_model_is_built(tiny_tfrecords, tmp_path,
                                                                 monkeypatch, capsys):
    """`train --n-mels 100000` (issue 25; it trained at 16.5 GB peak RSS on a 23 GB machine):
    refused from the settings alone, no model, no folder; a filterbank that is valid but
    larger than the memory limit is refused by the estimate."""
    from esc50tf.cli import main
    from esc50tf.models import build

    def never(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(build, "build_model", never)
    out = tmp_path / "run"
    args = ["train", "--model", "cnn_small", "--data", str(tiny_tfrecords), "--out", str(out),
            "--test-fold", "1", "--epochs", "1", "--batch-size", "8"]
    assert main([*args, "--n-mels", "100000"]) != 0
    err = capsys.readouterr().err
    assert "n_mels=100000 is not allowed; allowed: at most n_fft // 2 + 1 = 1025" in err, err
    assert not out.exists()
    monkeypatch.setenv(memory.LIMIT_ENV, "1G")
    assert main([*args, "--n-fft", "65536", "--n-mels", "8192"]) != 0
    err = capsys.readouterr().err
    assert "8192 x 32769 filterbank" in err and "more than the 1.1 GB" in err, err
    assert "at batch 8" in err
    assert "--n-mels" in err and not out.exists()


def test_train_refuses_what_cannot_fit(tiny_tfrecords, tmp_path, monkeypatch, no_base):
    from esc50tf.train import train

    cfg = _cfg(batch=8, data=str(tiny_tfrecords), out=str(tmp_path / "run"))
    need = memory.estimate_memory(cfg, 8000, 4, 24).total
    monkeypatch.setattr(memory, "available_bytes", lambda: need // 2)
    with pytest.raises(Esc50Error, match=r"training cnn_small at batch 8 \(.*GB.*\) needs about"):
        train(cfg, verbose=0)
    assert not (tmp_path / "run").exists()


def test_limit_setting(monkeypatch):
    monkeypatch.setenv(memory.LIMIT_ENV, "off")
    assert memory.available_bytes() is None
    monkeypatch.setenv(memory.LIMIT_ENV, "512M")
    assert memory.available_bytes() == 512 << 20
    monkeypatch.setenv(memory.LIMIT_ENV, "lots")
    with pytest.raises(Esc50Error, match="ESC50TF_MEMORY_LIMIT='LOTS'"):
        memory.available_bytes()
    monkeypatch.delenv(memory.LIMIT_ENV)
    assert memory.available_bytes() > memory._rss_bytes() > 0


def test_shrink_to_fit_halves_the_batch_or_skips(no_base):
    cfg = _cfg(batch=16)
    at = {b: memory.estimate_memory(_cfg(batch=b), 8000, 4, 24).total for b in (1, 4, 8, 16)}
    same, note = memory.shrink_to_fit(cfg, 8000, 4, 24, limit=at[16] + 1)
    assert same is cfg and note is None
    shrunk, note = memory.shrink_to_fit(cfg, 8000, 4, 24, limit=(at[4] + at[8]) // 2)
    assert shrunk.train.batch_size == 4 and note.startswith("batch 16 -> 4: ")
    skipped, note = memory.shrink_to_fit(cfg, 8000, 4, 24, limit=at[1] - 1)
    assert skipped is None and note.startswith("skipped: needs about ")


def test_tune_skips_a_trial_that_cannot_fit_and_says_why(tiny_tfrecords, tmp_path, monkeypatch):
    from esc50tf import tune as tune_mod

    monkeypatch.setattr(memory, "available_bytes", lambda: 1 << 20)  # 1 MiB: nothing fits
    out = tmp_path / "out"
    cfg = tune_mod.TuneConfig(data=str(tiny_tfrecords), out=str(out), models=("gru",), epochs=1,
                              max_trials=1, retrain=False,
                              overrides={"train": {"batch_size": 8},
                                         "features": {**SMALL_FRONT, "kind": "mel"}})
    with pytest.raises(Esc50Error):
        tune_mod.tune(cfg, verbose=0)
    with open(out / "trials.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["status"] == "skipped"
    assert row["error"].startswith("skipped: ") and "needs" in row["error"]
    assert "more than the 0.0 GB available" in row["error"]
    assert "skipped" in (out / "trials.md").read_text()
