"""Training-time augmentation that runs inside the training graph.

Every augmentation here is a Keras 3 layer written with `keras.ops` and
`keras.random`, so it runs on the accelerator inside the model (TensorFlow,
also under XLA, and the JAX backend) or inside a TensorFlow-backend `tf.data`
pipeline. They share four rules:

- Vectorised over the batch: parameters are drawn per example as tensors of
  shape `[batch]`; no Python loop over examples.
- Reproducible: each layer takes `seed` and owns a
  `keras.random.SeedGenerator`; two layers built with the same seed give the
  same outputs call after call.
- The identity when `training` is False or None (the default), so a model
  that contains them predicts on clean input. Only `RandomCrop` changes its
  input at inference: it takes a deterministic centre crop so shapes match.
  Inside `tf.data` pass `training=True` yourself:
  `ds.map(lambda x: layer(x, training=True))`.
- Dtype preserving: the output has the input's dtype (also under a
  `mixed_float16` policy); power and noise are computed in float32.

Waveforms are `[batch, samples]` in [-1, 1]; spectrograms are time-major
`[batch, frames, bins]` (optionally with a trailing channel axis).

Label-mixing augmentation (mixup, between-class learning) needs the labels,
so it is provided as pure functions (`mixup`, `between_class_mix`) and a
`BatchMixer` for `dataset.map(mixer)` after batching.

`AugmentConfig` holds every knob; `build_waveform_augmenter`,
`build_spectrogram_augmenter` and `build_batch_mixer` turn it into layers, and
`study_preset()` gives the settings of the study esc50tf grew out of.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras
import numpy as np
from keras import ops

from esc50tf.errors import Esc50Error

__all__ = [
    "AddNoise",
    "AugmentConfig",
    "BatchMixer",
    "RandomCrop",
    "RandomGain",
    "RandomTimeShift",
    "SpecAugment",
    "StudyImageAugment",
    "StudyNoise",
    "between_class_mix",
    "build_batch_mixer",
    "build_spectrogram_augmenter",
    "build_waveform_augmenter",
    "mixup",
    "study_preset",
]

# Floor for logs of powers and probabilities, far below any real signal.
_TINY = 1e-30


def _range_text(low=None, high=None, low_open=False):
    """`[0.0, inf)`-style text of an interval, for error messages."""
    opener = "(" if low_open or low is None else "["
    closer = ")" if high is None else "]"
    lo = "-inf" if low is None else low
    hi = "inf" if high is None else high
    return f"{opener}{lo}, {hi}{closer}"


def _is_number_in(value, low=None, high=None, low_open=False):
    if isinstance(value, bool) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        return False
    if not math.isfinite(value):
        return False
    if low is not None and (value <= low if low_open else value < low):
        return False
    return high is None or value <= high


def _check_number(name, value, low=None, high=None, low_open=False):
    """Raises ValueError unless `value` is a finite real in the given range."""
    if not _is_number_in(value, low, high, low_open):
        raise ValueError(
            f"Argument `{name}` must be a finite number in "
            f"{_range_text(low, high, low_open)}. Received: {name}={value!r}"
        )


def _check_int(name, value, low=0):
    integer = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not integer or value < low:
        raise ValueError(
            f"Argument `{name}` must be an integer >= {low}. "
            f"Received: {name}={value!r}"
        )


def _batch_shape(x):
    """`[batch, 1, ..., 1]` matching the rank of x, for per-example values."""
    return (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)


class _AugmentLayer(keras.layers.Layer):
    """Shared plumbing: seed generator, no autocast, identity at inference.

    Subclasses implement `_augment(inputs)` for the training path.
    """

    def __init__(self, seed=None, **kwargs):
        # Augmentation keeps the input dtype; a mixed_float16 policy must not
        # cast a float32 waveform to float16 before noise is added.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if seed is not None:
            _check_int("seed", seed)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        return self._augment(inputs)

    def _augment(self, inputs):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor(
            self.compute_output_shape(inputs.shape), dtype=inputs.dtype
        )

    def get_config(self):
        config = super().get_config()
        config.update({"seed": self.seed})
        return config


def _gather_time(x, starts, length):
    """Per-example window `x[i, starts[i] : starts[i] + length]` along axis 1.

    Indices past the end of the input read zeros. `starts`: int32 `[batch]`.
    """
    n = ops.shape(x)[1]
    idx = starts[:, None] + ops.arange(length, dtype="int32")[None, :]
    valid = idx < n
    idx = ops.minimum(idx, n - 1)
    trailing = (1,) * (len(x.shape) - 2)
    idx = ops.reshape(idx, (-1, length) + trailing)
    valid = ops.reshape(valid, (-1, length) + trailing)
    out = ops.take_along_axis(x, idx, axis=1)
    return ops.where(valid, out, ops.zeros_like(out))


# ---------------------------------------------------------------------------
# Waveform layers.


@keras.saving.register_keras_serializable(package="esc50tf")
class RandomTimeShift(_AugmentLayer):
    """Circular time shift by a random amount per example.

    Each example is rolled along axis 1 by an integer number of samples drawn
    uniformly from `[-max_shift, +max_shift]`, with
    `max_shift = round(max_shift_seconds * sample_rate)`: the output equals
    `np.roll(x[i], shift[i])`. Energy is preserved. The study esc50tf grew
    out of used `np.roll` with up to +-0.1 s.

    Args:
        max_shift_seconds: float. Largest shift, in seconds, either way.
        sample_rate: int. Samples per second of the input.
        seed: int or None. Seed of the layer's random generator.
            Defaults to None (a random seed).

    Example:

    >>> layer = RandomTimeShift(0.1, sample_rate=44100, seed=0)
    >>> tuple(layer(np.zeros((8, 220500), "float32"), training=True).shape)
    (8, 220500)
    """

    def __init__(self, max_shift_seconds, sample_rate, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        _check_number("max_shift_seconds", max_shift_seconds, low=0.0)
        _check_int("sample_rate", sample_rate, low=1)
        self.max_shift_seconds = max_shift_seconds
        self.sample_rate = sample_rate
        self.max_shift = int(round(max_shift_seconds * sample_rate))

    def _augment(self, inputs):
        if self.max_shift == 0:
            return inputs
        n = ops.shape(inputs)[1]
        shifts = keras.random.randint(
            (ops.shape(inputs)[0],),
            minval=-self.max_shift,
            maxval=self.max_shift + 1,
            dtype="int32",
            seed=self.seed_generator,
        )
        # np.roll semantics: out[t] = x[(t - shift) mod n]; floor-mod keeps
        # the index non-negative for negative shifts.
        t = ops.arange(n, dtype="int32")[None, :]
        idx = ops.mod(t - shifts[:, None], n)  # [batch, samples]
        idx = ops.reshape(idx, (-1, n) + (1,) * (len(inputs.shape) - 2))
        return ops.take_along_axis(inputs, idx, axis=1)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_shift_seconds": self.max_shift_seconds,
                "sample_rate": self.sample_rate,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="esc50tf")
class RandomCrop(_AugmentLayer):
    """Random window of `num_samples` per example; centre crop at inference.

    For clips longer than the model input. In training each example gets its
    own start drawn uniformly from `[0, length - num_samples]`; at inference
    (training False/None) every example is cut at the centre,
    `start = (length - num_samples) // 2`, so shapes match and predictions
    are deterministic. Inputs shorter than `num_samples` are zero-padded at
    the end. Works on any rank >= 2, cropping axis 1.

    Evaluation over several crops (EnvNet, Tokozume et al., 2017) happens
    outside the layer: `esc50tf.models.build.predict_crops` averages the
    model's probabilities over `test_crops` evenly spaced windows.

    Args:
        num_samples: int. Length of the output along axis 1.
        test_crops: int. Evenly spaced windows whose predictions are averaged
            at evaluation (read by `predict_crops`). Defaults to 1 (centre).
        seed: int or None. Seed of the layer's random generator.
            Defaults to None.

    Example:

    >>> layer = RandomCrop(88200, seed=0)  # 2 s windows from 5 s clips
    >>> tuple(layer(np.zeros((8, 220500), "float32"), training=True).shape)
    (8, 88200)
    """

    def __init__(self, num_samples, test_crops=1, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        _check_int("num_samples", num_samples, low=1)
        _check_int("test_crops", test_crops, low=1)
        self.num_samples = num_samples
        self.test_crops = test_crops

    def call(self, inputs, training=None):
        if inputs.shape[1] == self.num_samples:
            return inputs
        n = ops.shape(inputs)[1]
        room = ops.maximum(n - self.num_samples, 0)
        if training:
            u = keras.random.uniform(
                (ops.shape(inputs)[0],), dtype="float32", seed=self.seed_generator
            )
            span = ops.cast(room + 1, "float32")
            starts = ops.minimum(ops.cast(ops.floor(u * span), "int32"), room)
        else:
            starts = ops.zeros((ops.shape(inputs)[0],), "int32") + room // 2
        return _gather_time(inputs, ops.cast(starts, "int32"), self.num_samples)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_samples) + tuple(input_shape[2:])

    def get_config(self):
        config = super().get_config()
        config.update({"num_samples": self.num_samples, "test_crops": self.test_crops})
        return config


@keras.saving.register_keras_serializable(package="esc50tf")
class AddNoise(_AugmentLayer):
    """Additive Gaussian noise at a random signal-to-noise ratio per example.

    Each example gets an SNR drawn uniformly from `snr_db_range` and white
    Gaussian noise with power `P_signal / 10 ** (snr_db / 10)`, where
    `P_signal` is that example's mean square. Silent examples (power 0) get
    no noise and stay finite. The output is not clipped (clipping would
    change the SNR). Lower SNR is stronger augmentation.

    Args:
        snr_db_range: pair of floats `(min_db, max_db)`. Range of the SNR.
            Defaults to `(10.0, 40.0)`.
        seed: int or None. Seed of the layer's random generator.
            Defaults to None.

    Example:

    >>> layer = AddNoise(snr_db_range=(10, 30), seed=0)
    >>> tuple(layer(np.ones((4, 16000), "float32"), training=True).shape)
    (4, 16000)
    """

    def __init__(self, snr_db_range=(10.0, 40.0), seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        try:
            low, high = snr_db_range
        except (TypeError, ValueError):
            raise ValueError(
                "Argument `snr_db_range` must be a pair (min_db, max_db). "
                f"Received: snr_db_range={snr_db_range!r}"
            ) from None
        _check_number("snr_db_range[0]", low)
        _check_number("snr_db_range[1]", high, low=low)
        self.snr_db_range = (float(low), float(high))

    def _augment(self, inputs):
        x = ops.cast(inputs, "float32")
        axes = tuple(range(1, len(x.shape)))
        power = ops.mean(ops.square(x), axis=axes, keepdims=True)
        snr_db = keras.random.uniform(
            _batch_shape(x),
            minval=self.snr_db_range[0],
            maxval=self.snr_db_range[1],
            dtype="float32",
            seed=self.seed_generator,
        )
        scale = ops.sqrt(power * ops.power(10.0, -snr_db / 10.0))
        noise = keras.random.normal(
            ops.shape(x), dtype="float32", seed=self.seed_generator
        )
        return ops.cast(x + scale * noise, inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"snr_db_range": self.snr_db_range})
        return config


@keras.saving.register_keras_serializable(package="esc50tf")
class StudyNoise(_AugmentLayer):
    """The study's noise: `clip(x + factor * N(0, 1), -1, 1)`.

    A fixed noise level regardless of the signal's loudness, as in the study
    esc50tf grew out of (factor 0.05). Provided to reproduce it; `AddNoise`
    scales the noise to each clip's power instead.

    Args:
        factor: float. Standard deviation of the noise. Defaults to 0.05.
        seed: int or None. Seed of the layer's random generator.
            Defaults to None.

    Example:

    >>> layer = StudyNoise(0.05, seed=0)
    >>> tuple(layer(np.zeros((4, 16000), "float32"), training=True).shape)
    (4, 16000)
    """

    def __init__(self, factor=0.05, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        _check_number("factor", factor, low=0.0)
        self.factor = factor

    def _augment(self, inputs):
        x = ops.cast(inputs, "float32")
        noise = keras.random.normal(
            ops.shape(x), dtype="float32", seed=self.seed_generator
        )
        out = ops.clip(x + self.factor * noise, -1.0, 1.0)
        return ops.cast(out, inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"factor": self.factor})
        return config


@keras.saving.register_keras_serializable(package="esc50tf")
class RandomGain(_AugmentLayer):
    """Random gain per example, drawn uniformly in decibels.

    Multiplies each example by `10 ** (g / 20)` with `g ~ U[min_db, max_db]`.
    The output is not clipped.

    Args:
        min_db: float. Smallest gain in dB. Defaults to -6.0.
        max_db: float. Largest gain in dB. Defaults to 6.0.
        seed: int or None. Seed of the layer's random generator.
            Defaults to None.

    Example:

    >>> layer = RandomGain(-6.0, 6.0, seed=0)
    >>> tuple(layer(np.ones((4, 16000), "float32"), training=True).shape)
    (4, 16000)
    """

    def __init__(self, min_db=-6.0, max_db=6.0, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        _check_number("min_db", min_db)
        _check_number("max_db", max_db, low=min_db)
        self.min_db = min_db
        self.max_db = max_db

    def _augment(self, inputs):
        gain_db = keras.random.uniform(
            _batch_shape(inputs),
            minval=self.min_db,
            maxval=self.max_db,
            dtype="float32",
            seed=self.seed_generator,
        )
        out = ops.cast(inputs, "float32") * ops.power(10.0, gain_db / 20.0)
        return ops.cast(out, inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"min_db": self.min_db, "max_db": self.max_db})
        return config


# ---------------------------------------------------------------------------
# Spectrogram layers.


def _random_band_mask(batch, size, max_width, count, seed_generator):
    """Union of `count` random bands per example: bool `[batch, size]`.

    Band width is uniform in `[0, min(max_width, size)]`, its start uniform in
    `[0, size - width]` so the band lies inside the axis (Park et al. 2019).
    """
    shape = (batch, count)
    u_width = keras.random.uniform(shape, dtype="float32", seed=seed_generator)
    u_start = keras.random.uniform(shape, dtype="float32", seed=seed_generator)
    max_width = ops.minimum(max_width, size)
    width = ops.minimum(
        ops.cast(ops.floor(u_width * ops.cast(max_width + 1, "float32")), "int32"),
        max_width,
    )
    room = size - width  # [batch, count]
    start = ops.minimum(
        ops.cast(ops.floor(u_start * ops.cast(room + 1, "float32")), "int32"), room
    )
    iota = ops.arange(size, dtype="int32")[None, None, :]
    start = start[:, :, None]
    inside = (iota >= start) & (iota < start + width[:, :, None])  # [b, k, size]
    return ops.any(inside, axis=1)


@keras.saving.register_keras_serializable(package="esc50tf")
class SpecAugment(_AugmentLayer):
    """Frequency and time masking of spectrograms (SpecAugment).

    Park et al. 2019, "SpecAugment: A Simple Data Augmentation Method for
    Automatic Speech Recognition". Each example gets `num_freq_masks` bands
    of `f ~ U{0, ..., freq_mask_param}` consecutive bins and `num_time_masks`
    bands of `t ~ U{0, ..., time_mask_param}` consecutive frames, at uniform
    positions inside the array; masked cells are set to the example's mean
    (`mask_value="mean"`, neutral for log-mel input) or to a constant.
    Time warping is not implemented.

    Args:
        freq_mask_param: int. Largest frequency-mask width F, in bins.
        time_mask_param: int. Largest time-mask width T, in frames.
        num_freq_masks: int. Frequency masks per example. Defaults to 1.
        num_time_masks: int. Time masks per example. Defaults to 1.
        mask_value: "mean" or float. Value written into masked cells.
            Defaults to "mean".
        seed: int or None. Seed of the layer's random generator.
            Defaults to None.

    Input shape: `[batch, frames, bins]` or `[batch, frames, bins, channels]`.

    Example:

    >>> layer = SpecAugment(27, 40, num_freq_masks=2, num_time_masks=2, seed=0)
    >>> tuple(layer(np.ones((8, 431, 128), "float32"), training=True).shape)
    (8, 431, 128)
    """

    def __init__(
        self,
        freq_mask_param,
        time_mask_param,
        num_freq_masks=1,
        num_time_masks=1,
        mask_value="mean",
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        _check_int("freq_mask_param", freq_mask_param)
        _check_int("time_mask_param", time_mask_param)
        _check_int("num_freq_masks", num_freq_masks)
        _check_int("num_time_masks", num_time_masks)
        if mask_value != "mean":
            _check_number("mask_value", mask_value)
        self.freq_mask_param = freq_mask_param
        self.time_mask_param = time_mask_param
        self.num_freq_masks = num_freq_masks
        self.num_time_masks = num_time_masks
        self.mask_value = mask_value

    def _augment(self, inputs):
        rank = len(inputs.shape)
        if rank not in (3, 4):
            raise ValueError(
                "SpecAugment expects [batch, frames, bins] or "
                f"[batch, frames, bins, channels]. Received: shape={inputs.shape}"
            )
        shape = ops.shape(inputs)
        batch, frames, bins = shape[0], shape[1], shape[2]
        mask = ops.zeros((batch, frames, bins), "bool")
        if self.freq_mask_param > 0 and self.num_freq_masks > 0:
            freq = _random_band_mask(
                batch,
                bins,
                self.freq_mask_param,
                self.num_freq_masks,
                self.seed_generator,
            )
            mask = mask | freq[:, None, :]
        if self.time_mask_param > 0 and self.num_time_masks > 0:
            time = _random_band_mask(
                batch,
                frames,
                self.time_mask_param,
                self.num_time_masks,
                self.seed_generator,
            )
            mask = mask | time[:, :, None]
        if rank == 4:
            mask = mask[..., None]
        if self.mask_value == "mean":
            axes = tuple(range(1, rank))
            value = ops.mean(ops.cast(inputs, "float32"), axis=axes, keepdims=True)
            value = ops.cast(value, inputs.dtype)
        else:
            value = ops.cast(self.mask_value, inputs.dtype)
        return ops.where(mask, value, inputs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "freq_mask_param": self.freq_mask_param,
                "time_mask_param": self.time_mask_param,
                "num_freq_masks": self.num_freq_masks,
                "num_time_masks": self.num_time_masks,
                "mask_value": self.mask_value,
            }
        )
        return config


def _rotate_images(images, angles):
    """Rotates each image about its centre; bilinear, edge pixels fill.

    Args:
        images: float32 `[batch, height, width, channels]`.
        angles: float32 `[batch]`, radians, counter-clockwise as displayed
            (row 0 at the top).

    Written with gathers instead of `keras.layers.RandomRotation`, whose TF
    kernel (`ImageProjectiveTransformV3`) has no XLA implementation.
    """
    shape = ops.shape(images)
    h, w, c = shape[1], shape[2], shape[3]
    hf = ops.cast(h, "float32")
    wf = ops.cast(w, "float32")
    cy = (hf - 1.0) / 2.0
    cx = (wf - 1.0) / 2.0
    yy = ops.cast(ops.arange(h), "float32")[None, :, None] - cy  # [1, h, 1]
    xx = ops.cast(ops.arange(w), "float32")[None, None, :] - cx  # [1, 1, w]
    cos = ops.cos(angles)[:, None, None]
    sin = ops.sin(angles)[:, None, None]
    # Inverse map: where in the source each output pixel comes from.
    src_x = ops.clip(cos * xx - sin * yy + cx, 0.0, wf - 1.0)  # [b, h, w]
    src_y = ops.clip(sin * xx + cos * yy + cy, 0.0, hf - 1.0)
    x0 = ops.floor(src_x)
    y0 = ops.floor(src_y)
    wx = src_x - x0
    wy = src_y - y0
    x0 = ops.cast(x0, "int32")
    y0 = ops.cast(y0, "int32")
    x1 = ops.minimum(x0 + 1, w - 1)
    y1 = ops.minimum(y0 + 1, h - 1)
    flat = ops.reshape(images, (-1, h * w, c))

    def pick(yi, xi):
        idx = ops.reshape(yi * w + xi, (-1, h * w, 1))
        return ops.reshape(ops.take_along_axis(flat, idx, axis=1), (-1, h, w, c))

    wx = wx[..., None]
    wy = wy[..., None]
    top = pick(y0, x0) * (1.0 - wx) + pick(y0, x1) * wx
    bottom = pick(y1, x0) * (1.0 - wx) + pick(y1, x1) * wx
    return top * (1.0 - wy) + bottom * wy


@keras.saving.register_keras_serializable(package="esc50tf")
class StudyImageAugment(_AugmentLayer):
    """The study's image-style augmentation of the spectrogram picture.

    Random rotation by up to `max_rotation_degrees` (bilinear, edge pixels
    repeated like `ImageDataGenerator(fill_mode="nearest")`), random
    horizontal / vertical flips (each with probability 0.5 per example) and
    additive Gaussian noise, applied in that order. Axes follow image
    convention: height is axis 1, width axis 2; for a time-major spectrogram
    `[batch, frames, bins]` a vertical flip therefore reverses time and a
    horizontal flip reverses frequency.

    Provided only to reproduce the study: it found that this augmentation
    made results worse (a spectrogram is not a photograph; rotating or
    flipping it moves energy across frequencies and reverses time). Prefer
    `SpecAugment` and the waveform layers.

    Args:
        max_rotation_degrees: float. Largest rotation either way.
            Defaults to 0.0 (no rotation).
        flip_horizontal: bool. Randomly reverse axis 2. Defaults to False.
        flip_vertical: bool. Randomly reverse axis 1. Defaults to False.
        noise_stddev: float. Standard deviation of additive Gaussian noise.
            Defaults to 0.0.
        seed: int or None. Seed of the layer's random generator.
            Defaults to None.

    Input shape: `[batch, height, width]` or `[batch, height, width, channels]`.

    Example:

    >>> layer = StudyImageAugment(10.0, flip_horizontal=True, seed=0)
    >>> tuple(layer(np.ones((8, 224, 224, 3), "float32"), training=True).shape)
    (8, 224, 224, 3)
    """

    def __init__(
        self,
        max_rotation_degrees=0.0,
        flip_horizontal=False,
        flip_vertical=False,
        noise_stddev=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        _check_number("max_rotation_degrees", max_rotation_degrees, 0.0, 180.0)
        _check_number("noise_stddev", noise_stddev, low=0.0)
        for name, value in (
            ("flip_horizontal", flip_horizontal),
            ("flip_vertical", flip_vertical),
        ):
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(
                    f"Argument `{name}` must be a bool. Received: {name}={value!r}"
                )
        self.max_rotation_degrees = max_rotation_degrees
        self.flip_horizontal = bool(flip_horizontal)
        self.flip_vertical = bool(flip_vertical)
        self.noise_stddev = noise_stddev

    def _flip(self, x, axis):
        batch = ops.shape(x)[0]
        coin = keras.random.uniform((batch,), dtype="float32", seed=self.seed_generator)
        return ops.where((coin < 0.5)[:, None, None, None], ops.flip(x, axis=axis), x)

    def _augment(self, inputs):
        rank = len(inputs.shape)
        if rank not in (3, 4):
            raise ValueError(
                "StudyImageAugment expects [batch, height, width] or "
                f"[batch, height, width, channels]. Received: shape={inputs.shape}"
            )
        x = ops.cast(inputs, "float32")
        if rank == 3:
            x = x[..., None]
        if self.max_rotation_degrees > 0:
            limit = math.radians(self.max_rotation_degrees)
            angles = keras.random.uniform(
                (ops.shape(x)[0],),
                minval=-limit,
                maxval=limit,
                dtype="float32",
                seed=self.seed_generator,
            )
            x = _rotate_images(x, angles)
        if self.flip_horizontal:
            x = self._flip(x, axis=2)
        if self.flip_vertical:
            x = self._flip(x, axis=1)
        if self.noise_stddev > 0:
            x = x + self.noise_stddev * keras.random.normal(
                ops.shape(x), dtype="float32", seed=self.seed_generator
            )
        if rank == 3:
            x = x[..., 0]
        return ops.cast(x, inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_rotation_degrees": self.max_rotation_degrees,
                "flip_horizontal": self.flip_horizontal,
                "flip_vertical": self.flip_vertical,
                "noise_stddev": self.noise_stddev,
            }
        )
        return config


# ---------------------------------------------------------------------------
# Batch mixing.


class _SeedStream:
    """Seeds for successive draws from one user seed.

    A `SeedGenerator` advances by itself; an int seed gives `seed, seed + 1,
    ...` so that draws within one call are independent (the same int for two
    draws would correlate them); None uses Keras' global generator.
    """

    def __init__(self, seed):
        if seed is not None and not isinstance(
            seed, (int, np.integer, keras.random.SeedGenerator)
        ):
            raise ValueError(
                "Argument `seed` must be None, an int or a "
                f"keras.random.SeedGenerator. Received: seed={seed!r}"
            )
        self._seed = seed
        self._count = 0

    def __call__(self):
        if self._seed is None or isinstance(self._seed, keras.random.SeedGenerator):
            return self._seed
        self._count += 1
        return int(self._seed) + self._count - 1


def _sample_log_gamma(shape, alpha, next_seed, candidates=16):
    """log of Gamma(alpha, 1) samples, from normal and uniform draws only.

    Marsaglia & Tsang (2000) for shape `alpha + 1` with a fixed number of
    candidates instead of a rejection loop (acceptance is above 95% each, so
    all 16 fail with probability < 1e-20), then the boost
    `Gamma(alpha) = Gamma(alpha + 1) * U ** (1 / alpha)` in log space so that
    small alphas do not underflow. `keras.random.gamma` is not used because
    TensorFlow's `StatelessRandomGammaV3` has no XLA kernel.
    """
    d = alpha + 1.0 - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    z = keras.random.normal(shape + (candidates,), dtype="float32", seed=next_seed())
    u = keras.random.uniform(shape + (candidates,), dtype="float32", seed=next_seed())
    v = ops.power(1.0 + c * z, 3.0)
    log_v = ops.log(ops.maximum(v, _TINY))
    accept = (v > 0) & (
        ops.log(ops.maximum(u, _TINY)) < 0.5 * ops.square(z) + d - d * v + d * log_v
    )
    first = ops.argmax(ops.cast(accept, "int32"), axis=-1)
    log_v = ops.take_along_axis(log_v, first[..., None], axis=-1)[..., 0]
    log_v = ops.where(ops.any(accept, axis=-1), log_v, 0.0)
    boost = keras.random.uniform(shape, dtype="float32", seed=next_seed())
    return math.log(d) + log_v + ops.log(ops.maximum(boost, _TINY)) / alpha


def _sample_beta(shape, alpha, next_seed):
    """Beta(alpha, alpha) samples as `G1 / (G1 + G2)` with gamma G1, G2."""
    log_g1 = _sample_log_gamma(shape, alpha, next_seed)
    log_g2 = _sample_log_gamma(shape, alpha, next_seed)
    return ops.sigmoid(log_g1 - log_g2)


def _as_soft_labels(y_onehot):
    y = ops.convert_to_tensor(y_onehot)
    if "float" not in str(y.dtype):
        y = ops.cast(y, "float32")
    return y


def mixup(x, y_onehot, alpha=0.2, seed=None):
    """Mixes each example with a random partner in the batch (mixup).

    Zhang et al. 2018, "mixup: Beyond Empirical Risk Minimization":
    `x' = lam * x_i + (1 - lam) * x_j`, `y' = lam * y_i + (1 - lam) * y_j`
    with `lam ~ Beta(alpha, alpha)` and `j` a random permutation of the
    batch. Here `lam` is drawn per example rather than once per batch.

    Args:
        x: float tensor `[batch, ...]` (waveforms, spectrograms, features).
        y_onehot: tensor `[batch, num_classes]` of one-hot or soft labels.
        alpha: float > 0. Beta concentration; small alpha keeps most
            examples close to one of the pair. Defaults to 0.2.
        seed: None, int or `keras.random.SeedGenerator`. Pass a
            `SeedGenerator` (created outside any traced function) to get new
            draws on every call; an int gives the same draws every call.

    Returns:
        `(x_mixed, y_mixed)` with the dtypes of `x` and of `y_onehot` (float32
        if the labels were integers). Rows of `y_mixed` sum to the same as
        rows of `y_onehot` (1 for one-hot labels).
    """
    _check_number("alpha", alpha, low=0.0, low_open=True)
    next_seed = _SeedStream(seed)
    x = ops.convert_to_tensor(x)
    y = _as_soft_labels(y_onehot)
    batch = ops.shape(x)[0]
    order = keras.random.uniform((batch,), dtype="float32", seed=next_seed())
    partner = ops.argsort(order)
    lam = _sample_beta((batch,), float(alpha), next_seed)  # [batch]
    x32 = ops.cast(x, "float32")
    lam_x = ops.reshape(lam, (-1,) + (1,) * (len(x.shape) - 1))
    x_mix = lam_x * x32 + (1.0 - lam_x) * ops.take(x32, partner, axis=0)
    y32 = ops.cast(y, "float32")
    y_mix = lam[:, None] * y32 + (1.0 - lam[:, None]) * ops.take(y32, partner, axis=0)
    return ops.cast(x_mix, x.dtype), ops.cast(y_mix, y.dtype)


def _a_weighting_db(sample_rate, frame_length, min_db=-80.0):
    """A-weighting in dB of the rfft bins (the BC-learning reference code)."""
    freq = np.linspace(0, sample_rate // 2, frame_length // 2 + 1)
    freq_sq = np.square(freq)
    freq_sq[0] = 1.0
    weight = 2.0 + 20.0 * (
        2 * np.log10(12194.0)
        + 2 * np.log10(freq_sq)
        - np.log10(freq_sq + 12194.0**2)
        - np.log10(freq_sq + 20.6**2)
        - 0.5 * np.log10(freq_sq + 107.7**2)
        - 0.5 * np.log10(freq_sq + 737.9**2)
    )
    return np.maximum(weight, min_db)


def _sound_gain_db(x, sample_rate, gain_mode, min_db):
    """Loudness of each waveform in dB: the maximum over half-overlapping frames.

    `x`: float32 `[batch, samples]`. Frames are 2048 samples below 30 kHz,
    4096 above (as in Tokozume et al.); clips shorter than a frame are
    zero-padded to one frame.
    """
    frame_length = 4096 if sample_rate > 30000 else 2048
    hop = frame_length // 2
    n = x.shape[1]
    if n is not None and n < frame_length:
        x = ops.pad(x, ((0, 0), (0, frame_length - n)))
        n = frame_length
    n = ops.shape(x)[1] if n is None else n
    blocks_count = n // hop
    blocks = ops.reshape(x[:, : blocks_count * hop], (-1, blocks_count, hop))
    # Frame i = blocks i and i + 1: x[i*hop : i*hop + frame_length].
    frames = ops.concatenate([blocks[:, :-1], blocks[:, 1:]], axis=-1)
    if gain_mode == "rms":
        power = ops.mean(ops.square(frames), axis=-1)  # [batch, frames]
    else:
        window = np.hanning(frame_length + 1)[:-1].astype("float32")
        real, imag = ops.rfft(frames * window)
        weight = np.power(10.0, _a_weighting_db(sample_rate, frame_length) / 10.0)
        power = ops.sum(
            (ops.square(real) + ops.square(imag)) * weight.astype("float32"), axis=-1
        )
    power = ops.maximum(ops.max(power, axis=-1), 10.0 ** (min_db / 10.0))
    return 10.0 * ops.log10(power)


def between_class_mix(
    x,
    y_onehot,
    seed=None,
    sample_rate=44100,
    gain_mode="a_weighting",
    min_db=-80.0,
):
    """Between-class mixing of waveforms (BC learning, BC+ mixing rule).

    Tokozume, Ushiku & Harada 2018, "Learning from Between-class Examples for
    Deep Sound Recognition". Each example `x1` is paired with a random
    example `x2` of a different class, a ratio `r ~ U(0, 1)` is drawn, and
    the sounds are mixed so that `x1` is perceived with ratio `r` whatever
    the two clips' loudness (an example whose batch holds no other class is
    returned unmixed):

        p = 1 / (1 + 10 ** ((g1 - g2) / 20) * (1 - r) / r)
        x = (p * x1 + (1 - p) * x2) / sqrt(p ** 2 + (1 - p) ** 2)
        y = r * y1 + (1 - r) * y2

    where `g1`, `g2` are the clips' gains in dB (maximum frame power,
    A-weighted by default). The paper trains on these soft labels with a KL
    divergence loss; categorical cross-entropy has the same gradients.

    Args:
        x: float tensor `[batch, samples]` of waveforms.
        y_onehot: tensor `[batch, num_classes]` of one-hot labels.
        seed: None, int or `keras.random.SeedGenerator` (see `mixup`).
        sample_rate: int. Needed for the frame length and A-weighting.
            Defaults to 44100.
        gain_mode: "a_weighting" or "rms". How the gains are measured.
            Defaults to "a_weighting".
        min_db: float. Floor of the gains (silence). Defaults to -80.0.

    Returns:
        `(x_mixed, y_mixed)`, dtypes as in `mixup`.
    """
    _check_int("sample_rate", sample_rate, low=1)
    if gain_mode not in ("a_weighting", "rms"):
        raise ValueError(
            "Argument `gain_mode` must be 'a_weighting' or 'rms'. "
            f"Received: gain_mode={gain_mode!r}"
        )
    _check_number("min_db", min_db)
    next_seed = _SeedStream(seed)
    x = ops.convert_to_tensor(x)
    if len(x.shape) != 2:
        raise ValueError(
            "between_class_mix expects waveforms [batch, samples]. "
            f"Received: shape={x.shape}"
        )
    y = _as_soft_labels(y_onehot)
    y32 = ops.cast(y, "float32")
    batch = ops.shape(x)[0]

    # Partner: the best random score among examples of another class; the
    # example itself and its own class only win when nothing else exists.
    labels = ops.argmax(y32, axis=-1)
    same = ops.cast(labels[:, None] == labels[None, :], "float32")  # [b, b]
    eye = ops.eye(batch, dtype="float32")
    scores = keras.random.uniform((batch, batch), dtype="float32", seed=next_seed())
    partner = ops.argmax(scores - 2.0 * same - 2.0 * eye, axis=-1)

    r = keras.random.uniform(
        (batch,), minval=1e-3, maxval=1.0 - 1e-3, dtype="float32", seed=next_seed()
    )
    # A batch of one class has no between-class pair: r = 1 leaves x as is.
    partner_same = ops.take_along_axis(same, partner[:, None], axis=1)[:, 0]
    r = ops.where(partner_same > 0.5, 1.0, r)
    x1 = ops.cast(x, "float32")
    x2 = ops.take(x1, partner, axis=0)
    gain = _sound_gain_db(x1, sample_rate, gain_mode, min_db)
    g1 = gain
    g2 = ops.take(gain, partner, axis=0)
    p = 1.0 / (1.0 + ops.power(10.0, (g1 - g2) / 20.0) * (1.0 - r) / r)
    p_col = p[:, None]
    x_mix = (p_col * x1 + (1.0 - p_col) * x2) / ops.sqrt(
        ops.square(p_col) + ops.square(1.0 - p_col)
    )
    y_mix = r[:, None] * y32 + (1.0 - r[:, None]) * ops.take(y32, partner, axis=0)
    return ops.cast(x_mix, x.dtype), ops.cast(y_mix, y.dtype)


class BatchMixer:
    """Label-mixing augmentation for batched `(x, y)` pairs.

    Converts sparse integer labels to one-hot and applies `mixup` or
    `between_class_mix` with its own `keras.random.SeedGenerator`, so every
    batch gets new draws and a run is reproducible from `seed`:

    >>> mixer = BatchMixer("mixup", alpha=0.2, seed=0, num_classes=50)
    >>> ds = ds.batch(32).map(mixer)  # (x, int labels) -> (x, soft labels)

    Works in a TensorFlow-backend `tf.data` pipeline and in a custom
    `train_step`. Under the JAX backend call the functions from `train_step`
    with a `SeedGenerator` attached to the model instead (its state must be
    tracked by the model to advance inside `jit`).

    Args:
        mode: "mixup" or "bc" (between-class learning). Defaults to "mixup".
        alpha: float > 0. Beta concentration for mixup; unused by "bc",
            whose ratio is uniform. Defaults to 0.2.
        seed: int or None. Seed of the mixer's generator. Defaults to None.
        num_classes: int. Width of the one-hot labels. Defaults to 50.
        sample_rate: int. Only for "bc" (gain measurement). Defaults to 44100.
        gain_mode: "a_weighting" or "rms". Only for "bc".
            Defaults to "a_weighting".
    """

    def __init__(
        self,
        mode="mixup",
        alpha=0.2,
        seed=None,
        num_classes=50,
        sample_rate=44100,
        gain_mode="a_weighting",
    ):
        if mode not in ("mixup", "bc"):
            raise ValueError(
                f"Argument `mode` must be 'mixup' or 'bc'. Received: mode={mode!r}"
            )
        _check_number("alpha", alpha, low=0.0, low_open=True)
        if seed is not None:
            _check_int("seed", seed)
        _check_int("num_classes", num_classes, low=2)
        _check_int("sample_rate", sample_rate, low=1)
        if gain_mode not in ("a_weighting", "rms"):
            raise ValueError(
                "Argument `gain_mode` must be 'a_weighting' or 'rms'. "
                f"Received: gain_mode={gain_mode!r}"
            )
        self.mode = mode
        self.alpha = alpha
        self.seed = seed
        self.num_classes = num_classes
        self.sample_rate = sample_rate
        self.gain_mode = gain_mode
        self.seed_generator = keras.random.SeedGenerator(seed)

    def __call__(self, x, y):
        y = ops.convert_to_tensor(y)
        if len(y.shape) == 1 or "int" in str(y.dtype):
            y = ops.one_hot(ops.cast(ops.reshape(y, (-1,)), "int32"), self.num_classes)
        if self.mode == "mixup":
            return mixup(x, y, alpha=self.alpha, seed=self.seed_generator)
        return between_class_mix(
            x,
            y,
            seed=self.seed_generator,
            sample_rate=self.sample_rate,
            gain_mode=self.gain_mode,
        )

    def get_config(self):
        return {
            "mode": self.mode,
            "alpha": self.alpha,
            "seed": self.seed,
            "num_classes": self.num_classes,
            "sample_rate": self.sample_rate,
            "gain_mode": self.gain_mode,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# ---------------------------------------------------------------------------
# Configuration and builders.

_MIX_MODES = ("none", "mixup", "bc")


@dataclasses.dataclass
class AugmentConfig:
    """Every augmentation knob; the defaults switch everything off.

    Waveform (applied in this order by `build_waveform_augmenter`):
        crop_seconds: random window of this length, centre crop at
            inference; 0 = no crop.
        test_crops: with a crop, evaluate and predict by averaging the
            model over this many evenly spaced windows.
        time_shift_seconds: largest circular shift either way; 0 = off.
        gain_db: `(min_db, max_db)` random gain, or None = off.
        noise_snr_db: `(min_db, max_db)` SNR of additive noise, or None = off.
        study_noise_factor: the study's fixed-level noise + clip; 0 = off.
    Spectrogram (`build_spectrogram_augmenter`):
        freq_mask_param, time_mask_param: SpecAugment widths F and T;
            0 = no masks of that kind.
        num_freq_masks, num_time_masks: masks per example (Park et al.'s
            "LD" policy uses 2 and 2).
        mask_value: "mean" or a number.
        image_rotation_degrees, image_flip_horizontal, image_flip_vertical,
        image_noise_stddev: the study's image augmentation (it hurt; off).
    Batch (`build_batch_mixer`):
        mix: "none", "mixup" or "bc".
        mixup_alpha: Beta concentration for mixup.
    """

    crop_seconds: float = 0.0
    test_crops: int = 1
    time_shift_seconds: float = 0.0
    gain_db: tuple[float, float] | None = None
    noise_snr_db: tuple[float, float] | None = None
    study_noise_factor: float = 0.0
    freq_mask_param: int = 0
    time_mask_param: int = 0
    num_freq_masks: int = 2
    num_time_masks: int = 2
    mask_value: str | float = "mean"
    image_rotation_degrees: float = 0.0
    image_flip_horizontal: bool = False
    image_flip_vertical: bool = False
    image_noise_stddev: float = 0.0
    mix: str = "none"
    mixup_alpha: float = 0.2

    def __post_init__(self):
        for name in ("gain_db", "noise_snr_db"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        self.validate()

    def validate(self):
        """Raises `Esc50Error` naming the first bad value and its allowed range."""

        def fail(name, value, allowed):
            raise Esc50Error(
                f"AugmentConfig.{name}={value!r} is invalid: allowed {allowed}."
            )

        def number(name, low=None, high=None, low_open=False):
            value = getattr(self, name)
            if not _is_number_in(value, low, high, low_open):
                fail(name, value, f"a number in {_range_text(low, high, low_open)}")

        def integer(name, low=0):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                fail(name, value, f"an integer >= {low}")

        def pair(name, low, high):
            value = getattr(self, name)
            if value is None:
                return
            ok = isinstance(value, tuple) and len(value) == 2
            ok = ok and all(_is_number_in(v, low, high) for v in value)
            ok = ok and value[0] <= value[1]
            if not ok:
                fail(
                    name,
                    value,
                    f"None or a pair (min, max) with {low} <= min <= max <= {high}",
                )

        def boolean(name):
            value = getattr(self, name)
            if not isinstance(value, bool):
                fail(name, value, "True or False")

        number("crop_seconds", 0.0)
        integer("test_crops", 1)
        number("time_shift_seconds", 0.0)
        pair("gain_db", -60.0, 60.0)
        pair("noise_snr_db", -30.0, 100.0)
        number("study_noise_factor", 0.0, 1.0)
        integer("freq_mask_param")
        integer("time_mask_param")
        integer("num_freq_masks")
        integer("num_time_masks")
        if self.mask_value != "mean":
            number("mask_value")
        number("image_rotation_degrees", 0.0, 180.0)
        boolean("image_flip_horizontal")
        boolean("image_flip_vertical")
        number("image_noise_stddev", 0.0)
        if self.mix not in _MIX_MODES:
            fail("mix", self.mix, f"one of {list(_MIX_MODES)}")
        number("mixup_alpha", 0.0, low_open=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (pairs become lists)."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AugmentConfig":
        """Inverse of `to_dict`; unknown keys raise `Esc50Error`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise Esc50Error(
                f"Unknown AugmentConfig keys {unknown}; valid keys: {sorted(known)}."
            )
        return cls(**data)

    @property
    def masks_enabled(self) -> bool:
        return (self.freq_mask_param > 0 and self.num_freq_masks > 0) or (
            self.time_mask_param > 0 and self.num_time_masks > 0
        )

    @property
    def image_enabled(self) -> bool:
        return bool(
            self.image_rotation_degrees > 0
            or self.image_flip_horizontal
            or self.image_flip_vertical
            or self.image_noise_stddev > 0
        )


def study_preset() -> AugmentConfig:
    """The study's audio augmentation: +-0.1 s circular shift, noise 0.05.

    The study made one augmented copy of every clip offline (and, a flaw,
    also of the test clips); here the same transforms run on the fly, on
    training batches only.
    """
    return AugmentConfig(time_shift_seconds=0.1, study_noise_factor=0.05)


def _layer_seed(seed, offset):
    return None if seed is None else seed + offset


def build_waveform_augmenter(config, sample_rate, seed=None):
    """Waveform augmentation chain from a config, or None if all are off.

    Order: crop, time shift, gain, SNR noise, study noise. Each layer gets
    its own seed derived from `seed`.

    Args:
        config: `AugmentConfig`.
        sample_rate: int. Samples per second of the waveforms.
        seed: int or None.

    Returns:
        `keras.Sequential` named "waveform_augmenter", or None.
    """
    config.validate()
    layers = []
    if config.crop_seconds > 0:
        num_samples = max(1, int(round(config.crop_seconds * sample_rate)))
        layers.append(RandomCrop(num_samples, test_crops=config.test_crops,
                                 seed=_layer_seed(seed, 0)))
    if config.time_shift_seconds > 0:
        layers.append(
            RandomTimeShift(
                config.time_shift_seconds, sample_rate, seed=_layer_seed(seed, 1)
            )
        )
    if config.gain_db is not None:
        layers.append(RandomGain(*config.gain_db, seed=_layer_seed(seed, 2)))
    if config.noise_snr_db is not None:
        layers.append(AddNoise(config.noise_snr_db, seed=_layer_seed(seed, 3)))
    if config.study_noise_factor > 0:
        layers.append(StudyNoise(config.study_noise_factor, seed=_layer_seed(seed, 4)))
    if not layers:
        return None
    return keras.Sequential(layers, name="waveform_augmenter")


def build_spectrogram_augmenter(config, seed=None):
    """Spectrogram augmentation chain from a config, or None if all are off.

    Order: SpecAugment masks, then the study's image augmentation.

    Returns:
        `keras.Sequential` named "spectrogram_augmenter", or None.
    """
    config.validate()
    layers = []
    if config.masks_enabled:
        layers.append(
            SpecAugment(
                config.freq_mask_param,
                config.time_mask_param,
                num_freq_masks=config.num_freq_masks,
                num_time_masks=config.num_time_masks,
                mask_value=config.mask_value,
                seed=_layer_seed(seed, 10),
            )
        )
    if config.image_enabled:
        layers.append(
            StudyImageAugment(
                config.image_rotation_degrees,
                flip_horizontal=config.image_flip_horizontal,
                flip_vertical=config.image_flip_vertical,
                noise_stddev=config.image_noise_stddev,
                seed=_layer_seed(seed, 11),
            )
        )
    if not layers:
        return None
    return keras.Sequential(layers, name="spectrogram_augmenter")


def build_batch_mixer(config, num_classes, sample_rate=44100, seed=None):
    """`BatchMixer` for `config.mix`, or None when `mix == "none"`."""
    config.validate()
    if config.mix == "none":
        return None
    return BatchMixer(
        mode=config.mix,
        alpha=config.mixup_alpha,
        seed=_layer_seed(seed, 20),
        num_classes=num_classes,
        sample_rate=sample_rate,
    )
