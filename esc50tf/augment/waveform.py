"""Waveform augmentation layers: time shift, random crop, noise, gain.

Inputs are `[batch, samples]` in [-1, 1] (any rank >= 2; axis 1 is time).
Every layer draws its parameters per example and is the identity when
`training` is False or None, except `RandomCrop`, which takes a centre crop
at inference so that shapes match.
"""

from __future__ import annotations

import keras
from keras import ops

from esc50tf.augment.base import AugmentLayer, batch_shape
from esc50tf.augment.checks import check_int, check_number

__all__ = ["AddNoise", "RandomCrop", "RandomGain", "RandomTimeShift", "StudyNoise"]


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



@keras.saving.register_keras_serializable(package="esc50tf")
class RandomTimeShift(AugmentLayer):
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
        check_number("max_shift_seconds", max_shift_seconds, low=0.0)
        check_int("sample_rate", sample_rate, low=1)
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

    config_keys = ("max_shift_seconds", "sample_rate")


@keras.saving.register_keras_serializable(package="esc50tf")
class RandomCrop(AugmentLayer):
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
        check_int("num_samples", num_samples, low=1)
        check_int("test_crops", test_crops, low=1)
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

    config_keys = ("num_samples", "test_crops")


@keras.saving.register_keras_serializable(package="esc50tf")
class AddNoise(AugmentLayer):
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
        check_number("snr_db_range[0]", low)
        check_number("snr_db_range[1]", high, low=low)
        self.snr_db_range = (float(low), float(high))

    def _augment(self, inputs):
        x = ops.cast(inputs, "float32")
        axes = tuple(range(1, len(x.shape)))
        power = ops.mean(ops.square(x), axis=axes, keepdims=True)
        snr_db = keras.random.uniform(
            batch_shape(x),
            minval=self.snr_db_range[0],
            maxval=self.snr_db_range[1],
            dtype="float32",
            seed=self.seed_generator,
        )
        scale = ops.sqrt(power * ops.power(10.0, -snr_db / 10.0))
        return ops.cast(x + scale * self._normal_like(x), inputs.dtype)

    config_keys = ("snr_db_range",)


@keras.saving.register_keras_serializable(package="esc50tf")
class StudyNoise(AugmentLayer):
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
        check_number("factor", factor, low=0.0)
        self.factor = factor

    def _augment(self, inputs):
        x = ops.cast(inputs, "float32")
        out = ops.clip(x + self.factor * self._normal_like(x), -1.0, 1.0)
        return ops.cast(out, inputs.dtype)

    config_keys = ("factor",)


@keras.saving.register_keras_serializable(package="esc50tf")
class RandomGain(AugmentLayer):
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
        check_number("min_db", min_db)
        check_number("max_db", max_db, low=min_db)
        self.min_db = min_db
        self.max_db = max_db

    def _augment(self, inputs):
        gain_db = keras.random.uniform(
            batch_shape(inputs),
            minval=self.min_db,
            maxval=self.max_db,
            dtype="float32",
            seed=self.seed_generator,
        )
        out = ops.cast(inputs, "float32") * ops.power(10.0, gain_db / 20.0)
        return ops.cast(out, inputs.dtype)

    config_keys = ("min_db", "max_db")

