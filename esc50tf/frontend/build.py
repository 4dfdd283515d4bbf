"""Building the front-end layer of a config, through the registry.

The layer class and the settings it takes come from the kind's entry in
:data:`esc50tf.frontend.config.FRONTENDS`, so this does not change when a
front end is added.

Example:

>>> config = FeatureConfig(kind="mel", sample_rate=22050, n_fft=1024,
...                        hop_length=256, n_mels=64)
>>> build_frontend(config)(np.zeros((2, 22050), "float32")).shape   # 1 + 22050 // 256
TensorShape([2, 87, 64])
"""

from __future__ import annotations

import keras

from esc50tf.frontend.config import FeatureConfig

__all__ = ["build_frontend"]


def build_frontend(config, **layer_kwargs) -> keras.layers.Layer:
    """Returns the front-end layer for ``config``.

    Args:
        config: FeatureConfig or dict (see `FeatureConfig.from_dict`).
        **layer_kwargs: Base layer arguments (`name`, `dtype`...).

    Returns:
        The layer of `config.kind` (:class:`MelSpectrogram`, :class:`MFCC`,
        :class:`Spectrogram`...) with the settings it reads.
    """
    config = FeatureConfig.from_dict(config)
    return config.spec.layer_class(**config.layer_kwargs(), **layer_kwargs)
