"""Filter maths of the front end, numpy only: Mel scale and filterbank, windows, DCT, deltas.

These are the constant matrices the spectrogram layers compute once when they
are built and keep as non-trainable weights, and the frame count librosa
gives. Each function re-implements the librosa / scipy function it names, and
the tests compare them with it. Nothing here imports Keras or TensorFlow.

Example:

>>> mel_filterbank(22050, 1024, n_mels=64).shape   # [n_mels, n_fft // 2 + 1]
(64, 513)
>>> num_frames(22050, 1024, 256)                    # 1 + 22050 // 256
87
"""

from __future__ import annotations

import math
import warnings

import numpy as np

__all__ = [
    "AMIN",
    "DELTA_WIDTH",
    "dct_matrix",
    "delta_weights",
    "hz_to_mel",
    "mel_bands",
    "mel_filterbank",
    "mel_frequencies",
    "mel_to_hz",
    "num_frames",
    "window_array",
]

AMIN = 1e-10
"""Floor of the power spectrogram before the log, as librosa's ``power_to_db``."""

DELTA_WIDTH = 9  # librosa.feature.delta's default window


def hz_to_mel(frequencies, mel_scale="slaney"):
    """Converts Hz to mels, as ``librosa.hz_to_mel``.

    Args:
        frequencies: float or array. Frequencies in Hz.
        mel_scale: str. ``"htk"`` (2595 log10(1 + f / 700)) or ``"slaney"``
            (linear below 1 kHz, logarithmic above; librosa's default).

    Returns:
        float64 numpy array of mels, same shape as ``frequencies``.
    """
    f = np.asarray(frequencies, dtype=np.float64)
    if mel_scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_part = min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep
    return np.where(f >= min_log_hz, log_part, f / f_sp)


def mel_to_hz(mels, mel_scale="slaney"):
    """Converts mels to Hz, the inverse of :func:`hz_to_mel` (``librosa.mel_to_hz``)."""
    m = np.asarray(mels, dtype=np.float64)
    if mel_scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(
        m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m
    )


def mel_frequencies(n_mels, fmin, fmax, mel_scale="slaney"):
    """``n_mels`` frequencies (Hz) evenly spaced in mel between ``fmin`` and ``fmax``."""
    mels = np.linspace(
        hz_to_mel(fmin, mel_scale), hz_to_mel(fmax, mel_scale), int(n_mels)
    )
    return mel_to_hz(mels, mel_scale)


def mel_filterbank(
    sample_rate, n_fft, n_mels=128, fmin=0.0, fmax=None, mel_scale="slaney",
    norm="slaney",
):
    """Mel filterbank, the same matrix as ``librosa.filters.mel``.

    Triangles are linear in Hz between mel-spaced edges; ``norm="slaney"``
    scales each triangle to unit area (2 / bandwidth), ``None`` leaves peaks at
    1.

    Args:
        sample_rate: int. Sampling rate in Hz.
        n_fft: int. FFT size; the filterbank has ``n_fft // 2 + 1`` columns.
        n_mels: int. Number of Mel bands. Defaults to 128.
        fmin: float. Lowest edge in Hz. Defaults to 0.
        fmax: float or None. Highest edge in Hz; None means
            ``sample_rate / 2``. Defaults to None.
        mel_scale: str. ``"slaney"`` or ``"htk"``. Defaults to ``"slaney"``.
        norm: str or None. ``"slaney"`` or None. Defaults to ``"slaney"``.

    Returns:
        float32 numpy array ``[n_mels, n_fft // 2 + 1]``.
    """
    if fmax is None:
        fmax = sample_rate / 2.0
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mel_f = mel_frequencies(n_mels + 2, fmin, fmax, mel_scale)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if norm == "slaney":
        weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    if not np.all((mel_f[:-2] == 0) | (weights.max(axis=1) > 0)):
        warnings.warn(
            f"Empty filters in the Mel filterbank (n_mels={n_mels}, "
            f"n_fft={n_fft}, sample_rate={sample_rate}): some bands will be "
            "silent. Use fewer Mel bands or a larger n_fft.",
            stacklevel=2,
        )
    return weights.astype(np.float32)


def window_array(window, win_length, n_fft=None):
    """Periodic analysis window, zero-padded to ``n_fft`` and centred (librosa).

    Args:
        window: str. ``"hann"`` or ``"hamming"`` (periodic, as
            ``scipy.signal.get_window(window, win_length, fftbins=True)``).
        win_length: int. Window length in samples.
        n_fft: int or None. Pad the window to this length, centred, as
            ``librosa.util.pad_center``. None means no padding.

    Returns:
        float64 numpy array ``[n_fft]`` (or ``[win_length]``).
    """
    n = np.arange(win_length, dtype=np.float64)
    a0 = {"hann": 0.5, "hamming": 0.54}[window]
    w = a0 - (1.0 - a0) * np.cos(2.0 * np.pi * n / win_length)
    if n_fft is not None and n_fft > win_length:
        left = (n_fft - win_length) // 2
        w = np.pad(w, (left, n_fft - win_length - left))
    return w


def dct_matrix(n_in, n_out):
    """Orthonormal DCT-II basis ``[n_in, n_out]`` (scipy ``dct(type=2, norm="ortho")``).

    ``x @ dct_matrix(n, k)`` gives the first ``k`` DCT coefficients of ``x``
    along its last axis, as librosa's MFCC.
    """
    n = np.arange(n_in, dtype=np.float64)
    k = np.arange(n_out, dtype=np.float64)[:, None]
    basis = np.cos(np.pi * k * (2.0 * n + 1.0) / (2.0 * n_in)) * np.sqrt(2.0 / n_in)
    basis[0] *= np.sqrt(0.5)
    return basis.T


def delta_weights(order, width=DELTA_WIDTH):
    """Savitzky-Golay weights of ``librosa.feature.delta(order=order)``.

    A polynomial of degree ``order`` is fitted by least squares to ``width``
    frames and its ``order``-th derivative is taken at the centre frame.

    Returns:
        float64 numpy array ``[width]``: ``delta[t] = sum_j w[j] x[t - h + j]``
        with ``h = width // 2``.
    """
    half = width // 2
    pos = np.arange(-half, half + 1, dtype=np.float64)
    vander = pos[:, None] ** np.arange(order + 1)[None, :]
    return math.factorial(order) * np.linalg.pinv(vander)[order]


def num_frames(n_samples, n_fft, hop_length, center=True):
    """Number of STFT frames librosa produces for ``n_samples`` samples.

    ``1 + n_samples // hop_length`` when ``center`` (and ``n_fft`` is even).
    """
    padded = n_samples + (2 * (n_fft // 2) if center else 0)
    return 1 + (padded - n_fft) // hop_length


def mel_bands(mel, groups=8):
    """Splits a filterbank ``[bins, n_mels]`` into ``groups`` runs of adjacent bands.

    Returns ``(lo, hi, first, stop)`` per run: bands ``first:stop`` are zero
    outside bins ``lo:hi``, so ``s[..., lo:hi] @ mel[lo:hi, first:stop]``
    equals ``(s @ mel)[..., first:stop]`` up to float summation order.
    """
    out = []
    for bands in np.array_split(np.arange(mel.shape[1]), min(groups, mel.shape[1])):
        rows = np.flatnonzero((mel[:, bands] != 0).any(axis=1))
        lo, hi = (int(rows[0]), int(rows[-1]) + 1) if rows.size else (0, 1)
        out.append((lo, hi, int(bands[0]), int(bands[-1]) + 1))
    return out
