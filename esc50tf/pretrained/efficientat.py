"""EfficientAT's MobileNetV3s (`mn`) and dynamic MobileNets (`dymn`) as data, and their
state-dict conversion. Keras-free.

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

The DyMNs (Schmid, Koutini and Widmer, "Dynamic Convolutional Neural
Networks as Efficient Pre-trained Audio Models", IEEE/ACM TASLP 2024;
`models/dymn/model.py`, `dy_block.py`) keep the stem, the block table, the
last convolution and the MLP head, and replace every block by a dynamic one:

- a context `H = clip(make_divisible(E // 4), make_divisible(32 w),
  make_divisible(128 w))` wide for a block expanding to `E` channels
  (`context_size`), made from the block's input: its means over time and over
  frequency, concatenated along the sequence, through a shared 1x1 conv
  (no bias), batch norm and hard-swish; the mean of that sequence is the
  context vector, and its frequency and time halves (average-pooled 3 wide with
  the block's stride, zero padding counted) give the coordinate attention
  through two 1x1 convs with bias;
- the expansion, depthwise and projection convolutions are dynamic: K = 4
  kernels mixed by `softmax(Linear(context) / T)` per example, with `T = 1`
  for the AudioSet checkpoints (`get_model` sets `pretrain_final_temp` for a
  pretrained name; the temperature is not in the state dict);
- the depthwise convolution's activation is Dy-ReLU-B: per channel
  `max(a1 x + b1, a2 x + b2)` with `theta = 2 sigmoid(Linear(context)) - 1`
  (channel-major, 2M = 4 values a channel), `(a1, a2, b1, b2) = theta *
  lambdas + init_v` and the buffers `lambdas = (1, 1, 0.5, 0.5)`,
  `init_v = (1, 0, 0, 0)`; then the coordinate attention multiplies by
  `sigmoid` of the frequency and the time attention.

DyMN state dict keys: `in_c.0|1` (stem), `layers.N.{exp,depth,proj}_conv.weight`
(the K kernels, `(1, 1, K, out * in / groups * kh * kw)`) with
`...residuals.0.weight|bias` (the attention Linear), `layers.N.{exp,depth,proj}_norm`,
`layers.N.depth_act.coef_net.0` (the Dy-ReLU Linear), `.lambdas`, `.init_v`,
`layers.N.context_gen.joint_conv|joint_norm|conv_f|conv_t`, `out_c.0|1`,
`classifier.2|5`.

>>> channels(0.4)[:3], last_channels(0.4)
([8, 8, 16], (64, 384, 512))
>>> [context_size(e, 1.0) for e in (16, 240, 960)]
[32, 64, 128]
"""

from __future__ import annotations

import numpy as np

from esc50tf.errors import Esc50Error

__all__ = ["ARCHITECTURES", "BLOCKS", "DYMN_WIDTHS", "context_size", "convert_checkpoint_state",
           "convert_dymn_state_dict", "convert_state_dict", "feature_settings", "get",
           "make_divisible", "network_of", "width_of"]

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
DYMN_WIDTHS = {"dymn04": 0.4, "dymn10": 1.0, "dymn20": 2.0}
# The DyMN's dynamic parts, as the reference's get_model sets them.
DYCONV_KERNELS = 4  # dyconv_k
DYRELU_PIECES = 2  # dyrelu_k (M)
CONTEXT_RATIO, MIN_CONTEXT, MAX_CONTEXT = 4, 32, 128
TEMPERATURE = 1.0  # of the kernel attention at inference for the AudioSet checkpoints
_NETWORK_PAPER = {"mn": "EfficientAT MobileNetV3", "dymn": "EfficientAT dynamic MobileNet"}
ARCHITECTURES = {
    name: dict(width=width, classes_num=HEAD_CLASSES, sample_rate=32000, family="efficientat",
               network=network, features=_FRONTEND,
               normalization="the fixed (x + 4.5) / 5 of its front end",
               paper=f"{_NETWORK_PAPER[network]} {name} (width {width:g})")
    for network, widths in (("mn", WIDTHS), ("dymn", DYMN_WIDTHS))
    for name, width in widths.items()
}
"""Architecture name -> settings (width multiplier, AudioSet classes, sample rate, network:
"mn" or "dymn")."""


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


def context_size(expanded, width):
    """The DyMN context width `H` of a block expanding to `expanded` channels at `width`."""
    low, high = make_divisible(MIN_CONTEXT * width), make_divisible(MAX_CONTEXT * width)
    return int(min(max(make_divisible(expanded // CONTEXT_RATIO), low), high))


def last_channels(width):
    """(last block's channels, last convolution's = embedding size, head hidden units)."""
    last = make_divisible(BLOCKS[-1][3] * width)
    return last, 6 * last, make_divisible(HEAD_CHANNELS * width)


# The state-dict keys of (stem conv, last conv) per network, and the key only the DyMN has.
_SIZE_KEYS = {"mn": ("features.0.0.weight", f"features.{len(BLOCKS) + 1}.0.weight"),
              "dymn": ("in_c.0.weight", "out_c.0.weight")}


def network_of(state_dict):
    """"dymn" for a DyMN state dict (it has `in_c.0.weight`), else "mn"."""
    return "dymn" if _SIZE_KEYS["dymn"][0] in state_dict else "mn"


def width_of(state_dict):
    """The width multiplier a state dict was built with, read off its layer sizes.

    The stem has `make_divisible(16 w)` channels, which does not pin `w`
    down; the last convolution's and head's sizes do, so every listed width
    is tried and the one whose sizes all match is returned.
    """
    stem_key, last_key = _SIZE_KEYS[network_of(state_dict)]
    try:
        stem = np.shape(state_dict[stem_key])[0]
        head = np.shape(state_dict["classifier.2.weight"])[0]
        last = np.shape(state_dict[last_key])[0]
    except KeyError as err:
        raise Esc50Error(f"missing key {err.args[0]!r}: not an EfficientAT state dict") \
            from None
    candidates = sorted(set(WIDTHS.values()) | set(DYMN_WIDTHS.values())
                        | {0.05, 0.1, 0.2, 0.6, 0.8, 1.2, 1.4, 1.6})
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
    modules = _group(state_dict, ("features.", "classifier."), "mn")
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


def _group(state_dict, prefixes, what):
    """`{module: {param: float32 array}}` (`num_batches_tracked` dropped)."""
    modules = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        module, _, param = key.rpartition(".")
        if not module.startswith(prefixes):
            raise Esc50Error(f"unexpected key {key!r}: not an EfficientAT {what} state dict")
        modules.setdefault(module, {})[param] = np.asarray(value, np.float32)
    return modules


def _take(modules, module, params, shapes=None):
    """The arrays `params` of `module` (popped), checked against `shapes` (PyTorch layout)."""
    found = modules.pop(module, None)
    if found is None:
        raise Esc50Error(f"missing key {f'{module}.{params[0]}'!r}: not the DyMN this state "
                         "dict's sizes describe")
    if set(found) != set(params):
        raise Esc50Error(f"{module}: keys {sorted(found)}, expected {sorted(params)}")
    for param, shape in zip(params, shapes or ()):  # None: any size
        got = found[param].shape
        if shape is not None and (len(got) != len(shape) or any(
                want not in (None, have) for want, have in zip(shape, got))):
            raise Esc50Error(f"{module}.{param} has shape {got}, expected "
                             f"{tuple('any' if d is None else d for d in shape)}")
    return [found[p] for p in params]


def convert_dymn_state_dict(state_dict, width=None):
    """DyMN state dict (numpy arrays, PyTorch names) -> `{keras layer: [arrays]}`, sources.

    Every module is checked against the block table at `width` (None: read
    off the state dict, `width_of`). Layouts: the K kernels of a dynamic
    1x1 conv `(1, 1, K, out * in)` -> `(K, in, out)`, of a dynamic depthwise
    conv `(1, 1, K, C * kh * kw)` -> `(kh, kw, C, K)`, each followed by the
    attention Linear as a Dense; the context's 1x1 convs -> Dense kernels
    `(in, out)` (+ bias); Dy-ReLU: its Linear as a Dense, then `lambdas`,
    `init_v`; stem and last conv, batch norms and the head as for the mn.

    Returns:
        (arrays, sources) as `convert_state_dict`.

    Raises:
        Esc50Error: a missing, unexpected or misshapen key, naming it.
    """
    width = width_of(state_dict) if width is None else width
    modules = _group(state_dict, ("in_c.", "layers.", "out_c.", "classifier."), "DyMN")
    converted, sources = {}, {}

    def put(module, params, arrays):
        layer = module.replace(".", "_")
        converted[layer] = [np.ascontiguousarray(a) for a in arrays]
        sources[layer] = [f"{module}.{p}" for p in params]

    def norm(module, channels):
        put(module, _BN_PARAMS, _take(modules, module, _BN_PARAMS, [(channels,)] * 4))

    def dense(module, inputs, outputs, bias=True):
        params = ("weight", "bias") if bias else ("weight",)
        arrays = _take(modules, module, params, [None, (outputs,)])
        weight = arrays[0].reshape(arrays[0].shape[:2]) if arrays[0].ndim == 4 else arrays[0]
        if weight.shape != (outputs, inputs):
            raise Esc50Error(f"{module}.weight has shape {arrays[0].shape}, expected "
                             f"({outputs}, {inputs}...)")
        put(module, params, [weight.T] + arrays[1:])

    def dynamic(module, inputs, outputs, kernel, context, depthwise=False):
        k = DYCONV_KERNELS
        size = outputs * (1 if depthwise else inputs) * kernel * kernel
        weight, = _take(modules, module, ("weight",), [(1, 1, k, size)])
        attention = _take(modules, f"{module}.residuals.0", ("weight", "bias"),
                          [(k, context), (k,)])
        if depthwise:  # (K, C, kh, kw) -> (kh, kw, C, K)
            kernels = weight.reshape(k, outputs, kernel, kernel).transpose(2, 3, 1, 0)
        else:  # (K, out, in) -> (K, in, out)
            kernels = weight.reshape(k, outputs, inputs).transpose(0, 2, 1)
        put(module, ("weight", "residuals.0.weight", "residuals.0.bias"),
            [kernels, attention[0].T, attention[1]])

    stem = make_divisible(16 * width)
    weight, = _take(modules, "in_c.0", ("weight",), [(stem, 1, 3, 3)])
    put("in_c.0", ("weight",), [weight.transpose(2, 3, 1, 0)])
    norm("in_c.1", stem)
    for n, (inp, kernel, expanded, out, _se, _act, _stride) in enumerate(blocks(width)):
        block, context = f"layers.{n}", context_size(expanded, width)
        gen = f"{block}.context_gen"
        dense(f"{gen}.joint_conv", inp, context, bias=False)
        norm(f"{gen}.joint_norm", context)
        dense(f"{gen}.conv_f", context, expanded)
        dense(f"{gen}.conv_t", context, expanded)
        if expanded != inp:
            dynamic(f"{block}.exp_conv", inp, expanded, 1, context)
            norm(f"{block}.exp_norm", expanded)
        dynamic(f"{block}.depth_conv", expanded, expanded, kernel, context, depthwise=True)
        norm(f"{block}.depth_norm", expanded)
        pieces = 2 * DYRELU_PIECES
        coef = _take(modules, f"{block}.depth_act.coef_net.0", ("weight", "bias"),
                     [(pieces * expanded, context), (pieces * expanded,)])
        buffers = _take(modules, f"{block}.depth_act", ("lambdas", "init_v"),
                        [(pieces,), (pieces,)])
        put(f"{block}.depth_act", ("coef_net.0.weight", "coef_net.0.bias", "lambdas", "init_v"),
            [coef[0].T, coef[1]] + buffers)
        dynamic(f"{block}.proj_conv", expanded, out, 1, context)
        norm(f"{block}.proj_norm", out)
    last, embedding, hidden = last_channels(width)
    weight, = _take(modules, "out_c.0", ("weight",), [(embedding, last, 1, 1)])
    put("out_c.0", ("weight",), [weight.transpose(2, 3, 1, 0)])
    norm("out_c.1", embedding)
    dense("classifier.2", embedding, hidden)
    head = _take(modules, "classifier.5", ("weight", "bias"), [(None, hidden)])
    put("classifier.5", ("weight", "bias"), [head[0].T, head[1]])
    if modules:
        module = sorted(modules)[0]
        key = f"{module}.{sorted(modules[module])[0]}"
        raise Esc50Error(f"unexpected key {key!r}: not part of the DyMN at width {width:g}")
    return converted, sources


def convert_checkpoint_state(state_dict, architecture=None):
    """(arrays, sources, `{"width", "classes_num"}` to build the model with) of a state dict.

    `convert_state_dict`'s (mn) or `convert_dymn_state_dict`'s two dicts; the
    width is read off the layer sizes (`width_of`), the classes off the last
    Linear. `architecture`: the one the state dict must be of (an mn state
    dict is refused for a DyMN architecture and the other way round).
    """
    network = network_of(state_dict)
    if architecture is not None and get(architecture)["network"] != network:
        wanted = get(architecture)["network"]
        raise Esc50Error(f"missing key {_SIZE_KEYS[wanted][0]!r}: an EfficientAT {network} "
                         f"state dict, not one of {architecture} (a {wanted})")
    width = width_of(state_dict)
    if network == "dymn":
        arrays, sources = convert_dymn_state_dict(state_dict, width)
    else:
        arrays, sources = convert_state_dict(state_dict)
    classes = (int(arrays["classifier_5"][0].shape[-1]) if "classifier_5" in arrays
               else HEAD_CLASSES)
    return arrays, sources, dict(width=width, classes_num=classes)
