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
import struct

import numpy as np

from esc50tf.errors import Esc50Error

INT16_SCALE = 32768.0


# Sample rates a real recording's header can declare (telephone speech is 8 kHz;
# ultrasonic recorders reach 768 kHz); outside them the header is damaged.
MIN_FILE_RATE = 1000
MAX_FILE_RATE = 768000

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
        Esc50Error: the file is missing, empty, unreadable, not audio or
            truncated (see `read_checked`); the message names the file.
    """
    path = os.fspath(path)
    data, file_rate = read_checked(path)
    rate = file_rate if sample_rate is None else int(sample_rate)
    return _mono_at(data, file_rate, rate).astype(np.float32), rate


def _mono_at(data, file_rate, sample_rate):
    """`[samples, channels]` -> `[samples]` (equal-weight mix of all channels) at `sample_rate`."""
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if int(sample_rate) != int(file_rate):
        mono = resample(mono, file_rate, sample_rate)
    return mono


def read_checked(path):
    """Decodes a whole file and checks that nothing the container declares is missing.

    libsndfile decodes a WAV whose data chunk is cut short (a partial copy or
    download) without complaint, returning only the samples present. Here the
    frames the container declares (the WAV data chunk's size, FLAC's
    STREAMINFO count) are compared with the frames decoded, and an Ogg stream
    must end with a complete end-of-stream page; a shortfall is an error.

    Returns:
        (data, sample_rate): float64 `[samples, channels]` and the file's rate.

    Raises:
        Esc50Error: missing, empty, undecodable, truncated or non-finite audio,
            naming the file.
    """
    import soundfile as sf

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise Esc50Error(f"{path}: no such audio file")
    if os.path.getsize(path) == 0:
        raise Esc50Error(f"{path}: file is empty (0 bytes)")
    try:
        info = sf.info(path)
        # float64 keeps 24- and 32-bit integer PCM exact until we quantise.
        data, file_rate = sf.read(path, dtype="float64", always_2d=True)
    except Exception as err:  # soundfile raises several types for bad files
        raise Esc50Error(f"{path}: cannot decode audio ({err})") from None
    # WAVEX: WAVE_FORMAT_EXTENSIBLE (24-bit and multichannel files), the same RIFF layout;
    # libsndfile's own frame count is what is present, not what was declared.
    declared = _wav_declared_frames(path) if info.format in ("WAV", "WAVEX") else info.frames
    if declared and data.shape[0] < declared:
        missing = 100.0 * (declared - data.shape[0]) / declared
        raise Esc50Error(
            f"{path}: truncated: the {info.format} header declares {declared} frames, "
            f"only {data.shape[0]} are present ({missing:.0f}% missing; file cut short?)"
        )
    if info.format == "OGG" and not _ogg_ends_cleanly(path):
        raise Esc50Error(
            f"{path}: truncated: the Ogg stream has no complete end-of-stream page "
            "(file cut short?)"
        )
    if not MIN_FILE_RATE <= file_rate <= MAX_FILE_RATE:
        raise Esc50Error(
            f"{path}: its header declares {file_rate} Hz; audio is recorded at "
            f"{MIN_FILE_RATE}..{MAX_FILE_RATE} Hz, so the header is wrong (resampling from it "
            "would make up a signal)")
    if data.shape[0] == 0:
        raise Esc50Error(f"{path}: audio has no samples")
    if not np.all(np.isfinite(data)):
        raise Esc50Error(f"{path}: audio contains NaN or infinite samples")
    return data, int(file_rate)


def _wav_declared_frames(path):
    """Frames the RIFF `data` chunk declares, or None when it says nothing usable.

    None for RF64/W64 and for streaming writers' placeholder sizes (0 or
    0xFFFFFFFF), which mean "until the end of the file".
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RIFX"):
            return None
        order = "<" if head[:4] == b"RIFF" else ">"
        block_align = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            chunk_id, size = chunk[:4], struct.unpack(order + "I", chunk[4:])[0]
            if chunk_id == b"fmt ":
                fmt = f.read(min(size, 16))
                if len(fmt) < 14:
                    return None
                block_align = struct.unpack(order + "H", fmt[12:14])[0]
                f.seek(size - len(fmt) + (size & 1), os.SEEK_CUR)
            elif chunk_id == b"data":
                if not block_align or size in (0, 0xFFFFFFFF):
                    return None
                return size // block_align
            else:
                f.seek(size + (size & 1), os.SEEK_CUR)


def _ogg_ends_cleanly(path):
    """True when the file's last Ogg page is complete and flagged end-of-stream."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(max(0, size - 65307 - 27))  # the largest page fits in this tail
        tail = f.read()
    start = tail.rfind(b"OggS")
    if start < 0 or len(tail) - start < 27:
        return False
    header_type, segments = tail[start + 5], tail[start + 26]
    table = tail[start + 27:start + 27 + segments]
    if len(table) < segments:
        return False
    page_end = start + 27 + segments + sum(table)
    return bool(header_type & 0x04) and page_end == len(tail)


def clip_stats(data, sample_rate):
    """What a build records about a decoded file, to flag suspicious clips.

    Args:
        data: float `[samples, channels]` as `read_checked` returns it.
        sample_rate: int. The file's own rate.

    Returns:
        dict: `sample_rate`, `seconds`, `constant` (every sample equal),
        `silent` (every sample zero) and `clipped_share` (share of samples at
        full scale, counted only when clipping runs through the clip: in at
        least half of ten equal segments; else 0.0).
    """
    peak_hit = np.abs(data).max(axis=1) >= CLIP_LEVEL  # [samples]
    segments = np.array_split(peak_hit, 10) if len(peak_hit) >= 10 else [peak_hit]
    throughout = sum(bool(s.any()) for s in segments) >= len(segments) / 2
    return {
        "sample_rate": int(sample_rate),
        "seconds": round(data.shape[0] / sample_rate, 3),
        "constant": bool(np.all(data == data[0, 0])),
        "silent": bool(not np.any(data)),
        "clipped_share": round(float(peak_hit.mean()), 4) if throughout else 0.0,
    }


# A sample this close to full scale is counted as clipped (int16 +32767 is 0.99997).
CLIP_LEVEL = 0.999


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


def load_clip(path, sample_rate, num_samples, with_stats=False):
    """Decodes a file to the fixed-format int16 PCM that TFRecords store.

    Args:
        path: str or path-like. The audio file.
        sample_rate: int. Target rate; resampled only if the file differs.
        num_samples: int. Output length (pad with zeros or crop the end).

        with_stats: bool. Also return `clip_stats` of the file as decoded.

    Returns:
        int16 numpy array `[num_samples]`, and with `with_stats` the stats dict.
    """
    data, file_rate = read_checked(path)
    stats = clip_stats(data, file_rate) if with_stats else None
    pcm = to_int16(fix_length(_mono_at(data, file_rate, sample_rate), num_samples))
    return (pcm, stats) if with_stats else pcm
