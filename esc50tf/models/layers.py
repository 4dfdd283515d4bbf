"""Layers the model families share: pooling over one axis, attention pooling, PANNs' pooling."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="esc50tf")
class MeanOverAxis(keras.layers.Layer):
    """Averages one axis away, e.g. frequency: `[b, T, F, C] -> [b, T, C]` with axis=2.

    Args:
        axis: int. The axis to average over (not the batch axis).
        **kwargs: Base layer arguments.
    """

    def __init__(self, axis, **kwargs):
        super().__init__(**kwargs)
        if axis == 0:
            raise ValueError("MeanOverAxis: axis=0 is the batch axis; use another one")
        self.axis = int(axis)

    def call(self, inputs):
        return ops.mean(inputs, axis=self.axis)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        del shape[self.axis]
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


@keras.saving.register_keras_serializable(package="esc50tf")
class AttentionPooling(keras.layers.Layer):
    """Additive (Bahdanau) attention pooling over time.

    `score_t = v . tanh(W h_t + b)`, `alpha = softmax_t(score)`,
    `output = sum_t alpha_t h_t`: `[b, T, D] -> [b, D]`. The softmax runs in
    float32 under mixed precision. Bahdanau et al., "Neural Machine Translation
    by Jointly Learning to Align and Translate", ICLR 2015.

    Args:
        units: int. Size of the attention's hidden projection. Defaults to 64.
        return_attention: bool. Also return the weights `[b, T]`. Defaults to False.
        **kwargs: Base layer arguments.

    Example:
    >>> AttentionPooling(32)(np.zeros((2, 13, 128), "float32")).shape
    (2, 128)
    """

    def __init__(self, units=64, return_attention=False, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.return_attention = bool(return_attention)

    def build(self, input_shape):
        dim = input_shape[-1]
        self.w = self.add_weight(name="w", shape=(dim, self.units), initializer="glorot_uniform")
        self.b = self.add_weight(name="b", shape=(self.units,), initializer="zeros")
        self.v = self.add_weight(name="v", shape=(self.units,), initializer="random_normal")

    def attention(self, inputs):
        hidden = ops.tanh(ops.matmul(inputs, self.w) + self.b)  # [b, T, units]
        scores = ops.sum(hidden * self.v, axis=-1)  # [b, T]
        return ops.softmax(ops.cast(scores, "float32"), axis=-1)

    def call(self, inputs):
        alpha = self.attention(inputs)
        pooled = ops.sum(ops.cast(inputs, "float32") * alpha[..., None], axis=1)  # [b, D]
        pooled = ops.cast(pooled, self.compute_dtype)
        if self.return_attention:
            return pooled, alpha
        return pooled

    def compute_output_shape(self, input_shape):
        pooled = (input_shape[0], input_shape[-1])
        if self.return_attention:
            return pooled, (input_shape[0], input_shape[1])
        return pooled

    def compute_output_spec(self, inputs):
        # The weights stay float32 under mixed precision, as `call` returns them.
        pooled = keras.KerasTensor((inputs.shape[0], inputs.shape[-1]), self.compute_dtype)
        if self.return_attention:
            return pooled, keras.KerasTensor((inputs.shape[0], inputs.shape[1]), "float32")
        return pooled

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "return_attention": self.return_attention}


@keras.saving.register_keras_serializable(package="esc50tf")
class TimeMaxPlusMean(keras.layers.Layer):
    """CNN14's clip pooling: max over time plus mean over time, `[b, T, C] -> [b, C]`.

    Args:
        **kwargs: Base layer arguments.

    Example:
    >>> TimeMaxPlusMean()(np.ones((2, 15, 8), "float32")).shape
    (2, 8)
    """

    def call(self, inputs):
        return ops.max(inputs, axis=1) + ops.mean(inputs, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package="esc50tf")
class SEDSmoothing(keras.layers.Layer):
    """The SED variant's smoothing over time: `max_pool1d(3, 1, 1) + avg_pool1d(3, 1, 1)`.

    As PyTorch's defaults: the max ignores the padding, the average counts
    it (zeros, divided by 3 at both ends). `[b, T, C] -> [b, T, C]`.

    Args:
        **kwargs: Base layer arguments.
    """

    def call(self, inputs):
        padded = ops.pad(inputs, [[0, 0], [1, 1], [0, 0]])  # zeros at both ends of time
        mean = (padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]) / 3.0
        low = ops.full_like(inputs[:, :1], float("-inf"))
        padded = ops.concatenate([low, inputs, low], axis=1)
        peak = ops.maximum(ops.maximum(padded[:, :-2], padded[:, 1:-1]), padded[:, 2:])
        return peak + mean

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


@keras.saving.register_keras_serializable(package="esc50tf")
class FramewiseUpsample(keras.layers.Layer):
    """Segment-wise output back to the frame rate, as the reference does it.

    Each of the T' segments is repeated `ratio` times, then the last one is
    repeated up to the number of frames of `frames_like` (the log-Mel):
    `([b, T', C], [b, frames, M]) -> [b, frames, C]`.

    Args:
        ratio: int. Frames per segment. Defaults to 32 (five 2x poolings).
        **kwargs: Base layer arguments.
    """

    def __init__(self, ratio=32, **kwargs):
        super().__init__(**kwargs)
        self.ratio = int(ratio)

    def call(self, inputs):
        segments, frames_like = inputs
        frames = ops.shape(frames_like)[1]
        last = ops.shape(segments)[1] - 1
        index = ops.minimum(ops.arange(frames) // self.ratio, last)
        return ops.take(segments, index, axis=1)

    def compute_output_shape(self, input_shape):
        segments, frames_like = input_shape
        return (segments[0], frames_like[1], segments[2])

    def get_config(self):
        return {**super().get_config(), "ratio": self.ratio}
