"""Tests of the audio front end (esc50tf.frontend) and file featurisation.

librosa is the reference: every front end is compared with it numerically on
synthetic signals over a grid of sizes (kapre's practice).
"""

import json
import re

import keras
import librosa
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from esc50tf import frontend as F
from esc50tf.errors import Esc50Error

# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def make_signals(sample_rate, seconds=1.0, seed=0):
    """Tone with harmonics, exponential chirp, white noise: float32 [3, n].

    No added noise floor: bands the signals leave empty sit at float32
    round-off, as they do in clean synthetic audio.
    """
    rng = np.random.default_rng(seed)
    n = int(sample_rate * seconds)
    t = np.arange(n) / sample_rate
    tone = sum(0.4 / k * np.sin(2 * np.pi * 440 * k * t + k) for k in (1, 2, 3))
    f0, f1 = 60.0, 0.45 * sample_rate
    phase = 2 * np.pi * f0 * seconds / np.log(f1 / f0) * ((f1 / f0) ** (t / seconds) - 1)
    chirp = 0.5 * np.sin(phase) * np.hanning(n)
    noise = 0.1 * rng.standard_normal(n)
    return np.stack([tone, chirp, noise]).astype(np.float32)


def make_hard_signals(sample_rate, seconds=1.0, seed=0):
    """What real files hold and the signals above do not: float32 [4, n].

    Exact digital silence (every sample 0.0); a tone that stops after 40% of
    the clip and is zero-padded to its length (a short clip padded by
    build-tfrecords); a 1 kHz sine driven to 4x full scale and clipped at
    +-1.0, then quantised to int16 (a clipped recording); noise at full scale
    with its last quarter zero.
    """
    rng = np.random.default_rng(seed)
    n = int(sample_rate * seconds)
    t = np.arange(n) / sample_rate
    silence = np.zeros(n)
    padded = np.zeros(n)
    padded[: int(0.4 * n)] = 0.5 * np.sin(2 * np.pi * 440 * t[: int(0.4 * n)])
    clipped = np.round(np.clip(4.0 * np.sin(2 * np.pi * 1000 * t), -1.0, 1.0) * 32767) / 32768
    noise = np.clip(0.5 * rng.standard_normal(n), -1.0, 1.0)
    noise[3 * n // 4:] = 0.0
    return np.stack([silence, padded, clipped, noise]).astype(np.float32)


def silent_frames(y, cfg):
    """[clips, frames] True where a frame's window reads only zero samples
    (centred frames included, padding counted as zeros)."""
    pad = cfg.n_fft // 2 if cfg.center else 0
    padded = np.pad(y, [(0, 0), (pad, pad)]) if pad else y
    frames = cfg.num_frames(y.shape[-1])
    return np.stack([[not padded[c, f * cfg.hop_length:f * cfg.hop_length + cfg.n_fft].any()
                      for f in range(frames)] for c in range(len(y))])


FLOOR_DB = 80.0


def db_errors(ours, ref, top_db=FLOOR_DB):
    """Max and RMS |ours - ref| over every bin, both clamped at their clip's peak - `top_db`.

    Float32 FFTs leave bins far below a clip's peak at round-off, where the two
    sides differ by any number of dB; clamping both at the peak minus 80 dB
    (what librosa's `top_db=80` does) compares those bins as the floor, so a bin
    that one side puts above the floor and the other below still counts. NaN
    or -inf on our side fail here, as the clamp keeps them.
    """
    ours = np.asarray(ours, np.float64)
    ref = np.asarray(ref, np.float64)
    assert ours.shape == ref.shape
    assert not np.isnan(ours).any() and not np.isinf(ours).any()

    def clamp(x):
        peak = x.reshape(len(x), -1).max(axis=1)[:, None, None]
        return np.maximum(x, peak - top_db)

    err = np.abs(clamp(ours) - clamp(ref))
    return err.max(), np.sqrt(np.mean(err**2))


def lr_kwargs(cfg):
    """librosa keyword arguments of a FeatureConfig."""
    return dict(
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window=cfg.window,
        center=cfg.center,
        pad_mode=cfg.pad_mode,
    )


def lr_mel_db(y, cfg):
    """librosa's dB Mel, time-major [clips, frames, mels]."""
    mel = librosa.feature.melspectrogram(
        y=y, sr=cfg.sample_rate, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax,
        htk=cfg.mel_scale == "htk", norm=cfg.norm, power=cfg.power, **lr_kwargs(cfg),
    )
    ref = np.max if cfg.ref == "max" else cfg.ref
    to_db = librosa.amplitude_to_db if cfg.power == 1.0 else librosa.power_to_db
    # One clip at a time: ref=np.max and top_db are per clip in librosa.
    db = np.stack([to_db(m, ref=ref, top_db=cfg.top_db) for m in mel])
    return np.swapaxes(db, -1, -2)


def lr_stft_db(y, cfg):
    s = np.abs(librosa.stft(y, **lr_kwargs(cfg))) ** 2
    db = np.stack([librosa.power_to_db(c, top_db=cfg.top_db) for c in s])
    return np.swapaxes(db, -1, -2)


def lr_mfcc(y, cfg):
    mel_db = np.swapaxes(lr_mel_db(y, cfg), -1, -2)
    mfcc = librosa.feature.mfcc(S=mel_db, n_mfcc=cfg.n_mfcc)
    return np.swapaxes(mfcc, -1, -2)


def frontend(cfg):
    return F.build_frontend(cfg)


def run(layer, x):
    return keras.ops.convert_to_numpy(layer(x))


@pytest.fixture
def restore_policy():
    policy = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(policy)


# --------------------------------------------------------------------------
# FeatureConfig
# --------------------------------------------------------------------------


def test_config_defaults_are_librosas():
    cfg = F.FeatureConfig()
    assert (cfg.kind, cfg.sample_rate, cfg.n_fft, cfg.hop_length) == ("mel", 44100, 2048, 512)
    assert (cfg.win_length, cfg.window, cfg.center) == (None, "hann", True)
    assert cfg.pad_mode == "constant"
    assert (cfg.n_mels, cfg.fmin, cfg.fmax) == (128, 0.0, None)
    assert (cfg.mel_scale, cfg.norm) == ("slaney", "slaney")
    assert (cfg.power, cfg.log, cfg.top_db, cfg.n_mfcc, cfg.deltas) == (2.0, "db", None, 20, 0)


def test_config_round_trips_through_json():
    cfg = F.FeatureConfig(kind="mfcc", sample_rate=22050, n_fft=1024, hop_length=256,
                          win_length=800, window="hamming", pad_mode="reflect", n_mels=64,
                          fmin=20, fmax=8000, mel_scale="htk", norm=None, power=1.0,
                          top_db=80, ref="max", n_mfcc=13, deltas=2)
    again = F.FeatureConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert isinstance(again.fmin, float) and again.top_db == 80.0
    assert F.FeatureConfig.from_dict({}) == F.FeatureConfig()


@pytest.mark.parametrize(
    "field, value",
    [
        ("kind", "cqt"),
        ("sample_rate", 0),
        ("sample_rate", 22050.5),
        ("n_fft", 1),
        ("hop_length", 0),
        ("win_length", 4096),
        ("window", "blackman"),
        ("center", "yes"),
        ("pad_mode", "edge"),
        ("n_mels", 0),
        ("fmin", -1.0),
        ("fmax", 30000.0),
        ("mel_scale", "mel"),
        ("norm", 1),
        ("power", 3.0),
        ("log", "log10"),
        ("top_db", -10),
        ("ref", 0.0),
        ("log_offset", 0.0),
        ("deltas", 3),
    ],
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(Esc50Error, match=re.escape(f"{field}={value!r}") + ".*allowed"):
        F.FeatureConfig(**{field: value})


def test_config_rejects_inconsistent_values():
    with pytest.raises(Esc50Error, match="top_db.*log='db'"):
        F.FeatureConfig(log="ln", top_db=80.0)
    with pytest.raises(Esc50Error, match="n_mfcc=41.*n_mels=40"):
        F.FeatureConfig(kind="mfcc", n_mels=40, n_mfcc=41)
    with pytest.raises(Esc50Error, match="log=None.*MFCC"):
        F.FeatureConfig(kind="mfcc", log=None)
    with pytest.raises(Esc50Error, match="unknown setting.*n_mel\\b.*allowed: kind"):
        F.FeatureConfig.from_dict({"n_mel": 64})
    # Irrelevant for Mel features, so not an error there.
    assert F.FeatureConfig(kind="mel", n_mels=10).n_mfcc == 20


def test_layers_reject_bad_arguments_with_value_error():
    with pytest.raises(ValueError, match="MelSpectrogram: mel_scale='mel'"):
        F.MelSpectrogram(mel_scale="mel")
    with pytest.raises(ValueError, match="Spectrogram: power=0.5"):
        F.Spectrogram(power=0.5)
    with pytest.raises(ValueError, match="MFCC: n_mfcc=50.*n_mels=40"):
        F.MFCC(n_mels=40, n_mfcc=50)


@pytest.mark.parametrize(
    "kind, layer_cls, bins", [("stft", F.Spectrogram, 513), ("mel", F.MelSpectrogram, 128),
                              ("mfcc", F.MFCC, 20)]
)
def test_build_frontend_returns_matching_layer(kind, layer_cls, bins):
    cfg = F.FeatureConfig(kind=kind, n_fft=1024, hop_length=256)
    layer = F.build_frontend(cfg.to_dict())
    assert type(layer) is layer_cls
    assert layer.n_bins == cfg.n_bins == bins
    assert run(layer, np.zeros((2, 5000), "float32")).shape == (2, 1 + 5000 // 256, bins)


# --------------------------------------------------------------------------
# Frame counts and shapes
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n_samples", [2048, 4095, 4096, 5001])
@pytest.mark.parametrize("center", [True, False])
def test_frame_count_equals_librosas(n_samples, center):
    cfg = F.FeatureConfig(kind="stft", n_fft=1024, hop_length=256, center=center, log=None)
    y = np.zeros(n_samples, "float32")
    expected = librosa.stft(y, n_fft=1024, hop_length=256, center=center).shape[-1]
    if center:
        assert expected == 1 + n_samples // 256
    assert cfg.num_frames(n_samples) == expected
    layer = frontend(cfg)
    assert run(layer, y).shape == (expected, 513)  # unbatched input works too
    assert layer.compute_output_shape((None, n_samples)) == (None, expected, 513)


def test_mfcc_deltas_shape():
    layer = F.MFCC(sample_rate=16000, n_fft=512, hop_length=160, n_mels=40, n_mfcc=13, deltas=2)
    assert run(layer, np.zeros((2, 16000), "float32")).shape == (2, 101, 39)
    with pytest.raises(ValueError, match="at least 9 frames"):
        layer(np.zeros((1, 800), "float32"))


# --------------------------------------------------------------------------
# Exactness against librosa
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sr, n_fft, n_mels, mel_scale, norm, fmin, fmax",
    [
        (16000, 512, 40, "htk", None, 0.0, None),
        (22050, 1024, 64, "slaney", "slaney", 0.0, None),
        (44100, 2048, 128, "slaney", None, 20.0, 16000.0),
        (44100, 2048, 128, "htk", "slaney", 0.0, None),
    ],
)
def test_mel_filterbank_equals_librosas(sr, n_fft, n_mels, mel_scale, norm, fmin, fmax):
    ours = F.mel_filterbank(sr, n_fft, n_mels, fmin, fmax, mel_scale, norm)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                              htk=mel_scale == "htk", norm=norm)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=2e-6, atol=1e-10)


def test_window_and_dct_equal_scipys():
    import scipy.fft
    import scipy.signal

    for name in ("hann", "hamming"):
        np.testing.assert_allclose(
            F.window_array(name, 400), scipy.signal.get_window(name, 400, fftbins=True), atol=1e-12
        )
    x = np.random.default_rng(1).standard_normal((5, 40))
    np.testing.assert_allclose(
        x @ F.dct_matrix(40, 13), scipy.fft.dct(x, type=2, norm="ortho")[:, :13], atol=1e-10
    )


# The issue asks for <= 0.1 dB max and <= 0.02 dB RMS; over every bin, clamped
# at 80 dB below the peak (`db_errors`), the layers reach about 1e-3 dB (2.3e-3
# for the STFT power at digital silence and clipping), so the tests hold them
# to 10x tighter bounds than asked.
MAX_DB, RMS_DB = 0.01, 0.002

MEL_GRID = [
    # sample_rate, n_fft, hop_length, n_mels, mel_scale, norm
    (16000, 512, 128, 40, "htk", None),
    (16000, 512, 256, 64, "slaney", "slaney"),
    (22050, 1024, 256, 64, "htk", "slaney"),
    (22050, 1024, 512, 128, "slaney", None),
    (44100, 2048, 512, 128, "slaney", "slaney"),
    (44100, 2048, 512, 128, "htk", None),
    (44100, 1024, 128, 40, "slaney", "slaney"),
]


@pytest.mark.parametrize("sr, n_fft, hop, n_mels, mel_scale, norm", MEL_GRID)
def test_log_mel_matches_librosa(sr, n_fft, hop, n_mels, mel_scale, norm):
    cfg = F.FeatureConfig(kind="mel", sample_rate=sr, n_fft=n_fft, hop_length=hop,
                          n_mels=n_mels, mel_scale=mel_scale, norm=norm)
    y = make_signals(sr)
    ours, ref = run(frontend(cfg), y), lr_mel_db(y, cfg)
    assert ours.shape == ref.shape == (3, 1 + y.shape[-1] // hop, n_mels)
    max_err, rms = db_errors(ours, ref)
    assert max_err < MAX_DB and rms < RMS_DB, (max_err, rms)


@pytest.mark.parametrize(
    "overrides",
    [
        {"fmin": 50.0, "fmax": 8000.0},
        {"win_length": 400, "window": "hamming"},
        {"pad_mode": "reflect"},
        {"center": False},
        {"power": 1.0},
        {"power": 1.0, "ref": "max", "top_db": 60.0},
        {"top_db": 80.0},
        {"ref": 1e-3},
    ],
    ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()),
)
def test_log_mel_options_match_librosa(overrides):
    cfg = F.FeatureConfig(kind="mel", sample_rate=22050, n_fft=1024, hop_length=256,
                          n_mels=64, **overrides)
    y = make_signals(22050)
    ours, ref = run(frontend(cfg), y), lr_mel_db(y, cfg)
    max_err, rms = db_errors(ours, ref)
    assert max_err < MAX_DB and rms < RMS_DB, (max_err, rms)
    if cfg.top_db is not None:  # clipped per example, not per batch
        floors = ours.reshape(3, -1).min(axis=1)
        limits = ours.reshape(3, -1).max(axis=1) - cfg.top_db
        assert (floors >= limits - 1e-3).all() and np.isclose(floors, limits, atol=1e-3).any()


@pytest.mark.parametrize(
    "sr, n_fft, hop, overrides",
    [
        (16000, 512, 128, {}),
        (22050, 1024, 256, {"window": "hamming", "win_length": 800}),
        (44100, 2048, 512, {}),
        (44100, 2048, 512, {"pad_mode": "reflect", "top_db": 80.0}),
    ],
)
def test_stft_matches_librosa(sr, n_fft, hop, overrides):
    cfg = F.FeatureConfig(kind="stft", sample_rate=sr, n_fft=n_fft, hop_length=hop, **overrides)
    y = make_signals(sr)
    ours, ref = run(frontend(cfg), y), lr_stft_db(y, cfg)
    assert ours.shape == ref.shape == (3, 1 + y.shape[-1] // hop, n_fft // 2 + 1)
    max_err, rms = db_errors(ours, ref)
    assert max_err < MAX_DB and rms < RMS_DB, (max_err, rms)


HARD_CASES = [
    # kind, sample_rate, n_fft, hop_length, overrides
    ("mel", 16000, 512, 128, {"n_mels": 40, "mel_scale": "htk", "norm": None}),
    ("mel", 22050, 1024, 256, {"n_mels": 64, "pad_mode": "reflect"}),
    ("mel", 44100, 2048, 512, {"n_mels": 128}),
    ("mel", 22050, 1024, 256, {"n_mels": 64, "power": 1.0, "ref": "max"}),
    ("stft", 22050, 1024, 256, {}),
]


@pytest.mark.parametrize("top_db", [None, 80.0], ids=["no-top_db", "top_db=80"])
@pytest.mark.parametrize("kind, sr, n_fft, hop, overrides", HARD_CASES,
                         ids=["mel-16k-htk", "mel-22k-reflect", "mel-44k", "mel-power1-refmax",
                              "stft-22k"])
def test_silence_padding_and_clipping_match_librosa(kind, sr, n_fft, hop, overrides, top_db):
    """Digital silence, zero padding and full-scale clipping, every bin compared.

    Frames that read only zeros are at the floor on both sides: `10 log10(1e-10)`
    = -100 dB (0 dB with `ref="max"`, whose reference is then the floor too), or
    the clip's peak - `top_db`; compared there without any clamp, to 1e-4 dB
    (float32's resolution at 100). Every other bin: with `top_db=80` as given to
    both sides, without a clamp by the test; without `top_db`, both clamped at
    their peak - 80 dB (see `db_errors`), because a loud clip's bins near -100 dB
    sit some 150 dB below its peak, far under float32 round-off (about -140 dB).
    """
    cfg = F.FeatureConfig(kind=kind, sample_rate=sr, n_fft=n_fft, hop_length=hop,
                          top_db=top_db, **overrides)
    y = make_hard_signals(sr)
    ours = run(frontend(cfg), y)
    ref = lr_mel_db(y, cfg) if kind == "mel" else lr_stft_db(y, cfg)
    assert ours.shape == ref.shape
    assert np.isfinite(ours).all()
    silent = silent_frames(y, cfg)
    assert silent[0].all() and silent[1].any() and silent[3].any() and not silent[2].any()
    for c in range(len(y)):
        if top_db is None:
            floor = -100.0 if cfg.ref != "max" else ref[c].min()
        else:
            floor = ref[c].max() - top_db if c else ref[c].max()
        np.testing.assert_allclose(ours[c][silent[c]], floor, atol=1e-4)
        np.testing.assert_allclose(ref[c][silent[c]], floor, atol=1e-4)
    if top_db is None:
        max_err, rms = db_errors(ours, ref)
    else:
        err = np.abs(ours.astype(np.float64) - ref)
        max_err, rms = err.max(), np.sqrt(np.mean(err**2))
    assert max_err < MAX_DB and rms < RMS_DB, (max_err, rms)


def test_mfcc_of_silence_padding_and_clipping_matches_librosa():
    y = make_hard_signals(22050)
    # librosa.feature.mfcc(y=...) clamps at top_db=80, per call: one clip at a time.
    ref = np.stack([librosa.feature.mfcc(y=c, sr=22050, n_mfcc=20).T for c in y])
    ours = run(F.MFCC(sample_rate=22050, top_db=80.0), y)
    assert np.isfinite(ours).all()
    assert np.abs(ours - ref).max() < 1e-3 * (ref.max() - ref.min())
    # The silent clip: a constant -100 dB Mel, so only c0 is non-zero.
    np.testing.assert_allclose(ours[0, :, 1:], 0.0, atol=1e-3)
    np.testing.assert_allclose(ours[0, :, 0], ref[0, :, 0], rtol=1e-5)

def test_linear_spectrogram_matches_librosa():
    y = make_signals(16000)
    for power in (1.0, 2.0):
        ours = run(F.Spectrogram(n_fft=512, hop_length=128, power=power, log=None), y)
        ref = np.swapaxes(np.abs(librosa.stft(y, n_fft=512, hop_length=128)) ** power, -1, -2)
        np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-4 * ref.max())


def test_ln_log_is_natural_log_with_offset():
    y = make_signals(16000)
    cfg = dict(sample_rate=16000, n_fft=512, hop_length=128, n_mels=40)
    lin = run(F.MelSpectrogram(log=None, **cfg), y)
    ln = run(F.MelSpectrogram(log="ln", log_offset=1e-3, **cfg), y)
    np.testing.assert_allclose(ln, np.log(lin + 1e-3), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "sr, n_fft, hop, n_mels, n_mfcc, mel_scale",
    [
        (16000, 512, 160, 40, 13, "htk"),
        (22050, 1024, 256, 64, 20, "slaney"),
        (44100, 2048, 512, 128, 40, "slaney"),
    ],
)
def test_mfcc_matches_librosa(sr, n_fft, hop, n_mels, n_mfcc, mel_scale):
    cfg = F.FeatureConfig(kind="mfcc", sample_rate=sr, n_fft=n_fft, hop_length=hop,
                          n_mels=n_mels, n_mfcc=n_mfcc, mel_scale=mel_scale)
    y = make_signals(sr)
    ours, ref = run(frontend(cfg), y), lr_mfcc(y, cfg)
    assert ours.shape == ref.shape
    span = ref.max() - ref.min()
    assert np.abs(ours - ref).max() < 1e-3 * span


def test_mfcc_default_top_db_matches_librosa_mfcc_of_waveform():
    y = make_signals(22050)
    # librosa clips at its default top_db=80, per call: one clip at a time.
    ref = np.stack([librosa.feature.mfcc(y=c, sr=22050, n_mfcc=20).T for c in y])
    ours = run(F.MFCC(sample_rate=22050, top_db=80.0), y)
    assert np.abs(ours - ref).max() < 1e-3 * (ref.max() - ref.min())


def test_mfcc_deltas_match_librosa():
    cfg = F.FeatureConfig(kind="mfcc", sample_rate=16000, n_fft=512, hop_length=128,
                          n_mels=40, n_mfcc=13, deltas=2)
    y = make_signals(16000)
    ours = run(frontend(cfg), y)
    mfcc = np.swapaxes(lr_mfcc(y, cfg), -1, -2)  # [clips, n_mfcc, frames]
    for order in (1, 2):
        ref = np.swapaxes(librosa.feature.delta(mfcc, order=order), -1, -2)
        got = ours[..., 13 * order : 13 * (order + 1)]
        assert np.abs(got - ref).max() < 1e-3 * (ref.max() - ref.min()), order


# --------------------------------------------------------------------------
# Mixed precision
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy, rtol", [("mixed_float16", 2.0**-10), ("mixed_bfloat16", 2.0**-7)]
)
@pytest.mark.parametrize(
    "cfg",
    [
        F.FeatureConfig(kind="stft", n_fft=512, hop_length=128),
        F.FeatureConfig(kind="mel", sample_rate=16000, n_fft=512, hop_length=128, n_mels=40),
        F.FeatureConfig(kind="mel", sample_rate=16000, n_fft=512, hop_length=128, n_mels=40,
                        log="ln"),
        F.FeatureConfig(kind="mfcc", sample_rate=16000, n_fft=512, hop_length=128, n_mels=40,
                        n_mfcc=13, deltas=1),
    ],
    ids=["stft", "mel-db", "mel-ln", "mfcc"],
)
def test_mixed_precision_computes_in_float32(policy, rtol, cfg, restore_policy):
    x = make_signals(16000, seconds=0.5)
    full = run(frontend(cfg), x)
    keras.config.set_dtype_policy(policy)
    layer = frontend(cfg)
    model = keras.Sequential([keras.Input((x.shape[-1],)), layer])
    out = model.predict(x, verbose=0)
    assert layer.compute_dtype == policy.split("_")[1]
    assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
    out = out.astype(np.float32)
    assert np.isfinite(out).all()
    # Only the final cast differs: half an ulp of the compute dtype.
    np.testing.assert_allclose(out, full, rtol=rtol, atol=1e-4)


# --------------------------------------------------------------------------
# Host (tf.data) vs device (model), tf.distribute
# --------------------------------------------------------------------------


def test_host_featurizer_in_dataset_map_equals_model():
    cfg = F.FeatureConfig(kind="mel", sample_rate=16000, n_fft=512, hop_length=128,
                          n_mels=40, top_db=80.0)
    x = make_signals(16000, seconds=0.5)
    device = run(frontend(cfg), x)
    # The layer itself inside Dataset.map (batched, per clip) and in a model: test_layers.py.
    ds = tf.data.Dataset.from_tensor_slices(x).batch(2).map(F.make_host_featurizer(cfg))
    host = np.concatenate(list(ds.as_numpy_iterator()))
    np.testing.assert_allclose(host, device, rtol=1e-5, atol=1e-4)


def test_runs_under_tf_distribute():
    x = make_signals(16000, seconds=0.5)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        layer = F.MelSpectrogram(sample_rate=16000, n_fft=512, hop_length=128, n_mels=40)
        model = keras.Sequential([keras.Input((x.shape[-1],)), layer])
    np.testing.assert_allclose(model.predict(x, verbose=0), run(layer, x), rtol=1e-5, atol=1e-4)


# --------------------------------------------------------------------------
# Adapters and normalisation
# --------------------------------------------------------------------------


def test_adapter_shapes():
    feats = np.random.default_rng(0).standard_normal((2, 431, 128)).astype("float32")
    assert run(F.AddChannelAxis(), feats).shape == (2, 431, 128, 1)
    image = run(F.ResizeToImage(), feats)
    assert image.shape == (2, 224, 224, 3)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    assert run(F.ResizeToImage(96, 64, channels=1), feats[..., None]).shape == (2, 96, 64, 1)
    # A constant image stays constant: resizing does not rescale values.
    np.testing.assert_allclose(run(F.ResizeToImage(), np.full((1, 50, 40), -7.0, "float32")), -7.0)
    with pytest.raises(ValueError, match="height=0"):
        F.ResizeToImage(height=0)


def test_instance_normalization_standardises_each_example():
    x = np.random.default_rng(0).normal([[[3.0]], [[-40.0]]], [[[2.0]], [[15.0]]], (2, 50, 16))
    out = run(F.InstanceNormalization(), x.astype("float32"))
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 1.0, atol=1e-4)


def test_frequency_normalization_adapts_from_waveform_dataset():
    sr, n = 16000, 4000
    x = make_signals(sr, seconds=n / sr, seed=1)
    x = np.concatenate([x, 0.3 * make_signals(sr, seconds=n / sr, seed=2)])  # 6 clips
    labels = np.arange(6)
    mel = F.MelSpectrogram(sample_rate=sr, n_fft=512, hop_length=128, n_mels=40)
    feats = run(mel, x)

    norm = F.FrequencyNormalization()
    ds = tf.data.Dataset.from_tensor_slices((x, labels)).batch(4)  # batches of 4 and 2
    norm.adapt(ds, frontend=mel)
    np.testing.assert_allclose(norm.mean.numpy(), feats.mean(axis=(0, 1)), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(norm.std.numpy(), feats.std(axis=(0, 1)), rtol=1e-5, atol=1e-4)
    out = run(norm, feats)
    np.testing.assert_allclose(out.mean(axis=(0, 1)), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(0, 1)), 1.0, atol=1e-4)

    # Adapting on features directly gives the same statistics.
    direct = F.FrequencyNormalization(axis=-2)
    direct.adapt([feats[:3, ..., None], feats[3:, ..., None]])
    np.testing.assert_allclose(direct.mean.numpy(), norm.mean.numpy(), rtol=1e-5, atol=1e-4)


# --------------------------------------------------------------------------
# Files: extract_features and plot_features
# --------------------------------------------------------------------------


def test_extract_features_pads_to_longest_and_collects_errors(tmp_path):
    from esc50tf.featurize import extract_features

    sr = 16000
    y = make_signals(sr, seconds=0.5)
    paths = []
    for i, n in enumerate((8000, 5000, 6400)):
        paths.append(tmp_path / f"clip{i}.wav")
        sf.write(paths[-1], y[i, :n], sr, subtype="FLOAT")
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really a wav")
    cfg = F.FeatureConfig(kind="mel", sample_rate=sr, n_fft=512, hop_length=128, n_mels=40)

    feats, names, errors = extract_features([paths[0], bad, paths[1], paths[2]], cfg)
    assert names == [str(p) for p in paths]
    assert [e[0] for e in errors] == [str(bad)] and errors[0][1]
    assert feats.dtype == np.float32 and feats.shape == (3, 1 + 8000 // 128, 40)
    padded = np.zeros((3, 8000), np.float32)
    for i, n in enumerate((8000, 5000, 6400)):
        padded[i, :n] = y[i, :n]
    np.testing.assert_allclose(feats, run(frontend(cfg), padded), atol=1e-4)

    feats, _, _ = extract_features(paths, cfg, clip_seconds=0.25)
    assert feats.shape == (3, 1 + 4000 // 128, 40)
    with pytest.raises(Esc50Error, match="clip_seconds"):
        extract_features(paths, cfg, clip_seconds=-1)


def test_plot_features_writes_an_image(tmp_path):
    from esc50tf.featurize import extract_features, plot_features

    sr = 16000
    path = tmp_path / "tone.wav"
    sf.write(path, make_signals(sr, seconds=0.5)[0], sr)
    for kind in ("stft", "mfcc"):
        cfg = F.FeatureConfig(kind=kind, sample_rate=sr, n_fft=512, hop_length=128, n_mels=40)
        feats, names, _, waves = extract_features([path], cfg, return_waveforms=True)
        out = plot_features(waves, feats, names, cfg, tmp_path / f"{kind}.png")
        data = open(out, "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000



def test_host_featurizer_int16_xla_and_banded_filterbank_match_the_layer():
    """The host path (XLA, banded Mel product, int16 in) equals the model's layer."""
    from esc50tf.frontend import FeatureConfig, build_frontend, make_host_featurizer, mel_bands

    cfg = FeatureConfig(kind="mel", sample_rate=22050, n_fft=1024, hop_length=256, n_mels=64)
    rng = np.random.default_rng(3)
    pcm = rng.integers(-20000, 20000, (3, 22050)).astype(np.int16)
    wave = pcm.astype(np.float32) / 32768.0
    dense = np.asarray(build_frontend(cfg)(wave))
    for jit in (True, False):
        host = make_host_featurizer(cfg, jit_compile=jit)
        np.testing.assert_allclose(host(pcm).numpy(), dense, atol=2e-3)
        np.testing.assert_allclose(host(wave).numpy(), dense, atol=2e-3)
    layer = build_frontend(cfg)
    mel = layer._constant_arrays["mel"]
    bands = mel_bands(mel)
    s = rng.random((5, mel.shape[0]))
    banded = np.concatenate([s[:, lo:hi] @ mel[lo:hi, a:b] for lo, hi, a, b in bands], axis=1)
    np.testing.assert_allclose(banded, s @ mel, rtol=1e-12)
    assert sum((hi - lo) * (b - a) for lo, hi, a, b in bands) < 0.3 * mel.size
