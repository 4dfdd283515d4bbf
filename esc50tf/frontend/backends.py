"""The STFT op backends of the spectrogram layers: one interface, three implementations.

The spectrogram layers write their math once against a small namespace `xp`
(`pad`, `stft`, `sqrt`, `maximum`, `log`, `cast`, `concatenate`, `max`,
`matmul`) and run it on one of:

- :class:`KerasOps`: `keras.ops` (any backend; under TensorFlow
  `keras.ops.stft` is `tf.signal.stft`), the layers' default;
- :class:`MatmulDFTOps`: `keras.ops` with the STFT as a strided convolution by
  the windowed DFT basis (`stft_impl="matmul"`, for TFLite export);
- :class:`TFOps`: plain TensorFlow, for `tf.data` pipelines whatever the Keras
  backend (the host featurizer and the layers inside `Dataset.map` under JAX).

`stft(x, n_fft, hop_length, window)` returns the real and imaginary parts
`[..., frames, n_fft // 2 + 1]` of the uncentred STFT (the layers pad).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

__all__ = ["KerasOps", "MatmulDFTOps", "TFOps"]


class KerasOps:
    """``keras.ops`` with an exact-precision matmul on JAX."""

    pad = staticmethod(ops.pad)
    sqrt = staticmethod(ops.sqrt)
    maximum = staticmethod(ops.maximum)
    log = staticmethod(ops.log)
    cast = staticmethod(ops.cast)
    concatenate = staticmethod(ops.concatenate)

    @staticmethod
    def max(x, axis, keepdims):
        return ops.max(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def stft(x, n_fft, hop_length, window):
        return ops.stft(x, n_fft, hop_length, n_fft, window=window, center=False)

    @staticmethod
    def matmul(x, w):
        if keras.backend.backend() == "jax" and not isinstance(x, keras.KerasTensor):
            import jax.numpy as jnp

            # JAX's default f32 matmul precision can be TF32 on GPUs and bf16
            # on TPUs: too coarse for dB-exact filterbanks.
            return jnp.matmul(x, ops.convert_to_tensor(w), precision="highest")
        return ops.matmul(x, w)


class MatmulDFTOps(KerasOps):
    """``keras.ops`` with the STFT as one strided convolution by a windowed DFT basis.

    For export: TFLite's builtin ``RFFT2D`` takes power-of-two FFT lengths
    only, while a convolution runs everywhere. O(n_fft) multiply-adds per bin
    instead of O(log n_fft); equal to the FFT path within float32 rounding.

    Args:
        window: numpy array `[n_fft]`. The analysis window, folded into the basis.
    """

    def __init__(self, window):
        n_fft = len(window)
        k = np.arange(n_fft // 2 + 1)
        phase = 2.0 * np.pi * np.outer(np.arange(n_fft), k) / n_fft  # [n_fft, bins]
        w = np.asarray(window, dtype=np.float64)[:, None]
        self.basis = np.concatenate([w * np.cos(phase), -w * np.sin(phase)], axis=1)
        self.bins = len(k)

    def stft(self, x, n_fft, hop_length, window):
        kernel = ops.convert_to_tensor(self.basis[:, None, :], dtype=x.dtype)  # [n_fft, 1, 2 bins]
        one = len(x.shape) == 1
        x = ops.expand_dims(x[None] if one else x, -1)  # [batch, samples, 1]
        y = ops.conv(x, kernel, strides=hop_length, padding="valid")  # [batch, frames, 2 bins]
        y = y[0] if one else y
        return y[..., : self.bins], y[..., self.bins:]


class TFOps:
    """The same interface in plain TensorFlow, for ``tf.data`` pipelines."""

    def __init__(self):
        import tensorflow as tf

        self.tf = tf

    def pad(self, x, pad_width, mode):
        return self.tf.pad(x, pad_width, mode=mode.upper())

    def stft(self, x, n_fft, hop_length, window):
        z = self.tf.signal.stft(
            x, n_fft, hop_length, n_fft, window_fn=lambda *_, **__: window,
            pad_end=False,
        )
        return self.tf.math.real(z), self.tf.math.imag(z)

    def sqrt(self, x):
        return self.tf.sqrt(x)

    def maximum(self, x, y):
        return self.tf.maximum(x, y)

    def log(self, x):
        return self.tf.math.log(x)

    def cast(self, x, dtype):
        return self.tf.cast(x, dtype)

    def concatenate(self, xs, axis):
        return self.tf.concat(xs, axis)

    def max(self, x, axis, keepdims):
        return self.tf.reduce_max(x, axis=axis, keepdims=keepdims)

    def matmul(self, x, w):
        return self.tf.matmul(x, w)
