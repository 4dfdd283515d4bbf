"""Every registered model: builds, trains a step, round-trips .keras; the hybrid keeps time."""

import numpy as np
import pytest

from esc50tf import models
from esc50tf.errors import Esc50Error
from esc50tf.frontend import FeatureConfig
from esc50tf.models import ModelConfig
from esc50tf.models.build import build_model

SR, N = 8000, 8000  # 1 s at 8 kHz
FEATURES = FeatureConfig(sample_rate=SR, n_fft=256, hop_length=64, n_mels=32)  # 126 frames
# The PANNs and EfficientAT families have their own front ends and are tested at reduced
# width in test_panns.py and test_efficientat.py.
KERAS_MODELS = [s.name for s in models.specs()
                if s.keras and s.family not in ("panns", "efficientat")]
CLASSIC_MODELS = [s.name for s in models.specs() if not s.keras]


def _small(name):
    """Small heads/inputs so that every model fits a CPU test."""
    if name == "alexnet":
        return ModelConfig(name=name, image_size=64, dense_units=32)
    if name == "vgg16":
        return ModelConfig(name=name, dense_units=32)
    return ModelConfig(name=name)


def test_registry_lists_every_study_model():
    expected = {"knn", "svm", "random_forest", "alexnet", "vgg16", "resnet50", "densenet121",
                "lstm", "bilstm", "gru", "bigru", "hybrid", "hybrid_seed"}
    assert expected <= set(models.names())
    for spec in models.specs():
        assert spec.description and spec.family in ("classic", "cnn", "rnn", "hybrid", "panns",
                                                     "efficientat")


def test_unknown_model_lists_valid_names():
    with pytest.raises(Esc50Error) as err:
        models.get("resnet51")
    assert "resnet51" in str(err.value) and "hybrid" in str(err.value) and "knn" in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize("name", KERAS_MODELS)
def test_model_trains_a_step_and_round_trips(name, tmp_path):
    import keras

    model = build_model(_small(name), FEATURES, num_classes=3, num_samples=N, seed=0)
    assert model.input_shape == (None, N)
    assert model.output_shape == (None, 3)
    assert model.get_layer("predictions").dtype_policy.name == "float32"
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, (4, N)).astype("float32")
    y = np.array([0, 1, 2, 1])
    # Eager: tracing a 121-layer DenseNet costs a minute and proves nothing here.
    model.compile("adam", "sparse_categorical_crossentropy", run_eagerly=True)
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.train_on_batch(x, y)
    changed = [not np.array_equal(a, w.numpy()) for a, w in zip(before, model.trainable_weights)]
    assert any(changed)
    probs = np.asarray(model(x, training=False))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), probs, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_hybrid_keeps_time_and_attention_sums_to_one():
    import keras

    model = build_model(ModelConfig(name="hybrid"), FEATURES, 3, N, seed=0)
    gru_in = model.get_layer("bigru").input
    steps = gru_in.shape[1]
    assert steps == int(np.ceil(FEATURES.num_frames(N) / 32)) and steps > 1
    pool = model.get_layer("attention_pool")
    features = keras.Model(model.input, pool.input)
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (2, N)).astype("float32")
    alpha = np.asarray(pool.attention(features(x)))
    assert alpha.shape == (2, steps)
    np.testing.assert_allclose(alpha.sum(axis=1), 1.0, rtol=1e-6)
    assert np.all(alpha > 0)
    # The study's graph collapses time: one step, attention weight 1.
    seed_model = build_model(ModelConfig(name="hybrid_seed"), FEATURES, 3, N, seed=0)
    assert seed_model.get_layer("bigru").input.shape[1] == 1


def test_frontend_and_softmax_under_mixed_precision():
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model(ModelConfig(name="gru"), FEATURES, 3, N, seed=0)
        assert model.get_layer("frontend").compute_dtype == "bfloat16"
        out = model.predict_on_batch(np.zeros((2, N), "float32"))
        assert out.dtype == np.float32
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_weights_need_three_channels():
    with pytest.raises(Esc50Error, match="3 input channels"):
        build_model(ModelConfig(name="resnet50", weights="w.h5", image_channels=1), FEATURES, 3, N)


@pytest.mark.parametrize("name", CLASSIC_MODELS)
@pytest.mark.parametrize("kind", ["stats", "image"])
def test_classic_models_fit_features(name, kind):
    import tensorflow as tf

    from esc50tf.models import classic

    cfg = ModelConfig(name=name, classic_features=kind, image_size=32)
    featurize = classic.make_featurizer(FEATURES, cfg)
    rng = np.random.default_rng(0)
    t = np.arange(N) / SR
    # Three classes of tones at different pitches, random phase and noise.
    x = np.stack([0.3 * np.sin(2 * np.pi * (300 * (1 + i % 3)) * t + rng.uniform(0, 6))
                  + 0.01 * rng.standard_normal(N) for i in range(30)]).astype("float32")
    y = np.arange(30) % 3
    feats = featurize(tf.constant(x)).numpy()
    assert feats.shape == (30, 2 * (32 + 20) if kind == "stats" else 32 * 32)
    est = models.get(name).builder(cfg, seed=0).fit(feats[:21], y[:21])
    probs = classic.predict_proba(est, feats[21:], 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (probs.argmax(axis=1) == y[21:]).mean() >= 0.8
