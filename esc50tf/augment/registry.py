"""Every augmentation, described once: the one place to add one.

An `Augmentation` entry names the `AugmentConfig` fields it reads, the stage
that applies it (`"waveform"` and `"spectrogram"`: a layer inside the model,
`"batch"`: a mixer in the tf.data pipeline), how its layer is built, its CLI
flags and its `esc50tf tune` search parameters. From this table:

- `build_waveform_augmenter` / `build_spectrogram_augmenter` /
  `build_batch_mixer` (`esc50tf.augment.builders`) chain the enabled entries
  of their stage, in table order;
- `esc50tf.cli` takes its augmentation flags (`cli_options`);
- `esc50tf.tune` takes its augmentation search parameters (`search_params`).

Adding an augmentation: write its layer (in `waveform.py` or
`spectrogram.py`), add its fields and their checks to `AugmentConfig`, and add
one entry here. Keras-free: the layer modules are imported only when a layer
is built, so the CLI's `--help` stays light.

Example:

>>> [a.name for a in AUGMENTATIONS if a.stage == "waveform"]
['crop', 'time_shift', 'gain', 'noise', 'study_noise']
>>> get("noise").fields
('noise_snr_db',)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from esc50tf.augment.config import MIX_CHOICES
from esc50tf.errors import Esc50Error

__all__ = [
    "AUGMENTATIONS",
    "STAGES",
    "Augmentation",
    "Flag",
    "SearchParam",
    "cli_options",
    "get",
    "names",
    "search_params",
]

STAGES = ("waveform", "spectrogram", "batch")


@dataclasses.dataclass(frozen=True)
class Flag:
    """A command-line flag that sets one `AugmentConfig` field.

    Args:
        flag: str. The option, e.g. `"--noise-snr"`.
        key: str. The `AugmentConfig` field it sets.
        help: str. The help text.
        type: callable or str or None. The argparse type: a callable, or the
            name of a parser the CLI supplies (`"positive_int"`, `"pair"`).
        choices: tuple or None. The allowed values.
        metavar: str or None. Shown in the help.
    """

    flag: str
    key: str
    help: str
    type: Callable | str | None = None
    choices: tuple | None = None
    metavar: str | None = None

    def argparse_kwargs(self, parsers):
        """`add_argument` keywords; named types are looked up in `parsers`."""
        kwargs: dict[str, Any] = {}
        if self.type is not None:
            kwargs["type"] = parsers[self.type] if isinstance(self.type, str) else self.type
        if self.choices is not None:
            kwargs["choices"] = list(self.choices)
        if self.metavar is not None:
            kwargs["metavar"] = self.metavar
        kwargs["help"] = self.help
        return kwargs


@dataclasses.dataclass(frozen=True)
class SearchParam:
    """A setting `esc50tf tune` can search (see `esc50tf.tune.Param`).

    Args:
        name: str. Its name in search-space files and trials.csv.
        key: str. The `AugmentConfig` field it sets.
        kind: str. "real", "int" or "snr" (a range "lo,hi" in dB, or "off").
        check: callable. `check(value) -> bool` for a normalised value.
        allowed: str. What `check` accepts, for error messages.
        default: dict or None. The default search-space entry (None: not
            searched unless a space file names it).
    """

    name: str
    key: str
    kind: str
    check: Callable
    allowed: str
    default: dict | None


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """One augmentation: its settings, stage, builder, flags and search parameters.

    Args:
        name: str. Short name.
        stage: str. One of `STAGES`.
        fields: tuple of str. The `AugmentConfig` fields it reads (each field
            belongs to exactly one augmentation).
        enabled: callable. `enabled(config) -> bool`: whether it is on.
        build: callable. `build(config, seed, sample_rate=..., num_classes=...)`
            -> a Keras layer (waveform, spectrogram) or a `BatchMixer` (batch).
        seed_offset: int. Added to the run's seed for this augmentation's
            generator (kept fixed so that runs stay reproducible).
        flags: tuple of `Flag`. Its command-line flags.
        search: tuple of `SearchParam`. Its tune search parameters.
    """

    name: str
    stage: str
    fields: tuple[str, ...]
    enabled: Callable
    build: Callable
    seed_offset: int
    flags: tuple[Flag, ...] = ()
    search: tuple[SearchParam, ...] = ()


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


def _choice(values):
    return {"type": "choice", "values": list(values)}


AUGMENTATIONS = (
    Augmentation(
        "crop", "waveform", ("crop_seconds", "test_crops"),
        enabled=lambda c: c.crop_seconds > 0, build=_build_crop, seed_offset=0,
        flags=(
            Flag("--crop-seconds", "crop_seconds", "train on random crops of this length",
                 type=float),
            Flag("--test-crops", "test_crops", "with --crop-seconds: evaluate and predict on "
                 "this many evenly spaced crops, averaged (default preset: 5)",
                 type="positive_int"),
        ),
    ),
    Augmentation(
        "time_shift", "waveform", ("time_shift_seconds",),
        enabled=lambda c: c.time_shift_seconds > 0, build=_build_time_shift, seed_offset=1,
        flags=(Flag("--time-shift", "time_shift_seconds",
                    "random circular shift up to this many seconds (the study: 0.1)",
                    type=float),),
        search=(SearchParam("time_shift", "time_shift_seconds", "real", lambda v: v >= 0,
                            "a number >= 0 (seconds)",
                            {"type": "float", "min": 0.0, "max": 0.5, "step": 0.1}),),
    ),
    Augmentation(
        "gain", "waveform", ("gain_db",),
        enabled=lambda c: c.gain_db is not None, build=_build_gain, seed_offset=2,
        flags=(Flag("--gain-db", "gain_db", "random gain in dB", type="pair",
                    metavar="MIN,MAX"),),
    ),
    Augmentation(
        "noise", "waveform", ("noise_snr_db",),
        enabled=lambda c: c.noise_snr_db is not None, build=_build_noise, seed_offset=3,
        flags=(Flag("--noise-snr", "noise_snr_db", "additive noise at a random SNR in dB",
                    type="pair", metavar="MIN,MAX"),),
        search=(SearchParam("noise_snr", "noise_snr_db", "snr", lambda v: True,
                            '"off" or a range "lo,hi" in dB within [-30, 100]',
                            _choice(["off", "10,30", "20,40"])),),
    ),
    Augmentation(
        "study_noise", "waveform", ("study_noise_factor",),
        enabled=lambda c: c.study_noise_factor > 0, build=_build_study_noise, seed_offset=4,
        flags=(Flag("--study-noise", "study_noise_factor",
                    "the study's fixed noise factor (0.05)", type=float),),
    ),
    Augmentation(
        "spec_augment", "spectrogram",
        ("freq_mask_param", "time_mask_param", "num_freq_masks", "num_time_masks",
         "mask_value"),
        enabled=lambda c: c.masks_enabled, build=_build_spec_augment, seed_offset=10,
        flags=(
            Flag("--freq-mask", "freq_mask_param", "SpecAugment frequency-mask width F (bins)",
                 type=int),
            Flag("--time-mask", "time_mask_param", "SpecAugment time-mask width T (frames)",
                 type=int),
            Flag("--num-freq-masks", "num_freq_masks", "frequency masks per clip (default 2)",
                 type=int),
            Flag("--num-time-masks", "num_time_masks", "time masks per clip (default 2)",
                 type=int),
        ),
        search=(
            SearchParam("freq_mask", "freq_mask_param", "int", lambda v: v >= 0,
                        "an integer >= 0", _choice([0, 8, 16, 24])),
            SearchParam("time_mask", "time_mask_param", "int", lambda v: v >= 0,
                        "an integer >= 0", _choice([0, 20, 40])),
        ),
    ),
    Augmentation(
        "study_image", "spectrogram",
        ("image_rotation_degrees", "image_flip_horizontal", "image_flip_vertical",
         "image_noise_stddev"),
        enabled=lambda c: c.image_enabled, build=_build_study_image, seed_offset=11,
        flags=(Flag("--image-rotation", "image_rotation_degrees",
                    "the study's image augmentation: max rotation in degrees", type=float),),
    ),
    Augmentation(
        "mix", "batch", ("mix", "mixup_alpha"),
        enabled=lambda c: c.mix != "none", build=_build_mixer, seed_offset=20,
        flags=(
            Flag("--mix", "mix", "batch mixing: mixup or between-class (soft labels)",
                 choices=MIX_CHOICES),
            Flag("--mixup-alpha", "mixup_alpha", "mixup Beta(alpha, alpha) (default 0.2)",
                 type=float),
        ),
        search=(SearchParam("mixup_alpha", "mixup_alpha", "real", lambda v: v >= 0,
                            "a number >= 0 (0 switches mixup off)",
                            _choice([0.0, 0.2, 0.4])),),
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


def cli_options(parsers):
    """The CLI's augmentation option table: `(flag, "augment", key, add_argument kwargs)`.

    Args:
        parsers: dict. The argparse types named by string in the flags
            (`"positive_int"`, `"pair"`), supplied by the CLI.
    """
    return [(f.flag, "augment", f.key, f.argparse_kwargs(parsers))
            for entry in AUGMENTATIONS for f in entry.flags]


def search_params():
    """The tune search parameters, as keyword dicts of `esc50tf.tune.Param` (section "augment")."""
    return [{"section": "augment", **dataclasses.asdict(p)}
            for entry in AUGMENTATIONS for p in entry.search]
