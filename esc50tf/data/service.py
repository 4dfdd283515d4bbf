"""tf.data service: run the input pipeline on other machines.

A tf.data service cluster is one dispatcher and any number of workers
(`esc50tf data-service dispatcher|worker`, or `start_dispatcher` /
`start_worker` here). `esc50tf train --data-service grpc://HOST:PORT` sends the
training pipeline to it: the workers read the shards, parse, shuffle, batch and
convert (and run host-side features or mixup), and the trainer only receives
batches. Validation and test sets stay local: they are small, read once per
epoch, and evaluation must see each clip exactly once in a fixed order.

Processing mode (`processing_mode`), following the tf.data service guide:

- `distributed_epoch` for a finite training epoch (the default): the
  dispatcher hands each shard file to one worker, so every clip is produced
  exactly once per epoch across all workers. Workers keep partial batches and
  the trainer rebatches them to static shapes, so no clip is lost to one
  worker's remainder (only the epoch's last partial batch is dropped, as
  locally).
- `parallel_epochs` for an endless stream (`repeat`, used by multi-worker
  training with a fixed number of steps per epoch): every worker runs the
  whole pipeline with its own unseeded shuffle and the trainers share one job,
  so the stream never ends for one trainer before the others; "once per epoch"
  has no meaning there.

Example:
>>> dispatcher = start_dispatcher(port=0)
>>> workers = [start_worker(dispatcher_address(dispatcher)) for _ in range(2)]
>>> ds = TFRecordFolder("tfrecords/").dataset(
...     selection, DatasetOptions(training=True, data_service=dispatcher.target))
"""

from __future__ import annotations

import re
import sys
import time

from esc50tf import cleanup
from esc50tf.errors import Esc50Error

PROCESSING_MODES = ("distributed_epoch", "parallel_epochs")
DEFAULT_PORT = 5050
_ADDRESS_RE = re.compile(r"^(?:(?P<protocol>[a-z+]+)://)?(?P<host>[A-Za-z0-9_.\-]+|\[[0-9a-fA-F:]+\])"
                         r":(?P<port>\d{1,5})$")


def parse_address(address):
    """`"grpc://host:port"` or `"host:port"` -> `("grpc", "host:port")`.

    Raises:
        Esc50Error: naming `--data-service` when the address is malformed.
    """
    m = _ADDRESS_RE.match(str(address or "").strip())
    if not m or not 0 < int(m["port"]) < 65536:
        raise Esc50Error(f"--data-service {address!r} is not a dispatcher address; "
                         "use grpc://HOST:PORT, e.g. grpc://10.0.0.2:5050")
    protocol = m["protocol"] or "grpc"
    if protocol != "grpc":
        raise Esc50Error(f"--data-service {address!r}: only the grpc:// protocol is supported")
    return protocol, f"{m['host']}:{int(m['port'])}"


def service_target(address):
    """The normalised `grpc://host:port` form of a dispatcher address."""
    protocol, host_port = parse_address(address)
    return f"{protocol}://{host_port}"


def processing_mode(repeat=False):
    """`distributed_epoch` for finite epochs, `parallel_epochs` for endless streams."""
    return "parallel_epochs" if repeat else "distributed_epoch"


def distribute(dataset, service, mode="distributed_epoch", job_name=None):
    """Sends `dataset`'s processing to the tf.data service at `service`.

    Args:
        dataset: tf.data.Dataset. The pipeline to run on the service's workers.
        service: str. Dispatcher address, "grpc://host:port".
        mode: str. One of PROCESSING_MODES.
        job_name: str or None. Consumers with the same job name share one
            stream (each element goes to one of them).
    """
    import tensorflow as tf

    if mode not in PROCESSING_MODES:
        raise ValueError(f"processing mode must be one of {', '.join(PROCESSING_MODES)}, "
                         f"got {mode!r}")
    return dataset.apply(tf.data.experimental.service.distribute(
        processing_mode=mode, service=service_target(service), job_name=job_name))


def start_dispatcher(port=DEFAULT_PORT, work_dir=None):
    """Starts a dispatcher in this process and returns the server.

    Args:
        port: int. Port to listen on; 0 picks a free one.
        work_dir: str or None. Folder (local or gs://) for the dispatcher's
            journal; with it a restarted dispatcher recovers its state.
    """
    import tensorflow as tf

    config = tf.data.experimental.service.DispatcherConfig(
        port=int(port), work_dir=work_dir, fault_tolerant_mode=work_dir is not None)
    try:
        return tf.data.experimental.service.DispatchServer(config)
    except (tf.errors.OpError, RuntimeError) as err:
        raise Esc50Error(f"cannot start a tf.data service dispatcher on port {port}: {err}") from None


def dispatcher_address(server):
    """`host:port` of an in-process dispatcher (for `start_worker`)."""
    return f"localhost:{bound_port(server)}"


def bound_port(server):
    """The port an in-process dispatcher or worker listens on (useful after port=0)."""
    return int(server._address.rsplit(":", 1)[1])  # noqa: SLF001 - no public accessor


def start_worker(dispatcher, port=0, host="localhost"):
    """Starts a worker in this process, registered with `dispatcher`; returns the server.

    Args:
        dispatcher: str. Dispatcher address, "host:port" or "grpc://host:port".
        port: int. Port to listen on; 0 picks a free one.
        host: str. The name under which trainers reach this worker (the
            dispatcher hands it to them). Defaults to "localhost".
    """
    import tensorflow as tf

    _, dispatcher_host_port = parse_address(dispatcher)
    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=dispatcher_host_port, worker_address=f"{host}:%port%", port=int(port),
        data_transfer_address=f"{host}:%dts_port%")
    try:
        return tf.data.experimental.service.WorkerServer(config)
    except (tf.errors.OpError, RuntimeError) as err:
        raise Esc50Error(f"cannot start a tf.data service worker on port {port} "
                         f"(dispatcher {dispatcher_host_port}): {err}") from None


def wait_for_workers(dispatcher, count, timeout=30.0):
    """Blocks until `count` workers registered with the in-process `dispatcher`."""
    deadline = time.monotonic() + timeout
    while dispatcher._num_workers() < count:  # noqa: SLF001 - no public counter
        if time.monotonic() > deadline:
            raise Esc50Error(f"only {dispatcher._num_workers()} of {count} tf.data service "  # noqa: SLF001
                             f"workers registered within {timeout:g} s")
        time.sleep(0.05)


def serve(server, name, address, log=None, poll_seconds=0.5):
    """Keeps `server` running until Ctrl-C (or SIGTERM), then stops it cleanly.

    The wait polls in Python so that the interrupt is seen at once (a
    server's `join()` blocks in C++ and would not return on Ctrl-C).
    """
    import signal

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))

    def _terminate(_signum, _frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    log(f"{name} listening on {address}; Ctrl-C stops it")
    try:
        while True:
            time.sleep(poll_seconds)
    except KeyboardInterrupt:  # the way to stop a server: handled, not an interruption
        cleanup.interrupt_reported()
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
    log(f"{name} stopped")
