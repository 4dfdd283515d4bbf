"""Audio decoding: exact PCM, bit depths, formats, channels, resampling, errors."""

import numpy as np
import pytest
import soundfile as sf

from esc50tf.data.audio import fix_length, load_audio, load_clip
from esc50tf.errors import Esc50Error


def _pcm(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(-32768, 32768, size=n, dtype=np.int64).astype(np.int16)
    x[:2] = [-32768, 32767]  # the extremes must survive too
    return x


def test_int16_wav_round_trip_is_exact(tmp_path):
    pcm = _pcm()
    path = tmp_path / "a.wav"
    sf.write(path, pcm, 44100, subtype="PCM_16")
    out = load_clip(path, 44100, len(pcm))
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, pcm)


@pytest.mark.parametrize(
    "fmt,subtype,exact",
    [
        ("WAV", "PCM_24", True),
        ("WAV", "PCM_32", True),
        ("WAV", "FLOAT", True),
        ("WAV", "DOUBLE", True),
        ("FLAC", "PCM_16", True),
        ("FLAC", "PCM_24", True),
        ("WAV", "PCM_U8", False),
    ],
)
def test_bit_depths_and_lossless_formats(tmp_path, fmt, subtype, exact):
    pcm = _pcm(seed=1)
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, pcm.astype(np.float64) / 32768.0, 22050, format=fmt, subtype=subtype)
    out = load_clip(path, 22050, len(pcm))
    if exact:
        # 16-bit values stored at 24/32-bit or float depth are exactly representable.
        np.testing.assert_array_equal(out, pcm)
    else:
        # 8-bit keeps 8 bits: error below one 8-bit step (256 int16 units).
        assert np.max(np.abs(out.astype(np.int32) - pcm)) <= 256


def test_ogg_vorbis_decodes_close_to_source(tmp_path):
    t = np.arange(22050) / 22050
    x = 0.5 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "a.ogg"
    sf.write(path, x, 22050, format="OGG", subtype="VORBIS")
    y, sr = load_audio(path)
    assert sr == 22050
    y = fix_length(y, len(x))
    snr = 10 * np.log10(np.sum(x**2) / np.sum((x - y) ** 2))
    assert snr > 20


def test_multichannel_is_mixed_to_mono(tmp_path):
    n = 1000
    left = np.full(n, 0.5)
    right = np.full(n, -0.25)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 8000, subtype="PCM_16")
    y, _ = load_audio(path)
    assert y.shape == (n,)
    np.testing.assert_allclose(y, 0.125, atol=1 / 32768)
    quad = tmp_path / "quad.wav"
    sf.write(quad, np.stack([left, right, left, right], axis=1), 8000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(quad)[0], 0.125, atol=1e-6)


def _peak_hz(x, sr):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spec) * sr / len(x)


def test_resampling_preserves_length_and_tone(tmp_path):
    sr_in, sr_out, f0 = 48000, 44100, 1000.0
    t = np.arange(sr_in) / sr_in
    path = tmp_path / "tone.wav"
    sf.write(path, 0.5 * np.sin(2 * np.pi * f0 * t), sr_in, subtype="FLOAT")
    y, sr = load_audio(path, sample_rate=sr_out)
    assert sr == sr_out
    assert len(y) == sr_out  # 1 s stays 1 s
    assert abs(_peak_hz(y, sr_out) - f0) <= 1.0  # 1 Hz bins
    np.testing.assert_allclose(np.sqrt(np.mean(y[1000:-1000] ** 2)), 0.5 / np.sqrt(2), rtol=0.01)


def test_resampling_is_anti_aliased(tmp_path):
    # A 7 kHz tone cannot exist at 8 kHz (Nyquist 4 kHz): a proper resampler
    # removes it instead of folding it down to 1 kHz.
    sr_in = 32000
    t = np.arange(sr_in) / sr_in
    path = tmp_path / "high.wav"
    sf.write(path, 0.5 * np.sin(2 * np.pi * 7000 * t), sr_in, subtype="FLOAT")
    y, _ = load_audio(path, sample_rate=8000)
    rms = np.sqrt(np.mean(y[100:-100] ** 2))
    assert 20 * np.log10(rms / (0.5 / np.sqrt(2))) < -60


def test_pad_and_crop(tmp_path):
    pcm = _pcm(n=100)
    path = tmp_path / "short.wav"
    sf.write(path, pcm, 8000, subtype="PCM_16")
    padded = load_clip(path, 8000, 150)
    np.testing.assert_array_equal(padded[:100], pcm)
    assert not padded[100:].any()
    np.testing.assert_array_equal(load_clip(path, 8000, 60), pcm[:60])


@pytest.mark.parametrize("content,expect", [
    (None, "no such audio file"),
    (b"", "empty"),
    (b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 4, "cannot decode"),
    (b"this is not audio at all" * 20, "cannot decode"),
])
def test_bad_files_raise_naming_the_file(tmp_path, content, expect):
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(Esc50Error) as err:
        load_audio(path)
    assert str(path) in str(err.value)
    assert expect in str(err.value)


def _cut(tmp_path, fmt, keep):
    """Writes a 1 s noise file in `fmt` and keeps `keep(size)` of its bytes."""
    x = 0.3 * np.random.default_rng(3).standard_normal(8000)
    whole = tmp_path / f"whole.{fmt.lower()}"
    sf.write(whole, x, 8000, format=fmt)
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(data[:keep(len(data))])
    return cut


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG"])
@pytest.mark.parametrize("keep", [lambda n: 60, lambda n: n // 2, lambda n: n - 3],
                         ids=["60 bytes", "half", "last 3 bytes gone"])
def test_truncated_files_are_refused_naming_the_file(tmp_path, fmt, keep):
    cut = _cut(tmp_path, fmt, keep)
    with pytest.raises(Esc50Error) as err:
        load_clip(cut, 8000, 8000)
    assert str(cut) in str(err.value)
    assert "truncated" in str(err.value) or "cannot decode" in str(err.value)


def test_truncated_wav_says_how_much_is_missing(tmp_path):
    cut = _cut(tmp_path, "WAV", lambda n: 60)  # 44-byte header + 8 samples
    with pytest.raises(Esc50Error, match="declares 8000 frames, only 8 are present"):
        load_audio(cut)


def test_wav_with_a_streaming_placeholder_size_still_reads(tmp_path):
    # Writers that stream set the data size to 0xFFFFFFFF: "until the end of the file".
    path = tmp_path / "stream.wav"
    sf.write(path, _pcm(n=800), 8000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = data.index(b"data") + 4
    data[at:at + 4] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    np.testing.assert_array_equal(load_clip(path, 8000, 800), _pcm(n=800))


def test_clip_stats_flag_silence_constants_and_clipping():
    from esc50tf.data.audio import clip_stats

    noise = 0.1 * np.random.default_rng(0).standard_normal((8000, 1))
    assert clip_stats(noise, 8000) == {"sample_rate": 8000, "seconds": 1.0, "constant": False,
                                       "silent": False, "clipped_share": 0.0}
    assert clip_stats(np.zeros((800, 2)), 8000)["silent"]
    dc = clip_stats(np.full((800, 1), 0.25), 8000)
    assert dc["constant"] and not dc["silent"]
    hot = np.clip(12 * noise, -1, 1)
    assert clip_stats(hot, 8000)["clipped_share"] > 0.3
    burst = noise.copy()
    burst[:400] = 1.0  # one loud moment at the start is not "clipped throughout"
    assert clip_stats(burst, 8000)["clipped_share"] == 0.0


def _write_stdlib_wave(path, pcm, rate):
    """Python's `wave` module: the plain 44-byte header the ESC-50 clips have."""
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())


def _write_with_tags(path, pcm, rate):
    """libsndfile with INFO tags, as Audacity's exports write a LIST chunk."""
    with sf.SoundFile(path, "w", rate, 1, subtype="PCM_16") as f:
        f.title, f.artist, f.software = "cow", "freesound user", "Audacity"
        f.write(pcm)


def _write_extensible(path, pcm, rate):
    """WAVE_FORMAT_EXTENSIBLE, as recorders and editors write 24-bit files."""
    sf.write(path, pcm.astype(np.int32) << 16, rate, format="WAVEX", subtype="PCM_24")


@pytest.mark.parametrize("writer", [_write_stdlib_wave, _write_with_tags, _write_extensible])
def test_wavs_as_other_tools_write_them_read_exactly_and_a_cut_is_named(tmp_path, writer):
    pcm = _pcm(n=8000, seed=4)
    path = tmp_path / "clip.wav"
    writer(path, pcm, 8000)
    raw = path.read_bytes()
    if writer is _write_stdlib_wave:  # the layout of the real ESC-50 files
        assert len(raw) == 44 + 2 * len(pcm) and raw[12:16] == b"fmt " and raw[36:40] == b"data"
    elif writer is _write_with_tags:
        assert b"LIST" in raw and b"INFO" in raw
    else:
        assert raw[20:22] == b"\xfe\xff"  # format tag 0xFFFE
    np.testing.assert_array_equal(load_clip(path, 8000, len(pcm)), pcm)
    cut = tmp_path / "cut.wav"
    data_at = raw.index(b"data") + 8
    cut.write_bytes(raw[: data_at + (len(raw) - data_at) // 2])
    with pytest.raises(Esc50Error, match=r"cut\.wav: truncated: the WAV(EX)? header declares "
                                         r"8000 frames, only 4000 are present"):
        load_clip(cut, 8000, len(pcm))
