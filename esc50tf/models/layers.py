"""Layers the model families share: pooling over one axis, attention pooling, PANNs' pooling,
the dynamic convolution, Dy-ReLU and coordinate attention of EfficientAT's DyMN."""

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


@keras.saving.register_keras_serializable(package="esc50tf")
class SplitAt(keras.layers.Layer):
    """Cuts a sequence in two at a fixed index: `[b, L, C] -> ([b, n, C], [b, L - n, C])`.

    For a sequence whose first `n` steps are of a static size and the rest of
    any length (the DyMN context: frequency bands, then frames).

    Args:
        index: int. Steps in the first part.
        **kwargs: Base layer arguments.
    """

    def __init__(self, index, **kwargs):
        super().__init__(**kwargs)
        if int(index) < 1:
            raise ValueError(f"SplitAt: index must be a positive int, got {index!r}")
        self.index = int(index)

    def call(self, inputs):
        return inputs[:, :self.index], inputs[:, self.index:]

    def compute_output_shape(self, input_shape):
        rest = None if input_shape[1] is None else input_shape[1] - self.index
        return ((input_shape[0], self.index, *input_shape[2:]),
                (input_shape[0], rest, *input_shape[2:]))

    def get_config(self):
        return {**super().get_config(), "index": self.index}


@keras.saving.register_keras_serializable(package="esc50tf")
class DynamicConv2D(keras.layers.Layer):
    """Dynamic convolution: K kernels mixed per example by attention over a context vector.

    `attention = softmax((context W + b) / temperature)` `[b, K]`, and the
    output is the convolution with `sum_k attention_k kernel_k` (Chen et al.,
    "Dynamic Convolution: Attention over Convolution Kernels", CVPR 2020; as
    EfficientAT's DyMN uses it). A 1x1 convolution mixes the kernels and
    multiplies once; a depthwise one sums the K convolutions weighted by the
    attention (the same sum, linear in the kernel). Padding is PyTorch's:
    `(kernel_size - 1) // 2` zeros on every side, also with stride 2.
    `([b, F, T, C_in], [b, H]) -> [b, F', T', filters]`.

    Args:
        filters: int. Output channels (for a depthwise convolution, its input's).
        kernel_size: int. Square kernel size; 1 unless `depthwise`.
        strides: int. Stride on both axes. Defaults to 1.
        depthwise: bool. One kernel per channel. Defaults to False.
        num_kernels: int. K. Defaults to 4.
        temperature: float. Softmax temperature of the attention. Defaults to 1.0.
        **kwargs: Base layer arguments.

    Weights: `kernel` (`(K, C_in, filters)`, depthwise `(k, k, C, K)`),
    `attention_kernel` `(H, K)`, `attention_bias` `(K,)`.
    """

    def __init__(self, filters, kernel_size=1, strides=1, depthwise=False, num_kernels=4,
                 temperature=1.0, **kwargs):
        super().__init__(**kwargs)
        if not depthwise and kernel_size != 1:
            raise ValueError(f"DynamicConv2D: a full convolution must be 1x1, got kernel_size="
                             f"{kernel_size!r} (a larger kernel: depthwise=True)")
        if temperature <= 0 or num_kernels < 1:
            raise ValueError(f"DynamicConv2D: temperature must be > 0 and num_kernels >= 1, "
                             f"got {temperature!r} and {num_kernels!r}")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.depthwise = bool(depthwise)
        self.num_kernels = int(num_kernels)
        self.temperature = float(temperature)

    def build(self, input_shape):
        x_shape, context_shape = input_shape
        channels = x_shape[-1]
        if self.depthwise and channels != self.filters:
            raise ValueError(f"DynamicConv2D: depthwise over {channels} channels, got "
                             f"filters={self.filters}")
        k = self.num_kernels
        shape = ((self.kernel_size, self.kernel_size, channels, k) if self.depthwise
                 else (k, channels, self.filters))
        self.kernel = self.add_weight(shape=shape, initializer="he_normal", name="kernel")
        self.attention_kernel = self.add_weight(shape=(context_shape[-1], k),
                                                initializer="glorot_uniform",
                                                name="attention_kernel")
        self.attention_bias = self.add_weight(shape=(k,), initializer="zeros",
                                              name="attention_bias")

    def call(self, inputs):
        x, context = inputs
        logits = ops.matmul(context, self.attention_kernel) + self.attention_bias
        attention = ops.softmax(logits / self.temperature, axis=-1)  # [b, K]
        if not self.depthwise:
            kernel = ops.einsum("bk,kio->bio", attention, self.kernel)  # one per example
            return ops.einsum("bfti,bio->bfto", x, kernel)
        pad = (self.kernel_size - 1) // 2
        x = ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        out = 0.0
        for k in range(self.num_kernels):
            y = ops.depthwise_conv(x, self.kernel[..., k:k + 1], strides=self.strides,
                                   padding="valid")
            out = out + y * attention[:, None, None, k:k + 1]
        return out

    def compute_output_shape(self, input_shape):
        b, f, t, _c = input_shape[0]
        pad = (self.kernel_size - 1) // 2

        def size(n):
            return None if n is None else (n + 2 * pad - self.kernel_size) // self.strides + 1

        return (b, size(f), size(t), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "strides": self.strides,
                "depthwise": self.depthwise, "num_kernels": self.num_kernels,
                "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="esc50tf")
class DynamicReLU(keras.layers.Layer):
    """Dy-ReLU-B: per example and channel, the max of M lines set by a context vector.

    `theta = 2 sigmoid(context W + b) - 1` holds 2M values a channel
    (channel-major), `coefficients = theta * lambdas + init_v` gives the
    slopes `a_1..a_M` and offsets `b_1..b_M`, and the output is
    `max_m(a_m x + b_m)` (Chen et al., "Dynamic ReLU", ECCV 2020; as
    EfficientAT's DyMN uses it). `([b, F, T, C], [b, H]) -> [b, F, T, C]`.

    Args:
        num_pieces: int. M. Defaults to 2.
        **kwargs: Base layer arguments.

    Weights: `kernel` `(H, 2 M C)`, `bias` `(2 M C,)`, and, not trained, the
    reference's buffers `lambdas` (`(1,) * M + (0.5,) * M`) and `init_v`
    (`(1,) + (0,) * (2 M - 1)`: at theta = 0 it is a ReLU).
    """

    def __init__(self, num_pieces=2, **kwargs):
        super().__init__(**kwargs)
        if int(num_pieces) < 1:
            raise ValueError(f"DynamicReLU: num_pieces must be >= 1, got {num_pieces!r}")
        self.num_pieces = int(num_pieces)

    def build(self, input_shape):
        x_shape, context_shape = input_shape
        self.channels = int(x_shape[-1])
        m = self.num_pieces
        self.kernel = self.add_weight(shape=(context_shape[-1], 2 * m * self.channels),
                                      initializer="glorot_uniform", name="kernel")
        self.bias = self.add_weight(shape=(2 * m * self.channels,), initializer="zeros",
                                    name="bias")
        self.lambdas = self.add_weight(
            shape=(2 * m,), name="lambdas", trainable=False,
            initializer=keras.initializers.Constant([1.0] * m + [0.5] * m))
        self.init_v = self.add_weight(
            shape=(2 * m,), name="init_v", trainable=False,
            initializer=keras.initializers.Constant([1.0] + [0.0] * (2 * m - 1)))

    def call(self, inputs):
        x, context = inputs
        m = self.num_pieces
        theta = 2.0 * ops.sigmoid(ops.matmul(context, self.kernel) + self.bias) - 1.0
        theta = ops.reshape(theta, (-1, 1, 1, self.channels, 2 * m))
        coefficients = theta * self.lambdas + self.init_v  # [b, 1, 1, C, 2M]
        lines = ops.expand_dims(x, -1) * coefficients[..., :m] + coefficients[..., m:]
        return ops.max(lines, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "num_pieces": self.num_pieces}


@keras.saving.register_keras_serializable(package="esc50tf")
class CoordinateAttention(keras.layers.Layer):
    """Scales a feature map by a frequency and a time attention: `x sigmoid(g_f) sigmoid(g_t)`.

    `([b, F, T, C], [b, F, C], [b, T, C]) -> [b, F, T, C]` (Hou et al.,
    "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021;
    the DyMN's version, whose attention sequences come from its context).

    Args:
        **kwargs: Base layer arguments.
    """

    def call(self, inputs):
        x, frequency, time = inputs
        return (x * ops.expand_dims(ops.sigmoid(frequency), 2)
                * ops.expand_dims(ops.sigmoid(time), 1))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])
