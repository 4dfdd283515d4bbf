"""Faults a user or the machine can cause, each ending in one named error and nothing lost:
two writers of one folder, a data folder rebuilt under a reader, a full result pipe,
non-finite numbers, damaged manifests and shards, torn backups, a full disk."""

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from esc50tf.errors import Esc50Error


def _script(tmp_path, body):
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(body))
    return path


# --- one writer per folder ----------------------------------------------------------------

class _Holder:
    """A second process holding `folder_lock(out, command)` until `release()`."""

    def __init__(self, tmp_path, out, command):
        script = _script(tmp_path, f"""
            import sys, time
            from esc50tf.lock import folder_lock
            with folder_lock({str(out)!r}, {command!r}):
                print("held", flush=True)
                time.sleep(120)
        """)
        self.proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout.readline().strip() == "held"
        self.pid = self.proc.pid

    def release(self):
        self.proc.kill()  # as kill -9 would
        self.proc.wait()


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    from esc50tf.lock import folder_lock, lock_path

    out = tmp_path / "runs" / "a"
    holder = _Holder(tmp_path, out, "train --out a")
    try:
        with pytest.raises(Esc50Error, match=rf"pid {holder.pid}: train --out a"):
            with folder_lock(out, "train"):
                pass
    finally:
        holder.release()
    # The holder died (kill -9): its lock file stays, but the kernel dropped the lock.
    assert lock_path(out).exists()
    with folder_lock(out, "train"):
        assert f"pid {os.getpid()}: train" in lock_path(out).read_text()
    assert not lock_path(out).exists()


def test_the_lock_is_reentrant_and_outlives_the_folder(tmp_path):
    from esc50tf.lock import folder_lock, lock_path

    out = tmp_path / "new" / "run"
    with folder_lock(out, "tune"):
        out.mkdir()
        with folder_lock(out, "train"):  # tune training into its own folder
            pass
        assert lock_path(out).exists()
        out.rmdir()  # a command replacing its folder keeps the lock
        assert lock_path(out).exists()
    assert not (tmp_path / "new").exists()  # the parent it made is removed again


def test_two_builds_into_one_folder_one_is_refused(tiny_esc50, tmp_path):
    from esc50tf.data.tfrecords import BuildConfig, build_tfrecords

    out = tmp_path / "tfr"
    holder = _Holder(tmp_path, out, "build-tfrecords --out tfr")
    try:
        with pytest.raises(Esc50Error, match=r"another esc50tf is writing .*build-tfrecords"):
            build_tfrecords(tiny_esc50, out, BuildConfig(sample_rate=8000, clip_seconds=1.0),
                            workers=1, progress=False, log=lambda _: None)
    finally:
        holder.release()
    assert not out.exists()


# --- worker pools -------------------------------------------------------------------------

def test_the_build_pool_stops_with_its_result_pipe_full(tmp_path):
    """The consumer fails while workers are blocked writing 8 MB results into the pipe:
    the stream still ends at once, and no worker process is left."""
    script = _script(tmp_path, """
        import os, time
        import multiprocessing as mp
        from esc50tf.data.tfrecords import _decoded_stream

        def big(job):
            return job, b"x" * (8 << 20)

        if __name__ == "__main__":
            stream = _decoded_stream(list(range(64)), 2, decode=big)
            try:
                for n, _ in enumerate(stream):
                    if n == 2:
                        time.sleep(1.0)  # the workers fill the pipe meanwhile
                        raise OSError(28, "No space left on device")
            except OSError:
                stream.close()  # as _write_shards does, whatever the error
            print("children", len(mp.active_children()), flush=True)
    """)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "children 0" in done.stdout


def test_build_workers_are_capped(tiny_esc50, tmp_path):
    from esc50tf.data.tfrecords import BuildConfig, build_tfrecords

    manifest = build_tfrecords(tiny_esc50, tmp_path / "tfr",
                               BuildConfig(sample_rate=8000, clip_seconds=1.0),
                               workers=1000, progress=False, log=lambda _: None)
    assert manifest["build"]["workers"] <= min(os.cpu_count(), 40)
    assert not list((tmp_path / "tfr").glob(".esc50tf-staging-*"))


# --- integrity at open ----------------------------------------------------------------------

@pytest.fixture
def tfr_copy(tiny_tfrecords, tmp_path):
    import shutil

    dst = tmp_path / "tfr"
    shutil.copytree(tiny_tfrecords, dst)
    return dst


def _edit_manifest(folder, change):
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_a_deleted_clips_csv_row_is_named(tfr_copy):
    from esc50tf.data.dataset import TFRecordFolder

    lines = (tfr_copy / "clips.csv").read_text().splitlines(True)
    (tfr_copy / "clips.csv").write_text("".join(lines[:-1]))
    with pytest.raises(Esc50Error, match=r"clips.csv: sha256 differs"):
        TFRecordFolder(tfr_copy)


@pytest.mark.parametrize("change, message", [
    (lambda m: m["counts"].update(total=m["counts"]["total"] + 1), r"counts.total 41 differs"),
    (lambda m: m["counts"]["per_fold"].update({"1": 9}), r"counts.per_fold"),
    (lambda m: m["shards"][0].update(file="../../etc/passwd"),
     r"shard name '../../etc/passwd' is not a shard file"),
    (lambda m: m["shards"][0].update(num_records=-3), r"num_records -3 is not a count"),
    (lambda m: m["config"].update(num_samples=-5), r"num_samples -5 is not sample_rate"),
    (lambda m: m["config"].update(sample_rate=-8000), r"invalid config"),
    (lambda m: m.update(num_classes=7), r"num_classes 7"),
])
def test_edited_manifest_numbers_are_named(tfr_copy, change, message):
    from esc50tf.data.dataset import TFRecordFolder

    _edit_manifest(tfr_copy, change)
    with pytest.raises(Esc50Error, match=message):
        TFRecordFolder(tfr_copy)


def test_a_flipped_byte_stops_train_before_any_epoch(tfr_copy, tmp_path, capsys):
    from esc50tf.cli import main

    shard = sorted(tfr_copy.glob("fold1-*.tfrecord"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    out = tmp_path / "run"
    assert main(["train", "--model", "cnn_small", "--data", str(tfr_copy), "--out", str(out),
                 "--test-fold", "1", "--epochs", "1", "--batch-size", "8", "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and shard.name in err[0] and "(fold 1)" in err[0]
    assert "inspect --verify" in err[0]
    assert not out.exists()


def test_two_swapped_shards_are_named(tfr_copy):
    from esc50tf.data.dataset import TFRecordFolder

    # Two shards of one size from different folds: only the hashes tell them apart.
    shards = sorted(tfr_copy.glob("fold*.tfrecord"))
    a, b = next((x, y) for x in shards for y in shards
                if x.name[:5] != y.name[:5] and x.stat().st_size == y.stat().st_size)
    pa, pb = a.read_bytes(), b.read_bytes()
    a.write_bytes(pb)
    b.write_bytes(pa)
    folder = TFRecordFolder(tfr_copy)
    with pytest.raises(Esc50Error, match=rf"{a.name} \(fold {a.name[4]}\): sha256 differs"):
        folder.check_hashes()


# --- atomic checkpoints ---------------------------------------------------------------------

def _tiny_model():
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    return model


def test_a_torn_backup_is_named_with_the_way_to_start_over(tmp_path):
    from esc50tf.tasks.keras_task import atomic_backup

    model = _tiny_model()
    backup = tmp_path / "backup"
    backup.mkdir()
    model.save_weights(tmp_path / "w.weights.h5")
    whole = (tmp_path / "w.weights.h5").read_bytes()
    (backup / "latest.weights.h5").write_bytes(whole[: len(whole) // 2])  # kill -9 mid-write
    x, y = np.zeros((4, 3), "float32"), np.zeros((4, 2), "float32")
    with pytest.raises(Esc50Error, match=rf"{backup}: the backup .* is damaged.*delete {backup}"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[atomic_backup(backup)])


def test_a_backup_write_that_dies_leaves_the_previous_one(tmp_path):
    from esc50tf.tasks.keras_task import atomic_backup

    model = _tiny_model()
    cb = atomic_backup(tmp_path / "backup")
    cb.set_model(model)
    cb.on_epoch_end(0)
    before = (tmp_path / "backup" / "latest.weights.h5").read_bytes()

    def dies_midway(filepath, overwrite=True):
        with open(filepath, "wb") as f:
            f.write(before[:100])
        raise OSError(28, "No space left on device")

    model.save_weights = dies_midway
    with pytest.raises(OSError):
        cb.on_epoch_end(1)
    assert (tmp_path / "backup" / "latest.weights.h5").read_bytes() == before
    assert json.loads((tmp_path / "backup" / "training_metadata.json").read_text())["epoch"] == 1
    assert sorted(p.name for p in (tmp_path / "backup").iterdir()) == [
        "latest.weights.h5", "training_metadata.json"]
