"""The shared layer test (tests/layer_testing.py) on every registered esc50tf layer.

One table row per case: class, constructor arguments, input, and the options
of `run_layer_test`. `test_every_registered_layer_has_a_case` imports every
esc50tf module and fails for a registered `esc50tf>` layer without a row.
Inputs are tiny (0.25 s at 8 kHz, batch 2) to keep CPU time low.
"""

import importlib
import pkgutil

import keras
import numpy as np
import pytest

import esc50tf
from esc50tf import augment as A
from esc50tf import frontend as F
from esc50tf.frontend.kaldi import KaldiMelSpectrogram
from esc50tf.models import layers as L
from layer_testing import run_layer_test, shifts_of, snr_db

SR = 8000
WAVE = (0.4 * np.sin(2 * np.pi * 440 * np.arange(SR // 4) / SR)
        + 0.05 * np.random.default_rng(0).standard_normal((2, SR // 4))).astype("float32")
FEATS = np.random.default_rng(1).normal(-20.0, 8.0, (2, 32, 16)).astype("float32")
SEQ = np.random.default_rng(2).standard_normal((2, 7, 6)).astype("float32")
# A DyMN block's feature map [b, F, T, C] and context vector [b, H].
_dyn = np.random.default_rng(3)
DYN_MAP = _dyn.standard_normal((2, 6, 7, 4)).astype("float32")
DYN_CONTEXT = _dyn.standard_normal((2, 5)).astype("float32")
DYN_F, DYN_T = (_dyn.standard_normal((2, n, 4)).astype("float32") for n in (6, 7))
FRONT = dict(sample_rate=SR, n_fft=256, hop_length=64, n_mels=32)  # 32 frames of 0.25 s
FRONT_OPTIONS = dict(supports_unbatched=True, expected_num_trainable_weights=0)

# Augmentation inputs, as small as their invariants allow (0.1 s shifts at 1 kHz).
AUG_SR = 1000
_rng = np.random.default_rng(0)
AUG_WAVE = _rng.uniform(-0.5, 0.5, (6, 3000)).astype("float32")
AUG_SPEC = _rng.normal(size=(6, 40, 32)).astype("float32")
AUG_IMAGE = _rng.uniform(0, 1, (4, 24, 20, 3)).astype("float32")


# --- invariants of each augmentation's training output (eager, tf.data, XLA) ---


def _check_time_shift(x, out):
    shifts = shifts_of(x, out, 100)
    assert None not in shifts, shifts
    np.testing.assert_allclose(np.sum(out**2, 1), np.sum(x**2, 1), rtol=1e-6)


def _check_crop(x, out):
    assert out.shape == (x.shape[0], 2000)
    for row_in, row_out in zip(x, out):
        starts = [s for s in range(1001) if np.array_equal(row_in[s : s + 2000], row_out)]
        assert len(starts) == 1


def _check_add_noise(x, out):
    snr = snr_db(x, out)
    assert np.all(snr > 10 - 0.5) and np.all(snr < 20 + 0.5), snr


def _check_study_noise(x, out):
    residual = out - x
    assert np.all(np.abs(out) <= 1.0)
    assert abs(np.std(residual) - 0.05) < 0.005
    assert abs(np.mean(residual)) < 0.005


def _check_gain(x, out):
    ratio = out / x
    np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones_like(ratio), rtol=1e-5)
    gain_db = 20 * np.log10(ratio[:, 0])
    assert np.all(gain_db >= -6 - 1e-4) and np.all(gain_db <= 6 + 1e-4), gain_db


def _check_spec_augment(x, out):
    means = x.mean(axis=(1, 2), keepdims=True)
    changed = out != x
    # Every changed cell holds the example's mean ...
    np.testing.assert_allclose(np.where(changed, out, means * np.ones_like(out)),
                               means * np.ones_like(out), rtol=1e-5)
    # ... and changed cells form whole frames or whole bins.
    full_frames = changed.all(axis=2)
    full_bins = changed.all(axis=1)
    covered = full_frames[:, :, None] | full_bins[:, None, :]
    np.testing.assert_array_equal(changed, covered)
    assert full_frames.sum(axis=1).max() <= 2 * 10
    assert full_bins.sum(axis=1).max() <= 2 * 8


def _check_image(x, out):
    assert np.all(np.isfinite(out))
    assert not np.allclose(out, x)


# --- numpy references of the model layers -----------------------------------


def _attention_reference(layer, x):
    w, b, v = (np.asarray(t, np.float64) for t in (layer.w, layer.b, layer.v))
    scores = np.tanh(x @ w + b) @ v  # [b, T]
    alpha = np.exp(scores - scores.max(axis=1, keepdims=True))
    alpha /= alpha.sum(axis=1, keepdims=True)
    pooled = (x * alpha[..., None]).sum(axis=1)
    return (pooled, alpha) if layer.return_attention else pooled


def _sed_reference(layer, x):
    # PyTorch's max_pool1d(3, 1, 1) ignores the padding, avg_pool1d(3, 1, 1) counts zeros.
    high = np.pad(x, [(0, 0), (1, 1), (0, 0)], constant_values=-np.inf)
    zero = np.pad(x, [(0, 0), (1, 1), (0, 0)])
    peak = np.maximum(np.maximum(high[:, :-2], high[:, 1:-1]), high[:, 2:])
    return peak + (zero[:, :-2] + zero[:, 1:-1] + zero[:, 2:]) / 3


def _upsample_reference(layer, inputs):
    segments, frames_like = inputs
    index = np.minimum(np.arange(frames_like.shape[1]) // layer.ratio, segments.shape[1] - 1)
    return segments[:, index]


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _dynamic_conv_reference(layer, inputs):
    # As the DyMN reference: one kernel per example (the attention-weighted sum), then the
    # convolution with PyTorch's symmetric zero padding.
    x, context = (np.asarray(t, np.float64) for t in inputs)
    kernel, w, b = (np.asarray(a, np.float64) for a in layer.get_weights())
    attention = _softmax((context @ w + b) / layer.temperature)  # [b, K]
    if not layer.depthwise:
        return np.einsum("bfti,bio->bfto", x, np.einsum("bk,kio->bio", attention, kernel))
    k, s = layer.kernel_size, layer.strides
    pad = (k - 1) // 2
    padded = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    mixed = np.einsum("bk,ijck->bijc", attention, kernel)  # [b, k, k, C]
    f, t = ((n + 2 * pad - k) // s + 1 for n in x.shape[1:3])
    out = np.zeros((x.shape[0], f, t, x.shape[3]))
    for i in range(k):
        for j in range(k):
            out += padded[:, i:i + s * f:s, j:j + s * t:s] * mixed[:, None, None, i, j]
    return out


def _dynamic_relu_reference(layer, inputs):
    x, context = (np.asarray(t, np.float64) for t in inputs)
    kernel, bias, lambdas, init_v = (np.asarray(a, np.float64) for a in layer.get_weights())
    m, c = layer.num_pieces, x.shape[-1]
    theta = 2.0 / (1.0 + np.exp(-(context @ kernel + bias))) - 1.0
    coefficients = theta.reshape(-1, 1, 1, c, 2 * m) * lambdas + init_v
    return np.max(x[..., None] * coefficients[..., :m] + coefficients[..., m:], axis=-1)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _adapt(layer, x):
    layer.adapt(x)


KALDI_JITTER = dict(FRONT, win_length=200, fmin_jitter=10, fmax_jitter=200, seed=3)


def _check_kaldi_jitter(x, out):
    """Each clip of a training call equals the front end with band edges of a legal draw.

    The reference's draws: fmin + {0..9} Hz and fmax + 100 - {0..199} Hz (fmax 3000 Hz,
    the reference's default sample_rate / 2 - 1000), one per batch (`Dataset.map` here
    calls it on batches of one); every one of the 2,000 filterbanks is tried on the
    power spectrum (numpy), and the best must match each clip.
    """
    from esc50tf.frontend.backends import KerasOps
    from esc50tf.frontend.kaldi import kaldi_mel_filterbank

    layer = KaldiMelSpectrogram(**{k: v for k, v in KALDI_JITTER.items()
                                   if not k.endswith("jitter")})
    bins = layer.n_fft // 2 + 1
    window = layer._constant_arrays["window"].astype("float32")
    identity = {"window": window, "mel": np.eye(bins, dtype="float32")}
    power = np.exp(5.0 * np.asarray(layer._compute(x, identity, KerasOps)) - 4.5) - 1e-5
    top = layer.effective_fmax
    errors = {}
    for i in range(10):
        for j in range(200):
            bank = kaldi_mel_filterbank(SR, layer.n_fft, layer.n_mels, i, top + 100 - j)
            logmel = (np.log(np.maximum(power, 0.0) @ bank + 1e-5) + 4.5) / 5.0
            errors[(i, j)] = np.abs(logmel - np.asarray(out, "float64")).max(axis=(1, 2))
    best = np.min(np.stack(list(errors.values())), axis=0)  # per clip
    assert (best < 1e-3).all(), best


CASES = {
    # Front ends: librosa parity is in test_features.py.
    # XLA: the mfcc case compiles the STFT, Mel and dB code of the spectrogram and mel cases.
    "spectrogram": (F.Spectrogram, dict(n_fft=256, hop_length=64, power=1.0, top_db=80.0), WAVE,
                    dict(expected_output_shape=(2, 32, 129), xla=False, **FRONT_OPTIONS)),
    "mel": (F.MelSpectrogram, dict(FRONT, mel_scale="htk", norm=None, pad_mode="reflect",
                                   top_db=80.0), WAVE,
            dict(expected_output_shape=(2, 32, 32), xla=False, **FRONT_OPTIONS)),
    "mfcc": (F.MFCC, dict(FRONT, n_mfcc=13, deltas=2, pad_mode="reflect", top_db=80.0), WAVE,
             dict(expected_output_shape=(2, 32, 39), **FRONT_OPTIONS)),
    "kaldi_mel": (KaldiMelSpectrogram, dict(FRONT, win_length=200), WAVE,
                  dict(expected_output_shape=(2, 32, 32), xla=False, **FRONT_OPTIONS)),
    # EfficientAT's training-time band-edge jitter: one legal draw per training call.
    "kaldi_mel_jitter": (KaldiMelSpectrogram, KALDI_JITTER, WAVE,
                         dict(expected_output_shape=(2, 32, 32), random="deterministic",
                              training_check=_check_kaldi_jitter, **FRONT_OPTIONS)),
    # Adapters and normalisation.
    "add_channel_axis": (F.AddChannelAxis, {}, FEATS,
                         dict(reference=lambda _, x: x[..., None])),
    "resize_to_image": (F.ResizeToImage, dict(height=24, width=20, interpolation="nearest"),
                        FEATS, dict(expected_output_shape=(2, 24, 20, 3))),
    "frequency_normalization": (F.FrequencyNormalization, dict(axis=-2, epsilon=1e-3),
                                FEATS[..., None],
                                dict(prepare=_adapt, expected_num_trainable_weights=0,
                                     reference=lambda _, x: (x - x.mean((0, 1, 3))[:, None])
                                     / x.std((0, 1, 3))[:, None],
                                     rtol=1e-4, atol=1e-4)),
    "instance_normalization": (F.InstanceNormalization, dict(epsilon=1e-4), FEATS,
                               dict(reference=lambda _, x: (x - x.mean((1, 2), keepdims=True))
                                    / np.sqrt(x.var((1, 2), keepdims=True) + 1e-4),
                                    rtol=1e-4, atol=1e-4)),
    # Augmentation: identity (RandomCrop: a centre crop) at inference.
    "time_shift": (A.RandomTimeShift, dict(max_shift_seconds=0.1, sample_rate=AUG_SR, seed=3),
                   AUG_WAVE, dict(random="identity", training_check=_check_time_shift,
                                  mixed_dtype="input")),
    "crop": (A.RandomCrop, dict(num_samples=2000, seed=3), AUG_WAVE,
             dict(random="deterministic", training_check=_check_crop, mixed_dtype="input",
                  reference=lambda _, x: x[:, 500:2500])),
    "add_noise": (A.AddNoise, dict(snr_db_range=(10.0, 20.0), seed=3), AUG_WAVE,
                  dict(random="identity", training_check=_check_add_noise, mixed_dtype="input")),
    "study_noise": (A.StudyNoise, dict(factor=0.05, seed=3), AUG_WAVE,
                    dict(random="identity", training_check=_check_study_noise,
                         mixed_dtype="input")),
    "gain": (A.RandomGain, dict(min_db=-6.0, max_db=6.0, seed=3), AUG_WAVE,
             dict(random="identity", training_check=_check_gain, mixed_dtype="input")),
    "spec_augment": (A.SpecAugment, dict(freq_mask_param=8, time_mask_param=10,
                                         num_freq_masks=2, num_time_masks=2, seed=3), AUG_SPEC,
                     dict(random="identity", training_check=_check_spec_augment,
                          mixed_dtype="input")),
    "image_3d": (A.StudyImageAugment, dict(max_rotation_degrees=10.0, flip_horizontal=True,
                                           flip_vertical=True, noise_stddev=0.1, seed=3),
                 AUG_SPEC, dict(random="identity", training_check=_check_image,
                                mixed_dtype="input")),
    "image_4d": (A.StudyImageAugment, dict(max_rotation_degrees=10.0, flip_horizontal=True,
                                           seed=3), AUG_IMAGE,
                 dict(random="identity", training_check=_check_image, mixed_dtype="input")),
    # Model layers.
    "mean_over_axis": (L.MeanOverAxis, dict(axis=2), FEATS[..., None],
                       dict(reference=lambda _, x: x.mean(axis=2))),
    # With its weights: the pooled output is the same as without them.
    "attention_pooling": (L.AttentionPooling, dict(units=8, return_attention=True), SEQ,
                          dict(reference=_attention_reference, expected_num_trainable_weights=3,
                               expected_output_shape=((2, 6), (2, 7)),
                               mixed_dtype=("float16", "float32"))),
    "time_max_plus_mean": (L.TimeMaxPlusMean, {}, SEQ,
                           dict(reference=lambda _, x: x.max(axis=1) + x.mean(axis=1))),
    "sed_smoothing": (L.SEDSmoothing, {}, SEQ, dict(reference=_sed_reference)),
    "framewise_upsample": (L.FramewiseUpsample, dict(ratio=4), [SEQ[:, :3], FEATS[:, :10]],
                           dict(reference=_upsample_reference,
                                expected_output_shape=(2, 10, 6))),
    # The DyMN's: references mix the kernels first, as EfficientAT does.
    "split_at": (L.SplitAt, dict(index=2), SEQ,
                 dict(reference=lambda _, x: (x[:, :2], x[:, 2:]),
                      expected_output_shape=((2, 2, 6), (2, 5, 6)))),
    "dynamic_conv_1x1": (L.DynamicConv2D, dict(filters=3, num_kernels=3, temperature=2.0),
                         [DYN_MAP, DYN_CONTEXT],
                         dict(reference=_dynamic_conv_reference, expected_output_shape=(2, 6, 7, 3),
                              expected_num_trainable_weights=3)),
    "dynamic_conv_depthwise": (L.DynamicConv2D, dict(filters=4, kernel_size=3, strides=2,
                                                     depthwise=True), [DYN_MAP, DYN_CONTEXT],
                               dict(reference=_dynamic_conv_reference,
                                    expected_output_shape=(2, 3, 4, 4))),
    "dynamic_relu": (L.DynamicReLU, {}, [DYN_MAP, DYN_CONTEXT],
                     dict(reference=_dynamic_relu_reference, expected_num_trainable_weights=2)),
    "coordinate_attention": (L.CoordinateAttention, {}, [DYN_MAP, DYN_F, DYN_T],
                             dict(reference=lambda _, x: x[0] * _sigmoid(x[1])[:, :, None]
                                  * _sigmoid(x[2])[:, None])),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer(name, tmp_path):
    cls, kwargs, data, options = CASES[name]
    run_layer_test(cls, kwargs, data, tmp_path=tmp_path, **options)


def _registered_layers():
    for module in pkgutil.walk_packages(esc50tf.__path__, "esc50tf."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    return {
        cls for name, cls in keras.saving.get_custom_objects().items()
        if name.startswith("esc50tf>") and isinstance(cls, type)
        and issubclass(cls, keras.layers.Layer)
    }


def test_every_registered_layer_has_a_case():
    registered = _registered_layers()
    assert F.MelSpectrogram in registered and L.FramewiseUpsample in registered
    missing = registered - {case[0] for case in CASES.values()}
    assert not missing, f"add a case to tests/test_layers.py for {sorted(c.__name__ for c in missing)}"
