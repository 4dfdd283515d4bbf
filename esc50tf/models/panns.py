"""PANNs: AudioSet-pretrained CNN14 (32 kHz, 16 kHz and the decision-level-max SED variant).

Kong et al., "PANNs: Large-Scale Pretrained Audio Neural Networks for Audio
Pattern Recognition", IEEE/ACM TASLP 2020. The architecture follows the
reference implementation (`panns_inference.models.Cnn14` and
`Cnn14_DecisionLevelMax`) layer for layer:

    waveform [b, samples] at the architecture's rate
    -> log-Mel (esc50tf's MelSpectrogram: Hann, reflect-padded centre frames,
       power 2, Slaney Mel filterbank, 10 log10(max(S, 1e-10)), no top_db)
                                                               [b, frames, 64]
    -> bn0: batch norm over the 64 Mel bins                    [b, frames, 64]
    -> 6 conv blocks (3x3 conv-BN-ReLU x2, 2x2 average pool; the last
       block pools 1x1), dropout 0.2 after each               [b, T', F', 2048]
    -> mean over frequency                                     [b, T', 2048]
    -> CNN14: max + mean over time -> dropout 0.5 -> fc1 (ReLU) = embedding
       -> fc_audioset (sigmoid)                                [b, 527]
    -> SED: max_pool1d(3, 1, 1) + avg_pool1d(3, 1, 1) over time (PyTorch's
       average counts the zero padding), fc1 and fc_audioset per time step,
       clip output = max over time; frame output = each step repeated 32
       times, the last one repeated up to the number of frames.

Keras layer names are the PyTorch state_dict module paths with "." replaced
by "_" (`bn0`, `conv_block1_conv1`, `conv_block1_bn1`, ..., `fc1`,
`fc_audioset`), so a converted checkpoint loads by name
(`esc50tf.pretrained`). Batch norms use PyTorch's epsilon 1e-5 and momentum
0.1 (Keras momentum 0.9).

`build_reference` builds the AudioSet tagger itself (for parity tests and
`esc50tf embed`); the registered classifiers (`cnn14`, `cnn14_16k`,
`cnn14_sed`) reuse the same trunk up to fc1 and put a new head on it for the
dataset's classes (see `esc50tf.models.build`).
"""

from __future__ import annotations

import keras
from keras import ops

from esc50tf.errors import Esc50Error
from esc50tf.models.registry import register

_CNN14 = dict(widths=(64, 128, 256, 512, 1024, 2048), embedding_size=2048, classes_num=527,
              n_mels=64, fmin=50.0)
ARCHITECTURES = {
    "cnn14": dict(_CNN14, sample_rate=32000, n_fft=1024, hop_length=320, fmax=14000.0,
                  sed=False, paper="Cnn14 (32 kHz)"),
    "cnn14_16k": dict(_CNN14, sample_rate=16000, n_fft=512, hop_length=160, fmax=8000.0,
                      sed=False, paper="Cnn14_16k"),
    "cnn14_sed": dict(_CNN14, sample_rate=32000, n_fft=1024, hop_length=320, fmax=14000.0,
                      sed=True, paper="Cnn14_DecisionLevelMax"),
}
"""Architecture name -> settings: front end, conv widths per block, fc1 size, classes."""

# The time axis shrinks 2x in each of the first five blocks.
SED_RATIO = 32
BN_EPSILON = 1e-5  # PyTorch's default, not Keras' 1e-3
BN_MOMENTUM = 0.9  # PyTorch momentum 0.1


def architecture(name):
    """The settings of `name`; Esc50Error listing the valid names otherwise."""
    if name not in ARCHITECTURES:
        raise Esc50Error(f"unknown PANNs architecture {name!r}; valid: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def feature_settings(name):
    """The FeatureConfig fields that reproduce the reference front end of `name`."""
    a = architecture(name)
    return dict(kind="mel", sample_rate=a["sample_rate"], n_fft=a["n_fft"],
                hop_length=a["hop_length"], win_length=None, window="hann", center=True,
                pad_mode="reflect", n_mels=a["n_mels"], fmin=a["fmin"], fmax=a["fmax"],
                mel_scale="slaney", norm="slaney", power=2.0, log="db", top_db=None, ref=1.0)


def build_frontend(name, layer_name="frontend"):
    """esc50tf's MelSpectrogram set up as the reference's log-Mel front end."""
    from esc50tf import features as feat

    settings = {k: v for k, v in feature_settings(name).items() if k != "kind"}
    return feat.MelSpectrogram(**settings, name=layer_name)


@keras.saving.register_keras_serializable(package="esc50tf")
class TimeMaxPlusMean(keras.layers.Layer):
    """CNN14's clip pooling: max over time plus mean over time, `[b, T, C] -> [b, C]`.

    Args:
        **kwargs: Base layer arguments.

    Example:
    >>> TimeMaxPlusMean()(np.ones((2, 15, 8), "float32")).shape
    (2, 8)
    """

    def call(self, inputs):
        return ops.max(inputs, axis=1) + ops.mean(inputs, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package="esc50tf")
class SEDSmoothing(keras.layers.Layer):
    """The SED variant's smoothing over time: `max_pool1d(3, 1, 1) + avg_pool1d(3, 1, 1)`.

    As PyTorch's defaults: the max ignores the padding, the average counts
    it (zeros, divided by 3 at both ends). `[b, T, C] -> [b, T, C]`.

    Args:
        **kwargs: Base layer arguments.
    """

    def call(self, inputs):
        padded = ops.pad(inputs, [[0, 0], [1, 1], [0, 0]])  # zeros at both ends of time
        mean = (padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]) / 3.0
        low = ops.full_like(inputs[:, :1], float("-inf"))
        padded = ops.concatenate([low, inputs, low], axis=1)
        peak = ops.maximum(ops.maximum(padded[:, :-2], padded[:, 1:-1]), padded[:, 2:])
        return peak + mean

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


@keras.saving.register_keras_serializable(package="esc50tf")
class FramewiseUpsample(keras.layers.Layer):
    """Segment-wise output back to the frame rate, as the reference does it.

    Each of the T' segments is repeated `ratio` times, then the last one is
    repeated up to the number of frames of `frames_like` (the log-Mel):
    `([b, T', C], [b, frames, M]) -> [b, frames, C]`.

    Args:
        ratio: int. Frames per segment. Defaults to 32 (five 2x poolings).
        **kwargs: Base layer arguments.
    """

    def __init__(self, ratio=SED_RATIO, **kwargs):
        super().__init__(**kwargs)
        self.ratio = int(ratio)

    def call(self, inputs):
        segments, frames_like = inputs
        frames = ops.shape(frames_like)[1]
        last = ops.shape(segments)[1] - 1
        index = ops.minimum(ops.arange(frames) // self.ratio, last)
        return ops.take(segments, index, axis=1)

    def compute_output_shape(self, input_shape):
        segments, frames_like = input_shape
        return (segments[0], frames_like[1], segments[2])

    def get_config(self):
        return {**super().get_config(), "ratio": self.ratio}


def _batch_norm(name, axis=-1):
    return keras.layers.BatchNormalization(axis=axis, epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                           name=name)


def conv_trunk(x, widths, prefix="", dropout=0.2, last_pool=False):
    """bn0 and the conv blocks: log-Mel `[b, frames, mels]` -> `[b, T', F', widths[-1]]`.

    Args:
        x: tensor `[b, frames, mels]`, the log-Mel.
        widths: sequence of ints. Output channels of each conv block.
        prefix: str. Prepended to every layer name (empty: the checkpoint's names).
        dropout: float. Dropout after each block (0.2 in the reference).
        last_pool: bool. Whether the last block pools 2x2 too (the reference
            pools it 1x1, i.e. not at all). Defaults to False.
    """
    from esc50tf import features as feat

    x = _batch_norm(f"{prefix}bn0")(x)  # over the Mel bins, as PANNs' transposed BatchNorm2d
    x = feat.AddChannelAxis(name=f"{prefix}channel_axis")(x)  # [b, frames, mels, 1]
    for i, width in enumerate(widths, 1):
        block = f"{prefix}conv_block{i}"
        for j in (1, 2):
            x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False,
                                    name=f"{block}_conv{j}")(x)
            x = _batch_norm(f"{block}_bn{j}")(x)
            x = keras.layers.Activation("relu", name=f"{block}_relu{j}")(x)
        if i < len(widths) or last_pool:
            x = keras.layers.AveragePooling2D(2, name=f"{block}_pool")(x)
        x = keras.layers.Dropout(dropout, name=f"{block}_dropout")(x)
    return x  # [b, frames // 2^k, mels // 2^k, widths[-1]]


def _clip_embedding(x, embedding_size, dropout=0.5):
    """CNN14's pooling and fc1: `[b, T', F', C]` -> embedding `[b, D]`."""
    from esc50tf.models.layers import MeanOverAxis

    x = MeanOverAxis(axis=2, name="frequency_pool")(x)  # [b, T', C]
    x = TimeMaxPlusMean(name="time_pool")(x)  # [b, C]
    x = keras.layers.Dropout(dropout, name="fc1_dropout")(x)
    return keras.layers.Dense(embedding_size, activation="relu", name="fc1")(x)  # [b, D]


def _segment_embeddings(x, embedding_size, dropout=0.5):
    """The SED variant's pooling and fc1 per time step: `[b, T', F', C]` -> `[b, T', D]`."""
    from esc50tf.models.layers import MeanOverAxis

    x = MeanOverAxis(axis=2, name="frequency_pool")(x)  # [b, T', C]
    x = SEDSmoothing(name="time_smoothing")(x)
    x = keras.layers.Dropout(dropout, name="fc1_dropout")(x)
    return keras.layers.Dense(embedding_size, activation="relu", name="fc1")(x)  # [b, T', D]


def build_reference(name, widths=None, embedding_size=None, classes_num=527, num_samples=None):
    """The reference AudioSet tagger of architecture `name`, for inference and parity.

    Args:
        name: str. A key of ARCHITECTURES.
        widths: sequence of 6 ints or None. Conv widths per block (reduced
            widths for test fixtures); None: the architecture's.
        embedding_size: int or None. Width of fc1; None: the architecture's.
        classes_num: int. Outputs of fc_audioset. Defaults to 527 (AudioSet).
        num_samples: int or None. Fixed waveform length, or None for any length.

    Returns:
        A `keras.Model` taking waveforms `[b, samples]` at the architecture's
        sample rate and returning a dict: "logmel" `[b, frames, mels]`,
        "embedding" `[b, D]` (the fc1 output; for the SED variant, which has
        no clip embedding in the reference, the max over time of the
        per-step fc1 outputs), "clipwise" `[b, classes_num]` (sigmoid) and,
        for the SED variant, "framewise" `[b, frames, classes_num]`. Run it
        with `training=False` (the default of `model(x)` and `predict`).

    Example:
    >>> model = build_reference("cnn14", widths=(4, 4, 8, 8, 16, 16), embedding_size=16)
    >>> {k: v.shape for k, v in model(np.zeros((2, 32000), "float32")).items()}
    {'logmel': (2, 101, 64), 'embedding': (2, 16), 'clipwise': (2, 527)}
    """
    a = architecture(name)
    widths = tuple(a["widths"] if widths is None else widths)
    if len(widths) != 6 or any(int(w) < 1 for w in widths):
        raise ValueError(f"widths must be 6 positive integers, got {widths!r}")
    embedding_size = int(embedding_size or a["embedding_size"])
    inputs = keras.Input((num_samples,), name="waveform", dtype="float32")
    logmel = build_frontend(name)(inputs)  # [b, frames, mels]
    x = conv_trunk(logmel, widths)
    fc_audioset = keras.layers.Dense(classes_num, name="fc_audioset")
    outputs = {"logmel": keras.layers.Identity(name="logmel")(logmel)}
    if a["sed"]:
        segments = _segment_embeddings(x, embedding_size)  # [b, T', D]
        x = keras.layers.Dropout(0.5, name="fc1_out_dropout")(segments)
        seg_out = keras.layers.Activation("sigmoid", name="segmentwise")(fc_audioset(x))
        outputs["embedding"] = keras.layers.GlobalMaxPooling1D(name="embedding")(segments)
        outputs["clipwise"] = keras.layers.GlobalMaxPooling1D(name="clipwise")(seg_out)
        outputs["framewise"] = FramewiseUpsample(name="framewise")([seg_out, logmel])
    else:
        embedding = _clip_embedding(x, embedding_size)
        outputs["embedding"] = keras.layers.Identity(name="embedding")(embedding)
        x = keras.layers.Dropout(0.5, name="fc1_out_dropout")(embedding)
        outputs["clipwise"] = keras.layers.Activation("sigmoid", name="clipwise")(fc_audioset(x))
    return keras.Model(inputs, outputs, name=f"{name}_audioset")


def build_embedder(name, widths=None, embedding_size=None, num_samples=None):
    """The reference model up to the embedding: waveform `[b, samples]` -> `[b, D]`."""
    ref = build_reference(name, widths, embedding_size, num_samples=num_samples)
    return keras.Model(ref.input, ref.output["embedding"], name=f"{name}_embedder")
