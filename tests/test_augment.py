"""Tests for esc50tf.augment: statistics of each layer, mixing, config, JAX.

Identity at inference, seeds, config and `.keras` round trips, tf.data, XLA
and mixed precision of every augmentation layer: tests/test_layers.py.
"""

import json
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from esc50tf import augment, presets  # noqa: E402
from esc50tf.augment import mixing, spectrogram  # noqa: E402
from esc50tf.errors import Esc50Error  # noqa: E402
from layer_testing import shifts_of, snr_db  # noqa: E402

SR = 1000  # small sample rate keeps arrays small: 0.1 s = 100 samples
_np = keras.ops.convert_to_numpy


def _wave(batch=6, samples=3000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.5, 0.5, (batch, samples)).astype("float32")


def _image(batch=4, height=24, width=20, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (batch, height, width, channels)).astype("float32")


# ---------------------------------------------------------------------------
# Inference (the shared layer checks are in tests/test_layers.py).


def test_random_crop_is_centre_crop_at_inference():
    x = _wave(samples=3000)
    layer = augment.RandomCrop(2000, seed=0)
    for out in (layer(x), layer(x, training=False)):
        np.testing.assert_array_equal(_np(out), x[:, 500:2500])
    exact = augment.RandomCrop(3000, seed=0)
    np.testing.assert_array_equal(_np(exact(x, training=True)), x)


# ---------------------------------------------------------------------------
# Statistics of each layer.


def test_time_shift_is_a_circular_roll_within_range():
    x = _wave(batch=64, samples=2000, seed=1)
    layer = augment.RandomTimeShift(0.1, SR, seed=0)
    assert layer.max_shift == 100
    out = _np(layer(x, training=True))
    shifts = np.array(shifts_of(x, out, 100))
    assert None not in shifts.tolist()
    assert shifts.min() < -50 and shifts.max() > 50, shifts
    np.testing.assert_allclose(np.sum(out**2, 1), np.sum(x**2, 1), rtol=1e-6)


def test_time_shift_zero_is_identity_in_training():
    x = _wave()
    out = augment.RandomTimeShift(0.0, SR, seed=0)(x, training=True)
    np.testing.assert_array_equal(_np(out), x)


def test_random_crop_starts_cover_range_and_short_clips_are_padded():
    x = np.tile(np.arange(1000, dtype="float32"), (200, 1))
    out = _np(augment.RandomCrop(600, seed=0)(x, training=True))
    starts = out[:, 0]
    windows = starts[:, None] + np.arange(600, dtype="float32")
    np.testing.assert_array_equal(out, windows)
    assert starts.min() >= 0 and starts.max() <= 400
    assert starts.min() < 40 and starts.max() > 360
    short = augment.RandomCrop(1200, seed=0)
    for training in (True, False):
        padded = _np(short(x[:2], training=training))
        np.testing.assert_array_equal(padded[:, :1000], x[:2])
        np.testing.assert_array_equal(padded[:, 1000:], 0.0)


def test_add_noise_snr_in_range_and_silence_stays_finite():
    t = np.arange(44100) / 44100.0
    rng = np.random.default_rng(0)
    amps = rng.uniform(0.01, 0.9, 48)
    x = (amps[:, None] * np.sin(2 * np.pi * 440 * t)).astype("float32")
    x[0] = 0.0
    out = _np(
        augment.AddNoise(snr_db_range=(5.0, 25.0), seed=0)(x, training=True)
    )
    np.testing.assert_array_equal(out[0], 0.0)
    snr = snr_db(x[1:], out[1:])
    assert np.all(snr >= 5.0 - 0.5) and np.all(snr <= 25.0 + 0.5), snr
    assert snr.min() < 9.0 and snr.max() > 21.0, snr
    # The SNR does not depend on the loudness of the clip.
    assert abs(np.corrcoef(amps[1:], snr)[0, 1]) < 0.5


def test_study_noise_level_and_clipping():
    x = np.zeros((8, 20000), "float32")
    out = _np(augment.StudyNoise(0.05, seed=0)(x, training=True))
    assert abs(out.std() - 0.05) < 0.001
    loud = np.full((4, 5000), 0.99, "float32")
    out = _np(augment.StudyNoise(0.05, seed=0)(loud, training=True))
    assert out.max() == 1.0 and out.min() > 0.7
    assert np.mean(out == 1.0) > 0.3


def test_gain_in_range_and_spread():
    x = np.ones((200, 10), "float32")
    out = _np(augment.RandomGain(-12.0, 3.0, seed=0)(x, training=True))
    gain_db = 20 * np.log10(out[:, 0])
    assert gain_db.min() >= -12.0 - 1e-4 and gain_db.max() <= 3.0 + 1e-4
    assert gain_db.min() < -11.0 and gain_db.max() > 2.0
    assert abs(gain_db.mean() - (-4.5)) < 1.0


def _runs(mask_1d):
    """Lengths of the runs of True in a 1-D bool array."""
    padded = np.concatenate([[0], mask_1d.astype(int), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return edges[1::2] - edges[::2]


@pytest.mark.parametrize("axis", ["freq", "time"])
def test_spec_augment_single_mask_width_and_position(axis):
    freq_param, time_param = (8, 0) if axis == "freq" else (0, 12)
    param = freq_param or time_param
    layer = augment.SpecAugment(freq_param, time_param, 1, 1, mask_value=0.0, seed=0)
    x = np.ones((600, 40, 32), "float32")
    out = _np(layer(x, training=True))
    masked = out == 0.0
    lines = masked.all(axis=1) if axis == "freq" else masked.all(axis=2)
    # Masked cells are exactly whole lines of the masked axis.
    other = lines[:, None, :] if axis == "freq" else lines[:, :, None]
    np.testing.assert_array_equal(masked, np.broadcast_to(other, masked.shape))
    widths = lines.sum(axis=1)
    for row in lines:
        assert len(_runs(row)) <= 1  # one contiguous band inside the array
    assert widths.max() == param  # the full width [0, param] is reachable
    assert (widths == 0).any()
    # Widths uniform on {0, ..., param}: no value over- or under-drawn.
    counts = np.bincount(widths, minlength=param + 1)
    expected = 600 / (param + 1)
    assert 0.5 * expected < counts.min() and counts.max() < 1.6 * expected, counts
    # Positions cover both ends of the axis.
    size = lines.shape[1]
    assert lines[:, 0].any() and lines[:, size - 1].any()


def test_spec_augment_mean_value_4d_and_oversized_param():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 1.0, (16, 20, 10, 2)).astype("float32")
    layer = augment.SpecAugment(50, 0, num_freq_masks=1, num_time_masks=0, seed=1)
    out = _np(layer(x, training=True))
    changed = (out != x).all(axis=(1, 3))  # [batch, bins]
    assert changed.sum(axis=1).max() <= 10
    assert changed.sum(axis=1).max() >= 8
    means = x.mean(axis=(1, 2, 3))
    for i in range(16):
        np.testing.assert_allclose(out[i][:, changed[i]], means[i], rtol=1e-5)
        np.testing.assert_array_equal(out[i][:, ~changed[i]], x[i][:, ~changed[i]])


def test_rotate_quarter_turn_matches_rot90():
    img = _image(batch=2, height=9, width=9, channels=2)
    angles = np.array([math.pi / 2, 0.0], "float32")
    out = _np(spectrogram.rotate_images(img, angles))
    np.testing.assert_allclose(out[0], np.rot90(img[0], k=1, axes=(0, 1)), atol=1e-5)
    np.testing.assert_allclose(out[1], img[1], atol=1e-6)


def test_image_augment_flips_and_rotation():
    x = _image(batch=64, channels=1)
    flips = augment.StudyImageAugment(0.0, flip_horizontal=True, seed=0)
    out = _np(flips(x, training=True))
    same = np.array([np.array_equal(o, i) for o, i in zip(out, x)])
    flipped = np.array([np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x)])
    assert np.all(same ^ flipped)
    assert 16 < flipped.sum() < 48
    flat = np.ones((8, 30, 20), "float32")
    rotated = augment.StudyImageAugment(20.0, seed=0)(flat, training=True)
    np.testing.assert_allclose(_np(rotated), flat, rtol=1e-6)
    moved = augment.StudyImageAugment(20.0, seed=0)(x, training=True)
    assert not np.allclose(_np(moved), x)


# ---------------------------------------------------------------------------
# Batch mixing.


def _unmix_labels(y_mix):
    """For labels y = eye(b): lam_i and partner j of every mixed row."""
    b = y_mix.shape[0]
    lam = y_mix[np.arange(b), np.arange(b)]
    others = y_mix.copy()
    others[np.arange(b), np.arange(b)] = -1.0
    partner = np.where(lam < 1.0 - 1e-6, others.argmax(axis=1), np.arange(b))
    return lam, partner


def test_mixup_soft_labels_and_beta_distribution():
    b, alpha = 1500, 0.4
    x = np.arange(b, dtype="float32")[:, None] * np.ones((1, 3), "float32")
    y = np.eye(b, dtype="float32")
    x_mix, y_mix = augment.mixup(x, y, alpha=alpha, seed=0)
    x_mix = _np(x_mix)
    y_mix = _np(y_mix)
    np.testing.assert_allclose(y_mix.sum(axis=1), 1.0, atol=1e-5)
    lam, partner = _unmix_labels(y_mix)
    np.testing.assert_allclose(
        x_mix[:, 0], lam * np.arange(b) + (1 - lam) * partner, rtol=1e-4, atol=1e-2
    )
    # The partners form a permutation of the batch (rows with lam == 1 in
    # float32 hide their partner).
    moved = partner != np.arange(b)
    assert moved.mean() > 0.95
    assert len(np.unique(partner[moved])) == moved.sum()
    lam = lam[moved]
    assert abs(lam.mean() - 0.5) < 0.03
    assert abs(lam.var() - 1 / (4 * (2 * alpha + 1))) < 0.02
    # Two-sample Kolmogorov-Smirnov distance to numpy's Beta sampler.
    reference = np.random.default_rng(0).beta(alpha, alpha, 200_000)
    grid = np.linspace(0, 1, 1001)
    ecdf = np.searchsorted(np.sort(lam), grid, side="right") / lam.size
    ref_cdf = np.searchsorted(np.sort(reference), grid, side="right") / reference.size
    assert np.abs(ecdf - ref_cdf).max() < 0.05


def test_mixup_seed_semantics_and_dtypes():
    x = _wave(batch=16, samples=50).astype("float16")
    y = np.eye(16, dtype="float32")
    a = augment.mixup(x, y, 0.2, seed=3)
    b = augment.mixup(x, y, 0.2, seed=3)
    np.testing.assert_array_equal(*(_np(t[1]) for t in (a, b)))
    assert keras.backend.standardize_dtype(a[0].dtype) == "float16"
    assert keras.backend.standardize_dtype(a[1].dtype) == "float32"
    generator = keras.random.SeedGenerator(3)
    c = _np(augment.mixup(x, y, 0.2, seed=generator)[1])
    d = _np(augment.mixup(x, y, 0.2, seed=generator)[1])
    assert not np.array_equal(c, d)
    with pytest.raises(ValueError, match="alpha"):
        augment.mixup(x, y, alpha=0.0)


def _gain_db_reference(sound, sample_rate, mode, min_db=-80.0):
    """Tokozume et al.'s compute_gain (loop over frames), max over frames."""
    n_fft = 4096 if sample_rate > 30000 else 2048
    stride = n_fft // 2
    gains = []
    for i in range(0, len(sound) - n_fft + 1, stride):
        frame = sound[i : i + n_fft].astype("float64")
        if mode == "rms":
            gains.append(np.mean(frame**2))
        else:
            spec = np.fft.rfft(np.hanning(n_fft + 1)[:-1] * frame)
            weight = mixing.a_weighting_db(sample_rate, n_fft)
            gains.append(np.sum(np.abs(spec) ** 2 * np.power(10, weight / 10)))
    gain = np.maximum(np.array(gains), np.power(10, min_db / 10))
    return np.max(10 * np.log10(gain))


@pytest.mark.parametrize("gain_mode", ["rms", "a_weighting"])
def test_between_class_mix_matches_reference(gain_mode):
    sample_rate, b = 16000, 6
    t = np.arange(8000) / sample_rate
    rng = np.random.default_rng(1)
    freqs = rng.uniform(100, 4000, b)
    amps = np.array([0.9, 0.02, 0.5, 0.1, 0.3, 0.005])
    x = (amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * t)).astype("float32")
    x *= np.linspace(0.2, 1.0, 8000, dtype="float32")  # frames differ in power
    y = np.eye(b, dtype="float32")
    x_mix, y_mix = augment.between_class_mix(
        x, y, seed=0, sample_rate=sample_rate, gain_mode=gain_mode
    )
    x_mix = _np(x_mix)
    y_mix = _np(y_mix)
    np.testing.assert_allclose(y_mix.sum(axis=1), 1.0, atol=1e-5)
    assert np.all((y_mix > 0).sum(axis=1) == 2)  # always a pair of classes
    r, partner = _unmix_labels(y_mix)
    gains = np.array([_gain_db_reference(s, sample_rate, gain_mode) for s in x])
    for i in range(b):
        j = partner[i]
        p = 1.0 / (1 + 10 ** ((gains[i] - gains[j]) / 20) * (1 - r[i]) / r[i])
        expected = (p * x[i] + (1 - p) * x[j]) / np.sqrt(p**2 + (1 - p) ** 2)
        np.testing.assert_allclose(x_mix[i], expected, rtol=1e-3, atol=1e-5)


def test_between_class_mix_pairs_other_classes_only():
    x = _wave(batch=12, samples=3000)
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    y = np.eye(4, dtype="float32")[labels]
    _, y_mix = augment.between_class_mix(x, y, seed=1, sample_rate=SR, gain_mode="rms")
    y_mix = _np(y_mix)
    # Own class keeps weight r < 1 and exactly one other class gets the rest.
    own = y_mix[np.arange(12), labels]
    assert np.all(own < 1.0) and np.all(own > 0.0)
    assert np.all((y_mix > 0).sum(axis=1) == 2)
    # A batch of a single class is returned unmixed.
    same = np.eye(4, dtype="float32")[np.zeros(5, int)]
    x_same, y_same = augment.between_class_mix(x[:5], same, seed=1, sample_rate=SR)
    np.testing.assert_allclose(_np(x_same), x[:5], rtol=1e-6)
    np.testing.assert_allclose(_np(y_same), same)


@pytest.mark.parametrize("mode", ["mixup", "bc"])
def test_batch_mixer_in_tf_data_and_reproducible(mode):
    x = _wave(batch=16, samples=3000)
    labels = np.arange(16) % 4

    def run(seed):
        mixer = augment.BatchMixer(
            mode, alpha=0.5, seed=seed, num_classes=4, sample_rate=SR
        )
        ds = tf.data.Dataset.from_tensor_slices((x, labels)).batch(8).map(mixer)
        return [(a.numpy(), b.numpy()) for a, b in ds]

    first, again = run(0), run(0)
    assert len(first) == 2
    for (xa, ya), (xb, yb) in zip(first, again):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        assert ya.shape == (8, 4) and ya.dtype == np.float32
        np.testing.assert_allclose(ya.sum(axis=1), 1.0, atol=1e-5)
    # The second batch gets fresh draws, not a replay of the first.
    assert not np.allclose(first[0][1], first[1][1])
    with pytest.raises(ValueError, match="mode"):
        augment.BatchMixer("cutmix")


@pytest.mark.slow
def test_mixing_functions_compile_with_xla():
    generator = keras.random.SeedGenerator(0)
    x = tf.constant(_wave(batch=8, samples=4096))
    y = tf.constant(np.eye(8, dtype="float32"))
    step = tf.function(
        lambda a, b: (
            augment.mixup(a, b, 0.3, seed=generator),
            augment.between_class_mix(a, b, seed=generator, sample_rate=SR),
        ),
        jit_compile=True,
    )
    (xm, ym), (xb, yb) = step(x, y)
    for labels in (ym, yb):
        np.testing.assert_allclose(labels.numpy().sum(axis=1), 1.0, atol=1e-5)
    assert np.all(np.isfinite(xm.numpy())) and np.all(np.isfinite(xb.numpy()))


# ---------------------------------------------------------------------------
# Configuration and builders.


def test_default_config_builds_nothing():
    config = augment.AugmentConfig()
    assert augment.build_waveform_augmenter(config, SR, seed=0) is None
    assert augment.build_spectrogram_augmenter(config, seed=0) is None
    assert augment.build_batch_mixer(config, num_classes=50) is None


def test_config_dict_round_trip_through_json():
    config = augment.AugmentConfig(
        crop_seconds=2.0,
        time_shift_seconds=0.2,
        gain_db=(-6.0, 3.0),
        noise_snr_db=(10.0, 30.0),
        freq_mask_param=20,
        mix="mixup",
        mixup_alpha=0.3,
    )
    data = json.loads(json.dumps(config.to_dict()))
    assert augment.AugmentConfig.from_dict(data) == config


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("time_shift_seconds", -0.1, "[0.0, inf)"),
        ("study_noise_factor", 2.0, "[0.0, 1.0]"),
        ("gain_db", (6.0, -6.0), "min <= max"),
        ("noise_snr_db", (10.0, 500.0), "<= 100.0"),
        ("freq_mask_param", -1, ">= 0"),
        ("num_time_masks", 1.5, ">= 0"),
        ("image_rotation_degrees", 270.0, "[0.0, 180.0]"),
        ("image_flip_vertical", "yes", "True or False"),
        ("mask_value", "median", "a number"),
        ("mix", "cutmix", "'mixup'"),
        ("mixup_alpha", 0.0, "(0.0, inf)"),
    ],
)
def test_config_validation_names_value_and_range(field, value, allowed):
    with pytest.raises(Esc50Error) as info:
        augment.AugmentConfig(**{field: value})
    message = str(info.value)
    assert field in message and repr(value) in message and allowed in message


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(Esc50Error, match="time_shift_secs.*valid keys"):
        augment.AugmentConfig.from_dict({"time_shift_secs": 0.1})


def test_study_preset_builds_shift_and_noise():
    config = augment.AugmentConfig.from_dict(presets.STUDY_AUGMENT)
    assert config.time_shift_seconds == 0.1 and config.study_noise_factor == 0.05
    augmenter = augment.build_waveform_augmenter(config, 44100, seed=0)
    kinds = [type(layer) for layer in augmenter.layers]
    assert kinds == [augment.RandomTimeShift, augment.StudyNoise]
    assert augmenter.layers[0].max_shift == 4410
    assert augmenter.layers[1].factor == 0.05
    assert augment.build_spectrogram_augmenter(config) is None


def _seed_counters(model):
    return [
        int(_np(layer.seed_generator.state)[1])
        for layer in model.layers
        if hasattr(layer, "seed_generator")
    ]


@pytest.mark.slow
def test_built_augmenters_train_in_jit_compiled_model():
    config = augment.AugmentConfig(
        crop_seconds=2.0,
        time_shift_seconds=0.1,
        gain_db=(-6.0, 6.0),
        noise_snr_db=(10.0, 30.0),
        study_noise_factor=0.05,
        freq_mask_param=4,
        time_mask_param=4,
        image_rotation_degrees=5.0,
        image_flip_horizontal=True,
        image_noise_stddev=0.01,
    )
    wave_aug = augment.build_waveform_augmenter(config, SR, seed=0)
    spec_aug = augment.build_spectrogram_augmenter(config, seed=0)
    assert [type(layer).__name__ for layer in wave_aug.layers] == [
        "RandomCrop",
        "RandomTimeShift",
        "RandomGain",
        "AddNoise",
        "StudyNoise",
    ]
    assert [type(layer).__name__ for layer in spec_aug.layers] == [
        "SpecAugment",
        "StudyImageAugment",
    ]
    wave_in = keras.Input(shape=(3000,))
    h = wave_aug(wave_in)
    h = keras.layers.Reshape((40, 50))(h)  # 2000 cropped samples as "frames"
    h = spec_aug(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    out = keras.layers.Dense(3, activation="softmax")(h)
    model = keras.Model(wave_in, out)
    model.compile(
        optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=True
    )
    x = _wave(batch=16, samples=3000)
    labels = np.arange(16) % 3
    before = _seed_counters(wave_aug) + _seed_counters(spec_aug)
    history = model.fit(x, labels, batch_size=8, epochs=1, verbose=0)
    after = _seed_counters(wave_aug) + _seed_counters(spec_aug)
    assert np.isfinite(history.history["loss"][0])
    # Every layer drew random numbers in each of the 2 compiled train steps.
    assert all(b_ > a_ for a_, b_ in zip(before, after)), (before, after)
    assert model.predict(x, verbose=0).shape == (16, 3)


_JAX_SCRIPT = r"""
import numpy as np, keras, jax
from esc50tf import augment as A
assert keras.backend.backend() == "jax"
rng = np.random.default_rng(0)
x = rng.uniform(-0.5, 0.5, (8, 3000)).astype("float32")
s = rng.normal(size=(8, 40, 32)).astype("float32")
layers = [(A.RandomTimeShift(0.1, 1000, seed=1), x), (A.AddNoise((10, 20), seed=1), x),
          (A.StudyNoise(0.05, seed=1), x), (A.RandomGain(-6, 6, seed=1), x),
          (A.SpecAugment(8, 10, 2, 2, seed=1), s),
          (A.StudyImageAugment(10.0, True, True, 0.1, seed=1), s)]
for layer, data in layers:
    assert np.array_equal(np.asarray(layer(data)), data)
    out = np.asarray(layer(data, training=True))
    assert out.shape == data.shape and not np.array_equal(out, data)
out = np.asarray(A.RandomTimeShift(0.1, 1000, seed=3)(x, training=True))
for a, b in zip(x, out):
    assert any(np.array_equal(np.roll(a, k), b) for k in range(-100, 101))
crop = A.RandomCrop(2000, seed=1)
assert np.array_equal(np.asarray(crop(x)), x[:, 500:2500])
config = A.AugmentConfig(
    crop_seconds=2.0, time_shift_seconds=0.1, noise_snr_db=(10, 30),
    freq_mask_param=4, time_mask_param=4, image_flip_horizontal=True,
)
wave = A.build_waveform_augmenter(config, 1000, seed=0)
spec = A.build_spectrogram_augmenter(config, seed=0)
inputs = keras.Input((3000,))
h = spec(keras.layers.Reshape((40, 50))(wave(inputs)))
h = keras.layers.GlobalAveragePooling1D()(h)
model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
model.compile("adam", "sparse_categorical_crossentropy", jit_compile=True)
layers = wave.layers + spec.layers
before = [int(np.asarray(l.seed_generator.state)[1]) for l in layers]
history = model.fit(x, np.arange(8) % 3, batch_size=4, epochs=1, verbose=0)
loss = history.history["loss"][0]
after = [int(np.asarray(l.seed_generator.state)[1]) for l in layers]
assert np.isfinite(loss) and all(b > a for a, b in zip(before, after)), (before, after)
mix = jax.jit(lambda a, b: (
    A.mixup(a, b, 0.3, seed=7), A.between_class_mix(a, b, seed=8, sample_rate=1000)
))
(xm, ym), (xb, yb) = mix(x, np.eye(8, dtype="float32"))
assert np.allclose(np.asarray(ym).sum(1), 1.0)
assert np.allclose(np.asarray(yb).sum(1), 1.0)
print("JAX OK")
"""


@pytest.mark.slow
def test_layers_run_under_jax_backend():
    pytest.importorskip("jax")
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, KERAS_BACKEND="jax")
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", _JAX_SCRIPT], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "JAX OK" in result.stdout


# ---------------------------------------------------------------------------
# The registry: one entry per augmentation feeds the builders, the CLI and tune.


def test_every_config_field_is_claimed_by_exactly_one_augmentation():
    from esc50tf.augment import registry
    from esc50tf.config import field_names

    claimed = [f for entry in registry.AUGMENTATIONS for f in entry.fields]
    assert sorted(claimed) == sorted(field_names(augment.AugmentConfig))
    assert len(claimed) == len(set(claimed))
    assert len(registry.names()) == len(set(registry.names()))
    assert {entry.stage for entry in registry.AUGMENTATIONS} == set(registry.STAGES)
    assert [e.name for e in registry.AUGMENTATIONS if e.stage == "batch"] == ["mix"]
    offsets = [entry.seed_offset for entry in registry.AUGMENTATIONS]
    assert len(offsets) == len(set(offsets)), "each augmentation draws from its own seed"
    with pytest.raises(Esc50Error, match="cutmix.*valid: crop"):
        registry.get("cutmix")


def test_every_flagged_or_searched_field_is_read_by_an_augmentation():
    import dataclasses

    from esc50tf.augment import registry
    from esc50tf.config import about

    read = {f for entry in registry.AUGMENTATIONS for f in entry.fields}
    for field in dataclasses.fields(augment.AugmentConfig):
        s = about(field)
        if s.flag or s.search:
            assert field.name in read, field.name


def test_every_augment_flag_sets_its_field_through_the_parser():
    from esc50tf import cli
    from esc50tf.cli import options
    from esc50tf.config import cli_options

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    flags = [o[0] for o in cli_options(augment.AugmentConfig, "augment")]
    assert [opt[0] for opt in options.AUGMENT_OPTIONS] == flags
    for command in ("train", "tune", "study"):
        known = {s for a in sub[command]._actions for s in a.option_strings}
        assert set(flags) <= known, command
    # Each flag lands on its AugmentConfig field with the config's value type.
    argv = ["--crop-seconds", "0.5", "--test-crops", "3", "--time-shift", "0.2",
            "--gain-db=-3,3", "--noise-snr", "10,30", "--study-noise", "0.05",
            "--fmin-jitter", "10", "--fmax-jitter", "2000",
            "--freq-mask", "8", "--time-mask", "12", "--num-freq-masks", "1",
            "--num-time-masks", "3", "--image-rotation", "5", "--mix", "bc",
            "--mixup-alpha", "0.4"]
    args = sub["train"].parse_args(["--model", "cnn_small", *argv])
    over = options.overrides(args, options.AUGMENT_OPTIONS)["augment"]
    assert {o[2] for o in options.AUGMENT_OPTIONS} == set(over)
    config = augment.AugmentConfig.from_dict(over)
    assert config.gain_db == (-3.0, 3.0) and config.noise_snr_db == (10.0, 30.0)
    assert (config.test_crops, config.num_time_masks, config.mix) == (3, 3, "bc")
    assert (config.fmin_jitter_hz, config.fmax_jitter_hz) == (10, 2000)


def test_tune_space_takes_the_augment_fields_search_params():
    from esc50tf import tune
    from esc50tf.config import search_params

    params = search_params(augment.AugmentConfig, "augment")
    assert [p["name"] for p in params] == [
        "time_shift", "noise_snr", "freq_mask", "time_mask", "mixup_alpha"]
    for p in params:
        assert tune.PARAMS[p["name"]] == tune.Param(**p)
        assert tune.PARAMS[p["name"]].section == "augment"
    augment_names = [n for n, p in tune.PARAMS.items() if p.section == "augment"]
    assert augment_names == [p["name"] for p in params]


def test_builders_follow_the_registry_order_and_seed_offsets():
    from esc50tf.augment import registry

    config = augment.AugmentConfig(crop_seconds=1.0, time_shift_seconds=0.1,
                                   gain_db=(-1.0, 1.0), freq_mask_param=2,
                                   image_flip_vertical=True, mix="mixup")
    wave = augment.build_waveform_augmenter(config, SR, seed=100)
    spec = augment.build_spectrogram_augmenter(config, seed=100)
    mixer = augment.build_batch_mixer(config, num_classes=5, seed=100)
    by_class = {"RandomCrop": "crop", "RandomTimeShift": "time_shift", "RandomGain": "gain",
                "SpecAugment": "spec_augment", "StudyImageAugment": "study_image",
                "BatchMixer": "mix"}
    built = list(wave.layers) + list(spec.layers) + [mixer]
    assert [by_class[type(x).__name__] for x in built] == [
        "crop", "time_shift", "gain", "spec_augment", "study_image", "mix"]
    for thing in built:
        entry = registry.get(by_class[type(thing).__name__])
        assert thing.seed == 100 + entry.seed_offset
    assert mixer.num_classes == 5 and mixer.mode == "mixup"


def test_config_is_frozen_and_replace_validates():
    import dataclasses

    config = augment.AugmentConfig(noise_snr_db=[10, 30])
    assert config.noise_snr_db == (10, 30)  # a JSON list becomes a pair
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.mix = "mixup"
    assert config.replace(mix="bc").mix == "bc" and config.mix == "none"
    with pytest.raises(Esc50Error, match="mix='cutmix'"):
        config.replace(mix="cutmix")
    assert augment.AugmentConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["noise_snr_db"] == [10, 30]


def test_config_and_registry_import_without_keras():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from esc50tf import presets\n"
        "from esc50tf.augment import AugmentConfig, registry\n"
        "from esc50tf.augment.config import AugmentConfig as C\n"
        "AugmentConfig.from_dict(presets.STUDY_AUGMENT)\n"
        "from esc50tf.config import cli_options, search_params\n"
        "cli_options(C, 'augment'); search_params(C, 'augment'); registry.names()\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
