"""The tf.data pipeline: shapes, dtypes, values, fold selection, determinism, errors."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from esc50tf.data import splits
from esc50tf.data import tfrecords as tfr
from esc50tf.data.dataset import DatasetOptions, TFRecordFolder
from esc50tf.data.splits import Selection
from esc50tf.errors import Esc50Error

N = 8000  # 1 s at 8 kHz


def _labels(ds):
    return np.concatenate([y.numpy() for _, y in ds])


def test_training_batches_are_static_float32(tiny_tfrecords):
    ds = TFRecordFolder(tiny_tfrecords).dataset(Selection((2, 3, 4, 5)), DatasetOptions(
        training=True, batch_size=8, seed=0))
    assert ds.element_spec[0].shape.as_list() == [8, N]
    assert ds.element_spec[1].shape.as_list() == [8]
    n = 0
    for x, y in ds:
        assert x.dtype.name == "float32" and y.dtype.name == "int32"
        assert np.all(np.abs(x.numpy()) <= 1.0)
        n += x.shape[0]
    assert n == 32  # 32 training clips, remainder dropped (none here)
    ds = TFRecordFolder(tiny_tfrecords).dataset(Selection((2, 3, 4)), DatasetOptions(
        training=True, batch_size=5, seed=0))
    assert sum(int(x.shape[0]) for x, _ in ds) == 20  # 24 clips -> 4 full batches of 5


def test_evaluation_keeps_every_clip_and_values_match_wav(tiny_esc50, tiny_tfrecords):
    ds = TFRecordFolder(tiny_tfrecords).dataset(Selection((1,)), DatasetOptions(
        batch_size=3, with_metadata=True))
    seen = []
    for x, y, meta in ds:
        for i in range(x.shape[0]):
            name = meta["filename"][i].numpy().decode()
            assert int(meta["fold"][i]) == 1
            wav, _ = sf.read(tiny_esc50 / "audio" / name, dtype="int16")
            np.testing.assert_array_equal(np.round(x[i].numpy() * 32768).astype(np.int16), wav)
            seen.append(name)
    assert len(seen) == len(set(seen)) == 8


def test_one_hot_and_int16_output(tiny_tfrecords):
    ds = TFRecordFolder(tiny_tfrecords).dataset(Selection((1,)), DatasetOptions(
        batch_size=4, one_hot=True, waveform_dtype="int16"))
    x, y = next(iter(ds))
    assert x.dtype.name == "int16" and x.shape == (4, N)
    assert y.shape == (4, 4) and y.dtype.name == "float32"
    np.testing.assert_array_equal(y.numpy().sum(axis=1), 1.0)


def test_seeded_order_is_reproducible_and_reshuffled(tiny_tfrecords):
    def make(seed):
        return TFRecordFolder(tiny_tfrecords).dataset(Selection((1, 2, 3, 4)), DatasetOptions(
            training=True, batch_size=4, seed=seed))

    a, b, c = make(7), make(7), make(8)
    first = _labels(a)
    np.testing.assert_array_equal(first, _labels(b))
    assert not np.array_equal(first, _labels(c))
    assert not np.array_equal(first, _labels(a))  # a new order every epoch
    assert sorted(first) == sorted(_labels(a))


def test_filename_selection(tiny_tfrecords):
    index = splits.load_index(tiny_tfrecords)
    chosen = frozenset(index[index["fold"] == 2]["filename"][:3])
    ds = TFRecordFolder(tiny_tfrecords).dataset(Selection((2,), chosen), DatasetOptions(
        batch_size=2, with_metadata=True))
    names = {n.decode() for _, _, m in ds for n in m["filename"].numpy()}
    assert names == set(chosen)


def test_unknown_fold_and_missing_manifest(tiny_tfrecords, tmp_path):
    with pytest.raises(Esc50Error, match="fold.*9 not in the data"):
        TFRecordFolder(tiny_tfrecords).dataset(Selection((9,)))
    with pytest.raises(Esc50Error, match="no manifest.json"):
        TFRecordFolder(tmp_path).dataset(Selection((1,)))


def _copy(src, tmp_path):
    dst = tmp_path / "tfr"
    shutil.copytree(src, dst)
    return dst, tfr.read_manifest(dst)


def test_missing_or_resized_shard_is_a_clear_error(tiny_tfrecords, tmp_path):
    out, manifest = _copy(tiny_tfrecords, tmp_path)
    (out / manifest["shards"][0]["file"]).unlink()
    with pytest.raises(Esc50Error, match="missing"):
        TFRecordFolder(out).dataset(Selection((1, 2)))


def test_wrong_record_count_fails_when_read(tiny_tfrecords, tmp_path):
    import tensorflow as tf

    out, manifest = _copy(tiny_tfrecords, tmp_path)
    # One record more everywhere the manifest counts it (the counts agree with each other,
    # which opening the folder checks), but not in the shard itself.
    shard = manifest["shards"][0]
    shard["num_records"] += 1
    manifest["counts"]["total"] += 1
    manifest["counts"]["per_fold"][str(shard["fold"])] += 1
    first_class = next(iter(manifest["counts"]["per_class"]))
    manifest["counts"]["per_class"][first_class] += 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    ds = TFRecordFolder(out).dataset(Selection((manifest["shards"][0]["fold"],)))
    with pytest.raises(tf.errors.OpError, match="expected to contain"):
        for _ in ds:
            pass


def test_test_fold_is_never_read_for_training(tiny_tfrecords, tmp_path):
    """Scramble the test fold's shards (same size): training still reads cleanly."""
    import tensorflow as tf

    out, manifest = _copy(tiny_tfrecords, tmp_path)
    split = splits.test_fold_split(splits.load_index(out), test_fold=3)
    for shard in manifest["shards"]:
        if shard["fold"] == 3:
            path = out / shard["file"]
            path.write_bytes(bytes(len(path.read_bytes())))
    for selection in (split.train, split.val):
        ds = TFRecordFolder(out).dataset(selection, DatasetOptions(
            training=True, batch_size=2, seed=0, with_metadata=True))
        folds = {int(f) for _, _, m in ds for f in m["fold"].numpy()}
        assert 3 not in folds and folds
    with pytest.raises(tf.errors.OpError):
        for _ in TFRecordFolder(out).dataset(split.test):
            pass


def test_file_cache(tiny_tfrecords, tmp_path):
    prefix = str(tmp_path / "cache" / "train")
    (tmp_path / "cache").mkdir()
    ds = TFRecordFolder(tiny_tfrecords).dataset(Selection((1,)), DatasetOptions(
        batch_size=4, cache=prefix))
    first = [x.numpy() for x, _ in ds]
    assert list((tmp_path / "cache").iterdir())
    second = [x.numpy() for x, _ in ds]
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_batch_fns_run_after_float_conversion(tiny_tfrecords):
    ds = TFRecordFolder(tiny_tfrecords).dataset(Selection((1,)), DatasetOptions(batch_size=4),
                                                batch_fns=[lambda x, y: (x * 2.0, y)])
    x, _ = next(iter(ds))
    assert x.dtype.name == "float32" and np.max(np.abs(x.numpy())) > 0


def test_autotune_is_off_unless_asked(tiny_tfrecords):
    # tf.data's autotuner makes iterator teardown wait for its next wake-up
    # (see DatasetOptions' `autotune`); the same clips come out either way.
    plain = TFRecordFolder(tiny_tfrecords).dataset(Selection((1,)), DatasetOptions(batch_size=4))
    tuned = TFRecordFolder(tiny_tfrecords).dataset(Selection((1,)), DatasetOptions(
        batch_size=4, autotune=True))
    assert plain.options().autotune.enabled is False
    assert tuned.options().autotune.enabled is True
    np.testing.assert_array_equal(_labels(plain), _labels(tuned))

