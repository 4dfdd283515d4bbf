"""PANNs models: pooling layers vs PyTorch semantics, full-size counts, pretrained trunks in
the pipeline (loading, freezing, fine-tuning preset, sample-rate guard), hybrid on CNN14,
embeddings and the linear probe. Everything that runs uses the reduced-width fixtures of
tests/fixtures/panns (made with panns-inference by tools/make_panns_fixtures.py)."""

import json
from pathlib import Path

import numpy as np
import pytest

from esc50tf.errors import Esc50Error
from esc50tf.frontend import FeatureConfig
from esc50tf.models import ModelConfig, panns
from esc50tf.models.build import build_model
from esc50tf.pretrained import architectures

FIXTURES = Path(__file__).parent / "fixtures" / "panns"
CNN14_TRAINABLE = 80_753_615  # sum of requires_grad parameters of panns_inference.models.Cnn14
FC_AUDIOSET = 2048 * 527 + 527


@pytest.fixture(scope="session")
def weights_16k(tmp_path_factory):
    """The reduced-width cnn14_16k fixture checkpoint, converted."""
    from esc50tf.pretrained import store

    out = tmp_path_factory.mktemp("weights") / "cnn14_16k.npz"
    store.convert_checkpoint("cnn14_16k", FIXTURES / "cnn14_16k.zip.pth", out,
                             build=panns.build_reference, log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def weights_sed(tmp_path_factory):
    from esc50tf.pretrained import store

    out = tmp_path_factory.mktemp("weights") / "cnn14_sed.npz"
    store.convert_checkpoint("cnn14_sed", FIXTURES / "cnn14_sed.zip.pth", out,
                             build=panns.build_reference, log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def tfrecords_16k(tiny_esc50, tmp_path_factory):
    """The tiny dataset at 16 kHz (cnn14_16k's rate), 1 s clips."""
    from conftest import build_tiny_tfrecords

    return build_tiny_tfrecords(tiny_esc50, tmp_path_factory.mktemp("tfr16k") / "tfr",
                                sample_rate=16000, shards_per_fold=1)


def _features(arch):
    return FeatureConfig(**architectures.feature_settings(arch))


# --- layers against PyTorch's semantics -------------------------------------------------

def test_sed_smoothing_is_max_pool1d_plus_avg_pool1d_counting_padding():
    from esc50tf.models.layers import SEDSmoothing

    x = np.random.default_rng(0).normal(size=(2, 7, 3)).astype("float32") - 2.0  # all < 0 mostly
    padded_max = np.pad(x, ((0, 0), (1, 1), (0, 0)), constant_values=-np.inf)
    padded_avg = np.pad(x, ((0, 0), (1, 1), (0, 0)))
    want = np.stack([padded_max[:, t:t + 3].max(1) + padded_avg[:, t:t + 3].sum(1) / 3
                     for t in range(7)], axis=1)
    np.testing.assert_allclose(np.asarray(SEDSmoothing()(x)), want, rtol=1e-6, atol=1e-6)


def test_framewise_upsample_repeats_segments_then_the_last_one():
    from esc50tf.models.layers import FramewiseUpsample

    seg = np.arange(3 * 2, dtype="float32").reshape(1, 3, 2)
    frames = np.zeros((1, 101, 5), "float32")  # 101 frames, 3 segments of 32 + 5 padded
    out = np.asarray(FramewiseUpsample(32)([seg, frames]))
    want = np.concatenate([np.repeat(seg, 32, axis=1), np.repeat(seg[:, -1:], 5, axis=1)], 1)
    np.testing.assert_array_equal(out, want)


def test_time_max_plus_mean():
    from esc50tf.models.layers import TimeMaxPlusMean

    x = np.random.default_rng(1).normal(size=(2, 5, 4)).astype("float32")
    np.testing.assert_allclose(np.asarray(TimeMaxPlusMean()(x)), x.max(1) + x.mean(1), rtol=1e-6)


def test_layer_names_follow_the_pytorch_state_dict():
    model = panns.build_reference("cnn14", widths=(4, 4, 8, 8, 16, 16), embedding_size=8)
    weighted = {layer.name for layer in model.layers if layer.trainable_weights}
    want = {"bn0", "fc1", "fc_audioset"} | {f"conv_block{i}_{kind}{j}" for i in range(1, 7)
                                            for kind in ("conv", "bn") for j in (1, 2)}
    assert weighted == want
    bn = model.get_layer("conv_block3_bn1")
    assert bn.epsilon == 1e-5 and bn.momentum == pytest.approx(0.9)
    conv = model.get_layer("conv_block3_conv1")
    assert conv.kernel_size == (3, 3) and not conv.use_bias and conv.padding == "same"


def test_reference_front_end_settings():
    fe = panns.build_frontend("cnn14")
    assert (fe.sample_rate, fe.n_fft, fe.hop_length, fe.n_mels, fe.fmin, fe.fmax) == (
        32000, 1024, 320, 64, 50.0, 14000.0)
    assert (fe.pad_mode, fe.mel_scale, fe.norm, fe.power, fe.log, fe.top_db, fe.ref) == (
        "reflect", "slaney", "slaney", 2.0, "db", None, 1.0)
    fe16 = panns.build_frontend("cnn14_16k")
    assert (fe16.sample_rate, fe16.n_fft, fe16.hop_length, fe16.fmax) == (16000, 512, 160, 8000.0)


def test_full_size_classifier_is_the_reference_trunk_with_a_new_head():
    # The reference models themselves are counted in test_pretrained.py.
    model = build_model(ModelConfig(name="cnn14", normalization="none"), _features("cnn14"), 50,
                        32000)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == CNN14_TRAINABLE - FC_AUDIOSET + 2048 * 50 + 50
    assert model.get_layer("fc1").units == 2048
    assert model.get_layer("conv_block6_conv2").filters == 2048


# --- pretrained trunks in the pipeline --------------------------------------------------

def test_classifier_loads_trunk_freezes_and_round_trips(weights_16k, tmp_path):
    import keras

    from esc50tf.models.optimizers import TrunkScaledAdamW
    from esc50tf.pretrained import store

    converted, meta = store.load_weights(weights_16k)
    cfg = ModelConfig(name="cnn14_16k", weights=str(weights_16k), freeze_backbone=True,
                      normalization="none")
    model = build_model(cfg, _features("cnn14_16k"), num_classes=3, num_samples=16000)
    # The trunk takes the file's (reduced) widths and holds its arrays.
    assert model.get_layer("fc1").units == meta["architecture"]["embedding_size"]
    for name in ("bn0", "conv_block1_conv1", "conv_block6_bn2", "fc1"):
        for got, want in zip(model.get_layer(name).get_weights(), converted[name]):
            np.testing.assert_array_equal(got, want)
        assert not model.get_layer(name).trainable
    assert model.get_layer("predictions").trainable
    assert [w.path for w in model.trainable_weights] == ["predictions/kernel", "predictions/bias"]
    x = np.random.default_rng(0).uniform(-0.3, 0.3, (4, 16000)).astype("float32")
    model.compile(TrunkScaledAdamW(0.1, learning_rate=1e-3), "sparse_categorical_crossentropy")
    model.train_on_batch(x, np.array([0, 1, 2, 1]))
    np.testing.assert_array_equal(model.get_layer("bn0").get_weights()[2], converted["bn0"][2])
    probs = np.asarray(model(x, training=False))
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), probs, rtol=1e-5, atol=1e-6)


def test_sed_classifier_takes_the_max_over_time_steps(weights_sed):
    cfg = ModelConfig(name="cnn14_sed", weights=str(weights_sed), normalization="none")
    model = build_model(cfg, _features("cnn14_sed"), num_classes=5, num_samples=32000)
    assert model.get_layer("segment_logits").output.shape[1:] == (101 // 32, 5)
    x = np.random.default_rng(0).uniform(-0.3, 0.3, (2, 32000)).astype("float32")
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (2, 5)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)


def test_weights_of_another_architecture_are_refused(weights_sed):
    cfg = ModelConfig(name="cnn14_16k", weights=str(weights_sed), normalization="none")
    with pytest.raises(Esc50Error, match="holds cnn14_sed weights.*needs cnn14_16k"):
        build_model(cfg, _features("cnn14_16k"), num_classes=3, num_samples=16000)


def test_trunk_learns_at_a_fraction_of_the_head_rate():
    import keras

    from esc50tf.models.optimizers import TrunkScaledAdamW

    inputs = keras.Input((4,))
    x = keras.layers.Dense(4, name="fc1")(inputs)
    outputs = keras.layers.Dense(2, name="predictions")(x)
    model = keras.Model(inputs, outputs)
    model.compile(TrunkScaledAdamW(0.1, learning_rate=1e-2, weight_decay=0.0), "mse")
    before = {w.path: w.numpy().copy() for w in model.trainable_weights}
    model.train_on_batch(np.ones((8, 4), "float32"), np.zeros((8, 2), "float32"))
    step = {p: np.abs(w.numpy() - before[p]).max() for p, w in
            ((w.path, w) for w in model.trainable_weights)}
    # Adam's first step moves every weight by ~lr: 1e-2 for the head, 1e-3 for the trunk.
    np.testing.assert_allclose(step["predictions/kernel"], 1e-2, rtol=0.05)
    np.testing.assert_allclose(step["fc1/kernel"], 1e-3, rtol=0.05)


def test_pretrained_weights_select_the_finetune_preset(weights_16k):
    from esc50tf.run_config import resolve_config

    cfg = resolve_config("cnn14_16k", overrides={"model": {"weights": str(weights_16k)}})
    assert cfg.train.preset == "finetune"
    assert cfg.train.trunk_lr_scale == 0.1 and cfg.train.lr == 1e-3
    assert (cfg.augment.time_mask_param, cfg.augment.freq_mask_param) == (64, 8)
    assert (cfg.augment.mix, cfg.augment.mixup_alpha) == ("mixup", 1.0)
    assert cfg.model.normalization == "none"
    assert cfg.features == _features("cnn14_16k")
    # From scratch: the default preset, still on the model's own front end.
    scratch = resolve_config("cnn14")
    assert scratch.train.preset == "default" and scratch.features == _features("cnn14")
    assert scratch.model.normalization == "none"
    # Flags override the preset.
    flagged = resolve_config("cnn14_16k", overrides={"model": {"weights": str(weights_16k)},
                                                     "train": {"trunk_lr_scale": 0.5}})
    assert flagged.train.trunk_lr_scale == 0.5


@pytest.mark.parametrize("over, match", [
    ({"features": {"n_mels": 128}}, "cnn14 front end.*n_mels=64"),
    ({"features": {"hop_length": 512}}, "hop_length=320"),
    ({"model": {"normalization": "frequency"}}, "own bn0"),
    ({"model": {"backbone": "cnn14"}}, "only the hybrid"),
    ({"model": {"freeze_backbone": True}}, "random trunk"),
    ({"train": {"trunk_lr_scale": 0.1}}, "without --weights would only slow cnn14's random"),
])
def test_conflicting_settings_are_refused(over, match):
    from esc50tf.run_config import resolve_config

    with pytest.raises(Esc50Error, match=match):
        resolve_config("cnn14", overrides=over)


@pytest.mark.parametrize("model, over", [
    ("resnet50", {"model": {"weights": "imagenet"}}),
    ("gru", {}),
    ("svm", {}),
    ("hybrid", {"model": {"backbone": "densenet121"}}),
])
def test_trunk_lr_scale_is_refused_where_no_pretrained_trunk_takes_it(model, over):
    from esc50tf.run_config import resolve_config

    with pytest.raises(Esc50Error, match=f"trunk_lr_scale=0.5 .*{model} has none"):
        resolve_config(model, overrides={**over, "train": {"trunk_lr_scale": 0.5}})
    with pytest.raises(Esc50Error, match="set by --preset finetune"):
        resolve_config(model, "finetune", overrides=over)


def test_trunk_lr_scale_needs_adam():
    from esc50tf.run_config import TrainConfig

    with pytest.raises(Esc50Error, match="adam or adamw"):
        TrainConfig(optimizer="sgd", trunk_lr_scale=0.1)


def test_training_at_the_wrong_sample_rate_stops_with_the_rebuild_command(
        weights_16k, tiny_tfrecords, tiny_esc50, tmp_path):
    from esc50tf.run_config import resolve_config
    from esc50tf.train import train

    out = tmp_path / "run"
    cfg = resolve_config("cnn14_16k", overrides={
        "train": {"data": str(tiny_tfrecords), "out": str(out)},
        "model": {"weights": str(weights_16k)}})
    with pytest.raises(Esc50Error) as err:
        train(cfg)
    msg = str(err.value)
    assert "8000 Hz" in msg and "16000 Hz" in msg
    assert (f"esc50tf build-tfrecords --data-dir {Path(tiny_esc50).resolve()} "
            f"--out {tiny_tfrecords}-16k --sample-rate 16000 --clip-seconds 1") in msg
    assert not out.exists()


def test_hybrid_on_the_cnn14_trunk_pools_frequency_only(weights_16k):
    from esc50tf.pretrained import store

    converted, _ = store.load_weights(weights_16k)
    cfg = ModelConfig(name="hybrid", backbone="cnn14_16k", weights=str(weights_16k),
                      normalization="none", rnn_units=8, attention_units=8, dense_units=8)
    model = build_model(cfg, _features("cnn14_16k"), num_classes=3, num_samples=16000)
    # 101 frames -> 3 time steps after five 2x poolings; frequency averaged away.
    assert model.get_layer("frequency_pool").output.shape[1:] == (3, 32)
    np.testing.assert_array_equal(model.get_layer("conv_block2_conv1").get_weights()[0],
                                  converted["conv_block2_conv1"][0])
    with pytest.raises(ValueError):
        model.get_layer("fc1")
    x = np.zeros((2, 16000), "float32")
    assert np.asarray(model(x, training=False)).shape == (2, 3)


# --- end to end -------------------------------------------------------------------------

@pytest.mark.slow
def test_finetune_run_from_the_command_line(weights_16k, tfrecords_16k, tmp_path):
    from esc50tf.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--model", "cnn14_16k", "--weights", str(weights_16k), "--data",
               str(tfrecords_16k), "--out", str(out), "--test-fold", "1", "--epochs", "1",
               "--batch-size", "8", "--no-export", "--quiet"])
    assert rc == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["preset"] == "finetune" and config["model"]["weights"]
    report = json.loads((out / "report.json").read_text())
    assert 0.0 <= report["accuracy"] <= 1.0


def test_embed_writes_embeddings_for_tfrecords_and_audio_files(weights_16k, tiny_tfrecords,
                                                                tiny_esc50, tmp_path, capsys):
    from esc50tf.cli import main

    out = tmp_path / "emb.npz"
    # The folder is at 8 kHz: clips are resampled to the model's 16 kHz.
    assert main(["embed", str(weights_16k), str(tiny_tfrecords), "--out", str(out),
                 "--no-progress"]) == 0
    with np.load(out) as f:
        emb, names, labels = f["embeddings"], f["filenames"], f["labels"]
    assert emb.shape == (40, 32) and len(names) == 40 and labels.shape == (40,)
    assert np.isfinite(emb).all() and emb.std(0).max() > 0
    # Existing output is kept without --overwrite.
    assert main(["embed", str(weights_16k), str(tiny_tfrecords), "--out", str(out),
                 "--no-progress"]) == 1
    # Audio files: one good, one broken: by default nothing is written and the error
    # names the broken file; --skip-bad leaves it out (listed) and succeeds.
    wav = sorted((Path(tiny_esc50) / "audio").glob("*.wav"))[0]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    out2 = tmp_path / "files.npz"
    assert main(["embed", str(weights_16k), str(wav), str(bad), "--out", str(out2),
                 "--no-progress"]) == 1
    assert not out2.exists() and "bad.wav" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.wav", "emb.npz"]
    assert main(["embed", str(weights_16k), str(wav), str(bad), "--out", str(out2),
                 "--no-progress", "--skip-bad"]) == 0
    assert "skipped" in capsys.readouterr().err
    with np.load(out2) as f:
        assert f["embeddings"].shape == (1, 32) and list(f["filenames"]) == [str(wav)]
        row = names.tolist().index(wav.name)
    # The same clip from the file and from the TFRecords (resampled the same way).
    with np.load(out2) as f, np.load(out) as g:
        np.testing.assert_allclose(f["embeddings"][0], g["embeddings"][row], rtol=1e-3, atol=1e-4)


def test_linear_probe_trains_on_cached_embeddings(weights_16k, tiny_tfrecords, tmp_path,
                                                  capsys):
    from esc50tf.run_config import resolve_config
    from esc50tf.train import train

    out = tmp_path / "probe"
    cfg = resolve_config("logreg", overrides={
        "train": {"data": str(tiny_tfrecords), "out": str(out)},
        "model": {"classic_features": "embeddings", "weights": str(weights_16k)}})
    report = train(cfg)
    assert len(report["folds"]) == 5
    # Embedding every clip is the probe's long wait: it shows progress (plain lines in a
    # log), once, since the table is cached for the other splits.
    err = capsys.readouterr().err
    assert sum(line.startswith("embed: 100%") and "40/40" in line
               for line in err.splitlines()) == 1, err
    assert "\x1b" not in err and "\r" not in err
    # 4 well-separated synthetic classes: a linear probe on even random-init embeddings
    # of a tiny trunk does better than chance (25%).
    assert report["accuracy"] > 0.4
    with np.load(out / "embeddings.npz") as f:
        assert f["embeddings"].shape == (40, 32)
    result = json.loads((out / "fold1" / "result.json").read_text())
    assert result["feature_dim"] == 32 and result["num_train_clips"] > 0
    # `evaluate` embeds the test clips again (make_featurizer, resampled on the fly):
    # the same predictions as the cached table gave.
    from esc50tf.cli import main

    assert main(["evaluate", str(out)]) == 0
    again = json.loads((out / "report.json").read_text())
    assert again["accuracy"] == pytest.approx(report["accuracy"])


def test_probe_features_at_the_checkpoints_own_rate_are_not_resampled(weights_16k, monkeypatch):
    from esc50tf.data import audio
    from esc50tf.models.panns import build_embedder
    from esc50tf.models import classic

    monkeypatch.setattr(audio, "resample", lambda *a: pytest.fail("resampled at its own rate"))
    cfg = ModelConfig(name="logreg", classic_features="embeddings", weights=str(weights_16k))
    featurize = classic.make_featurizer(FeatureConfig(sample_rate=16000), cfg)
    x = np.random.default_rng(0).normal(scale=0.1, size=(2, 16000)).astype(np.float32)
    embedder, _ = build_embedder(str(weights_16k))
    np.testing.assert_allclose(np.asarray(featurize(x)), np.asarray(embedder(x, training=False)),
                               rtol=1e-5, atol=1e-6)


def test_the_embedding_cache_follows_the_weights_and_the_data(weights_16k, tiny_tfrecords,
                                                              tmp_path, monkeypatch):
    import shutil
    import types as types_mod

    from esc50tf import embed
    from esc50tf.pretrained import store

    weights = tmp_path / "w.weights.npz"
    shutil.copy(weights_16k, weights)
    config = types_mod.SimpleNamespace(weights=str(weights))
    cache = tmp_path / "run" / "embeddings.npz"
    made = []
    real = embed.embed_tfrecords
    monkeypatch.setattr(embed, "embed_tfrecords", lambda *a, **k: made.append(1) or real(*a, **k))
    first = embed.embedding_table(tiny_tfrecords, config, cache)
    embed.embedding_table(tiny_tfrecords, config, cache)
    assert len(made) == 1  # the same weights and data: the cache
    # The same name, converted again (another checkpoint): embedded again.
    converted, meta = store.load_weights(weights)
    store.save_weights(converted, weights, {**meta, "converted_at": "2031-01-01T00:00:00"},
                       overwrite=True)
    embed.embedding_table(tiny_tfrecords, config, cache)
    assert len(made) == 2
    # A damaged or keyless cache is made again, not an error.
    for junk in (b"not an npz", None):
        if junk is None:
            np.savez(cache, embeddings=first["embeddings"])
        else:
            cache.write_bytes(junk)
        table = embed.embedding_table(tiny_tfrecords, config, cache)
        np.testing.assert_allclose(table["embeddings"], first["embeddings"], rtol=1e-5, atol=1e-6)
    assert len(made) == 4
    # Another manifest at the same path (the folder rebuilt) is another key.
    data = tmp_path / "data"
    shutil.copytree(tiny_tfrecords, data)
    key = embed._table_key(data, str(weights))
    manifest = json.loads((data / "manifest.json").read_text())
    (data / "manifest.json").write_text(json.dumps({**manifest, "rebuilt": True}))
    assert embed._table_key(data, str(weights)) != key


def test_tune_searches_pretrained_and_scratch_hybrid_trunks(weights_16k):
    from esc50tf import tune as tune_mod

    base = {"train": {"data": "d", "protocol": "test-fold", "test_fold": 1},
            "model": {"weights": str(weights_16k)}, "features": {"sample_rate": 16000}}
    space = tune_mod.SearchSpace(tune_mod.resolve_space(), ("hybrid", "cnn14_16k"), base)
    assert {"backbone", "trunk_lr_scale", "freeze_backbone"} <= set(space.space)
    assert space.condition("backbone") == ("model", ["hybrid"])
    values = {"optimizer": "adamw", "lr": 0.001, "n_mels": 128, "features": "mfcc",
              "trunk_lr_scale": 0.3, "freeze_backbone": False}
    pretrained = space.run_config({**values, "model": "hybrid", "backbone": "cnn14_16k"})
    assert pretrained.model.weights == str(weights_16k) and pretrained.train.preset == "finetune"
    assert pretrained.features == _features("cnn14_16k")  # front-end values do not apply
    assert pretrained.train.trunk_lr_scale == 0.3
    scratch = space.run_config({**values, "model": "hybrid", "backbone": "densenet121"})
    assert scratch.model.weights is None and scratch.train.preset == "default"
    assert (scratch.features.kind, scratch.features.n_mels) == ("mfcc", 128)
    cnn = space.run_config({**values, "model": "cnn14_16k"})
    assert cnn.features == _features("cnn14_16k") and cnn.model.weights
    # Without weights nothing pretrained is searched.
    plain = tune_mod.SearchSpace(tune_mod.resolve_space(), ("hybrid",), {"train": {"data": "d"}})
    assert not {"backbone", "trunk_lr_scale"} & set(plain.space)


def test_study_plans_panns_models_on_their_own_front_end(tfrecords_16k, tiny_tfrecords,
                                                          tmp_path):
    from esc50tf import study

    runs = study.plan_study(tfrecords_16k, tmp_path, models="cnn14_16k,gru", preset="default",
                            kinds=["mel", "mfcc"])
    assert [r.name for r in runs] == ["cnn14_16k-mel-default", "gru-mel-default",
                                      "gru-mfcc-default"]
    assert runs[0].config.features == _features("cnn14_16k")
    # Named explicitly on clips of another rate: the plan stops with the rebuild command.
    with pytest.raises(Esc50Error, match="build-tfrecords .*--sample-rate 16000"):
        study.plan_study(tiny_tfrecords, tmp_path, models="cnn14_16k", preset="default")
