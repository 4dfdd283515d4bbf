"""Normalisation of features: per frequency (statistics adapted from training data) or per example.

Example:

>>> norm = FrequencyNormalization()
>>> norm.adapt(np.random.rand(8, 431, 128)).mean.shape   # one statistic per bin
(128,)
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from esc50tf.frontend.config import is_int

__all__ = ["FrequencyNormalization", "InstanceNormalization"]


def _first_element(batch):
    # Datasets of (features, label[, weight]) pairs: keep the features.
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch


@keras.saving.register_keras_serializable(package="esc50tf")
class FrequencyNormalization(keras.layers.Layer):
    """Per-frequency standardisation with statistics from training data.

    `(x - mean[f]) / max(std[f], epsilon)` for each frequency bin `f` (the
    `axis` of the input). `mean` and `std` are non-trainable weights, filled
    by :meth:`adapt` from a stream of training batches and saved with the
    model. Before `adapt` the layer is the identity (mean 0, std 1).

    Args:
        axis: int. The frequency axis, negative: -1 for `[b, frames, bins]`,
            -2 for `[b, frames, bins, 1]`. Defaults to -1.
        epsilon: float. Floor of the standard deviation. Defaults to 1e-6.
        **kwargs: Base layer arguments (`name`, `dtype`...).

    Example:

    >>> frontend = MelSpectrogram(n_mels=64)
    >>> norm = FrequencyNormalization()
    >>> norm.adapt(train_waveforms_ds, frontend=frontend)  # doctest: +SKIP
    >>> model = keras.Sequential([keras.Input((220500,)), frontend, norm])  # doctest: +SKIP
    """

    def __init__(self, axis=-1, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        if not (is_int(axis) and axis < 0):
            raise ValueError(
                f"FrequencyNormalization: axis={axis!r} is not allowed; allowed: "
                "a negative integer (-1 for [b, frames, bins])."
            )
        self.axis = int(axis)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        n_bins = input_shape[self.axis]
        if n_bins is None:
            raise ValueError(
                f"FrequencyNormalization needs a known size on axis {self.axis}; "
                f"received input shape {tuple(input_shape)}."
            )
        self.mean = self.add_weight(
            name="mean", shape=(n_bins,), initializer="zeros", trainable=False,
            autocast=False,
        )
        self.std = self.add_weight(
            name="std", shape=(n_bins,), initializer="ones", trainable=False,
            autocast=False,
        )

    def adapt(self, data, frontend=None, steps=None):
        """Computes and stores the per-frequency mean and standard deviation.

        Streams the data once, accumulating in float64 (Chan et al.'s
        pairwise update), so it never holds more than one batch.

        Args:
            data: a batched `tf.data.Dataset`, a numpy array, or an iterable of
                batches. Elements may be `(x, y, ...)` tuples; `x` is used.
                Waveforms `[b, samples]` when `frontend` is given, else
                features.
            frontend: callable or None. Applied to each batch first, e.g. the
                model's front-end layer. Defaults to None.
            steps: int or None. Stop after this many batches. Defaults to None
                (the whole data).

        Returns:
            The layer.
        """
        if isinstance(data, np.ndarray):
            batches = [data]
        elif hasattr(data, "as_numpy_iterator"):
            batches = data.as_numpy_iterator()
        else:
            batches = iter(data)
        count, mean, m2 = 0, None, None
        for i, batch in enumerate(batches):
            if steps is not None and i >= steps:
                break
            x = _first_element(batch)
            if frontend is not None:
                x = frontend(x)
            x = np.asarray(ops.convert_to_numpy(x), dtype=np.float64)
            if not self.built:
                self.build(x.shape)
            x = np.moveaxis(x, self.axis, -1).reshape(-1, x.shape[self.axis])
            n_b = x.shape[0]
            if n_b == 0:
                continue
            mean_b = x.mean(axis=0)
            m2_b = ((x - mean_b) ** 2).sum(axis=0)
            if mean is None:
                count, mean, m2 = n_b, mean_b, m2_b
            else:
                delta = mean_b - mean
                total = count + n_b
                mean = mean + delta * (n_b / total)
                m2 = m2 + m2_b + delta**2 * (count * n_b / total)
                count = total
        if mean is None:
            raise ValueError("FrequencyNormalization.adapt received no data.")
        self.mean.assign(mean.astype(self.mean.dtype))
        self.std.assign(np.sqrt(m2 / count).astype(self.std.dtype))
        return self

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        shape = (-1,) + (1,) * (-self.axis - 1)
        mean = ops.reshape(ops.cast(self.mean, "float32"), shape)
        std = ops.reshape(ops.cast(self.std, "float32"), shape)
        out = (x - mean) / ops.maximum(std, self.epsilon)
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"axis": self.axis, "epsilon": self.epsilon})
        return config


@keras.saving.register_keras_serializable(package="esc50tf")
class InstanceNormalization(keras.layers.Layer):
    """Per-example standardisation: zero mean, unit variance over all non-batch axes.

    No weights: each spectrogram is normalised by its own mean and standard
    deviation (computed in float32), which removes recording gain.

    Args:
        epsilon: float. Added to the variance. Defaults to 1e-6.
        **kwargs: Base layer arguments (`name`, `dtype`...).

    Example:

    >>> InstanceNormalization()(np.random.rand(2, 431, 128)).shape
    TensorShape([2, 431, 128])
    """

    def __init__(self, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        axes = tuple(range(1, len(x.shape)))
        mean = ops.mean(x, axis=axes, keepdims=True)
        var = ops.var(x, axis=axes, keepdims=True)
        out = (x - mean) / ops.sqrt(var + self.epsilon)
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config
