"""Every augmentation, described once: the one place to add one.

An `Augmentation` entry names the `AugmentConfig` fields it reads, the stage
that applies it (`"waveform"` and `"spectrogram"`: a layer inside the model,
`"frontend"`: settings of the front-end layer's own training calls, `"batch"`:
a mixer in the tf.data pipeline) and how it is built. Its
CLI flags and `esc50tf tune` search parameters are declared on those fields
(`esc50tf.config.setting`). From this table:

- `build_waveform_augmenter` / `build_spectrogram_augmenter` /
  `build_batch_mixer` (`esc50tf.augment.builders`) chain the enabled entries
  of their stage, in table order.

Adding an augmentation: write its layer (in `waveform.py` or
`spectrogram.py`), add its fields (with their flags and search entries) and
their checks to `AugmentConfig`, and add one entry here. Keras-free: the
layer modules are imported only when a layer is built, so the CLI's `--help`
stays light.

Example:

>>> [a.name for a in AUGMENTATIONS if a.stage == "waveform"]
['crop', 'time_shift', 'gain', 'noise', 'study_noise']
>>> get("noise").fields
('noise_snr_db',)
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from esc50tf.errors import Esc50Error

__all__ = [
    "AUGMENTATIONS",
    "STAGES",
    "Augmentation",
    "get",
    "names",
]

STAGES = ("waveform", "frontend", "spectrogram", "batch")


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """One augmentation: its settings, stage and builder.

    Args:
        name: str. Short name.
        stage: str. One of `STAGES`.
        fields: tuple of str. The `AugmentConfig` fields it reads (each field
            belongs to exactly one augmentation).
        enabled: callable. `enabled(config) -> bool`: whether it is on.
        build: callable. `build(config, seed, sample_rate=..., num_classes=...)`
            -> a Keras layer (waveform, spectrogram), keyword arguments of the
            front-end layer (frontend) or a `BatchMixer` (batch).
        seed_offset: int. Added to the run's seed for this augmentation's
            generator (kept fixed so that runs stay reproducible).
    """

    name: str
    stage: str
    fields: tuple[str, ...]
    enabled: Callable
    build: Callable
    seed_offset: int


def _build_crop(config, seed, sample_rate, **_):
    from esc50tf.augment.waveform import RandomCrop

    num_samples = max(1, int(round(config.crop_seconds * sample_rate)))
    return RandomCrop(num_samples, test_crops=config.test_crops, seed=seed)


def _build_time_shift(config, seed, sample_rate, **_):
    from esc50tf.augment.waveform import RandomTimeShift

    return RandomTimeShift(config.time_shift_seconds, sample_rate, seed=seed)


def _build_gain(config, seed, **_):
    from esc50tf.augment.waveform import RandomGain

    return RandomGain(*config.gain_db, seed=seed)


def _build_noise(config, seed, **_):
    from esc50tf.augment.waveform import AddNoise

    return AddNoise(config.noise_snr_db, seed=seed)


def _build_study_noise(config, seed, **_):
    from esc50tf.augment.waveform import StudyNoise

    return StudyNoise(config.study_noise_factor, seed=seed)


def _build_edge_jitter(config, seed, **_):
    return {"fmin_jitter": config.fmin_jitter_hz, "fmax_jitter": config.fmax_jitter_hz,
            "seed": seed}


def _build_spec_augment(config, seed, **_):
    from esc50tf.augment.spectrogram import SpecAugment

    return SpecAugment(
        config.freq_mask_param,
        config.time_mask_param,
        num_freq_masks=config.num_freq_masks,
        num_time_masks=config.num_time_masks,
        mask_value=config.mask_value,
        seed=seed,
    )


def _build_study_image(config, seed, **_):
    from esc50tf.augment.spectrogram import StudyImageAugment

    return StudyImageAugment(
        config.image_rotation_degrees,
        flip_horizontal=config.image_flip_horizontal,
        flip_vertical=config.image_flip_vertical,
        noise_stddev=config.image_noise_stddev,
        seed=seed,
    )


def _build_mixer(config, seed, sample_rate, num_classes, **_):
    from esc50tf.augment.mixing import BatchMixer

    return BatchMixer(mode=config.mix, alpha=config.mixup_alpha, seed=seed,
                      num_classes=num_classes, sample_rate=sample_rate)


AUGMENTATIONS = (
    Augmentation(
        "crop", "waveform", ("crop_seconds", "test_crops"),
        enabled=lambda c: c.crop_seconds > 0, build=_build_crop, seed_offset=0,
    ),
    Augmentation(
        "time_shift", "waveform", ("time_shift_seconds",),
        enabled=lambda c: c.time_shift_seconds > 0, build=_build_time_shift, seed_offset=1,
    ),
    Augmentation(
        "gain", "waveform", ("gain_db",),
        enabled=lambda c: c.gain_db is not None, build=_build_gain, seed_offset=2,
    ),
    Augmentation(
        "noise", "waveform", ("noise_snr_db",),
        enabled=lambda c: c.noise_snr_db is not None, build=_build_noise, seed_offset=3,
    ),
    Augmentation(
        "study_noise", "waveform", ("study_noise_factor",),
        enabled=lambda c: c.study_noise_factor > 0, build=_build_study_noise, seed_offset=4,
    ),
    Augmentation(
        "mel_edges", "frontend", ("fmin_jitter_hz", "fmax_jitter_hz"),
        enabled=lambda c: c.edge_jitter_enabled, build=_build_edge_jitter, seed_offset=5,
    ),
    Augmentation(
        "spec_augment", "spectrogram",
        ("freq_mask_param", "time_mask_param", "num_freq_masks", "num_time_masks",
         "mask_value"),
        enabled=lambda c: c.masks_enabled, build=_build_spec_augment, seed_offset=10,
    ),
    Augmentation(
        "study_image", "spectrogram",
        ("image_rotation_degrees", "image_flip_horizontal", "image_flip_vertical",
         "image_noise_stddev"),
        enabled=lambda c: c.image_enabled, build=_build_study_image, seed_offset=11,
    ),
    Augmentation(
        "mix", "batch", ("mix", "mixup_alpha"),
        enabled=lambda c: c.mix != "none", build=_build_mixer, seed_offset=20,
    ),
)


def names():
    """The augmentations' names, in table order."""
    return [a.name for a in AUGMENTATIONS]


def get(name):
    """The entry called `name`; an unknown name raises `Esc50Error` listing the valid ones."""
    for entry in AUGMENTATIONS:
        if entry.name == name:
            return entry
    raise Esc50Error(f"unknown augmentation {name!r}; valid: {', '.join(names())}")
