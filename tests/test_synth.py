"""Tests for esc50tf.data.synth: layout, groups, determinism, difficulty, safety."""

import csv
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from esc50tf.data import sounds, synth
from esc50tf.data.synth import synthesize
from esc50tf.errors import Esc50Error

SMALL = dict(num_classes=5, clips_per_class=10, sample_rate=8000, clip_seconds=1.0, progress=False)
COLUMNS = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("synth") / "esc50", seed=0, **SMALL)


def _meta(root):
    return pd.read_csv(root / "meta" / "esc50.csv")


def _read_all(root):
    meta = _meta(root)
    return {name: (root / "audio" / name).read_bytes() for name in meta.filename}


def test_layout_and_counts(small):
    with open(small / "meta" / "esc50.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == COLUMNS
    meta = _meta(small)
    assert len(meta) == 50
    assert sorted(p.name for p in (small / "audio").iterdir()) == sorted(meta.filename)
    assert meta.groupby("target").size().tolist() == [10] * 5
    # 10 clips over 5 folds: exactly 2 per class and fold.
    assert (meta.groupby(["target", "fold"]).size() == 2).all()
    assert sorted(meta.fold.unique()) == [1, 2, 3, 4, 5]
    assert meta.groupby("target").category.nunique().eq(1).all()
    assert meta.category.nunique() == 5
    assert set(meta.esc10) == {True, False}
    assert meta.groupby("target").esc10.nunique().eq(1).all()
    for row in meta.itertuples():
        assert row.filename == f"{row.fold}-{row.src_file}-{row.take}-{row.target}.wav"


def test_wavs_are_16_bit_mono_at_rate(small):
    for path in sorted((small / "audio").iterdir()):
        info = sf.info(str(path))
        assert (info.samplerate, info.frames, info.channels) == (8000, 8000, 1)
        assert info.subtype == "PCM_16"
        pcm, _ = sf.read(str(path), dtype="int16")
        peak = np.abs(pcm.astype(np.int32)).max()
        # Loudest clip at -1 dBFS, quietest 20 dB lower: never clipped, never silent.
        assert 0.08 * 32767 < peak <= 0.9 * 32767


def test_recordings_stay_in_one_fold(small):
    meta = _meta(small)
    groups = meta.groupby("src_file")
    assert groups.fold.nunique().eq(1).all()
    assert groups.target.nunique().eq(1).all()
    for _, group in groups:
        takes = sorted(group["take"])
        assert takes == ["A", "B", "C"][: len(takes)]
    assert groups.size().max() <= 3
    assert groups.size().max() > 1  # some recordings do have several takes


def test_uneven_clips_per_class_spread_over_folds(tmp_path):
    root = synthesize(
        tmp_path / "d", num_classes=3, clips_per_class=7, sample_rate=8000, clip_seconds=0.2, progress=False
    )
    meta = _meta(root)
    per_class_fold = meta.groupby(["target", "fold"]).size().unstack(fill_value=0)
    assert per_class_fold.shape == (3, 5)
    assert per_class_fold.min().min() >= 1
    assert (per_class_fold.max(axis=1) - per_class_fold.min(axis=1)).max() <= 1
    fold_sizes = meta.groupby("fold").size()
    assert fold_sizes.max() - fold_sizes.min() <= 1
    assert meta.groupby("target").size().tolist() == [7, 7, 7]


@pytest.mark.parametrize("num_classes", [2, 50])
def test_any_number_of_classes(tmp_path, num_classes):
    root = synthesize(
        tmp_path / "d",
        num_classes=num_classes,
        clips_per_class=2,
        num_folds=2,
        sample_rate=8000,
        clip_seconds=0.2,
        progress=False,
    )
    meta = _meta(root)
    assert sorted(meta.target.unique()) == list(range(num_classes))
    assert meta.category.nunique() == num_classes
    assert len(list((root / "audio").iterdir())) == 2 * num_classes


def test_same_seed_same_bytes_other_seed_other_audio(tmp_path):
    kwargs = dict(num_classes=3, clips_per_class=5, sample_rate=8000, clip_seconds=0.5, progress=False)
    a = synthesize(tmp_path / "a", seed=7, **kwargs)
    b = synthesize(tmp_path / "b", seed=7, **kwargs)
    c = synthesize(tmp_path / "c", seed=8, **kwargs)
    assert (a / "meta" / "esc50.csv").read_bytes() == (b / "meta" / "esc50.csv").read_bytes()
    assert _read_all(a) == _read_all(b)
    audio_a = sorted(_read_all(a).values())
    audio_c = sorted(_read_all(c).values())
    assert not set(audio_a) & set(audio_c)


def _band_log_power(x, n_fft=256, bands=32):
    """Log of the mean power in `bands` equal-width bands, minus its mean (level-free)."""
    hop = n_fft // 2
    frames = 1 + (len(x) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]  # [frames, n_fft]
    power = np.abs(np.fft.rfft(x[idx] * np.hanning(n_fft), axis=1)) ** 2  # [frames, bins]
    edges = np.linspace(1, power.shape[1], bands + 1).astype(int)
    band = np.array([power[:, a:b].mean() for a, b in zip(edges[:-1], edges[1:])])  # [bands]
    logs = np.log(band + 1e-12)
    return logs - logs.mean()


def _fold_accuracy(features, meta):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y, folds = meta.target.to_numpy(), meta.fold.to_numpy()
    scores = []
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        model.fit(features[train], y[train])
        scores.append(np.mean(model.predict(features[test]) == y[test]))
    return float(np.mean(scores))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classes_are_learnable_but_level_is_not_a_shortcut(tmp_path, seed):
    root = synthesize(
        tmp_path / "d",
        num_classes=6,
        clips_per_class=20,
        sample_rate=8000,
        clip_seconds=1.5,
        seed=seed,
        progress=False,
    )
    meta = _meta(root)
    waves = [sf.read(str(root / "audio" / name))[0] for name in meta.filename]
    spectra = np.stack([_band_log_power(x) for x in waves])
    levels = np.array([[math.log(np.sqrt(np.mean(x**2)))] for x in waves])
    # Leave-one-fold-out: each fold is tested by a model trained on the others.
    assert _fold_accuracy(spectra, meta) >= 0.8
    assert _fold_accuracy(levels, meta) < 0.6


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(num_classes=1), "num_classes"),
        (dict(num_classes=2.5), "num_classes"),
        (dict(num_classes=True), "num_classes"),
        (dict(clips_per_class=4), "clips_per_class"),
        (dict(clips_per_class=0), "clips_per_class"),
        (dict(num_folds=0), "num_folds"),
        (dict(sample_rate=0), "sample_rate"),
        (dict(sample_rate=-8000), "sample_rate"),
        (dict(sample_rate=8000.5), "sample_rate"),
        (dict(clip_seconds=0), "clip_seconds"),
        (dict(clip_seconds=float("nan")), "clip_seconds"),
        (dict(clip_seconds=float("inf")), "clip_seconds"),
        (dict(clip_seconds="5"), "clip_seconds"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_arguments_raise(tmp_path, kwargs, name):
    args = dict(num_classes=3, clips_per_class=5, sample_rate=8000, clip_seconds=0.2, progress=False)
    args.update(kwargs)
    with pytest.raises(Esc50Error, match=name) as error:
        synthesize(tmp_path / "d", **args)
    assert repr(next(iter(kwargs.values()))) in str(error.value)
    assert list(tmp_path.iterdir()) == []


TINY = dict(num_classes=2, clips_per_class=2, num_folds=2, sample_rate=8000, clip_seconds=0.2, progress=False)


def test_refuses_non_empty_dir_without_overwrite(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(Esc50Error, match="overwrite") as error:
        synthesize(out, **TINY)
    assert str(out) in str(error.value)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_empty_dir_is_filled(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    assert synthesize(out, **TINY) == out
    assert (out / "meta" / "esc50.csv").is_file()


def test_overwrite_replaces(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    synthesize(out, overwrite=True, **TINY)
    assert sorted(p.name for p in out.iterdir()) == ["audio", "meta"]
    assert len(_meta(out)) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temporary siblings left


@pytest.mark.parametrize("overwrite", [False, True])
def test_interrupted_run_leaves_old_state(tmp_path, monkeypatch, overwrite):
    out = tmp_path / "d"
    if overwrite:
        out.mkdir()
        (out / "keep.txt").write_text("old")
    calls = []
    real = sounds.render_clip

    def flaky(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(sounds, "render_clip", flaky)
    with pytest.raises(KeyboardInterrupt):
        synthesize(out, overwrite=overwrite, **TINY)
    if overwrite:
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
        assert [p.name for p in tmp_path.iterdir()] == ["d"]
    else:
        assert list(tmp_path.iterdir()) == []


def test_progress_bar_goes_to_stderr_only_when_asked(tmp_path, capsys):
    synthesize(tmp_path / "quiet", **TINY)
    assert capsys.readouterr() == ("", "")
    synthesize(tmp_path / "loud", **{**TINY, "progress": True})
    out, err = capsys.readouterr()
    assert out == ""
    assert "4/4" in err


def test_does_not_import_tensorflow():
    code = (
        "import sys, esc50tf.data.synth; "
        "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; "
        "sys.exit(str(bad) if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_synth_config_is_a_config():
    config = synth.SynthConfig(num_classes=3, clips_per_class=5, sample_rate=8000,
                               clip_seconds=1, seed=2)
    assert config.clip_seconds == 1.0 and isinstance(config.clip_seconds, float)
    assert synth.SynthConfig.from_dict(config.to_dict()) == config
    with pytest.raises(Esc50Error, match="unknown setting.*classes"):
        synth.SynthConfig.from_dict({"classes": 3})
    with pytest.raises(Esc50Error, match="SynthConfig.clips_per_class=2.*num_folds \\(5\\)"):
        synth.SynthConfig(clips_per_class=2)


def test_synthesize_tfrecords_builds_both_folders_and_reuses_data(tmp_path):
    config = dict(num_classes=2, clips_per_class=2, num_folds=2, sample_rate=8000,
                  clip_seconds=0.2)
    quiet = dict(workers=1, progress=False, log=lambda _: None)
    manifest = synth.synthesize_tfrecords(tmp_path / "data", tmp_path / "tfr", config, **quiet)
    assert manifest["counts"]["total"] == 4 and manifest["folds"] == [1, 2]
    # The build follows the data's rate and length unless told otherwise.
    assert manifest["config"]["sample_rate"] == 8000 and manifest["config"]["num_samples"] == 1600
    assert manifest["config"]["shards_per_fold"] == 4  # BuildConfig's default
    with pytest.raises(Esc50Error, match="overwrite"):  # existing data is never replaced ...
        synth.synthesize_tfrecords(tmp_path / "data", tmp_path / "tfr", config, **quiet)
    again = synth.synthesize_tfrecords(tmp_path / "data", tmp_path / "tfr", config, reuse=True,
                                       **quiet)  # ... unless reused, as the demo does
    assert again["up_to_date"] and again["shards"] == manifest["shards"]
    # The same arguments give the same bytes (the demo's and the tests' figures rest on it).
    other = synth.synthesize_tfrecords(tmp_path / "data2", tmp_path / "tfr2", config,
                                       {"sample_rate": 8000, "clip_seconds": 0.2}, **quiet)
    assert [s["sha256"] for s in other["shards"]] == [s["sha256"] for s in manifest["shards"]]
