"""EfficientAT's MobileNetV3 (`mn`) family as data, and its state-dict conversion. Keras-free.

Schmid, Koutini and Widmer, "Efficient Large-Scale Audio Tagging via
Transformer-to-CNN Knowledge Distillation", ICASSP 2023; reference code and
weights: github.com/fschmid56/EfficientAT (MIT licence). Facts taken from
the reference (`models/mn/model.py`, `block_types.py`, `models/preprocess.py`):

- width multiplier `w` scales every channel count `c` to
  `make_divisible(c * w, 8)` (at least 8, rounded to the nearest multiple of
  8 and never more than 10% below `c * w`);
- the 15 inverted-residual blocks of MobileNetV3-Large (`BLOCKS`), with
  squeeze-excitation on the channels (bottleneck `make_divisible(C // 4, 8)`,
  ReLU, sigmoid) after the depthwise convolution where configured;
- batch norm epsilon 1e-3, every convolution without bias;
- last convolution 1x1 to `6 x` the last block's channels (960 at `w = 1`),
  then the MLP head: global average -> Linear(`make_divisible(1280 w, 8)`)
  -> hard-swish -> dropout 0.2 -> Linear(classes);
- front end: 32 kHz, n_fft 1024, window 800, hop 320, 128 Kaldi Mel bands
  from 0 to 15000 Hz (`esc50tf.frontend.kaldi`).

State dict keys are the PyTorch module paths: `features.0.0.weight` (the
stem convolution), `features.0.1.*` (its batch norm), `features.N.block.K.0`
/ `.1` (conv / batch norm of sub-layer K of block N),
`features.N.block.K.conc_se_layers.0.fc1|fc2` (squeeze-excitation),
`features.16.0|1` (the last convolution) and `classifier.2|5` (the MLP).
The Keras layers carry the same paths with "." replaced by "_".

>>> channels(0.4)[:3], last_channels(0.4)
([8, 8, 16], (64, 384, 512))
"""

from __future__ import annotations

import numpy as np

from esc50tf.errors import Esc50Error

__all__ = ["ARCHITECTURES", "BLOCKS", "convert_state_dict", "feature_settings", "get",
           "make_divisible"]

# (input channels, kernel, expanded channels, output channels, squeeze-excitation,
#  activation, stride) at width 1: MobileNetV3-Large.
BLOCKS = (
    (16, 3, 16, 16, False, "relu", 1),
    (16, 3, 64, 24, False, "relu", 2),
    (24, 3, 72, 24, False, "relu", 1),
    (24, 5, 72, 40, True, "relu", 2),
    (40, 5, 120, 40, True, "relu", 1),
    (40, 5, 120, 40, True, "relu", 1),
    (40, 3, 240, 80, False, "hard_swish", 2),
    (80, 3, 200, 80, False, "hard_swish", 1),
    (80, 3, 184, 80, False, "hard_swish", 1),
    (80, 3, 184, 80, False, "hard_swish", 1),
    (80, 3, 480, 112, True, "hard_swish", 1),
    (112, 3, 672, 112, True, "hard_swish", 1),
    (112, 5, 672, 160, True, "hard_swish", 2),
    (160, 5, 960, 160, True, "hard_swish", 1),
    (160, 5, 960, 160, True, "hard_swish", 1),
)
HEAD_CHANNELS = 1280
SE_REDUCTION = 4
BN_EPSILON = 1e-3
HEAD_DROPOUT = 0.2
HEAD_CLASSES = 527  # AudioSet

_FRONTEND = dict(kind="kaldi_mel", sample_rate=32000, n_fft=1024, hop_length=320,
                 win_length=800, n_mels=128, fmin=0.0, fmax=15000.0)
WIDTHS = {"mn04": 0.4, "mn05": 0.5, "mn10": 1.0, "mn20": 2.0, "mn30": 3.0, "mn40": 4.0}
ARCHITECTURES = {
    name: dict(width=width, classes_num=HEAD_CLASSES, sample_rate=32000, family="efficientat",
               features=_FRONTEND, normalization="the fixed (x + 4.5) / 5 of its front end",
               paper=f"EfficientAT MobileNetV3 {name} (width {width:g})")
    for name, width in WIDTHS.items()
}
"""Architecture name -> settings (width multiplier, AudioSet classes, sample rate)."""


def make_divisible(value, divisor=8):
    """The reference's channel rounding (from the TF MobileNet code)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def get(name):
    """The settings of `name`; Esc50Error listing the valid names otherwise."""
    if name not in ARCHITECTURES:
        raise Esc50Error(f"unknown EfficientAT architecture {name!r}; valid: "
                         f"{', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def feature_settings(name=None):
    """The FeatureConfig fields of the reference front end (the same for every width)."""
    if name is not None:
        get(name)
    return dict(_FRONTEND)


def blocks(width):
    """The block table at width multiplier `width` (channel counts rounded)."""
    return [(make_divisible(i * width), k, make_divisible(e * width), make_divisible(o * width),
             se, act, s) for i, k, e, o, se, act, s in BLOCKS]


def channels(width):
    """Output channels of the stem and each block at `width`."""
    table = blocks(width)
    return [table[0][0]] + [b[3] for b in table]


def last_channels(width):
    """(last block's channels, last convolution's = embedding size, head hidden units)."""
    last = make_divisible(BLOCKS[-1][3] * width)
    return last, 6 * last, make_divisible(HEAD_CHANNELS * width)


def width_of(state_dict):
    """The width multiplier a state dict was built with, read off its stem convolution.

    The stem has `make_divisible(16 w)` channels, which does not pin `w`
    down; the last convolution's and head's sizes do, so every listed width
    is tried and the one whose sizes all match is returned.
    """
    try:
        stem = np.shape(state_dict["features.0.0.weight"])[0]
        head = np.shape(state_dict["classifier.2.weight"])[0]
        last = np.shape(state_dict[f"features.{len(BLOCKS) + 1}.0.weight"])[0]
    except KeyError as err:
        raise Esc50Error(f"missing key {err.args[0]!r}: not an EfficientAT mn state dict") \
            from None
    candidates = sorted(set(WIDTHS.values()) | {0.1, 0.2, 0.6, 0.8, 1.2, 1.4, 1.6})
    for w in candidates:
        if (make_divisible(16 * w), last_channels(w)[1], last_channels(w)[2]) == (stem, last,
                                                                                  head):
            return w
    raise Esc50Error(f"a stem of {stem}, last convolution of {last} and head of {head} "
                     "channels match no EfficientAT width multiplier")


_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")


def convert_state_dict(state_dict):
    """EfficientAT state dict (numpy arrays, PyTorch names) -> `{keras layer: [arrays]}`.

    Conv2d `(O, I, kh, kw)` -> Conv2D kernel `(kh, kw, I, O)`; depthwise
    Conv2d `(C, 1, kh, kw)` -> DepthwiseConv2D kernel `(kh, kw, C, 1)`;
    Linear `(out, in)` -> Dense `(in, out)` + bias; batch norm -> gamma,
    beta, moving mean, moving variance (`num_batches_tracked` dropped).

    Returns:
        (arrays, sources): `{keras layer: [arrays in Keras order]}` and
        `{keras layer: [their PyTorch keys]}` (for error messages;
        `esc50tf.pretrained.convert.ConvertedWeights(arrays, sources=sources)`).

    Raises:
        Esc50Error: a key that is no conv, linear or batch norm parameter.
    """
    modules = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        module, _, param = key.rpartition(".")
        if not module.startswith(("features.", "classifier.")):
            raise Esc50Error(f"unexpected key {key!r}: not an EfficientAT mn state dict")
        modules.setdefault(module, {})[param] = np.asarray(value, np.float32)
    converted, sources = {}, {}
    for module, params in modules.items():
        names = set(params)
        if names == set(_BN_PARAMS):
            arrays, keys = [params[p] for p in _BN_PARAMS], [f"{module}.{p}" for p in _BN_PARAMS]
        elif names in ({"weight"}, {"weight", "bias"}):
            weight = params["weight"]
            if weight.ndim == 4 and weight.shape[1] == 1 and weight.shape[0] > 1 \
                    and not module.startswith("features.0."):
                kernel = np.transpose(weight, (2, 3, 0, 1))  # depthwise: (kh, kw, C, 1)
            elif weight.ndim == 4:
                kernel = np.transpose(weight, (2, 3, 1, 0))  # (kh, kw, I, O)
            elif weight.ndim == 2:
                kernel = weight.T
            else:
                raise Esc50Error(f"{module}.weight has shape {weight.shape}; expected a conv "
                                 "(4-D) or linear (2-D) weight")
            arrays, keys = [kernel], [f"{module}.weight"]
            if "bias" in params:
                arrays.append(params["bias"])
                keys.append(f"{module}.bias")
        else:
            raise Esc50Error(f"unexpected keys {sorted(names)} under {module!r} (not a conv, "
                             "linear or batch-norm module)")
        layer = module.replace(".", "_")
        converted[layer] = [np.ascontiguousarray(a) for a in arrays]
        sources[layer] = keys
    return converted, sources


def convert_checkpoint_state(state_dict):
    """(arrays, sources, `{"width", "classes_num"}` to build the model with) of a state dict.

    `convert_state_dict`'s two dicts; the width is read off the layer sizes
    (`width_of`), the classes off the last Linear.
    """
    width = width_of(state_dict)
    arrays, sources = convert_state_dict(state_dict)
    classes = (int(arrays["classifier_5"][0].shape[-1]) if "classifier_5" in arrays
               else HEAD_CLASSES)
    return arrays, sources, dict(width=width, classes_num=classes)
