"""The base of every random augmentation layer, and the seed stream of the mixing functions.

`AugmentLayer` gives each layer a `seed`, its own `keras.random.SeedGenerator`,
no autocast (the output keeps the input dtype) and the identity when
`training` is False or None; subclasses write only `_augment(inputs)`.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from esc50tf.augment.checks import check_int

__all__ = ["AugmentLayer", "SeedStream", "batch_shape"]


def batch_shape(x):
    """`[batch, 1, ..., 1]` matching the rank of x, for per-example values."""
    return (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)


class AugmentLayer(keras.layers.Layer):
    """Shared plumbing: seed generator, no autocast, identity at inference.

    Subclasses implement `_augment(inputs)` for the training path.
    """

    # Constructor arguments a subclass saves in its config (same-named attributes).
    config_keys = ()

    def __init__(self, seed=None, **kwargs):
        # Augmentation keeps the input dtype; a mixed_float16 policy must not
        # cast a float32 waveform to float16 before noise is added.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if seed is not None:
            check_int("seed", seed)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        return self._augment(inputs)

    def _augment(self, inputs):
        raise NotImplementedError

    def _normal_like(self, x):
        """Standard normal float32 noise of `x`'s shape, from the layer's generator."""
        return keras.random.normal(keras.ops.shape(x), dtype="float32",
                                   seed=self.seed_generator)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor(
            self.compute_output_shape(inputs.shape), dtype=inputs.dtype
        )

    def get_config(self):
        config = super().get_config()
        config.update({"seed": self.seed, **{k: getattr(self, k) for k in self.config_keys}})
        return config


class SeedStream:
    """Seeds for successive draws from one user seed.

    A `SeedGenerator` advances by itself; an int seed gives `seed, seed + 1,
    ...` so that draws within one call are independent (the same int for two
    draws would correlate them); None uses Keras' global generator.
    """

    def __init__(self, seed):
        if seed is not None and not isinstance(
            seed, (int, np.integer, keras.random.SeedGenerator)
        ):
            raise ValueError(
                "Argument `seed` must be None, an int or a "
                f"keras.random.SeedGenerator. Received: seed={seed!r}"
            )
        self._seed = seed
        self._count = 0

    def __call__(self):
        if self._seed is None or isinstance(self._seed, keras.random.SeedGenerator):
            return self._seed
        self._count += 1
        return int(self._seed) + self._count - 1

