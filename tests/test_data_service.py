"""tf.data service: addresses, a loopback cluster serving the training pipeline, the CLI servers."""

import collections
import gc
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from esc50tf.data import service as data_service
from esc50tf.data import splits
from esc50tf.data.dataset import DatasetOptions, TFRecordFolder
from esc50tf.errors import Esc50Error

TIMEOUT_S = 300  # an upper bound on start-up under load; the tests wait on log lines


@pytest.mark.parametrize("address, expected", [
    ("grpc://10.0.0.2:5050", ("grpc", "10.0.0.2:5050")),
    ("localhost:5050", ("grpc", "localhost:5050")),
    ("grpc://my-host.internal:6000", ("grpc", "my-host.internal:6000")),
])
def test_parse_address(address, expected):
    assert data_service.parse_address(address) == expected
    assert data_service.service_target(address) == f"grpc://{expected[1]}"


@pytest.mark.parametrize("address", ["", "localhost", "grpc://host:0", "grpc://host:99999",
                                     "http://host:80", "grpc://host:port"])
def test_bad_address_names_the_flag(address):
    with pytest.raises(Esc50Error, match="--data-service"):
        data_service.parse_address(address)


def test_processing_mode():
    assert data_service.processing_mode(repeat=False) == "distributed_epoch"
    assert data_service.processing_mode(repeat=True) == "parallel_epochs"


@pytest.fixture(scope="module")
def cluster():
    """A dispatcher and two workers in this process, on loopback ports."""
    dispatcher = data_service.start_dispatcher(port=0)
    address = data_service.dispatcher_address(dispatcher)
    workers = [data_service.start_worker(address, host="127.0.0.1") for _ in range(2)]
    try:
        data_service.wait_for_workers(dispatcher, 2, timeout=30)
        yield dispatcher, workers
    finally:
        gc.collect()  # drops finished iterators, so their tasks end before the workers stop
        for w in workers:
            w.stop()
        dispatcher.stop()


def _filenames(ds):
    return [n.decode() for _, _, meta in ds for n in meta["filename"].numpy()]


def test_distributed_epoch_serves_every_clip_exactly_once(cluster, tiny_tfrecords):
    dispatcher, workers = cluster
    index = splits.load_index(tiny_tfrecords)
    split = splits.test_fold_split(index, test_fold=1)  # training side: a filename subset
    ds = TFRecordFolder(tiny_tfrecords).dataset(split.train, DatasetOptions(
        training=True, batch_size=5, seed=0, with_metadata=True, drop_remainder=False,
        data_service=dispatcher.target))
    expected = sorted(split.train.filenames)
    for _epoch in range(2):
        seen = _filenames(ds)
        assert sorted(seen) == expected  # each clip once, none missing, none twice
    assert all(w._num_tasks() >= 1 for w in workers)  # both workers took part  # noqa: SLF001


def test_training_batches_from_the_service_are_static(cluster, tiny_tfrecords):
    dispatcher, _ = cluster
    selection = splits.Selection((2, 3, 4, 5))  # 32 clips over 8 shards
    ds = TFRecordFolder(tiny_tfrecords).dataset(selection, DatasetOptions(
        training=True, batch_size=6, seed=0, with_metadata=True, data_service=dispatcher.target))
    assert ds.element_spec[0].shape.as_list() == [6, 8000]
    seen = _filenames(ds)
    counts = collections.Counter(seen)
    # Workers keep partial batches and the client rebatches: only the epoch's last
    # partial batch is dropped (32 = 5 x 6 + 2), never a clip per worker.
    assert len(seen) == 30 and max(counts.values()) == 1


@pytest.mark.slow
def test_train_reads_its_training_input_from_the_service(cluster, tiny_tfrecords, tmp_path):
    import json

    from esc50tf.run_config import resolve_config
    from esc50tf.train import train

    dispatcher, workers = cluster
    tasks_before = sum(w._num_tasks() for w in workers)  # noqa: SLF001
    over = {"train": {"data": str(tiny_tfrecords), "out": str(tmp_path / "run"),
                      "protocol": "test-fold", "test_fold": 1, "epochs": 2, "batch_size": 8,
                      "export": False, "data_service": dispatcher.target},
            "features": {"n_fft": 256, "hop_length": 128, "n_mels": 16},
            "model": {"rnn_units": 4, "dense_units": 8}}  # the default preset: mixup on workers
    report = train(resolve_config("gru", overrides=over), verbose=0)
    assert report["folds"][0]["epochs_run"] == 2
    assert sum(w._num_tasks() for w in workers) >= tasks_before + 2  # noqa: SLF001
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["data_service"] == dispatcher.target


class _Server:
    """An `esc50tf data-service` subprocess whose stderr lines are read by a thread."""

    def __init__(self, args, env):
        self.proc = subprocess.Popen([sys.executable, "-m", "esc50tf.cli", "data-service", *args],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, needle, timeout=TIMEOUT_S):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if needle in line:
                return line
        raise AssertionError(f"no {needle!r} from {self.proc.args}: {''.join(self.seen)[-2000:]}")

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=TIMEOUT_S)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.slow
def test_cli_servers_start_serve_and_stop_on_ctrl_c():
    import socket

    import tensorflow as tf

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    dispatcher = _Server(["dispatcher", "--port", str(port)], env)
    worker = _Server(["worker", "--dispatcher", f"127.0.0.1:{port}", "--host", "127.0.0.1"], env)
    try:
        line = dispatcher.wait_for("dispatcher listening on grpc://")
        assert line.rstrip().endswith(f":{port}; Ctrl-C stops it")
        worker.wait_for("worker (dispatcher 127.0.0.1:")
        ds = tf.data.Dataset.range(10).apply(tf.data.experimental.service.distribute(
            "distributed_epoch", f"grpc://127.0.0.1:{port}"))
        assert sorted(int(v) for v in ds) == list(range(10))
        for server, name in ((worker, "worker"), (dispatcher, "dispatcher")):
            assert server.stop() == 0
            assert "stopped" in server.wait_for(f"tf.data service {name}", timeout=10)
    finally:
        worker.kill()
        dispatcher.kill()
