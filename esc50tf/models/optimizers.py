"""Optimizers for fine-tuning: a pretrained trunk learns more slowly than the new head."""

from __future__ import annotations

import keras

from esc50tf.models.panns import TRUNK_PREFIXES


@keras.saving.register_keras_serializable(package="esc50tf")
class TrunkScaledAdamW(keras.optimizers.AdamW):
    """AdamW whose pretrained-trunk variables take `trunk_lr_scale` times the learning rate.

    Discriminative fine-tuning (Howard & Ruder, "Universal Language Model
    Fine-tuning for Text Classification", ACL 2018): the new head learns at
    the full rate, the pretrained layers (those whose layer name starts with
    one of `trunk_prefixes`) at a fraction of it, so they adapt without
    forgetting. The scaled rate follows every schedule and ReduceLROnPlateau
    change of the base rate. With `weight_decay=0` it is Adam.

    Args:
        trunk_lr_scale: float in (0, 1]. Factor on the trunk's learning rate.
            Defaults to 0.1.
        trunk_prefixes: tuple of str. Layer-name prefixes of the trunk.
            Defaults to the PANNs layers (`bn0`, `conv_block*`, `fc1`).
        **kwargs: `keras.optimizers.AdamW` arguments (`learning_rate`,
            `weight_decay`...).

    Example:
    >>> opt = TrunkScaledAdamW(0.1, learning_rate=1e-3, weight_decay=0.0)
    >>> model.compile(opt, "sparse_categorical_crossentropy")
    """

    def __init__(self, trunk_lr_scale=0.1, trunk_prefixes=TRUNK_PREFIXES, **kwargs):
        super().__init__(**kwargs)
        if not 0 < trunk_lr_scale <= 1:
            raise ValueError(f"trunk_lr_scale must be in (0, 1], got {trunk_lr_scale!r}")
        self.trunk_lr_scale = float(trunk_lr_scale)
        self.trunk_prefixes = tuple(trunk_prefixes)
        self._trunk_indices = set()

    def build(self, var_list):
        super().build(var_list)
        self._trunk_indices = {
            self._get_variable_index(v) for v in var_list
            if v.path.split("/")[0].startswith(self.trunk_prefixes)
        }

    def update_step(self, gradient, variable, learning_rate):
        if self._get_variable_index(variable) in self._trunk_indices:
            learning_rate = learning_rate * self.trunk_lr_scale
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "trunk_lr_scale": self.trunk_lr_scale,
                "trunk_prefixes": list(self.trunk_prefixes)}
