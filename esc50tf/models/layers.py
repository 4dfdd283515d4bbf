"""Layers the model families share: pooling over one axis, attention pooling."""

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

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "return_attention": self.return_attention}
