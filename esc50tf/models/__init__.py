"""Every model of the study behind one registry (see `registry.py`).

Families: `classic` (scikit-learn on fixed features), `cnn` (AlexNet and
keras.applications backbones), `rnn` (LSTM/GRU stacks over Mel frames),
`hybrid` (DenseNet121 trunk + Bi-GRU + attention over time).
"""

from esc50tf.models.config import ModelConfig
from esc50tf.models.registry import ModelSpec, get, names, register, specs

__all__ = ["ModelConfig", "ModelSpec", "get", "names", "register", "specs"]
