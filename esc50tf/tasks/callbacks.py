"""The callbacks that keep a Keras fit safe: atomic backups and checkpoints (with a
free-space check first), a watchdog for a lost tf.data service, the per-batch
Ctrl-C check, and a guard against a non-finite loss or a data folder rebuilt
mid-run. `KerasTask.fit` adds them to every split and trial.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from esc50tf.errors import Esc50Error


def check_space(path, model, with_optimizer=False):
    """Refuses, before anything is written, to save `model` where too little space is free.

    h5py meets a full disk in C and may end the process with a segfault rather
    than an exception, so a save that cannot fit is named first: the model's
    weight bytes (and its optimizer's, for a `.keras` file) plus 10% and 1 MB.

    Raises:
        Esc50Error: naming `path`, the bytes needed and those free.
    """
    import shutil

    variables = list(model.weights)
    if with_optimizer and getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    need = sum(int(np.prod(v.shape)) * np.dtype(str(v.dtype)).itemsize for v in variables)
    need = int(need * 1.1) + (1 << 20)
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise Esc50Error(
            f"{path}: No space left on device: saving it needs about {need / 1e6:.1f} MB, "
            f"{free / 1e6:.1f} MB are free; free some space and run the same command to "
            "resume from the last finished epoch")


def atomic_backup(backup_dir):
    """`keras.callbacks.BackupAndRestore` whose every write is atomic, and whose damaged
    backup is named with the way to start over.

    Keras writes `latest.weights.h5` in place, so a kill -9 during that write left
    a torn file that every rerun failed to read. Here the weights and the epoch
    record are each written beside and renamed into place.
    """
    import keras

    from esc50tf.io import atomic_path, write_text

    class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
        def _save_model(self):
            os.makedirs(self.backup_dir, exist_ok=True)
            check_space(self._weights_path, self.model)
            with atomic_path(self._weights_path) as tmp:
                self.model.save_weights(filepath=str(tmp), overwrite=True)
            write_text(self._training_metadata_path, json.dumps(
                {"epoch": self._current_epoch, "batch": self._last_batch_seen}))

        def on_train_begin(self, logs=None):
            try:
                super().on_train_begin(logs)
            except (OSError, ValueError, KeyError) as err:
                raise Esc50Error(
                    f"{self.backup_dir}: the backup of the interrupted training is damaged "
                    f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                    f"delete {self.backup_dir} to train this split again from its first "
                    "epoch, or pass --overwrite to start the whole run over") from None

    return AtomicBackupAndRestore(str(backup_dir))


def atomic_checkpoint(path, **kwargs):
    """`keras.callbacks.ModelCheckpoint` writing `path` beside it and renaming it into place."""
    import keras

    class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
        def _save_model(self, epoch, batch, logs):
            final = self.filepath
            check_space(final, self.model, with_optimizer=True)
            tmp = os.path.join(os.path.dirname(final), ".tmp-" + os.path.basename(final))
            self.filepath = tmp
            try:
                super()._save_model(epoch, batch, logs)
                if os.path.exists(tmp):  # saved (a best-only checkpoint may skip an epoch)
                    os.replace(tmp, final)
            finally:
                self.filepath = final
                if os.path.exists(tmp):
                    os.unlink(tmp)

    return AtomicModelCheckpoint(str(path), **kwargs)


def service_watchdog(address, timeout):
    """A callback that ends the process with a named error when no batch arrives from the
    tf.data service at `address` for `timeout` seconds.

    A trainer waiting on a lost worker or dispatcher blocks inside TensorFlow's
    C++ iterator, where no Python exception reaches it, for as long as the
    service client retries (indefinitely). A thread watches the time since the
    last batch; past `timeout` it prints the error and exits with status 1.
    Every epoch finished before is kept (atomic backups), so the same command
    resumes the run.
    """
    import threading

    import keras

    state = {"last": time.monotonic(), "running": False}
    done = threading.Event()

    def tick(*_args, **_kwargs):
        state["last"] = time.monotonic()

    def watch():
        while not done.wait(min(1.0, timeout / 4)):
            idle = time.monotonic() - state["last"]
            if idle > timeout:
                print(f"esc50tf train: error: no training batch from the tf.data service at "
                      f"{address} for {idle:.0f} s (--data-service-timeout {timeout:g}): a "
                      "worker or the dispatcher was lost; stopped. Restart the service and "
                      "run the same command to resume from the last finished epoch",
                      file=sys.stderr, flush=True)
                os._exit(1)

    def begin(logs=None):
        tick()
        done.clear()
        threading.Thread(target=watch, name="esc50tf-service-watchdog", daemon=True).start()

    def end(logs=None):
        done.set()

    return keras.callbacks.LambdaCallback(
        on_train_begin=begin, on_train_end=end, on_train_batch_end=tick,
        on_test_batch_end=tick, on_epoch_begin=tick, on_epoch_end=tick)


def interrupt_check():
    """A callback that raises, after every training and validation batch, a Ctrl-C that
    TensorFlow swallowed (`cleanup.raise_if_interrupted`): one Python call per batch
    (benchmarks.bench_train measures it)."""
    import keras

    from esc50tf import cleanup

    def check(batch, logs=None):
        cleanup.raise_if_interrupted()

    return keras.callbacks.LambdaCallback(on_train_batch_end=check, on_test_batch_end=check)


def nonfinite_loss_message(loss, epoch, batch, t):
    """Says where the loss stopped being finite and which setting most likely did it."""
    if t.lr >= 0.01:
        cause = f"the learning rate --lr {t.lr:g} is the likely cause: lower it (e.g. 1e-3)"
    elif t.mixed_precision == "fp16":
        cause = "--mixed-precision fp16 may overflow: try off or bf16, or lower --lr"
    else:
        cause = (f"lower --lr (now {t.lr:g}), and check the clips with "
                 "`esc50tf inspect --verify`")
    return (f"training loss became {loss} at epoch {epoch + 1}, batch {batch + 1}; "
            f"stopped (a model trained past this point is meaningless). {cause}")


def run_guard(t, folder=None):
    """A callback that stops a fit with Esc50Error at the first non-finite training loss,
    and when `folder` (a TFRecordFolder) was rebuilt under it (`check_unchanged`)."""
    import keras

    state = {"epoch": 0}

    def on_epoch_begin(epoch, logs=None):
        state["epoch"] = epoch

    def on_batch_end(batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            raise Esc50Error(nonfinite_loss_message(float(loss), state["epoch"], batch, t))
        if folder is not None:
            folder.check_unchanged()

    return keras.callbacks.LambdaCallback(on_epoch_begin=on_epoch_begin,
                                          on_train_batch_end=on_batch_end)
