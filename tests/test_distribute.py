"""Strategies, flag combinations, sharded input, remote paths and real multi-device training.

The multi-device tests run in subprocesses: logical CPU devices must be set up
before TensorFlow initialises, and each MultiWorkerMirroredStrategy worker is
its own process (TF_CONFIG on 127.0.0.1 ports).
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from esc50tf import distribute
from esc50tf.cli import main
from esc50tf.data import splits
from esc50tf.data import tfrecords as tfr
from esc50tf.data.dataset import DatasetOptions, TFRecordFolder
from esc50tf.data.splits import Selection
from esc50tf.errors import Esc50Error

TIMEOUT_S = 150
_TWO_WORKERS = {"cluster": {"worker": ["127.0.0.1:20001", "127.0.0.1:20002"]},
                "task": {"type": "worker", "index": 1}}


# --- flags and their combinations ------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("gpu:0,gpu:1", ["/gpu:0", "/gpu:1"]),
    ("0, 1", ["/gpu:0", "/gpu:1"]),
    ("cpu:0", ["/cpu:0"]),
    (["/device:GPU:0", "/job:localhost/replica:0/task:0/device:GPU:1"],
     ["/device:GPU:0", "/job:localhost/replica:0/task:0/device:GPU:1"]),
    (None, None),
])
def test_parse_devices(text, expected):
    assert distribute.parse_devices(text) == expected


@pytest.mark.parametrize("text", ["gpu0", "gpu:0,gpu:0", "", "npu:1"])
def test_parse_devices_rejects_nonsense(text):
    with pytest.raises(Esc50Error, match="--devices"):
        distribute.parse_devices(text)


def test_parse_tf_config():
    info = distribute.parse_tf_config(json.dumps(_TWO_WORKERS))
    assert (info["num_workers"], info["task_index"], info["is_chief"]) == (2, 1, False)
    first = dict(_TWO_WORKERS, task={"type": "worker", "index": 0})
    assert distribute.parse_tf_config(json.dumps(first))["is_chief"]
    with_chief = {"cluster": {"chief": ["a:1"], "worker": ["b:2"]},
                  "task": {"type": "worker", "index": 0}}
    info = distribute.parse_tf_config(json.dumps(with_chief))
    assert (info["num_workers"], info["is_chief"]) == (2, False)


@pytest.mark.parametrize("config, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"task": {"type": "worker", "index": 0}}', 'no "cluster"'),
    ('{"cluster": {"worker": ["a:1"]}}', 'no "task"'),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "out of range"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "not a job"),
    ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}', "not host:port"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}',
     "parameter servers"),
])
def test_malformed_tf_config_is_a_clear_error(config, message):
    with pytest.raises(Esc50Error, match="TF_CONFIG") as err:
        distribute.parse_tf_config(config)
    assert message in str(err.value)


@pytest.mark.parametrize("strategy, kwargs, message", [
    ("tpu", dict(devices="gpu:0"), "--devices goes with"),
    ("multiworker", dict(devices="gpu:0,gpu:1"), "--devices goes with"),
    ("default", dict(devices="gpu:0"), "--devices goes with"),
    ("one_device", dict(devices="gpu:0,gpu:1"), "exactly one"),
    ("mirrored", dict(tpu="my-tpu"), "--tpu goes with --strategy tpu or auto"),
    ("auto", dict(tpu="local", devices="gpu:0"), "exclude each other"),
    ("mirrored", dict(jit_compile=True, deterministic=True), "--jit-compile and --deterministic"),
    ("tpu", dict(jit_compile=True), "always XLA-compiled"),
    ("tpu", dict(mixed_precision="fp16"), "bfloat16"),
    ("auto", dict(data_service="http://host:5050"), "grpc"),
    ("auto", dict(data_service="host"), "--data-service"),
    ("nccl", {}, "unknown --strategy"),
])
def test_invalid_combinations_name_the_flags(strategy, kwargs, message, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(Esc50Error, match=message):
        distribute.check_options(strategy, **kwargs)


def test_multiworker_needs_a_valid_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(Esc50Error, match="needs TF_CONFIG"):
        distribute.check_options("multiworker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}')
    with pytest.raises(Esc50Error, match="TF_CONFIG is not valid JSON"):
        distribute.check_options("multiworker")
    monkeypatch.setenv("TF_CONFIG", json.dumps(_TWO_WORKERS))
    distribute.check_options("multiworker")  # valid


def test_valid_combinations_pass(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    distribute.check_options("mirrored", devices="gpu:0,gpu:1", mixed_precision="fp16")
    distribute.check_options("auto", tpu="local", mixed_precision="bf16")
    distribute.check_options("one_device", devices="cpu:0", jit_compile=True)
    distribute.check_options("default", data_service="grpc://10.0.0.2:5050")


def test_jit_compile_over_several_replicas_is_refused():
    class TwoReplicas:
        num_replicas_in_sync = 2

    class OneReplica:
        num_replicas_in_sync = 1

    with pytest.raises(Esc50Error, match="--jit-compile with --strategy mirrored"):
        distribute.check_strategy(TwoReplicas(), "mirrored", jit_compile=True)
    distribute.check_strategy(OneReplica(), "mirrored", jit_compile=True)
    distribute.check_strategy(TwoReplicas(), "mirrored", jit_compile=False)


def test_multiworker_replicas_must_divide_over_workers(monkeypatch):
    class ThreeReplicas:
        num_replicas_in_sync = 3

    monkeypatch.setenv("TF_CONFIG", json.dumps(_TWO_WORKERS))
    with pytest.raises(Esc50Error, match="3 replicas over 2 workers"):
        distribute.check_strategy(ThreeReplicas(), "multiworker")


@pytest.mark.parametrize("tpu_hint, gpus, args, expected", [
    (True, 0, {}, "tpu"),
    (True, 4, {}, "tpu"),
    (False, 2, {}, "mirrored"),
    (False, 1, {}, "default"),
    (False, 0, {}, "default"),
    (False, 0, dict(tpu="local"), "tpu"),
    (True, 0, dict(devices="gpu:0,gpu:1"), "mirrored"),
    (False, 2, dict(devices="gpu:1"), "one_device"),
])
def test_auto_selection(tpu_hint, gpus, args, expected, monkeypatch):
    monkeypatch.setattr(distribute, "_tpu_hint", lambda: tpu_hint)
    monkeypatch.setattr(distribute, "_gpus", lambda: [f"GPU:{i}" for i in range(gpus)])
    assert distribute.resolve_kind("auto", **args) == expected
    assert distribute.resolve_kind("mirrored", **args) == "mirrored"  # explicit names stay


def test_auto_on_this_cpu_machine_is_the_default_strategy(monkeypatch):
    import tensorflow as tf

    monkeypatch.setattr(distribute, "_tpu_hint", lambda: False)
    strategy, kind = distribute.make_strategy("auto")
    assert kind == "default" and strategy is tf.distribute.get_strategy()
    assert distribute.num_replicas(strategy) == 1


def test_precision(monkeypatch):
    import tensorflow as tf

    monkeypatch.setattr(distribute, "_gpus", lambda: [])
    assert distribute.resolve_precision("auto", "default") == "float32"
    assert distribute.resolve_precision("auto", "tpu") == "mixed_bfloat16"
    assert distribute.resolve_precision("fp16", "mirrored") == "mixed_float16"
    with pytest.raises(Esc50Error, match="fp16"):
        distribute.resolve_precision("fp16", "tpu")
    monkeypatch.setattr(distribute, "_gpus", lambda: ["GPU:0"])
    monkeypatch.setattr(tf.config.experimental, "get_device_details",
                        lambda _gpu: {"compute_capability": (7, 0)})
    assert distribute.resolve_precision("auto", "mirrored") == "float32"
    with pytest.raises(Esc50Error, match="compute capability 8.0"):
        distribute.resolve_precision("bf16", "mirrored")
    monkeypatch.setattr(tf.config.experimental, "get_device_details",
                        lambda _gpu: {"compute_capability": (9, 0)})
    assert distribute.resolve_precision("auto", "mirrored") == "mixed_bfloat16"


def test_batch_and_learning_rate_scaling():
    assert distribute.global_batch_size(32, 4) == 128
    assert distribute.per_replica_batch_size(128, 4) == 32
    with pytest.raises(Esc50Error, match="does not divide over 4 replicas"):
        distribute.per_replica_batch_size(30, 4)
    assert distribute.scaled_learning_rate(1e-3, 8) == pytest.approx(8e-3)
    assert distribute.scaled_learning_rate(1e-3, 8, scale=False) == 1e-3


def test_cli_flags_reach_the_config():
    from esc50tf.cli import build_parser, train_config_from_args

    args = build_parser().parse_args([
        "train", "--model", "cnn_small", "--data", "gs://bucket/tfr", "--out", "gs://bucket/run",
        "--strategy", "mirrored", "--devices", "gpu:0,gpu:1", "--scale-lr",
        "--data-service", "grpc://10.0.0.2:5050"])
    t = train_config_from_args(args).train
    assert (t.strategy, t.devices, t.scale_lr, t.data_service, t.tpu) == (
        "mirrored", "gpu:0,gpu:1", True, "grpc://10.0.0.2:5050", None)
    t = train_config_from_args(build_parser().parse_args(
        ["train", "--model", "cnn_small", "--strategy", "tpu", "--tpu", "local"])).train
    assert (t.tpu, t.scale_lr) == ("local", False)


def test_train_rejects_bad_combinations_before_reading_data(tmp_path, capsys):
    code = main(["train", "--model", "cnn_small", "--data", str(tmp_path / "nothing"),
                 "--out", str(tmp_path / "run"), "--strategy", "tpu", "--devices", "gpu:0"])
    assert code == 1
    err = capsys.readouterr().err
    assert "--devices goes with" in err and "manifest" not in err
    assert not (tmp_path / "run").exists()


# --- sharded input ---------------------------------------------------------------------------

def test_auto_shard_policy(tiny_tfrecords):
    import tensorflow as tf

    policy = tf.data.experimental.AutoShardPolicy
    train = Selection((2, 3, 4, 5))  # 8 shard files

    def policy_of(ds):
        return ds.options().experimental_distribute.auto_shard_policy

    local = TFRecordFolder(tiny_tfrecords).dataset(train, DatasetOptions(
        training=True, batch_size=8, seed=0))
    assert policy_of(local) == policy.AUTO  # unchanged for one input pipeline
    by_file = TFRecordFolder(tiny_tfrecords).dataset(train, DatasetOptions(
        training=True, batch_size=8, seed=0, num_workers=8))
    assert policy_of(by_file) == policy.FILE
    assert by_file.element_spec[0].shape.as_list() == [8, 8000]  # static for training
    with pytest.warns(UserWarning, match="--shards-per-fold"):
        by_data = TFRecordFolder(tiny_tfrecords).dataset(train, DatasetOptions(
            training=True, batch_size=8, seed=0, num_workers=9))
    assert policy_of(by_data) == policy.DATA
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TFRecordFolder(tiny_tfrecords).dataset(train, DatasetOptions(
            training=True, batch_size=8, num_workers=2))


def test_repeat_makes_an_endless_reshuffled_stream(tiny_tfrecords):
    ds = TFRecordFolder(tiny_tfrecords).dataset(Selection((1,)), DatasetOptions(
        training=True, batch_size=4, seed=0, num_workers=2, repeat=True))
    labels = [y.numpy() for _, y in ds.take(6)]  # 8 clips: 3 passes
    assert all(y.shape == (4,) for y in labels)
    passes = np.concatenate(labels).reshape(3, 8)
    assert all(sorted(p) == sorted(passes[0]) for p in passes)


# --- gs:// and other TensorFlow file systems -------------------------------------------------

def _copy_to(src, url):
    import tensorflow as tf

    tf.io.gfile.makedirs(url)
    for p in sorted(src.iterdir()):
        tf.io.gfile.copy(str(p), f"{url}/{p.name}", overwrite=True)
    return url


def test_remote_tfrecord_folder_through_gfile(tiny_tfrecords):
    """ram:// goes through tf.io.gfile exactly like gs:// would."""
    url = _copy_to(tiny_tfrecords, "ram://esc50tf-test/tfr")
    assert tfr.join_path(url, "a.tfrecord") == "ram://esc50tf-test/tfr/a.tfrecord"
    manifest = tfr.read_manifest(url)
    assert manifest == tfr.read_manifest(tiny_tfrecords)
    tfr.verify_shards(url, manifest, full=True)
    index = splits.load_index(url)
    assert index.equals(splits.load_index(tiny_tfrecords))
    split = splits.test_fold_split(index, 1)

    def names(root):
        ds = TFRecordFolder(root).dataset(split.val, DatasetOptions(
            batch_size=4, with_metadata=True))
        return [n.decode() for _, _, m in ds for n in m["filename"].numpy()]

    assert names(url) == names(tiny_tfrecords) and len(names(url)) == len(split.val.filenames)
    with pytest.raises(Esc50Error, match="no manifest.json"):
        tfr.read_manifest("ram://esc50tf-test/nothing")


@pytest.mark.slow
def test_remote_run_folder_is_written_and_resumed(tiny_tfrecords, capsys):
    import tensorflow as tf

    from esc50tf.run_config import resolve_config
    from esc50tf.train import train

    out = "ram://esc50tf-test/run"
    over = {"train": {"data": str(tiny_tfrecords), "out": out, "protocol": "test-fold",
                      "test_fold": 1, "epochs": 1, "batch_size": 8, "export": False,
                      "strategy": "default"},
            "features": {"n_fft": 256, "hop_length": 128, "n_mels": 16},
            "model": {"rnn_units": 4, "dense_units": 8}}
    cfg = resolve_config("gru", overrides=over)
    report = train(cfg, verbose=0)
    for name in ("config.json", "classes.json", "report.json", "report.md", "curves.png",
                 "fold1/result.json", "fold1/history.csv", "fold1/model.keras"):
        assert tf.io.gfile.exists(f"{out}/{name}"), name
    assert not tf.io.gfile.exists(f"{out}/fold1/backup")  # removed when fit ended
    saved = json.loads(tf.io.gfile.GFile(f"{out}/report.json").read())
    assert saved["accuracy"] == report["accuracy"]
    capsys.readouterr()
    train(cfg, verbose=0)  # resumes from the remote copy alone
    assert "already done" in capsys.readouterr().err


# --- real multi-device training (subprocesses) -----------------------------------------------

_RUN_CONFIG = """
from esc50tf.run_config import resolve_config


def run_config(data, out, strategy, batch_size, devices=None, epochs=2, val_fraction=0.0,
               lr=0.05, scale_lr=False):
    over = {"train": {"data": data, "out": out, "protocol": "test-fold", "test_fold": 1,
                      "epochs": epochs, "batch_size": batch_size, "strategy": strategy,
                      "devices": devices, "optimizer": "sgd", "lr": lr, "scale_lr": scale_lr,
                      "val_fraction": val_fraction, "export": False,
                      # Keras clips each replica's share of the gradient before the
                      # all-reduce (train warns), so clipping would differ by design.
                      "clipnorm": 0.0},
            "features": {"n_fft": 256, "hop_length": 128, "n_mels": 16},
            # no dropout, no augmentation: nothing random after initialisation
            "model": {"dropout": 0.0, "rnn_units": 8, "dense_units": 8},
            "augment": {"time_shift_seconds": 0.0, "freq_mask_param": 0, "time_mask_param": 0,
                        "mix": "none"}}
    return resolve_config("gru", overrides=over)


def save_weights(run_dir, path):
    import keras
    import numpy as np

    model = keras.saving.load_model(f"{run_dir}/fold1/model.keras")
    np.savez(path, *model.get_weights())
"""

_MIRRORED = """
import json, os, sys
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import dataclasses
import numpy as np
from esc50tf.models.build import build_model
from esc50tf.train import train
from runconfig import run_config, save_weights

data, out = sys.argv[1], sys.argv[2]
reports = {}
# Same global batch (8) and, through --scale-lr on two replicas, the same learning rate.
for name, strategy, batch, devices, lr, scale in (("one", "one_device", 8, "cpu:0", 0.05, False),
                                                  ("two", "mirrored", 4, "cpu:0,cpu:1", 0.025, True)):
    cfg = run_config(data, f"{out}/{name}", strategy, batch, devices, lr=lr, scale_lr=scale)
    reports[name] = train(cfg, verbose=0)
    save_weights(f"{out}/{name}", f"{out}/{name}.npz")
initial = build_model(cfg.model, dataclasses.replace(cfg.features, sample_rate=8000), 4, 8000,
                      cfg.augment, seed=cfg.train.seed)
np.savez(f"{out}/initial.npz", *initial.get_weights())
print("RESULT " + json.dumps({k: [r["replicas"], r["global_batch_size"], r["strategy"],
                                  r["learning_rate"]] for k, r in reports.items()}))
"""

_WORKER = """
import json, sys
from esc50tf.train import train
from runconfig import run_config, save_weights

data, out = sys.argv[1], sys.argv[2]
report = train(run_config(data, out, "multiworker", 4, val_fraction=0.1), verbose=0)
index = json.loads(__import__("os").environ["TF_CONFIG"])["task"]["index"]
run_dir = out if index == 0 else f"{out}-worker{index}"
save_weights(run_dir, f"{out}-weights{index}.npz")
print("RESULT " + json.dumps([report["replicas"], report["global_batch_size"], report["strategy"]]))
"""


def _script(tmp_path, name, body):
    (tmp_path / "runconfig.py").write_text(textwrap.dedent(_RUN_CONFIG))
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def _env(tmp_path, **extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
               TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _result(proc_out):
    lines = [line for line in proc_out.splitlines() if line.startswith("RESULT ")]
    assert lines, proc_out
    return json.loads(lines[-1][len("RESULT "):])


def _weights(path):
    with np.load(path) as z:
        return [z[k] for k in z.files]


@pytest.mark.slow
def test_mirrored_over_two_cpus_equals_one_device(tiny_tfrecords, tmp_path):
    script = _script(tmp_path, "mirrored.py", _MIRRORED)
    proc = subprocess.run([sys.executable, str(script), str(tiny_tfrecords), str(tmp_path)],
                          env=_env(tmp_path), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = _result(proc.stdout)
    assert result == {"one": [1, 8, "one_device", 0.05], "two": [2, 8, "mirrored", 0.05]}
    assert "global batch 8 (4 per replica)" in proc.stderr
    one, two = _weights(tmp_path / "one.npz"), _weights(tmp_path / "two.npz")
    initial = _weights(tmp_path / "initial.npz")
    assert len(one) == len(two) == len(initial)
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    moved = max(float(np.abs(a - i).max()) for a, i in zip(one, initial))
    assert moved > 1e-3  # training changed the weights, so the equality means something


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_two_process_multiworker_training_agrees(tiny_tfrecords, tmp_path):
    script = _script(tmp_path, "worker.py", _WORKER)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    out = tmp_path / "run"
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, str(script), str(tiny_tfrecords), str(out)],
            env=_env(tmp_path, TF_CONFIG=tf_config),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=TIMEOUT_S))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, (stdout, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr[-4000:]
        assert _result(stdout) == [2, 8, "multiworker"]
        assert "auto-sharded by FILE over 2 workers" in stderr
    chief, worker = _weights(f"{out}-weights0.npz"), _weights(f"{out}-weights1.npz")
    for a, b in zip(chief, worker):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # The chief wrote the run folder, worker 1 its own copy beside it.
    assert (out / "report.json").is_file() and (tmp_path / "run-worker1" / "report.json").is_file()
    history = (out / "fold1" / "history.csv").read_text().strip().splitlines()
    assert len(history) == 3  # header + 2 epochs
    assert history == (tmp_path / "run-worker1" / "fold1" / "history.csv").read_text().strip().splitlines()
