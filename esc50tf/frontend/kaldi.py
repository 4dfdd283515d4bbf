"""The Kaldi-style log-Mel front end of EfficientAT (Schmid et al., ICASSP 2023).

    waveform [b, samples] at 32 kHz
    -> pre-emphasis y[t] = x[t + 1] - 0.97 x[t]          [b, samples - 1]
    -> centred frames (reflect padding of n_fft // 2), a symmetric Hann window
       of `win_length` samples centred in `n_fft`, power spectrum
                                                          [b, frames, n_fft // 2 + 1]
    -> Kaldi Mel filterbank (triangles linear in Kaldi's mel scale
       1127 ln(1 + f / 700), zero weight on the Nyquist bin)   [b, frames, n_mels]
    -> ln(S + 1e-5), then (x + 4.5) / 5

`frames = 1 + (samples - 1) // hop_length`: the pre-emphasis drops one
sample before the STFT. The filterbank is the one
`torchaudio.compliance.kaldi.get_mel_banks` makes without VTLN warping
(written here in numpy from Kaldi's definition, `mel-computations.cc`).

Training-time band-edge jitter (`fmin_jitter`, `fmax_jitter`; the
augmentation `mel_edges` of `esc50tf.augment`): in a training call the
filterbank is rebuilt, in the graph, for edges drawn once per batch as
EfficientAT's `AugmentMelSTFT` draws them. Inference never moves them.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from esc50tf.frontend.config import check_args, check_edge_jitter, kaldi_fmax
from esc50tf.frontend.filters import num_frames
from esc50tf.frontend.spectrogram import MelSpectrogram

__all__ = ["KaldiMelSpectrogram", "kaldi_mel_filterbank", "kaldi_mel_filterbank_ops",
           "symmetric_hann"]

PREEMPHASIS = 0.97
LOG_OFFSET = 1e-5
# EfficientAT's "fast normalization": (log-Mel + SHIFT) / SCALE.
SHIFT = 4.5
SCALE = 5.0


def _kaldi_mel(f):
    # float32 steps, the log correctly rounded (float64, then float32) as torch's is
    ratio = np.float32(1.0) + f / np.float32(700.0)
    return np.float32(1127.0) * np.log(ratio.astype(np.float64)).astype(np.float32)


def kaldi_mel_filterbank(sample_rate, n_fft, n_mels, fmin=0.0, fmax=None):
    """Kaldi's triangular Mel filterbank, `[n_fft // 2 + 1, n_mels]`.

    Band `m` rises linearly in Kaldi mel (`1127 ln(1 + f / 700)`) from
    `fmin + m * d` to its centre `fmin + (m + 1) * d` and falls to
    `fmin + (m + 2) * d` (`d` is the mel span over `n_mels + 1`), evaluated
    at the FFT bin frequencies `k * sample_rate / n_fft` for `k < n_fft // 2`;
    peaks are 1 (no area normalisation) and the Nyquist bin gets weight 0.
    Computed in float32 in the order torchaudio computes it, so the weights
    equal torchaudio's bit for bit (a float64 computation is up to 1e-5 away).

    Args:
        sample_rate: int. Hz.
        n_fft: int. FFT size (even).
        n_mels: int. Number of bands.
        fmin: float. Lowest edge in Hz.
        fmax: float or None. Highest edge in Hz; None or <= 0 counts from
            the Nyquist frequency down (Kaldi's convention).
    """
    if n_fft % 2:
        raise ValueError(f"kaldi_mel_filterbank: n_fft={n_fft} must be even")
    nyquist = sample_rate / 2.0
    fmax = nyquist if fmax is None else float(fmax)
    if fmax <= 0:
        fmax += nyquist
    if not 0 <= fmin < fmax <= nyquist:
        raise ValueError(f"kaldi_mel_filterbank: need 0 <= fmin < fmax <= {nyquist:g}; "
                         f"got fmin={fmin}, fmax={fmax}")
    f32 = np.float32
    low = 1127.0 * math.log(1.0 + fmin / 700.0)  # scalars in double precision, as Kaldi's
    high = 1127.0 * math.log(1.0 + fmax / 700.0)
    delta = (high - low) / (n_mels + 1)
    band = np.arange(n_mels, dtype=f32)[None, :]  # [1, n_mels]
    left = f32(low) + band * f32(delta)
    centre = f32(low) + (band + f32(1)) * f32(delta)
    right = f32(low) + (band + f32(2)) * f32(delta)
    mel = _kaldi_mel(f32(sample_rate / n_fft) * np.arange(n_fft // 2, dtype=f32))[:, None]
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    weights = np.maximum(f32(0), np.minimum(up, down))  # [n_fft // 2, n_mels]
    return np.concatenate([weights, np.zeros((1, n_mels), f32)], axis=0).astype(np.float64)


def kaldi_mel_filterbank_ops(sample_rate, n_fft, n_mels, fmin, fmax):
    """`kaldi_mel_filterbank` for band edges that are tensors (keras.ops, float32).

    The same triangles, built in the graph so that a training step can draw
    its own edges (`KaldiMelSpectrogram(fmin_jitter=..., fmax_jitter=...)`);
    within 2e-5 of the numpy filterbank for the same edges (float32 logs).

    Args:
        sample_rate, n_fft, n_mels: ints, as for `kaldi_mel_filterbank`.
        fmin, fmax: float32 scalar tensors. Band edges in Hz (`fmax` > 0).

    Returns:
        float32 tensor `[n_fft // 2 + 1, n_mels]` (the Nyquist row zero).
    """
    ops = keras.ops
    f32 = np.float32
    mel_bins = _kaldi_mel(f32(sample_rate / n_fft) * np.arange(n_fft // 2, dtype=f32))[:, None]

    def mel(f):
        return 1127.0 * ops.log(1.0 + f / 700.0)

    low, high = mel(fmin), mel(fmax)
    delta = (high - low) / float(n_mels + 1)
    band = ops.arange(n_mels, dtype="float32")[None, :]
    left, centre, right = low + band * delta, low + (band + 1.0) * delta, low + (band + 2.0) * delta
    bins = ops.convert_to_tensor(mel_bins, "float32")
    weights = ops.maximum(0.0, ops.minimum((bins - left) / (centre - left),
                                            (right - bins) / (right - centre)))
    return ops.concatenate([weights, ops.zeros((1, n_mels), "float32")], axis=0)


def symmetric_hann(win_length, n_fft):
    """Symmetric Hann window (`torch.hann_window(periodic=False)`), centred in `n_fft`."""
    n = np.arange(win_length, dtype=np.float64)
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / max(win_length - 1, 1))
    left = (n_fft - win_length) // 2
    return np.pad(w, (left, n_fft - win_length - left))


@keras.saving.register_keras_serializable(package="esc50tf")
class KaldiMelSpectrogram(MelSpectrogram):
    """EfficientAT's normalised Kaldi-style log-Mel, time-major `[b, frames, n_mels]`.

    Equals the evaluation-mode output of the reference's `AugmentMelSTFT`
    (transposed to time-major): pre-emphasis 0.97, centred reflect-padded
    frames with a symmetric Hann window of `win_length` inside `n_fft`,
    power spectrum, Kaldi Mel filterbank, `(ln(S + 1e-5) + 4.5) / 5`. The
    reference's training-time fmin/fmax jitter is this layer's, in training
    calls only (`fmin_jitter`, `fmax_jitter`); its masking is SpecAugment
    (`esc50tf.augment`).

    Args:
        sample_rate: int. Hz. Defaults to 32000.
        n_fft: int. Defaults to 1024.
        hop_length: int. Defaults to 320.
        win_length: int. Defaults to 800.
        n_mels: int. Defaults to 128.
        fmin: float. Defaults to 0.
        fmax: float or None. None: `sample_rate / 2 - 1000` (the reference's
            default: Nyquist less half its 2000 Hz jitter range).
        stft_impl: str. "rfft" or "matmul" (export). Defaults to "rfft".
        fmin_jitter: int. Training calls raise `fmin` by a whole number of Hz
            drawn uniformly in `[0, fmin_jitter)`, once per batch (the
            reference's `fmin_aug_range`; its ESC-50 recipe: 10). 0 or 1: off.
        fmax_jitter: int. Training calls move `fmax` by `fmax_jitter // 2 - k`
            Hz, `k` uniform in `[0, fmax_jitter)` (`fmax_aug_range`; 2000). 0 or 1: off.
        seed: int or None. Seed of the jitter's draws.
        **kwargs: Base layer arguments (`name`, `dtype`...).

    Example:
    >>> KaldiMelSpectrogram()(np.zeros((2, 32000), "float32")).shape
    TensorShape([2, 100, 128])
    """

    def __init__(self, sample_rate=32000, n_fft=1024, hop_length=320, win_length=800,
                 n_mels=128, fmin=0.0, fmax=None, stft_impl="rfft", fmin_jitter=0,
                 fmax_jitter=0, seed=None, **kwargs):
        for fixed in ("window", "center", "pad_mode", "power", "log", "top_db", "ref",
                      "log_offset", "mel_scale", "norm"):
            kwargs.pop(fixed, None)  # fixed by the reference; get_config of the base lists them
        check_args(dict(sample_rate=sample_rate, win_length=win_length, n_fft=n_fft),
                   ValueError, type(self).__name__)
        super().__init__(sample_rate=sample_rate, n_mels=n_mels, fmin=fmin, fmax=fmax,
                         mel_scale="htk", norm=None, n_fft=n_fft, hop_length=hop_length,
                         win_length=win_length, window="hann", center=True,
                         pad_mode="reflect", power=2.0, log="ln", log_offset=LOG_OFFSET,
                         stft_impl=stft_impl, **kwargs)
        check_edge_jitter(self.sample_rate, self.fmin, self.fmax, fmin_jitter, fmax_jitter,
                          ValueError, type(self).__name__)
        self.fmin_jitter = int(fmin_jitter)
        self.fmax_jitter = int(fmax_jitter)
        self.seed = seed
        if self.fmin_jitter > 1 or self.fmax_jitter > 1:
            self.seed_generator = keras.random.SeedGenerator(seed)

    def _constants(self):
        return {
            "window": symmetric_hann(self.win_length or self.n_fft, self.n_fft),
            "mel": kaldi_mel_filterbank(self.sample_rate, self.n_fft, self.n_mels,
                                        self.fmin, self.effective_fmax),
        }

    @property
    def effective_fmax(self):
        """`fmax`, or the reference's default `sample_rate / 2 - 1000` for None."""
        return kaldi_fmax(self.sample_rate, self.fmax)

    def _training_constants(self, weights):
        # EfficientAT's training-time jitter: one draw per batch, whole Hz,
        # fmin + U{0..fmin_jitter-1} and fmax + fmax_jitter // 2 - U{0..fmax_jitter-1}.
        if self.fmin_jitter <= 1 and self.fmax_jitter <= 1:
            return weights
        fmin = keras.ops.convert_to_tensor(self.fmin, "float32")
        fmax = keras.ops.convert_to_tensor(self.effective_fmax + self.fmax_jitter // 2,
                                           "float32")
        if self.fmin_jitter > 1:
            fmin = fmin + self._draw(self.fmin_jitter)
        if self.fmax_jitter > 1:
            fmax = fmax - self._draw(self.fmax_jitter)
        mel = kaldi_mel_filterbank_ops(self.sample_rate, self.n_fft, self.n_mels, fmin, fmax)
        return dict(weights, mel=keras.ops.cast(mel, weights["mel"].dtype))

    def _draw(self, n):
        """A whole number of Hz uniform in [0, n), float32."""
        k = keras.random.randint((), 0, n, dtype="int32", seed=self.seed_generator)
        return keras.ops.cast(k, "float32")

    def _compute(self, x, c, xp):
        x = x[..., 1:] - PREEMPHASIS * x[..., :-1]  # [..., samples - 1]
        return super()._compute(x, c, xp)

    def _head(self, s, c, xp):
        return (s + SHIFT) / SCALE

    def _frames(self, n_samples):
        return num_frames(n_samples - 1, self.n_fft, self.hop_length, True)

    def call(self, inputs, training=None):
        n = inputs.shape[-1]
        if n is not None and n < 2:
            raise ValueError(f"{type(self).__name__}: needs at least 2 samples, got {n}")
        return super().call(inputs, training=training)

    def get_config(self):
        config = super().get_config()
        for fixed in ("window", "center", "pad_mode", "power", "log", "top_db", "ref",
                      "log_offset", "mel_scale", "norm"):
            config.pop(fixed, None)
        config.update({"fmin_jitter": self.fmin_jitter, "fmax_jitter": self.fmax_jitter,
                       "seed": self.seed})
        return config
