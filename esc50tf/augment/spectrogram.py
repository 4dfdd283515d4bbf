"""Spectrogram augmentation layers: SpecAugment masks and the study's image augmentation.

Inputs are time-major spectrograms `[batch, frames, bins]`, optionally with a
trailing channel axis. Both layers are the identity when `training` is False
or None.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from esc50tf.augment.base import AugmentLayer
from esc50tf.augment.checks import check_int, check_number

__all__ = ["SpecAugment", "StudyImageAugment", "rotate_images"]


def _check_rank(layer, inputs, axes):
    """The rank of `inputs`; ValueError unless it is `[batch, AXES(, channels)]`."""
    rank = len(inputs.shape)
    if rank not in (3, 4):
        raise ValueError(
            f"{type(layer).__name__} expects [batch, {axes}] or "
            f"[batch, {axes}, channels]. Received: shape={inputs.shape}"
        )
    return rank


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
class SpecAugment(AugmentLayer):
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
        check_int("freq_mask_param", freq_mask_param)
        check_int("time_mask_param", time_mask_param)
        check_int("num_freq_masks", num_freq_masks)
        check_int("num_time_masks", num_time_masks)
        if mask_value != "mean":
            check_number("mask_value", mask_value)
        self.freq_mask_param = freq_mask_param
        self.time_mask_param = time_mask_param
        self.num_freq_masks = num_freq_masks
        self.num_time_masks = num_time_masks
        self.mask_value = mask_value

    def _augment(self, inputs):
        rank = _check_rank(self, inputs, "frames, bins")
        shape = ops.shape(inputs)
        batch, frames, bins = shape[0], shape[1], shape[2]
        mask = ops.zeros((batch, frames, bins), "bool")
        if self.freq_mask_param > 0 and self.num_freq_masks > 0:
            freq = _random_band_mask(batch, bins, self.freq_mask_param, self.num_freq_masks,
                                     self.seed_generator)
            mask = mask | freq[:, None, :]
        if self.time_mask_param > 0 and self.num_time_masks > 0:
            time = _random_band_mask(batch, frames, self.time_mask_param, self.num_time_masks,
                                     self.seed_generator)
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

    config_keys = (
        "freq_mask_param", "time_mask_param", "num_freq_masks", "num_time_masks", "mask_value",
    )


def rotate_images(images, angles):
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
class StudyImageAugment(AugmentLayer):
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
        check_number("max_rotation_degrees", max_rotation_degrees, 0.0, 180.0)
        check_number("noise_stddev", noise_stddev, low=0.0)
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
        rank = _check_rank(self, inputs, "height, width")
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
            x = rotate_images(x, angles)
        if self.flip_horizontal:
            x = self._flip(x, axis=2)
        if self.flip_vertical:
            x = self._flip(x, axis=1)
        if self.noise_stddev > 0:
            x = x + self.noise_stddev * self._normal_like(x)
        if rank == 3:
            x = x[..., 0]
        return ops.cast(x, inputs.dtype)

    config_keys = ("max_rotation_degrees", "flip_horizontal", "flip_vertical", "noise_stddev")

