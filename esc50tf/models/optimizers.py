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


@keras.saving.register_keras_serializable(package="esc50tf")
class WarmupRampdown(keras.optimizers.schedules.LearningRateSchedule):
    """Exponential warm-up, constant, then a linear ramp down to a floor (EfficientAT).

    The schedule of EfficientAT's fine-tuning scripts (Schmid et al., 2023;
    `exp_warmup_linear_down` in their `helpers/utils.py`, after Laine & Aila,
    2017): the factor on `peak` is `exp(-5 (1 - t / warmup)^2)` during the
    warm-up (t in steps, at least half a step... as the reference clips its
    epoch counter at 0.5), then it falls linearly from 1 at
    `rampdown_start` to `floor` over `rampdown_steps`, and stays at `floor`.

    Args:
        peak: float. The learning rate after warm-up.
        warmup_steps: int. Length of the exponential warm-up.
        rampdown_start: int. Step where the linear ramp down begins.
        rampdown_steps: int. Its length.
        floor: float. Final factor on `peak` (0.01 in the reference).

    Example:
    >>> s = WarmupRampdown(6e-5, 10, 10, 65, 0.01)
    >>> float(s(10)), float(s(75)) # doctest: +ELLIPSIS
    (6e-05, 6.0...e-07)
    """

    def __init__(self, peak, warmup_steps, rampdown_start, rampdown_steps, floor):
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.rampdown_start = int(rampdown_start)
        self.rampdown_steps = max(1, int(rampdown_steps))
        self.floor = float(floor)

    def __call__(self, step):
        from keras import ops

        step = ops.cast(step, "float32")
        warm = max(self.warmup_steps, 1)
        t = ops.clip(step, 0.5, float(warm))
        phase = 1.0 - t / warm
        up = ops.where(step < self.warmup_steps, ops.exp(-5.0 * phase * phase), 1.0)
        into = ops.clip((step - self.rampdown_start) / self.rampdown_steps, 0.0, 1.0)
        down = 1.0 - (1.0 - self.floor) * into
        return self.peak * up * down

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps,
                "rampdown_start": self.rampdown_start, "rampdown_steps": self.rampdown_steps,
                "floor": self.floor}
