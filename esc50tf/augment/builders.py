"""Augmenters from an `AugmentConfig`: one chain per stage, read from the registry.

Each builder chains the enabled entries of its stage in
`esc50tf.augment.registry.AUGMENTATIONS`, in table order; each layer's seed
is the run's seed plus the entry's fixed offset.
"""

from __future__ import annotations

import keras

from esc50tf.augment.registry import AUGMENTATIONS

__all__ = ["build_batch_mixer", "build_spectrogram_augmenter", "build_waveform_augmenter",
           "frontend_augmentation"]


def _layer_seed(seed, offset):
    return None if seed is None else seed + offset


def _build_stage(stage, config, seed, **context):
    return [entry.build(config, _layer_seed(seed, entry.seed_offset), **context)
            for entry in AUGMENTATIONS if entry.stage == stage and entry.enabled(config)]


def build_waveform_augmenter(config, sample_rate, seed=None):
    """Waveform augmentation chain from a config, or None if all are off.

    Order: crop, time shift, gain, SNR noise, study noise (the registry's).
    Each layer gets its own seed derived from `seed`.

    Args:
        config: `AugmentConfig`.
        sample_rate: int. Samples per second of the waveforms.
        seed: int or None.

    Returns:
        `keras.Sequential` named "waveform_augmenter", or None.
    """
    layers = _build_stage("waveform", config, seed, sample_rate=sample_rate)
    return keras.Sequential(layers, name="waveform_augmenter") if layers else None


def frontend_augmentation(config, seed=None):
    """Keyword arguments of the front-end layer for its training-time augmentation.

    The enabled `"frontend"` entries (the `kaldi_mel` band-edge jitter,
    `mel_edges`), merged; `{}` when all are off. The layer applies them in
    training calls only.
    """
    out = {}
    for kwargs in _build_stage("frontend", config, seed):
        out.update(kwargs)
    return out


def build_spectrogram_augmenter(config, seed=None):
    """Spectrogram augmentation chain from a config, or None if all are off.

    Order: SpecAugment masks, then the study's image augmentation.

    Returns:
        `keras.Sequential` named "spectrogram_augmenter", or None.
    """
    layers = _build_stage("spectrogram", config, seed)
    return keras.Sequential(layers, name="spectrogram_augmenter") if layers else None


def build_batch_mixer(config, num_classes, sample_rate=44100, seed=None):
    """`BatchMixer` for `config.mix`, or None when `mix == "none"`."""
    mixers = _build_stage("batch", config, seed, sample_rate=sample_rate,
                          num_classes=num_classes)
    return mixers[0] if mixers else None
