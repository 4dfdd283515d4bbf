"""PANNs state dict (PyTorch names and layouts) -> Keras weights, by layer name.

The Keras layers of `esc50tf.models.panns` are named after the PyTorch
module paths with "." replaced by "_" (`conv_block1.bn1` -> `conv_block1_bn1`),
so conversion is a renaming plus a relayout per module kind:

- Conv2d weight `(O, I, kh, kw)` -> Conv2D kernel `(kh, kw, I, O)` (+ bias);
- Linear weight `(out, in)` -> Dense kernel `(in, out)`, then the bias;
- BatchNorm weight, bias, running_mean, running_var -> gamma, beta,
  moving_mean, moving_variance (`num_batches_tracked` is dropped).

The front end (`spectrogram_extractor.*`, `logmel_extractor.*`) is not
loaded: esc50tf computes it with its own layers. It is checked instead: the
checkpoint's Mel filterbank must equal the one esc50tf builds for the
architecture (and the STFT window, when present, the periodic Hann window),
which proves that the checkpoint was trained on the front end the Keras
model computes.

Example:

>>> state = read_torch_checkpoint("Cnn14_mAP=0.431.pth")
>>> converted = convert_state_dict("cnn14", state)
>>> model = esc50tf.models.panns.build_reference("cnn14")
>>> load_into(model, converted)
"""

from __future__ import annotations

import numpy as np

from esc50tf.errors import Esc50Error
from esc50tf.pretrained import architectures

__all__ = ["ConvertedWeights", "convert_state_dict", "load_into", "check_frontend"]

FRONTEND_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.")
_MEL_KEY = "logmel_extractor.melW"
_WINDOW_KEY = "spectrogram_extractor.stft.conv_real.weight"
_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")
FILTERBANK_TOLERANCE = 1e-6


class ConvertedWeights(dict):
    """`{keras layer name: [arrays in Keras order]}`, plus where each came from.

    Args:
        sources: dict. Keras layer name -> the PyTorch keys of its arrays,
            in the same order (used in error messages).
    """

    def __init__(self, *args, sources=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.sources = dict(sources or {})

    def source(self, layer, index):
        keys = self.sources.get(layer)
        return keys[index] if keys and index < len(keys) else f"{layer}[{index}]"


def _group_modules(state_dict):
    """`{"conv_block1.bn1": {"weight": a, ...}}`, front end and counters left out."""
    modules = {}
    for key, value in state_dict.items():
        if key.startswith(FRONTEND_PREFIXES) or key.endswith("num_batches_tracked"):
            continue
        module, _, param = key.rpartition(".")
        if not module:
            raise Esc50Error(f"unexpected key {key!r} in the state dict (no module path)")
        modules.setdefault(module, {})[param] = np.asarray(value)
    return modules


def _convert_module(module, params):
    """(arrays in Keras order, their PyTorch keys) for one module."""
    names = set(params)
    if names >= set(_BN_PARAMS):
        extra = names - set(_BN_PARAMS)
        if extra:
            raise Esc50Error(f"unexpected key {module}.{sorted(extra)[0]!r} in a batch norm")
        return ([params[p].astype(np.float32, copy=False) for p in _BN_PARAMS],
                [f"{module}.{p}" for p in _BN_PARAMS])
    if "weight" not in names or names - {"weight", "bias"}:
        odd = sorted(names - {"weight", "bias"}) or ["weight"]
        raise Esc50Error(f"unexpected or missing key {module}.{odd[0]} (not a conv, "
                         "linear or batch-norm module)")
    weight = params["weight"].astype(np.float32, copy=False)
    if weight.ndim == 4:
        arrays = [np.transpose(weight, (2, 3, 1, 0))]  # (O, I, kh, kw) -> (kh, kw, I, O)
    elif weight.ndim == 2:
        arrays = [weight.T]  # (out, in) -> (in, out)
    else:
        raise Esc50Error(f"{module}.weight has shape {weight.shape}; expected a conv "
                         "(4-D) or linear (2-D) weight")
    keys = [f"{module}.weight"]
    if "bias" in params:
        arrays.append(params["bias"].astype(np.float32, copy=False))
        keys.append(f"{module}.bias")
    return [np.ascontiguousarray(a) for a in arrays], keys


def check_frontend(name, state_dict):
    """Refuses a checkpoint whose front end differs from esc50tf's for `name`.

    Args:
        name: str. A PANNs architecture (`esc50tf.pretrained.architectures.ARCHITECTURES`).
        state_dict: dict of numpy arrays (PyTorch names).

    Returns:
        float, the largest absolute filterbank difference found.

    Raises:
        Esc50Error: no Mel filterbank in the checkpoint, or one (or an STFT
            window) that differs from esc50tf's by more than 1e-6.
    """
    from esc50tf.frontend import filters

    a = architectures.get(name)
    if _MEL_KEY not in state_dict:
        raise Esc50Error(f"the checkpoint has no {_MEL_KEY}: cannot verify that it was "
                         f"trained on the {name} front end")
    mel_w = np.asarray(state_dict[_MEL_KEY], np.float64)
    ours = filters.mel_filterbank(a["sample_rate"], a["n_fft"], a["n_mels"], a["fmin"],
                                  a["fmax"]).T.astype(np.float64)  # [bins, mels]
    setting = (f"{a['sample_rate']} Hz, n_fft {a['n_fft']}, {a['n_mels']} Mel bands "
               f"{a['fmin']:g}-{a['fmax']:g} Hz")
    if mel_w.shape != ours.shape:
        raise Esc50Error(f"{_MEL_KEY} has shape {mel_w.shape}, the {name} front end "
                         f"({setting}) has {ours.shape}: a checkpoint of another architecture?")
    diff = float(np.max(np.abs(mel_w - ours)))
    if diff > FILTERBANK_TOLERANCE:
        raise Esc50Error(f"{_MEL_KEY} differs from the {name} front end ({setting}) by "
                         f"up to {diff:.3g}: a checkpoint of another architecture or sample rate?")
    if _WINDOW_KEY in state_dict:
        conv_real = np.asarray(state_dict[_WINDOW_KEY], np.float64)
        window = filters.window_array("hann", a["n_fft"]).astype(np.float64)
        if conv_real.shape[-1] != a["n_fft"] or np.max(np.abs(conv_real[0, 0] - window)) > 1e-6:
            raise Esc50Error(f"{_WINDOW_KEY} is not a {a['n_fft']}-point Hann STFT: "
                             f"the checkpoint's front end differs from {name}'s")
    return diff


def convert_state_dict(name, state_dict, widths=None):
    """Converts a PANNs state dict to Keras weights for architecture `name`.

    Args:
        name: str. A PANNs architecture (`cnn14`, `cnn14_16k`, `cnn14_sed`).
        state_dict: dict of numpy arrays, as `read_torch_checkpoint` returns.
        widths: sequence of ints or None. Expected conv widths per block
            (checked); None: whatever the checkpoint has (a narrower CNN14
            of the same layout converts too; `load_into` checks it against
            the model it goes into).

    Returns:
        `ConvertedWeights`: `{keras layer name: [arrays]}` (Conv2D: kernel;
        Dense: kernel, bias; BatchNormalization: gamma, beta, moving mean,
        moving variance).

    Raises:
        Esc50Error: a front end that differs from esc50tf's, a module that is
            not a conv/linear/batch norm, or a conv width other than `widths`.
    """
    architectures.get(name)
    check_frontend(name, state_dict)
    converted = ConvertedWeights()
    for module, params in _group_modules(state_dict).items():
        arrays, keys = _convert_module(module, params)
        layer = module.replace(".", "_")
        converted[layer] = arrays
        converted.sources[layer] = keys
    for i, width in enumerate(widths or (), 1):
        layer = f"conv_block{i}_conv1"
        if layer in converted and converted[layer][0].shape[-1] != width:
            got = converted[layer][0].shape
            raise Esc50Error(f"conv_block{i}.conv1.weight has {got[-1]} output channels "
                             f"(Keras kernel {got}), expected {width} for {name}")
    return converted


def _weighted_layers(model):
    """Every layer with weights, nested models walked through, by name."""
    found = {}

    def walk(layer):
        children = getattr(layer, "layers", None)
        if children:
            for child in children:
                walk(child)
            return
        if layer.weights:
            found[layer.name] = layer

    walk(model)
    return found


def _is_loadable(layer):
    """Layers a checkpoint must provide: trainable weights or batch-norm statistics."""
    import keras

    return bool(layer.trainable_weights) or isinstance(layer, keras.layers.BatchNormalization)


def _torch_key(layer):
    """The first PyTorch state-dict key a Keras layer's weights come from
    (`conv_block3_bn2` -> `conv_block3.bn2.weight`)."""
    import re

    module = re.sub(r"^(conv_block\d+)_", r"\1.", layer.name)
    return f"{module}.weight"


def load_into(model, converted, skip=()):
    """Sets the weights of `model`'s layers from `converted`, by layer name.

    Args:
        model: keras.Model (nested models are walked).
        converted: `ConvertedWeights` or `{layer name: [arrays]}`.
        skip: iterable of layer names ignored on both sides (the AudioSet
            head `fc_audioset` when a new head replaces it, the new head).

    Returns:
        list of the layer names loaded.

    Raises:
        Esc50Error: a converted layer the model lacks (unexpected key), a
            model layer with trainable weights the checkpoint lacks (missing
            key), or a shape mismatch, naming the PyTorch key and both shapes.
    """
    skip = set(skip)
    layers = _weighted_layers(model)
    source = getattr(converted, "source", lambda layer, i: f"{layer}[{i}]")
    unexpected = sorted(set(converted) - set(layers) - skip)
    if unexpected:
        keys = getattr(converted, "sources", {}).get(unexpected[0], [unexpected[0]])
        raise Esc50Error(f"unexpected key {keys[0]!r}: the model has no layer "
                         f"{unexpected[0]!r} (checkpoint of another architecture?)")
    missing = sorted(n for n, layer in layers.items()
                     if n not in converted and n not in skip and _is_loadable(layer))
    if missing:
        layer = layers[missing[0]]
        raise Esc50Error(f"missing key {_torch_key(layer)!r}: the checkpoint has no weights "
                         f"for the model's layer {missing[0]!r}")
    # Every shape is checked before any weight is set: an error loads nothing.
    todo = []
    for name, arrays in converted.items():
        if name in skip:
            continue
        layer = layers[name]
        expected = [tuple(w.shape) for w in layer.weights]
        if len(expected) != len(arrays):
            raise Esc50Error(f"layer {name!r} holds {len(expected)} weights, the checkpoint "
                             f"gives {len(arrays)} ({source(name, 0)}...)")
        for i, (shape, array) in enumerate(zip(expected, arrays)):
            if tuple(array.shape) != shape:
                raise Esc50Error(f"shape mismatch for {source(name, i)}: the checkpoint "
                                 f"gives {tuple(array.shape)} (Keras layout), the model's "
                                 f"{layer.weights[i].path} is {shape}")
        todo.append((layer, arrays))
    for layer, arrays in todo:
        layer.set_weights(arrays)
    return [layer.name for layer, _ in todo]
