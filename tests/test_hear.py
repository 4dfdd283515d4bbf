"""The HEAR API (`esc50tf.hear`) on the reduced-width EfficientAT and PANNs fixtures: the
rules hearvalidator checks (a tf.Module with int sizes; float32 tensors of the declared
shapes; timestamps in milliseconds at one regular interval), and what the numbers are."""

import numpy as np
import pytest
import tensorflow as tf

from esc50tf import hear
from esc50tf.errors import Esc50Error


@pytest.fixture(scope="module")
def mn_weights(convert_fixture):
    return convert_fixture("mn10", "efficientat/mn_w010.pt")


@pytest.fixture(scope="module")
def dymn_weights(convert_fixture):
    return convert_fixture("dymn10", "efficientat/dymn_w005.pt")


@pytest.fixture(scope="module")
def cnn14_weights(convert_fixture):
    return convert_fixture("cnn14_16k", "panns/cnn14_16k.zip.pth")


def _noise(model, n, seconds, seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.uniform(-1, 1, (n, int(seconds * model.sample_rate))), tf.float32)


@pytest.mark.parametrize("weights, rate, size", [("mn_weights", 32000, 96),
                                                 ("dymn_weights", 32000, 48),
                                                 ("cnn14_weights", 16000, 32)])
def test_model_attributes_follow_the_hear_rules(weights, rate, size, request):
    model = hear.load_model(str(request.getfixturevalue(weights)))
    assert isinstance(model, tf.Module)
    assert model.sample_rate == rate
    for attr in ("scene_embedding_size", "timestamp_embedding_size"):
        assert isinstance(getattr(model, attr), int) and getattr(model, attr) == size


def test_timestamp_embeddings_shapes_dtypes_and_regular_millisecond_stamps(mn_weights):
    model = hear.load_model(str(mn_weights))
    audio = _noise(model, 3, 2.0)
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    assert embeddings.dtype == tf.float32 and timestamps.dtype == tf.float32
    steps = int(np.floor((2.0 * 1000 - 1000 / model.sample_rate) / hear.HOP_MS)) + 1
    assert embeddings.shape == (3, steps, model.timestamp_embedding_size)
    assert timestamps.shape == embeddings.shape[:2]
    diff = np.diff(timestamps.numpy(), axis=1)
    np.testing.assert_allclose(diff, hear.HOP_MS, atol=1e-3)  # HEAR: within 1 ms of regular
    assert timestamps.numpy()[:, 0].max() == 0.0 and timestamps.numpy().max() <= 2000.0
    # Each row is the embedding of the window centred at its timestamp.
    sound = audio.numpy()[1]
    window = int(hear.WINDOW_SECONDS * model.sample_rate)
    k = 10
    centre = int(round(timestamps.numpy()[1, k] * model.sample_rate / 1000))
    padded = np.pad(sound, (window // 2, window - window // 2))
    want = model.embed(padded[None, centre:centre + window])[0]
    np.testing.assert_allclose(embeddings.numpy()[1, k], want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(embeddings.numpy()[1, 0], embeddings.numpy()[1, k])


@pytest.mark.parametrize("weights, name, width", [("mn_weights", "mn10", 0.1),
                                                  ("dymn_weights", "dymn10", 0.05)])
def test_scene_embeddings_are_the_clip_embedding(weights, name, width, request):
    from esc50tf.models import efficientat
    from esc50tf.pretrained import convert, store

    weights = request.getfixturevalue(weights)
    model = hear.load_model(str(weights))
    audio = _noise(model, 4, 1.5, seed=1)
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.dtype == tf.float32 and scene.shape == (4, model.scene_embedding_size)
    reference = efficientat.build_reference(name, width=width)
    convert.load_into(reference, store.load_weights(weights)[0])
    want = np.asarray(reference(audio.numpy())["embedding"])
    np.testing.assert_allclose(scene.numpy(), want, rtol=1e-5, atol=1e-6)


def test_variable_length_sounds_in_a_list(cnn14_weights):
    model = hear.load_model(str(cnn14_weights))
    rng = np.random.default_rng(2)
    sounds = [rng.uniform(-1, 1, n).astype(np.float32) for n in (800, 16000, 24000)]
    scene = hear.get_scene_embeddings(sounds, model)
    assert scene.shape == (3, model.scene_embedding_size)
    alone = hear.get_scene_embeddings(sounds[1][None], model)
    np.testing.assert_allclose(scene.numpy()[1], alone.numpy()[0], rtol=1e-5, atol=1e-6)
    embeddings, timestamps = hear.get_timestamp_embeddings(sounds, model)
    assert embeddings.shape[:2] == timestamps.shape == (3, 30)  # 1.5 s / 50 ms
    stamps = timestamps.numpy()
    assert stamps[2, -1] == pytest.approx(1450.0) and stamps[0, -1] == 0.0


def test_bad_input_is_refused(mn_weights, tmp_path):
    model = hear.load_model(str(mn_weights))
    with pytest.raises(ValueError, match=r"\[n_sounds, n_samples\]"):
        hear.get_scene_embeddings(np.zeros(100, np.float32), model)
    with pytest.raises(Esc50Error, match="needs a weights file"):
        hear.load_model()
    with pytest.raises(Esc50Error, match="neither a weights file"):
        hear.load_model(str(tmp_path / "missing.npz"))
