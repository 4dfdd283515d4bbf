"""Front-end settings, Keras-free: FeatureConfig, the choice constants, the argument checks
and the registry of front-end kinds.

`FRONTENDS` is the one place a front end is declared: kind name -> the layer
class (as a ``"module:Class"`` path, imported only when a layer is built), the
`FeatureConfig` fields the layer reads, its output width and a one-line
description. `KINDS`, `build_frontend`, the CLI's `--features` and
`features --kind` choices, tune's `features` parameter, study's kinds and
compare's columns all come from it. Nothing here imports Keras or TensorFlow,
so `config.json` files are read, checked and compared without them.

Example:

>>> config = FeatureConfig(kind="mfcc", n_mels=40, n_mfcc=13, deltas=1)
>>> config.n_bins, config.num_frames(44100)   # 13 * (1 + 1), 1 + 44100 // 512
(26, 87)
>>> frontend_spec("mfcc").reads("n_mels"), frontend_spec("stft").reads("n_mels")
(True, False)
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import numbers
from typing import Callable

from esc50tf.config import Config, choice, setting
from esc50tf.errors import Esc50Error
from esc50tf.frontend.filters import num_frames

__all__ = [
    "DELTAS",
    "FRONTENDS",
    "KINDS",
    "LOGS",
    "MEL_SCALES",
    "NORMS",
    "PAD_MODES",
    "POWERS",
    "SEARCHED_KINDS",
    "STFT_IMPLS",
    "WINDOWS",
    "FeatureConfig",
    "FrontendSpec",
    "check_args",
    "check_edge_jitter",
    "frontend_spec",
    "is_int",
    "kaldi_fmax",
    "kinds_reading",
]

WINDOWS = ("hann", "hamming")
PAD_MODES = ("constant", "reflect")
MEL_SCALES = ("htk", "slaney")
NORMS = (None, "slaney")
POWERS = (1.0, 2.0)
LOGS = (None, "db", "ln")
DELTAS = (0, 1, 2)
STFT_IMPLS = ("rfft", "matmul")


# --------------------------------------------------------------------------
# The registry of front-end kinds
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FrontendSpec:
    """One front-end kind of the registry.

    Args:
        kind: str. The name `FeatureConfig.kind`, `--features` and the
            study use.
        layer: str. The layer class as ``"module:Class"``; imported by
            :attr:`layer_class` only when a layer is built, so listing the
            kinds never imports Keras.
        fields: tuple of str. The `FeatureConfig` fields passed to the layer's
            constructor (under the same names).
        n_bins: callable. `FeatureConfig -> int`, the width of the layer's
            output `[batch, frames, n_bins]`.
        description: str. One line for `--help` and docs.
        bin_label: str. What the output's last axis indexes, for plots
            (`esc50tf features --plot`). Defaults to `"bin"`.
        searched: bool. Whether `tune` may draw it (`FeatureConfig.kind`'s search
            space). Defaults to True.
        samples_dropped: int. Samples the layer removes before framing (a
            pre-emphasis filter's one), for the frame count. Defaults to 0.
        edge_jitter: bool. Whether the layer takes the training-time jitter of
            its band edges (`fmin_jitter`, `fmax_jitter`: the augmentation
            `mel_edges` of `esc50tf.augment`). Defaults to False.
    """

    kind: str
    layer: str
    fields: tuple
    n_bins: Callable
    description: str
    bin_label: str = "bin"
    searched: bool = True
    samples_dropped: int = 0
    edge_jitter: bool = False

    @property
    def layer_class(self):
        """The Keras layer class (imports its module, and so Keras)."""
        module, name = self.layer.split(":")
        return getattr(importlib.import_module(module), name)

    def reads(self, field):
        """Whether the layer of this kind reads `FeatureConfig.<field>`."""
        return field in self.fields


_STFT_FIELDS = ("n_fft", "hop_length", "win_length", "window", "center", "pad_mode",
                "power", "log", "top_db", "ref", "log_offset")
_MEL_FIELDS = _STFT_FIELDS + ("sample_rate", "n_mels", "fmin", "fmax", "mel_scale", "norm")

# Order matters: choices are listed, and the study runs kinds, in this order.
FRONTENDS = {
    spec.kind: spec
    for spec in (
        FrontendSpec("mel", "esc50tf.frontend.spectrogram:MelSpectrogram", _MEL_FIELDS,
                     lambda c: c.n_mels, "log-Mel spectrogram", "Mel band"),
        FrontendSpec("mfcc", "esc50tf.frontend.spectrogram:MFCC",
                     _MEL_FIELDS + ("n_mfcc", "deltas"),
                     lambda c: c.n_mfcc * (1 + c.deltas), "MFCCs (with optional deltas)",
                     "coefficient"),
        FrontendSpec("stft", "esc50tf.frontend.spectrogram:Spectrogram", _STFT_FIELDS,
                     lambda c: c.n_fft // 2 + 1, "STFT magnitude or power spectrogram",
                     "frequency (Hz)"),
        FrontendSpec("kaldi_mel", "esc50tf.frontend.kaldi:KaldiMelSpectrogram",
                     ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels", "fmin",
                      "fmax"),
                     lambda c: c.n_mels,
                     "EfficientAT's Kaldi-style log-Mel (pre-emphasis, (ln + 4.5) / 5)",
                     "Mel band",
                     # the front end of the mn trunks (their own), not a general choice
                     searched=False, samples_dropped=1, edge_jitter=True),
    )
}
KINDS = tuple(FRONTENDS)
SEARCHED_KINDS = tuple(k for k, spec in FRONTENDS.items() if spec.searched)


def frontend_spec(kind):
    """The registry entry of `kind`; Esc50Error listing the kinds for an unknown one."""
    if kind not in FRONTENDS:
        raise Esc50Error(f"unknown front end {kind!r}; allowed: {', '.join(FRONTENDS)}")
    return FRONTENDS[kind]


def kinds_reading(field):
    """The kinds whose layer reads `FeatureConfig.<field>`, in registry order."""
    return tuple(k for k, spec in FRONTENDS.items() if spec.reads(field))


# --------------------------------------------------------------------------
# Argument checking, shared by the layers (ValueError) and FeatureConfig
# (Esc50Error)
# --------------------------------------------------------------------------


def _positive(v):
    return v >= 1


def is_int(v):
    """An integer that is not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def kaldi_fmax(sample_rate, fmax):
    """The top band edge of `kaldi_mel`: `fmax`, or for None the reference's default,
    `sample_rate / 2 - 1000` (Nyquist less half its 2000 Hz training jitter)."""
    return sample_rate / 2.0 - 1000.0 if fmax is None else float(fmax)


def check_edge_jitter(sample_rate, fmin, fmax, fmin_jitter, fmax_jitter, error, where):
    """Checks the training-time band-edge jitter of `kaldi_mel`; raises `error` naming the value.

    The jitter draws `fmin + randint(fmin_jitter)` and `top + fmax_jitter // 2 -
    randint(fmax_jitter)` (`top = kaldi_fmax(sample_rate, fmax)`), as
    EfficientAT's `AugmentMelSTFT` does (0 or 1: that edge stays). Every draw
    must keep `fmin < fmax <= sample_rate / 2`.
    """
    for name, value in (("fmin_jitter", fmin_jitter), ("fmax_jitter", fmax_jitter)):
        if not (is_int(value) and value >= 0):
            raise error(f"{where}: {name}={value!r} is not allowed; allowed: an integer >= 0 "
                        f"(Hz; 0 or 1: no jitter).")
    nyquist = sample_rate / 2.0
    top = kaldi_fmax(sample_rate, fmax)
    highest = top + fmax_jitter // 2
    if highest > nyquist:
        raise error(f"{where}: fmax_jitter={fmax_jitter} is not allowed; it moves the top band "
                    f"edge {top:g} Hz up to {highest:g} Hz, above the Nyquist frequency "
                    f"{nyquist:g} Hz; allowed: at most {int(2 * (nyquist - top)) + 1}.")
    lowest_top = highest - max(fmax_jitter - 1, 0)
    highest_bottom = fmin + max(fmin_jitter - 1, 0)
    if highest_bottom >= lowest_top:
        raise error(f"{where}: fmin_jitter={fmin_jitter} with fmax_jitter={fmax_jitter} is "
                    f"not allowed; the band edges could cross ({highest_bottom:g} Hz >= "
                    f"{lowest_top:g} Hz).")


def check_args(values, error, where):
    """Checks the front-end arguments present in ``values``; raises ``error`` naming the first bad one.

    Args:
        values: dict. Argument name -> value; absent names are not checked.
        error: exception class. `ValueError` for layers, `Esc50Error` for
            configs.
        where: str. Prefix of the message (the class name).
    """

    def bad(name, allowed):
        raise error(f"{where}: {name}={values[name]!r} is not allowed; {allowed}.")

    def choice(name, options):
        if name in values and values[name] not in options:
            bad(name, "allowed: " + ", ".join(repr(o) for o in options))

    def int_at_least(name, low):
        if name in values and not (is_int(values[name]) and values[name] >= low):
            bad(name, f"allowed: an integer >= {low}")

    for name, options in (
        ("kind", tuple(FRONTENDS)),
        ("window", WINDOWS),
        ("pad_mode", PAD_MODES),
        ("mel_scale", MEL_SCALES),
        ("norm", NORMS),
        ("log", LOGS),
    ):
        choice(name, options)
    if "center" in values and not isinstance(values["center"], bool):
        bad("center", "allowed: True or False")
    if "deltas" in values and not (is_int(values["deltas"]) and values["deltas"] in DELTAS):
        bad("deltas", "allowed: 0, 1 or 2")
    if "power" in values and not (_is_real(values["power"]) and values["power"] in POWERS):
        bad("power", "allowed: 1.0 (magnitude) or 2.0 (power)")
    int_at_least("sample_rate", 1)
    int_at_least("n_fft", 2)
    int_at_least("hop_length", 1)
    int_at_least("n_mels", 1)
    int_at_least("n_mfcc", 1)
    if values.get("win_length") is not None:
        n_fft = values.get("n_fft")
        if not (is_int(values["win_length"]) and 1 <= values["win_length"] <= n_fft):
            bad("win_length", f"allowed: None or an integer in [1, n_fft={n_fft}]")
    if is_int(values.get("hop_length")) and is_int(values.get("n_fft")):
        window = values.get("win_length") or values["n_fft"]
        if values["hop_length"] > window:  # frames would skip samples that no window covers
            bad("hop_length", f"allowed: an integer in [1, win_length or n_fft = {window}]")
    if (values.get("kind") in (None, *kinds_reading("n_mels")) and is_int(values.get("n_mels"))
            and is_int(values.get("n_fft")) and values["n_mels"] > values["n_fft"] // 2 + 1):
        # More bands than frequency bins leaves bands empty, and the filterbank's size grows
        # with n_mels x bins (n_mels 100000 took 16 GB before anything trained).
        bad("n_mels", f"allowed: at most n_fft // 2 + 1 = {values['n_fft'] // 2 + 1} "
            "frequency bins (raise --n-fft for more bands)")
    nyquist = values.get("sample_rate", 0) / 2.0
    if "fmin" in values and not (_is_real(values["fmin"]) and 0 <= values["fmin"] < nyquist):
        bad("fmin", f"allowed: a frequency in Hz in [0, sample_rate / 2 = {nyquist:g})")
    if values.get("fmax") is not None:
        fmin = values.get("fmin", 0.0)
        if _is_real(values["fmax"]) and _is_real(fmin) and values["fmax"] <= fmin:
            # Said without the rate: it may not be the data's yet (train takes the data's).
            bad("fmax", f"allowed: None or a frequency in Hz above fmin={fmin:g}")
        if not (_is_real(values["fmax"]) and fmin < values["fmax"] <= nyquist):
            bad("fmax", f"allowed: None or a frequency in Hz in (fmin={fmin:g}, "
                f"sample_rate / 2 = {nyquist:g}]")
    if values.get("top_db") is not None:
        if not (_is_real(values["top_db"]) and values["top_db"] > 0):
            bad("top_db", "allowed: None or a positive number of dB")
        if values.get("log", "db") != "db":
            bad("top_db", "top_db needs log='db'")
    if "ref" in values and values["ref"] != "max":
        if not (_is_real(values["ref"]) and values["ref"] > 0):
            bad("ref", "allowed: a positive number or 'max' (per-example maximum)")
    if "log_offset" in values:
        if not (_is_real(values["log_offset"]) and values["log_offset"] > 0):
            bad("log_offset", "allowed: a positive number")
    if values.get("kind", "mfcc") == "mfcc" and "n_mfcc" in values:
        if "n_mels" in values and values["n_mfcc"] > values["n_mels"]:
            bad("n_mfcc", f"allowed: at most n_mels={values['n_mels']}")
        if "log" in values and values["log"] is None:
            bad("log", "MFCCs are taken of a log-Mel spectrogram: log='db' or 'ln'")


# --------------------------------------------------------------------------
# Typed configuration
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FeatureConfig(Config):
    """Which features to compute and how; librosa names and defaults.

    Build the layer with :func:`esc50tf.frontend.build_frontend`. Invalid
    values raise :class:`esc50tf.errors.Esc50Error` saying what was received
    and what is allowed. `to_dict()` / `from_dict()` round-trip through JSON
    (see :class:`esc50tf.config.Config`). Keras-free.

    Args:
        kind: str. A registered front end (`KINDS`: `"mel"`, `"mfcc"`,
            `"stft"` or `"kaldi_mel"`). Defaults to `"mel"`.
        sample_rate: int. Hz. Defaults to 44100 (ESC-50).
        n_fft: int. Defaults to 2048.
        hop_length: int. Defaults to 512.
        win_length: int or None. None means `n_fft`. Defaults to None.
        window: str. `"hann"` or `"hamming"`. Defaults to `"hann"`.
        center: bool. Defaults to True.
        pad_mode: str. `"constant"` or `"reflect"`. Defaults to `"constant"`.
        n_mels: int. Defaults to 128.
        fmin: float. Defaults to 0.
        fmax: float or None. None means `sample_rate / 2`. Defaults to None.
        mel_scale: str. `"slaney"` or `"htk"`. Defaults to `"slaney"`.
        norm: str or None. `"slaney"` or None. Defaults to `"slaney"`.
        power: float. 1.0 or 2.0. Defaults to 2.0.
        log: str or None. `"db"`, `"ln"` or None. Defaults to `"db"`.
        top_db: float or None. Defaults to None (no clipping).
        ref: float or `"max"`. dB reference. Defaults to 1.0.
        log_offset: float. Offset of `log="ln"`. Defaults to 1e-6.
        n_mfcc: int. Defaults to 20.
        deltas: int. 0, 1 or 2. Defaults to 0.
    """

    kind: str = setting(
        "mel", flag="--features", choices=KINDS, search=choice(SEARCHED_KINDS),
        search_name="features",
        help="front end: " + "; ".join(f"{k}: {s.description}" for k, s in FRONTENDS.items()))
    sample_rate: int = 44100
    n_fft: int = setting(2048, flag="--n-fft", type="positive_int", help="FFT size (default 2048)",
                         search=choice([1024, 2048]), check=lambda v: v >= 16,
                         allowed="an integer >= 16")
    hop_length: int = setting(512, flag="--hop-length", type="positive_int",
                              help="hop in samples (default 512)", search=choice([256, 512]),
                              check=_positive, allowed="an integer >= 1")
    win_length: int | None = setting(None, flag="--win-length", type="positive_int",
                                     help="window length (default n_fft)")
    window: str = setting("hann", flag="--window", choices=WINDOWS, help="window (default hann)")
    center: bool = True
    pad_mode: str = "constant"
    n_mels: int = setting(128, flag="--n-mels", type="positive_int", help="Mel bands (default 128)",
                          search=choice([64, 128]), check=_positive, allowed="an integer >= 1",
                          when=("features", kinds_reading("n_mels")))
    fmin: float = setting(0.0, flag="--fmin", type=float,
                          help="lowest Mel frequency in Hz (default 0)")
    fmax: float | None = setting(None, flag="--fmax", type="optional_float",
                                 help="highest Mel frequency in Hz (default sample_rate/2)")
    mel_scale: str = setting("slaney", flag="--mel-scale", choices=MEL_SCALES,
                             help="Mel scale (default slaney, as librosa)")
    norm: str | None = setting("slaney", flag="--norm", choices=NORMS,
                               help="filter-bank normalisation (default slaney)")
    power: float = setting(2.0, flag="--power", type=float, choices=POWERS,
                           help="1 magnitude, 2 power (default 2)")
    log: str | None = setting("db", flag="--log", choices=LOGS,
                              help="log scaling (default db: 10 log10(max(S, 1e-10)))")
    top_db: float | None = setting(
        None, flag="--top-db", type=float,
        help="clip at this many dB below each clip's peak (default: no clipping)")
    ref: float | str = 1.0
    log_offset: float = 1e-6
    n_mfcc: int = setting(20, flag="--n-mfcc", type="positive_int",
                          help="MFCC coefficients (default 20)", search=choice([20, 40]),
                          check=_positive, allowed="an integer >= 1",
                          when=("features", kinds_reading("n_mfcc")))
    deltas: int = setting(0, flag="--deltas", type=int, choices=DELTAS,
                          help="MFCC delta orders appended (default 0)")

    def __post_init__(self):
        check_args(dataclasses.asdict(self), Esc50Error, "FeatureConfig")
        for name in ("fmin", "power", "log_offset"):
            self.set_field(name, float(getattr(self, name)))
        for name in ("fmax", "top_db"):
            if getattr(self, name) is not None:
                self.set_field(name, float(getattr(self, name)))
        if self.ref != "max":
            self.set_field("ref", float(self.ref))

    @property
    def spec(self) -> FrontendSpec:
        """The registry entry of `kind`."""
        return FRONTENDS[self.kind]

    def layer_kwargs(self) -> dict:
        """The settings the layer of `kind` reads, as its constructor's keyword arguments."""
        return {name: getattr(self, name) for name in self.spec.fields}

    @property
    def n_bins(self) -> int:
        """Size of the feature axis of the front end's output."""
        return self.spec.n_bins(self)

    def num_frames(self, n_samples: int) -> int:
        """Frames for a clip of ``n_samples`` samples (librosa's count).

        A kind that drops samples first (`kaldi_mel`'s pre-emphasis) frames
        the shorter clip.
        """
        return num_frames(n_samples - self.spec.samples_dropped, self.n_fft, self.hop_length,
                          self.center)
