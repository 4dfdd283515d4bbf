"""Audio front end: waveform -> STFT / log-Mel / MFCC as Keras 3 layers, and their settings.

One module per concern, data flowing top to bottom:

- :mod:`~esc50tf.frontend.filters`: the filter maths, numpy only (Mel scale
  and filterbank, windows, DCT, delta weights, librosa's frame count);
- :mod:`~esc50tf.frontend.config`: `FeatureConfig`, the choice constants
  (`KINDS`, `WINDOWS`...), the argument checks, and `FRONTENDS`, the registry
  of front-end kinds. Keras-free;
- :mod:`~esc50tf.frontend.backends`: the op namespaces the layers' math runs
  on (`keras.ops`, a matmul DFT for export, plain TensorFlow for `tf.data`);
- :mod:`~esc50tf.frontend.spectrogram`: the layers `Spectrogram`,
  `MelSpectrogram`, `MFCC`;
- :mod:`~esc50tf.frontend.adapters`: `AddChannelAxis`, `ResizeToImage`;
- :mod:`~esc50tf.frontend.normalization`: `FrequencyNormalization`,
  `InstanceNormalization`;
- :mod:`~esc50tf.frontend.build`: `build_frontend` (config -> layer);
- :mod:`~esc50tf.frontend.host`: `make_host_featurizer` (config -> a
  TensorFlow function for `tf.data`).

Adding a front end. The registry `config.FRONTENDS` maps each kind to its
layer class, named as a ``"module:Class"`` string, the `FeatureConfig` fields
the layer reads (passed to it under the same names), its output width and a
one-line description. Because the class is named rather than imported, the
registry, `KINDS` and `FeatureConfig` stay importable without Keras (`compare`,
`study`, the CLI's argument parser and `config.json` checks use them that way);
the class is imported by `build_frontend` when a layer is built. A new front
end is one layer class plus one `FrontendSpec` entry; `build_frontend`, the
CLI's `--features` / `features --kind` choices, tune's `features` parameter
(and which kinds its `n_mels` / `n_mfcc` apply to), study's kinds and
compare's columns follow from the registry. (A setting no kind had before is
also a new `FeatureConfig` field and a CLI flag.)

This package imports Keras lazily: `import esc50tf.frontend` and the names of
`config` and `filters` do not import Keras or TensorFlow; the first access to
a layer (or `build_frontend`, `make_host_featurizer`) imports its module.

Example:

>>> config = FeatureConfig(kind="mel", sample_rate=22050, n_fft=1024,
...                        hop_length=256, n_mels=64)
>>> frontend = build_frontend(config)
>>> frontend(np.zeros((2, 22050), "float32")).shape   # 1 + 22050 // 256
TensorShape([2, 87, 64])
"""

from __future__ import annotations

import importlib

from esc50tf.frontend import config, filters
from esc50tf.frontend.config import *  # noqa: F403  (its __all__)
from esc50tf.frontend.filters import *  # noqa: F403

# Names whose modules import Keras, loaded on first access (PEP 562).
_LAZY = {
    "Spectrogram": "spectrogram",
    "MelSpectrogram": "spectrogram",
    "MFCC": "spectrogram",
    "KaldiMelSpectrogram": "kaldi",
    "AddChannelAxis": "adapters",
    "ResizeToImage": "adapters",
    "FrequencyNormalization": "normalization",
    "InstanceNormalization": "normalization",
    "build_frontend": "build",
    "make_host_featurizer": "host",
}

__all__ = [*config.__all__, *filters.__all__, "register_layers", *_LAZY]


def register_layers():
    """Imports every layer of the package, which registers it with Keras for loading `.keras` files.

    Registered names are `esc50tf>ClassName` (`esc50tf>MelSpectrogram`...).

    Returns:
        dict: class name -> layer class, the front ends of `FRONTENDS`
        included.
    """
    layers = {name: __getattr__(name) for name in _LAZY if name[0].isupper()}
    for spec in FRONTENDS.values():
        layers[spec.layer_class.__name__] = spec.layer_class
    return layers


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
