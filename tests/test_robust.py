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
    from esc50tf.data.build import build_tfrecords
    from esc50tf.data.tfrecords import BuildConfig

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
        from esc50tf.data.decode import decoded_stream

        def big(job):
            return job, b"x" * (8 << 20)

        if __name__ == "__main__":
            stream = decoded_stream(list(range(64)), 2, decode=big)
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
    from esc50tf.data.build import build_tfrecords
    from esc50tf.data.tfrecords import BuildConfig

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
    from esc50tf.tasks.callbacks import atomic_backup

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
    from esc50tf.tasks.callbacks import atomic_backup

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


# --- a full disk --------------------------------------------------------------------------

def test_a_full_disk_during_overwrite_keeps_the_old_build(tiny_esc50, tmp_path, monkeypatch,
                                                          capsys):
    import errno

    from esc50tf.cli import main
    from esc50tf.data import build

    out = tmp_path / "tfr"
    args = ["build-tfrecords", "--data-dir", str(tiny_esc50), "--out", str(out),
            "--sample-rate", "8000", "--clip-seconds", "1", "--workers", "1"]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full(path, rows):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(build, "_write_clips_csv", full)
    capsys.readouterr()
    assert main([*args, "--shards-per-fold", "1", "--overwrite"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("esc50tf build-tfrecords: error: ")
    assert "clips.csv: No space left on device [errno 28]" in err[-1]
    assert not any("Traceback" in line for line in err)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old build whole


def test_stale_staging_of_a_dead_build_is_removed(tiny_esc50, tmp_path):
    from esc50tf.data.build import build_tfrecords
    from esc50tf.data.tfrecords import BuildConfig

    out = tmp_path / "tfr"
    (out / ".esc50tf-staging-999999").mkdir(parents=True)  # what kill -9 leaves
    (out / ".esc50tf-staging-999999" / "fold1-00000-of-00002.tfrecord").write_bytes(b"x")
    build_tfrecords(tiny_esc50, out, BuildConfig(sample_rate=8000, clip_seconds=1.0),
                    workers=1, progress=False, log=lambda _: None)
    assert not list(out.glob(".esc50tf-staging-*"))


def test_system_errors_are_one_line():
    import errno

    from esc50tf.errors import system_error_line

    assert system_error_line(OSError(errno.EROFS, "Read-only file system", "/ro/out")) == (
        "/ro/out: Read-only file system [errno 30]")
    assert system_error_line(RuntimeError("h5py: No space left on device\n  more")) == (
        "h5py: No space left on device")
    assert system_error_line(ValueError("a bug")) is None


# --- non-finite numbers -----------------------------------------------------------------------

def test_a_nonfinite_loss_stops_training_naming_the_learning_rate():
    from esc50tf.run_config import TrainConfig
    from esc50tf.tasks.callbacks import run_guard

    guard = run_guard(TrainConfig(lr=0.5))
    guard.on_epoch_begin(2)
    guard.on_train_batch_end(0, {"loss": 1.2})
    with pytest.raises(Esc50Error, match=r"loss became nan at epoch 3, batch 5.*--lr 0.5"):
        guard.on_train_batch_end(4, {"loss": float("nan")})


@pytest.mark.parametrize("flag", [["--lr", "inf"], ["--seed", "-1"], ["--lr", "nan"]])
def test_nonfinite_or_negative_settings_are_refused(flag, tiny_tfrecords, tmp_path, capsys):
    from esc50tf.cli import main

    try:
        rc = main(["train", "--model", "cnn_small", "--data", str(tiny_tfrecords),
                   "--out", str(tmp_path / "run"), *flag])
    except SystemExit as exit_:  # refused by the flag's parser
        rc = exit_.code
    assert rc != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and flag[1] in err
    assert not (tmp_path / "run").exists()


def test_predict_refuses_nonfinite_outputs_naming_the_file(tmp_path):
    import keras
    import soundfile as sf

    from esc50tf.predict import Predictor, predict_files

    model = keras.Sequential([keras.Input((800,)), keras.layers.Dense(3, kernel_initializer="ones"),
                              keras.layers.Softmax()])
    loud = tmp_path / "loud.wav"
    sf.write(loud, np.full(800, 3e38, "float32"), 8000, subtype="FLOAT")  # finite samples
    quiet = tmp_path / "quiet.wav"
    sf.write(quiet, np.full(800, 0.1, "float32"), 8000, subtype="FLOAT")
    results, errors = predict_files(Predictor([model], ["a", "b", "c"], 8000), [loud, quiet])
    assert [r["file"] for r in results] == [str(quiet)]
    assert errors[0][0] == str(loud) and "not finite" in errors[0][1]


def test_json_output_is_always_valid_json(tmp_path):
    from esc50tf.io import dumps_json, write_json

    value = {"a": float("nan"), "b": [np.float32("inf"), 1.5], "c": -float("inf")}
    assert json.loads(dumps_json(value)) == {"a": None, "b": [None, 1.5], "c": None}
    write_json(tmp_path / "x.json", value)
    assert "NaN" not in (tmp_path / "x.json").read_text()
    with pytest.raises(ValueError):
        write_json(tmp_path / "y.json", value, allow_nan=False)


def test_the_model_outputs_check_names_what_made_them():
    from esc50tf.models.build import check_finite_outputs

    check_finite_outputs(np.full((3, 2), 0.5), "fine")
    with pytest.raises(Esc50Error, match=r"fold1: the trained model: .* 1 of 3"):
        check_finite_outputs(np.array([[0.5, 0.5], [np.nan, np.nan], [1, 0]]),
                             "fold1: the trained model")


# --- the smaller cases (the point 15) -------------------------------------------------

def test_an_event_of_a_clip_shorter_than_a_window_stays_inside_it():
    from esc50tf.timeline import merge_events

    (event,) = merge_events([0.0], [0], [0.9], ["dog"], window=0.5, hop=0.25, duration=0.01,
                            threshold=0.5)
    assert (event["start"], event["end"]) == (0.0, 0.01)


def test_a_wav_declaring_1_hz_is_refused(tmp_path):
    import soundfile as sf

    from esc50tf.data.audio import load_audio

    path = tmp_path / "one_hz.wav"
    sf.write(path, np.zeros(100), 1, subtype="PCM_16")
    with pytest.raises(Esc50Error, match=r"one_hz.wav: its header declares 1 Hz"):
        load_audio(path, sample_rate=8000)


def test_fmax_below_fmin_names_no_sample_rate():
    from esc50tf.frontend.config import FeatureConfig

    with pytest.raises(Esc50Error, match=r"above fmin=5000") as err:
        FeatureConfig(fmin=5000, fmax=100)
    assert "22050" not in str(err.value)


def test_a_non_utf8_csv_byte_is_named_by_row(esc50_copy):
    from esc50tf.data.metadata import load_metadata

    csv = esc50_copy / "meta" / "esc50.csv"
    lines = csv.read_bytes().splitlines(True)
    lines[4] = lines[4].replace(b",", b"\xff,", 1)
    csv.write_bytes(b"".join(lines))
    with pytest.raises(Esc50Error, match=r"esc50.csv: row 5: byte 0xff at character \d+ is not"):
        load_metadata(esc50_copy)


def test_crop_longer_than_the_clips_is_refused(tiny_tfrecords, tmp_path, capsys):
    from esc50tf.cli import main

    assert main(["train", "--model", "cnn_small", "--data", str(tiny_tfrecords),
                 "--out", str(tmp_path / "run"), "--crop-seconds", "100"]) == 1
    assert "--crop-seconds 100 is longer than the 1 s clips" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# --- read-only by default ---------------------------------------------------------------------

SMALL_FRONT = ["--n-fft", "256", "--hop-length", "64", "--n-mels", "32"]


@pytest.fixture(scope="module")
def small_run(tiny_tfrecords, tmp_path_factory):
    from esc50tf.cli import main

    out = tmp_path_factory.mktemp("robust") / "run"
    assert main(["train", "--model", "cnn_small", "--data", str(tiny_tfrecords), "--out",
                 str(out), "--test-fold", "1", "--epochs", "1", "--batch-size", "8", "--quiet",
                 *SMALL_FRONT]) == 0
    return out


def _own_results(run):
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and "evaluations" not in p.parts
            and p.suffix in (".json", ".md", ".npz", ".png")}


@pytest.mark.slow
def test_evaluate_on_foreign_classes_is_refused_and_leaves_the_report(small_run, tfr_copy,
                                                                       capsys):
    from esc50tf.cli import main

    before = _own_results(small_run)
    _edit_manifest(tfr_copy, lambda m: m["classes"][1].update(category="siren"))
    assert main(["evaluate", str(small_run), "--data", str(tfr_copy)]) == 1
    err = capsys.readouterr().err
    assert "not in the data: " in err and "not in the run: siren" in err
    assert _own_results(small_run) == before


@pytest.mark.slow
def test_evaluate_on_other_data_writes_beside_the_run(small_run, tfr_copy, capsys):
    from esc50tf.cli import main

    before = _own_results(small_run)
    assert main(["evaluate", str(small_run), "--data", str(tfr_copy)]) == 0
    assert _own_results(small_run) == before  # byte-identical
    other = small_run / "evaluations" / tfr_copy.name
    assert json.loads((other / "report.json").read_text())["dataset"]["path"] == str(tfr_copy)
    assert (other / "fold1" / "predictions.npz").is_file()
    assert str(other) in capsys.readouterr().out


@pytest.mark.slow
def test_evaluate_finds_the_runs_own_moved_data_and_rewrites_its_report(small_run, tfr_copy,
                                                                         tmp_path, capsys):
    """The recorded folder is gone and --data holds TFRecords of the run's identity (a folder
    above them will do): the run's own data, moved, so the run's own report is rewritten."""
    import shutil

    from esc50tf.cli import main

    run = tmp_path / "moved-run"
    shutil.copytree(small_run, run, ignore=shutil.ignore_patterns("evaluations"))
    config = json.loads((run / "config.json").read_text())
    config["train"]["data"] = str(tmp_path / "was-here")
    (run / "config.json").write_text(json.dumps(config))
    assert main(["evaluate", str(run)]) == 1
    assert "moved or deleted?" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--data", str(tfr_copy.parent)]) == 0
    assert not (run / "evaluations").exists()
    report = json.loads((run / "report.json").read_text())
    assert report["dataset"]["path"] == str(tfr_copy)


# --- a data folder rebuilt under a reader -----------------------------------------------------

def test_a_rebuilt_folder_is_noticed(tfr_copy):
    from esc50tf.data.dataset import TFRecordFolder
    from esc50tf.io import write_json

    folder = TFRecordFolder(tfr_copy)
    folder.check_unchanged()
    write_json(tfr_copy / "manifest.json", folder.manifest)  # what a rebuild's last step does
    with pytest.raises(Esc50Error, match=r"replaced or removed while this command was reading"):
        folder.check_unchanged()


@pytest.mark.slow
def test_train_stops_at_once_when_its_data_is_rebuilt(tfr_copy, tmp_path):
    import keras

    from esc50tf.io import write_json
    from esc50tf.run_config import resolve_config
    from esc50tf.train import train

    manifest = json.loads((tfr_copy / "manifest.json").read_text())

    def rebuild(epoch, logs=None):
        if epoch == 0:
            write_json(tfr_copy / "manifest.json", manifest)

    cfg = resolve_config("cnn_small", overrides={
        "train": {"data": str(tfr_copy), "out": str(tmp_path / "run"), "epochs": 3,
                  "batch_size": 8, "protocol": "test-fold", "test_fold": 1, "export": False},
        "features": {"n_fft": 256, "hop_length": 64, "n_mels": 32}})
    epochs = []
    with pytest.raises(Esc50Error, match=r"replaced or removed while"):
        train(cfg, verbose=0, callbacks=[keras.callbacks.LambdaCallback(
            on_epoch_end=rebuild, on_epoch_begin=lambda e, logs=None: epochs.append(e))])
    assert epochs == [0, 1]  # stopped in the second epoch's first batch


# --- tf.data service ----------------------------------------------------------------------------

@pytest.mark.slow
def test_a_lost_data_service_becomes_a_named_error_in_bounded_time(tiny_tfrecords, tmp_path):
    """A dispatcher whose only worker is gone: train stops after --data-service-timeout."""
    script = _script(tmp_path, f"""
        import sys
        from esc50tf.cli import main
        from esc50tf.data import service

        dispatcher = service.start_dispatcher(port=0)  # no worker: as after a kill -9 of it
        sys.exit(main(["train", "--model", "cnn_small", "--data", {str(tiny_tfrecords)!r},
                       "--out", {str(tmp_path / "run")!r}, "--test-fold", "1", "--epochs", "2",
                       "--batch-size", "8", "--quiet", "--n-fft", "256", "--hop-length", "64",
                       "--n-mels", "32", "--data-service", dispatcher.target,
                       "--data-service-timeout", "20"]))
    """)
    start = time.monotonic()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "no training batch from the tf.data service" in done.stderr
    assert "--data-service-timeout 20" in done.stderr
    assert time.monotonic() - start < 300


# --- a .keras file declaring more than it holds -------------------------------------------------

def _rewrite_member(src, dst, name, change):
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(info, change(data) if info.filename == name else data)


def test_a_keras_file_declaring_huge_layers_is_refused_before_loading(tmp_path):
    import keras

    from esc50tf.models.keras_file import check_keras_file
    from esc50tf.predict import load_predictor

    model = keras.Sequential([keras.Input((800,)), keras.layers.Dense(16, name="head"),
                              keras.layers.Softmax()])
    model.save(tmp_path / "small.keras")
    check_keras_file(tmp_path / "small.keras")  # an honest file passes

    def inflate(data):
        config = json.loads(data)
        for layer in config["config"]["layers"]:
            if layer["config"].get("name") == "head":
                layer["config"]["units"] = 400_000_000  # 1.6 GB of bias alone
        return json.dumps(config).encode()

    _rewrite_member(tmp_path / "small.keras", tmp_path / "huge.keras", "config.json", inflate)
    assert (tmp_path / "huge.keras").stat().st_size < 100_000
    with pytest.raises(Esc50Error, match=r"huge.keras: its config declares layers of at least "
                                         r"1.60 GB"):
        load_predictor(tmp_path / "huge.keras", sample_rate=8000)


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_sigterm_stops_the_build_pool_leaving_no_worker(tmp_path, sigint):
    """`kill PID` cleans up, also for a job started with `nohup ... &` (SIGINT ignored)."""
    import signal

    script = _script(tmp_path, f"""
        import signal, sys, time
        from esc50tf import cleanup
        from esc50tf.data.decode import decoded_stream

        def slow(job):
            time.sleep(0.5)
            return job

        if __name__ == "__main__":
            if {sigint == "ignored"}:  # as a background job's shell leaves it
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            cleanup.keep_interrupts()  # as the esc50tf command does
            try:
                for n in decoded_stream(list(range(200)), 2, decode=slow):
                    print("result", n, flush=True)
            except KeyboardInterrupt:
                print("interrupted", flush=True)
                sys.exit(130)
    """)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("result")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in out
    time.sleep(0.5)
    orphans = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = open(f"/proc/{entry}/cmdline", "rb").read()
            except OSError:
                continue
            if f"parent_pid={proc.pid}".encode() in cmd:
                orphans.append(entry)
    assert orphans == []


def test_a_save_that_cannot_fit_is_named_before_h5py_writes(tmp_path, monkeypatch):
    """h5py meeting a full disk crashed the process (exit 139); the space is checked first."""
    import collections
    import shutil

    from esc50tf.tasks.callbacks import atomic_backup

    model = _tiny_model()
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 4096, 4096))
    cb = atomic_backup(tmp_path / "backup")
    cb.set_model(model)
    with pytest.raises(Esc50Error, match=r"latest.weights.h5: No space left on device: saving "
                                         r"it needs about 1.0 MB, 0.0 MB are free"):
        cb.on_epoch_end(0)
    assert list((tmp_path / "backup").iterdir()) == []


def test_overwrite_replaces_a_build_with_a_damaged_manifest(tfr_copy, tiny_esc50):
    from esc50tf.data.build import build_tfrecords
    from esc50tf.data.tfrecords import BuildConfig

    _edit_manifest(tfr_copy, lambda m: m["counts"].update(total=-1))
    config = BuildConfig(sample_rate=8000, clip_seconds=1.0, shards_per_fold=2)
    with pytest.raises(Esc50Error, match="counts.total -1"):
        build_tfrecords(tiny_esc50, tfr_copy, config, workers=1, progress=False,
                        log=lambda _: None)
    manifest = build_tfrecords(tiny_esc50, tfr_copy, config, workers=1, overwrite=True,
                               progress=False, log=lambda _: None)
    assert manifest["counts"]["total"] == 40


def test_a_second_train_into_one_folder_is_refused(tiny_tfrecords, tmp_path, capsys):
    from esc50tf.cli import main

    out = tmp_path / "run"
    holder = _Holder(tmp_path, out, "esc50tf train --out run")
    try:
        assert main(["train", "--model", "cnn_small", "--data", str(tiny_tfrecords), "--out",
                     str(out), "--test-fold", "1", "--epochs", "1", "--quiet"]) == 1
    finally:
        holder.release()
    err = capsys.readouterr().err
    assert f"another esc50tf is writing this folder (pid {holder.pid}: esc50tf train" in err
    assert not out.exists()


@pytest.mark.slow
def test_evaluate_names_a_damaged_shard_and_leaves_the_report(small_run, tfr_copy, capsys):
    from esc50tf.cli import main

    before = sorted(small_run.rglob("*"))
    shard = sorted(tfr_copy.glob("fold1-*.tfrecord"))[0]
    data = bytearray(shard.read_bytes())
    data[100] ^= 0x01
    shard.write_bytes(bytes(data))
    assert main(["evaluate", str(small_run), "--data", str(tfr_copy)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{shard.name} (fold 1): sha256 differs" in err[0]
    assert sorted(small_run.rglob("*")) == before  # nothing written
