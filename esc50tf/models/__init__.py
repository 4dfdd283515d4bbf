"""Every model of the study behind one registry (see `registry.py`).

Families: `classic` (scikit-learn on fixed features), `cnn` (AlexNet and
keras.applications backbones), `rnn` (LSTM/GRU stacks over Mel frames),
`hybrid` (DenseNet121 trunk + Bi-GRU + attention over time).
"""

from esc50tf.models.config import ModelConfig
from esc50tf.models.registry import (FamilySpec, ModelSpec, check_data, families, family, get,
                                     names, register, register_family, specs)

__all__ = ["FamilySpec", "ModelConfig", "ModelSpec", "check_data", "families", "family", "get",
           "names", "register", "register_custom_objects", "register_family", "specs"]


def register_custom_objects():
    """Registers every esc50tf layer and optimizer with Keras, to load `.keras` files.

    The front-end and augmentation packages import their Keras layers lazily, so
    a saved model's custom objects (`esc50tf>MelSpectrogram`, `esc50tf>RandomCrop`,
    `esc50tf>TrunkScaledAdamW`...) are registered here, before any `load_model`.
    """
    import esc50tf.augment.spectrogram  # noqa: F401
    import esc50tf.augment.waveform  # noqa: F401
    import esc50tf.models.layers  # noqa: F401
    import esc50tf.models.optimizers  # noqa: F401
    from esc50tf import frontend

    frontend.register_layers()
