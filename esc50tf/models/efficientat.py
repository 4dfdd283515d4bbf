"""EfficientAT's AudioSet MobileNetV3s (`mn04` ... `mn40`) and DyMNs (`dymn04` ... `dymn20`)
in Keras 3.

Schmid, Koutini and Widmer, "Efficient Large-Scale Audio Tagging via
Transformer-to-CNN Knowledge Distillation", ICASSP 2023 (MIT-licensed
reference: github.com/fschmid56/EfficientAT). One builder, the width
multiplier picks the family member; the evaluation-mode computation of the
reference, layer for layer:

    waveform [b, samples] at 32 kHz
    -> KaldiMelSpectrogram (pre-emphasis, 800/1024/320 STFT, 128 Kaldi Mel
       bands 0-15 kHz, (ln(S + 1e-5) + 4.5) / 5)            [b, frames, 128]
    -> transposed to the reference's (frequency, time) image  [b, 128, frames, 1]
    -> stem: 3x3 conv stride 2, BN, hard-swish               (features_0)
    -> 15 inverted residual blocks (1x1 expand, depthwise kxk, channel
       squeeze-excitation, 1x1 project, residual)            (features_1 .. 15)
    -> 1x1 conv to 6x the last block's channels, BN, hard-swish (features_16)
    -> global average = the embedding                        [b, 960 w]
    -> Linear (classifier_2), hard-swish, dropout 0.2, Linear (classifier_5) = logits

Convolutions with stride 2 pad explicitly and symmetrically as PyTorch does
(Keras' "same" pads the extra row at the end). The layer names are the
PyTorch module paths with "." replaced by "_", so converted weights load by
name (`esc50tf.pretrained.efficientat`).

The dynamic MobileNets (Schmid, Koutini and Widmer, "Dynamic Convolutional
Neural Networks as Efficient Pre-trained Audio Models", TASLP 2024) share
the front end, stem (`in_c`), last convolution (`out_c`) and head, and
replace each block by a dynamic one (`layers_0` ... `layers_14`; the
computation is spelled out in `esc50tf.pretrained.efficientat`):

    block input x [b, F, T, C]
    -> context: means over time and over frequency, concatenated [b, F + T, C],
       1x1 conv, BN, hard-swish [b, F + T, H]; its mean = the context vector
       [b, H]; its frequency / time parts, average-pooled with the block's
       stride, 1x1 convs -> the coordinate attention [b, F', E], [b, T', E]
    -> dynamic 1x1 conv (expand), BN, activation
    -> dynamic depthwise kxk conv, BN, Dy-ReLU, coordinate attention
    -> dynamic 1x1 conv (project), BN, residual

The registered classifiers (`mn04` ... `mn40`, `dymn04`, `dymn10`, `dymn20`)
keep the reference's head up to its dropout (the reference's ESC-50
fine-tuning replaces only the last Linear) and `build_model` adds the new
classes' Dense.
"""

from __future__ import annotations

from esc50tf.errors import Esc50Error
from esc50tf.models import panns
from esc50tf.models.registry import register, register_family
from esc50tf.pretrained import efficientat as arch

BN_MOMENTUM = 0.99  # PyTorch momentum 0.01, the reference's


def _bn(name):
    import keras

    return keras.layers.BatchNormalization(epsilon=arch.BN_EPSILON, momentum=BN_MOMENTUM,
                                           name=name)


def _pool_sequence(x, stride, name):
    """PyTorch's AvgPool (3 wide, `stride`, padding 1, zeros counted) over a sequence axis."""
    import keras

    if stride == 1:
        return x
    x = keras.layers.ZeroPadding1D(1, name=f"{name}_pad")(x)
    return keras.layers.AveragePooling1D(3, stride, padding="valid", name=name)(x)


def _dynamic_block(x, index, config, width):
    """One DyMN block (`DY_Block` in eval mode): `[b, F, T, C]` -> `[b, F', T', C']`."""
    import keras

    from esc50tf.models.layers import (CoordinateAttention, DynamicConv2D, DynamicReLU,
                                       MeanOverAxis, SplitAt)

    inp, kernel, expanded, out, _se, activation, stride = config
    name, context = f"layers_{index}", arch.context_size(expanded, width)
    gen = f"{name}_context_gen"
    means = [MeanOverAxis(axis=2, name=f"{gen}_frequency")(x),  # [b, F, C]
             MeanOverAxis(axis=1, name=f"{gen}_time")(x)]  # [b, T, C]
    seq = keras.layers.Concatenate(axis=1, name=f"{gen}_sequence")(means)  # [b, F + T, C]
    seq = keras.layers.Dense(context, use_bias=False, name=f"{gen}_joint_conv")(seq)
    seq = _bn(f"{gen}_joint_norm")(seq)
    seq = keras.layers.Activation("hard_swish", name=f"{gen}_joint_act")(seq)  # [b, F + T, H]
    h = keras.layers.GlobalAveragePooling1D(name=f"{gen}_context")(seq)  # [b, H]
    h_f, h_t = SplitAt(int(x.shape[1]), name=f"{gen}_split")(seq)
    g_f = keras.layers.Dense(expanded, name=f"{gen}_conv_f")(
        _pool_sequence(h_f, stride, f"{gen}_pool_f"))  # [b, F', E]
    g_t = keras.layers.Dense(expanded, name=f"{gen}_conv_t")(
        _pool_sequence(h_t, stride, f"{gen}_pool_t"))  # [b, T', E]
    dynamic = dict(num_kernels=arch.DYCONV_KERNELS, temperature=arch.TEMPERATURE)
    y = x
    if expanded != inp:
        y = DynamicConv2D(expanded, **dynamic, name=f"{name}_exp_conv")([y, h])
        y = _bn(f"{name}_exp_norm")(y)
        y = keras.layers.Activation(activation, name=f"{name}_exp_act")(y)
    y = DynamicConv2D(expanded, kernel, stride, depthwise=True, **dynamic,
                      name=f"{name}_depth_conv")([y, h])
    y = _bn(f"{name}_depth_norm")(y)
    y = DynamicReLU(arch.DYRELU_PIECES, name=f"{name}_depth_act")([y, h])
    y = CoordinateAttention(name=f"{name}_ca")([y, g_f, g_t])
    y = DynamicConv2D(out, **dynamic, name=f"{name}_proj_conv")([y, h])
    y = _bn(f"{name}_proj_norm")(y)
    if stride == 1 and inp == out:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def _conv_bn_act(x, filters, kernel, stride, activation, name, depthwise=False):
    """ConvNormActivation: conv (no bias) -> BN -> activation, PyTorch padding."""
    import keras

    pad = (kernel - 1) // 2
    padding = "same"
    if stride > 1 and pad:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, stride, padding=padding, use_bias=False,
                                         name=f"{name}_0")(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, stride, padding=padding, use_bias=False,
                                name=f"{name}_0")(x)
    x = _bn(f"{name}_1")(x)
    if activation:
        x = keras.layers.Activation(activation, name=f"{name}_2")(x)
    return x


def _squeeze_excite(x, channels, name):
    import keras

    squeeze = arch.make_divisible(channels // arch.SE_REDUCTION)
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    s = keras.layers.Dense(squeeze, activation="relu", name=f"{name}_fc1")(s)
    s = keras.layers.Dense(channels, activation="sigmoid", name=f"{name}_fc2")(s)
    return keras.layers.Multiply(name=f"{name}_scale")([x, s])


def _block(x, index, config):
    import keras

    inp, kernel, expanded, out, se, activation, stride = config
    name = f"features_{index}_block"
    y, k = x, 0
    if expanded != inp:
        y = _conv_bn_act(y, expanded, 1, 1, activation, f"{name}_{k}")
        k += 1
    y = _conv_bn_act(y, expanded, kernel, stride, activation, f"{name}_{k}", depthwise=True)
    k += 1
    if se:
        y = _squeeze_excite(y, expanded, f"{name}_{k}_conc_se_layers_0")
        k += 1
    y = _conv_bn_act(y, out, 1, 1, None, f"{name}_{k}")
    if stride == 1 and inp == out:
        y = keras.layers.Add(name=f"features_{index}_add")([x, y])
    return y


def trunk(logmel, width, network="mn"):
    """Log-Mel `[b, frames, mels]` -> the embedding `[b, 960 w]` (last conv, averaged).

    `network`: "mn" (the MobileNetV3) or "dymn" (its dynamic blocks).
    """
    import keras

    from esc50tf.frontend import AddChannelAxis

    table = arch.blocks(width)
    x = keras.layers.Permute((2, 1), name="to_frequency_time")(logmel)  # [b, mels, frames]
    x = AddChannelAxis(name="channel_axis")(x)  # [b, mels, frames, 1]
    _last, embedding, _hidden = arch.last_channels(width)
    if network == "dymn":
        x = _conv_bn_act(x, table[0][0], 3, 2, "hard_swish", "in_c")
        for i, config in enumerate(table):
            x = _dynamic_block(x, i, config, width)
        x = _conv_bn_act(x, embedding, 1, 1, "hard_swish", "out_c")
    else:
        x = _conv_bn_act(x, table[0][0], 3, 2, "hard_swish", "features_0")
        for i, config in enumerate(table, 1):
            x = _block(x, i, config)
        x = _conv_bn_act(x, embedding, 1, 1, "hard_swish", f"features_{len(table) + 1}")
    return keras.layers.GlobalAveragePooling2D(name="embedding_pool")(x)  # [b, 960 w]


def head_hidden(embedding, width, dropout=arch.HEAD_DROPOUT):
    """The MLP head up to its dropout: Linear -> hard-swish -> dropout `[b, 1280 w]`."""
    import keras

    _last, _emb, hidden = arch.last_channels(width)
    x = keras.layers.Dense(hidden, name="classifier_2")(embedding)
    x = keras.layers.Activation("hard_swish", name="classifier_3")(x)
    return keras.layers.Dropout(dropout, name="classifier_4")(x)


def build_reference(name, width=None, classes_num=arch.HEAD_CLASSES, num_samples=None):
    """The reference AudioSet tagger `name` (for parity, `embed` and the HEAR API).

    Args:
        name: str. An architecture of `esc50tf.pretrained.efficientat.ARCHITECTURES`.
        width: float or None. Width multiplier; None: the architecture's
            (reduced widths are for test fixtures).
        classes_num: int. Outputs of the last Linear. Defaults to 527.
        num_samples: int or None. Fixed waveform length, or None for any.

    Returns:
        `keras.Model`: waveforms `[b, samples]` at 32 kHz -> dict "logmel"
        `[b, frames, 128]` (normalised), "embedding" `[b, 960 w]`,
        "logits" `[b, classes_num]` and "clipwise" (their sigmoid).

    Example:
    >>> model = build_reference("mn04")  # or "dymn04"
    >>> {k: v.shape for k, v in model(np.zeros((1, 32000), "float32")).items()}
    {'logmel': (1, 100, 128), 'embedding': (1, 384), 'logits': (1, 527), 'clipwise': (1, 527)}
    """
    import keras

    from esc50tf.frontend.kaldi import KaldiMelSpectrogram

    settings = arch.get(name)
    width = float(settings["width"] if width is None else width)
    front = {k: v for k, v in arch.feature_settings(name).items() if k != "kind"}
    inputs = keras.Input((num_samples,), name="waveform", dtype="float32")
    logmel = KaldiMelSpectrogram(**front, name="frontend")(inputs)
    embedding = trunk(logmel, width, settings["network"])
    logits = keras.layers.Dense(classes_num, name="classifier_5")(head_hidden(embedding, width))
    outputs = {
        "logmel": keras.layers.Identity(name="logmel")(logmel),
        "embedding": keras.layers.Identity(name="embedding")(embedding),
        "logits": keras.layers.Identity(name="logits")(logits),
        "clipwise": keras.layers.Activation("sigmoid", name="clipwise")(logits),
    }
    return keras.Model(inputs, outputs, name=f"{name}_audioset")


def build_embedder(weights):
    """(embedder model `[b, samples] -> [b, D]`, architecture name) for a weights name or file.

    The AudioSet tagger of the architecture and width the weights hold
    (`build_reference`), with the converted weights loaded, cut at its
    pooled last convolution.
    """
    return panns.reference_embedder(
        weights, arch.ARCHITECTURES, "EfficientAT",
        lambda name, held: build_reference(
            name, width=held.get("width"),
            classes_num=int(held.get("classes_num", arch.HEAD_CLASSES))))


def _embedder(weights):
    """build_embedder of EfficientAT weights; None for weights of another family."""
    from esc50tf.pretrained import store

    _path, meta = store.resolve_weights(weights)
    return build_embedder(weights) if meta.get("model") in arch.ARCHITECTURES else None


FINETUNE = {
    "train": {"optimizer": "adam", "lr": 6e-5, "weight_decay": 0.0, "epochs": 80,
              "batch_size": 128, "schedule": "rampdown", "warmup_epochs": 10.0,
              "min_lr": 6e-7, "early_stopping_patience": 0, "min_val_per_class": 5.0,
              "final_weights": "last"},
    "features": {},  # the architecture's own (esc50tf.pretrained.efficientat.feature_settings)
    "model": {"normalization": "none"},
    "augment": {"gain_db": [-12.0, 12.0], "time_shift_seconds": 0.125, "mix": "mixup",
                "mixup_alpha": 0.3, "fmin_jitter_hz": 10, "fmax_jitter_hz": 2000},
}
"""`--preset finetune` for the family: the reference's `ex_esc50.py` defaults.

Adam at 6e-5 without weight decay on every layer, batch 128, 80 epochs; its
schedule (10 epochs of exponential warm-up, a linear ramp down to 1 % of the
rate ending 5 epochs before the end: `rampdown`); gain augmentation of
+-12 dB, the waveform rolled by up to +-4000 samples (0.125 s), mixup with
alpha 0.3, and its front end's band edges jittered in training (fmin up by
0-9 Hz, fmax within -999..+1000 Hz of 15 kHz, one draw per batch:
`fmin_aug_range` 10, `fmax_aug_range` 2000). What differs: esc50tf's mixup
mixes waveforms (the reference mixes log-Mels with lambda = max(l, 1 - l),
and also mixes half the clips' waveforms with Beta(2, 2) weights)."""


# The rules of a pretrained trunk (its front end and 32 kHz rate, `finetune` on pretrained
# weights...) are those of every converted AudioSet trunk: panns.trunk_hooks. The reference
# fine-tunes every layer at one rate, and TrunkScaledAdamW knows the PANNs layers only.
register_family("efficientat", "EfficientAT", "tab:brown",
                **panns.trunk_hooks("efficientat", scales_trunk_lr=False), embedder=_embedder,
                finetune=FINETUNE)


# --- the registered classifiers ------------------------------------------------------

TRUNK_PREFIXES = ("features_", "in_c_", "layers_", "out_c_", "classifier_2")


def is_trunk_layer(name):
    return name.startswith(TRUNK_PREFIXES)


def width_for(model_config, name):
    """The width of the trunk: the weights file's (reduced test checkpoints), else `name`'s."""
    if not model_config.weights:
        return arch.get(name)["width"]
    _path, meta = resolve(model_config, name)
    return float(meta.get("architecture", {}).get("width", arch.get(name)["width"]))


def resolve(model_config, name):
    from esc50tf.pretrained import store

    path, meta = store.resolve_weights(model_config.weights)
    source = meta.get("model")
    if source != name:
        raise Esc50Error(f"--weights {model_config.weights}: {path} holds {source} weights; "
                         f"model {model_config.name} needs {name} weights (e.g. --weights "
                         f"{name}_as)")
    return path, meta


def _classifier(x, config, name):
    width = width_for(config, name)
    dropout = arch.HEAD_DROPOUT if config.dropout is None else config.dropout
    return head_hidden(trunk(x, width, arch.get(name)["network"]), width, dropout)


_SETTINGS = ("dropout", "weights", "freeze_backbone")


_KIND = {"mn": "MobileNetV3", "dymn": "dynamic MobileNet (DyMN)"}


def _register(name):
    settings = arch.get(name)
    width = settings["width"]
    _last, embedding, _hidden = arch.last_channels(width)

    @register(name, "efficientat",
              f"EfficientAT {_KIND[settings['network']]} width {width:g} (AudioSet-pretrained, "
              f"32 kHz, {embedding}-d embedding): reference MLP head, new last layer",
              pretrained=name, settings=_SETTINGS)
    def build(x, config, num_classes):
        return _classifier(x, config, name)

    return build


for _name in arch.ARCHITECTURES:
    _register(_name)


def freeze_trunk(model):
    """Makes the pretrained layers (`TRUNK_PREFIXES`) non-trainable."""
    return panns.freeze_trunk(model, is_trunk_layer)


def load_pretrained(model, model_config):
    """Loads `model_config.weights` into the trunk and hidden head layer by name.

    The AudioSet output layer `classifier_5` is left out (the reference's
    fine-tuning drops it too). Returns the names of the layers loaded.
    """
    from esc50tf.pretrained import convert, store

    path, _meta = resolve(model_config, model_config.name)
    converted, _meta = store.load_weights(path)
    names = [layer.name for layer in model.layers]
    skip = ["classifier_5"] + [n for n in names if not is_trunk_layer(n)]
    return convert.load_into(model, converted, skip=skip)
