"""Every registered model, from one table: builds, trains a step, saves and reloads through
its task; the hybrid keeps time."""

from pathlib import Path

import numpy as np
import pytest

from esc50tf import models
from esc50tf.errors import Esc50Error
from esc50tf.frontend import FeatureConfig
from esc50tf.models import ModelConfig
from esc50tf.models.build import build_model

SR, N = 8000, 8000  # 1 s at 8 kHz
FEATURES = FeatureConfig(sample_rate=SR, n_fft=256, hop_length=64, n_mels=32)  # 126 frames
CLASSIC_MODELS = [s.name for s in models.specs() if not s.keras]
FIXTURES = Path(__file__).parent / "fixtures"

# The one table of every registered model (keras-hub's run_backbone_test): the smallest
# settings it builds with, whether it takes more than about 5 s, and, for a model on a
# pretrained trunk, the reduced-width fixture checkpoint it is built from. A model
# registered without a row fails `test_every_registered_model_has_a_row`.
ROWS = {
    # name: (ModelConfig settings, slow, pretrained fixture)
    "knn": ({}, False, None),
    "svm": ({}, False, None),
    "random_forest": ({}, False, None),
    "logreg": ({}, False, None),
    "alexnet": (dict(image_size=64, dense_units=32), True, None),
    "vgg16": (dict(dense_units=32), True, None),
    "resnet50": ({}, True, None),
    "densenet121": ({}, True, None),
    "cnn_small": ({}, False, None),
    "lstm": ({}, True, None),
    "bilstm": ({}, True, None),
    "gru": ({}, False, None),
    "bigru": ({}, True, None),
    "hybrid": ({}, True, None),
    "hybrid_seed": ({}, True, None),
    "cnn14": (dict(normalization="none"), True, "cnn14"),
    "cnn14_16k": (dict(normalization="none"), False, "cnn14_16k"),
    "cnn14_sed": (dict(normalization="none"), True, "cnn14_sed"),
    # The EfficientAT width-0.1 fixture, converted as each mn architecture (a weights
    # file records its width), 1 s at 32 kHz: 8-16 s a row on the shared 2-core CPU. One
    # builder makes all six (the width is its only difference), so mn10 is in the fast set.
    "mn04": (dict(normalization="none"), True, "mn04"),
    "mn05": (dict(normalization="none"), True, "mn05"),
    "mn10": (dict(normalization="none"), False, "mn10"),
    "mn20": (dict(normalization="none"), True, "mn20"),
    "mn30": (dict(normalization="none"), True, "mn30"),
    "mn40": (dict(normalization="none"), True, "mn40"),
    # The DyMN width-0.05 fixture, converted as each dymn architecture: one builder too.
    # All slow (dymn10: 10 s); the DyMN code is in the fast parity and layer tests.
    "dymn04": (dict(normalization="none"), True, "dymn04"),
    "dymn10": (dict(normalization="none"), True, "dymn10"),
    "dymn20": (dict(normalization="none"), True, "dymn20"),
}
# The reduced-width EfficientAT state dict each network's rows are built from.
EFFICIENTAT_FIXTURES = {"mn": "mn_w010.pt", "dymn": "dymn_w005.pt"}


def _row_params():
    return [pytest.param(name, marks=[pytest.mark.slow] if slow else [], id=name)
            for name, (_settings, slow, _fixture) in ROWS.items()]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """`arch -> converted weights file` of the reduced-width fixture checkpoints.

    PANNs: each architecture's own; EfficientAT: one reduced-width state dict per network
    (`EFFICIENTAT_FIXTURES`) for each of its architectures.
    """
    from esc50tf.cli.pretrained import build_reference
    from esc50tf.pretrained import architectures, store

    folder = tmp_path_factory.mktemp("weights")
    done = {}

    def get(arch):
        if arch not in done:
            checkpoint = (FIXTURES / "panns" / f"{arch}.zip.pth"
                          if architectures.family(arch) == "panns"
                          else FIXTURES / "efficientat"
                          / EFFICIENTAT_FIXTURES[architectures.get(arch)["network"]])
            done[arch], _meta = store.convert_checkpoint(
                arch, checkpoint, folder / f"{arch}.npz", build=build_reference,
                log=lambda _: None)
        return str(done[arch])

    return get


def _config(name, converted):
    """The row's RunConfig (and the clip length its data has)."""
    from esc50tf.run_config import resolve_config

    settings, _slow, fixture = ROWS[name]
    over = {"model": dict(settings), "features": FEATURES.to_dict(), "train": {"seed": 0}}
    if fixture is not None:  # the architecture fixes its front end (FamilySpec.resolve)
        over["model"]["weights"] = converted(fixture)
        over.pop("features")
    cfg = resolve_config(name, "default", overrides=over)
    return cfg, cfg.features.sample_rate  # 1 s clips


def test_registry_lists_every_study_model():
    expected = {"knn", "svm", "random_forest", "alexnet", "vgg16", "resnet50", "densenet121",
                "lstm", "bilstm", "gru", "bigru", "hybrid", "hybrid_seed"}
    assert expected <= set(models.names())
    families = [f.name for f in models.families()]
    for spec in models.specs():
        assert spec.description and spec.family in families


def test_every_registered_model_has_a_row():
    """A newly registered model fails here until ROWS says how to test it small."""
    missing = sorted(set(models.names()) - set(ROWS))
    assert not missing, f"models without a row in tests/test_models.py ROWS: {missing}"
    assert not set(ROWS) - set(models.names())


def test_a_model_registered_without_a_row_is_named():
    models.register_family("toy", "toy", "tab:pink")
    models.register("toy_net", "toy", "a toy model")(lambda x, config, num_classes: x)
    try:
        with pytest.raises(AssertionError, match=r"\['toy_net'\]"):
            test_every_registered_model_has_a_row()
    finally:
        models.registry.unregister_family("toy")


def test_unknown_model_lists_valid_names():
    with pytest.raises(Esc50Error) as err:
        models.get("resnet51")
    assert "resnet51" in str(err.value) and "hybrid" in str(err.value) and "knn" in str(err.value)


@pytest.mark.parametrize("name", _row_params())
def test_model_trains_a_step_and_round_trips(name, converted, tmp_path):
    """Through its task: builds, trains a step, saves and reloads with equal outputs."""
    from esc50tf.tasks import get_task

    task = get_task(name)
    cfg, rate = _config(name, converted)
    rng = np.random.default_rng(0)
    if not task.spec.keras:  # an estimator on fixed features
        x = rng.standard_normal((30, 8))
        y = np.arange(30) % 3
        model = task.build_model(cfg)
        task.fit(model, (x, y, None), None, cfg)
        _, probs, _ = task.predict(model, (x, y, None), num_classes=3)
        loaded = task.load(task.save(model, tmp_path))
        _, again, _ = task.predict(loaded, (x, y, None), num_classes=3)
        np.testing.assert_allclose(again, probs)
        return
    model = task.build_model(cfg, 3, rate)
    assert model.input_shape == (None, rate)
    assert model.output_shape == (None, 3)
    assert model.get_layer("predictions").dtype_policy.name == "float32"
    x = rng.uniform(-0.5, 0.5, (4, rate)).astype("float32")
    y = np.array([0, 1, 2, 1])
    # Eager: tracing a 121-layer DenseNet costs a minute and proves nothing here.
    model.compile("adam", "sparse_categorical_crossentropy", run_eagerly=True)
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.train_on_batch(x, y)
    changed = [not np.array_equal(a, w.numpy()) for a, w in zip(before, model.trainable_weights)]
    assert any(changed)
    probs = np.asarray(model(x, training=False))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    loaded = task.load(task.save(model, tmp_path))
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
