"""The front end as a plain TensorFlow function, to compute features in tf.data on the host.

Example:

>>> featurize = make_host_featurizer(FeatureConfig(n_mels=64))
>>> featurize(np.zeros((2, 44100), "float32")).shape   # 1 + 44100 // 512
TensorShape([2, 87, 64])
"""

from __future__ import annotations

import json

from esc50tf.frontend.build import build_frontend

__all__ = ["make_host_featurizer"]


def make_host_featurizer(config, jit_compile=True):
    """Plain TensorFlow function computing the front end, for ``tf.data``.

    Same numbers as the layer of :func:`build_frontend` (same code, run on
    ``tf`` ops with the constant matrices baked into the graph as constants
    rather than read from variables), usable in ``Dataset.map`` whatever the
    Keras backend. The layer itself works in ``Dataset.map`` too: under the
    TensorFlow backend it is ordinary TF; under JAX it detects ``tf`` tensors
    and takes this same path. Always float32.

    Args:
        config: FeatureConfig or dict.
        jit_compile: bool. Compile with XLA, which fuses padding, framing,
            windowing and the log (about 15% less CPU per clip on the host).
            Defaults to True.

    Returns:
        ``featurize(waveforms) -> features``: ``[batch, samples]`` (or
        ``[samples]``) -> ``[batch, frames, bins]`` (or ``[frames, bins]``).
        int16 waveforms (``DatasetOptions(waveform_dtype="int16")``) are scaled
        to [-1, 1] inside the compiled function.

    Example:

    >>> featurize = make_host_featurizer(FeatureConfig())
    >>> ds = waves_ds.batch(32).map(lambda x, y: (featurize(x), y))  # doctest: +SKIP
    """
    # One function per configuration for the process: a new tf.function per split (svm
    # and study make features split by split) is traced anew each time, and TensorFlow
    # reports the fifth such trace as "triggered tf.function retracing".
    settings = config if isinstance(config, dict) else config.to_dict()
    key = (json.dumps(settings, sort_keys=True, default=str), bool(jit_compile))
    if key not in _FEATURIZERS:
        _FEATURIZERS[key] = _featurizer(config, jit_compile)
    return _FEATURIZERS[key]


_FEATURIZERS = {}


def _featurizer(config, jit_compile):
    import tensorflow as tf

    layer = build_frontend(config, dtype="float32")

    def featurize(waveforms):
        waveforms = tf.convert_to_tensor(waveforms)
        if waveforms.dtype == tf.int16:
            waveforms = tf.cast(waveforms, tf.float32) / 32768.0
        return layer.compute_tf(waveforms)

    # reduce_retracing: the last, smaller batch of a split (and each new clip length)
    # gets a shape-generic trace instead of a new one per shape, which TensorFlow
    # would report as "triggered tf.function retracing" after a few splits.
    return tf.function(featurize, jit_compile=True, reduce_retracing=True) if jit_compile \
        else featurize
