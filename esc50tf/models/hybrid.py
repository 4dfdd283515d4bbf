"""DenseNet121 + Bi-GRU + attention: the study's best model, with its time axis kept.

`hybrid` (the intended design): DenseNet121 trunk on the log-Mel
`[b, frames, mels, 1]` -> `[b, T', F', 1024]`, averaged over frequency only ->
`[b, T', 1024]`, a Bi-GRU over the T' time steps (T' = ceil(frames / 32), 14 for
a 5 s ESC-50 clip at hop 512), additive attention pooling over them, Dense 64,
dropout 0.5.

With `backbone="cnn14"` (or "cnn14_16k") the trunk is the PANNs CNN14's
batch norm over Mel bins and six conv blocks (AudioSet-pretrained with
`weights`), on CNN14's own log-Mel front end: `[b, T', F', 2048]` with
T' = frames // 32 (15 for a 5 s clip at 32 kHz), averaged over frequency
only, then the same Bi-GRU and attention.

`hybrid_seed` reproduces the study's exact graph for comparison: the trunk is
pooled globally (time included) before the Bi-GRU, so the recurrent layer sees
a sequence of length 1 and the attention weight is always 1. Use it only to
reproduce the study; it is the flaw, not a feature.
"""

from __future__ import annotations

from esc50tf.models.build import image_input
from esc50tf.models.cnn import backbone
from esc50tf.models.registry import register, register_family


# What the trunk (`backbone`, `image_input`) and `_head` read; tune leaves the dense head
# (the study's Dense 64) and the image shape alone.
register_family("hybrid", "hybrid", "tab:green")

_SETTINGS = ("rnn_units", "attention_units", "dense_units", "dropout", "weights",
             "freeze_backbone", "image_size", "image_channels")
_TUNED = ("rnn_units", "attention_units", "dropout", "freeze_backbone")


def _head(x, config):
    import keras

    from esc50tf.models.layers import AttentionPooling

    x = keras.layers.Bidirectional(
        keras.layers.GRU(config.rnn_units, return_sequences=True, name="gru_cell"), name="bigru"
    )(x)  # [b, T', 2 * units]
    x = AttentionPooling(config.attention_units, name="attention_pool")(x)  # [b, 2 * units]
    x = keras.layers.Dense(config.dense_units or 64, activation="relu", name="head_dense1")(x)
    return keras.layers.Dropout(0.5 if config.dropout is None else config.dropout,
                                name="head_dropout1")(x)


@register("hybrid", "hybrid",
          "DenseNet121 (or --backbone cnn14) trunk pooled over frequency only, Bi-GRU over time, "
          "attention pooling (time kept)",
          settings=("backbone",) + _SETTINGS, tuned=("backbone",) + _TUNED)
def build_hybrid(x, config, num_classes):
    from esc50tf.models import panns
    from esc50tf.models.layers import MeanOverAxis

    arch = panns.architecture_of(config)
    if arch is not None:
        widths, _ = panns.trunk_settings(config, arch)
        x = panns.conv_trunk(x, widths)  # [b, T', F', 2048]
    else:
        x = image_input(x, config)  # [b, frames, mels, C]
        x = backbone("DenseNet121", x, config)  # [b, T', F', 1024]
    x = MeanOverAxis(axis=2, name="frequency_pool")(x)  # [b, T', C]
    return _head(x, config)


@register("hybrid_seed", "hybrid",
          "the study's exact hybrid, for reproduction: global pooling leaves the Bi-GRU one time step",
          settings=_SETTINGS, tuned=_TUNED)
def build_hybrid_seed(x, config, num_classes):
    import keras

    x = image_input(x, config)
    x = backbone("DenseNet121", x, config)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)  # [b, 1024]: time is gone
    x = keras.layers.Reshape((1, x.shape[-1]), name="one_step")(x)  # [b, 1, 1024]
    return _head(x, config)
