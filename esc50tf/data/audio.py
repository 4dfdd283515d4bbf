"""Reading audio files: decode, mix to mono, resample, fix the length.

Decoding uses libsndfile through `soundfile` (WAV of any common bit depth,
FLAC, OGG/Vorbis, and MP3 with libsndfile >= 1.1). Resampling uses `soxr`
(the SoX resampler: band-limited, anti-aliased, fast). Neither imports
TensorFlow, so this module runs in plain worker processes.

Example:
>>> pcm = load_clip("dog.wav", sample_rate=44100, num_samples=220500)
>>> pcm.dtype, pcm.shape
(dtype('int16'), (220500,))
"""

from __future__ import annotations

import os

import numpy as np

from esc50tf.errors import Esc50Error

INT16_SCALE = 32768.0


def load_audio(path, sample_rate=None):
    """Decodes an audio file to mono float32 in [-1, 1].

    Args:
        path: str or path-like. The file to read.
        sample_rate: int or None. Resample to this rate when the file's rate
            differs. None keeps the file's own rate.

    Returns:
        (waveform, sample_rate): a float32 numpy array `[samples]` and the
        rate it is at.

    Raises:
        Esc50Error: the file is missing, empty, unreadable or not audio; the
            message names the file.
    """
    import soundfile as sf

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise Esc50Error(f"{path}: no such audio file")
    if os.path.getsize(path) == 0:
        raise Esc50Error(f"{path}: file is empty (0 bytes)")
    try:
        # float64 keeps 24- and 32-bit integer PCM exact until we quantise.
        data, file_rate = sf.read(path, dtype="float64", always_2d=True)
    except Exception as err:  # soundfile raises several types for bad files
        raise Esc50Error(f"{path}: cannot decode audio ({err})") from None
    if data.shape[0] == 0:
        raise Esc50Error(f"{path}: audio has no samples")
    if not np.all(np.isfinite(data)):
        raise Esc50Error(f"{path}: audio contains NaN or infinite samples")
    # [samples, channels] -> [samples]: equal-weight mix of all channels.
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if sample_rate is not None and int(sample_rate) != int(file_rate):
        mono = resample(mono, file_rate, sample_rate)
        file_rate = int(sample_rate)
    return mono.astype(np.float32), int(file_rate)


def resample(waveform, orig_rate, target_rate):
    """Band-limited resampling with soxr ('VHQ' quality).

    Args:
        waveform: 1-D float numpy array.
        orig_rate: int. Its sample rate.
        target_rate: int. The wanted rate.

    Returns:
        A 1-D float64 array of `round(len * target / orig)` samples.
    """
    import soxr

    if orig_rate <= 0 or target_rate <= 0:
        raise Esc50Error(
            f"sample rates must be positive, got {orig_rate} -> {target_rate}"
        )
    if orig_rate == target_rate:
        return np.asarray(waveform, dtype=np.float64)
    return soxr.resample(
        np.asarray(waveform, dtype=np.float64), orig_rate, target_rate, quality="VHQ"
    )


def fix_length(waveform, num_samples):
    """Zero-pads at the end or crops from the start to exactly `num_samples`."""
    n = waveform.shape[0]
    if n == num_samples:
        return waveform
    if n > num_samples:
        return waveform[:num_samples]
    return np.pad(waveform, (0, num_samples - n))


def to_int16(waveform):
    """Quantises float samples in [-1, 1] to int16 (round to nearest, clip).

    16-bit files read as float are k / 32768 exactly, so this inverts the read
    bit for bit: a 16-bit file at the target rate round-trips unchanged.
    """
    scaled = np.rint(np.asarray(waveform, dtype=np.float64) * INT16_SCALE)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def load_clip(path, sample_rate, num_samples):
    """Decodes a file to the fixed-format int16 PCM that TFRecords store.

    Args:
        path: str or path-like. The audio file.
        sample_rate: int. Target rate; resampled only if the file differs.
        num_samples: int. Output length (pad with zeros or crop the end).

    Returns:
        int16 numpy array `[num_samples]`.
    """
    waveform, _ = load_audio(path, sample_rate=sample_rate)
    return to_int16(fix_length(waveform, num_samples))
