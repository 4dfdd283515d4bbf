"""Adapters between the spectrogram layers and a classifier: a channel axis, or an image.

Example:

>>> AddChannelAxis()(np.zeros((2, 431, 128), "float32")).shape
TensorShape([2, 431, 128, 1])
>>> ResizeToImage(224, 224, 3)(np.zeros((2, 431, 128), "float32")).shape
TensorShape([2, 224, 224, 3])
"""

from __future__ import annotations

import keras
from keras import ops

from esc50tf.frontend.config import is_int

__all__ = ["AddChannelAxis", "ResizeToImage"]


@keras.saving.register_keras_serializable(package="esc50tf")
class AddChannelAxis(keras.layers.Layer):
    """Adds a trailing channel axis for 2-D CNNs: `[b, frames, bins] -> [b, frames, bins, 1]`.

    Args:
        **kwargs: Base layer arguments (`name`, `dtype`...).

    Example:

    >>> AddChannelAxis()(np.zeros((2, 431, 128), "float32")).shape
    TensorShape([2, 431, 128, 1])
    """

    def call(self, inputs):
        return ops.expand_dims(inputs, -1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (1,)


@keras.saving.register_keras_serializable(package="esc50tf")
class ResizeToImage(keras.layers.Layer):
    """Resizes features to a fixed image with `channels` channels (ImageNet backbones).

    `[b, frames, bins]` or `[b, frames, bins, 1]` -> `[b, height, width,
    channels]`: frames along the height, bins along the width, the single
    channel repeated. Values are not rescaled; put a normalisation layer
    before or after.

    Args:
        height: int. Output height (resized frame axis). Defaults to 224.
        width: int. Output width (resized bin axis). Defaults to 224.
        channels: int. Output channels (the input channel repeated).
            Defaults to 3.
        interpolation: str. As `keras.ops.image.resize`: `"bilinear"`,
            `"nearest"`, `"bicubic"`... Defaults to `"bilinear"`.
        antialias: bool. Antialias when downsampling. Defaults to False.
        **kwargs: Base layer arguments (`name`, `dtype`...).

    Example:

    >>> ResizeToImage()(np.zeros((2, 431, 128), "float32")).shape
    TensorShape([2, 224, 224, 3])
    """

    def __init__(self, height=224, width=224, channels=3, interpolation="bilinear",
                 antialias=False, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("height", height), ("width", width), ("channels", channels)):
            if not (is_int(value) and value >= 1):
                raise ValueError(
                    f"ResizeToImage: {name}={value!r} is not allowed; allowed: "
                    "an integer >= 1."
                )
        self.height = int(height)
        self.width = int(width)
        self.channels = int(channels)
        self.interpolation = interpolation
        self.antialias = bool(antialias)

    def call(self, inputs):
        x = inputs
        if len(x.shape) == 3:
            x = ops.expand_dims(x, -1)
        if x.shape[-1] != 1:
            raise ValueError(
                "ResizeToImage expects [batch, frames, bins] or [batch, frames, "
                f"bins, 1]; received shape {tuple(inputs.shape)}."
            )
        x = ops.image.resize(
            ops.cast(x, "float32"), (self.height, self.width),
            interpolation=self.interpolation, antialias=self.antialias,
            data_format="channels_last",
        )  # [b, height, width, 1]
        x = ops.repeat(x, self.channels, axis=-1)
        return ops.cast(x, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, self.channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "height": self.height,
                "width": self.width,
                "channels": self.channels,
                "interpolation": self.interpolation,
                "antialias": self.antialias,
            }
        )
        return config
