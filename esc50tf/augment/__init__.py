"""Training-time augmentation that runs inside the training graph.

Every augmentation here is a Keras 3 layer written with `keras.ops` and
`keras.random`, so it runs on the accelerator inside the model (TensorFlow,
also under XLA, and the JAX backend) or inside a TensorFlow-backend `tf.data`
pipeline. They share four rules:

- Vectorised over the batch: parameters are drawn per example as tensors of
  shape `[batch]`; no Python loop over examples.
- Reproducible: each layer takes `seed` and owns a
  `keras.random.SeedGenerator`; two layers built with the same seed give the
  same outputs call after call.
- The identity when `training` is False or None (the default), so a model
  that contains them predicts on clean input. Only `RandomCrop` changes its
  input at inference: it takes a deterministic centre crop so shapes match.
  Inside `tf.data` pass `training=True` yourself:
  `ds.map(lambda x: layer(x, training=True))`.
- Dtype preserving: the output has the input's dtype (also under a
  `mixed_float16` policy); power and noise are computed in float32.

Waveforms are `[batch, samples]` in [-1, 1]; spectrograms are time-major
`[batch, frames, bins]` (optionally with a trailing channel axis).

Label-mixing augmentation (mixup, between-class learning) needs the labels,
so it is provided as pure functions (`mixup`, `between_class_mix`) and a
`BatchMixer` for `dataset.map(mixer)` after batching.

Modules:

- `checks`: argument checks (Keras-free);
- `base`: `AugmentLayer` (seed generator, identity at inference) and the
  seed stream of the mixing functions;
- `waveform`: `RandomTimeShift`, `RandomCrop`, `AddNoise`, `StudyNoise`,
  `RandomGain`;
- `spectrogram`: `SpecAugment`, `StudyImageAugment`;
- `mixing`: `mixup`, `between_class_mix`, `BatchMixer`;
- `config`: `AugmentConfig` (Keras-free; each field declares its CLI flag and tune
  parameter; the study's settings are in `esc50tf.presets`);
- `registry`: every augmentation described once (fields, stage, builder; Keras-free);
- `builders`: `build_waveform_augmenter`, `frontend_augmentation` (the
  `kaldi_mel` band-edge jitter, applied by the front-end layer itself),
  `build_spectrogram_augmenter`,
  `build_batch_mixer`, which read the registry.

Importing this package does not import Keras: the config and the registry are
loaded at once, the layers, mixing functions and builders on first use
(`esc50tf.augment.RandomCrop` imports `esc50tf.augment.waveform`). Import the
layer modules themselves to register the layers for `.keras` loading.
"""

from __future__ import annotations

import importlib

from esc50tf.augment.config import AugmentConfig
from esc50tf.augment.registry import AUGMENTATIONS

__all__ = [
    "AUGMENTATIONS",
    "AddNoise",
    "AugmentConfig",
    "BatchMixer",
    "RandomCrop",
    "RandomGain",
    "RandomTimeShift",
    "SpecAugment",
    "StudyImageAugment",
    "StudyNoise",
    "between_class_mix",
    "build_batch_mixer",
    "build_spectrogram_augmenter",
    "build_waveform_augmenter",
    "frontend_augmentation",
    "mixup",
]

# Public name -> the module (importing Keras) that defines it.
_LAZY = {
    "AddNoise": "waveform",
    "RandomCrop": "waveform",
    "RandomGain": "waveform",
    "RandomTimeShift": "waveform",
    "StudyNoise": "waveform",
    "SpecAugment": "spectrogram",
    "StudyImageAugment": "spectrogram",
    "BatchMixer": "mixing",
    "between_class_mix": "mixing",
    "mixup": "mixing",
    "build_batch_mixer": "builders",
    "build_spectrogram_augmenter": "builders",
    "build_waveform_augmenter": "builders",
    "frontend_augmentation": "builders",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'esc50tf.augment' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"esc50tf.augment.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
