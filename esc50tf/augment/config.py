"""`AugmentConfig`: every augmentation setting, as a frozen config.

Keras-free on purpose (like `esc50tf.config`): a run's `config.json` is read,
resolved and compared without importing TensorFlow or Keras. Which
augmentation reads which field is listed in `esc50tf.augment.registry`; each
field declares its own CLI flag and tune search parameter (`esc50tf.config.setting`).
"""

from __future__ import annotations

import dataclasses

from esc50tf.augment.checks import is_number_in, range_text
from esc50tf.config import Config, choice, field_names, setting
from esc50tf.errors import Esc50Error

__all__ = ["MIX_CHOICES", "AugmentConfig"]

MIX_CHOICES = ("none", "mixup", "bc")


def _not_negative(value):
    return value >= 0


@dataclasses.dataclass(frozen=True)
class AugmentConfig(Config):
    """Every augmentation knob; the defaults switch everything off.

    Frozen: change a setting with `config.replace(name=value)`. Invalid values
    raise `Esc50Error` naming the setting, the value and the allowed range.

    Waveform (applied in this order by `build_waveform_augmenter`):
        crop_seconds: random window of this length, centre crop at
            inference; 0 = no crop.
        test_crops: with a crop, evaluate and predict by averaging the
            model over this many evenly spaced windows.
        time_shift_seconds: largest circular shift either way; 0 = off.
        gain_db: `(min_db, max_db)` random gain, or None = off.
        noise_snr_db: `(min_db, max_db)` SNR of additive noise, or None = off.
        study_noise_factor: the study's fixed-level noise + clip; 0 = off.
    Front end (the front-end layer's own training calls; `kaldi_mel` only):
        fmin_jitter_hz: raise the lowest band edge by a whole number of Hz
            drawn in `[0, fmin_jitter_hz)` per batch; 0 or 1 = off.
        fmax_jitter_hz: move the highest band edge by `fmax_jitter_hz // 2 - k`
            Hz, `k` drawn in `[0, fmax_jitter_hz)` per batch; 0 or 1 = off
            (EfficientAT's `fmin_aug_range` / `fmax_aug_range`: 10 / 2000).
    Spectrogram (`build_spectrogram_augmenter`):
        freq_mask_param, time_mask_param: SpecAugment widths F and T;
            0 = no masks of that kind.
        num_freq_masks, num_time_masks: masks per example (Park et al.'s
            "LD" policy uses 2 and 2).
        mask_value: "mean" or a number.
        image_rotation_degrees, image_flip_horizontal, image_flip_vertical,
        image_noise_stddev: the study's image augmentation (it hurt; off).
    Batch (`build_batch_mixer`):
        mix: "none", "mixup" or "bc".
        mixup_alpha: Beta concentration for mixup.

    Example:

    >>> AugmentConfig(noise_snr_db=[10, 30]).replace(mix="mixup").noise_snr_db
    (10, 30)
    """

    crop_seconds: float = setting(0.0, flag="--crop-seconds", type=float,
                                  help="train on random crops of this length")
    test_crops: int = setting(
        1, flag="--test-crops", type="positive_int",
        help="with --crop-seconds: evaluate and predict on this many evenly spaced crops, "
        "averaged (default preset: 5)")
    time_shift_seconds: float = setting(
        0.0, flag="--time-shift", type=float,
        help="random circular shift up to this many seconds (the study: 0.1)",
        search={"type": "float", "min": 0.0, "max": 0.5, "step": 0.1}, search_name="time_shift",
        check=lambda v: v >= 0, allowed="a number >= 0 (seconds)")
    gain_db: tuple[float, float] | None = setting(None, flag="--gain-db", type="pair",
                                                  metavar="MIN,MAX", help="random gain in dB")
    noise_snr_db: tuple[float, float] | None = setting(
        None, flag="--noise-snr", type="pair", metavar="MIN,MAX",
        help="additive noise at a random SNR in dB", search=choice(["off", "10,30", "20,40"]),
        search_name="noise_snr", search_kind="snr", note="SNR range in dB; off: no noise",
        check=lambda v: True,
        allowed='"off" or a range "lo,hi" in dB within [-30, 100]')
    study_noise_factor: float = setting(0.0, flag="--study-noise", type=float,
                                        help="the study's fixed noise factor (0.05)")
    fmin_jitter_hz: int = setting(
        0, flag="--fmin-jitter", type=int, metavar="N",
        help="kaldi_mel front end: raise its lowest band edge by a random 0..N-1 Hz per "
        "training batch (EfficientAT's fine-tuning: 10)",
        check=_not_negative, allowed="an integer >= 0 (Hz; 0 or 1: off)")
    fmax_jitter_hz: int = setting(
        0, flag="--fmax-jitter", type=int, metavar="N",
        help="kaldi_mel front end: move its highest band edge by N//2 - (a random 0..N-1) Hz "
        "per training batch (EfficientAT's fine-tuning: 2000)",
        check=_not_negative, allowed="an integer >= 0 (Hz; 0 or 1: off)")
    freq_mask_param: int = setting(0, flag="--freq-mask", type=int,
                                   help="SpecAugment frequency-mask width F (bins)",
                                   search=choice([0, 8, 16, 24]), search_name="freq_mask",
                                   check=_not_negative, allowed="an integer >= 0")
    time_mask_param: int = setting(0, flag="--time-mask", type=int,
                                   help="SpecAugment time-mask width T (frames)",
                                   search=choice([0, 20, 40]), search_name="time_mask",
                                   check=_not_negative, allowed="an integer >= 0")
    num_freq_masks: int = setting(2, flag="--num-freq-masks", type=int,
                                  help="frequency masks per clip (default 2)")
    num_time_masks: int = setting(2, flag="--num-time-masks", type=int,
                                  help="time masks per clip (default 2)")
    mask_value: str | float = "mean"
    image_rotation_degrees: float = setting(
        0.0, flag="--image-rotation", type=float,
        help="the study's image augmentation: max rotation in degrees")
    image_flip_horizontal: bool = False
    image_flip_vertical: bool = False
    image_noise_stddev: float = 0.0
    mix: str = setting("none", flag="--mix", choices=MIX_CHOICES,
                       help="batch mixing: mixup or between-class (soft labels)")
    mixup_alpha: float = setting(0.2, flag="--mixup-alpha", type=float,
                                 help="mixup Beta(alpha, alpha) (default 0.2)",
                                 search=choice([0.0, 0.2, 0.4]), check=_not_negative,
                                 allowed="a number >= 0 (0 switches mixup off)", note="0: no mixup")

    def __post_init__(self):
        for name in ("gain_db", "noise_snr_db"):
            value = getattr(self, name)
            if isinstance(value, list):
                self.set_field(name, tuple(value))
        self._validate()

    def _validate(self):
        """Raises `Esc50Error` naming the first bad value and its allowed range."""

        def number(name, low=None, high=None, low_open=False):
            value = getattr(self, name)
            self.check(is_number_in(value, low, high, low_open), name, value,
                       f"a number in {range_text(low, high, low_open)}")

        def integer(name, low=0):
            value = getattr(self, name)
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
            self.check(ok, name, value, f"an integer >= {low}")

        def pair(name, low, high):
            value = getattr(self, name)
            if value is None:
                return
            ok = isinstance(value, tuple) and len(value) == 2
            ok = ok and all(is_number_in(v, low, high) for v in value)
            ok = ok and value[0] <= value[1]
            self.check(ok, name, value,
                       f"None or a pair (min, max) with {low} <= min <= max <= {high}")

        def boolean(name):
            value = getattr(self, name)
            self.check(isinstance(value, bool), name, value, "True or False")

        number("crop_seconds", 0.0)
        integer("test_crops", 1)
        number("time_shift_seconds", 0.0)
        pair("gain_db", -60.0, 60.0)
        pair("noise_snr_db", -30.0, 100.0)
        number("study_noise_factor", 0.0, 1.0)
        integer("fmin_jitter_hz")
        integer("fmax_jitter_hz")
        integer("freq_mask_param")
        integer("time_mask_param")
        integer("num_freq_masks")
        integer("num_time_masks")
        if self.mask_value != "mean":
            number("mask_value")
        number("image_rotation_degrees", 0.0, 180.0)
        boolean("image_flip_horizontal")
        boolean("image_flip_vertical")
        number("image_noise_stddev", 0.0)
        self.check(self.mix in MIX_CHOICES, "mix", self.mix, f"one of {list(MIX_CHOICES)}")
        number("mixup_alpha", 0.0, low_open=True)

    @classmethod
    def from_dict(cls, values):
        """`Config.from_dict`; an unknown key's message also lists the valid keys."""
        if isinstance(values, dict):
            unknown = sorted(set(values) - set(field_names(cls)))
            if unknown:
                raise Esc50Error(f"Unknown AugmentConfig keys {unknown}; "
                                 f"valid keys: {field_names(cls)}.")
        return super().from_dict(values)

    @property
    def edge_jitter_enabled(self) -> bool:
        return self.fmin_jitter_hz > 1 or self.fmax_jitter_hz > 1

    @property
    def masks_enabled(self) -> bool:
        return (self.freq_mask_param > 0 and self.num_freq_masks > 0) or (
            self.time_mask_param > 0 and self.num_time_masks > 0
        )

    @property
    def image_enabled(self) -> bool:
        return bool(
            self.image_rotation_degrees > 0
            or self.image_flip_horizontal
            or self.image_flip_vertical
            or self.image_noise_stddev > 0
        )
