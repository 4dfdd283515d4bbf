"""The spectrogram layers: waveform -> STFT / log-Mel / MFCC, time-major, librosa-exact.

The layers compute features inside the model graph, so they run wherever the
model runs (CPU, GPU, TPU, under ``tf.distribute`` and with
``jit_compile=True``). The math is written once against an op namespace
(:mod:`esc50tf.frontend.backends`: ``keras.ops``, a matmul DFT for export, or
plain TensorFlow for ``tf.data``); the constant matrices (window, Mel
filterbank, DCT basis; :mod:`esc50tf.frontend.filters`) are computed once with
numpy when the layer is built and kept as non-trainable weights, so nothing
goes back to the host per call.

Parameters use librosa's vocabulary and defaults, and with matching settings
the numbers match librosa (``librosa.stft``, ``librosa.feature.melspectrogram``
+ ``power_to_db``, ``librosa.feature.mfcc``) to within a few hundredths of a dB.
Outputs are time-major: ``[batch, frames, bins]``.

Why not ``keras.layers.MelSpectrogram`` / ``keras.layers.STFTSpectrogram``:
the former returns ``[batch, mels, frames]``, has only the HTK filterbank with
triangles linear in mel (librosa's are linear in Hz), centres with reflect
padding only, and clips ``top_db`` against the maximum of the whole *batch*;
the latter computes the DFT as a convolution (O(n_fft^2) per frame, and in
TF32 on recent GPUs) and has no librosa-style centring. Both are used as the
model for this module's layers, not as its parts.
"""

from __future__ import annotations

import functools
import math

import keras
import numpy as np
from keras import ops

from esc50tf.frontend.backends import KerasOps, MatmulDFTOps, TFOps
from esc50tf.frontend.config import STFT_IMPLS, check_args
from esc50tf.frontend.filters import (
    AMIN,
    DELTA_WIDTH,
    dct_matrix,
    delta_weights,
    mel_bands,
    mel_filterbank,
    num_frames,
    window_array,
)

__all__ = ["MFCC", "MelSpectrogram", "Spectrogram"]


# The log's floor (AMIN = 1e-10 of power) and librosa's `log_offset` are below
# float16's smallest number (6e-8): a float16 export rounds them to 0 and the log
# of digital silence is -inf, so its outputs are NaN. The waveform is scaled by
# 2^15 (|X|^2 by 2^30, exact in float32, far from its overflow) and the floor and
# the result with it: the floor becomes 0.107, float16 to 0.01%, and nothing the
# log sees is zero. The float32 numbers are librosa's as before (within 1e-4 dB).
LOG_GAIN_BITS = 15


def _is_tf_tensor(x):
    return type(x).__module__.startswith("tensorflow")


class _Frontend(keras.layers.Layer):
    """STFT -> |X|^power -> [projection] -> [log] -> [head]; shared code.

    Subclasses add constant matrices (``_constants``) and override
    ``_project`` (linear spectrum -> bands), ``_head`` (after the log) and
    ``n_bins``.
    """

    def __init__(
        self,
        n_fft=2048,
        hop_length=512,
        win_length=None,
        window="hann",
        center=True,
        pad_mode="constant",
        power=2.0,
        log="db",
        top_db=None,
        ref=1.0,
        log_offset=1e-6,
        stft_impl="rfft",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if stft_impl not in STFT_IMPLS:
            raise ValueError(f"{type(self).__name__}: stft_impl {stft_impl!r} is not allowed; "
                             f"allowed: {', '.join(STFT_IMPLS)}")
        check_args(
            dict(n_fft=n_fft, hop_length=hop_length, win_length=win_length,
                 window=window, center=center, pad_mode=pad_mode, power=power,
                 log=log, top_db=top_db, ref=ref, log_offset=log_offset),
            ValueError, type(self).__name__,
        )
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.win_length = None if win_length is None else int(win_length)
        self.window = window
        self.center = center
        self.pad_mode = pad_mode
        self.power = float(power)
        self.log = log
        self.top_db = None if top_db is None else float(top_db)
        self.ref = ref if ref == "max" else float(ref)
        self.log_offset = float(log_offset)
        self.stft_impl = stft_impl

    # --- dtype handling ---------------------------------------------------

    @property
    def _math_dtype(self):
        # FFT, filterbank and log always run in (at least) float32: RFFT has
        # no half-precision kernels and a bf16 dB scale is 0.5 dB coarse.
        return "float64" if self.variable_dtype == "float64" else "float32"

    @property
    def input_dtype(self):
        # Keep waveforms in full precision under mixed policies (a float16
        # waveform alone carries -66 dB of quantisation noise).
        return self._math_dtype

    # --- constants --------------------------------------------------------

    def _constants(self):
        """Constant arrays (name -> float64 numpy array) the math needs."""
        return {
            "window": window_array(
                self.window, self.win_length or self.n_fft, self.n_fft
            )
        }

    @functools.cached_property
    def _constant_arrays(self):
        # Arguments are fixed after __init__, so compute the numpy arrays once.
        return self._constants()

    def build(self, input_shape):
        for name, value in self._constant_arrays.items():
            # The array is bound as a default so each weight gets its own.
            def init(shape, dtype=None, value=value):
                return ops.convert_to_tensor(value, dtype=dtype)

            weight = self.add_weight(
                name=name,
                shape=value.shape,
                initializer=init,
                dtype=self._math_dtype,
                trainable=False,
                autocast=False,
            )
            setattr(self, f"{name}_weight", weight)

    # --- math -------------------------------------------------------------

    def _compute(self, x, c, xp):
        """Features of waveforms ``x [..., samples]`` with constants ``c``."""
        if self.log is not None:
            # Scaled by 2^15 (exact in any float format), so that the log's floor and
            # offset below are numbers float16 holds (see LOG_GAIN_BITS).
            x = x * float(2 ** LOG_GAIN_BITS)
        if self.center:
            pad = self.n_fft // 2
            pad_width = [[0, 0]] * (len(x.shape) - 1) + [[pad, pad]]
            x = xp.pad(x, pad_width, mode=self.pad_mode)
        real, imag = xp.stft(x, self.n_fft, self.hop_length, c["window"])
        s = real * real + imag * imag  # [..., frames, n_fft // 2 + 1] power
        power = self.power
        if power == 1.0 and (self._projects or self.log != "db"):
            s = xp.sqrt(s)
        elif power == 1.0:
            power = 2.0  # 20 log10 |X| == 10 log10 |X|^2, no sqrt needed
        s = self._project(s, c, xp)
        # `s` is |X|^power of the scaled waveform: 2^gain_bits times that of `x`.
        gain_bits = LOG_GAIN_BITS * power if self.log is not None else 0
        if self.log == "db":
            s = self._to_db(s, power, xp, gain_bits)
        elif self.log == "ln":
            s = xp.log(s + self.log_offset * 2.0 ** gain_bits) - gain_bits * math.log(2.0)
        return self._head(s, c, xp)

    def _to_db(self, s, power, xp, gain_bits=0):
        # librosa power_to_db (power 2) / amplitude_to_db (power 1): dB are
        # always of power, so both give the same numbers. `power` is the
        # exponent of `s`; `ref` is in the units of the layer's output. `s` is
        # 2^gain_bits times the true value: floor and result are scaled to match.
        factor = 20.0 / power / math.log(10.0)
        floor = AMIN ** (power / 2.0) * 2.0 ** gain_bits
        db = factor * xp.log(xp.maximum(s, floor)) - factor * gain_bits * math.log(2.0)
        if self.ref == "max":
            db = db - xp.max(db, axis=(-2, -1), keepdims=True)
        elif self.ref != 1.0:
            db = db - 20.0 / self.power * math.log10(
                max(self.ref, AMIN ** (self.power / 2.0))
            )
        if self.top_db is not None:
            db = xp.maximum(db, xp.max(db, axis=(-2, -1), keepdims=True) - self.top_db)
        return db

    _projects = False

    def _project(self, s, c, xp):
        return s

    def _head(self, s, c, xp):
        return s

    def __call__(self, inputs, *args, **kwargs):
        if keras.backend.backend() != "tensorflow" and _is_tf_tensor(inputs):
            # Inside tf.data under another backend (JAX): the same math on tf
            # ops, float32, as Keras' own preprocessing layers do.
            return self.compute_tf(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def compute_tf(self, waveforms):
        """The layer's math on plain TensorFlow ops, float32, for `tf.data`.

        The same numbers as calling the layer, with the constant matrices as
        graph constants rather than weights; usable in `Dataset.map` whatever
        the Keras backend (:func:`esc50tf.frontend.make_host_featurizer`).
        """
        import tensorflow as tf

        x = tf.convert_to_tensor(waveforms, dtype=tf.float32)
        c = {k: tf.constant(v, tf.float32) for k, v in self._constant_arrays.items()}
        return self._compute(x, c, TFOps())

    def call(self, inputs, training=None):
        if len(inputs.shape) not in (1, 2):
            raise ValueError(
                f"{type(self).__name__} expects waveforms [batch, samples] or "
                f"[samples]; received shape {tuple(inputs.shape)}."
            )
        n = inputs.shape[-1]
        if n is not None and self._frames(n) < 1:
            raise ValueError(
                f"{type(self).__name__}: {n} samples are too few for n_fft="
                f"{self.n_fft} with center={self.center}."
            )
        weights = {name: getattr(self, f"{name}_weight") for name in self._constant_arrays}
        if training:
            weights = self._training_constants(weights)
        x = ops.cast(inputs, self._math_dtype)
        xp = KerasOps
        if self.stft_impl == "matmul":
            xp = MatmulDFTOps(self._constant_arrays["window"])
        out = self._compute(x, weights, xp)
        return ops.cast(out, self.compute_dtype)

    def _training_constants(self, weights):
        """The constants of a training call (a subclass's random ones); `weights` as they are."""
        return weights

    # --- shapes and config ------------------------------------------------

    def _frames(self, n_samples):
        return num_frames(n_samples, self.n_fft, self.hop_length, self.center)

    @property
    def n_bins(self):
        """Size of the last output axis."""
        return self.n_fft // 2 + 1

    def compute_output_shape(self, input_shape):
        n = input_shape[-1]
        frames = None if n is None else self._frames(n)
        return tuple(input_shape[:-1]) + (frames, self.n_bins)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "n_fft": self.n_fft,
                "hop_length": self.hop_length,
                "win_length": self.win_length,
                "window": self.window,
                "center": self.center,
                "pad_mode": self.pad_mode,
                "power": self.power,
                "log": self.log,
                "top_db": self.top_db,
                "ref": self.ref,
                "log_offset": self.log_offset,
                "stft_impl": self.stft_impl,
            }
        )
        return config


_FRONTEND_ARGS_DOC = """
        n_fft: int. FFT size in samples. Defaults to 2048.
        hop_length: int. Samples between frames. Defaults to 512.
        win_length: int or None. Window length, zero-padded (centred) to
            `n_fft`; None means `n_fft`. Defaults to None.
        window: str. `"hann"` or `"hamming"`, periodic as librosa's.
            Defaults to `"hann"`.
        center: bool. Pad `n_fft // 2` samples on both sides so frame `t` is
            centred at `t * hop_length`; then there are
            `1 + n_samples // hop_length` frames. Defaults to True.
        pad_mode: str. `"constant"` (zeros, librosa >= 0.10) or `"reflect"`.
            Defaults to `"constant"`.
        power: float. 1.0 for magnitude, 2.0 for power. Defaults to 2.0.
        log: str or None. `"db"`: `10 log10(max(S, 1e-10) / ref)` for power
            (`20 log10` for magnitude: librosa's `power_to_db` /
            `amplitude_to_db`); `"ln"`: `ln(S + log_offset)`; None: linear.
        top_db: float or None. With `log="db"`, clip each example at its
            maximum minus `top_db` (librosa semantics). Defaults to None.
        ref: float or `"max"`. dB reference; `"max"` is each example's
            maximum (librosa's `ref=np.max`). Defaults to 1.0.
        log_offset: float. Offset of `log="ln"`. Defaults to 1e-6.
        stft_impl: str. `"rfft"` (tf.signal / keras.ops.stft) or `"matmul"`
            (a strided convolution by the windowed DFT basis: the same numbers,
            and runs in TFLite's builtin ops for any `n_fft`, where the builtin
            RFFT2D takes powers of two only; esc50tf.export uses it). Defaults
            to `"rfft"`."""


@keras.saving.register_keras_serializable(package="esc50tf")
class Spectrogram(_Frontend):
    """STFT magnitude or power spectrogram, time-major, librosa-exact.

    Equals `np.abs(librosa.stft(y, ...)) ** power` (then `power_to_db` if
    `log="db"`), transposed to `[frames, bins]`. The FFT, the window and the
    log run in float32 under mixed-precision policies; the result is cast to
    the compute dtype. (With `log=None` and `mixed_float16`, power values
    above 65504 overflow: use a log scale with float16.)

    Args:{args}
        **kwargs: Base layer arguments (`name`, `dtype`...).

    Example:

    >>> layer = Spectrogram(n_fft=512, hop_length=128, log="db")
    >>> layer(np.zeros((4, 16000), "float32")).shape   # [batch, frames, bins]
    TensorShape([4, 126, 257])
    """


Spectrogram.__doc__ = Spectrogram.__doc__.format(args=_FRONTEND_ARGS_DOC)


_MEL_ARGS_DOC = """
        sample_rate: int. Sampling rate of the input in Hz. Defaults to 44100.
        n_mels: int. Number of Mel bands. Defaults to 128.
        fmin: float. Lowest filter edge in Hz. Defaults to 0.
        fmax: float or None. Highest filter edge in Hz; None means
            `sample_rate / 2`. Defaults to None.
        mel_scale: str. `"slaney"` (librosa's default) or `"htk"`.
            Defaults to `"slaney"`.
        norm: str or None. `"slaney"` (unit-area triangles, librosa's default)
            or None (unit-peak triangles). Defaults to `"slaney"`."""


@keras.saving.register_keras_serializable(package="esc50tf")
class MelSpectrogram(_Frontend):
    """Mel spectrogram (log-scaled by default), time-major, librosa-exact.

    Equals `librosa.power_to_db(librosa.feature.melspectrogram(y, ...))`
    transposed to `[frames, n_mels]`, with the filterbank of
    `librosa.filters.mel` (re-implemented in numpy, computed once and kept as
    a non-trainable weight). FFT, filterbank and log run in float32 under
    mixed precision; the result is cast to the compute dtype.

    Args:{mel_args}{args}
        **kwargs: Base layer arguments (`name`, `dtype`...).

    Example:

    >>> layer = MelSpectrogram(sample_rate=22050, n_fft=1024, hop_length=256,
    ...                        n_mels=64)
    >>> layer(np.zeros((4, 22050 * 5), "float32")).shape
    TensorShape([4, 431, 64])
    """

    def __init__(self, sample_rate=44100, n_mels=128, fmin=0.0, fmax=None,
                 mel_scale="slaney", norm="slaney", **kwargs):
        # The STFT arguments (n_fft, hop_length, ..., log_offset) and the base
        # layer's go to `_Frontend` through **kwargs.
        check_args(
            dict(sample_rate=sample_rate, n_mels=n_mels, fmin=fmin, fmax=fmax,
                 mel_scale=mel_scale, norm=norm),
            ValueError, type(self).__name__,
        )
        super().__init__(**kwargs)
        self.sample_rate = int(sample_rate)
        self.n_mels = int(n_mels)
        self.fmin = float(fmin)
        self.fmax = None if fmax is None else float(fmax)
        self.mel_scale = mel_scale
        self.norm = norm

    _projects = True

    def _constants(self):
        constants = super()._constants()
        constants["mel"] = mel_filterbank(
            self.sample_rate, self.n_fft, self.n_mels, self.fmin, self.fmax,
            self.mel_scale, self.norm,
        ).T.astype(np.float64)  # [n_fft // 2 + 1, n_mels]
        return constants

    @functools.cached_property
    def _bands(self):
        return mel_bands(self._constant_arrays["mel"])

    def _project(self, s, c, xp):
        if isinstance(xp, TFOps):
            # Host path (tf.data, CPU): each run of adjacent bands is multiplied
            # only with the bins where it is non-zero, 13% of the dense product's
            # multiply-adds for 128 Slaney bands (benchmarks/bench_pipeline.py).
            return xp.concatenate(
                [xp.matmul(s[..., lo:hi], c["mel"][lo:hi, a:b]) for lo, hi, a, b in self._bands],
                axis=-1,
            )  # [..., frames, n_mels]
        # On the accelerator the dense product is one well-shaped matmul.
        return xp.matmul(s, c["mel"])  # [..., frames, n_mels]

    @property
    def n_bins(self):
        return self.n_mels

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "sample_rate": self.sample_rate,
                "n_mels": self.n_mels,
                "fmin": self.fmin,
                "fmax": self.fmax,
                "mel_scale": self.mel_scale,
                "norm": self.norm,
            }
        )
        return config


MelSpectrogram.__doc__ = MelSpectrogram.__doc__.format(
    mel_args=_MEL_ARGS_DOC, args=_FRONTEND_ARGS_DOC
)


@keras.saving.register_keras_serializable(package="esc50tf")
class MFCC(MelSpectrogram):
    """Mel-frequency cepstral coefficients, optionally with deltas, librosa-exact.

    Equals `librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=n_mfcc)`
    (DCT-II, `norm="ortho"`) transposed to `[frames, n_mfcc]`. With
    `deltas=1` the first-order `librosa.feature.delta(mfcc)` (width 9, edges
    as `mode="interp"`) is appended on the last axis, with `deltas=2` also
    `librosa.feature.delta(mfcc, order=2)`: output `[frames, n_mfcc * (1 +
    deltas)]`. Deltas need at least 9 frames. Note that
    `librosa.feature.mfcc(y=...)` clips the dB Mel at `top_db=80`; pass
    `top_db=80.0` for the same.

    Args:
        n_mfcc: int. Number of coefficients, at most `n_mels`. Defaults to 20.
        deltas: int. 0, 1 or 2 orders of deltas appended. Defaults to 0.{mel_args}{args}
        **kwargs: Base layer arguments (`name`, `dtype`...).

    Example:

    >>> layer = MFCC(sample_rate=16000, n_fft=512, hop_length=160, n_mels=40,
    ...              n_mfcc=13, deltas=2)
    >>> layer(np.zeros((4, 16000), "float32")).shape
    TensorShape([4, 101, 39])
    """

    def __init__(self, n_mfcc=20, deltas=0, **kwargs):
        values = dict(kind="mfcc", n_mfcc=n_mfcc, deltas=deltas,
                      n_mels=kwargs.get("n_mels", 128), log=kwargs.get("log", "db"))
        check_args(values, ValueError, type(self).__name__)
        super().__init__(**kwargs)
        self.n_mfcc = int(n_mfcc)
        self.deltas = int(deltas)

    def _constants(self):
        constants = super()._constants()
        constants["dct"] = dct_matrix(self.n_mels, self.n_mfcc)  # [n_mels, n_mfcc]
        return constants

    def _head(self, s, c, xp):
        mfcc = xp.matmul(s, c["dct"])  # [..., frames, n_mfcc]
        outputs = [mfcc]
        for order in range(1, self.deltas + 1):
            outputs.append(self._delta(mfcc, order, xp))
        return outputs[0] if len(outputs) == 1 else xp.concatenate(outputs, axis=-1)

    @staticmethod
    def _delta(x, order, xp):
        w = delta_weights(order)
        width = len(w)
        half = width // 2
        # Valid part: frames half .. T - half - 1.
        valid = None
        for j, wj in enumerate(w):
            stop = j - (width - 1)
            term = x[..., j : (stop if stop else None), :] * float(wj)
            valid = term if valid is None else valid + term
        # librosa mode="interp": a degree-`order` fit differentiated `order`
        # times is constant, so the edge frames repeat the nearest valid one.
        first = valid[..., :1, :]
        last = valid[..., -1:, :]
        return xp.concatenate([first] * half + [valid] + [last] * half, axis=-2)

    @property
    def n_bins(self):
        return self.n_mfcc * (1 + self.deltas)

    def compute_output_shape(self, input_shape):
        shape = super().compute_output_shape(input_shape)
        if self.deltas and shape[-2] is not None and shape[-2] < DELTA_WIDTH:
            raise ValueError(
                f"MFCC deltas need at least {DELTA_WIDTH} frames; received "
                f"{input_shape[-1]} samples, giving {shape[-2]} frames."
            )
        return shape

    def call(self, inputs):
        if self.deltas:
            self.compute_output_shape(tuple(inputs.shape))
        return super().call(inputs)

    def get_config(self):
        config = super().get_config()
        config.update({"n_mfcc": self.n_mfcc, "deltas": self.deltas})
        return config


MFCC.__doc__ = MFCC.__doc__.format(mel_args=_MEL_ARGS_DOC, args=_FRONTEND_ARGS_DOC)
