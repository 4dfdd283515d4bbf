"""The study's recurrent stacks over Mel frames (`[b, frames, mels]`, time-major).

- lstm / bilstm: LSTM 64 (sequences) + BN, LSTM 32 + BN, Dense 64 (L2 1e-2)
  + dropout 0.5, Dense 32 + dropout 0.3.
- gru / bigru: GRU 64, Dense 64, dropout 0.5.

The family's default recipe (`RECIPE`, applied by `--preset default` over the
`default` preset): the CNN recipe left the GRUs under-trained on a few clips per
class (issue 27), so they start at 3x the rate with no warm-up and gradients
clipped to norm 1 (Pascanu et al., ICML 2013), train without mixup and with one
frequency and one time mask instead of two, and read half as many frames
(hop 1024). The rest (AdamW, cosine decay to 1e-5, 100 epochs, SWA) is the
`default` preset's. Chosen by `benchmarks/recipe_experiment.py` on a
development set (README, "Training recipe").
"""

from __future__ import annotations

from esc50tf.models.registry import register, register_family


RECIPE = {
    "train": {"lr": 3e-3, "warmup_epochs": 0.0, "clipnorm": 1.0},
    "features": {"hop_length": 1024},
    "augment": {"mix": "none", "num_freq_masks": 1, "num_time_masks": 1},
}

register_family("rnn", "rnn", "tab:orange", recipe=RECIPE)

_LSTM_SETTINGS = ("rnn_units", "dense_units", "dropout", "l2")
_GRU_SETTINGS = ("rnn_units", "dense_units", "dropout")
# The study's dense heads stay as they are; tune searches the recurrent width.
_TUNED = ("rnn_units", "dropout")


def _maybe_bi(layer, bidirectional, name):
    import keras

    return keras.layers.Bidirectional(layer, name=name) if bidirectional else layer


def _lstm_stack(x, config, bidirectional):
    import keras

    units = config.rnn_units
    x = _maybe_bi(keras.layers.LSTM(units, return_sequences=True, name="lstm1_cell"),
                  bidirectional, "lstm1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = _maybe_bi(keras.layers.LSTM(max(units // 2, 1), name="lstm2_cell"), bidirectional, "lstm2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    l2 = 1e-2 if config.l2 is None else config.l2
    x = keras.layers.Dense(config.dense_units or 64, activation="relu",
                           kernel_regularizer=keras.regularizers.L2(l2) if l2 else None,
                           name="head_dense1")(x)
    x = keras.layers.Dropout(0.5 if config.dropout is None else config.dropout, name="head_dropout1")(x)
    x = keras.layers.Dense(32, activation="relu", name="head_dense2")(x)
    return keras.layers.Dropout(0.3, name="head_dropout2")(x)


def _gru_stack(x, config, bidirectional):
    import keras

    x = _maybe_bi(keras.layers.GRU(config.rnn_units, name="gru_cell"), bidirectional, "gru")(x)
    x = keras.layers.Dense(config.dense_units or 64, activation="relu", name="head_dense1")(x)
    return keras.layers.Dropout(0.5 if config.dropout is None else config.dropout,
                                name="head_dropout1")(x)


# name, stack, bidirectional, the ModelConfig settings it reads, description
_VARIANTS = (
    ("lstm", _lstm_stack, False, _LSTM_SETTINGS,
     "the study's LSTM 64 + LSTM 32 (BN) over Mel frames, dense 64-32 head"),
    ("bilstm", _lstm_stack, True, _LSTM_SETTINGS, "the LSTM stack with bidirectional layers"),
    ("gru", _gru_stack, False, _GRU_SETTINGS,
     "the study's GRU 64 over Mel frames, dense 64, dropout 0.5"),
    ("bigru", _gru_stack, True, _GRU_SETTINGS,
     "bidirectional GRU 64 over Mel frames, dense 64, dropout 0.5"),
)


def _builder(stack, bidirectional):
    def build(x, config, num_classes):
        return stack(x, config, bidirectional=bidirectional)

    return build


for _name, _stack, _bidirectional, _settings, _description in _VARIANTS:
    register(_name, "rnn", _description, settings=_settings, tuned=_TUNED)(
        _builder(_stack, _bidirectional))
