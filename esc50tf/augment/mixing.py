"""Label-mixing augmentation: mixup, between-class mixing and `BatchMixer`.

These need the labels, so they are functions of `(x, y)` rather than layers;
`BatchMixer` applies one of them in `dataset.map(mixer)` after batching.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from esc50tf.augment.base import SeedStream
from esc50tf.augment.checks import check_choice, check_int, check_number

__all__ = ["BatchMixer", "GAIN_MODES", "MIX_MODES", "a_weighting_db", "between_class_mix", "mixup"]

# Floor for logs of powers and probabilities, far below any real signal.
_TINY = 1e-30

MIX_MODES = ("mixup", "bc")
GAIN_MODES = ("a_weighting", "rms")


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
    check_number("alpha", alpha, low=0.0, low_open=True)
    next_seed = SeedStream(seed)
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


def a_weighting_db(sample_rate, frame_length, min_db=-80.0):
    """A-weighting in dB of the `frame_length // 2 + 1` rfft bins, floored at `min_db`.

    The weighting curve of the BC-learning reference code (Tokozume et al.).
    """
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
        weight = np.power(10.0, a_weighting_db(sample_rate, frame_length) / 10.0)
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
    check_int("sample_rate", sample_rate, low=1)
    check_choice("gain_mode", gain_mode, GAIN_MODES)
    check_number("min_db", min_db)
    next_seed = SeedStream(seed)
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
        check_choice("mode", mode, MIX_MODES)
        check_number("alpha", alpha, low=0.0, low_open=True)
        if seed is not None:
            check_int("seed", seed)
        check_int("num_classes", num_classes, low=2)
        check_int("sample_rate", sample_rate, low=1)
        check_choice("gain_mode", gain_mode, GAIN_MODES)
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

