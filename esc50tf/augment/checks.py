"""Argument checks shared by the augmentation layers and `AugmentConfig`.

Keras-free (numpy and math only), so `esc50tf.augment.config` can use them
without importing TensorFlow.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["check_choice", "check_int", "check_number", "is_number_in", "range_text"]


def range_text(low=None, high=None, low_open=False):
    """`[0.0, inf)`-style text of an interval, for error messages."""
    opener = "(" if low_open or low is None else "["
    closer = ")" if high is None else "]"
    lo = "-inf" if low is None else low
    hi = "inf" if high is None else high
    return f"{opener}{lo}, {hi}{closer}"


def is_number_in(value, low=None, high=None, low_open=False):
    """True if `value` is a finite real (not a bool) in the given range."""
    if isinstance(value, bool) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        return False
    if not math.isfinite(value):
        return False
    if low is not None and (value <= low if low_open else value < low):
        return False
    return high is None or value <= high


def check_number(name, value, low=None, high=None, low_open=False):
    """Raises ValueError unless `value` is a finite real in the given range."""
    if not is_number_in(value, low, high, low_open):
        raise ValueError(
            f"Argument `{name}` must be a finite number in "
            f"{range_text(low, high, low_open)}. Received: {name}={value!r}"
        )


def check_int(name, value, low=0):
    """Raises ValueError unless `value` is an integer (not a bool) >= `low`."""
    integer = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not integer or value < low:
        raise ValueError(
            f"Argument `{name}` must be an integer >= {low}. "
            f"Received: {name}={value!r}"
        )


def check_choice(name, value, choices):
    """Raises ValueError unless `value` is one of `choices`."""
    if value not in choices:
        allowed = " or ".join(repr(c) for c in choices)
        raise ValueError(
            f"Argument `{name}` must be {allowed}. Received: {name}={value!r}"
        )
