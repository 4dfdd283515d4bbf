"""TFRecordFolder (opened and verified once; queries; pipelines) and DatasetOptions."""

import shutil

import numpy as np
import pytest

from esc50tf.data import splits
from esc50tf.data import tfrecords as tfr
from esc50tf.data.dataset import DatasetOptions, TFRecordFolder
from esc50tf.data.splits import Selection
from esc50tf.errors import Esc50Error

N = 8000  # 1 s at 8 kHz


def _labels(ds):
    return np.concatenate([y.numpy() for _, y in ds])



def test_folder_reads_and_verifies_once(tiny_tfrecords, monkeypatch):
    """Opening reads manifest.json and clips.csv and stats every shard once; building
    pipelines afterwards touches none of them again."""
    from esc50tf.data import dataset as dataset_mod

    calls = {"manifest": 0, "verify": 0, "index": 0}

    def counted(name, real):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(tfr, "read_manifest", counted("manifest", tfr.read_manifest))
    monkeypatch.setattr(tfr, "verify_shards", counted("verify", tfr.verify_shards))
    monkeypatch.setattr(dataset_mod, "load_index", counted("index", dataset_mod.load_index))
    folder = TFRecordFolder(tiny_tfrecords)
    assert calls == {"manifest": 1, "verify": 1, "index": 1}
    split = splits.test_fold_split(folder.index, test_fold=1)
    for selection in (split.train, split.val, split.test, Selection((2, 3))):
        for training in (True, False):
            folder.dataset(selection, DatasetOptions(training=training, batch_size=2, seed=0))
    assert calls == {"manifest": 1, "verify": 1, "index": 1}
    # The counts checked while reading come from what was read at opening.
    assert folder.expected_count(split.val) == len(split.val.filenames)
    assert folder.expected_count(Selection((2, 3))) == 16
    n = sum(int(x.shape[0]) for x, _ in folder.dataset(split.val))
    assert n == len(split.val.filenames)


def test_folder_reports_a_damaged_shard_when_opened(tiny_tfrecords, tmp_path):
    out = tmp_path / "tfr"
    shutil.copytree(tiny_tfrecords, out)
    shard = out / tfr.read_manifest(out)["shards"][-1]["file"]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(Esc50Error, match=f"{shard.name}: shard has .* bytes"):
        TFRecordFolder(out)
    shutil.copyfile(tiny_tfrecords / shard.name, shard)
    TFRecordFolder(out)  # whole again
    (out / "clips.csv").unlink()
    with pytest.raises(Esc50Error, match="clips.csv: not found"):
        TFRecordFolder(out)


def test_folder_queries(tiny_tfrecords):
    folder = TFRecordFolder(tiny_tfrecords)
    manifest = tfr.read_manifest(tiny_tfrecords)
    assert (folder.sample_rate, folder.num_samples, folder.num_classes) == (8000, N, 4)
    assert folder.class_names == [c["category"] for c in manifest["classes"]]
    assert folder.folds == [1, 2, 3, 4, 5] and folder.compression == "none"
    assert folder.info()["counts"]["total"] == 40 and len(folder.index) == 40
    assert [p.rsplit("/", 1)[-1] for p in folder.files(Selection((2,)))] == [
        "fold2-00000-of-00002.tfrecord", "fold2-00001-of-00002.tfrecord"]
    with pytest.raises(TypeError, match="Selection"):
        folder.dataset((1, 2))
    with pytest.raises(Esc50Error, match="no clips"):
        folder.dataset(Selection((1,), frozenset()))
    with pytest.raises(Esc50Error, match="fewer than one batch"):
        folder.dataset(Selection((1,)), DatasetOptions(training=True, batch_size=9))


def test_dataset_options_config():
    options = DatasetOptions(training=True, batch_size=8, seed=3, cache="/tmp/c")
    assert DatasetOptions.from_dict(options.to_dict()) == options
    assert DatasetOptions.from_dict({"batch_size": 4}) == DatasetOptions(batch_size=4)
    assert options.replace(one_hot=True).one_hot is True
    with pytest.raises(Esc50Error, match="unknown setting.*batchsize"):
        DatasetOptions.from_dict({"batchsize": 4})
    with pytest.raises(Esc50Error, match="unknown setting.*manifest"):
        DatasetOptions.from_dict({"manifest": {}})  # the folder holds it
    for bad in (dict(batch_size=0), dict(waveform_dtype="float16"), dict(num_workers=0),
                dict(num_parallel_reads=0), dict(shuffle_buffer=0), dict(seed="1"),
                dict(cache=None)):
        name, value = next(iter(bad.items()))
        with pytest.raises(Esc50Error, match=f"DatasetOptions.{name}={value!r}"):
            DatasetOptions(**bad)
    assert DatasetOptions(num_parallel_reads=-1).num_parallel_reads == -1  # AUTOTUNE


def test_dataset_accepts_options_as_a_dict(tiny_tfrecords):
    folder = TFRecordFolder(tiny_tfrecords)
    a = folder.dataset(Selection((1,)), {"batch_size": 4, "one_hot": True})
    b = folder.dataset(Selection((1,)), DatasetOptions(batch_size=4, one_hot=True))
    assert a.element_spec == b.element_spec
    np.testing.assert_array_equal(_labels(a), _labels(b))
